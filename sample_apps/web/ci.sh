#!/usr/bin/env bash
# The web app's tests, as CI runs them (the README's test command calls this after pytest): Chromium when it is
# missing (Debian's package), the npm packages of the lock file, the default model converted to ONNX with its
# test vectors, the JS pipeline's unit tests against those vectors, the build, and the app in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        apt-get install -y -q chromium > /dev/null || { apt-get update -q && apt-get install -y -q chromium > /dev/null; }
    else
        echo "error: Chromium not found: sudo apt-get install chromium (or set CHROMIUM=/path/to/chrome)" >&2
        exit 2
    fi
fi
npm ci --no-audit --no-fund --loglevel=error
rm -rf build/artifacts
rapsam-convert --target onnx --vectors --out build/artifacts
npm run model -- build/artifacts/rapsam_edgenext_demo-128x128-onnx
RAPSAM_VECTORS="$PWD/public/model/vectors" EXPECT_EP=wasm npm test
# The WebGPU path on SwiftShader's software GPU: slow (about a second a prompt), the same checks.
EXPECT_EP=webgpu WAIT_MS=300000 CHROMIUM_ARGS="--enable-unsafe-webgpu --enable-features=Vulkan --use-webgpu-adapter=swiftshader" \
    npm run test:chromium
