// The part of rapsam-convert's manifest.json an app reads (rapsam/convert/manifest.py writes it): nothing about
// the model is hard-coded in the app, everything comes from here.

package ai.rapsam.core

/** One class of the taxonomy; [color] is RGB 0..255. */
data class ClassInfo(val id: Int, val name: String, val isThing: Boolean, val color: IntArray)

/** One input or output of an entry point; [dtype] is float32 or int32. */
data class TensorSpec(val name: String, val shape: IntArray, val dtype: String) {
    /** The number of elements: the product of the shape. */
    val numel: Int get() = shape.fold(1) { acc, d -> acc * d }

    /** The size of dimension [axis] (negative counts from the end), with a clear error for a shorter shape. */
    fun dim(axis: Int): Int {
        val i = if (axis < 0) shape.size + axis else axis
        require(i in shape.indices) { "$name has shape ${shape.contentToString()}, no dimension $axis" }
        return shape[i]
    }
}

/**
 * One entry point: [file] relative to the manifest (one file per entry, or one for all: .pte, .tflite), [method]
 * the method / signature inside it (null when the file holds one).
 */
data class EntryPoint(val file: String, val method: String?, val inputs: List<TensorSpec>, val outputs: List<TensorSpec>) {
    fun input(name: String): TensorSpec =
        inputs.firstOrNull { it.name == name } ?: throw IllegalArgumentException("entry point has no input $name")

    fun output(name: String): TensorSpec =
        outputs.firstOrNull { it.name == name } ?: throw IllegalArgumentException("entry point has no output $name")
}

class Manifest(
    val modelName: String,
    /** onnx, executorch, tflite, coreml */
    val target: String,
    /** The quantization scheme, else the compute precision (fp32, fp16): what a latency was measured at. */
    val precision: String,
    val inputH: Int,
    val inputW: Int,
    /** What the letterbox pads with: the pixel mean, RGB. */
    val padValue: FloatArray,
    val classes: List<ClassInfo>,
    val thresholds: Thresholds,
    /** K of the `prompt` entry point (its `kinds` input is [1, K]); null when the artifact has no prompt entry. */
    val promptSlots: Int?,
    val entryPoints: Map<String, EntryPoint>,
) {
    val isThing: BooleanArray get() = BooleanArray(classes.size) { classes[it].isThing }

    fun entryPoint(name: String): EntryPoint = entryPoints[name]
        ?: throw IllegalArgumentException("the artifact has no $name entry point (it has ${entryPoints.keys.sorted().joinToString()})")

    companion object {
        const val SCHEMA_VERSION = 1

        /** manifest.json text -> Manifest; a missing or mistyped key gives an IllegalArgumentException naming it. */
        fun parse(json: String): Manifest {
            val root = Json.parse(json) as? Map<*, *> ?: throw IllegalArgumentException("manifest is not a JSON object")
            val m = Section(root, "manifest")
            val version = m.int("schema_version")
            require(version == SCHEMA_VERSION) { "manifest schema_version $version, this app reads $SCHEMA_VERSION" }
            val inputSize = m.ints("input_size")
            require(inputSize.size == 2) { "manifest.input_size must be [height, width]" }
            val padValue = m.section("normalization").doubles("pad_value")
            require(padValue.size == 3) { "manifest.normalization.pad_value must be [r, g, b]" }
            val precision = m.section("precision")
            val classes = m.sections("classes").map {
                ClassInfo(it.int("id"), it.string("name"), it.boolean("is_thing"), it.ints("color"))
            }
            val thresholds = m.section("thresholds").let {
                Thresholds(it.double("object_mask").toFloat(), it.double("overlap").toFloat(), it.double("mask_logit").toFloat())
            }
            val entries = m.section("entry_points")
            val entryPoints = entries.keys().associateWith { name ->
                val e = entries.section(name)
                fun tensors(key: String) = e.sections(key).map { TensorSpec(it.string("name"), it.ints("shape"), it.string("dtype")) }
                EntryPoint(e.string("file"), e.stringOrNull("method"), tensors("inputs"), tensors("outputs"))
            }
            val kinds = entryPoints["prompt"]?.inputs?.firstOrNull { it.name == "kinds" }
            return Manifest(
                modelName = m.section("model").string("name"),
                target = m.section("target").string("name"),
                precision = precision.sectionOrNull("quantization")?.stringOrNull("scheme") ?: precision.string("compute"),
                inputH = inputSize[0],
                inputW = inputSize[1],
                padValue = FloatArray(3) { padValue[it].toFloat() },
                classes = classes,
                thresholds = thresholds,
                promptSlots = kinds?.dim(1),
                entryPoints = entryPoints,
            )
        }
    }

    /** One JSON object of the manifest and its path (for errors such as "manifest.entry_points.prompt.file is missing"). */
    private class Section(val map: Map<*, *>, val path: String) {
        fun keys(): List<String> = map.keys.map { it.toString() }

        private fun get(key: String): Any? =
            if (map.containsKey(key)) map[key] else throw IllegalArgumentException("$path.$key is missing")

        private inline fun <reified T> typed(key: String, what: String): T =
            get(key) as? T ?: throw IllegalArgumentException("$path.$key is not $what")

        fun string(key: String): String = typed(key, "a string")
        fun stringOrNull(key: String): String? = if (map[key] == null) null else string(key)
        fun boolean(key: String): Boolean = typed(key, "a boolean")
        fun double(key: String): Double = typed(key, "a number")
        fun int(key: String): Int = double(key).also {
            require(it == Math.rint(it)) { "$path.$key is not an integer" }
        }.toInt()

        fun section(key: String) = Section(typed<Map<*, *>>(key, "an object"), "$path.$key")
        fun sectionOrNull(key: String) = if (map[key] == null) null else section(key)

        fun sections(key: String): List<Section> = typed<List<*>>(key, "an array").mapIndexed { i, item ->
            Section(item as? Map<*, *> ?: throw IllegalArgumentException("$path.$key[$i] is not an object"), "$path.$key[$i]")
        }

        fun doubles(key: String): DoubleArray = typed<List<*>>(key, "an array").let { list ->
            DoubleArray(list.size) { list[it] as? Double ?: throw IllegalArgumentException("$path.$key[$it] is not a number") }
        }

        fun ints(key: String): IntArray = doubles(key).let { values ->
            IntArray(values.size) {
                require(values[it] == Math.rint(values[it])) { "$path.$key[$it] is not an integer" }
                values[it].toInt()
            }
        }
    }
}
