// The ExecuTorch back end: the one model.pte of `rapsam-convert --target executorch`, one method per entry point
// (the manifest's entry_points.<entry>.method), run through the org.pytorch:executorch-android Module API with the
// XNNPACK delegate that the .pte was lowered to.

package ai.rapsam.app

import ai.rapsam.core.ContractSegmenter
import ai.rapsam.core.Manifest
import ai.rapsam.core.TensorInput
import ai.rapsam.core.TensorSpec
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

/**
 * Not thread-safe beyond what Module itself locks: the app calls it from one worker thread. The contract mapping
 * (entry points to methods and tensors by the manifest's names) is ContractSegmenter's; this is the tensor I/O.
 */
class ExecuTorchSegmenter private constructor(
    private val module: Module,
    manifest: Manifest,
    override val runtime: String,
) : ContractSegmenter(manifest) {

    /** Tensor.dataAsFloatArray widens a half tensor if one comes back. */
    override fun run(method: String, inputs: List<TensorInput>, outputs: List<TensorSpec>): List<FloatArray> {
        val args = inputs.map { EValue.from(tensor(it.spec, it.data)) }
        val values = module.execute(method, *args.toTypedArray())
        return values.take(outputs.size).map { it.toTensor().dataAsFloatArray }
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
