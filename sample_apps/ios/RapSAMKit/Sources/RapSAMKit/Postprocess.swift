// Post-processing of the export contract's outputs, as rapsam/postprocess.py: mask upsampling, Mask2Former's
// panoptic merge and prompt masks. A port of sample_apps/web/src/pipeline.js (same names, same steps).

import Foundation

/// Stride-4 mask logits [k, h, w] -> [k, imageH, imageW] float32 logits on the user's image, as
/// upsample_mask_logits: bilinear to the input size, crop the top-left valid size, bilinear to the image size.
public func upsampleMaskLogits(_ maskLogits: [Float], k: Int, h: Int, w: Int, box: Letterbox) throws -> [Float] {
    if box.validH > box.inputH || box.validW > box.inputW {
        throw PipelineError("valid_size [\(box.validH), \(box.validW)] exceeds input_size [\(box.inputH), \(box.inputW)]")
    }
    if maskLogits.count < k * h * w {
        throw PipelineError("expected \(k)x\(h)x\(w) mask logits, got \(maskLogits.count) values")
    }
    if k == 0 { return [] }
    let input = try bilinearResize(maskLogits, channels: k, srcH: h, srcW: w, dstH: box.inputH, dstW: box.inputW)
    // The crop is read in place: rows [0, validH), columns [0, validW) of each inputH x inputW plane.
    return try bilinearResize(input, channels: k, srcH: box.validH, srcW: box.validW, dstH: box.imageH,
                              dstW: box.imageW, srcStride: box.inputW, srcPlane: box.inputH * box.inputW)
}

/// float32 sigmoid of a float32 logit: (1 + exp(-x))^-1 in double, rounded to float32 (as the JS port; the
/// double exp keeps Swift, JS and Kotlin on the same bits where a float32 expf could differ in the last one).
@inline(__always)
func sigmoid32(_ x: Float) -> Float {
    Float(1.0 / (1.0 + exp(-Double(x))))
}

/// Softmax of logits[offset..<offset + count] into out[0..<count], in float32 as PyTorch's CPU kernel.
func softmaxRow(_ logits: [Float], offset: Int, count: Int, out: inout [Float]) {
    var maximum = -Float.infinity
    for c in 0..<count where logits[offset + c] > maximum { maximum = logits[offset + c] }
    var sum: Float = 0
    for c in 0..<count {
        out[c] = Float(exp(Double(logits[offset + c] - maximum)))
        sum += out[c]
    }
    let inverse = 1 / sum
    for c in 0..<count { out[c] *= inverse }
}

/// Mask2Former's panoptic merge, as rapsam.postprocess.panoptic_merge.
/// maskLogits: [n, H, W] (already upsampled to the image); classLogits: [n, C + 1], the last column
/// no-object; isThing: C flags. A query is kept if its argmax class is not no-object and its score is
/// > objectMask (float32 compare). Each pixel goes to the kept query with the highest score * sigmoid(mask)
/// (first index on ties). Kept queries are visited in index order; one is painted on the pixels it wins where
/// sigmoid >= 0.5 if it wins pixels, has a non-empty sigmoid >= 0.5 area, that intersection is non-empty,
/// and won / (sigmoid >= 0.5 area) >= overlap. Stuff queries of one class share a segment (score: the
/// highest of them); each thing query is its own segment.
public func panopticMerge(_ maskLogits: [Float], _ classLogits: [Float], n: Int, numClassesPlusOne: Int,
                          height: Int, width: Int, isThing: [Bool],
                          thresholds: Thresholds = Thresholds()) throws -> PanopticResult {
    let numClasses = numClassesPlusOne - 1
    let plane = height * width
    if maskLogits.count < n * plane || classLogits.count < n * numClassesPlusOne || isThing.count != numClasses {
        throw PipelineError("mask_logits (\(maskLogits.count) values for \(n)x\(height)x\(width)), class_logits "
            + "(\(classLogits.count) values for \(n)x\(numClassesPlusOne)) and is_thing (len \(isThing.count)) disagree")
    }
    let objectMaskThreshold = Float(thresholds.objectMask)

    // softmax, max over classes (first index on ties), keep
    var probs = [Float](repeating: 0, count: numClassesPlusOne)
    var keptQuery: [Int] = []
    var scores: [Float] = []
    var keptLabel: [Int] = []
    for q in 0..<n {
        softmaxRow(classLogits, offset: q * numClassesPlusOne, count: numClassesPlusOne, out: &probs)
        var label = 0
        for c in 1..<numClassesPlusOne where probs[c] > probs[label] { label = c }
        let score = probs[label]
        if label != numClasses && score > objectMaskThreshold {
            keptQuery.append(q)
            scores.append(score)
            keptLabel.append(label)
        }
    }
    var segmentMap = [Int32](repeating: 0, count: plane)
    let kept = keptQuery.count
    if kept == 0 { return PanopticResult(segmentMap: segmentMap, segments: []) }

    // One pass over the pixels: owner (argmax of score * sigmoid), whether the owner's sigmoid >= 0.5 there,
    // and per kept query: won area, sigmoid >= 0.5 area, region (won and inside) area.
    var owner = [Int](repeating: 0, count: plane)
    var ownerInside = [Bool](repeating: false, count: plane)
    var wonArea = [Int](repeating: 0, count: kept)
    var insideArea = [Int](repeating: 0, count: kept)
    var regionArea = [Int](repeating: 0, count: kept)
    let offsets = keptQuery.map { $0 * plane }
    maskLogits.withUnsafeBufferPointer { logits in
        for p in 0..<plane {
            var best = -Float.infinity
            var bestK = 0
            var bestInside = false
            for k in 0..<kept {
                let s = sigmoid32(logits[offsets[k] + p])
                let inside = s >= 0.5
                if inside { insideArea[k] += 1 }
                let v = scores[k] * s
                if v > best {
                    best = v
                    bestK = k
                    bestInside = inside
                }
            }
            owner[p] = bestK
            ownerInside[p] = bestInside
            wonArea[bestK] += 1
            if bestInside { regionArea[bestK] += 1 }
        }
    }

    var segments: [Segment] = []
    var stuffIds: [Int: Int] = [:]
    var segmentOf = [Int32](repeating: 0, count: kept)  // segment id painted for each kept query, 0 if none
    for k in 0..<kept {
        let classId = keptLabel[k]
        if wonArea[k] == 0 || insideArea[k] == 0 || regionArea[k] == 0 { continue }
        if Double(wonArea[k]) / Double(insideArea[k]) < thresholds.overlap { continue }
        let score = scores[k]
        let thing = isThing[classId]
        let segmentId: Int
        if !thing, let existing = stuffIds[classId] {
            segmentId = existing
            segments[segmentId - 1].score = max(segments[segmentId - 1].score, score)
            segments[segmentId - 1].area += regionArea[k]
            segments[segmentId - 1].queries.append(keptQuery[k])
        } else {
            segmentId = segments.count + 1
            if !thing { stuffIds[classId] = segmentId }
            segments.append(Segment(id: segmentId, classId: classId, score: score, isThing: thing,
                                    area: regionArea[k], queries: [keptQuery[k]]))
        }
        segmentOf[k] = Int32(segmentId)
    }
    for p in 0..<plane where ownerInside[p] {
        let id = segmentOf[owner[p]]
        if id != 0 { segmentMap[p] = id }
    }
    return PanopticResult(segmentMap: segmentMap, segments: segments)
}

/// One binary mask per prompt at image resolution, as prompt_masks: maskLogits [k, h, w], iou [k].
/// Logits are upsampled with upsampleMaskLogits and thresholded as logits > maskThreshold (float32 compare).
/// `valid` (optional, k flags; from kinds: `kinds.map { $0 >= 0 }`): slots that are not valid are dropped.
public func promptMasks(_ maskLogits: [Float], iou: [Float], k: Int, h: Int, w: Int, box: Letterbox,
                        maskThreshold: Double = 0, valid: [Bool]? = nil) throws -> PromptResult {
    if let valid, valid.count < k { throw PipelineError("expected \(k) valid flags, got \(valid.count)") }
    if iou.count < k { throw PipelineError("expected \(k) IoU scores, got \(iou.count)") }
    let index = (0..<k).filter { valid?[$0] ?? true }
    let plane = h * w
    var logits = maskLogits
    if index.count != k {
        logits = []
        logits.reserveCapacity(index.count * plane)
        for slot in index { logits.append(contentsOf: maskLogits[(slot * plane)..<((slot + 1) * plane)]) }
    }
    let up = try upsampleMaskLogits(logits, k: index.count, h: h, w: w, box: box)
    let size = box.imageH * box.imageW
    let threshold = Float(maskThreshold)
    let masks = (0..<index.count).map { j in up[(j * size)..<((j + 1) * size)].map { $0 > threshold } }
    return PromptResult(masks: masks, iou: index.map { iou[$0] }, index: index)
}
