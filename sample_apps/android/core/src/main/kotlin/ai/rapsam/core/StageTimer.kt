// Named stage durations (load, preprocess, segment, encode, prompt, postprocess, frame) for the app's latency
// readout and its benchmark mode, which logs one `RAPSAM_BENCH {json}` line per stage for a host to collect
// (`rapsam-bench android --app`). The line format is shared with the iOS app's StageTimer.swift and read by
// rapsam/bench/schema.py (parse_app_lines); tests/data/bench/app_bench_lines.txt is its golden sample:
//
//   RAPSAM_BENCH {<context>..., "latency_ms": {"max", "mean", "min", "p50", "p90", "p99"}, "runs": N,
//                 "stage": "encode", "status": "ok"}        one per stage, keys sorted, times in ms
//   RAPSAM_BENCH {<context>..., "reason": "...", "status": "failed"}       a run that could not finish
//
// The context is what the app knows about the run: platform, device, os, cores, artifact, backend, runtime,
// model, precision, input_size [h, w], image, image_size [h, w], warmup.

package ai.rapsam.core

/** Prefix of the benchmark lines in the log, followed by one space and a JSON object. */
const val BENCH_MARKER = "RAPSAM_BENCH"

/** Thread-safe: the camera thread records while the UI reads. */
class StageTimer {
    private val samples = LinkedHashMap<String, MutableList<Double>>() // stages in the order first recorded

    @Synchronized
    fun record(stage: String, ms: Double) {
        samples.getOrPut(stage) { ArrayList() }.add(ms)
    }

    /** Runs [block] and records its wall-clock time under [stage] (a block that throws is not recorded). */
    fun <T> time(stage: String, block: () -> T): T {
        val start = System.nanoTime()
        val value = block()
        record(stage, (System.nanoTime() - start) / 1e6)
        return value
    }

    @get:Synchronized
    val stages: List<String> get() = samples.keys.toList()

    @Synchronized
    fun samples(stage: String): List<Double> = samples[stage]?.toList() ?: emptyList()

    fun last(stage: String): Double? = samples(stage).lastOrNull()

    @Synchronized
    fun reset() = samples.clear()

    /** p50/p90/p99 (linear interpolation, as numpy and rapsam/bench/schema.py), mean, min, max in ms; null if none. */
    fun summary(stage: String): Map<String, Double>? = summarize(samples(stage))

    /** One `RAPSAM_BENCH {json}` line per recorded stage: [context] plus stage, status "ok", runs and latency_ms. */
    fun benchLines(context: Map<String, Any?>): List<String> = stages.mapNotNull { stage ->
        val values = samples(stage)
        summarize(values)?.let {
            benchLine(context + mapOf("stage" to stage, "status" to "ok", "runs" to values.size, "latency_ms" to it))
        }
    }

    companion object {
        /** The one line of a run that failed: [context] plus status "failed" and the [reason]. */
        fun failedLine(reason: String, context: Map<String, Any?>): String =
            benchLine(context + mapOf("status" to "failed", "reason" to reason))

        /** The marker and [record] as compact JSON, keys sorted at every level (as Swift's .sortedKeys). */
        fun benchLine(record: Map<String, Any?>): String = "$BENCH_MARKER ${Json.write(sortedKeys(record))}"

        private fun sortedKeys(value: Any?): Any? = when (value) {
            is Map<*, *> -> value.entries.sortedBy { it.key.toString() }.associate { it.key.toString() to sortedKeys(it.value) }
            is List<*> -> value.map { sortedKeys(it) }
            else -> value
        }

        fun summarize(samples: List<Double>): Map<String, Double>? {
            if (samples.isEmpty()) return null
            val ordered = samples.sorted()
            fun percentile(q: Double): Double {
                val position = (ordered.size - 1) * q
                val low = position.toInt()
                val high = minOf(low + 1, ordered.size - 1)
                return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
            }
            fun ms(v: Double) = Math.round(v * 1e4) / 1e4 // 0.1 us is plenty and keeps lines short
            return linkedMapOf(
                "p50" to ms(percentile(0.5)), "p90" to ms(percentile(0.9)), "p99" to ms(percentile(0.99)),
                "mean" to ms(ordered.sum() / ordered.size), "min" to ms(ordered.first()), "max" to ms(ordered.last()),
            )
        }
    }
}
