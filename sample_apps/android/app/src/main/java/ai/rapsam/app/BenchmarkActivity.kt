// Benchmark mode, for a host driver over adb (`rapsam-bench android --app` runs all of this):
//
//   adb shell am start -W -S -n ai.rapsam.app/.BenchmarkActivity --es artifact <folder> --ei runs 50
//   adb logcat -d -s RapSAMBench
//
// Times model load, then `runs` rounds of what the app does (encode the picture, one click to its mask, one
// tracked camera-style frame) after `warmup` unreported rounds, and prints one `RAPSAM_BENCH {json}` line per
// stage (core's StageTimer.benchLines: load, preprocess, encode, prompt, frame, segment, postprocess) to logcat
// under the tag RapSAMBench and to files/rapsam-bench.txt (also <external files>/rapsam-bench.txt, which adb can
// read from a release build). A failure is one line with "status": "failed"; the last log line is "done: N lines".
//
// Extras: artifact (a folder of assets/models; default the first), backend (executorch | litert | litert-gpu;
// default the artifact's first), runs (20), warmup (3), threads (0: default), image (a path, absolute or inside the
// artifact folder; default its vectors/coffee.png or astronaut.png from rapsam-convert --vectors, else a synthetic
// 640x480 picture: latency depends on the picture's size, not its content).

package ai.rapsam.app

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.os.Build
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.widget.ScrollView
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import ai.rapsam.core.Pipeline
import ai.rapsam.core.QueryTracker
import ai.rapsam.core.StageTimer
import java.io.File
import kotlin.concurrent.thread

class BenchmarkActivity : AppCompatActivity() {

    private lateinit var output: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        output = TextView(this).apply {
            typeface = android.graphics.Typeface.MONOSPACE
            textSize = 11f
            setTextIsSelectable(true)
            val pad = (12 * resources.displayMetrics.density).toInt()
            setPadding(pad, pad, pad, pad)
        }
        setContentView(ScrollView(this).apply { addView(output) })
        if (savedInstanceState != null) { // recreated (rotation): the run already happened
            output.text = getString(R.string.benchmark_title)
            return
        }
        val extras = intent.extras ?: Bundle()
        output.text = "RAP-SAM benchmark: ${extras.getString("artifact") ?: "first artifact"}, " +
            "${extras.getInt("runs", DEFAULT_RUNS)} runs…"
        thread(name = "rapsam-bench") {
            val lines = try {
                measure(extras)
            } catch (e: Throwable) {
                Log.e(TAG, "benchmark failed", e)
                val context = device() + mapOf("artifact" to (extras.getString("artifact") ?: ""))
                listOf(StageTimer.failedLine(e.message ?: e.javaClass.simpleName, context))
            }
            lines.forEach { Log.i(TAG, it) }
            save(lines)
            Log.i(TAG, "done: ${lines.size} lines")
            runOnUiThread { output.text = lines.joinToString("\n\n") }
        }
    }

    private fun measure(extras: Bundle): List<String> {
        val runs = extras.getInt("runs", DEFAULT_RUNS).coerceAtLeast(1)
        val warmup = extras.getInt("warmup", DEFAULT_WARMUP).coerceAtLeast(0)
        val threads = extras.getInt("threads", 0)
        val artifacts = Artifacts.list(this)
        val name = extras.getString("artifact")
        val artifact = if (name != null) {
            artifacts.firstOrNull { it.name == name } ?: throw IllegalArgumentException(
                "no artifact $name in assets/models (bundled: ${artifacts.joinToString { it.name }.ifEmpty { "none" }})",
            )
        } else {
            artifacts.firstOrNull() ?: throw IllegalStateException("no artifact bundled: see README, rapsam.artifacts")
        }
        val backend = extras.getString("backend")?.let { Backend.parse(it) }
            ?: Backend.forTarget(artifact.manifest.target).first()
        val dir = Artifacts.install(this, artifact) // first-run copy out of the APK: not part of the load time
        val (bitmap, imageName) = benchImage(dir, extras.getString("image"))
        val argb = Images.pixels(bitmap)
        val w = bitmap.width
        val h = bitmap.height
        val click = listOf(floatArrayOf(w / 2f, h / 2f))

        val timer = StageTimer()
        val start = SystemClock.elapsedRealtimeNanos()
        val segmenter = Artifacts.open(artifact, dir, backend, threads)
        val loadMs = (SystemClock.elapsedRealtimeNanos() - start) / 1e6
        val runtime = segmenter.runtime
        segmenter.use {
            val pipeline = Pipeline(it, artifact.manifest, timer)
            val tracker = QueryTracker()
            // One round as the app does it: encode the picture, one click to its mask, one tracked frame.
            fun round() {
                val encoded = pipeline.encode(argb, w, h)
                pipeline.prompt(encoded, click, emptyList())
                pipeline.trackFrame(tracker, argb, w, h)
            }
            repeat(warmup) { round() }
            timer.reset() // warm-up rounds are not reported
            timer.record("load", loadMs)
            repeat(runs) { round() }
        }

        val m = artifact.manifest
        val context = device() + mapOf(
            "artifact" to artifact.name,
            "backend" to backend.id,
            "runtime" to runtime,
            "model" to m.modelName,
            "precision" to m.precision,
            "input_size" to listOf(m.inputH, m.inputW),
            "image" to imageName,
            "image_size" to listOf(h, w),
            "warmup" to warmup,
        )
        return timer.benchLines(context)
    }

    /** The phone, as benchmark tables name it: model, SoC, Android version, ABI, cores. */
    private fun device(): Map<String, Any> = buildMap {
        put("platform", "android")
        put("device", Build.MODEL)
        put("manufacturer", Build.MANUFACTURER)
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) {
            put("soc", "${Build.SOC_MANUFACTURER} ${Build.SOC_MODEL}")
        } else {
            put("soc", Build.HARDWARE) // the board name: SOC_MODEL is API 31+
        }
        put("os", "Android ${Build.VERSION.RELEASE}")
        put("sdk", Build.VERSION.SDK_INT)
        put("abi", Build.SUPPORTED_ABIS.firstOrNull() ?: "")
        put("cores", Runtime.getRuntime().availableProcessors())
    }

    /** The "image" extra, else the artifact's test-vector photos, else a synthetic picture. */
    private fun benchImage(dir: File, path: String?): Pair<Bitmap, String> {
        val candidates = if (path != null) {
            listOf(File(path).let { if (it.isAbsolute) it else File(dir, path) })
        } else {
            listOf(File(dir, "vectors/coffee.png"), File(dir, "vectors/astronaut.png"))
        }
        for (file in candidates) {
            if (!file.isFile) continue
            val options = BitmapFactory.Options().apply { inPreferredConfig = Bitmap.Config.ARGB_8888 }
            val bitmap = BitmapFactory.decodeFile(file.path, options)
                ?: throw IllegalArgumentException("cannot decode $file")
            return Images.fit(bitmap) to file.name
        }
        require(path == null) { "image $path not found" }
        return Images.synthetic() to "synthetic 640x480"
    }

    private fun save(lines: List<String>) {
        val text = lines.joinToString("\n", postfix = "\n")
        listOfNotNull(filesDir, getExternalFilesDir(null)).forEach { dir ->
            runCatching { File(dir, OUTPUT_FILE).writeText(text) }
                .onFailure { Log.w(TAG, "cannot write $dir/$OUTPUT_FILE: ${it.message}") }
        }
    }

    private companion object {
        const val TAG = "RapSAMBench"
        const val OUTPUT_FILE = "rapsam-bench.txt"
        const val DEFAULT_RUNS = 20
        const val DEFAULT_WARMUP = 3
    }
}
