// RapSAMKit against the Python reference's test vectors: the same checks as the web app's
// test/pipeline.test.mjs, on the outputs the vectors store (no runtime needed), plus the Pipeline class end
// to end with a fake Segmenter that answers with those outputs.
//
//   rapsam-vectors --out /tmp/vectors && RAPSAM_VECTORS=/tmp/vectors swift test
//
// Without RAPSAM_VECTORS these tests are skipped. RAPSAM_MANIFEST=<artifact folder> supplies the class list
// and pad value (else they are read from the vectors themselves).

import Foundation
import XCTest
@testable import RapSAMKit

final class VectorTests: XCTestCase {
    /// Upsample the stored mask logits and merge them, as the pipeline does after `segment`.
    private func merge(_ vectors: Vectors, _ outputs: SegmentOutputs, _ box: Letterbox) throws -> PanopticResult {
        let masks = outputs.maskLogits, classes = outputs.classLogits
        let n = masks.dim(1)
        let up = try upsampleMaskLogits(masks.values, k: n, h: masks.dim(2), w: masks.dim(3), box: box)
        return try panopticMerge(up, classes.values, n: n, numClassesPlusOne: classes.dim(2), height: box.imageH,
                                 width: box.imageW, isThing: vectors.isThing)
    }

    func test1LetterboxReproducesTheStoredInput() throws {
        let vectors = try Vectors.load()
        for photo in vectors.doc.photos {
            let image = try vectors.image(photo.image)
            let (tensor, box) = try letterbox(image.pixels, width: image.width, height: image.height,
                                              inputSize: vectors.doc.inputSize, padValue: vectors.padValue)
            XCTAssertEqual(box, photo.letterbox.box, "\(photo.name): letterbox")
            let expected = try vectors.floats(photo.input)
            XCTAssertEqual(tensor.count, expected.count)
            let maxAbs = zip(tensor, expected).map { abs($0 - $1) }.max() ?? 0
            let exact = Double(zip(tensor, expected).filter { $0 == $1 }.count) / Double(max(1, tensor.count))
            print("\(photo.name): \(image.width)x\(image.height) -> valid \(box.validH)x\(box.validW), max abs diff \(maxAbs), bit-identical \(exact)")
            XCTAssertLessThanOrEqual(maxAbs, 0.01, "\(photo.name): letterbox max abs diff")
        }
    }

    func test2MergeReproducesTheStoredPanopticMaps() throws {
        let vectors = try Vectors.load()
        for photo in vectors.doc.photos {
            let result = try merge(vectors, try vectors.segmentOutputs(photo.segment), photo.letterbox.box)
            try comparePanoptic(vectors, photo.name, photo.panoptic, result)
        }
    }

    func test3PromptsToBoxesAndPromptMasksReproduceTheStoredPrompts() throws {
        let vectors = try Vectors.load()
        for photo in vectors.doc.photos {
            let stored = photo.prompt
            let box = photo.letterbox.box
            let (boxes, kinds) = try promptsToBoxes(points: stored.points, boxes: stored.boxes, box: box)
            let count = stored.points.count + stored.boxes.count
            XCTAssertEqual(boxes.count, count * 4)
            XCTAssertEqual(kinds, stored.points.map { _ in POINT } + stored.boxes.map { _ in BOX })
            // The stored inputs are one call packed as an app does: the first K prompts, then padding.
            let storedBoxes = try vectors.floats(stored.inputs.boxes)
            let storedKinds = try vectors.ints(stored.inputs.kinds)
            let chunk = try XCTUnwrap(try packPrompts(boxes: boxes, kinds: kinds, slots: vectors.doc.promptSlots ?? storedKinds.count).first)
            XCTAssertEqual(chunk.kinds, storedKinds, "\(photo.name): kinds")
            let maxAbs = zip(chunk.boxes, storedBoxes).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(maxAbs, 1e-4, "\(photo.name): prompt boxes")

            let logits = stored.outputs.maskLogits.shape
            let result = try promptMasks(try vectors.floats(stored.outputs.maskLogits), iou: try vectors.floats(stored.outputs.iou),
                                         k: logits[1], h: logits[2], w: logits[3], box: box, valid: storedKinds.map { $0 >= 0 })
            XCTAssertEqual(result.masks.count, chunk.count)
            for (i, mask) in result.masks.enumerated() {
                let reference = try vectors.gray(stored.masks[i]).values.map { $0 > 127 }
                XCTAssertGreaterThanOrEqual(maskIoU(mask, reference), 0.999, "\(photo.name): prompt \(i) mask IoU")
                XCTAssertEqual(Double(result.iou[i]), stored.iou[i], accuracy: 1e-5, "\(photo.name): prompt \(i) IoU score")
            }
        }
    }

    func test5ClipMergeAndQueryTrackerReproduceTheStoredInstanceIds() throws {
        let vectors = try Vectors.load()
        let tracker = QueryTracker()
        for (t, frame) in vectors.doc.clip.frames.enumerated() {
            guard let segment = frame.segment else {
                throw XCTSkip("these vectors hold no per-frame segment outputs: write them again with rapsam-vectors")
            }
            // The frame's letterbox (not stored for clip frames) from its PNG, as the pipeline computes it.
            let image = try vectors.image(frame.image)
            let (_, box) = try letterbox(image.pixels, width: image.width, height: image.height,
                                         inputSize: vectors.doc.inputSize, padValue: vectors.padValue)
            let outputs = try vectors.segmentOutputs(segment)
            let result = try merge(vectors, outputs, box)
            try comparePanoptic(vectors, "clip\(t)", frame.panoptic, result)
            let ids = try instanceIds(tracker: tracker, result: result, queries: outputs.queries.values,
                                      n: outputs.queries.dim(1), d: outputs.queries.dim(2))
            XCTAssertEqual(ids, frame.instanceIds, "clip\(t): instance ids")
        }
    }

    /// The Pipeline class end to end on the vectors' photos and clip: what it hands the runtime (letterboxed
    /// image, packed prompts) and what it makes of the runtime's answers (the stored outputs).
    func testPipelineWithAFakeSegmenter() throws {
        let vectors = try Vectors.load()
        let fake = FakeSegmenter()
        let slots = vectors.doc.promptSlots ?? vectors.doc.photos[0].prompt.inputs.kinds.shape[1]
        let pipeline = Pipeline(segmenter: fake, inputSize: vectors.doc.inputSize, padValue: vectors.padValue,
                                isThing: vectors.isThing, promptSlots: slots)
        for photo in vectors.doc.photos {
            let image = try vectors.image(photo.image)
            let input = try vectors.floats(photo.input)
            fake.segments.append((input, try vectors.segmentOutputs(photo.segment)))
            let (result, queries, box) = try pipeline.panoptic(rgba: image.pixels, width: image.width, height: image.height)
            XCTAssertEqual(box, photo.letterbox.box)
            XCTAssertEqual(queries.shape, photo.segment.queries.shape)
            try comparePanoptic(vectors, "pipeline \(photo.name)", photo.panoptic, result)

            let features = try vectors.floats(photo.encode.features)
            fake.encodes.append((input, features))
            let encoded = try pipeline.encode(rgba: image.pixels, width: image.width, height: image.height)
            XCTAssertEqual(encoded.features, features)

            // The stored prompt outputs answer the first chunk: keep to the prompts that fit into it.
            let stored = photo.prompt
            let points = Array(stored.points.prefix(slots))
            let boxes = Array(stored.boxes.prefix(slots - points.count))
            let storedKinds = try vectors.ints(stored.inputs.kinds)
            fake.prompts.append((try vectors.floats(stored.inputs.boxes), storedKinds,
                                 PromptOutputs(maskLogits: FloatTensor(values: try vectors.floats(stored.outputs.maskLogits),
                                                                       shape: stored.outputs.maskLogits.shape),
                                               iou: FloatTensor(values: try vectors.floats(stored.outputs.iou),
                                                                shape: stored.outputs.iou.shape))))
            let prompted = try pipeline.prompt(encoded: encoded, points: points, boxes: boxes)
            XCTAssertEqual(prompted.masks.count, points.count + boxes.count)
            for (i, mask) in prompted.masks.enumerated() {
                let reference = try vectors.gray(stored.masks[i]).values.map { $0 > 127 }
                XCTAssertGreaterThanOrEqual(maskIoU(mask, reference), 0.999, "pipeline \(photo.name): prompt \(i)")
                XCTAssertEqual(Double(prompted.iou[i]), stored.iou[i], accuracy: 1e-5)
            }
            XCTAssertTrue(try pipeline.prompt(encoded: encoded).masks.isEmpty, "no prompts: no call, no masks")
        }
        let tracker = QueryTracker()
        for (t, frame) in vectors.doc.clip.frames.enumerated() {
            guard let segment = frame.segment else { break }
            let image = try vectors.image(frame.image)
            fake.segments.append((nil, try vectors.segmentOutputs(segment)))
            let tracked = try pipeline.trackFrame(tracker: tracker, rgba: image.pixels, width: image.width, height: image.height)
            XCTAssertEqual(tracked.instanceIds, frame.instanceIds, "pipeline clip\(t): instance ids")
        }
        XCTAssertTrue(fake.segments.isEmpty && fake.encodes.isEmpty && fake.prompts.isEmpty, "every answer was asked for")
        for stage in ["preprocess", "segment", "postprocess", "encode", "prompt"] {
            XCTAssertFalse(pipeline.timer.samples(stage).isEmpty, "stage \(stage) was timed")
        }
    }
}

/// Answers each entry point with the next queued outputs, after checking what it was given against what the
/// reference gave its runtime (the letterboxed input within the vectors' tolerance, the packed prompts).
final class FakeSegmenter: Segmenter {
    var segments: [(input: [Float]?, outputs: SegmentOutputs)] = []
    var encodes: [(input: [Float], features: [Float])] = []
    var prompts: [(boxes: [Float], kinds: [Int32], outputs: PromptOutputs)] = []

    let runtime = "fake (the test vectors' outputs)"

    private func checkImage(_ image: [Float], _ expected: [Float]?) {
        guard let expected else { return }
        XCTAssertEqual(image.count, expected.count, "image size")
        let meanAbs = zip(image, expected).map { Double(abs($0 - $1)) }.reduce(0, +) / Double(max(1, image.count))
        XCTAssertLessThanOrEqual(meanAbs, 1.0, "letterboxed input mean abs diff")
    }

    func segment(_ image: [Float]) throws -> SegmentOutputs {
        guard !segments.isEmpty else { throw PipelineError("unexpected segment call") }
        let next = segments.removeFirst()
        checkImage(image, next.input)
        return next.outputs
    }

    func encode(_ image: [Float]) throws -> [Float] {
        guard !encodes.isEmpty else { throw PipelineError("unexpected encode call") }
        let next = encodes.removeFirst()
        checkImage(image, next.input)
        return next.features
    }

    func prompt(features: [Float], boxes: [Float], kinds: [Int32]) throws -> PromptOutputs {
        guard !prompts.isEmpty else { throw PipelineError("unexpected prompt call") }
        let next = prompts.removeFirst()
        XCTAssertEqual(kinds, next.kinds, "packed kinds")
        XCTAssertEqual(boxes.count, next.boxes.count, "packed boxes")
        XCTAssertLessThanOrEqual(zip(boxes, next.boxes).map { abs($0 - $1) }.max() ?? 0, 1e-4, "packed boxes")
        return next.outputs
    }
}
