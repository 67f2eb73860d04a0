// The value types of the app pipeline, as rapsam/inference.py and rapsam/postprocess.py name them, and the
// constants of the export contract. Tensors are flat [Float] / [Int32] arrays in row-major (C) order with
// their sizes passed beside them, as the runtimes hand them out; sizes are (height, width) as in Python.

import Foundation

/// The official model turns a click into a box of this half-size, in pixels of the resized image.
public let CLICK_HALF_SIZE: Float = 3.0
/// Prompt kinds of the export contract (rapsam/models/head.py).
public let POINT: Int32 = 0
public let BOX: Int32 = 1
public let PADDING: Int32 = -1

/// How an image of imageH x imageW sits in the model input: scaled to validH x validW, padded bottom/right
/// to inputH x inputW (Python's `Letterbox`).
public struct Letterbox: Equatable, Codable {
    public var imageH: Int
    public var imageW: Int
    public var validH: Int
    public var validW: Int
    public var inputH: Int
    public var inputW: Int

    public init(imageH: Int, imageW: Int, validH: Int, validW: Int, inputH: Int, inputW: Int) {
        self.imageH = imageH
        self.imageW = imageW
        self.validH = validH
        self.validW = validW
        self.inputH = inputH
        self.inputW = inputW
    }
}

/// Thresholds of the panoptic merge and of prompt masks (the manifest's `thresholds`; PanopticThresholds()).
public struct Thresholds: Equatable {
    /// A query is kept only if its class score is strictly above this (compared in float32).
    public var objectMask: Double = 0.8
    /// A query keeps its region only if (pixels it wins) / (pixels with sigmoid >= 0.5) is at least this.
    public var overlap: Double = 0.8
    /// A prompt mask is logits > this.
    public var maskLogit: Double = 0

    public init(objectMask: Double = 0.8, overlap: Double = 0.8, maskLogit: Double = 0) {
        self.objectMask = objectMask
        self.overlap = overlap
        self.maskLogit = maskLogit
    }
}

/// One panoptic segment; `id` is its value in `PanopticResult.segmentMap` (1...S).
public struct Segment: Equatable {
    public var id: Int
    public var classId: Int
    /// Class score; for a merged stuff segment, the highest score of its queries.
    public var score: Float
    public var isThing: Bool
    /// Pixels painted with `id` in the segment map.
    public var area: Int
    /// Indices of the queries painted into it (several for merged stuff).
    public var queries: [Int]

    public init(id: Int, classId: Int, score: Float, isThing: Bool, area: Int, queries: [Int]) {
        self.id = id
        self.classId = classId
        self.score = score
        self.isThing = isThing
        self.area = area
        self.queries = queries
    }
}

/// `segmentMap`: [H * W], 0 = void; `segments`: in id order (id i at index i - 1).
public struct PanopticResult {
    public var segmentMap: [Int32]
    public var segments: [Segment]

    public init(segmentMap: [Int32], segments: [Segment]) {
        self.segmentMap = segmentMap
        self.segments = segments
    }
}

/// One mask per real prompt at image size (`masks[i]`: [H * W]), its predicted IoU, and its prompt slot.
public struct PromptResult {
    public var masks: [[Bool]]
    public var iou: [Float]
    /// The slot each mask came from (Python's `PromptResult.index`).
    public var index: [Int]

    public init(masks: [[Bool]], iou: [Float], index: [Int]) {
        self.masks = masks
        self.iou = iou
        self.index = index
    }
}

/// Prompts first..<first + count packed into `boxes` [slots * 4] and `kinds` [slots]; the remaining slots
/// are padding (zero box, kind -1).
public struct PromptChunk: Equatable {
    public var boxes: [Float]
    public var kinds: [Int32]
    public var count: Int
    public var first: Int
}

/// `instanceIds[i]` is the video-wide id of `panoptic.segments[i]` (-1 for stuff).
public struct TrackedFrame {
    public var panoptic: PanopticResult
    public var instanceIds: [Int]
    public var box: Letterbox
}

/// A bad argument: the Swift counterpart of the Python ValueError / JS RangeError, with the same message.
public struct PipelineError: Error, CustomStringConvertible, LocalizedError {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}

/// A number as JavaScript and Python print it in messages: 201, not 201.0.
func formatNumber(_ value: Double) -> String {
    if value.isFinite, value == value.rounded(), abs(value) < 1e15 {
        return String(Int64(value))
    }
    return String(value)
}
