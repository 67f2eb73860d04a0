// What an app does around the export contract, as rapsam/pipeline.py: letterbox, `segment` + panoptic merge,
// `encode` once per image then `prompt` per click or box (packed into the artifact's K slots, padding kind -1),
// and instance ids across video frames by query matching. Any Segmenter runs it; shapes come from the manifest.

package ai.rapsam.core

/** `encode`'s features of one image and where the image sits in the model input. */
class EncodedImage(val features: FloatArray, val box: Letterbox)

/**
 * Not thread-safe (nor are the segmenters): call one pipeline from one thread at a time.
 * [timer] gets the stages preprocess (letterbox), segment, encode, prompt (packing, every `prompt` call and the
 * masks), postprocess (mask upsampling, merge, track ids) and frame (one tracked frame end to end).
 */
class Pipeline(val segmenter: Segmenter, val manifest: Manifest, val timer: StageTimer = StageTimer()) {
    private val isThing = manifest.isThing

    private fun letterboxed(argb: IntArray, width: Int, height: Int): LetterboxResult = timer.time("preprocess") {
        letterbox(argb, width, height, manifest.inputH, manifest.inputW, manifest.padValue)
    }

    /** `segment` on one image (Bitmap.getPixels layout), merged at image size; with the object queries [N * d]. */
    fun panoptic(argb: IntArray, width: Int, height: Int): Pair<PanopticResult, FloatArray> {
        val frame = panopticFrame(argb, width, height, null)
        return frame.result to frame.queries
    }

    /** One frame of a video (or the camera): its panoptic result and the video-wide id of each segment (-1 stuff). */
    fun trackFrame(tracker: QueryTracker, argb: IntArray, width: Int, height: Int): Pair<PanopticResult, IntArray> =
        timer.time("frame") {
            val frame = panopticFrame(argb, width, height, tracker)
            frame.result to frame.ids!!
        }

    private class Frame(val result: PanopticResult, val queries: FloatArray, val ids: IntArray?)

    private fun panopticFrame(argb: IntArray, width: Int, height: Int, tracker: QueryTracker?): Frame {
        val specs = manifest.entryPoint("segment")
        val maskSpec = specs.output("mask_logits")
        val n = maskSpec.dim(1)
        val h = maskSpec.dim(2)
        val w = maskSpec.dim(3)
        val numClassesPlusOne = specs.output("class_logits").dim(2)
        val d = specs.output("queries").dim(2)
        val x = letterboxed(argb, width, height)
        val box = x.box
        val out = timer.time("segment") { segmenter.segment(x.tensor) }
        check(out.maskLogits.size == n * h * w && out.classLogits.size == n * numClassesPlusOne && out.queries.size == n * d) {
            "segment returned ${out.maskLogits.size}, ${out.classLogits.size}, ${out.queries.size} values; the manifest " +
                "says [1, $n, $h, $w], [1, $n, $numClassesPlusOne], [1, $n, $d]"
        }
        return timer.time("postprocess") {
            val logits = upsampleMaskLogits(out.maskLogits, n, h, w, box)
            val result = panopticMerge(logits, out.classLogits, n, numClassesPlusOne, box.imageH, box.imageW, isThing,
                manifest.thresholds)
            Frame(result, out.queries, tracker?.let { instanceIds(it, result, out.queries, n, d) })
        }
    }

    /** `encode` once per image; prompts then reuse its features. */
    fun encode(argb: IntArray, width: Int, height: Int): EncodedImage {
        val x = letterboxed(argb, width, height)
        return EncodedImage(timer.time("encode") { segmenter.encode(x.tensor) }, x.box)
    }

    /**
     * One mask (image size) and predicted IoU per prompt, points [x, y] first then boxes [x0, y0, x1, y1], in image
     * pixels. The artifact's K prompt slots take the prompts K at a time; unused slots are padding (kind -1).
     */
    fun prompt(encoded: EncodedImage, points: List<FloatArray>, boxes: List<FloatArray>): PromptResult {
        if (points.isEmpty() && boxes.isEmpty()) return PromptResult(emptyList(), FloatArray(0))
        return timer.time("prompt") {
            val maskSpec = manifest.entryPoint("prompt").output("mask_logits")
            val plane = maskSpec.dim(2) * maskSpec.dim(3)
            val packed = promptsToBoxes(points, boxes, encoded.box)
            val count = packed.kinds.size
            val logits = FloatArray(count * plane)
            val ious = FloatArray(count)
            for (chunk in packPrompts(packed.boxes, packed.kinds, manifest.promptSlots ?: 0)) {
                val out = segmenter.prompt(encoded.features, chunk.boxes, chunk.kinds)
                check(out.maskLogits.size >= chunk.count * plane && out.iou.size >= chunk.count) {
                    "prompt returned ${out.maskLogits.size} mask logits and ${out.iou.size} iou values for " +
                        "${chunk.count} prompts of ${maskSpec.dim(2)}x${maskSpec.dim(3)}"
                }
                // Only the real prompts' rows: padding slots come last in each chunk.
                out.maskLogits.copyInto(logits, chunk.first * plane, 0, chunk.count * plane)
                out.iou.copyInto(ious, chunk.first, 0, chunk.count)
            }
            promptMasks(logits, ious, count, maskSpec.dim(2), maskSpec.dim(3), encoded.box, manifest.thresholds.maskLogit)
        }
    }
}
