// What the pipeline needs from a runtime: the export contract's entry points on flat float32 arrays. The Android
// app implements it with ExecuTorch and LiteRT, the tests with stored outputs; the core never sees a runtime.

package ai.rapsam.core

/** `segment`'s outputs, row-major: mask_logits [1, N, h, w], class_logits [1, N, C + 1], queries [1, N, d]. */
class SegmentOutputs(val maskLogits: FloatArray, val classLogits: FloatArray, val queries: FloatArray)

/** `prompt`'s outputs, row-major: mask_logits [1, K, h, w], iou [1, K]. */
class PromptOutputs(val maskLogits: FloatArray, val iou: FloatArray)

/**
 * The entry points of a converted artifact, shaped as its manifest says. `image` is the letterboxed
 * [1, 3, H, W] RGB 0..255 input, `features` what [encode] returned, `boxes` [1, K, 4] and `kinds` [1, K] one chunk
 * of packed prompts (see packPrompts). Implementations need not be thread-safe: call one from one thread at a time.
 */
interface Segmenter : AutoCloseable {
    /** The runtime and its settings, for latency readouts and benchmark lines (e.g. "executorch xnnpack"). */
    val runtime: String

    fun segment(image: FloatArray): SegmentOutputs

    fun encode(image: FloatArray): FloatArray

    fun prompt(features: FloatArray, boxes: FloatArray, kinds: IntArray): PromptOutputs
}
