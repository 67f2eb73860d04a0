// The LiteRT back end: the one model.tflite of `rapsam-convert --target tflite`, one signature per entry point
// (signature key = the manifest's entry_points.<entry>.method, tensors named as the manifest names them, NCHW at
// the signature). CPU runs the Interpreter with XNNPACK; the optional GPU back end runs LiteRT's CompiledModel,
// since the LiteRT 2.x Interpreter takes no delegates.

package ai.rapsam.app

import ai.rapsam.core.Manifest
import ai.rapsam.core.PromptOutputs
import ai.rapsam.core.SegmentOutputs
import ai.rapsam.core.Segmenter
import ai.rapsam.core.TensorSpec
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import org.tensorflow.lite.Interpreter
import java.io.File
import java.nio.FloatBuffer
import java.nio.IntBuffer

/** Not thread-safe (neither runtime is): the app calls it from one worker thread. */
class LiteRTSegmenter private constructor(
    private val runner: Runner,
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

    private fun run(entry: String, inputs: Map<String, Any>): Map<String, FloatArray> {
        val spec = manifest.entryPoint(entry)
        for (t in spec.inputs) {
            val size = when (val v = inputs[t.name]) {
                is FloatArray -> v.size
                is IntArray -> v.size
                else -> error("$entry: no float or int value for ${t.name}")
            }
            require(size == t.numel) { "$entry: ${t.name} has $size values, shape ${t.shape.contentToString()}" }
        }
        return runner.run(spec.method ?: entry, inputs, spec.outputs)
    }

    override fun close() = runner.close()

    /** One way of running a signature by name: inputs by tensor name, outputs as the manifest lists them. */
    private interface Runner : AutoCloseable {
        fun run(signature: String, inputs: Map<String, Any>, outputs: List<TensorSpec>): Map<String, FloatArray>
    }

    /** The Interpreter API with LiteRT's XNNPACK CPU delegate. */
    private class InterpreterRunner(file: File, threads: Int) : Runner {
        private val interpreter = Interpreter(file, Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true))

        fun signatures(): Set<String> = interpreter.signatureKeys.toSet()

        override fun run(signature: String, inputs: Map<String, Any>, outputs: List<TensorSpec>): Map<String, FloatArray> {
            // Flat arrays go in as buffers: a Java array would have to match the tensor's rank, and the
            // Interpreter resizes inputs to the shape of an array it is given.
            val feeds: Map<String, Any> = inputs.mapValues { (_, v) ->
                if (v is IntArray) IntBuffer.wrap(v) else FloatBuffer.wrap(v as FloatArray)
            }
            val results = outputs.associate { it.name to FloatArray(it.numel) }
            val sinks: Map<String, Any> = results.mapValues { FloatBuffer.wrap(it.value) }
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

        override fun run(signature: String, inputs: Map<String, Any>, outputs: List<TensorSpec>): Map<String, FloatArray> {
            val (ins, outs) = buffers.getOrPut(signature) {
                inputs.keys.associateWith { model.createInputBuffer(it, signature) } to
                    outputs.associate { it.name to model.createOutputBuffer(it.name, signature) }
            }
            for ((name, value) in inputs) {
                val buffer = ins.getValue(name)
                if (value is IntArray) buffer.writeInt(value) else buffer.writeFloat(value as FloatArray)
            }
            model.run(ins, outs, signature)
            return outputs.associate { it.name to outs.getValue(it.name).readFloat() }
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
