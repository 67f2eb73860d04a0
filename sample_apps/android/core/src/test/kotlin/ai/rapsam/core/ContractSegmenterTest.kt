// ContractSegmenter on a fake back end that records its calls: segment / encode / prompt become the manifest's
// methods with their tensors in the manifest's order, outputs are picked by name, and sizes are checked.

package ai.rapsam.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

class ContractSegmenterTest {
    private fun t(name: String, vararg shape: Int, dtype: String = "float32") = TensorSpec(name, shape, dtype)

    // A 4x4 model, N = 2 queries, 3 classes + 1, d = 2, features [1, 2, 1, 1], K = 2 prompt slots; the outputs of
    // `segment` are listed out of the order the Segmenter returns them in, as a manifest may.
    private val manifest = Manifest(
        modelName = "tiny", target = "executorch", precision = "fp32", inputH = 4, inputW = 4,
        padValue = floatArrayOf(0f, 0f, 0f), classes = emptyList(), thresholds = Thresholds(), promptSlots = 2,
        entryPoints = mapOf(
            "segment" to EntryPoint("model.pte", "forward_segment", listOf(t("image", 1, 3, 4, 4)),
                listOf(t("queries", 1, 2, 2), t("mask_logits", 1, 2, 1, 1), t("class_logits", 1, 2, 4))),
            "encode" to EntryPoint("model.pte", null, listOf(t("image", 1, 3, 4, 4)), listOf(t("features", 1, 2, 1, 1))),
            "prompt" to EntryPoint("model.pte", "prompt",
                listOf(t("features", 1, 2, 1, 1), t("boxes", 1, 2, 4), t("kinds", 1, 2, dtype = "int32")),
                listOf(t("mask_logits", 1, 2, 1, 1), t("iou", 1, 2))),
        ),
    )

    /** Returns output i filled with i + 1 (or [sizes] values where given), and records each call. */
    private class FakeBackend(manifest: Manifest, val sizes: Map<String, Int> = emptyMap()) : ContractSegmenter(manifest) {
        val calls = ArrayList<Pair<String, List<String>>>()
        override val runtime = "fake"

        override fun run(method: String, inputs: List<TensorInput>, outputs: List<TensorSpec>): List<FloatArray> {
            calls += method to inputs.map { "${it.spec.name}:${if (it.data is IntArray) "int" else "float"}" }
            return outputs.mapIndexed { i, spec -> FloatArray(sizes[spec.name] ?: spec.numel) { (i + 1).toFloat() } }
        }

        override fun close() {}
    }

    @Test
    fun entryPointsBecomeTheManifestsMethodsAndOutputsByName() {
        val fake = FakeBackend(manifest)
        val segment = fake.segment(FloatArray(48))
        assertArrayEquals(floatArrayOf(1f, 1f, 1f, 1f), segment.queries, 0f)
        assertArrayEquals(floatArrayOf(2f, 2f), segment.maskLogits, 0f)
        assertEquals(8, segment.classLogits.size)
        assertTrue(segment.classLogits.all { it == 3f })
        assertArrayEquals(floatArrayOf(1f, 1f), fake.encode(FloatArray(48)), 0f)
        val prompt = fake.prompt(FloatArray(2), FloatArray(8), intArrayOf(0, -1))
        assertArrayEquals(floatArrayOf(1f, 1f), prompt.maskLogits, 0f)
        assertArrayEquals(floatArrayOf(2f, 2f), prompt.iou, 0f)
        assertEquals(listOf(
            "forward_segment" to listOf("image:float"),
            "encode" to listOf("image:float"), // no method in the manifest: the entry's name
            "prompt" to listOf("features:float", "boxes:float", "kinds:int"),
        ), fake.calls)
    }

    @Test
    fun wrongSizesAreNamed() {
        val fake = FakeBackend(manifest)
        val input = assertThrows(IllegalArgumentException::class.java) { fake.encode(FloatArray(47)) }
        assertEquals("encode: image has 47 values, shape [1, 3, 4, 4]", input.message)
        assertTrue(fake.calls.isEmpty())
        val output = assertThrows(IllegalStateException::class.java) {
            FakeBackend(manifest, mapOf("iou" to 3)).prompt(FloatArray(2), FloatArray(8), intArrayOf(0, 1))
        }
        assertEquals("prompt: iou has 3 values, expected [1, 2]", output.message)
    }
}
