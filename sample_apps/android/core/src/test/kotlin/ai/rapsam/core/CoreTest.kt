// Hand-made cases of the core's functions (no vectors needed): rounding, resize, prompt packing, the tracker, the
// assignment solver against brute force, merge edge cases, JSON and the stage timer.

package ai.rapsam.core

import java.util.Random
import kotlin.math.abs
import kotlin.math.min
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

private fun assertFailsWith(message: String, block: () -> Unit) {
    val e = assertThrows(IllegalArgumentException::class.java) { block() }
    assertTrue("'${e.message}' does not contain '$message'", e.message!!.contains(message))
}

class CoreTest {
    @Test
    fun roundHalfEvenIsPythonsRound() {
        val values = doubleArrayOf(0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001, 3.0, 84.5, 85.5)
        assertArrayEquals(doubleArrayOf(0.0, 2.0, 2.0, 0.0, -2.0, 2.0, 3.0, 3.0, 84.0, 86.0), values.map(::roundHalfEven).toDoubleArray(), 0.0)
    }

    @Test
    fun fma32RoundsOnce() {
        val a = 1f + Math.scalb(1f, -12) // a * a = 1 + 2^-11 + 2^-24: a tie in float32, so a * a rounds to 1 + 2^-11
        assertEquals(0f, a * a - (1f + Math.scalb(1f, -11)), 0f)
        assertEquals(Math.scalb(1f, -24), fma32(a, a, -(1f + Math.scalb(1f, -11))), 0f)
    }

    @Test
    fun fma32EmulatedIsMathFma() {
        // The double sum lands on a float32 midpoint: a * b = M + 2^-46 with M = F + 2^-24 halfway between the floats
        // F = 1 + 838866 * 2^-23 and F + 2^-23; c = -2^-46 +- 2^-60 leaves M +- 2^-60, which rounds to M in double.
        val a = 1f + 5 * Math.scalb(1f, -23)
        val b = 1f + 838861 * Math.scalb(1f, -23)
        val f = 1f + 838866 * Math.scalb(1f, -23)
        for ((c, expected) in listOf(
            -Math.scalb(1f, -46) + Math.scalb(1f, -60) to Math.nextUp(f), // just above the midpoint: up
            -Math.scalb(1f, -46) - Math.scalb(1f, -60) to f, // just below: down (ties-to-even alone would also say f)
        )) {
            assertEquals(expected, Math.fma(a, b, c), 0f)
            assertEquals(expected, fma32Emulated(a, b, c), 0f)
        }
        val rand = Random(3)
        for (i in 0 until 1_000_000) {
            val x = (rand.nextFloat() - 0.5f) * 512
            val y = rand.nextFloat()
            val z = if (i % 2 == 0) -(x * y) * (1 + (rand.nextFloat() - 0.5f) * 1e-6f) else (rand.nextFloat() - 0.5f) * 512
            assertEquals("fma($x, $y, $z)", Math.fma(x, y, z), fma32Emulated(x, y, z), 0f)
        }
    }

    @Test
    fun bilinearResizeIsTorchsAlignCornersFalse() {
        // 1x2 -> 1x4: source x = (dst + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        assertArrayEquals(floatArrayOf(0f, 2f, 6f, 8f), bilinearResize(floatArrayOf(0f, 8f), 1, 1, 2, 1, 4), 0f)
        // same size copies
        val src = floatArrayOf(1.5f, -2f, 3f, 4f, 5f, 6f)
        assertArrayEquals(src, bilinearResize(src, 2, 1, 3, 1, 3), 0f)
        // a crop read in place: the top-left 1x2 of a 2x3 plane, then 2x2 -> 1x1 averages
        assertArrayEquals(floatArrayOf(-0.25f), bilinearResize(src, 1, 1, 2, 1, 1, srcStride = 3), 0f)
        assertArrayEquals(floatArrayOf(2.5f), bilinearResize(floatArrayOf(1f, 2f, 3f, 4f), 1, 2, 2, 1, 1), 0f)
        assertFailsWith("empty") { bilinearResize(FloatArray(0), 1, 0, 2, 1, 1) }
    }

    @Test
    fun letterboxPadsBottomRight() {
        // 2 wide x 1 high, red then blue, into 4x4: scale 2, valid 2x4, rows 2..3 padding
        val lb = letterbox(intArrayOf(0xFFFF0000.toInt(), 0xFF0000FF.toInt()), 2, 1, 4, 4, floatArrayOf(1f, 2f, 3f))
        assertEquals(Letterbox(1, 2, 2, 4, 4, 4), lb.box)
        assertArrayEquals(floatArrayOf(255f, 191.25f, 63.75f, 0f), lb.tensor.copyOfRange(0, 4), 0f) // R row 0
        assertArrayEquals(floatArrayOf(1f, 1f, 1f, 1f), lb.tensor.copyOfRange(8, 12), 0f) // R padding row
        assertArrayEquals(floatArrayOf(3f, 3f, 3f, 3f), lb.tensor.copyOfRange(44, 48), 0f) // B padding row
        assertFailsWith("empty side") { letterbox(IntArray(0), 0, 1, 4, 4, floatArrayOf(0f, 0f, 0f)) }
    }

    @Test
    fun promptsToBoxesStretchesAndRejectsPromptsOutside() {
        val box = Letterbox(100, 200, 64, 128, 128, 128)
        assertFailsWith("point (201, 5) lies outside the 200x100 image") { promptsToBoxes(listOf(floatArrayOf(201f, 5f)), listOf(), box) }
        assertFailsWith("outside") { promptsToBoxes(listOf(floatArrayOf(-1f, 5f)), listOf(), box) }
        assertFailsWith("box (10, 10, 10, 20) is empty or outside") { promptsToBoxes(listOf(), listOf(floatArrayOf(10f, 10f, 10f, 20f)), box) }
        assertFailsWith("empty or outside the 200x100 image") { promptsToBoxes(listOf(), listOf(floatArrayOf(0f, 0f, 201f, 20f)), box) }
        assertFailsWith("give at least one point or box") { promptsToBoxes(listOf(), listOf(), box) }
        // on the border is inside; x stretched by 128/200, y by 1.28; the click's half-size 3 * 128/128 in x, 3 * 128/64 in y
        val packed = promptsToBoxes(listOf(floatArrayOf(200f, 100f)), listOf(floatArrayOf(0f, 0f, 200f, 100f)), box)
        assertArrayEquals(intArrayOf(POINT, BOX), packed.kinds)
        assertArrayEquals(floatArrayOf(125f, 122f, 131f, 134f, 0f, 0f, 128f, 128f), packed.boxes, 0f)
    }

    @Test
    fun packPromptsFiveIntoTwoSlots() {
        val boxes = FloatArray(20) { it + 1f }
        val kinds = intArrayOf(POINT, POINT, BOX, BOX, BOX)
        val chunks = packPrompts(boxes, kinds, 2)
        assertEquals(listOf(2, 2, 1), chunks.map { it.count })
        assertEquals(listOf(0, 2, 4), chunks.map { it.first })
        assertArrayEquals(intArrayOf(POINT, POINT), chunks[0].kinds)
        assertArrayEquals(intArrayOf(BOX, BOX), chunks[1].kinds)
        assertArrayEquals(intArrayOf(BOX, PADDING), chunks[2].kinds)
        assertArrayEquals(floatArrayOf(9f, 10f, 11f, 12f, 13f, 14f, 15f, 16f), chunks[1].boxes, 0f)
        assertArrayEquals(floatArrayOf(17f, 18f, 19f, 20f, 0f, 0f, 0f, 0f), chunks[2].boxes, 0f)
        for (c in chunks) assertEquals(8, c.boxes.size)
        // no slot limit: one chunk of all of them; no prompts: no chunk
        assertEquals(listOf(5), packPrompts(boxes, kinds, 0).map { it.count })
        assertEquals(0, packPrompts(FloatArray(0), IntArray(0), 2).size)
        assertFailsWith("boxes but") { packPrompts(FloatArray(4), IntArray(2), 2) }
    }

    @Test
    fun promptMasksDropsPaddingSlots() {
        val box = Letterbox(2, 2, 2, 2, 2, 2)
        val logits = floatArrayOf(1f, -1f, 1f, -1f, /* padding */ 5f, 5f, 5f, 5f, -1f, -1f, -1f, 1f)
        val res = promptMasks(logits, floatArrayOf(0.5f, 0f, 0.75f), 3, 2, 2, box, 0f, booleanArrayOf(true, false, true))
        assertArrayEquals(intArrayOf(0, 2), res.index)
        assertArrayEquals(floatArrayOf(0.5f, 0.75f), res.iou, 0f)
        assertEquals(listOf(true, false, true, false), res.masks[0].toList())
        assertEquals(listOf(false, false, false, true), res.masks[1].toList())
    }

    @Test
    fun panopticMergeEdgeCases() {
        // nothing kept: empty result
        val none = panopticMerge(FloatArray(4), floatArrayOf(0f, 5f), 1, 2, 2, 2, booleanArrayOf(true))
        assertEquals(0, none.segments.size)
        assertArrayEquals(IntArray(4), none.segmentMap)
        // two stuff queries of one class share a segment; a thing query is its own
        val masks = floatArrayOf(
            9f, 9f, -9f, -9f, // q0: stuff class 1, left column
            -9f, -9f, 9f, -9f, // q1: stuff class 1, right top
            -9f, -9f, -9f, 9f, // q2: thing class 0, right bottom
        )
        val cls = floatArrayOf(0f, 10f, 0f, 0f, 10f, 0f, 10f, 0f, 0f)
        val res = panopticMerge(masks, cls, 3, 3, 2, 2, booleanArrayOf(true, false))
        assertArrayEquals(intArrayOf(1, 1, 1, 2), res.segmentMap)
        assertEquals(listOf(listOf(1, 1, false, 3, listOf(0, 1)), listOf(2, 0, true, 1, listOf(2))),
            res.segments.map { listOf(it.id, it.classId, it.isThing, it.area, it.queries) })
        assertFailsWith("disagree") { panopticMerge(masks, cls, 3, 3, 2, 2, booleanArrayOf(true)) }
        // an object-mask threshold above every score (softmax of [0, 10, 0]: 0.99991) keeps nothing
        assertEquals(0, panopticMerge(masks, cls, 3, 3, 2, 2, booleanArrayOf(true, false), Thresholds(objectMask = 0.99995f)).segments.size)
    }

    @Test
    fun queryTrackerOnHandMadeQueries() {
        val rand = Random(7)
        val n = 6
        val d = 16
        val base = FloatArray(n * d) { rand.nextFloat() * 2 - 1 }
        fun permute(q: FloatArray, perm: IntArray) = FloatArray(perm.size * d).also { out ->
            perm.forEachIndexed { i, src -> q.copyInto(out, i * d, src * d, (src + 1) * d) }
        }
        fun alive(vararg flags: Int) = BooleanArray(flags.size) { flags[it] == 1 }
        val tracker = QueryTracker()
        // first frame: new ids in increasing query index, -1 where not alive
        assertArrayEquals(intArrayOf(0, -1, 1, 2, -1, 3), tracker.update(base, n, d, alive(1, 0, 1, 1, 0, 1)))
        // identity (scaled queries: cosine similarity ignores the norm): same ids
        assertArrayEquals(intArrayOf(0, -1, 1, 2, -1, 3),
            tracker.update(FloatArray(n * d) { base[it] * 3 }, n, d, alive(1, 0, 1, 1, 0, 1)))
        // a permutation of the queries: ids follow their queries
        val perm = intArrayOf(5, 3, 0, 1, 4, 2) // new query i is old query perm[i]
        val wasAlive = alive(1, 0, 1, 1, 0, 1)
        assertArrayEquals(intArrayOf(3, 2, 0, -1, -1, 1),
            tracker.update(permute(base, perm), n, d, BooleanArray(n) { wasAlive[perm[it]] }))
        // back to the original order; query 1 (never alive) and query 3 (id 2) die; query 4 comes alive: new id 4
        assertArrayEquals(intArrayOf(0, -1, 1, -1, 4, 3), tracker.update(base, n, d, alive(1, 0, 1, 0, 1, 1)))
        // dead-then-alive is a new track (query 3 had id 2): it gets 6 (after query 1's 5), ids are never reused
        assertArrayEquals(intArrayOf(0, 5, 1, 6, 4, 3), tracker.update(base, n, d, alive(1, 1, 1, 1, 1, 1)))
        // fewer queries than the previous frame: the smaller side is fully matched
        assertArrayEquals(intArrayOf(4, 0), tracker.update(permute(base, intArrayOf(4, 0)), 2, d, alive(1, 1)))
        // more queries than the previous frame: the unmatched ones are new
        assertArrayEquals(intArrayOf(0, 7, 8, 9, 4, 10), tracker.update(base, n, d, alive(1, 1, 1, 1, 1, 1)))
        assertFailsWith("query size 8 differs") { tracker.update(FloatArray(8), 1, 8, alive(1)) }
        // reset: a new video restarts at 0
        tracker.reset()
        assertArrayEquals(intArrayOf(-1, 0, 1, -1, -1, -1), tracker.update(base, n, d, alive(0, 1, 1, 0, 0, 0)))
    }

    /** Minimum total over all injective maps of the smaller side into the larger one. */
    private fun bruteForce(cost: DoubleArray, n: Int, m: Int): Double {
        val small = min(n, m)
        val large = maxOf(n, m)
        fun at(i: Int, j: Int) = if (n <= m) cost[i * m + j] else cost[j * m + i]
        val used = BooleanArray(large)
        fun rec(i: Int, acc: Double): Double {
            if (i == small) return acc
            var best = Double.POSITIVE_INFINITY
            for (j in 0 until large) if (!used[j]) {
                used[j] = true
                best = minOf(best, rec(i + 1, acc + at(i, j)))
                used[j] = false
            }
            return best
        }
        return rec(0, 0.0)
    }

    private fun checkAssignment(cost: DoubleArray, n: Int, m: Int): Double {
        val (rows, cols) = linearSumAssignment(cost, n, m)
        val k = min(n, m)
        assertEquals(k, rows.size)
        assertEquals(k, rows.toSet().size)
        assertEquals(k, cols.toSet().size)
        for (i in 1 until k) assertTrue("rows ascending", rows[i] > rows[i - 1])
        return rows.indices.sumOf { cost[rows[it] * m + cols[it]] }
    }

    @Test
    fun linearSumAssignmentOnHandCheckedMatrices() {
        // the classic 3x3 (scipy's docs): rows 0,1,2 -> cols 1,0,2, total 5
        val square = doubleArrayOf(4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0)
        val (rows, cols) = linearSumAssignment(square, 3, 3)
        assertArrayEquals(intArrayOf(0, 1, 2), rows)
        assertArrayEquals(intArrayOf(1, 0, 2), cols)
        // wide 2x4: row 0 -> col 3 (1), row 1 -> col 0 (2)
        val wide = doubleArrayOf(9.0, 8.0, 7.0, 1.0, 2.0, 9.0, 9.0, 1.5)
        assertEquals(3.0, checkAssignment(wide, 2, 4), 0.0)
        assertArrayEquals(intArrayOf(3, 0), linearSumAssignment(wide, 2, 4).second)
        // tall 4x2 (its transpose): cols 0, 1 <- rows 1, 0
        val tall = DoubleArray(8) { wide[(it % 2) * 4 + it / 2] }
        val (tallRows, tallCols) = linearSumAssignment(tall, 4, 2)
        assertArrayEquals(intArrayOf(0, 3), tallRows)
        assertArrayEquals(intArrayOf(1, 0), tallCols)
        // negative costs (a maximisation written as a minimisation) and +inf (forbidden pairs)
        val inf = Double.POSITIVE_INFINITY
        assertEquals(-9.0, checkAssignment(doubleArrayOf(-1.0, -5.0, -4.0, inf), 2, 2), 0.0)
        assertFailsWith("invalid") { linearSumAssignment(doubleArrayOf(Double.NaN), 1, 1) }
        assertFailsWith("infeasible") { linearSumAssignment(doubleArrayOf(inf, inf), 1, 2) }
        assertEquals(0, linearSumAssignment(DoubleArray(0), 0, 3).first.size)
    }

    @Test
    fun linearSumAssignmentMatchesBruteForceOnRandomMatrices() {
        val rand = Random(12345)
        var worst = 0.0
        for (c in 0 until 60) {
            val n = 1 + rand.nextInt(6)
            val m = 1 + rand.nextInt(7)
            // integer costs (many ties) for some, floats (some negative) for others
            val cost = DoubleArray(n * m) { if (c % 3 == 0) rand.nextInt(5).toDouble() else rand.nextDouble() * 4 - 1 }
            val diff = abs(checkAssignment(cost, n, m) - bruteForce(cost, n, m))
            worst = maxOf(worst, diff)
            assertTrue("case $c (${n}x$m): off the optimum by $diff", diff <= 1e-9)
        }
        println("  60 random matrices up to 6x7 and 7x6: worst |total - brute force| $worst")
    }

    @Test
    fun jsonParsesAndReportsErrorsWithTheirOffset() {
        val v = Json.parse(""" {"a": [1, -2.5e2, true, false, null], "b": {"c": "x\"\\\/\n\u00e9\ud83d\ude00"}, "d": {}, "e": []} """)
        assertEquals(mapOf("a" to listOf(1.0, -250.0, true, false, null), "b" to mapOf("c" to "x\"\\/\n\u00e9\ud83d\ude00"),
            "d" to mapOf<String, Any?>(), "e" to listOf<Any?>()), v)
        assertEquals(listOf("a", "b", "d", "e"), (v as Map<*, *>).keys.toList()) // key order kept
        assertEquals(0.0, Json.parse("0"))
        fun fails(text: String, message: String) = assertFailsWith(message) { Json.parse(text) }
        fails("""{"a":1,}""", "offset 7: expected a string key")
        fails("[1 2]", "offset 3: expected ',' or ']'")
        fails("\"abc", "offset 4: unterminated string")
        fails("{} x", "offset 3: unexpected 'x' after the value")
        fails("01", "offset 1: unexpected '1'")
        fails("[1.]", "expected a digit after '.'")
        fails("tru", "offset 0: expected true")
        fails("", "offset 0: unexpected end of text")
        fails("\"\\x\"", "bad escape")
        fails("\"\\u12g4\"", "bad \\u escape")
        // what write writes, parse reads back
        val doc = mapOf("s" to "q\"\\\n\u0001", "n" to listOf(1, 2.5, -3e-7), "t" to true, "z" to null)
        assertEquals(mapOf("s" to "q\"\\\n\u0001", "n" to listOf(1.0, 2.5, -3e-7), "t" to true, "z" to null), Json.parse(Json.write(doc)))
    }

    @Test
    fun stageTimerBenchLinesParseBack() {
        val timer = StageTimer()
        for (i in 1..100) timer.record("encode", i.toDouble())
        assertEquals("done", timer.time("prompt") { Thread.sleep(2); "done" })
        val s = timer.summary("encode")!!
        assertEquals(50.5, s.getValue("p50"), 1e-9)
        assertEquals(90.1, s.getValue("p90"), 1e-9)
        assertEquals(99.01, s.getValue("p99"), 1e-9)
        assertEquals(50.5, s.getValue("mean"), 1e-9)
        assertEquals(listOf("encode", "prompt"), timer.stages)
        val context = mapOf("device" to "Pixel 8", "os" to "Android 15", "backend" to "executorch", "cores" to 9)
        val lines = timer.benchLines(context)
        assertEquals(2, lines.size)
        assertTrue(lines.all { it.startsWith("$BENCH_MARKER {") })
        val encode = Json.parse(lines[0].removePrefix("$BENCH_MARKER ")) as Map<*, *>
        assertEquals(listOf("backend", "cores", "device", "latency_ms", "os", "runs", "stage", "status"), encode.keys.toList())
        assertEquals("encode", encode["stage"])
        assertEquals("ok", encode["status"])
        assertEquals(100.0, encode["runs"])
        assertEquals(mapOf("p50" to 50.5, "p90" to 90.1, "p99" to 99.01, "mean" to 50.5, "min" to 1.0, "max" to 100.0), encode["latency_ms"])
        assertEquals(listOf("max", "mean", "min", "p50", "p90", "p99"), (encode["latency_ms"] as Map<*, *>).keys.toList())
        assertEquals("Pixel 8", encode["device"])
        val prompt = Json.parse(lines[1].removePrefix("$BENCH_MARKER ")) as Map<*, *>
        assertTrue(((prompt["latency_ms"] as Map<*, *>)["p50"] as Double) >= 2.0)
        println("  ${lines[1]}")
        val failed = Json.parse(StageTimer.failedLine("no model", context).removePrefix("$BENCH_MARKER ")) as Map<*, *>
        assertEquals(mapOf("backend" to "executorch", "cores" to 9.0, "device" to "Pixel 8", "os" to "Android 15",
            "reason" to "no model", "status" to "failed"), failed)
        timer.reset()
        assertEquals(emptyList<String>(), timer.benchLines(context))
    }
}
