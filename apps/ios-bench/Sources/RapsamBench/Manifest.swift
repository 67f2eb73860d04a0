import Foundation

/// What `rapsam-bench ios` asks for: Resources/bench.json.
public struct BenchConfig: Decodable {
    public let entryPoints: [String]
    public let computeUnits: String  // coremltools' names: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE
    public let warmup: Int
    public let runs: Int

    enum CodingKeys: String, CodingKey {
        case entryPoints = "entry_points", computeUnits = "compute_units", warmup, runs
    }

    public static func load(from url: URL) throws -> BenchConfig {
        try JSONDecoder().decode(BenchConfig.self, from: Data(contentsOf: url))
    }
}

/// The part of rapsam's manifest.json the harness reads (rapsam/convert/manifest.py writes it).
public struct Manifest: Decodable {
    public struct Tensor: Decodable {
        public let name: String
        public let shape: [Int]
        public let dtype: String  // float32, int32
    }

    public struct EntryPoint: Decodable {
        public let file: String  // the .mlpackage, relative to the manifest
        public let method: String?  // the function of a multifunction package; nil where the package holds one
        public let inputs: [Tensor]
    }

    public let entryPoints: [String: EntryPoint]

    enum CodingKeys: String, CodingKey {
        case entryPoints = "entry_points"
    }

    public static func load(from url: URL) throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: url))
    }
}
