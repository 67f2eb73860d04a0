#!/usr/bin/env bash
# Compiles the pure-Kotlin core and runs its JUnit4 tests on the JVM, without Gradle:
#
#   sample_apps/android/core/test.sh
#
# Environment (all optional):
#   KOTLINC          kotlinc to use; else `kotlinc` on PATH; else the npm package kotlin-compiler, installed into .tools/
#   JUNIT_JAR        JUnit 4 jar(s), ':'-separated, hamcrest-core included; else /usr/share/java (apt: junit4)
#   RAPSAM_VECTORS   test vectors folder; else written with `rapsam-vectors --out build/vectors` (default model)
#   RAPSAM_MANIFEST  manifest.json of the vectors' model; else `rapsam-convert --target onnx --no-parity` of the
#                    default model into build/artifacts
#   RAPSAM_BENCH_GOLDEN  the benchmark lines' golden sample; else the repository's tests/data/bench/app_bench_lines.txt
# Build outputs go to build/ and .tools/ beside this script.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$HERE/build"
KOTLIN_COMPILER_VERSION="2.4.20"
mkdir -p "$BUILD"
started=$SECONDS

die() { echo "test.sh: $*" >&2; exit 1; }

# --- kotlinc
if [[ -n "${KOTLINC:-}" ]]; then
  kotlinc="$KOTLINC"
elif command -v kotlinc >/dev/null 2>&1; then
  kotlinc="$(command -v kotlinc)"
else
  kotlinc="$HERE/.tools/node_modules/kotlin-compiler/bin/kotlinc"
  if [[ ! -x "$kotlinc" ]]; then
    command -v npm >/dev/null 2>&1 || die "no kotlinc: set KOTLINC, put kotlinc on PATH, or install npm to fetch kotlin-compiler"
    echo "[test.sh] installing kotlin-compiler@$KOTLIN_COMPILER_VERSION into .tools/"
    npm install --prefix "$HERE/.tools" --no-save --no-audit --no-fund "kotlin-compiler@$KOTLIN_COMPILER_VERSION" >/dev/null
  fi
fi
[[ -x "$kotlinc" ]] || die "kotlinc $kotlinc is not executable"
# The stdlib comes from the compiler's own lib/ (bin/kotlinc -> ../lib), resolving links such as /usr/bin/kotlinc.
KOTLIN_LIB="$(cd "$(dirname "$(readlink -f "$kotlinc")")/../lib" && pwd)"
[[ -f "$KOTLIN_LIB/kotlin-stdlib.jar" ]] || die "no kotlin-stdlib.jar in $KOTLIN_LIB (beside $kotlinc)"

# --- JUnit 4
if [[ -n "${JUNIT_JAR:-}" ]]; then
  junit="$JUNIT_JAR"
else
  if [[ ! -f /usr/share/java/junit4.jar ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "[test.sh] installing junit4 with apt-get"
      apt-get install -y -q junit4 >/dev/null
    else
      die "no JUnit 4: run 'sudo apt-get install junit4' or set JUNIT_JAR=/path/junit-4.13.2.jar:/path/hamcrest-core-1.3.jar"
    fi
  fi
  junit="/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar"
fi

# --- test data: the Python reference's vectors and the manifest of the same (default demo) model
if [[ -z "${RAPSAM_VECTORS:-}" ]]; then
  RAPSAM_VECTORS="$BUILD/vectors"
  if [[ ! -f "$RAPSAM_VECTORS/vectors.json" ]]; then
    command -v rapsam-vectors >/dev/null 2>&1 || die "set RAPSAM_VECTORS, or install the rapsam package (pip install -e .) for rapsam-vectors"
    echo "[test.sh] writing test vectors to build/vectors"
    rapsam-vectors --out "$RAPSAM_VECTORS"
  fi
fi
if [[ -z "${RAPSAM_MANIFEST:-}" ]]; then
  RAPSAM_MANIFEST="$(find "$BUILD/artifacts" -maxdepth 2 -name manifest.json 2>/dev/null | sort | head -n 1 || true)"
  if [[ -z "$RAPSAM_MANIFEST" ]]; then
    command -v rapsam-convert >/dev/null 2>&1 || die "set RAPSAM_MANIFEST, or install the rapsam package for rapsam-convert"
    echo "[test.sh] converting the default model to build/artifacts for its manifest"
    rapsam-convert --target onnx --no-parity --out "$BUILD/artifacts"
    RAPSAM_MANIFEST="$(find "$BUILD/artifacts" -maxdepth 2 -name manifest.json | sort | head -n 1)"
    [[ -n "$RAPSAM_MANIFEST" ]] || die "rapsam-convert wrote no manifest.json under build/artifacts"
  fi
fi
RAPSAM_BENCH_GOLDEN="${RAPSAM_BENCH_GOLDEN:-$(cd "$HERE/../../.." && pwd)/tests/data/bench/app_bench_lines.txt}"
export RAPSAM_VECTORS RAPSAM_MANIFEST RAPSAM_BENCH_GOLDEN
echo "[test.sh] vectors $RAPSAM_VECTORS"
echo "[test.sh] manifest $RAPSAM_MANIFEST"

# --- compile: the main sources into a jar, the tests against it
rm -rf "$BUILD/test-classes"
echo "[test.sh] compiling with $kotlinc"
"$kotlinc" -jvm-target 17 -nowarn "$HERE/src/main/kotlin" -d "$BUILD/rapsam-core.jar"
# -Xfriend-paths: the tests see the core's internal declarations, as Gradle's test source set does.
"$kotlinc" -jvm-target 17 -nowarn -Xfriend-paths="$BUILD/rapsam-core.jar" -cp "$BUILD/rapsam-core.jar:$junit" \
  "$HERE/src/test/kotlin" -d "$BUILD/test-classes"

# --- run
tests=()
while IFS= read -r file; do
  tests+=("ai.rapsam.core.$(basename "$file" .class)")
done < <(find "$BUILD/test-classes/ai/rapsam/core" -maxdepth 1 -name '*Test.class' | sort)
[[ ${#tests[@]} -gt 0 ]] || die "no test classes compiled"
echo "[test.sh] running ${tests[*]}"
status=0
java -cp "$BUILD/test-classes:$BUILD/rapsam-core.jar:$KOTLIN_LIB/kotlin-stdlib.jar:$junit" \
  org.junit.runner.JUnitCore "${tests[@]}" || status=$?
echo "[test.sh] $([[ $status -eq 0 ]] && echo passed || echo FAILED) in $((SECONDS - started)) s"
exit "$status"
