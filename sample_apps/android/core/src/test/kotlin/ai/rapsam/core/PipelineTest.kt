// The core against the Python reference's test vectors, with the checks and thresholds of the web port's tests
// (sample_apps/web/test/pipeline.test.mjs): letterbox, upsample + merge, prompt boxes and masks, the clip's
// instance ids, and the Pipeline on a fake Segmenter that returns the stored outputs.

package ai.rapsam.core

import kotlin.math.abs
import kotlin.math.max
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

fun maskIoU(a: BooleanArray, b: BooleanArray): Double {
    assertEquals(a.size, b.size)
    var inter = 0
    var union = 0
    for (i in a.indices) {
        if (a[i] && b[i]) inter++
        if (a[i] || b[i]) union++
    }
    return if (union == 0) 1.0 else inter.toDouble() / union
}

fun maxAbs(a: FloatArray, b: FloatArray, count: Int = b.size): Float {
    var worst = 0f
    for (i in 0 until count) worst = max(worst, abs(a[i] - b[i]))
    return worst
}

/** Stored segment map PNG + segments of one panoptic entry vs a Kotlin result; returns the pixel agreement. */
fun comparePanoptic(label: String, entry: Map<String, Any?>, result: PanopticResult): Double {
    val stored = Vectors.gray(entry["segment_map"] as String)
    assertEquals("$label: segment map size", stored.size, result.segmentMap.size)
    val agree = stored.indices.count { stored[it] == result.segmentMap[it] }.toDouble() / stored.size
    assertTrue("$label: segment map agreement $agree < 0.999", agree >= 0.999)
    val segments = entry["segments"].list().map { it.obj() }
    assertEquals("$label: segment count", segments.size, result.segments.size)
    var worstArea = 0.0
    var worstScore = 0.0
    segments.forEachIndexed { i, s ->
        val got = result.segments[i]
        assertEquals("$label: segment $i id", s["id"].int(), got.id)
        assertEquals("$label: segment ${got.id} class", s["class_id"].int(), got.classId)
        assertEquals("$label: segment ${got.id} is_thing", s["is_thing"], got.isThing)
        val area = s["area"].int()
        val rel = abs(got.area - area).toDouble() / area
        worstArea = max(worstArea, rel)
        assertTrue("$label: segment ${got.id} area ${got.area} vs $area", rel <= 0.005)
        val scoreDiff = abs(got.score - s["score"] as Double)
        worstScore = max(worstScore, scoreDiff)
        assertTrue("$label: segment ${got.id} score ${got.score} vs ${s["score"]}", scoreDiff <= 2e-6)
    }
    println("  $label: agreement %.6f, %d segments, worst relative area diff %.2g, worst score diff %.2g"
        .format(agree, segments.size, worstArea, worstScore))
    return agree
}

/** upsampleMaskLogits + panopticMerge of stored `segment` outputs. */
fun mergeStored(segment: Map<String, Any?>, box: Letterbox): PanopticResult {
    val (_, n, h, w) = Vectors.shape(segment["mask_logits"])
    val classes = Vectors.shape(segment["class_logits"])[2]
    val up = upsampleMaskLogits(Vectors.floats(segment["mask_logits"]), n, h, w, box)
    return panopticMerge(up, Vectors.floats(segment["class_logits"]), n, classes, box.imageH, box.imageW, Vectors.isThing,
        Vectors.manifest?.thresholds ?: Thresholds())
}

class PipelineTest {
    @Test
    fun letterboxReproducesTheStoredInput() {
        for (photo in Vectors.photos) {
            val image = Vectors.rgbImage(photo["image"] as String)
            val (inputH, inputW) = Vectors.inputSize
            val started = System.nanoTime()
            val (tensor, box) = letterbox(image.argb, image.width, image.height, inputH, inputW, Vectors.padValue)
                .let { it.tensor to it.box }
            val ms = (System.nanoTime() - started) / 1e6
            assertEquals("${photo["name"]}: letterbox", Vectors.box(photo["letterbox"]), box)
            val expected = Vectors.floats(photo["input"])
            assertEquals(expected.size, tensor.size)
            val worst = maxAbs(tensor, expected)
            val exact = expected.indices.count { tensor[it] == expected[it] }.toDouble() / expected.size
            println("  ${photo["name"]}: ${image.width}x${image.height} -> valid ${box.validH}x${box.validW}, " +
                "max abs diff $worst, bit-identical %.6f, %.1f ms".format(exact, ms))
            assertTrue("${photo["name"]}: letterbox max abs diff $worst", worst <= 0.01f)
        }
    }

    @Test
    fun mergeOfStoredSegmentOutputsReproducesThePanopticMaps() {
        for (photo in Vectors.photos) {
            val started = System.nanoTime()
            val result = mergeStored(photo["segment"].obj(), Vectors.box(photo["letterbox"]))
            println("  ${photo["name"]}: upsample + merge %.1f ms".format((System.nanoTime() - started) / 1e6))
            comparePanoptic(photo["name"] as String, photo["panoptic"].obj(), result)
        }
    }

    @Test
    fun promptsToBoxesAndPromptMasksReproduceTheStoredPrompts() {
        for (photo in Vectors.photos) {
            val name = photo["name"] as String
            val pr = photo["prompt"].obj()
            val box = Vectors.box(photo["letterbox"])
            val points = pr["points"].list().map { it.floats() }
            val boxes = pr["boxes"].list().map { it.floats() }
            val packed = promptsToBoxes(points, boxes, box)
            assertArrayEquals(IntArray(points.size) { POINT } + IntArray(boxes.size) { BOX }, packed.kinds)
            // The stored inputs are one call packed as an app does: the first K prompts, then padding.
            val storedBoxes = Vectors.floats(pr["inputs"].obj()["boxes"])
            val storedKinds = Vectors.ints(pr["inputs"].obj()["kinds"])
            val chunk = packPrompts(packed.boxes, packed.kinds, storedKinds.size).first()
            assertArrayEquals("$name: kinds", storedKinds, chunk.kinds)
            val worstBox = maxAbs(chunk.boxes, storedBoxes)
            assertTrue("$name: prompt boxes differ by $worstBox", worstBox <= 1e-4f)

            val (_, k, h, w) = Vectors.shape(pr["outputs"].obj()["mask_logits"])
            val res = promptMasks(Vectors.floats(pr["outputs"].obj()["mask_logits"]), Vectors.floats(pr["outputs"].obj()["iou"]),
                k, h, w, box, 0f, BooleanArray(k) { storedKinds[it] != PADDING })
            assertEquals(chunk.count, res.masks.size)
            val storedIou = pr["iou"].list().map { (it as Double) }
            val ious = res.masks.mapIndexed { i, mask ->
                val stored = Vectors.gray(pr["masks"].list()[i] as String).map { it > 127 }.toBooleanArray()
                val iou = maskIoU(mask, stored)
                assertTrue("$name: prompt $i mask IoU $iou", iou >= 0.999)
                assertTrue("$name: prompt $i iou ${res.iou[i]} vs ${storedIou[i]}", abs(res.iou[i] - storedIou[i]) <= 1e-5)
                iou
            }
            println("  $name: prompt boxes max abs diff $worstBox; mask IoUs ${ious.joinToString { "%.6f".format(it) }}; " +
                "iou diffs ${res.iou.indices.joinToString { "%.1e".format(abs(res.iou[it] - storedIou[it])) }}")
        }
    }

    @Test
    fun mergeAndTrackerReproduceTheClipsInstanceIds() {
        val tracker = QueryTracker()
        val (inputH, inputW) = Vectors.inputSize
        Vectors.clipFrames.forEachIndexed { t, frame ->
            val image = Vectors.rgbImage(frame["image"] as String)
            val box = letterbox(image.argb, image.width, image.height, inputH, inputW, Vectors.padValue).box
            val segment = frame["segment"].obj()
            val result = mergeStored(segment, box)
            comparePanoptic("clip$t", frame, result)
            val (_, n, d) = Vectors.shape(segment["queries"])
            val ids = instanceIds(tracker, result, Vectors.floats(segment["queries"]), n, d)
            println("  clip$t: instance ids ${ids.contentToString()} (stored ${frame["instance_ids"].ints().contentToString()})")
            assertArrayEquals("clip$t: instance ids", frame["instance_ids"].ints(), ids)
        }
    }

    /** Returns the stored outputs of one photo (or of the clip frames, in order) and checks what it is given. */
    private class StoredSegmenter(val photo: Map<String, Any?>?, val slots: Int) : Segmenter {
        override val runtime = "stored vectors"
        var frame = 0
        var promptCalls = 0
        var worstInput = 0f
        val seenKinds = ArrayList<IntArray>()

        private fun outputs(segment: Map<String, Any?>) = SegmentOutputs(
            Vectors.floats(segment["mask_logits"]), Vectors.floats(segment["class_logits"]), Vectors.floats(segment["queries"]))

        override fun segment(image: FloatArray): SegmentOutputs {
            if (photo == null) return outputs(Vectors.clipFrames[frame++]["segment"].obj())
            worstInput = max(worstInput, maxAbs(image, Vectors.floats(photo["input"])))
            return outputs(photo["segment"].obj())
        }

        override fun encode(image: FloatArray): FloatArray {
            worstInput = max(worstInput, maxAbs(image, Vectors.floats(photo!!["input"])))
            return Vectors.floats(photo["encode"].obj()["features"])
        }

        /** The stored rows of this chunk's prompts, padded to the manifest's K slots with zeros. */
        override fun prompt(features: FloatArray, boxes: FloatArray, kinds: IntArray): PromptOutputs {
            val pr = photo!!["prompt"].obj()
            assertArrayEquals(Vectors.floats(photo["encode"].obj()["features"]), features, 0f)
            assertEquals(slots, kinds.size)
            assertEquals(slots * 4, boxes.size)
            seenKinds.add(kinds)
            val storedBoxes = Vectors.floats(pr["inputs"].obj()["boxes"])
            val logits = Vectors.floats(pr["outputs"].obj()["mask_logits"])
            val iou = Vectors.floats(pr["outputs"].obj()["iou"])
            val (_, k, h, w) = Vectors.shape(pr["outputs"].obj()["mask_logits"])
            val first = promptCalls++ * slots
            val count = kinds.count { it != PADDING }
            assertTrue("the vectors hold $k prompt outputs, the pipeline asks for ${first + count}", first + count <= k)
            for (i in 0 until count * 4) assertEquals(storedBoxes[first * 4 + i], boxes[i], 1e-4f)
            val outLogits = FloatArray(slots * h * w)
            logits.copyInto(outLogits, 0, first * h * w, (first + count) * h * w)
            val outIou = FloatArray(slots)
            iou.copyInto(outIou, 0, first, first + count)
            return PromptOutputs(outLogits, outIou)
        }

        override fun close() {}
    }

    private fun requireManifest(): Manifest = Vectors.manifest
        ?: throw IllegalStateException("set RAPSAM_MANIFEST to the manifest.json of the vectors' model (test.sh does)")

    @Test
    fun pipelineOnAFakeSegmenterGivesTheStoredResults() = checkPipeline(requireManifest())

    /** The same with 2 prompt slots: the 3 prompts go in two calls, [p0, p1] and [p2, padding]. */
    @Test
    fun pipelinePacksPromptsIntoTheArtifactsSlots() {
        val m = requireManifest()
        checkPipeline(Manifest(m.modelName, m.target, m.precision, m.inputH, m.inputW, m.padValue, m.classes, m.thresholds,
            promptSlots = 2, entryPoints = m.entryPoints))
    }

    private fun checkPipeline(manifest: Manifest) {
        for (photo in Vectors.photos) {
            val name = photo["name"] as String
            val image = Vectors.rgbImage(photo["image"] as String)
            val slots = manifest.promptSlots ?: Vectors.shape(photo["prompt"].obj()["inputs"].obj()["kinds"])[1]
            StoredSegmenter(photo, slots).use { fake ->
                val pipeline = Pipeline(fake, manifest)
                val (result, queries) = pipeline.panoptic(image.argb, image.width, image.height)
                comparePanoptic("pipeline $name", photo["panoptic"].obj(), result)
                assertArrayEquals(Vectors.floats(photo["segment"].obj()["queries"]), queries, 0f)

                val encoded = pipeline.encode(image.argb, image.width, image.height)
                assertEquals(Vectors.box(photo["letterbox"]), encoded.box)
                val pr = photo["prompt"].obj()
                val prompted = pipeline.prompt(encoded, pr["points"].list().map { it.floats() }, pr["boxes"].list().map { it.floats() })
                val storedIou = pr["iou"].list().map { it as Double }
                assertEquals(storedIou.size, prompted.masks.size)
                val ious = prompted.masks.mapIndexed { i, mask ->
                    val stored = Vectors.gray(pr["masks"].list()[i] as String).map { it > 127 }.toBooleanArray()
                    maskIoU(mask, stored).also { assertTrue("pipeline $name: prompt $i mask IoU $it", it >= 0.999) }
                }
                for (i in storedIou.indices) assertEquals(storedIou[i], prompted.iou[i].toDouble(), 1e-5)
                // ceil(prompts / K) calls, each of K slots, padding (-1) after the real prompts.
                assertEquals((storedIou.size + slots - 1) / slots, fake.promptCalls)
                for (kinds in fake.seenKinds) {
                    val real = kinds.count { it != PADDING }
                    assertTrue(kinds.drop(real).all { it == PADDING })
                }
                assertTrue("pipeline $name: letterboxed input differs by ${fake.worstInput}", fake.worstInput <= 0.01f)
                assertEquals(listOf<BooleanArray>(), pipeline.prompt(encoded, emptyList(), emptyList()).masks)
                println("  pipeline $name: K=$slots, ${fake.promptCalls} prompt call(s), mask IoUs " +
                    ious.joinToString { "%.6f".format(it) } + ", stages ${pipeline.timer.stages}")
            }
        }
    }

    @Test
    fun pipelineTrackFrameGivesTheClipsInstanceIds() {
        val manifest = requireManifest()
        StoredSegmenter(null, 0).use { fake ->
            val pipeline = Pipeline(fake, manifest)
            val tracker = QueryTracker()
            Vectors.clipFrames.forEachIndexed { t, frame ->
                val image = Vectors.rgbImage(frame["image"] as String)
                val (result, ids) = pipeline.trackFrame(tracker, image.argb, image.width, image.height)
                comparePanoptic("pipeline clip$t", frame, result)
                assertArrayEquals("pipeline clip$t: instance ids", frame["instance_ids"].ints(), ids)
            }
            assertEquals(Vectors.clipFrames.size, pipeline.timer.samples("frame").size)
        }
    }
}
