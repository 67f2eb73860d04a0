// Benchmark mode: `-benchmark -artifact NAME -runs N` times load, encode, prompt (click to mask), the
// panoptic post-processing and the end-to-end frame on a bundled test image, prints one
// `RAPSAM_BENCH {json}` line per stage to stdout (RapSAMKit's StageTimer.benchLines) and exits, for
// `rapsam-bench ios --app` to read with
// `xcrun simctl launch --console <sim> <bundle id> -benchmark ...` or
// `xcrun devicectl device process launch --console --device <id> <bundle id> -- -benchmark ...` (README).
//
// Options: -artifact NAME (a folder in Models/; default the first of -runtime), -runs N (20), -warmup N (3),
// -runtime coreml|executorch, -compute-units ALL|CPU_ONLY|CPU_AND_GPU|CPU_AND_NE (Core ML; default the
// artifact's), -image PATH (default the artifact's vectors/coffee.png, else a synthetic 640x480 picture).
// Exit status: 0 measured, 2 an error (one line on stderr and a "failed" RAPSAM_BENCH line).

import Foundation
import RapSAMKit
import SwiftUI

struct BenchmarkOptions {
    var artifact: String?
    var runs = 20
    var warmup = 3
    var runtime: Runtime?
    var computeUnits: String?
    var imagePath: String?

    /// nil unless the app was launched with -benchmark.
    static func parse(_ arguments: [String]) -> BenchmarkOptions? {
        guard arguments.contains("-benchmark") else { return nil }
        var options = BenchmarkOptions()
        func value(_ flag: String) -> String? {
            guard let i = arguments.firstIndex(of: flag), i + 1 < arguments.count else { return nil }
            return arguments[i + 1]
        }
        options.artifact = value("-artifact")
        options.runs = value("-runs").flatMap(Int.init).map { max(1, $0) } ?? options.runs
        options.warmup = value("-warmup").flatMap(Int.init).map { max(0, $0) } ?? options.warmup
        options.runtime = value("-runtime").flatMap(Runtime.init(rawValue:))
        options.computeUnits = value("-compute-units")
        options.imagePath = value("-image")
        return options
    }
}

enum Benchmark {
    static func run(_ options: BenchmarkOptions) async -> Int32 {
        setvbuf(stdout, nil, _IOLBF, 0)  // line-buffered: every line reaches the console as it is printed
        do {
            try await measure(options)
            return 0
        } catch {
            let reason = "\(error)"
            FileHandle.standardError.write(Data("rapsam benchmark: \(reason)\n".utf8))
            var context = DeviceInfo.benchContext
            context["artifact"] = options.artifact ?? ""
            print(StageTimer.failedLine(reason: reason, context: context))
            fflush(stdout)
            return 2
        }
    }

    private static func measure(_ options: BenchmarkOptions) async throws {
        let artifacts = Artifacts.all()
        let artifact: Artifact
        if let name = options.artifact {
            guard let found = artifacts.first(where: { $0.name == name }) else {
                throw PipelineError("no artifact \(name) in Models/ (bundled: \(artifacts.map(\.name).joined(separator: ", ")))")
            }
            artifact = found
        } else {
            let runtime = options.runtime ?? .coreml
            guard let found = artifacts.first(where: { $0.runtime == runtime }) else {
                throw PipelineError("no \(runtime.rawValue) artifact in Models/: build with RAPSAM_ARTIFACTS set")
            }
            artifact = found
        }
        let timer = StageTimer()
        let started = DispatchTime.now()
        let (pipeline, manifest) = try await Artifacts.open(artifact, computeUnits: options.computeUnits, timer: timer)
        let loadMs = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e6
        let (image, imageName) = try benchImage(options, artifact)
        let tracker = QueryTracker()
        let click = [[Double(image.width) / 2, Double(image.height) / 2]]

        // One round as the app does it: encode the picture, one click to its mask, one camera frame.
        func oneRound() throws {
            let encoded = try pipeline.encode(rgba: image.pixels, width: image.width, height: image.height)
            _ = try pipeline.prompt(encoded: encoded, points: click)
            _ = try pipeline.trackFrame(tracker: tracker, rgba: image.pixels, width: image.width, height: image.height)
        }
        for _ in 0..<options.warmup { try oneRound() }
        timer.reset()  // the warm-up rounds are not reported
        timer.record("load", ms: loadMs)
        for _ in 0..<options.runs { try oneRound() }

        var context = DeviceInfo.benchContext
        let run: [String: Any] = [
            "artifact": artifact.name, "backend": artifact.runtime.rawValue, "runtime": pipeline.segmenter.runtime,
            "model": manifest.model.name, "precision": manifest.precisionLabel, "input_size": manifest.inputSize,
            "image": imageName, "image_size": [image.height, image.width], "warmup": options.warmup,
        ]
        context.merge(run) { _, new in new }
        for line in timer.benchLines(context: context) {
            print(line)
        }
        fflush(stdout)
    }

    /// -image, else the first photo of the artifact's test vectors (rapsam-convert --vectors writes them into
    /// the artifact folder), else a synthetic picture: the latency does not depend on what the picture shows.
    private static func benchImage(_ options: BenchmarkOptions, _ artifact: Artifact) throws -> (RGBAImage, String) {
        if let path = options.imagePath {
            let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : artifact.folder.appendingPathComponent(path)
            return (try RGBAImage(contentsOf: url), url.lastPathComponent)
        }
        for name in ["coffee.png", "astronaut.png"] {
            let url = artifact.folder.appendingPathComponent("vectors").appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: url.path) { return (try RGBAImage(contentsOf: url), name) }
        }
        return (synthetic(width: 640, height: 480), "synthetic 640x480")
    }

    private static func synthetic(width: Int, height: Int) -> RGBAImage {
        var pixels = [UInt8](repeating: 255, count: width * height * 4)
        for y in 0..<height {
            for x in 0..<width {
                let o = 4 * (y * width + x)
                let dx = x - width / 3, dy = y - height / 2
                let inDisc = dx * dx + dy * dy < (height / 4) * (height / 4)
                pixels[o] = inDisc ? 220 : UInt8(x * 255 / width)
                pixels[o + 1] = inDisc ? 40 : UInt8(y * 255 / height)
                pixels[o + 2] = inDisc ? 40 : 160
            }
        }
        return RGBAImage(width: width, height: height, pixels: pixels)
    }
}

/// Shown while the benchmark runs; the app exits when it is done.
struct BenchmarkView: View {
    let options: BenchmarkOptions

    var body: some View {
        VStack(spacing: 12) {
            ProgressView()
            Text("RAP-SAM benchmark: \(options.artifact ?? "first artifact"), \(options.runs) runs")
        }
        .task {
            let status = await Benchmark.run(options)
            exit(status)
        }
    }
}
