// Named stage durations (load, preprocess, segment, encode, prompt, postprocess, frame) for the app's latency
// readout and its benchmark mode, which logs one `RAPSAM_BENCH {json}` line per stage for a host to collect.

package ai.rapsam.core

/** Prefix of the benchmark lines in the log: `"$BENCH_MARKER $line"` for each line of [StageTimer.benchJson]. */
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

    /**
     * One JSON object per line, one line per recorded stage: {"stage", "runs", "latency_ms": {"p50", "p90", "p99",
     * "mean", "min", "max"}, "device": [device]}.
     */
    fun benchJson(device: Map<String, String>): String = stages.mapNotNull { stage ->
        val values = samples(stage)
        summarize(values)?.let {
            Json.write(mapOf("stage" to stage, "runs" to values.size, "latency_ms" to it, "device" to device))
        }
    }.joinToString("\n")

    companion object {
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
