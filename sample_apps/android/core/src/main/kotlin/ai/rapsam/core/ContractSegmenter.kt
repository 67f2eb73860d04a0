// The export contract mapped once for every runtime: segment / encode / prompt become calls of the manifest's
// method with its input tensors by name, and their outputs are picked by the manifest's names. A back end
// (ExecuTorch, LiteRT, a fake in the tests) implements only [ContractSegmenter.run], the tensor I/O.

package ai.rapsam.core

/** One input of a method call: its manifest spec and its values, a FloatArray or an IntArray of spec.numel. */
class TensorInput(val spec: TensorSpec, val data: Any)

abstract class ContractSegmenter(val manifest: Manifest) : Segmenter {

    /**
     * Runs [method] (the manifest's entry_points.<entry>.method, else the entry's name) on [inputs], given in the
     * manifest's order, and returns at least one float32 array per spec in [outputs], in that order (rapsam.export's
     * contract: fp16 artifacts still take and return float32 at the boundary).
     */
    protected abstract fun run(method: String, inputs: List<TensorInput>, outputs: List<TensorSpec>): List<FloatArray>

    override fun segment(image: FloatArray): SegmentOutputs {
        val out = call("segment", mapOf("image" to image))
        return SegmentOutputs(out.getValue("mask_logits"), out.getValue("class_logits"), out.getValue("queries"))
    }

    override fun encode(image: FloatArray): FloatArray = call("encode", mapOf("image" to image)).getValue("features")

    override fun prompt(features: FloatArray, boxes: FloatArray, kinds: IntArray): PromptOutputs {
        val out = call("prompt", mapOf("features" to features, "boxes" to boxes, "kinds" to kinds))
        return PromptOutputs(out.getValue("mask_logits"), out.getValue("iou"))
    }

    /** [entry] with [values] by tensor name -> its outputs by name, every size checked against the manifest. */
    private fun call(entry: String, values: Map<String, Any>): Map<String, FloatArray> {
        val spec = manifest.entryPoint(entry)
        val inputs = spec.inputs.map { t ->
            val size = when (val v = values[t.name]) {
                is FloatArray -> v.size
                is IntArray -> v.size
                else -> throw IllegalArgumentException("$entry: no float or int values for its input ${t.name}")
            }
            require(size == t.numel) { "$entry: ${t.name} has $size values, shape ${t.shape.contentToString()}" }
            TensorInput(t, values.getValue(t.name))
        }
        val results = run(spec.method ?: entry, inputs, spec.outputs)
        check(results.size >= spec.outputs.size) {
            "$entry returned ${results.size} values, the manifest names ${spec.outputs.size}"
        }
        return spec.outputs.withIndex().associate { (i, t) ->
            check(results[i].size == t.numel) {
                "$entry: ${t.name} has ${results[i].size} values, expected ${t.shape.contentToString()}"
            }
            t.name to results[i]
        }
    }
}
