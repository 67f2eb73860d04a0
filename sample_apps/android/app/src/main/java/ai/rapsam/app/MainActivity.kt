// The sample: pick a bundled artifact and runtime, then either the camera (panoptic overlay per frame with track
// ids) or a photo (panoptic overlay, then tap / drag prompts: the photo is encoded once and every gesture runs only
// the `prompt` entry point). The status line is the latency readout.

package ai.rapsam.app

import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.net.Uri
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.util.Size
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.core.resolutionselector.AspectRatioStrategy
import androidx.camera.core.resolutionselector.ResolutionSelector
import androidx.camera.core.resolutionselector.ResolutionStrategy
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.core.content.ContextCompat
import ai.rapsam.app.databinding.ActivityMainBinding
import ai.rapsam.core.EncodedImage
import ai.rapsam.core.Pipeline
import ai.rapsam.core.QueryTracker
import ai.rapsam.core.StageTimer
import java.util.concurrent.Executors

class MainActivity : AppCompatActivity() {
    private lateinit var binding: ActivityMainBinding

    // Every model call runs on this one thread: segmenters and pipelines are not thread-safe, and the camera
    // analyzer blocking it (with STRATEGY_KEEP_ONLY_LATEST) is what keeps one camera frame in flight.
    private val worker = Executors.newSingleThreadExecutor { Thread(it, "rapsam-worker") }

    private var choices: List<Pair<Artifact, Backend>> = emptyList()

    // Owned by the worker thread.
    private var pipeline: Pipeline? = null
    private val timer = StageTimer()
    private val tracker = QueryTracker()
    private var photo: Photo? = null
    private var lastFrameAt = 0L
    private var fps = 0.0

    // Written on the UI thread, read by the worker.
    @Volatile private var cameraOn = false
    @Volatile private var header = ""

    private var cameraProvider: ProcessCameraProvider? = null
    private var analysis: ImageAnalysis? = null
    private var promptsGiven = 0 // UI thread: picks each new prompt's colour

    /** A photo as the pipeline saw it: its size and `encode`'s features, valid for [pipeline] only. */
    private class Photo(val bitmap: Bitmap, val encoded: EncodedImage?, val pipeline: Pipeline?)

    private val requestCamera = registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) startCamera() else setStatus(getString(R.string.camera_denied))
    }

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        if (uri != null) openPhoto(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        binding = ActivityMainBinding.inflate(layoutInflater)
        setContentView(binding.root)

        choices = Artifacts.list(this).flatMap { a -> Backend.forTarget(a.manifest.target).map { a to it } }
        binding.backend.adapter = ArrayAdapter(
            this, android.R.layout.simple_spinner_item, choices.map { (a, b) -> "${a.name} · ${b.label}" },
        ).apply { setDropDownViewResource(android.R.layout.simple_spinner_dropdown_item) }
        // Also called once for the first entry after layout: that loads the default model.
        binding.backend.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) =
                load(choices[position].first, choices[position].second)

            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
        if (choices.isEmpty()) setStatus(getString(R.string.no_models))

        binding.camera.setOnClickListener { cameraMode() }
        binding.photo.setOnClickListener {
            pickPhoto.launch(
                PickVisualMediaRequest.Builder().setMediaType(ActivityResultContracts.PickVisualMedia.ImageOnly).build(),
            )
        }
        binding.clear.setOnClickListener { binding.overlay.clearPrompts() }
        binding.overlay.onPrompt = { point, box -> prompt(point, box) }
        cameraMode()
    }

    override fun onDestroy() {
        super.onDestroy()
        cameraOn = false
        analysis?.clearAnalyzer()
        cameraProvider?.unbindAll()
        worker.execute {
            pipeline?.segmenter?.close()
            pipeline = null
        }
        worker.shutdown()
    }

    private fun setStatus(text: String) {
        binding.status.text = text
    }

    // ---- model ---------------------------------------------------------------------------------------------

    private fun load(artifact: Artifact, backend: Backend) {
        setStatus(getString(R.string.loading, "${artifact.name} · ${backend.label}"))
        worker.execute {
            pipeline?.segmenter?.close()
            pipeline = null
            header = try {
                val dir = Artifacts.install(this, artifact)
                val start = SystemClock.elapsedRealtime()
                val segmenter = Artifacts.open(artifact, dir, backend)
                val loadMs = SystemClock.elapsedRealtime() - start
                pipeline = Pipeline(segmenter, artifact.manifest, timer)
                tracker.reset()
                val m = artifact.manifest
                "${m.modelName} ${m.inputH}x${m.inputW} ${m.precision} · ${segmenter.runtime} · load $loadMs ms"
            } catch (e: Throwable) { // UnsatisfiedLinkError too: a runtime without its native library
                Log.e(TAG, "loading ${artifact.name} in ${backend.id}", e)
                "Cannot load ${artifact.name} in ${backend.label}: ${e.message}"
            }
            runOnUiThread { setStatus(header) }
            // A photo on screen is segmented and encoded again by the new model.
            photo?.let { if (!cameraOn) segmentPhoto(it.bitmap) }
        }
    }

    // ---- camera --------------------------------------------------------------------------------------------

    private fun cameraMode() {
        if (!packageManager.hasSystemFeature(PackageManager.FEATURE_CAMERA_ANY)) {
            setStatus(getString(R.string.no_camera))
        } else if (ContextCompat.checkSelfPermission(this, android.Manifest.permission.CAMERA) ==
            PackageManager.PERMISSION_GRANTED
        ) {
            startCamera()
        } else {
            requestCamera.launch(android.Manifest.permission.CAMERA)
        }
    }

    private fun startCamera() {
        cameraOn = true
        binding.overlay.promptsEnabled = false
        binding.overlay.clear()
        binding.still.visibility = View.GONE
        binding.still.setImageDrawable(null)
        binding.preview.visibility = View.VISIBLE
        worker.execute {
            photo = null
            tracker.reset() // a new video: track ids start again
            lastFrameAt = 0L
        }
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            cameraProvider = provider
            if (!cameraOn) return@addListener
            // Preview and analysis share one aspect ratio, so the analysed frame is what the preview shows.
            val aspect = AspectRatioStrategy.RATIO_4_3_FALLBACK_AUTO_STRATEGY
            val preview = Preview.Builder()
                .setResolutionSelector(ResolutionSelector.Builder().setAspectRatioStrategy(aspect).build())
                .build()
                .also { it.setSurfaceProvider(binding.preview.surfaceProvider) }
            // 640x480 frames: the merge runs at frame resolution, and a bigger frame only costs time.
            val analysisSelector = ResolutionSelector.Builder()
                .setAspectRatioStrategy(aspect)
                .setResolutionStrategy(
                    ResolutionStrategy(Size(640, 480), ResolutionStrategy.FALLBACK_RULE_CLOSEST_LOWER_THEN_HIGHER),
                )
                .build()
            val useCase = ImageAnalysis.Builder()
                .setResolutionSelector(analysisSelector)
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
                .also { it.setAnalyzer(worker) { image -> analyze(image) } }
            analysis = useCase
            try {
                provider.unbindAll()
                provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, useCase)
            } catch (e: Exception) {
                Log.e(TAG, "camera", e)
                setStatus("Camera: ${e.message}")
            }
        }, ContextCompat.getMainExecutor(this))
    }

    private fun stopCamera() {
        cameraOn = false
        analysis?.clearAnalyzer()
        cameraProvider?.unbindAll()
        binding.preview.visibility = View.GONE
    }

    /** One camera frame, on the worker: segment + merge + track ids, then the overlay. */
    private fun analyze(image: ImageProxy) {
        try {
            val p = pipeline
            if (!cameraOn || p == null) return
            val bitmap = Images.upright(image.toBitmap(), image.imageInfo.rotationDegrees)
            val w = bitmap.width
            val h = bitmap.height
            timer.reset()
            val (result, ids) = p.trackFrame(tracker, Images.pixels(bitmap), w, h)
            val layer = renderPanoptic(result, ids, p.manifest, w, h)
            val now = SystemClock.elapsedRealtime()
            if (lastFrameAt > 0) fps = if (fps == 0.0) 1000.0 / (now - lastFrameAt) else 0.8 * fps + 200.0 / (now - lastFrameAt)
            lastFrameAt = now
            val line = "camera ${w}x$h · frame ${ms(timer.last("frame"))} ms (segment ${ms(timer.last("segment"))}, " +
                "post ${ms(timer.last("postprocess"))}) · ${"%.1f".format(fps)} FPS · ${result.segments.size} segments"
            runOnUiThread {
                if (cameraOn) {
                    binding.overlay.showPanoptic(layer, w, h)
                    setStatus("$header\n$line")
                }
            }
        } catch (e: Exception) {
            Log.e(TAG, "camera frame", e)
            runOnUiThread { setStatus("$header\nframe failed: ${e.message}") }
        } finally {
            image.close() // lets CameraX deliver the next (latest) frame
        }
    }

    // ---- photo and prompts ---------------------------------------------------------------------------------

    private fun openPhoto(uri: Uri) {
        stopCamera()
        binding.overlay.clear()
        binding.overlay.promptsEnabled = true
        setStatus("$header\n${getString(R.string.hint_photo)}")
        worker.execute {
            val bitmap = try {
                Images.decode(this, uri)
            } catch (e: Exception) {
                Log.e(TAG, "decoding $uri", e)
                runOnUiThread { setStatus("Cannot open the photo: ${e.message}") }
                return@execute
            }
            photo = Photo(bitmap, null, null)
            runOnUiThread {
                binding.still.setImageBitmap(bitmap)
                binding.still.visibility = View.VISIBLE
                binding.overlay.showPanoptic(null, bitmap.width, bitmap.height)
            }
            segmentPhoto(bitmap)
        }
    }

    /** On the worker: the panoptic overlay of the photo, and `encode` once for the prompts to come. */
    private fun segmentPhoto(bitmap: Bitmap) {
        val p = pipeline ?: return
        try {
            val w = bitmap.width
            val h = bitmap.height
            val argb = Images.pixels(bitmap)
            timer.reset()
            val (result, _) = p.panoptic(argb, w, h)
            val layer = renderPanoptic(result, null, p.manifest, w, h)
            val encoded = p.encode(argb, w, h)
            photo = Photo(bitmap, encoded, p)
            val line = "photo ${w}x$h · segment ${ms(timer.last("segment"))} ms + post ${ms(timer.last("postprocess"))} ms" +
                " · encode ${ms(timer.last("encode"))} ms · ${result.segments.size} segments\n" +
                getString(R.string.hint_photo)
            runOnUiThread {
                if (!cameraOn) {
                    binding.overlay.clearPrompts()
                    binding.overlay.showPanoptic(layer, w, h)
                    setStatus("$header\n$line")
                }
            }
        } catch (e: Exception) {
            Log.e(TAG, "photo", e)
            runOnUiThread { setStatus("$header\nsegmenting the photo failed: ${e.message}") }
        }
    }

    /** A tap ([point]) or drag ([box]) on the photo: one `prompt` call on the stored features, one more mask. */
    private fun prompt(point: FloatArray?, box: FloatArray?) {
        val color = PROMPT_COLORS[promptsGiven++ % PROMPT_COLORS.size]
        worker.execute {
            val current = photo
            val p = current?.pipeline
            val encoded = current?.encoded
            if (p == null || encoded == null || p !== pipeline) return@execute // not encoded (yet) by this model
            try {
                timer.reset()
                val result = p.prompt(encoded, listOfNotNull(point), listOfNotNull(box))
                val mask = result.masks.firstOrNull() ?: return@execute
                val w = current.bitmap.width
                val h = current.bitmap.height
                val mark = PromptMark(renderMask(mask, w, h, color), color, result.iou[0], point, box)
                val kind = if (box != null) "box" else "click"
                val line = "$kind → mask ${ms(timer.last("prompt"))} ms (prompt only; encode was once per photo)" +
                    " · IoU ${"%.2f".format(result.iou[0])}"
                runOnUiThread {
                    if (!cameraOn) {
                        binding.overlay.addPrompt(mark)
                        setStatus("$header\n$line")
                    }
                }
            } catch (e: Exception) {
                Log.e(TAG, "prompt", e)
                runOnUiThread { setStatus("$header\nprompt failed: ${e.message}") }
            }
        }
    }

    private fun ms(value: Double?): String = value?.let { "%.0f".format(it) } ?: "-"

    private companion object {
        const val TAG = "RapSAM"
    }
}
