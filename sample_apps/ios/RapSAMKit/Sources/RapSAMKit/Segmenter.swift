// What the pipeline needs from a runtime: the export contract's entry points on flat float32 arrays. Each
// back end (Core ML, ExecuTorch, a fake in the tests) is one implementation; the pipeline never sees MLModel
// or an ExecuTorch Module.

import Foundation

/// A flat row-major float32 tensor and its shape.
public struct FloatTensor {
    public var values: [Float]
    public var shape: [Int]

    public init(values: [Float], shape: [Int]) {
        self.values = values
        self.shape = shape
    }

    /// The size of dimension `axis`, counted from the end when negative (-1: the last).
    public func dim(_ axis: Int) -> Int { shape[axis < 0 ? shape.count + axis : axis] }
}

/// `segment`'s outputs: mask_logits [1, N, h, w], class_logits [1, N, C + 1], queries [1, N, d].
public struct SegmentOutputs {
    public var maskLogits: FloatTensor
    public var classLogits: FloatTensor
    public var queries: FloatTensor

    public init(maskLogits: FloatTensor, classLogits: FloatTensor, queries: FloatTensor) {
        self.maskLogits = maskLogits
        self.classLogits = classLogits
        self.queries = queries
    }
}

/// `prompt`'s outputs: mask_logits [1, K, h, w], iou [1, K].
public struct PromptOutputs {
    public var maskLogits: FloatTensor
    public var iou: FloatTensor

    public init(maskLogits: FloatTensor, iou: FloatTensor) {
        self.maskLogits = maskLogits
        self.iou = iou
    }
}

/// The entry points of a converted artifact. `image` is the letterboxed [1, 3, H, W] RGB 0..255 input,
/// `features` what `encode` returned, `boxes` [1, K, 4] and `kinds` [1, K] one chunk of packed prompts.
/// Implementations are not required to be thread-safe: call one from one queue at a time.
public protocol Segmenter {
    /// The runtime and its settings, for latency readouts and benchmark lines (e.g. "Core ML (ALL)").
    var runtime: String { get }
    func segment(_ image: [Float]) throws -> SegmentOutputs
    func encode(_ image: [Float]) throws -> [Float]
    func prompt(features: [Float], boxes: [Float], kinds: [Int32]) throws -> PromptOutputs
}
