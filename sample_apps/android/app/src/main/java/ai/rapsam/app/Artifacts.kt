// The converted models the build bundled (app/build.gradle.kts copies rapsam-convert folders into
// assets/models/<folder>/) and the back ends that run them. Everything about a model comes from its manifest.json.

package ai.rapsam.app

import android.content.Context
import android.util.Log
import ai.rapsam.core.Manifest
import ai.rapsam.core.Segmenter
import java.io.File

/** One bundled rapsam-convert folder: assets/models/[name]/ with its parsed manifest. */
class Artifact(val name: String, val manifest: Manifest)

/** A runtime that can run an artifact; [target] is the manifest's target.name it takes. */
enum class Backend(val id: String, val label: String, val target: String) {
    EXECUTORCH("executorch", "ExecuTorch · XNNPACK", "executorch"),
    LITERT("litert", "LiteRT · XNNPACK", "tflite"),
    LITERT_GPU("litert-gpu", "LiteRT · GPU", "tflite");

    companion object {
        fun forTarget(target: String): List<Backend> = entries.filter { it.target == target }

        fun parse(id: String): Backend =
            entries.firstOrNull { it.id == id } ?: throw IllegalArgumentException(
                "unknown backend $id (one of ${entries.joinToString { it.id }})",
            )
    }
}

object Artifacts {
    private const val TAG = "RapSAM"
    private const val ASSET_DIR = "models"

    /** Every bundled folder with a readable manifest of a target this app runs, sorted by name. */
    fun list(context: Context): List<Artifact> {
        val names = context.assets.list(ASSET_DIR).orEmpty().sorted()
        return names.mapNotNull { name ->
            try {
                val json = context.assets.open("$ASSET_DIR/$name/manifest.json").bufferedReader().use { it.readText() }
                Artifact(name, Manifest.parse(json)).takeIf { Backend.forTarget(it.manifest.target).isNotEmpty() }
            } catch (e: Exception) {
                // One broken folder should not hide the others; say why in logcat.
                Log.w(TAG, "skipping assets/$ASSET_DIR/$name: ${e.message}")
                null
            }
        }
    }

    /**
     * The artifact's folder on disk (files/models/<name>/), copied out of the APK once per install or update:
     * ExecuTorch and LiteRT open models by file path (and mmap them), which an APK asset does not have.
     */
    fun install(context: Context, artifact: Artifact): File {
        val dir = File(context.filesDir, "$ASSET_DIR/${artifact.name}")
        val stamp = File(dir, ".installed")
        @Suppress("DEPRECATION") // getPackageInfo(String, PackageInfoFlags) is API 33+
        val version = context.packageManager.getPackageInfo(context.packageName, 0).lastUpdateTime.toString()
        if (stamp.isFile && stamp.readText() == version) return dir
        dir.deleteRecursively()
        copyAssets(context, "$ASSET_DIR/${artifact.name}", dir)
        stamp.writeText(version)
        return dir
    }

    private fun copyAssets(context: Context, path: String, target: File) {
        val children = context.assets.list(path).orEmpty()
        if (children.isEmpty()) { // a file (AssetManager lists a file as having no children)
            target.parentFile?.mkdirs()
            context.assets.open(path).use { input -> target.outputStream().use { input.copyTo(it, 1 shl 20) } }
        } else {
            children.forEach { copyAssets(context, "$path/$it", File(target, it)) }
        }
    }

    /**
     * Load [artifact] from [dir] (what [install] returned) in [backend]. [threads] 0 picks a default: the number
     * of cores, at most 4 (big cores on most phones; more threads rarely help these models).
     */
    fun open(artifact: Artifact, dir: File, backend: Backend, threads: Int = 0): Segmenter {
        val manifest = artifact.manifest
        require(backend.target == manifest.target) {
            "${artifact.name} is a ${manifest.target} artifact; ${backend.id} runs ${backend.target}"
        }
        val n = if (threads > 0) threads else Runtime.getRuntime().availableProcessors().coerceIn(1, 4)
        return when (backend) {
            Backend.EXECUTORCH -> ExecuTorchSegmenter.load(dir, manifest, n)
            Backend.LITERT -> LiteRTSegmenter.load(dir, manifest, n, gpu = false)
            Backend.LITERT_GPU -> LiteRTSegmenter.load(dir, manifest, n, gpu = true)
        }
    }

    /** The one model file behind the entry points the app calls (both targets put them in one file). */
    fun modelFile(dir: File, manifest: Manifest, entries: List<String> = PIPELINE_ENTRIES): File {
        val files = entries.mapNotNull { manifest.entryPoints[it]?.file }.toSet()
        require(files.size == 1) { "expected one model file for ${entries.joinToString()}, the manifest names $files" }
        val file = File(dir, files.single())
        require(file.isFile) { "$file is missing: rebuild the app after rapsam-convert (copyRapsamArtifacts)" }
        return file
    }

    /** The entry points the pipeline calls: `segment` for panoptic frames, `encode` then `prompt` for prompts. */
    val PIPELINE_ENTRIES = listOf("segment", "encode", "prompt")
}
