import CoreML
import CoreVideo
import Foundation

/// Inputs of the manifest's names and shapes, in the types the model declares: zeros (a black image, empty
/// features), every prompt slot a box. The network's latency does not depend on the values.
enum Inputs {
    static func make(for spec: Manifest.EntryPoint, model: MLModel) throws -> MLDictionaryFeatureProvider {
        var features: [String: MLFeatureValue] = [:]
        for tensor in spec.inputs {
            guard let description = model.modelDescription.inputDescriptionsByName[tensor.name] else {
                throw BenchError.missingInput(tensor.name)
            }
            if let image = description.imageConstraint {
                features[tensor.name] = MLFeatureValue(pixelBuffer: try pixelBuffer(image))
            } else {
                let declared = description.multiArrayConstraint?.dataType
                let dataType = declared ?? (tensor.dtype == "int32" ? .int32 : .float32)
                features[tensor.name] = MLFeatureValue(multiArray: try array(tensor, dataType: dataType))
            }
        }
        return try MLDictionaryFeatureProvider(dictionary: features)
    }

    static func array(_ tensor: Manifest.Tensor, dataType: MLMultiArrayDataType) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: tensor.shape.map { NSNumber(value: $0) }, dataType: dataType)
        array.withUnsafeMutableBytes { bytes, _ in
            if let base = bytes.baseAddress {
                memset(base, 0, bytes.count)
            }
        }
        switch tensor.name {
        case "boxes":  // (1, K, 4): every slot the box (16, 16)-(80, 80) in input pixels
            for slot in 0..<tensor.shape[1] {
                for (coordinate, value) in [16.0, 16.0, 80.0, 80.0].enumerated() {
                    array[slot * 4 + coordinate] = NSNumber(value: value)
                }
            }
        case "kinds":  // (1, K): every slot a box prompt
            for slot in 0..<tensor.shape[1] {
                array[slot] = NSNumber(value: 1)
            }
        default:
            break
        }
        return array
    }

    static func pixelBuffer(_ constraint: MLImageConstraint) throws -> CVPixelBuffer {
        var created: CVPixelBuffer?
        let status = CVPixelBufferCreate(kCFAllocatorDefault, constraint.pixelsWide, constraint.pixelsHigh,
                                         constraint.pixelFormatType, nil, &created)
        guard status == kCVReturnSuccess, let buffer = created else {
            throw BenchError.pixelBuffer(status)
        }
        CVPixelBufferLockBaseAddress(buffer, [])
        if let base = CVPixelBufferGetBaseAddress(buffer) {
            memset(base, 0, CVPixelBufferGetDataSize(buffer))
        }
        CVPixelBufferUnlockBaseAddress(buffer, [])
        return buffer
    }
}
