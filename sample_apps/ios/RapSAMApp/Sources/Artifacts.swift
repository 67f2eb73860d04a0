// The converted artifacts bundled in Models/ (Scripts/copy-artifacts.sh copies rapsam-convert's output
// folders there) and opening one of them with its runtime.

import Foundation
import RapSAMKit

enum Runtime: String, CaseIterable, Identifiable {
    case coreml
    case executorch

    var id: String { rawValue }

    var title: String {
        switch self {
        case .coreml: return "Core ML"
        case .executorch: return "ExecuTorch"
        }
    }

    /// Whether this build links the runtime: ExecuTorch only in the project of project-executorch.yml.
    var isCompiledIn: Bool {
        switch self {
        case .coreml:
            return true
        case .executorch:
            #if canImport(ExecuTorch)
            return true
            #else
            return false
            #endif
        }
    }
}

/// One rapsam-convert output folder in the app bundle.
struct Artifact: Identifiable, Hashable {
    let name: String  // the folder name, e.g. rapsam_edgenext_demo-128x128-coreml
    let folder: URL
    let runtime: Runtime

    var id: String { name }
}

enum Artifacts {
    static var modelsFolder: URL? { Bundle.main.resourceURL?.appendingPathComponent("Models", isDirectory: true) }

    /// Every bundled folder with a manifest of a target this app runs, sorted by name.
    static func all() -> [Artifact] {
        guard let models = modelsFolder,
              let folders = try? FileManager.default.contentsOfDirectory(at: models, includingPropertiesForKeys: nil) else {
            return []
        }
        return folders.compactMap { folder -> Artifact? in
            guard let manifest = try? Manifest.load(folder: folder),
                  let runtime = Runtime(rawValue: manifest.target.name) else { return nil }
            return Artifact(name: folder.lastPathComponent, folder: folder, runtime: runtime)
        }.sorted { $0.name < $1.name }
    }

    /// Load the artifact's entry points with its runtime and wrap them in a pipeline configured by its manifest.
    /// `computeUnits` (Core ML only): ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE; nil: the artifact's own.
    static func open(_ artifact: Artifact, computeUnits: String? = nil, timer: StageTimer = StageTimer()) async throws -> (Pipeline, Manifest) {
        let manifest = try Manifest.load(folder: artifact.folder)
        let segmenter: Segmenter
        switch artifact.runtime {
        case .coreml:
            segmenter = try await CoreMLSegmenter.load(folder: artifact.folder, computeUnits: computeUnits)
        case .executorch:
            #if canImport(ExecuTorch)
            segmenter = try ExecuTorchSegmenter.load(folder: artifact.folder)
            #else
            throw PipelineError("this build has no ExecuTorch: generate the project from project-executorch.yml")
            #endif
        }
        return (Pipeline(manifest: manifest, segmenter: segmenter, timer: timer), manifest)
    }
}

/// Which device and OS a number comes from, for the benchmark lines.
enum DeviceInfo {
    /// iPhone16,1 on a phone, the simulated model in a simulator.
    static var model: String {
        if let simulated = ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] { return simulated }
        var size = 0
        sysctlbyname("hw.machine", nil, &size, nil, 0)
        var value = [CChar](repeating: 0, count: max(size, 1))
        sysctlbyname("hw.machine", &value, &size, nil, 0)
        return String(cString: value)
    }

    static var isSimulator: Bool { ProcessInfo.processInfo.environment["SIMULATOR_MODEL_IDENTIFIER"] != nil }

    static var os: String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        return "iOS \(v.majorVersion).\(v.minorVersion).\(v.patchVersion)"
    }

    /// The device part of a benchmark line's context (StageTimer.benchLines).
    static var benchContext: [String: Any] {
        ["platform": "ios", "device": model, "os": os, "simulator": isSimulator,
         "cores": ProcessInfo.processInfo.processorCount]
    }
}
