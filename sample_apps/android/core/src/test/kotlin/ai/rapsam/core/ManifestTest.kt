// Manifest.parse on the real manifest.json ($RAPSAM_MANIFEST, written by rapsam-convert) and on edited copies.

package ai.rapsam.core

import java.io.File
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

class ManifestTest {
    private val text: String
        get() = Vectors.manifestText
            ?: throw IllegalStateException("set RAPSAM_MANIFEST to a manifest.json written by rapsam-convert (test.sh does)")

    /** The manifest as plain maps, edited by [edit], written back and parsed. */
    @Suppress("UNCHECKED_CAST")
    private fun edited(edit: (MutableMap<String, Any?>) -> Unit): Manifest {
        fun deepCopy(v: Any?): Any? = when (v) {
            is Map<*, *> -> v.entries.associateTo(LinkedHashMap<String, Any?>()) { (k, x) -> k as String to deepCopy(x) }
            is List<*> -> v.mapTo(ArrayList()) { deepCopy(it) }
            else -> v
        }
        val doc = deepCopy(Json.parse(text)) as MutableMap<String, Any?>
        edit(doc)
        return Manifest.parse(Json.write(doc))
    }

    @Suppress("UNCHECKED_CAST")
    private fun Any?.m() = this as MutableMap<String, Any?>

    private fun fails(message: String, block: () -> Unit) {
        val e = assertThrows(IllegalArgumentException::class.java) { block() }
        assertTrue("'${e.message}' does not contain '$message'", e.message!!.contains(message))
    }

    @Test
    fun parsesTheRealManifest() {
        val m = Manifest.parse(text)
        val raw = Json.parse(text).obj()
        assertEquals(raw["model"].obj()["name"], m.modelName)
        assertEquals(raw["target"].obj()["name"], m.target)
        val precision = raw["precision"].obj()
        assertEquals((precision["quantization"] as Map<*, *>?)?.get("scheme") ?: precision["compute"], m.precision)
        assertArrayEquals(Vectors.inputSize, intArrayOf(m.inputH, m.inputW))
        assertEquals(3, m.padValue.size)
        // the classes: one per column of class_logits but no-object, ids in order
        val numClasses = Vectors.shape(Vectors.photos[0]["segment"].obj()["class_logits"])[2] - 1
        assertEquals(numClasses, m.classes.size)
        assertEquals((0 until numClasses).toList(), m.classes.map { it.id })
        assertTrue(m.classes.all { it.name.isNotEmpty() && it.color.size == 3 })
        assertEquals(raw["no_object_index"].int(), m.classes.size)
        // the thresholds of the merge, and K of the prompt entry point
        val t = raw["thresholds"].obj()
        assertEquals(Thresholds((t["object_mask"] as Double).toFloat(), (t["overlap"] as Double).toFloat(),
            (t["mask_logit"] as Double).toFloat()), m.thresholds)
        assertEquals(raw["prompts"].obj()["max_prompts"].int(), m.promptSlots)
        // every entry point of the contract, its file next to the manifest when the manifest is in its folder
        assertTrue(m.entryPoints.keys.containsAll(listOf("segment", "encode", "prompt")))
        val folder = System.getenv("RAPSAM_MANIFEST")?.let { File(it).parentFile }
        for ((name, entry) in m.entryPoints) {
            assertTrue("$name: ${entry.file}", entry.file.isNotEmpty())
            if (folder != null) assertTrue("$name: ${entry.file} is not in $folder", File(folder, entry.file).isFile)
        }
        val segment = m.entryPoint("segment")
        assertArrayEquals(intArrayOf(1, 3, m.inputH, m.inputW), segment.input("image").shape)
        assertArrayEquals(Vectors.shape(Vectors.photos[0]["segment"].obj()["mask_logits"]), segment.output("mask_logits").shape)
        assertEquals("int32", m.entryPoint("prompt").input("kinds").dtype)
        println("  ${m.modelName} ${m.target} ${m.precision}: ${m.inputH}x${m.inputW}, ${m.classes.size} classes " +
            "(${m.classes.count { it.isThing }} things), K=${m.promptSlots}, entry points " +
            m.entryPoints.entries.joinToString { "${it.key}=${it.value.file}" })
    }

    @Test
    fun readsMethodsQuantizationAndMissingEntryPoints() {
        // as an ExecuTorch int8 artifact writes it: one file, a method per entry point, a quantization scheme
        val m = edited { doc ->
            doc["target"].m()["name"] = "executorch"
            doc["precision"].m()["quantization"] = mapOf("scheme" to "int8-dynamic")
            for ((name, entry) in doc["entry_points"].m()) {
                entry.m()["file"] = "model.pte"
                entry.m()["method"] = name
            }
        }
        assertEquals("executorch", m.target)
        assertEquals("int8-dynamic", m.precision)
        assertEquals("model.pte", m.entryPoint("encode").file)
        assertEquals("encode", m.entryPoint("encode").method)
        // no prompt entry point: no prompt slots, and a clear error when asked for it
        val noPrompt = edited { it["entry_points"].m().remove("prompt") }
        assertNull(noPrompt.promptSlots)
        fails("the artifact has no prompt entry point (it has") { noPrompt.entryPoint("prompt") }
    }

    @Test
    fun missingOrMistypedKeysAreNamed() {
        fails("manifest.input_size is missing") { edited { it.remove("input_size") } }
        fails("manifest.model.name is missing") { edited { it["model"].m().remove("name") } }
        fails("manifest.normalization.pad_value is missing") { edited { it["normalization"].m().remove("pad_value") } }
        fails("manifest.thresholds.overlap is missing") { edited { it["thresholds"].m().remove("overlap") } }
        fails("manifest.classes[2].is_thing is missing") { edited { (it["classes"] as MutableList<Any?>)[2].m().remove("is_thing") } }
        fails("manifest.entry_points.prompt.file is missing") { edited { it["entry_points"].m()["prompt"].m().remove("file") } }
        fails("manifest.entry_points.segment.outputs[0].shape is missing") {
            edited { (it["entry_points"].m()["segment"].m()["outputs"] as MutableList<Any?>)[0].m().remove("shape") }
        }
        fails("manifest.input_size is not an array") { edited { it["input_size"] = "128x128" } }
        fails("manifest.input_size must be [height, width]") { edited { it["input_size"] = listOf(128) } }
        fails("manifest.classes[0].id is not an integer") { edited { (it["classes"] as MutableList<Any?>)[0].m()["id"] = 0.5 } }
        fails("manifest schema_version 2") { edited { it["schema_version"] = 2 } }
        fails("invalid JSON at offset 1") { Manifest.parse("{") }
        fails("manifest is not a JSON object") { Manifest.parse("[]") }
    }
}
