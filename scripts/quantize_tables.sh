#!/usr/bin/env bash
# The README's quantization tables, on this machine's CPU (2 cores): ~40 minutes.
# 1. The demo model (built-in weights, 128x128): fp32 and int8 artifacts of every target, each int8 one scored by
#    the accuracy gate on held-out synthetic scenes; latency from rapsam-bench; one table.
# 2. EdgeNeXt-S at 512x512 (the issue's speed target): fp32 vs int8 latency and size per runtime.
# PARTS=demo or PARTS=speed runs one of them.
set -euxo pipefail
PARTS=${PARTS:-demo,speed}
OUT=${OUT:-artifacts/quantized}
RESULTS=${RESULTS:-results/cpu}
DEMO_WEIGHTS=rapsam/weights/rapsam_edgenext_demo.safetensors
mkdir -p "$OUT" "$RESULTS"
DEMO="$OUT/rapsam_edgenext_demo-128x128"

# A rerun keeps the folders an earlier run finished.
once() { local folder=$1; shift; [ -f "$folder/manifest.json" ] || "$@"; }

if [[ $PARTS == *demo* ]]; then
for target in onnx executorch tflite; do
    once "$DEMO-$target" rapsam-convert --target "$target" --out "$OUT"
    # The decoder stays float: int8 everywhere kept 91% of PQ (ONNX), and 9 of the 10 layers the sensitivity pass
    # ranks worst (--auto-keep) are its kernel updates; the FLOPs are in the backbone and neck.
    once "$DEMO-$target-int8-static" rapsam-convert --target "$target" --quantize int8-static --calib synthetic \
        --keep-float panoptic_head --out "$OUT"
done
once "$DEMO-coreml" rapsam-convert --target coreml --out "$OUT"
for scheme in int8-weights palettize-6 palettize-4; do
    once "$DEMO-coreml-$scheme" rapsam-convert --target coreml --quantize "$scheme" --out "$OUT"
done
# The latency columns time the table's own artifacts (decoder kept float): rapsam-bench reuses a folder of its
# tree whose manifest matches the request instead of converting one.
rm -rf "$OUT/bench" && mkdir -p "$OUT/bench/fp32" "$OUT/bench/int8-static"
for target in onnx executorch tflite; do
    ln -s "$(realpath "$DEMO-$target")" "$OUT/bench/fp32/"
    ln -s "$(realpath "$DEMO-$target-int8-static")" "$OUT/bench/int8-static/"
done
rapsam-bench --model rapsam_edgenext_demo --weights "$DEMO_WEIGHTS" --input-size 128x128 \
    --runtimes onnxruntime,executorch,litert --precisions fp32,int8-static --entry-points segment,prompt \
    --artifacts "$OUT/bench" --out "$RESULTS/quantized-demo-bench.json"
rapsam-quantize report "$OUT"/rapsam_edgenext_demo-* --bench "$RESULTS/quantized-demo-bench.json" \
    --out "$RESULTS/quantization-demo"
fi

[[ $PARTS == *speed* ]] || exit 0

rapsam-bench --model rapsam_edgenext_s --input-size 512x512 --runtimes onnxruntime,executorch,litert \
    --precisions fp32,int8-static,int8-dynamic --entry-points segment --warmup 2 --runs 10 \
    --artifacts bench-artifacts --out "$RESULTS/int8-edgenext_s-512.json"
rapsam-quantize report bench-artifacts/*/rapsam_edgenext_s-512x512-* --bench "$RESULTS/int8-edgenext_s-512.json" \
    --out "$RESULTS/quantization-edgenext_s-512"
# The same files called in turns in one process: their ratio holds on a host whose speed drifts between runs.
M=bench-artifacts; S=rapsam_edgenext_s-512x512
python3 scripts/ab_latency.py --entry segment --rounds 15 --out "$RESULTS/int8-ab-edgenext_s-512.json" \
    onnxruntime=$M/fp32/$S-onnx onnxruntime=$M/int8-static/$S-onnx-int8-static \
    executorch=$M/fp32/$S-executorch executorch=$M/int8-static/$S-executorch-int8-static \
    litert=$M/fp32/$S-tflite litert=$M/int8-static/$S-tflite-int8-static
