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

/// Not thread-safe (ExecuTorch's Module is not): call it from one queue at a time. segment, encode and prompt
/// come from ContractSegmenter; this is the tensor I/O.
public final class ExecuTorchSegmenter: ContractSegmenter {
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

    /// Inputs in the order and shapes of the manifest; the method returns its outputs in the manifest's order.
    public func run(entry: String, method: String, inputs: [TensorInput], outputs: [Manifest.Tensor]) throws -> [FloatTensor] {
        let arguments = inputs.map { input -> ValueConvertible in
            switch input.values {
            case .float(let values): return Tensor<Float>(values, shape: input.spec.shape)
            case .int32(let values): return Tensor<Int32>(values, shape: input.spec.shape)
            }
        }
        let values: [Value] = try module.execute(method, arguments)
        guard values.count >= outputs.count else {
            throw PipelineError("\(entry) returned \(values.count) values, the manifest names \(outputs.count)")
        }
        return try outputs.indices.map { index -> FloatTensor in
            guard let result: Tensor<Float> = values[index].tensor() else {
                throw PipelineError("\(entry): output \(outputs[index].name) is not a float32 tensor")
            }
            return FloatTensor(values: result.scalars(), shape: result.shape)
        }
    }
}
#endif
