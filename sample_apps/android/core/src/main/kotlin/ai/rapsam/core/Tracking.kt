// Instance ids across video frames, a port of sample_apps/web/src/pipeline.js (rapsam/postprocess.py
// `QueryTracker`, `instance_ids`; scipy's linear_sum_assignment).

package ai.rapsam.core

import kotlin.math.max
import kotlin.math.min
import kotlin.math.sqrt

/**
 * Minimum-cost assignment of a [nRows, nCols] row-major cost matrix, as scipy.optimize.linear_sum_assignment: the
 * smaller side is fully matched. Shortest augmenting paths with potentials (Jonker-Volgenant / Kuhn-Munkres),
 * O(n^2 m). Returns (rows, cols), rows ascending. With tied optima the pairs may differ from scipy's; the total
 * cost is the same.
 */
fun linearSumAssignment(cost: DoubleArray, nRows: Int, nCols: Int): Pair<IntArray, IntArray> {
    require(cost.size >= nRows * nCols) { "expected ${nRows}x$nCols costs, got ${cost.size}" }
    for (i in 0 until nRows * nCols) {
        require(!cost[i].isNaN() && cost[i] != Double.NEGATIVE_INFINITY) { "cost matrix is invalid (NaN or -inf)" }
    }
    val transposed = nRows > nCols
    val n = min(nRows, nCols) // rows of the working problem, n <= m
    val m = max(nRows, nCols)
    fun at(i: Int, j: Int) = if (transposed) cost[j * nCols + i] else cost[i * nCols + j]
    // 1-based arrays; p[j]: row assigned to column j (0 none); way: predecessor column on the path.
    val u = DoubleArray(n + 1)
    val v = DoubleArray(m + 1)
    val p = IntArray(m + 1)
    val way = IntArray(m + 1)
    val minv = DoubleArray(m + 1)
    val used = BooleanArray(m + 1)
    for (i in 1..n) {
        p[0] = i
        var j0 = 0
        minv.fill(Double.POSITIVE_INFINITY)
        used.fill(false)
        do {
            used[j0] = true
            val i0 = p[j0]
            var delta = Double.POSITIVE_INFINITY
            var j1 = -1
            for (j in 1..m) {
                if (used[j]) continue
                val cur = at(i0 - 1, j - 1) - u[i0] - v[j]
                if (cur < minv[j]) {
                    minv[j] = cur
                    way[j] = j0
                }
                if (minv[j] < delta) {
                    delta = minv[j]
                    j1 = j
                }
            }
            require(j1 >= 0 && delta != Double.POSITIVE_INFINITY) { "cost matrix is infeasible" }
            for (j in 0..m) {
                if (used[j]) {
                    u[p[j]] += delta
                    v[j] -= delta
                } else {
                    minv[j] -= delta
                }
            }
            j0 = j1
        } while (p[j0] != 0)
        do {
            val j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
        } while (j0 != 0)
    }
    val pairs = (1..m).filter { p[it] != 0 }
        .map { j -> if (transposed) (j - 1) to (p[j] - 1) else (p[j] - 1) to (j - 1) }
        .sortedBy { it.first }
    return IntArray(pairs.size) { pairs[it].first } to IntArray(pairs.size) { pairs[it].second }
}

/** F.normalize(x, dim=-1) of [n, d] float32: x / max(||x||, 1e-12), rounded to float32. */
internal fun normalizeRows(queries: FloatArray, n: Int, d: Int): FloatArray {
    val out = FloatArray(n * d)
    for (i in 0 until n) {
        var sq = 0.0
        for (j in 0 until d) sq += queries[i * d + j].toDouble() * queries[i * d + j]
        val norm = max(sqrt(sq).toFloat().toDouble(), 1e-12)
        for (j in 0 until d) out[i * d + j] = (queries[i * d + j] / norm).toFloat()
    }
    return out
}

/**
 * Instance ids across video frames by matching object queries (MinVIS style), as rapsam's QueryTracker: queries of
 * frame t are matched one-to-one to those of frame t-1 by minimum-cost assignment on 1 - cosine similarity, over
 * all queries alive or not; an alive query matched to a query alive at t-1 keeps its id; other alive queries get
 * new ids in increasing query index from a counter that never goes back; queries not alive get -1. Only the
 * previous frame is remembered. Not thread-safe: one tracker per video.
 */
class QueryTracker {
    private var prevQueries: FloatArray? = null
    private var prevN = 0
    private var prevD = 0
    private var prevIds = IntArray(0)
    private var nextId = 0

    /** Start a new video: no previous frame, next id 0. */
    fun reset() {
        prevQueries = null
        prevN = 0
        prevD = 0
        prevIds = IntArray(0)
        nextId = 0
    }

    /** [queries] [n * d], [alive] [n] -> ids [n], -1 where not alive. */
    fun update(queries: FloatArray, n: Int, d: Int, alive: BooleanArray): IntArray {
        require(queries.size >= n * d && alive.size >= n) { "expected ${n}x$d queries and $n alive flags" }
        val q = normalizeRows(queries, n, d)
        val inherited = IntArray(n) { -1 }
        val prev = prevQueries
        if (prev != null) {
            require(d == prevD) { "query size $d differs from the previous frame's $prevD" }
            val m = prevN
            val cost = DoubleArray(n * m)
            for (i in 0 until n) {
                for (j in 0 until m) {
                    // float32 products summed in double, as the JS port (agrees with torch's matmul at these sizes)
                    var dot = 0.0
                    for (c in 0 until d) dot += q[i * d + c].toDouble() * prev[j * d + c]
                    cost[i * m + j] = (1f - dot.toFloat()).toDouble()
                }
            }
            val (rows, cols) = linearSumAssignment(cost, n, m)
            for (i in rows.indices) inherited[rows[i]] = prevIds[cols[i]]
        }
        val ids = IntArray(n) { if (alive[it]) inherited[it] else -1 }
        for (i in 0 until n) if (alive[i] && ids[i] < 0) ids[i] = nextId++
        prevQueries = q
        prevN = n
        prevD = d
        prevIds = ids
        return ids
    }
}

/**
 * The video-wide id of each segment of one frame's panoptic result (-1 for stuff), from its object queries [n, d]:
 * the queries behind thing segments are the alive ones (as postprocess.instance_ids).
 */
fun instanceIds(tracker: QueryTracker, result: PanopticResult, queries: FloatArray, n: Int, d: Int): IntArray {
    val alive = BooleanArray(n)
    for (segment in result.segments) if (segment.isThing) for (q in segment.queries) alive[q] = true
    val ids = tracker.update(queries, n, d, alive)
    return IntArray(result.segments.size) { val s = result.segments[it]; if (s.isThing) ids[s.queries[0]] else -1 }
}
