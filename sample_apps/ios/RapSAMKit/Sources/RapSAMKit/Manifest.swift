// The part of rapsam-convert's manifest.json an app reads (rapsam/convert/manifest.py writes it): nothing
// about the model is hard-coded in the app, everything comes from here.

import Foundation

public struct Manifest: Decodable {
    public static let schemaVersion = 1

    public struct Model: Decodable {
        public let name: String
        public let backbone: String?
        public let hiddenDim: Int?
        public let numQueries: Int?

        enum CodingKeys: String, CodingKey {
            case name, backbone, hiddenDim = "hidden_dim", numQueries = "num_queries"
        }
    }

    public struct Target: Decodable {
        /// coreml, executorch, onnx, tflite
        public let name: String
        /// Core ML: the compute units it was converted for (ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE).
        public let computeUnits: String?
        /// Core ML: the `image` input is an RGB image (CVPixelBuffer), not a tensor.
        public let imageInput: Bool?
        /// Core ML iOS18: one multifunction package, one function (`method`) per entry point.
        public let multifunction: Bool?

        enum CodingKeys: String, CodingKey {
            case name, computeUnits = "compute_units", imageInput = "image_input", multifunction
        }
    }

    public struct Normalization: Decodable {
        /// What the letterbox pads with (the pixel mean, zero after the in-graph normalization).
        public let padValue: [Float]

        enum CodingKeys: String, CodingKey {
            case padValue = "pad_value"
        }
    }

    public struct ClassInfo: Decodable {
        public let id: Int
        public let name: String
        public let isThing: Bool
        /// RGB 0...255
        public let color: [Int]

        enum CodingKeys: String, CodingKey {
            case id, name, isThing = "is_thing", color
        }
    }

    public struct ThresholdValues: Decodable {
        public let objectMask: Double
        public let overlap: Double
        public let maskLogit: Double

        enum CodingKeys: String, CodingKey {
            case objectMask = "object_mask", overlap, maskLogit = "mask_logit"
        }
    }

    public struct Tensor: Decodable {
        public let name: String
        public let shape: [Int]
        /// float32, int32
        public let dtype: String
    }

    public struct EntryPoint: Decodable {
        /// The file, relative to the manifest: one .mlpackage per entry, or one file for all (.pte, iOS18 package).
        public let file: String
        /// The method (.pte) or function (multifunction .mlpackage) of the entry; nil when the file holds one.
        public let method: String?
        public let inputs: [Tensor]
        public let outputs: [Tensor]

        public func input(_ name: String) -> Tensor? { inputs.first { $0.name == name } }
        public func output(_ name: String) -> Tensor? { outputs.first { $0.name == name } }
    }

    public struct Quantization: Decodable {
        public let scheme: String?
    }

    public struct Precision: Decodable {
        /// fp32, fp16
        public let compute: String
        public let quantization: Quantization?
    }

    public let schemaVersion: Int
    public let model: Model
    public let target: Target
    public let precision: Precision
    /// [height, width] of the model input.
    public let inputSize: [Int]
    public let normalization: Normalization
    public let classes: [ClassInfo]
    public let thresholds: ThresholdValues
    public let entryPoints: [String: EntryPoint]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", model, target, precision, inputSize = "input_size", normalization
        case classes, thresholds, entryPoints = "entry_points"
    }

    /// K of the `prompt` entry point (its `kinds` input is [1, K]), or nil when the artifact has no prompt entry.
    public var promptSlots: Int? {
        guard let kinds = entryPoints["prompt"]?.input("kinds"), kinds.shape.count == 2 else { return nil }
        return kinds.shape[1]
    }

    public var isThing: [Bool] { classes.map(\.isThing) }

    /// The merge and mask thresholds as the pipeline takes them.
    public var pipelineThresholds: Thresholds {
        Thresholds(objectMask: thresholds.objectMask, overlap: thresholds.overlap, maskLogit: thresholds.maskLogit)
    }

    /// The quantization scheme, else the compute precision (fp16, fp32): what a latency was measured at.
    public var precisionLabel: String { precision.quantization?.scheme ?? precision.compute }

    public func entryPoint(_ name: String) throws -> EntryPoint {
        guard let entry = entryPoints[name] else {
            throw PipelineError("the artifact has no \(name) entry point (it has \(entryPoints.keys.sorted().joined(separator: ", ")))")
        }
        return entry
    }

    public static func decode(_ data: Data) throws -> Manifest {
        let manifest = try JSONDecoder().decode(Manifest.self, from: data)
        guard manifest.schemaVersion == schemaVersion else {
            throw PipelineError("manifest schema_version \(manifest.schemaVersion), this app reads \(schemaVersion)")
        }
        guard manifest.inputSize.count == 2, manifest.normalization.padValue.count == 3 else {
            throw PipelineError("manifest input_size must be [height, width] and pad_value [r, g, b]")
        }
        return manifest
    }

    /// manifest.json of a folder written by rapsam-convert.
    public static func load(folder: URL) throws -> Manifest {
        let url = folder.appendingPathComponent("manifest.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw PipelineError("\(folder.path) has no manifest.json: give a folder written by rapsam-convert")
        }
        return try decode(Data(contentsOf: url))
    }
}
