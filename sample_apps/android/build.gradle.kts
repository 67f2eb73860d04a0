// Plugin versions live in gradle/libs.versions.toml. Declaring kotlin.jvm here (not applied) puts the Kotlin
// Gradle plugin on the build classpath once, so :core applies plain kotlin("jvm") with no version of its own.
plugins {
    alias(libs.plugins.android.application) apply false
    alias(libs.plugins.kotlin.android) apply false
    alias(libs.plugins.kotlin.jvm) apply false
}
