// The RAP-SAM Android sample: the app (CameraX, ExecuTorch, LiteRT) and the pure-Kotlin pipeline core it runs,
// which CI builds and tests on its own (core/test.sh) because CI has no Android SDK.
pluginManagement {
    repositories {
        google {
            content {
                includeGroupByRegex("com\\.android.*")
                includeGroupByRegex("com\\.google.*")
                includeGroupByRegex("androidx.*")
            }
        }
        mavenCentral()
        gradlePluginPortal()
    }
}

plugins {
    // :core compiles with kotlin { jvmToolchain(17) }; this lets Gradle download a JDK 17 when the machine has only
    // another JDK (Android Studio runs Gradle on its bundled JDK 21).
    id("org.gradle.toolchains.foojay-resolver-convention") version "1.0.0"
}

dependencyResolutionManagement {
    // PREFER_SETTINGS rather than FAIL_ON_PROJECT_REPOS: core/ also builds standalone and may name its own
    // repositories; here they are ignored (with a warning) instead of failing the build.
    repositoriesMode.set(RepositoriesMode.PREFER_SETTINGS)
    repositories {
        google() // AndroidX, CameraX, LiteRT (com.google.ai.edge.litert)
        mavenCentral() // ExecuTorch (org.pytorch), fbjni, SoLoader
    }
}

rootProject.name = "RapSAM"
include(":app", ":core")
