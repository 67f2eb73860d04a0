// Instance ids across video frames by matching object queries (MinVIS style), as rapsam.postprocess
// QueryTracker / instance_ids, with its own Hungarian assignment in place of scipy's. A port of
// sample_apps/web/src/pipeline.js.

import Foundation

/// Minimum-cost assignment of an [nRows, nCols] row-major cost matrix, as
/// scipy.optimize.linear_sum_assignment: the smaller side is fully matched. Shortest augmenting paths with
/// potentials (Jonker-Volgenant / Kuhn-Munkres), O(n^2 m). Returns (rows, cols), rows ascending.
/// With tied optima the pairs may differ from scipy's; the total cost is the same.
public func linearSumAssignment(_ cost: [Double], nRows: Int, nCols: Int) throws -> (rows: [Int], cols: [Int]) {
    guard cost.count >= nRows * nCols else { throw PipelineError("expected \(nRows)x\(nCols) costs, got \(cost.count)") }
    for value in cost.prefix(nRows * nCols) where value.isNaN || value == -.infinity {
        throw PipelineError("cost matrix is invalid (NaN or -inf)")
    }
    let transposed = nRows > nCols
    let n = transposed ? nCols : nRows  // rows of the working problem, n <= m
    let m = transposed ? nRows : nCols
    func at(_ i: Int, _ j: Int) -> Double { transposed ? cost[j * nCols + i] : cost[i * nCols + j] }
    // 1-based arrays; p[j]: row assigned to column j (0 none); way: predecessor column on the path.
    var u = [Double](repeating: 0, count: n + 1)
    var v = [Double](repeating: 0, count: m + 1)
    var p = [Int](repeating: 0, count: m + 1)
    var way = [Int](repeating: 0, count: m + 1)
    var minv = [Double](repeating: 0, count: m + 1)
    var used = [Bool](repeating: false, count: m + 1)
    if n > 0 {
        for i in 1...n {
            p[0] = i
            var j0 = 0
            for j in 0...m {
                minv[j] = .infinity
                used[j] = false
            }
            repeat {
                used[j0] = true
                let i0 = p[j0]
                var delta = Double.infinity
                var j1 = -1
                for j in stride(from: 1, through: m, by: 1) where !used[j] {
                    let cur = at(i0 - 1, j - 1) - u[i0] - v[j]
                    if cur < minv[j] {
                        minv[j] = cur
                        way[j] = j0
                    }
                    if minv[j] < delta {
                        delta = minv[j]
                        j1 = j
                    }
                }
                if j1 < 0 || delta == .infinity { throw PipelineError("cost matrix is infeasible") }
                for j in 0...m {
                    if used[j] {
                        u[p[j]] += delta
                        v[j] -= delta
                    } else {
                        minv[j] -= delta
                    }
                }
                j0 = j1
            } while p[j0] != 0
            repeat {
                let j1 = way[j0]
                p[j0] = p[j1]
                j0 = j1
            } while j0 != 0
        }
    }
    var pairs: [(Int, Int)] = []
    for j in stride(from: 1, through: m, by: 1) where p[j] != 0 {
        pairs.append(transposed ? (j - 1, p[j] - 1) : (p[j] - 1, j - 1))
    }
    pairs.sort { $0.0 < $1.0 }
    return (pairs.map { $0.0 }, pairs.map { $0.1 })
}

/// F.normalize(x, dim=-1) of [n, d] float32: x / max(||x||, 1e-12), rounded to float32 (the sum of squares
/// in double, as the JS port).
func normalizeRows(_ queries: [Float], n: Int, d: Int) -> [Float] {
    var out = [Float](repeating: 0, count: n * d)
    for i in 0..<n {
        var sq = 0.0
        for j in 0..<d {
            let x = Double(queries[i * d + j])
            sq += x * x
        }
        let norm = max(Double(Float(sq.squareRoot())), 1e-12)
        for j in 0..<d { out[i * d + j] = Float(Double(queries[i * d + j]) / norm) }
    }
    return out
}

/// Instance ids across video frames by matching object queries (MinVIS style), as rapsam's QueryTracker:
/// queries of frame t are matched one-to-one to those of frame t-1 by minimum-cost assignment on
/// 1 - cosine similarity, over all queries alive or not; an alive query matched to a query alive at t-1 keeps
/// its id; other alive queries get new ids in increasing query index from a counter that never goes back;
/// queries not alive get -1. Only the previous frame is remembered.
public final class QueryTracker {
    private var prevQueries: [Float]?
    private var prevN = 0
    private var prevD = 0
    private var prevIds: [Int] = []
    private var nextId = 0

    public init() {}

    /// Start a new video: no previous frame, next id 0.
    public func reset() {
        prevQueries = nil
        prevN = 0
        prevD = 0
        prevIds = []
        nextId = 0
    }

    /// queries [n * d], alive [n] -> ids [n], -1 where not alive.
    public func update(queries: [Float], n: Int, d: Int, alive: [Bool]) throws -> [Int] {
        guard queries.count >= n * d, alive.count >= n else {
            throw PipelineError("expected \(n)x\(d) queries and \(n) alive flags")
        }
        let q = normalizeRows(queries, n: n, d: d)
        var inherited = [Int](repeating: -1, count: n)
        if let prev = prevQueries {
            guard d == prevD else { throw PipelineError("query size \(d) differs from the previous frame's \(prevD)") }
            let m = prevN
            var cost = [Double](repeating: 0, count: n * m)
            for i in 0..<n {
                for j in 0..<m {
                    var dot = 0.0
                    for c in 0..<d { dot += Double(q[i * d + c]) * Double(prev[j * d + c]) }
                    cost[i * m + j] = Double(1 - Float(dot))
                }
            }
            let (rows, cols) = try linearSumAssignment(cost, nRows: n, nCols: m)
            for (row, col) in zip(rows, cols) { inherited[row] = prevIds[col] }
        }
        var ids = (0..<n).map { alive[$0] ? inherited[$0] : -1 }
        for i in 0..<n where alive[i] && ids[i] < 0 {
            ids[i] = nextId
            nextId += 1
        }
        prevQueries = q
        prevN = n
        prevD = d
        prevIds = ids
        return ids
    }
}

/// The video-wide id of each segment of one frame's panoptic result (-1 for stuff), from its object queries
/// [n, d]: the queries behind thing segments are the alive ones (as postprocess.instance_ids).
public func instanceIds(tracker: QueryTracker, result: PanopticResult, queries: [Float], n: Int, d: Int) throws -> [Int] {
    var alive = [Bool](repeating: false, count: n)
    for segment in result.segments where segment.isThing {
        for q in segment.queries where q < n { alive[q] = true }
    }
    let ids = try tracker.update(queries: queries, n: n, d: d, alive: alive)
    return result.segments.map { $0.isThing ? ids[$0.queries[0]] : -1 }
}
