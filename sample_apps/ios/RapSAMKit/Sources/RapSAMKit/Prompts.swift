// Prompts in the export contract's frame and packed into an artifact's K slots, as rapsam/inference.py
// `prompts_to_boxes` and rapsam/pipeline.py `prompt`. A port of sample_apps/web/src/pipeline.js.

import Foundation

/// Clicks [x, y] and boxes [x0, y0, x1, y1] in image pixels -> (boxes [K * 4], kinds [K]), points first
/// then boxes, as prompts_to_boxes: in the export contract's frame (the image stretched to the model input),
/// a click as a box of +-CLICK_HALF_SIZE pixels of the resized image, stretched likewise.
public func promptsToBoxes(points: [[Double]], boxes: [[Double]], box: Letterbox) throws -> (boxes: [Float], kinds: [Int32]) {
    let width = Double(box.imageW), height = Double(box.imageH)
    var rows: [[Double]] = []
    for p in points {
        guard p.count == 2 else { throw PipelineError("a point is (x, y), got \(p.count) values") }
        let x = p[0], y = p[1]
        guard 0 <= x, x <= width, 0 <= y, y <= height else {
            throw PipelineError("point (\(formatNumber(x)), \(formatNumber(y))) lies outside the "
                + "\(box.imageW)x\(box.imageH) image")
        }
        rows.append([x, y, x, y])
    }
    for b in boxes {
        guard b.count == 4 else { throw PipelineError("a box is (x0, y0, x1, y1), got \(b.count) values") }
        let x0 = b[0], y0 = b[1], x1 = b[2], y1 = b[3]
        guard 0 <= x0, x0 < x1, x1 <= width, 0 <= y0, y0 < y1, y1 <= height else {
            throw PipelineError("box (\(formatNumber(x0)), \(formatNumber(y0)), \(formatNumber(x1)), \(formatNumber(y1))) "
                + "is empty or outside the \(box.imageW)x\(box.imageH) image")
        }
        rows.append(b)
    }
    if rows.isEmpty { throw PipelineError("give at least one point or box") }
    // The official head normalizes prompts by the unpadded image extent, the graph by the model input:
    // stretching the prompt (not the image) to the input makes the two agree on a letterboxed image.
    let stretch = [Float(box.inputW) / Float(box.imageW), Float(box.inputH) / Float(box.imageH)]
    let half = [CLICK_HALF_SIZE * (Float(box.inputW) / Float(box.validW)),
                CLICK_HALF_SIZE * (Float(box.inputH) / Float(box.validH))]
    var out = [Float](repeating: 0, count: rows.count * 4)
    var kinds = [Int32](repeating: BOX, count: rows.count)
    for (i, row) in rows.enumerated() {
        for j in 0..<4 {
            var v = Float(row[j]) * stretch[j % 2]
            if i < points.count { v += j < 2 ? -half[j % 2] : half[j % 2] }
            out[i * 4 + j] = v
        }
        if i < points.count { kinds[i] = POINT }
    }
    return (out, kinds)
}

/// Prompts packed `slots` at a time into an artifact's K prompt slots, as pipeline.prompt: each chunk holds
/// prompts first..<first + count, the remaining slots padding (zero box, kind -1). slots nil or 0: all
/// prompts in one chunk. No prompts: no chunk.
public func packPrompts(boxes: [Float], kinds: [Int32], slots: Int?) throws -> [PromptChunk] {
    let count = kinds.count
    guard boxes.count == count * 4 else { throw PipelineError("\(boxes.count / 4) boxes but \(count) kinds") }
    let size = (slots ?? 0) > 0 ? slots! : count
    var chunks: [PromptChunk] = []
    var first = 0
    while first < count {
        let n = min(size, count - first)
        var chunkBoxes = [Float](repeating: 0, count: size * 4)
        chunkBoxes.replaceSubrange(0..<(n * 4), with: boxes[(first * 4)..<((first + n) * 4)])
        var chunkKinds = [Int32](repeating: PADDING, count: size)
        chunkKinds.replaceSubrange(0..<n, with: kinds[first..<(first + n)])
        chunks.append(PromptChunk(boxes: chunkBoxes, kinds: chunkKinds, count: n, first: first))
        first += size
    }
    return chunks
}
