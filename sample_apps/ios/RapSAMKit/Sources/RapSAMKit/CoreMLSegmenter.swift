// The Core ML back end: the .mlpackage files of `rapsam-convert --target coreml` (one per entry point, or
// one multifunction package for iOS18), compiled on the device once when loaded, run with MLMultiArray
// inputs and outputs named as the manifest names them.

import CoreML
import CoreVideo
import Foundation

public final class CoreMLSegmenter: ContractSegmenter {
    public let runtime: String
    public let manifest: Manifest
    private let models: [String: MLModel]  // entry point -> its model
    private let compiled: [URL]  // the .mlmodelc folders compileModel wrote, removed with the segmenter

    /// The entry points the pipeline calls; `panoptic` (features -> panoptic outputs) is left unloaded.
    public static let pipelineEntries = ["segment", "encode", "prompt"]

    private init(runtime: String, manifest: Manifest, models: [String: MLModel], compiled: [URL]) {
        self.runtime = runtime
        self.manifest = manifest
        self.models = models
        self.compiled = compiled
    }

    deinit {
        for url in compiled { try? FileManager.default.removeItem(at: url) }
    }

    /// coremltools' names of compute units (as the manifest's target.compute_units has them).
    public static func computeUnits(named name: String) throws -> MLComputeUnits {
        switch name.uppercased() {
        case "ALL": return .all
        case "CPU_ONLY": return .cpuOnly
        case "CPU_AND_GPU": return .cpuAndGPU
        case "CPU_AND_NE": return .cpuAndNeuralEngine
        default: throw PipelineError("unknown compute units \(name); use ALL, CPU_ONLY, CPU_AND_GPU or CPU_AND_NE")
        }
    }

    /// Compile and load the entry points of the artifact in `folder` (the one holding manifest.json).
    /// `computeUnits` nil: the units the artifact was converted for (target.compute_units), else ALL.
    /// Entries the artifact lacks are skipped; calling them throws.
    public static func load(folder: URL, computeUnits: String? = nil,
                            entries: [String] = CoreMLSegmenter.pipelineEntries) async throws -> CoreMLSegmenter {
        let manifest = try Manifest.load(folder: folder)
        guard manifest.target.name == "coreml" else {
            throw PipelineError("\(folder.lastPathComponent) is a \(manifest.target.name) artifact, not coreml")
        }
        let unitsName = computeUnits ?? manifest.target.computeUnits ?? "ALL"
        let units = try Self.computeUnits(named: unitsName)
        var compiledByFile: [String: URL] = [:]  // a multifunction package serves every entry: compile it once
        var models: [String: MLModel] = [:]
        do {
            for entry in entries {
                guard let spec = manifest.entryPoints[entry] else { continue }
                if compiledByFile[spec.file] == nil {
                    compiledByFile[spec.file] = try await MLModel.compileModel(at: folder.appendingPathComponent(spec.file))
                }
                let configuration = MLModelConfiguration()
                configuration.computeUnits = units
                if let function = spec.method {
                    try select(function: function, in: configuration)
                }
                models[entry] = try MLModel(contentsOf: compiledByFile[spec.file]!, configuration: configuration)
            }
        } catch {
            for url in compiledByFile.values { try? FileManager.default.removeItem(at: url) }
            throw error
        }
        return CoreMLSegmenter(runtime: "Core ML (\(unitsName.uppercased()))", manifest: manifest, models: models,
                               compiled: Array(compiledByFile.values))
    }

    /// The function of a multifunction package (rapsam-convert's iOS18 target) to load: iOS 18 / macOS 15,
    /// built with Xcode 16 (Swift 6 compiler) or newer.
    private static func select(function: String, in configuration: MLModelConfiguration) throws {
        #if compiler(>=6.0)
        if #available(iOS 18.0, macOS 15.0, *) {
            configuration.functionName = function
            return
        }
        #endif
        throw PipelineError("function \(function) of a multifunction package needs iOS 18 / macOS 15 and Xcode 16")
    }

    // MARK: ContractSegmenter: the tensor I/O (segment, encode and prompt come from ContractSegmenter)

    /// `method` was chosen when the entry's model was loaded (the function of a multifunction package).
    public func run(entry: String, method: String, inputs: [TensorInput], outputs: [Manifest.Tensor]) throws -> [FloatTensor] {
        guard let model = models[entry] else { throw PipelineError("the \(entry) entry point is not loaded") }
        var features: [String: MLFeatureValue] = [:]
        for input in inputs {
            let tensor = input.spec
            guard let description = model.modelDescription.inputDescriptionsByName[tensor.name] else {
                throw PipelineError("\(entry): the model has no input \(tensor.name), which the manifest names")
            }
            switch input.values {
            case .float(let values):
                if let image = description.imageConstraint {
                    features[tensor.name] = MLFeatureValue(pixelBuffer: try Self.pixelBuffer(values, tensor.shape, image))
                } else {
                    let declared = description.multiArrayConstraint?.dataType ?? .float32
                    features[tensor.name] = MLFeatureValue(multiArray: try Self.multiArray(values, tensor.shape, declared))
                }
            case .int32(let values):
                let declared = description.multiArrayConstraint?.dataType ?? .int32
                let array = try declared == .int32
                    ? MLMultiArray(MLShapedArray<Int32>(scalars: values, shape: tensor.shape))
                    : Self.multiArray(values.map(Float.init), tensor.shape, declared)
                features[tensor.name] = MLFeatureValue(multiArray: array)
            }
        }
        let provider = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        return try outputs.map { try floats(provider, $0.name) }
    }

    /// An output as dense row-major float32, whatever its strides (the GPU and Neural Engine pad rows) and
    /// element type (fp16 where a model declares it).
    private func floats(_ provider: MLFeatureProvider, _ name: String) throws -> FloatTensor {
        guard let array = provider.featureValue(for: name)?.multiArrayValue else {
            throw PipelineError("the model returned no multi-array output \(name)")
        }
        let shaped = MLShapedArray<Float>(converting: array)
        return FloatTensor(values: shaped.scalars, shape: shaped.shape)
    }

    private static func multiArray(_ values: [Float], _ shape: [Int], _ dataType: MLMultiArrayDataType) throws -> MLMultiArray {
        if dataType == .float32 {
            return MLMultiArray(MLShapedArray<Float>(scalars: values, shape: shape))
        }
        // float16 / double inputs (not what rapsam-convert writes, but legal Core ML): element by element.
        let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: dataType)
        for (i, value) in values.enumerated() { array[i] = NSNumber(value: value) }
        return array
    }

    /// An `image_input` artifact's image: the letterboxed RGB 0..255 tensor as a 32BGRA pixel buffer, rounded
    /// half to even and clipped as rapsam's CoreMLRunner feeds it.
    private static func pixelBuffer(_ values: [Float], _ shape: [Int], _ constraint: MLImageConstraint) throws -> CVPixelBuffer {
        let height = shape[2], width = shape[3]
        guard constraint.pixelsHigh == height, constraint.pixelsWide == width else {
            throw PipelineError("image input is \(constraint.pixelsWide)x\(constraint.pixelsHigh), the manifest says \(width)x\(height)")
        }
        var created: CVPixelBuffer?
        let status = CVPixelBufferCreate(kCFAllocatorDefault, width, height, kCVPixelFormatType_32BGRA, nil, &created)
        guard status == kCVReturnSuccess, let buffer = created else { throw PipelineError("CVPixelBufferCreate failed with \(status)") }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        guard let base = CVPixelBufferGetBaseAddress(buffer)?.assumingMemoryBound(to: UInt8.self) else {
            throw PipelineError("pixel buffer has no base address")
        }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let plane = width * height
        func byte(_ v: Float) -> UInt8 { UInt8(min(max(v.rounded(.toNearestOrEven), 0), 255)) }
        for y in 0..<height {
            for x in 0..<width {
                let i = y * width + x, o = y * rowBytes + 4 * x
                base[o] = byte(values[2 * plane + i])  // B
                base[o + 1] = byte(values[plane + i])  // G
                base[o + 2] = byte(values[i])  // R
                base[o + 3] = 255
            }
        }
        return buffer
    }
}
