// Unit tests of the pipeline functions that need no test vectors: the hand-made cases of the web app's
// test/pipeline.test.mjs (same inputs, same expectations), the Hungarian assignment against an exhaustive
// search, and the stage timer.

import Foundation
import XCTest
@testable import RapSAMKit

/// The web tests' seeded generator (mulberry32), so that the hand-made queries are the same numbers.
struct Mulberry32 {
    private var state: UInt32

    init(seed: UInt32) { state = seed }

    mutating func next() -> Double {
        state = state &+ 0x6d2b_79f5
        var t = state
        t = (t ^ (t >> 15)) &* (t | 1)
        t ^= t &+ ((t ^ (t >> 7)) &* (t | 61))
        return Double(t ^ (t >> 14)) / 4_294_967_296
    }
}

final class PipelineTests: XCTestCase {
    func testRoundHalfEvenIsPythonsRound() {
        let values: [Double] = [0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001, 3, 84.5, 85.5]
        XCTAssertEqual(values.map(roundHalfEven), [0, 2, 2, 0, -2, 2, 3, 3, 84, 86])
    }

    func testFma32RoundsOnce() {
        // (1 + 2^-12)^2 - 1 - 2^-11 = 2^-24 exactly; with two roundings the product's 2^-24 would be lost.
        let a: Float = 1 + 0x1p-12
        XCTAssertEqual(fma32(a, a, -(1 + 0x1p-11)), 0x1p-24)
        XCTAssertEqual(a * a - (1 + 0x1p-11), 0)
    }

    func testBilinearResizeIsTorchAlignCornersFalseOnATinyCase() throws {
        // 1x2 -> 1x4: source x = (dst + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        XCTAssertEqual(try bilinearResize([0, 8], channels: 1, srcH: 1, srcW: 2, dstH: 1, dstW: 4), [0, 2, 6, 8])
        // same size copies
        let src: [Float] = [1.5, -2, 3, 4, 5, 6]
        XCTAssertEqual(try bilinearResize(src, channels: 2, srcH: 1, srcW: 3, dstH: 1, dstW: 3), src)
        // a crop read in place: the top-left 1x2 of a 2x3 plane, upsampled to 1x4
        XCTAssertEqual(try bilinearResize([0, 8, 100, 100, 100, 100], channels: 1, srcH: 1, srcW: 2, dstH: 1, dstW: 4,
                                          srcStride: 3, srcPlane: 6), [0, 2, 6, 8])
        XCTAssertThrowsError(try bilinearResize([], channels: 1, srcH: 0, srcW: 2, dstH: 1, dstW: 1))
    }

    func testLetterboxPadsBottomAndRight() throws {
        // a 4x2 (w x h) image into a 4x4 input: scale 1, valid 2x4, rows 2 and 3 are padding
        let rgba: [UInt8] = (0..<8).flatMap { i -> [UInt8] in [UInt8(i), UInt8(10 * i), UInt8(200 - i), 255] }
        let (tensor, box) = try letterbox(rgba, width: 4, height: 2, inputSize: [4, 4], padValue: [1, 2, 3])
        XCTAssertEqual(box, Letterbox(imageH: 2, imageW: 4, validH: 2, validW: 4, inputH: 4, inputW: 4))
        XCTAssertEqual(Array(tensor[0..<8]), (0..<8).map { Float($0) })
        XCTAssertEqual(Array(tensor[8..<16]), [Float](repeating: 1, count: 8))
        XCTAssertEqual(Array(tensor[16..<24]), (0..<8).map { Float(10 * $0) })
        XCTAssertEqual(Array(tensor[40..<48]), [Float](repeating: 3, count: 8))
        // a 3x1 image into 4x4: scale min(4, 4/3), valid round(1.333) = 1 x 4
        let (_, thin) = try letterbox([UInt8](repeating: 9, count: 12), width: 3, height: 1, inputSize: [4, 4], padValue: [0, 0, 0])
        XCTAssertEqual([thin.validH, thin.validW], [1, 4])
        XCTAssertThrowsError(try letterbox([], width: 0, height: 1, inputSize: [4, 4], padValue: [0, 0, 0]))
        XCTAssertThrowsError(try letterbox([1, 2, 3], width: 1, height: 1, inputSize: [4, 4], padValue: [0, 0, 0]))
    }

    func testPromptsToBoxesRejectsPromptsOutsideTheImage() throws {
        let box = Letterbox(imageH: 100, imageW: 200, validH: 64, validW: 128, inputH: 128, inputW: 128)
        func message(_ body: () throws -> Any) -> String {
            do {
                _ = try body()
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(message { try promptsToBoxes(points: [[201, 5]], boxes: [], box: box) },
                       "point (201, 5) lies outside the 200x100 image")
        XCTAssertTrue(message { try promptsToBoxes(points: [[-1, 5]], boxes: [], box: box) }.contains("outside"))
        XCTAssertTrue(message { try promptsToBoxes(points: [], boxes: [[10, 10, 10, 20]], box: box) }
            .contains("box (10, 10, 10, 20) is empty or outside"))
        XCTAssertTrue(message { try promptsToBoxes(points: [], boxes: [[0, 0, 201, 20]], box: box) }
            .contains("empty or outside the 200x100 image"))
        XCTAssertEqual(message { try promptsToBoxes(points: [], boxes: [], box: box) }, "give at least one point or box")
        // on the border is inside
        let (boxes, kinds) = try promptsToBoxes(points: [[200, 100]], boxes: [[0, 0, 200, 100]], box: box)
        XCTAssertEqual(kinds, [POINT, BOX])
        // x stretched by 128/200 = 0.64, y by 1.28; the click's half-size 3 * 128/128 in x, 3 * 128/64 in y
        XCTAssertEqual(boxes, [128 - 3, 128 - 6, 128 + 3, 128 + 6, 0, 0, 128, 128])
    }

    func testPackPromptsFivePromptsIntoTwoSlots() throws {
        let boxes = (1...20).map(Float.init)
        let kinds = [POINT, POINT, BOX, BOX, BOX]
        let chunks = try packPrompts(boxes: boxes, kinds: kinds, slots: 2)
        XCTAssertEqual(chunks.map(\.count), [2, 2, 1])
        XCTAssertEqual(chunks.map(\.first), [0, 2, 4])
        XCTAssertEqual(chunks.map(\.kinds), [[POINT, POINT], [BOX, BOX], [BOX, PADDING]])
        XCTAssertEqual(chunks[1].boxes, [9, 10, 11, 12, 13, 14, 15, 16])
        XCTAssertEqual(chunks[2].boxes, [17, 18, 19, 20, 0, 0, 0, 0])
        for chunk in chunks { XCTAssertEqual(chunk.boxes.count, 8) }
        // no slot limit: one chunk of all of them; no prompts: no chunk
        XCTAssertEqual(try packPrompts(boxes: boxes, kinds: kinds, slots: nil).map(\.count), [5])
        XCTAssertEqual(try packPrompts(boxes: [], kinds: [], slots: 2).count, 0)
        XCTAssertThrowsError(try packPrompts(boxes: [1, 2, 3], kinds: [POINT], slots: 2))
    }

    func testPromptMasksDropsPaddingSlots() throws {
        // image = input = valid: the upsampling copies, the masks are logits > threshold
        let box = Letterbox(imageH: 1, imageW: 2, validH: 1, validW: 2, inputH: 1, inputW: 2)
        let result = try promptMasks([1, -1, 5, 5, -2, 3], iou: [0.25, 0.5, 0.75], k: 3, h: 1, w: 2, box: box,
                                     valid: [PADDING, BOX, POINT].map { $0 >= 0 })
        XCTAssertEqual(result.index, [1, 2])
        XCTAssertEqual(result.masks, [[true, true], [false, true]])
        XCTAssertEqual(result.iou, [0.5, 0.75])
        XCTAssertEqual(try promptMasks([1, -1], iou: [0.5], k: 1, h: 1, w: 2, box: box, maskThreshold: 2).masks, [[false, false]])
    }

    func testQueryTrackerOnHandMadeQueries() throws {
        var random = Mulberry32(seed: 7)
        let n = 6, d = 16
        let base = (0..<(n * d)).map { _ in Float(random.next() * 2 - 1) }
        func permute(_ q: [Float], _ order: [Int]) -> [Float] { order.flatMap { q[($0 * d)..<(($0 + 1) * d)] } }
        let tracker = QueryTracker()
        let alive = [true, false, true, true, false, true]
        // first frame: new ids in increasing query index, -1 where not alive
        XCTAssertEqual(try tracker.update(queries: base, n: n, d: d, alive: alive), [0, -1, 1, 2, -1, 3])
        // identity (scaled queries: cosine similarity ignores the norm): same ids
        XCTAssertEqual(try tracker.update(queries: base.map { $0 * 3 }, n: n, d: d, alive: alive), [0, -1, 1, 2, -1, 3])
        // a permutation of the queries: ids follow their queries (new query i is old query order[i])
        let order = [5, 3, 0, 1, 4, 2]
        XCTAssertEqual(try tracker.update(queries: permute(base, order), n: n, d: d, alive: order.map { alive[$0] }),
                       [3, 2, 0, -1, -1, 1])
        // back to the original order; query 1 (never alive) and query 3 (id 2) die; query 4 comes alive: new id 4
        XCTAssertEqual(try tracker.update(queries: base, n: n, d: d, alive: [true, false, true, false, true, true]),
                       [0, -1, 1, -1, 4, 3])
        // dead-then-alive is a new track (query 3 had id 2): it gets 6 (after query 1's 5), ids are never reused
        XCTAssertEqual(try tracker.update(queries: base, n: n, d: d, alive: [Bool](repeating: true, count: n)),
                       [0, 5, 1, 6, 4, 3])
        // fewer queries than the previous frame: the smaller side is fully matched
        XCTAssertEqual(try tracker.update(queries: permute(base, [4, 0]), n: 2, d: d, alive: [true, true]), [4, 0])
        // more queries than the previous frame: the unmatched ones are new
        XCTAssertEqual(try tracker.update(queries: base, n: n, d: d, alive: [Bool](repeating: true, count: n)),
                       [0, 7, 8, 9, 4, 10])
        // reset: a new video restarts at 0
        tracker.reset()
        XCTAssertEqual(try tracker.update(queries: base, n: n, d: d, alive: [false, true, true, false, false, false]),
                       [-1, 0, 1, -1, -1, -1])
        XCTAssertThrowsError(try tracker.update(queries: base, n: n * 2, d: d / 2, alive: [Bool](repeating: true, count: 2 * n)),
                             "another query size than the previous frame's")
    }

    /// The minimum total cost over every injective map of the smaller side into the larger one, by dynamic
    /// programming over subsets of the larger side (exact; fine up to about 16 columns).
    private func exhaustiveMinimum(_ cost: [Double], _ n: Int, _ m: Int) -> Double {
        let small = min(n, m), large = max(n, m)
        func at(_ i: Int, _ j: Int) -> Double { n <= m ? cost[i * m + j] : cost[j * m + i] }
        var best = [Double](repeating: .infinity, count: 1 << large)
        best[0] = 0
        for mask in 0..<(1 << large) where best[mask] < .infinity {
            let i = mask.nonzeroBitCount
            guard i < small else { continue }
            for j in 0..<large where mask & (1 << j) == 0 {
                best[mask | (1 << j)] = min(best[mask | (1 << j)], best[mask] + at(i, j))
            }
        }
        return (0..<(1 << large)).filter { $0.nonzeroBitCount == small }.map { best[$0] }.min() ?? 0
    }

    func testLinearSumAssignmentMatchesAnExhaustiveSearch() throws {
        var random = Mulberry32(seed: 12345)
        var worst = 0.0
        for c in 0..<40 {
            var n = 1 + Int(random.next() * 10), m = 1 + Int(random.next() * 14)
            if c % 5 == 4 { (n, m) = (min(m, 12), n) }  // some taller than wide
            if c == 0 { (n, m) = (10, 14) }
            if c == 1 { (n, m) = (14, 10) }
            if c == 2 { (n, m) = (12, 12) }
            // integer costs (many ties) for some, floats (some negative) for others
            let integers = c % 3 == 0
            let cost = (0..<(n * m)).map { _ in integers ? (random.next() * 5).rounded(.down) : random.next() * 4 - 1 }
            let (rows, cols) = try linearSumAssignment(cost, nRows: n, nCols: m)
            let k = min(n, m)
            XCTAssertEqual(rows.count, k)
            XCTAssertEqual(Set(rows).count, k)
            XCTAssertEqual(Set(cols).count, k)
            XCTAssertEqual(rows, rows.sorted(), "rows ascending")
            XCTAssertTrue(zip(rows, cols).allSatisfy { $0 < n && $1 < m })
            let total = zip(rows, cols).map { cost[$0 * m + $1] }.reduce(0, +)
            let optimum = exhaustiveMinimum(cost, n, m)
            worst = max(worst, abs(total - optimum))
            XCTAssertEqual(total, optimum, accuracy: 1e-9, "case \(c) (\(n)x\(m))")
        }
        print("40 matrices up to 14x10 and 10x14: worst |total - optimum| \(worst)")
        XCTAssertThrowsError(try linearSumAssignment([.nan], nRows: 1, nCols: 1))
        XCTAssertThrowsError(try linearSumAssignment([-.infinity], nRows: 1, nCols: 1))
        XCTAssertEqual(try linearSumAssignment([], nRows: 0, nCols: 3).rows, [])
    }

    func testPanopticMergeEdgeCases() throws {
        // nothing kept: empty result
        let none = try panopticMerge([0, 0, 0, 0], [0, 5], n: 1, numClassesPlusOne: 2, height: 2, width: 2, isThing: [true])
        XCTAssertTrue(none.segments.isEmpty)
        XCTAssertEqual(none.segmentMap, [0, 0, 0, 0])
        // two stuff queries of one class share a segment; a thing query is its own
        let masks: [Float] = [
            9, 9, -9, -9,  // q0: stuff class 1, left column
            -9, -9, 9, -9,  // q1: stuff class 1, right top
            -9, -9, -9, 9,  // q2: thing class 0, right bottom
        ]
        let classes: [Float] = [0, 10, 0, 0, 10, 0, 10, 0, 0]
        let result = try panopticMerge(masks, classes, n: 3, numClassesPlusOne: 3, height: 2, width: 2, isThing: [true, false])
        XCTAssertEqual(result.segmentMap, [1, 1, 1, 2])
        XCTAssertEqual(result.segments.map(\.id), [1, 2])
        XCTAssertEqual(result.segments.map(\.classId), [1, 0])
        XCTAssertEqual(result.segments.map(\.isThing), [false, true])
        XCTAssertEqual(result.segments.map(\.area), [3, 1])
        XCTAssertEqual(result.segments.map(\.queries), [[0, 1], [2]])
        XCTAssertThrowsError(try panopticMerge(masks, classes, n: 3, numClassesPlusOne: 3, height: 2, width: 2, isThing: [true]))
    }

    func testStageTimerSummariesAndBenchLines() throws {
        let timer = StageTimer()
        for ms in (1...10).reversed() { timer.record("encode", ms: Double(ms)) }
        timer.record("load", ms: 120)
        XCTAssertEqual(timer.stages, ["encode", "load"])
        let s = try XCTUnwrap(timer.summary("encode"))
        XCTAssertEqual(s.runs, 10)
        XCTAssertEqual(s.p50, 5.5, accuracy: 1e-12)
        XCTAssertEqual(s.p90, 9.1, accuracy: 1e-12)
        XCTAssertEqual(s.p99, 9.91, accuracy: 1e-12)
        XCTAssertEqual(s.mean, 5.5, accuracy: 1e-12)
        XCTAssertEqual([s.min, s.max], [1, 10])
        XCTAssertEqual(timer.last("encode"), 1)
        XCTAssertEqual(timer.time("prompt") { 42 }, 42)
        let lines = timer.benchLines(context: ["device": "iPhone16,1", "artifact": "demo", "runtime": "Core ML (ALL)"])
        XCTAssertEqual(lines.count, 3)
        let first = try XCTUnwrap(lines.first)
        XCTAssertTrue(first.hasPrefix("RAPSAM_BENCH {\"artifact\":"))  // keys sorted, as the Kotlin core writes them
        let record = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(first.dropFirst("RAPSAM_BENCH ".count).utf8)) as? [String: Any])
        XCTAssertEqual(record["stage"] as? String, "encode")
        XCTAssertEqual(record["status"] as? String, "ok")
        XCTAssertEqual(record["device"] as? String, "iPhone16,1")
        XCTAssertEqual(record["artifact"] as? String, "demo")
        XCTAssertEqual(record["runs"] as? Int, 10)
        let latency = try XCTUnwrap(record["latency_ms"] as? [String: Double])
        XCTAssertEqual(latency, ["p50": 5.5, "p90": 9.1, "p99": 9.91, "mean": 5.5, "min": 1, "max": 10])
        let failed = StageTimer.failedLine(reason: "no model", context: ["device": "iPhone16,1"])
        XCTAssertEqual(failed, #"RAPSAM_BENCH {"device":"iPhone16,1","reason":"no model","status":"failed"}"#)
        timer.reset()
        XCTAssertTrue(timer.benchLines(context: [:]).isEmpty)
    }
}
