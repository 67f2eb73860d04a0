// Clicks and boxes -> the export contract's prompt inputs, a port of sample_apps/web/src/pipeline.js
// (rapsam/inference.py `prompts_to_boxes`, rapsam/pipeline.py `prompt`'s packing into an artifact's K slots).

package ai.rapsam.core

/** The official model turns a click into a box of this half-size, in pixels of the resized image. */
const val CLICK_HALF_SIZE = 3.0f

// Prompt kinds of the export contract (rapsam/models/head.py).
const val POINT = 0
const val BOX = 1
const val PADDING = -1

/** Prompt boxes [count * 4] (x0, y0, x1, y1 in the contract's frame) and their kinds [count]. */
class PackedPrompts(val boxes: FloatArray, val kinds: IntArray)

/** One `prompt` call: [boxes] [slots * 4] and [kinds] [slots] holding prompts first until first + count, then padding. */
class PromptChunk(val boxes: FloatArray, val kinds: IntArray, val count: Int, val first: Int)

// 3.0 -> "3", as the Python and JS messages print whole numbers.
private fun num(v: Float): String = if (v == v.toInt().toFloat()) v.toInt().toString() else v.toString()

/**
 * Clicks [x, y] and boxes [x0, y0, x1, y1] in image pixels -> boxes and kinds (points first, then boxes), as
 * prompts_to_boxes: in the export contract's frame (the image stretched to the model input), a click as a box of
 * +-CLICK_HALF_SIZE pixels of the resized image, stretched likewise. Kinds: POINT, BOX.
 */
fun promptsToBoxes(points: List<FloatArray>, boxes: List<FloatArray>, box: Letterbox): PackedPrompts {
    val height = box.imageH
    val width = box.imageW
    val rows = ArrayList<FloatArray>()
    for (p in points) {
        require(p.size == 2) { "a point is (x, y), got ${p.size} values" }
        val (x, y) = p
        require(x in 0f..width.toFloat() && y in 0f..height.toFloat()) {
            "point (${num(x)}, ${num(y)}) lies outside the ${width}x$height image"
        }
        rows.add(floatArrayOf(x, y, x, y))
    }
    for (b in boxes) {
        require(b.size == 4) { "a box is (x0, y0, x1, y1), got ${b.size} values" }
        val (x0, y0, x1, y1) = b
        require(0 <= x0 && x0 < x1 && x1 <= width && 0 <= y0 && y0 < y1 && y1 <= height) {
            "box (${num(x0)}, ${num(y0)}, ${num(x1)}, ${num(y1)}) is empty or outside the ${width}x$height image"
        }
        rows.add(b.copyOf())
    }
    require(rows.isNotEmpty()) { "give at least one point or box" }
    // Python float quotients rounded to float32, as torch.tensor([...]) makes them.
    val stretch = floatArrayOf((box.inputW.toDouble() / width).toFloat(), (box.inputH.toDouble() / height).toFloat())
    val half = floatArrayOf(
        CLICK_HALF_SIZE * (box.inputW.toDouble() / box.validW).toFloat(),
        CLICK_HALF_SIZE * (box.inputH.toDouble() / box.validH).toFloat(),
    )
    val out = FloatArray(rows.size * 4)
    val kinds = IntArray(rows.size)
    rows.forEachIndexed { i, row ->
        for (j in 0 until 4) {
            var v = row[j] * stretch[j % 2]
            if (i < points.size) v += if (j < 2) -half[j % 2] else half[j % 2]
            out[i * 4 + j] = v
        }
        kinds[i] = if (i < points.size) POINT else BOX
    }
    return PackedPrompts(out, kinds)
}

/**
 * Prompts packed [slots] at a time into an artifact's K prompt slots, as pipeline.prompt: each chunk holds
 * prompts first until first + count, the remaining slots padding (zero box, kind PADDING). slots <= 0: all
 * prompts in one chunk (the PyTorch model takes any number).
 */
fun packPrompts(boxes: FloatArray, kinds: IntArray, slots: Int): List<PromptChunk> {
    val count = kinds.size
    require(boxes.size == count * 4) { "${boxes.size / 4} boxes but $count kinds" }
    val size = if (slots > 0) slots else count
    val chunks = ArrayList<PromptChunk>()
    for (first in 0 until count step maxOf(size, 1)) {
        val n = minOf(size, count - first)
        val chunkBoxes = FloatArray(size * 4)
        boxes.copyInto(chunkBoxes, 0, first * 4, (first + n) * 4)
        val chunkKinds = IntArray(size) { PADDING }
        kinds.copyInto(chunkKinds, 0, first, first + n)
        chunks.add(PromptChunk(chunkBoxes, chunkKinds, n, first))
    }
    return chunks
}
