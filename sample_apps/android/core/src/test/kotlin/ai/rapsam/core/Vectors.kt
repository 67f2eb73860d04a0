// The Python reference's test vectors (rapsam-vectors; format in rapsam/vectors.py) and the artifact's manifest,
// as the tests read them: $RAPSAM_VECTORS is the vectors folder, $RAPSAM_MANIFEST a manifest.json of the same model
// (test.sh writes both when they are not given).

package ai.rapsam.core

import java.awt.image.IndexColorModel
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO
import org.junit.Assert.assertEquals

/** An image as Android's Bitmap.getPixels hands it out. */
class ArgbImage(val argb: IntArray, val width: Int, val height: Int)

@Suppress("UNCHECKED_CAST")
fun Any?.obj(): Map<String, Any?> = this as Map<String, Any?>

@Suppress("UNCHECKED_CAST")
fun Any?.list(): List<Any?> = this as List<Any?>

fun Any?.int(): Int = (this as Double).toInt()

fun Any?.ints(): IntArray = list().map { it.int() }.toIntArray()

fun Any?.floats(): FloatArray = list().map { (it as Double).toFloat() }.toFloatArray()

object Vectors {
    val folder: File by lazy {
        val path = System.getenv("RAPSAM_VECTORS")
            ?: throw IllegalStateException("set RAPSAM_VECTORS to a folder written by rapsam-vectors (test.sh does)")
        File(path).also { require(File(it, "vectors.json").isFile) { "$it has no vectors.json: write it with rapsam-vectors --out $it" } }
    }

    val doc: Map<String, Any?> by lazy {
        Json.parse(File(folder, "vectors.json").readText()).obj().also { assertEquals(1, it["schema_version"].int()) }
    }

    val photos: List<Map<String, Any?>> get() = doc["photos"].list().map { it.obj() }
    val clipFrames: List<Map<String, Any?>> get() = doc["clip"].obj()["frames"].list().map { it.obj() }

    /** The manifest at $RAPSAM_MANIFEST, or null when it is not set. */
    val manifest: Manifest? by lazy { manifestText?.let { Manifest.parse(it) } }
    val manifestText: String? by lazy { System.getenv("RAPSAM_MANIFEST")?.let { File(it).readText() } }

    /**
     * One flag per class: the manifest's, else what the stored segments say (a class no stored segment has is never
     * painted by the reference, so its flag cannot change a result that agrees with it).
     */
    val isThing: BooleanArray by lazy {
        manifest?.isThing ?: run {
            val numClasses = shape(photos[0]["segment"].obj()["class_logits"])[2] - 1
            val flags = BooleanArray(numClasses)
            for (entry in photos.map { it["panoptic"].obj() } + clipFrames) {
                for (s in entry["segments"].list()) if (s.obj()["is_thing"] == true) flags[s.obj()["class_id"].int()] = true
            }
            flags
        }
    }

    /** The manifest's pad value, else the bottom-right value of a stored input that has padding. */
    val padValue: FloatArray by lazy {
        manifest?.padValue ?: run {
            val photo = photos.first { p -> p["letterbox"].obj().let { it["valid_size"] != it["input_size"] } }
            val x = floats(photo["input"])
            val plane = x.size / 3
            FloatArray(3) { x[(it + 1) * plane - 1] }
        }
    }

    val inputSize: IntArray get() = doc["input_size"].ints()

    fun shape(entry: Any?): IntArray = entry.obj()["shape"].ints()

    private fun bytes(entry: Any?): ByteBuffer {
        val e = entry.obj()
        val buffer = ByteBuffer.wrap(File(folder, e["file"] as String).readBytes()).order(ByteOrder.LITTLE_ENDIAN)
        assertEquals("${e["file"]}: size and shape disagree", shape(e).fold(1) { a, b -> a * b } * 4, buffer.capacity())
        return buffer
    }

    /** A raw little-endian float32 .bin entry ({file, shape, dtype}). */
    fun floats(entry: Any?): FloatArray {
        assertEquals("float32", entry.obj()["dtype"])
        val b = bytes(entry).asFloatBuffer()
        return FloatArray(b.remaining()).also { b.get(it) }
    }

    /** A raw little-endian int32 .bin entry. */
    fun ints(entry: Any?): IntArray {
        assertEquals("int32", entry.obj()["dtype"])
        val b = bytes(entry).asIntBuffer()
        return IntArray(b.remaining()).also { b.get(it) }
    }

    fun box(letterbox: Any?): Letterbox {
        val l = letterbox.obj()
        val (imageH, imageW) = l["image_size"].ints()
        val (validH, validW) = l["valid_size"].ints()
        val (inputH, inputW) = l["input_size"].ints()
        return Letterbox(imageH, imageW, validH, validW, inputH, inputW)
    }

    /** A PNG as ARGB ints, RGB read from the raster (getRGB would colour-convert); gray replicated, alpha opaque. */
    fun rgbImage(name: String): ArgbImage {
        val image = ImageIO.read(File(folder, name))
        val w = image.width
        val h = image.height
        if (image.colorModel is IndexColorModel) return ArgbImage(image.getRGB(0, 0, w, h, null, 0, w), w, h)
        val raster = image.raster
        val bands = raster.numBands
        val px = IntArray(bands)
        val argb = IntArray(w * h)
        for (y in 0 until h) for (x in 0 until w) {
            raster.getPixel(x, y, px)
            val (r, g, b) = if (bands >= 3) Triple(px[0], px[1], px[2]) else Triple(px[0], px[0], px[0])
            argb[y * w + x] = (0xFF shl 24) or (r shl 16) or (g shl 8) or b
        }
        return ArgbImage(argb, w, h)
    }

    /** The first channel of an 8-bit PNG (segment maps, prompt masks), row-major. */
    fun gray(name: String): IntArray {
        val image = ImageIO.read(File(folder, name))
        return image.raster.getSamples(0, 0, image.width, image.height, 0, null as IntArray?)
    }
}
