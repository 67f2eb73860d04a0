// The ExecuTorch back end: the one model.pte of `rapsam-convert --target executorch`, one method per entry point
// (the manifest's entry_points.<entry>.method), run through the org.pytorch:executorch-android Module API with the
// XNNPACK delegate that the .pte was lowered to.

package ai.rapsam.app

import ai.rapsam.core.Manifest
import ai.rapsam.core.PromptOutputs
import ai.rapsam.core.SegmentOutputs
import ai.rapsam.core.Segmenter
import ai.rapsam.core.TensorSpec
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

/** Not thread-safe beyond what Module itself locks: the app calls it from one worker thread. */
class ExecuTorchSegmenter private constructor(
    private val module: Module,
    private val manifest: Manifest,
    override val runtime: String,
) : Segmenter {

    override fun segment(image: FloatArray): SegmentOutputs {
        val out = run("segment", mapOf("image" to image))
        return SegmentOutputs(out.getValue("mask_logits"), out.getValue("class_logits"), out.getValue("queries"))
    }

    override fun encode(image: FloatArray): FloatArray = run("encode", mapOf("image" to image)).getValue("features")

    override fun prompt(features: FloatArray, boxes: FloatArray, kinds: IntArray): PromptOutputs {
        val out = run("prompt", mapOf("features" to features, "boxes" to boxes, "kinds" to kinds))
        return PromptOutputs(out.getValue("mask_logits"), out.getValue("iou"))
    }

    /**
     * Inputs in the manifest's order and shapes; the method returns its outputs in the manifest's order too
     * (rapsam.export's contract). fp16 artifacts still take and return float32 at the boundary, and
     * Tensor.dataAsFloatArray widens a half tensor if one comes back.
     */
    private fun run(entry: String, inputs: Map<String, Any>): Map<String, FloatArray> {
        val spec = manifest.entryPoint(entry)
        val args = spec.inputs.map { EValue.from(tensor(it, inputs[it.name] ?: error("$entry: no value for ${it.name}"))) }
        val values = module.execute(spec.method ?: entry, *args.toTypedArray())
        check(values.size >= spec.outputs.size) {
            "$entry returned ${values.size} values, the manifest names ${spec.outputs.size}"
        }
        return spec.outputs.withIndex().associate { (i, t) ->
            val data = values[i].toTensor().dataAsFloatArray
            check(data.size == t.numel) { "$entry: ${t.name} has ${data.size} values, expected ${t.shape.contentToString()}" }
            t.name to data
        }
    }

    // Prompts on one photo pass the same features array every time; its Tensor (a copy into native memory, 16 MB
    // at 512x512) is kept instead of being made again for every tap.
    private var cachedFeatures: FloatArray? = null
    private var cachedTensor: Tensor? = null

    private fun tensor(spec: TensorSpec, value: Any): Tensor {
        if (value === cachedFeatures) return cachedTensor!!
        val tensor = newTensor(spec, value)
        if (spec.name == "features") {
            cachedFeatures = value as FloatArray
            cachedTensor = tensor
        }
        return tensor
    }

    private fun newTensor(spec: TensorSpec, value: Any): Tensor {
        val shape = LongArray(spec.shape.size) { spec.shape[it].toLong() }
        val size = when (value) {
            is FloatArray -> value.size
            is IntArray -> value.size
            else -> error("${spec.name}: unsupported ${value.javaClass.simpleName}")
        }
        require(size == spec.numel) { "${spec.name}: $size values for shape ${spec.shape.contentToString()}" }
        return if (value is IntArray) Tensor.fromBlob(value, shape) else Tensor.fromBlob(value as FloatArray, shape)
    }

    override fun close() = module.close()

    companion object {
        /**
         * Load the .pte in [dir] and its pipeline methods up front, so that XNNPACK's setup is part of the load
         * time and not of the first frame. Memory-mapped: the weights stay in the page cache, not the Java heap.
         */
        fun load(dir: File, manifest: Manifest, threads: Int): ExecuTorchSegmenter {
            val file = Artifacts.modelFile(dir, manifest)
            val module = Module.load(file.absolutePath, Module.LOAD_MODE_MMAP, threads)
            try {
                val methods = module.getMethods().toSet()
                for (entry in Artifacts.PIPELINE_ENTRIES) {
                    val method = manifest.entryPoints[entry]?.method ?: entry
                    require(method in methods) { "${file.name} has no method $method (it has ${methods.sorted()})" }
                    module.loadMethod(method)
                }
            } catch (e: Throwable) {
                module.close()
                throw e
            }
            val runtime = "ExecuTorch ${BuildConfig.EXECUTORCH_VERSION} XNNPACK, $threads threads"
            return ExecuTorchSegmenter(module, manifest, runtime)
        }
    }
}
