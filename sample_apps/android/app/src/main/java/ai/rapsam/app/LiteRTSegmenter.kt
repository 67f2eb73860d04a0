// The LiteRT back end: the one model.tflite of `rapsam-convert --target tflite`, one signature per entry point
// (signature key = the manifest's entry_points.<entry>.method, tensors named as the manifest names them, NCHW at
// the signature). CPU runs the Interpreter with XNNPACK; the optional GPU back end runs LiteRT's CompiledModel,
// since the LiteRT 2.x Interpreter takes no delegates.

package ai.rapsam.app

import ai.rapsam.core.ContractSegmenter
import ai.rapsam.core.Manifest
import ai.rapsam.core.TensorInput
import ai.rapsam.core.TensorSpec
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import org.tensorflow.lite.Interpreter
import java.io.File
import java.nio.FloatBuffer
import java.nio.IntBuffer

/**
 * Not thread-safe (neither runtime is): the app calls it from one worker thread. The contract mapping (entry
 * points to signatures and tensors by the manifest's names) is ContractSegmenter's; this is the tensor I/O.
 */
class LiteRTSegmenter private constructor(
    private val runner: Runner,
    manifest: Manifest,
    override val runtime: String,
) : ContractSegmenter(manifest) {

    override fun run(method: String, inputs: List<TensorInput>, outputs: List<TensorSpec>): List<FloatArray> =
        runner.run(method, inputs.associate { it.spec.name to it.data }, outputs)

    override fun close() = runner.close()

    /** One way of running a signature by name: inputs by tensor name, outputs in the order of [outputs]. */
    private interface Runner : AutoCloseable {
        fun run(signature: String, inputs: Map<String, Any>, outputs: List<TensorSpec>): List<FloatArray>
    }

    /** The Interpreter API with LiteRT's XNNPACK CPU delegate. */
    private class InterpreterRunner(file: File, threads: Int) : Runner {
        private val interpreter = Interpreter(file, Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true))

        fun signatures(): Set<String> = interpreter.signatureKeys.toSet()

        override fun run(signature: String, inputs: Map<String, Any>, outputs: List<TensorSpec>): List<FloatArray> {
            // Flat arrays go in as buffers: a Java array would have to match the tensor's rank, and the
            // Interpreter resizes inputs to the shape of an array it is given.
            val feeds: Map<String, Any> = inputs.mapValues { (_, v) ->
                if (v is IntArray) IntBuffer.wrap(v) else FloatBuffer.wrap(v as FloatArray)
            }
            val results = outputs.map { FloatArray(it.numel) }
            val sinks: Map<String, Any> = outputs.withIndex().associate { (i, t) -> t.name to FloatBuffer.wrap(results[i]) }
            interpreter.runSignature(feeds, sinks, signature)
            return results
        }

        override fun close() = interpreter.close()
    }

    /** LiteRT's CompiledModel on the GPU accelerator, CPU for the ops the GPU does not take. */
    private class CompiledModelRunner(file: File) : Runner {
        private val model = CompiledModel.create(
            file.absolutePath,
            CompiledModel.Options(Accelerator.GPU, Accelerator.CPU),
        )

        // Buffers are created once per signature and reused for every call.
        private val buffers = HashMap<String, Pair<Map<String, TensorBuffer>, Map<String, TensorBuffer>>>()

        override fun run(signature: String, inputs: Map<String, Any>, outputs: List<TensorSpec>): List<FloatArray> {
            val (ins, outs) = buffers.getOrPut(signature) {
                inputs.keys.associateWith { model.createInputBuffer(it, signature) } to
                    outputs.associate { it.name to model.createOutputBuffer(it.name, signature) }
            }
            for ((name, value) in inputs) {
                val buffer = ins.getValue(name)
                if (value is IntArray) buffer.writeInt(value) else buffer.writeFloat(value as FloatArray)
            }
            model.run(ins, outs, signature)
            return outputs.map { outs.getValue(it.name).readFloat() }
        }

        override fun close() {
            buffers.values.forEach { (ins, outs) -> (ins.values + outs.values).forEach { it.close() } }
            model.close()
        }
    }

    companion object {
        fun load(dir: File, manifest: Manifest, threads: Int, gpu: Boolean): LiteRTSegmenter {
            val file = Artifacts.modelFile(dir, manifest)
            val version = BuildConfig.LITERT_VERSION
            if (gpu) return LiteRTSegmenter(CompiledModelRunner(file), manifest, "LiteRT $version GPU (CompiledModel)")
            val runner = InterpreterRunner(file, threads)
            val missing = Artifacts.PIPELINE_ENTRIES.map { manifest.entryPoints[it]?.method ?: it } - runner.signatures()
            if (missing.isNotEmpty()) {
                runner.close()
                throw IllegalArgumentException("${file.name} has no signature ${missing.joinToString()}")
            }
            return LiteRTSegmenter(runner, manifest, "LiteRT $version XNNPACK, $threads threads")
        }
    }
}
