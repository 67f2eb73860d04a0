// The benchmark line format against its golden sample, tests/data/bench/app_bench_lines.txt, which the Python
// reader (rapsam/bench/schema.py parse_app_lines, tests/test_bench_devices.py) and the Swift XCTest check too:
// the three languages agree on one line format through this file.

package ai.rapsam.core

import java.io.File
import org.junit.Assert.assertEquals
import org.junit.Test

class BenchLinesTest {
    @Test
    fun benchLinesMatchTheGoldenSample() {
        val timer = StageTimer()
        timer.record("load", 412.5)
        for (r in 0 until 5) { // one round as BenchmarkActivity runs it: encode, click to mask, tracked frame
            timer.record("preprocess", PREPROCESS[2 * r])
            timer.record("encode", ENCODE[r])
            timer.record("prompt", PROMPT[r])
            timer.record("preprocess", PREPROCESS[2 * r + 1])
            timer.record("segment", SEGMENT[r])
            timer.record("postprocess", POSTPROCESS[r])
            timer.record("frame", FRAME[r])
        }
        // BenchmarkActivity's failed line: what it knows before the model opens.
        val failed = StageTimer.failedLine("no artifact nope in assets/models (bundled: " +
            "rapsam_edgenext_demo-128x128-executorch)", DEVICE + mapOf("artifact" to "nope"))
        val lines = timer.benchLines(DEVICE + RUN) + failed
        val golden = goldenFile()
        val expected = golden?.readLines()?.filter { it.isNotBlank() }
        if (lines != expected) {
            println("  the lines, to compare with ${golden ?: "tests/data/bench/app_bench_lines.txt"}:")
            lines.forEach { println(it) }
        }
        checkNotNull(golden) {
            "no tests/data/bench/app_bench_lines.txt above ${System.getProperty("user.dir")}: run from the rapsam " +
                "repository or set RAPSAM_BENCH_GOLDEN"
        }
        assertEquals(expected, lines)
    }

    companion object {
        val PREPROCESS = doubleArrayOf(1.25, 1.5, 1.0, 1.75, 1.25, 1.5, 1.0, 1.25, 1.5, 2.0)
        val ENCODE = doubleArrayOf(41.0, 42.5, 40.25, 43.0, 44.75)
        val PROMPT = doubleArrayOf(6.5, 7.0, 6.25, 6.75, 8.0)
        val SEGMENT = doubleArrayOf(48.0, 47.5, 49.25, 48.5, 51.0)
        val POSTPROCESS = doubleArrayOf(3.5, 3.25, 3.75, 3.5, 4.0)
        val FRAME = doubleArrayOf(53.0, 52.25, 54.5, 53.5, 56.75)

        /** What BenchmarkActivity sends for a Pixel 8 Pro (the phone of tests/data/bench/getprop.txt) running the
         * demo artifact: the phone, then the run. */
        val DEVICE = mapOf(
            "platform" to "android", "device" to "Pixel 8 Pro", "manufacturer" to "Google", "soc" to "Google Tensor G3",
            "os" to "Android 14", "sdk" to 34, "abi" to "arm64-v8a", "cores" to 9,
        )
        val RUN = mapOf(
            "artifact" to "rapsam_edgenext_demo-128x128-executorch", "backend" to "executorch",
            "runtime" to "ExecuTorch 1.5.1 XNNPACK, 4 threads", "model" to "rapsam_edgenext_demo", "precision" to "fp32",
            "input_size" to listOf(128, 128), "image" to "coffee.png", "image_size" to listOf(426, 640), "warmup" to 3,
        )

        /** $RAPSAM_BENCH_GOLDEN, else tests/data/bench/app_bench_lines.txt in a folder above the working directory. */
        fun goldenFile(): File? {
            System.getenv("RAPSAM_BENCH_GOLDEN")?.let { return File(it) }
            var dir: File? = File(System.getProperty("user.dir")).absoluteFile
            while (dir != null) {
                val file = File(dir, "tests/data/bench/app_bench_lines.txt")
                if (file.isFile) return file
                dir = dir.parentFile
            }
            return null
        }
    }
}
