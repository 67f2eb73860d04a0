// The pure-Kotlin core of the Android sample: pre- and post-processing, manifest, pipeline. A plain JVM library
// (no Android classes), so its tests run on the JVM; the app module depends on it with implementation(project(":core")).
//
//   RAPSAM_VECTORS=/tmp/vectors RAPSAM_MANIFEST=/tmp/artifacts/<name>/manifest.json ./gradlew :core:test
//
// (test.sh beside this file does the same without Gradle, and writes both when they are not given.)

plugins {
    // No version: the root build puts the Kotlin Gradle plugin on the classpath (alias(libs.plugins.kotlin.jvm)
    // apply false), so the app and the core use one Kotlin.
    kotlin("jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    useJUnit()
    // The Python reference's test vectors and the manifest of the same model (see test.sh).
    listOf("RAPSAM_VECTORS", "RAPSAM_MANIFEST").forEach { name ->
        System.getenv(name)?.let { environment(name, it) }
    }
    testLogging {
        events("passed", "failed")
        showStandardStreams = true // the tests print their numbers
    }
}
