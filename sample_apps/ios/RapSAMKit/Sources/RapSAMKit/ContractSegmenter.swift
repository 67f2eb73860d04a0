// The export contract mapped once for every runtime: segment / encode / prompt become calls of the manifest's
// entry point (its method, where the format has methods) with its input tensors by name, and their outputs are
// picked by the manifest's names. A back end (Core ML, ExecuTorch, a fake in the tests) implements only `run`,
// the tensor I/O. The Kotlin core's ContractSegmenter.kt is the same.

import Foundation

/// The values of one input of a call: float32 or int32, row-major.
public enum TensorValues {
    case float([Float])
    case int32([Int32])

    public var count: Int {
        switch self {
        case .float(let values): return values.count
        case .int32(let values): return values.count
        }
    }
}

/// One input of a call: its manifest spec and its values (as many as the spec's shape holds).
public struct TensorInput {
    public let spec: Manifest.Tensor
    public let values: TensorValues
}

public protocol ContractSegmenter: Segmenter {
    var manifest: Manifest { get }

    /// Runs the entry point `entry` (`method`: the manifest's entry_points.<entry>.method, else the entry's name)
    /// on `inputs`, given in the manifest's order, and returns at least one float32 tensor per spec in `outputs`,
    /// in that order.
    func run(entry: String, method: String, inputs: [TensorInput], outputs: [Manifest.Tensor]) throws -> [FloatTensor]
}

extension ContractSegmenter {
    public func segment(_ image: [Float]) throws -> SegmentOutputs {
        let out = try call("segment", ["image": .float(image)])
        return SegmentOutputs(maskLogits: try pick(out, "segment", "mask_logits"),
                              classLogits: try pick(out, "segment", "class_logits"),
                              queries: try pick(out, "segment", "queries"))
    }

    public func encode(_ image: [Float]) throws -> [Float] {
        try pick(try call("encode", ["image": .float(image)]), "encode", "features").values
    }

    public func prompt(features: [Float], boxes: [Float], kinds: [Int32]) throws -> PromptOutputs {
        let out = try call("prompt", ["features": .float(features), "boxes": .float(boxes), "kinds": .int32(kinds)])
        return PromptOutputs(maskLogits: try pick(out, "prompt", "mask_logits"), iou: try pick(out, "prompt", "iou"))
    }

    /// `entry` with `values` by tensor name -> its outputs by name, every size checked against the manifest.
    private func call(_ entry: String, _ values: [String: TensorValues]) throws -> [String: FloatTensor] {
        let spec = try manifest.entryPoint(entry)
        let inputs = try spec.inputs.map { tensor -> TensorInput in
            guard let value = values[tensor.name] else {
                throw PipelineError("\(entry): no float or int values for its input \(tensor.name)")
            }
            guard value.count == tensor.shape.reduce(1, *) else {
                throw PipelineError("\(entry): \(tensor.name) has \(value.count) values, shape \(tensor.shape)")
            }
            return TensorInput(spec: tensor, values: value)
        }
        let results = try run(entry: entry, method: spec.method ?? entry, inputs: inputs, outputs: spec.outputs)
        guard results.count >= spec.outputs.count else {
            throw PipelineError("\(entry) returned \(results.count) values, the manifest names \(spec.outputs.count)")
        }
        var out: [String: FloatTensor] = [:]
        for (index, tensor) in spec.outputs.enumerated() {
            guard results[index].values.count == tensor.shape.reduce(1, *) else {
                throw PipelineError("\(entry): \(tensor.name) has \(results[index].values.count) values, expected \(tensor.shape)")
            }
            out[tensor.name] = results[index]
        }
        return out
    }

    private func pick(_ outputs: [String: FloatTensor], _ entry: String, _ name: String) throws -> FloatTensor {
        guard let tensor = outputs[name] else { throw PipelineError("\(entry): the manifest names no output \(name)") }
        return tensor
    }
}
