// What an app does around the export contract, as rapsam/pipeline.py: letterbox, `segment` + panoptic merge,
// `encode` once per image then `prompt` per click or box (packed into the artifact's K slots, padding kind
// -1), and instance ids across video frames by query matching. Any Segmenter runs it.

import Foundation

/// `encode`'s features of one image and where the image sits in the model input.
public struct EncodedImage {
    public var features: [Float]
    public var box: Letterbox

    public init(features: [Float], box: Letterbox) {
        self.features = features
        self.box = box
    }
}

/// Not thread-safe (nor are the segmenters): call one pipeline from one queue at a time.
public final class Pipeline {
    public let segmenter: Segmenter
    /// [height, width] of the model input.
    public let inputSize: [Int]
    public let padValue: [Float]
    /// One flag per class (the manifest's classes[].is_thing).
    public let isThing: [Bool]
    /// K of the artifact's prompt entry point; nil: any number of prompts in one call.
    public let promptSlots: Int?
    public let thresholds: Thresholds
    /// Stage durations: preprocess (letterbox), encode, prompt (click to mask: packing, every `prompt` call
    /// and the masks), segment, postprocess (mask upsampling, merge, track ids) and frame (one frame end to end).
    public let timer: StageTimer

    public init(segmenter: Segmenter, inputSize: [Int], padValue: [Float], isThing: [Bool], promptSlots: Int?,
                thresholds: Thresholds = Thresholds(), timer: StageTimer = StageTimer()) {
        self.segmenter = segmenter
        self.inputSize = inputSize
        self.padValue = padValue
        self.isThing = isThing
        self.promptSlots = promptSlots
        self.thresholds = thresholds
        self.timer = timer
    }

    /// Everything from the artifact's manifest.
    public convenience init(manifest: Manifest, segmenter: Segmenter, timer: StageTimer = StageTimer()) {
        self.init(segmenter: segmenter, inputSize: manifest.inputSize, padValue: manifest.normalization.padValue,
                  isThing: manifest.isThing, promptSlots: manifest.promptSlots,
                  thresholds: manifest.pipelineThresholds, timer: timer)
    }

    private func letterboxed(_ rgba: [UInt8], width: Int, height: Int) throws -> (tensor: [Float], box: Letterbox) {
        try timer.time("preprocess") {
            try letterbox(rgba, width: width, height: height, inputSize: inputSize, padValue: padValue)
        }
    }

    /// `segment` on one RGBA image, merged at image size; with the object queries [N, d] (for tracking).
    public func panoptic(rgba: [UInt8], width: Int, height: Int) throws -> (result: PanopticResult, queries: FloatTensor, box: Letterbox) {
        let (result, queries, box, _) = try panopticFrame(rgba: rgba, width: width, height: height, tracker: nil)
        return (result, queries, box)
    }

    /// One frame of a video (or the camera): its panoptic result with video-wide ids for its thing segments.
    public func trackFrame(tracker: QueryTracker, rgba: [UInt8], width: Int, height: Int) throws -> TrackedFrame {
        try timer.time("frame") {
            let (result, _, box, ids) = try panopticFrame(rgba: rgba, width: width, height: height, tracker: tracker)
            return TrackedFrame(panoptic: result, instanceIds: ids ?? [], box: box)
        }
    }

    private func panopticFrame(rgba: [UInt8], width: Int, height: Int,
                               tracker: QueryTracker?) throws -> (PanopticResult, FloatTensor, Letterbox, [Int]?) {
        let (x, box) = try letterboxed(rgba, width: width, height: height)
        let out = try timer.time("segment") { try segmenter.segment(x) }
        let masks = out.maskLogits, classes = out.classLogits, queries = out.queries
        guard masks.shape.count == 4, classes.shape.count == 3, queries.shape.count == 3 else {
            throw PipelineError("segment returned shapes \(masks.shape), \(classes.shape), \(queries.shape); "
                + "expected [1, N, h, w], [1, N, C + 1], [1, N, d]")
        }
        return try timer.time("postprocess") {
            let n = masks.dim(1)
            let logits = try upsampleMaskLogits(masks.values, k: n, h: masks.dim(2), w: masks.dim(3), box: box)
            let result = try panopticMerge(logits, classes.values, n: n, numClassesPlusOne: classes.dim(2),
                                           height: box.imageH, width: box.imageW, isThing: isThing,
                                           thresholds: thresholds)
            let ids = try tracker.map {
                try instanceIds(tracker: $0, result: result, queries: queries.values, n: queries.dim(1), d: queries.dim(2))
            }
            return (result, queries, box, ids)
        }
    }

    /// `encode` once per image; prompts then reuse its features.
    public func encode(rgba: [UInt8], width: Int, height: Int) throws -> EncodedImage {
        let (x, box) = try letterboxed(rgba, width: width, height: height)
        return EncodedImage(features: try timer.time("encode") { try segmenter.encode(x) }, box: box)
    }

    /// One mask (image size) and predicted IoU per prompt, points [x, y] first then boxes [x0, y0, x1, y1], in
    /// image pixels. The artifact's K prompt slots take the prompts K at a time; unused slots are padding.
    public func prompt(encoded: EncodedImage, points: [[Double]] = [], boxes: [[Double]] = []) throws -> PromptResult {
        let box = encoded.box
        if points.isEmpty && boxes.isEmpty { return PromptResult(masks: [], iou: [], index: []) }
        return try timer.time("prompt") {
            let (promptBoxes, kinds) = try promptsToBoxes(points: points, boxes: boxes, box: box)
            var logits: [Float] = []
            var ious: [Float] = []
            var h = 0, w = 0
            for chunk in try packPrompts(boxes: promptBoxes, kinds: kinds, slots: promptSlots) {
                let out = try segmenter.prompt(features: encoded.features, boxes: chunk.boxes, kinds: chunk.kinds)
                guard out.maskLogits.shape.count == 4, out.iou.values.count >= chunk.count else {
                    throw PipelineError("prompt returned shapes \(out.maskLogits.shape), \(out.iou.shape); expected [1, K, h, w], [1, K]")
                }
                h = out.maskLogits.dim(2)
                w = out.maskLogits.dim(3)
                logits.append(contentsOf: out.maskLogits.values.prefix(chunk.count * h * w))  // the real prompts' rows
                ious.append(contentsOf: out.iou.values.prefix(chunk.count))
            }
            return try promptMasks(logits, iou: ious, k: kinds.count, h: h, w: w, box: box,
                                   maskThreshold: thresholds.maskLogit)
        }
    }
}
