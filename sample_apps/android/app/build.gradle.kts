import groovy.json.JsonSlurper
import javax.inject.Inject
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "ai.rapsam.app"
    compileSdk = 35

    defaultConfig {
        applicationId = "ai.rapsam.app"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "1.0"
        // The ExecuTorch and LiteRT AARs ship arm64-v8a and x86_64 only (phones and the emulator).
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
        // The runtime versions, for the latency readout and the benchmark lines.
        buildConfigField("String", "EXECUTORCH_VERSION", "\"${libs.versions.executorch.get()}\"")
        buildConfigField("String", "LITERT_VERSION", "\"${libs.versions.litert.get()}\"")
    }

    buildTypes {
        release {
            // Off by default: the runtimes reach their Java classes from JNI (see proguard-rules.pro before
            // turning it on). Debug-signed so `installRelease` works for benchmarking without a keystore.
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    buildFeatures {
        viewBinding = true
        buildConfig = true
    }

    // Models are copied out of the APK once (ExecuTorch and LiteRT load from a file path); stored uncompressed
    // the copy is a plain read and the APK can be mmapped.
    androidResources { noCompress += listOf("pte", "tflite") }

    // fbjni (ExecuTorch's JNI helper) ships the NDK's shared C++ runtime; keep one copy if another AAR adds it.
    packaging { jniLibs { pickFirsts += "**/libc++_shared.so" } }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    implementation(project(":core"))

    implementation(libs.androidx.core.ktx)
    implementation(libs.androidx.appcompat)
    implementation(libs.androidx.activity.ktx)
    implementation(libs.camerax.core)
    implementation(libs.camerax.camera2)
    implementation(libs.camerax.lifecycle)
    implementation(libs.camerax.view)

    implementation(libs.executorch.android)
    implementation(libs.litert)
    // LiteRT's GPU accelerator is a separate library; opt in with -Prapsam.litertGpu=true (gradle.properties).
    if (providers.gradleProperty("rapsam.litertGpu").orNull == "true") implementation(libs.litert.gpu)
}

// ---------------------------------------------------------------------------------------------------------------
// Artifacts: rapsam-convert writes one folder per target (model.pte or model.tflite + manifest.json). Every folder
// under the Gradle property `rapsam.artifacts` whose manifest says executorch or tflite is mirrored into
// src/main/assets/models/<folder>/ (gitignored) before every build; the app lists assets/models at start.

/** Mirrors the ExecuTorch and LiteRT artifact folders under [rapsamArtifacts] into [models]. */
abstract class CopyRapsamArtifacts : DefaultTask() {
    /** The artifacts folder as a whole, so the task reruns when a conversion changes it; it may not exist. */
    @get:InputFiles
    @get:PathSensitive(PathSensitivity.RELATIVE)
    abstract val rapsamArtifacts: ConfigurableFileCollection

    @get:OutputDirectory
    abstract val models: DirectoryProperty

    @get:Inject
    abstract val fs: FileSystemOperations

    @TaskAction
    fun copy() {
        val root = rapsamArtifacts.files.single()
        val folders = artifactFolders(root).filter { targetOf(it) in APP_TARGETS }
        fs.sync {
            into(models.get().asFile)
            folders.forEach { folder ->
                from(folder) {
                    into(folder.name)
                    // the test vectors' raw tensors are large and unused; their PNGs are the benchmark's picture
                    exclude("vectors/**/*.bin")
                }
            }
        }
        if (folders.isEmpty()) {
            // A warning, not an error: the app builds and says on screen that it has no model.
            logger.warn(
                "copyRapsamArtifacts: no executorch or tflite artifact under $root; run " +
                    "`rapsam-convert --target executorch --out <dir>` (or tflite) and set -Prapsam.artifacts=<dir>",
            )
        } else {
            folders.forEach { logger.lifecycle("copyRapsamArtifacts: ${it.name} (${targetOf(it)})") }
        }
    }

    /** [root] itself if it is one artifact, else the folders holding a manifest.json up to three levels down. */
    private fun artifactFolders(root: File): List<File> = when {
        File(root, "manifest.json").isFile -> listOf(root)
        root.isDirectory -> root.walkTopDown().maxDepth(3)
            .filter { it.name == "manifest.json" && it.isFile }
            .map { it.parentFile }
            .sortedBy { it.path }
            .toList()
        else -> emptyList()
    }

    private fun targetOf(folder: File): String? = runCatching {
        val manifest = JsonSlurper().parse(File(folder, "manifest.json")) as Map<*, *>
        (manifest["target"] as Map<*, *>)["name"] as String
    }.getOrNull()

    private companion object {
        val APP_TARGETS = setOf("executorch", "tflite")
    }
}

val copyRapsamArtifacts by tasks.registering(CopyRapsamArtifacts::class) {
    description = "Copies rapsam-convert's executorch and tflite folders into src/main/assets/models"
    rapsamArtifacts.from(rootProject.file(providers.gradleProperty("rapsam.artifacts").getOrElse("../../artifacts")))
    models.set(layout.projectDirectory.dir("src/main/assets/models"))
}

tasks.named("preBuild") { dependsOn(copyRapsamArtifacts) }
