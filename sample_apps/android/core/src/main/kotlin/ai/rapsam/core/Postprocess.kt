// Post-processing of RAP-SAM outputs, a port of sample_apps/web/src/pipeline.js (rapsam/postprocess.py
// `upsample_mask_logits`, `panoptic_merge`, `prompt_masks`): mask upsampling, Mask2Former's panoptic merge, and
// one binary mask per prompt.

package ai.rapsam.core

import kotlin.math.exp
import kotlin.math.max

/**
 * Thresholds of the merge (PanopticThresholds) and of prompt masks; a manifest's `thresholds` section.
 * objectMask: a query is kept only if its class score is strictly above it; overlap: a query keeps its region only
 * if (pixels it wins) / (pixels with sigmoid >= 0.5) is at least it; maskLogit: prompt masks are logits > it.
 */
data class Thresholds(val objectMask: Float = 0.8f, val overlap: Float = 0.8f, val maskLogit: Float = 0f)

/** PanopticThresholds() defaults (rapsam/postprocess.py). */
val DEFAULT_THRESHOLDS = Thresholds()

/**
 * One panoptic segment: [id] is its value in the segment map (1..S); [score] its class score (for merged stuff, the
 * highest of its queries); [area] the pixels painted with [id]; [queries] the query indices painted into it.
 */
data class Segment(
    val id: Int, val classId: Int, val score: Float, val isThing: Boolean, val area: Int, val queries: List<Int>,
)

/** [segmentMap]: imageH * imageW segment ids, 0 void; [segments] in id order (id i at index i - 1). */
class PanopticResult(val segmentMap: IntArray, val segments: List<Segment>)

/**
 * One binary mask (imageH * imageW) and predicted IoU per real prompt; [index] is the prompt slot of each mask
 * (as Python's PromptResult.index; 0 until masks.size unless padding slots were dropped).
 */
class PromptResult(val masks: List<BooleanArray>, val iou: FloatArray, val index: IntArray = IntArray(masks.size) { it })

/**
 * Stride-4 mask logits [k, h, w] -> [k, imageH, imageW] float32 logits on the user's image, as
 * upsample_mask_logits: bilinear to the input size, crop the top-left valid size, bilinear to the image size.
 */
fun upsampleMaskLogits(maskLogits: FloatArray, k: Int, h: Int, w: Int, box: Letterbox): FloatArray {
    require(box.validH <= box.inputH && box.validW <= box.inputW) {
        "valid_size [${box.validH}, ${box.validW}] exceeds input_size [${box.inputH}, ${box.inputW}]"
    }
    require(maskLogits.size >= k * h * w) { "expected ${k}x${h}x$w mask logits, got ${maskLogits.size} values" }
    if (k == 0) return FloatArray(0)
    val input = bilinearResize(maskLogits, k, h, w, box.inputH, box.inputW)
    // The crop is read in place: rows [0, validH), columns [0, validW) of each inputH x inputW plane.
    return bilinearResize(input, k, box.validH, box.validW, box.imageH, box.imageW, box.inputW, box.inputH * box.inputW)
}

/** float32 sigmoid of a float32 logit, as torch's (1 + exp(-x))^-1 rounded to float32. */
internal fun sigmoid32(x: Float): Float = (1.0 / (1.0 + exp(-x.toDouble()))).toFloat()

/** Softmax of count logits from [offset] into [out], in float32 as PyTorch's CPU kernel. */
internal fun softmaxRow(logits: FloatArray, offset: Int, count: Int, out: FloatArray) {
    var max = Float.NEGATIVE_INFINITY
    for (c in 0 until count) if (logits[offset + c] > max) max = logits[offset + c]
    var sum = 0f
    for (c in 0 until count) {
        out[c] = exp((logits[offset + c] - max).toDouble()).toFloat()
        sum += out[c]
    }
    val inv = (1.0 / sum).toFloat()
    for (c in 0 until count) out[c] *= inv
}

/**
 * A Float threshold as the Python float it was written as (0.8f -> 0.8, not 0.800000011920929): Python compares
 * the double won / inside with the double 0.8, and a Float's shortest decimal form is that literal.
 */
private fun Float.asPythonFloat(): Double = toString().toDouble()

/**
 * Mask2Former's panoptic merge, as rapsam.postprocess.panoptic_merge.
 * [maskLogits]: [n, height, width] (already upsampled to the image); [classLogits]: [n, numClassesPlusOne], the
 * last column no-object; [isThing]: one flag per class.
 * A query is kept if its argmax class is not no-object and its class score is > objectMask (in float32, as torch
 * compares with a Python scalar). Each pixel goes to the kept query with the highest score * sigmoid(mask) (first
 * index on ties). Kept queries are visited in index order; one is painted on the pixels it wins where
 * sigmoid >= 0.5 if it wins pixels, has a non-empty sigmoid >= 0.5 area, that intersection is non-empty, and
 * won / (sigmoid >= 0.5 area) >= overlap. Stuff queries of one class share a segment (score: the highest of them);
 * each thing query is its own segment.
 */
fun panopticMerge(
    maskLogits: FloatArray, classLogits: FloatArray, n: Int, numClassesPlusOne: Int, height: Int, width: Int,
    isThing: BooleanArray, thresholds: Thresholds = Thresholds(),
): PanopticResult {
    val numClasses = numClassesPlusOne - 1
    val plane = height * width
    require(maskLogits.size >= n * plane && classLogits.size >= n * numClassesPlusOne && isThing.size == numClasses) {
        "mask_logits (${maskLogits.size} values for ${n}x${height}x$width), class_logits (${classLogits.size} values " +
            "for ${n}x$numClassesPlusOne) and is_thing (len ${isThing.size}) disagree"
    }
    val overlapThreshold = thresholds.overlap.asPythonFloat()

    // softmax, max over classes (first index on ties), keep
    val probs = FloatArray(numClassesPlusOne)
    val kept = ArrayList<Int>()
    val keptScores = ArrayList<Float>()
    val keptLabels = ArrayList<Int>()
    for (q in 0 until n) {
        softmaxRow(classLogits, q * numClassesPlusOne, numClassesPlusOne, probs)
        var label = 0
        for (c in 1 until numClassesPlusOne) if (probs[c] > probs[label]) label = c
        if (label != numClasses && probs[label] > thresholds.objectMask) {
            kept.add(q)
            keptScores.add(probs[label])
            keptLabels.add(label)
        }
    }
    val segmentMap = IntArray(plane)
    val count = kept.size
    if (count == 0) return PanopticResult(segmentMap, emptyList())

    // One pass over the pixels: owner (argmax of score * sigmoid), whether the owner's sigmoid >= 0.5 there, and
    // per kept query: won area, sigmoid >= 0.5 area, region (won and inside) area.
    val owner = IntArray(plane)
    val ownerInside = BooleanArray(plane)
    val wonArea = IntArray(count)
    val insideArea = IntArray(count)
    val regionArea = IntArray(count)
    val scores = keptScores.toFloatArray()
    val offsets = IntArray(count) { kept[it] * plane }
    for (p in 0 until plane) {
        var best = Float.NEGATIVE_INFINITY
        var bestK = 0
        var bestInside = false
        for (k in 0 until count) {
            val s = sigmoid32(maskLogits[offsets[k] + p])
            val inside = s >= 0.5f
            if (inside) insideArea[k]++
            val v = scores[k] * s
            if (v > best) {
                best = v
                bestK = k
                bestInside = inside
            }
        }
        owner[p] = bestK
        ownerInside[p] = bestInside
        wonArea[bestK]++
        if (bestInside) regionArea[bestK]++
    }

    val segments = ArrayList<Segment>()
    val stuffIds = HashMap<Int, Int>()
    val segmentOf = IntArray(count) // segment id painted for each kept query, 0 if none
    for (k in 0 until count) {
        if (wonArea[k] == 0 || insideArea[k] == 0 || regionArea[k] == 0) continue
        if (wonArea[k].toDouble() / insideArea[k] < overlapThreshold) continue
        val classId = keptLabels[k]
        val thing = isThing[classId]
        val stuffId = if (thing) null else stuffIds[classId]
        val segmentId: Int
        if (stuffId != null) {
            segmentId = stuffId
            val old = segments[segmentId - 1]
            segments[segmentId - 1] = old.copy(
                score = max(old.score, scores[k]), area = old.area + regionArea[k], queries = old.queries + kept[k],
            )
        } else {
            segmentId = segments.size + 1
            if (!thing) stuffIds[classId] = segmentId
            segments.add(Segment(segmentId, classId, scores[k], thing, regionArea[k], listOf(kept[k])))
        }
        segmentOf[k] = segmentId
    }
    for (p in 0 until plane) {
        if (ownerInside[p]) segmentMap[p] = segmentOf[owner[p]]
    }
    return PanopticResult(segmentMap, segments)
}

/**
 * One binary mask per prompt at image resolution, as prompt_masks: [maskLogits] [k, h, w], [iou] [k]. Logits are
 * upsampled with upsampleMaskLogits and thresholded as logits > [maskThreshold]. [valid] (optional, length k):
 * slots that are false (padding, kind -1) are dropped.
 */
fun promptMasks(
    maskLogits: FloatArray, iou: FloatArray, k: Int, h: Int, w: Int, box: Letterbox,
    maskThreshold: Float = 0f, valid: BooleanArray? = null,
): PromptResult {
    require(iou.size >= k) { "expected $k iou values, got ${iou.size}" }
    val index = (0 until k).filter { valid == null || valid[it] }.toIntArray()
    val plane = h * w
    var logits = maskLogits
    if (index.size != k) {
        logits = FloatArray(index.size * plane)
        index.forEachIndexed { j, slot -> maskLogits.copyInto(logits, j * plane, slot * plane, (slot + 1) * plane) }
    }
    val up = upsampleMaskLogits(logits, index.size, h, w, box)
    val size = box.imageH * box.imageW
    val masks = List(index.size) { j ->
        val o = j * size
        BooleanArray(size) { p -> up[o + p] > maskThreshold }
    }
    return PromptResult(masks, FloatArray(index.size) { iou[index[it]] }, index)
}
