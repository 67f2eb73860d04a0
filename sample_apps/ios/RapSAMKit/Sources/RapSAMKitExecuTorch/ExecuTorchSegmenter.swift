// The ExecuTorch back end: the one `model.pte` of `rapsam-convert --target executorch`, one method per entry
// point, run through ExecuTorch's Swift API (`Module`, `Tensor`, `Value`; the `executorch` product of the
// pytorch/executorch Swift package, 1.0 or newer).
//
// Compiled only where that package is linked: by the RapSAMKitExecuTorch target of Package.swift
// (RAPSAM_EXECUTORCH=1) or by the app's ExecuTorch project (project-executorch.yml). Everywhere else this
// file is empty, so RapSAMKit and the app build and resolve without ExecuTorch.

#if canImport(ExecuTorch)
import ExecuTorch
import Foundation
import RapSAMKit

/// Not thread-safe (ExecuTorch's Module is not): call it from one queue at a time.
public final class ExecuTorchSegmenter: Segmenter {
    public let runtime: String
    public let manifest: Manifest
    private let module: Module

    /// The entry points the pipeline calls; their methods are loaded up front so the first call is not slow.
    public static let pipelineEntries = ["segment", "encode", "prompt"]

    private init(runtime: String, manifest: Manifest, module: Module) {
        self.runtime = runtime
        self.manifest = manifest
        self.module = module
    }

    /// Load the methods of the .pte in `folder` (the one holding manifest.json). Entries the artifact lacks
    /// are skipped; calling them throws.
    public static func load(folder: URL, entries: [String] = ExecuTorchSegmenter.pipelineEntries) throws -> ExecuTorchSegmenter {
        let manifest = try Manifest.load(folder: folder)
        guard manifest.target.name == "executorch" else {
            throw PipelineError("\(folder.lastPathComponent) is a \(manifest.target.name) artifact, not executorch")
        }
        let files = Set(entries.compactMap { manifest.entryPoints[$0]?.file })
        guard files.count == 1, let file = files.first else {
            throw PipelineError("expected one .pte for \(entries.joined(separator: ", ")), the manifest names \(files.sorted())")
        }
        let module = Module(filePath: folder.appendingPathComponent(file).path)
        for entry in entries {
            guard let spec = manifest.entryPoints[entry] else { continue }
            try module.load(spec.method ?? entry)
        }
        return ExecuTorchSegmenter(runtime: "ExecuTorch", manifest: manifest, module: module)
    }

    public func segment(_ image: [Float]) throws -> SegmentOutputs {
        let out = try run("segment", ["image": image])
        return SegmentOutputs(maskLogits: out["mask_logits"]!, classLogits: out["class_logits"]!, queries: out["queries"]!)
    }

    public func encode(_ image: [Float]) throws -> [Float] {
        try run("encode", ["image": image])["features"]!.values
    }

    public func prompt(features: [Float], boxes: [Float], kinds: [Int32]) throws -> PromptOutputs {
        let out = try run("prompt", ["features": features, "boxes": boxes], ints: ["kinds": kinds])
        return PromptOutputs(maskLogits: out["mask_logits"]!, iou: out["iou"]!)
    }

    /// Inputs in the order and shapes of the manifest; outputs by the manifest's names (the method returns
    /// them in that order). Every output the manifest names is in the result.
    private func run(_ entry: String, _ floats: [String: [Float]], ints: [String: [Int32]] = [:]) throws -> [String: FloatTensor] {
        let spec = try manifest.entryPoint(entry)
        var inputs: [ValueConvertible] = []
        for tensor in spec.inputs {
            let count = tensor.shape.reduce(1, *)
            if let values = floats[tensor.name], values.count == count {
                inputs.append(Tensor<Float>(values, shape: tensor.shape))
            } else if let values = ints[tensor.name], values.count == count {
                inputs.append(Tensor<Int32>(values, shape: tensor.shape))
            } else {
                throw PipelineError("\(entry): no value of \(count) elements for its input \(tensor.name) \(tensor.shape)")
            }
        }
        let values: [Value] = try module.execute(spec.method ?? entry, inputs)
        guard values.count >= spec.outputs.count else {
            throw PipelineError("\(entry) returned \(values.count) values, the manifest names \(spec.outputs.count)")
        }
        var out: [String: FloatTensor] = [:]
        for (index, tensor) in spec.outputs.enumerated() {
            guard let result: Tensor<Float> = values[index].tensor() else {
                throw PipelineError("\(entry): output \(tensor.name) is not a float32 tensor")
            }
            out[tensor.name] = FloatTensor(values: result.scalars(), shape: result.shape)
        }
        return out
    }
}
#endif
