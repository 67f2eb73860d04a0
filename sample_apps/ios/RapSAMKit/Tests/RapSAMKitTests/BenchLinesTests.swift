// The benchmark line format against its golden sample (tests/data/bench/app_bench_lines.txt, written by the
// Kotlin core's StageTimer and read by rapsam-bench), and ContractSegmenter on a fake back end.

import Foundation
import XCTest
@testable import RapSAMKit

final class BenchLinesTests: XCTestCase {
    /// $RAPSAM_BENCH_GOLDEN, else the repository's copy (this file is sample_apps/ios/RapSAMKit/Tests/RapSAMKitTests/).
    static var golden: URL {
        if let path = ProcessInfo.processInfo.environment["RAPSAM_BENCH_GOLDEN"] { return URL(fileURLWithPath: path) }
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<6 { root.deleteLastPathComponent() }
        return root.appendingPathComponent("tests/data/bench/app_bench_lines.txt")
    }

    static func parse(_ line: String) throws -> NSDictionary {
        XCTAssertTrue(line.hasPrefix("\(StageTimer.marker) {"), line)
        let json = Data(line.dropFirst(StageTimer.marker.count + 1).utf8)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: json) as? NSDictionary)
    }

    /// The Kotlin core's BenchLinesTest, here: the same samples and context give the same records.
    func testBenchLinesMatchTheGoldenSample() throws {
        guard FileManager.default.fileExists(atPath: Self.golden.path) else {
            throw XCTSkip("no \(Self.golden.path): run inside the rapsam repository or set RAPSAM_BENCH_GOLDEN")
        }
        let preprocess = [1.25, 1.5, 1.0, 1.75, 1.25, 1.5, 1.0, 1.25, 1.5, 2.0]
        let encode = [41.0, 42.5, 40.25, 43.0, 44.75]
        let prompt = [6.5, 7.0, 6.25, 6.75, 8.0]
        let segment = [48.0, 47.5, 49.25, 48.5, 51.0]
        let postprocess = [3.5, 3.25, 3.75, 3.5, 4.0]
        let frame = [53.0, 52.25, 54.5, 53.5, 56.75]
        let timer = StageTimer()
        timer.record("load", ms: 412.5)
        for r in 0..<5 {
            timer.record("preprocess", ms: preprocess[2 * r])
            timer.record("encode", ms: encode[r])
            timer.record("prompt", ms: prompt[r])
            timer.record("preprocess", ms: preprocess[2 * r + 1])
            timer.record("segment", ms: segment[r])
            timer.record("postprocess", ms: postprocess[r])
            timer.record("frame", ms: frame[r])
        }
        let device: [String: Any] = [
            "platform": "android", "device": "Pixel 8 Pro", "manufacturer": "Google", "soc": "Google Tensor G3",
            "os": "Android 14", "sdk": 34, "abi": "arm64-v8a", "cores": 9,
        ]
        var context = device
        context.merge([
            "artifact": "rapsam_edgenext_demo-128x128-executorch", "backend": "executorch",
            "runtime": "ExecuTorch 1.5.1 XNNPACK, 4 threads", "model": "rapsam_edgenext_demo", "precision": "fp32",
            "input_size": [128, 128], "image": "coffee.png", "image_size": [426, 640], "warmup": 3,
        ]) { _, new in new }
        var failedContext = device
        failedContext["artifact"] = "nope"
        let lines = timer.benchLines(context: context) + [StageTimer.failedLine(
            reason: "no artifact nope in assets/models (bundled: rapsam_edgenext_demo-128x128-executorch)",
            context: failedContext)]
        let golden = try String(contentsOf: Self.golden, encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, golden.count)
        for (mine, theirs) in zip(lines, golden) {
            XCTAssertEqual(try Self.parse(mine), try Self.parse(theirs), mine)
        }
    }

    // A 4x4 model, N = 2 queries, 3 classes + 1, d = 2, features [1, 2, 1, 1], K = 2 prompt slots; the outputs
    // of `segment` are listed out of the order the Segmenter returns them in, as a manifest may.
    static let tinyManifest = #"""
        {"schema_version": 1, "model": {"name": "tiny"}, "target": {"name": "executorch"},
         "precision": {"compute": "fp32", "quantization": null}, "input_size": [4, 4],
         "normalization": {"pad_value": [0, 0, 0]}, "classes": [],
         "thresholds": {"object_mask": 0.8, "overlap": 0.8, "mask_logit": 0.0},
         "entry_points": {
           "segment": {"file": "model.pte", "method": "forward_segment",
                       "inputs": [{"name": "image", "shape": [1, 3, 4, 4], "dtype": "float32"}],
                       "outputs": [{"name": "queries", "shape": [1, 2, 2], "dtype": "float32"},
                                   {"name": "mask_logits", "shape": [1, 2, 1, 1], "dtype": "float32"},
                                   {"name": "class_logits", "shape": [1, 2, 4], "dtype": "float32"}]},
           "encode": {"file": "model.pte", "method": null,
                      "inputs": [{"name": "image", "shape": [1, 3, 4, 4], "dtype": "float32"}],
                      "outputs": [{"name": "features", "shape": [1, 2, 1, 1], "dtype": "float32"}]},
           "prompt": {"file": "model.pte", "method": "prompt",
                      "inputs": [{"name": "features", "shape": [1, 2, 1, 1], "dtype": "float32"},
                                 {"name": "boxes", "shape": [1, 2, 4], "dtype": "float32"},
                                 {"name": "kinds", "shape": [1, 2], "dtype": "int32"}],
                      "outputs": [{"name": "mask_logits", "shape": [1, 2, 1, 1], "dtype": "float32"},
                                  {"name": "iou", "shape": [1, 2], "dtype": "float32"}]}}}
        """#

    /// Returns output i filled with i + 1 (`sizes` overrides how many values), and records each call.
    final class FakeBackend: ContractSegmenter {
        let manifest: Manifest
        let runtime = "fake"
        var sizes: [String: Int] = [:]
        var calls: [String] = []

        init(manifest: Manifest) { self.manifest = manifest }

        func run(entry: String, method: String, inputs: [TensorInput], outputs: [Manifest.Tensor]) throws -> [FloatTensor] {
            let kinds = inputs.map { input -> String in
                if case .int32 = input.values { return "\(input.spec.name):int" }
                return "\(input.spec.name):float"
            }
            calls.append("\(method)(\(kinds.joined(separator: ", ")))")
            return outputs.enumerated().map { (index, spec) -> FloatTensor in
                let count = sizes[spec.name] ?? spec.shape.reduce(1, *)
                return FloatTensor(values: [Float](repeating: Float(index + 1), count: count), shape: spec.shape)
            }
        }
    }

    func testContractSegmenterCallsTheManifestsMethodsAndPicksOutputsByName() throws {
        let fake = FakeBackend(manifest: try Manifest.decode(Data(Self.tinyManifest.utf8)))
        let segment = try fake.segment([Float](repeating: 0, count: 48))
        XCTAssertEqual(segment.queries.values, [1, 1, 1, 1])
        XCTAssertEqual(segment.maskLogits.values, [2, 2])
        XCTAssertEqual(segment.classLogits.values, [Float](repeating: 3, count: 8))
        XCTAssertEqual(try fake.encode([Float](repeating: 0, count: 48)), [1, 1])
        let prompt = try fake.prompt(features: [0, 0], boxes: [Float](repeating: 0, count: 8), kinds: [0, -1])
        XCTAssertEqual(prompt.maskLogits.values, [1, 1])
        XCTAssertEqual(prompt.iou.values, [2, 2])
        XCTAssertEqual(fake.calls, ["forward_segment(image:float)", "encode(image:float)",
                                    "prompt(features:float, boxes:float, kinds:int)"])
        XCTAssertThrowsError(try fake.encode([Float](repeating: 0, count: 47))) { error in
            XCTAssertEqual("\(error)", "encode: image has 47 values, shape [1, 3, 4, 4]")
        }
        XCTAssertEqual(fake.calls.count, 3)
        fake.sizes = ["iou": 3]
        XCTAssertThrowsError(try fake.prompt(features: [0, 0], boxes: [Float](repeating: 0, count: 8), kinds: [0, 1])) { error in
            XCTAssertEqual("\(error)", "prompt: iou has 3 values, expected [1, 2]")
        }
    }
}
