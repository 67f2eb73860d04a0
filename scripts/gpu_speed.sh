#!/usr/bin/env bash
# The GPU work of one session in one call (see DEVELOPERS.md), from the repo root: OUT=$OUT bash scripts/gpu_speed.sh
# Budget: about 7 minutes for steps 1-3 and 4 for steps 4-5 on one H100/H200 (STEPS="4 5" runs only those).
# Each step has its own timeout and saves as it goes.
#   1. rapsam-bench --paper, torch.compile fp16 with the compiled kernels replayed from rapsam-bench's own CUDA
#      graph, for the variants with the 1,000 FPS target (bench-cuda-compile-graph.json).
#   2. The bf16 training smoke (scripts/gpu_train_smoke.sh: train-smoke_*.json).
#   3. scripts/gpu_probe.py on R18: where the compiled time goes (backbone / neck / head) and which compile
#      settings cut it (probe-r18.json).
#   4. As 1, with Inductor's freezing and the pixels-last gather in the deformable convs
#      (bench-cuda-compile-graph-frozen-gather.json).
#   5. R18 with freezing alone, and the kernel table of that compiled graph (profile-r18-compile-frozen.txt).
#   6. EdgeNeXt-S and TopFormer-B, the furthest from 1,000 FPS (about 2.2 ms against R18's 1.3): compiled time
#      by part (probe-edgenext_s.json, probe-topformer_b.json) and the kernel tables of their compiled graphs
#      (profile-{edgenext_s,topformer_b}-compile.txt). About 4 minutes; run alone with STEPS=6.
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*" | tee -a "$OUT/session.log"; }

step machine
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } | tee -a "$OUT/session.log"

STEPS=${STEPS:-1 2 3 4 5}
has() { [[ " $STEPS " == *" $1 "* ]]; }

has 1 && step "1 torch.compile fp16 + own CUDA graph" && timeout 140 python3 -m rapsam.bench --device cuda --paper --models rapsam_r18,rapsam_edgenext_s,rapsam_topformer_b \
    --runtimes torch-compile --precisions fp16 --compile-mode default --warmup 10 --runs 100 \
    --out "$OUT/bench-cuda-compile-graph.json" 2>>"$OUT/bench.log" | tee -a "$OUT/session.log"

has 2 && step "2 bf16 training smoke" && TRAIN_TIMEOUT=75 bash scripts/gpu_train_smoke.sh 2>&1 | tee -a "$OUT/session.log"

has 3 && step "3 R18 probe" && timeout 290 python3 scripts/gpu_probe.py --only 1,2,6,7,8,9,10,11 --deadline 280 --out "$OUT/probe-r18.json" \
    2>>"$OUT/probe.log" | tee -a "$OUT/session.log"
has 4 && step "4 frozen, pixels-last gather" && timeout 130 python3 -m rapsam.bench --device cuda --paper \
    --models rapsam_r18,rapsam_edgenext_s,rapsam_topformer_b --runtimes torch-compile --precisions fp16 --freeze \
    --deform-sampler gather_pixels_last --warmup 10 --runs 100 --out "$OUT/bench-cuda-compile-graph-frozen-gather.json" \
    2>>"$OUT/bench.log" | tee -a "$OUT/session.log"

has 5 && step "5 R18 frozen + profile" && timeout 90 python3 -m rapsam.bench --device cuda --model rapsam_r18 \
    --input-size 800x1344 --entry-points segment --runtimes torch-compile --precisions fp16 --freeze --warmup 10 \
    --runs 100 --out "$OUT/bench-cuda-r18-frozen.json" --profile "$OUT/profile-r18-compile-frozen.txt" \
    2>>"$OUT/bench.log" | tee -a "$OUT/session.log"
if has 6; then
  for model in edgenext_s topformer_b; do
    step "6 $model probe by part" && timeout 100 python3 scripts/gpu_probe.py --model rapsam_$model --only 1,2,0 \
        --deadline 90 --out "$OUT/probe-$model.json" 2>>"$OUT/probe.log" | tee -a "$OUT/session.log"
    step "6 $model kernel table" && timeout 80 python3 -m rapsam.bench --device cuda --model rapsam_$model \
        --input-size 800x1344 --entry-points segment --runtimes torch-compile --precisions fp16 --warmup 10 \
        --runs 50 --out "$OUT/bench-cuda-$model-profiled.json" --profile "$OUT/profile-$model-compile.txt" \
        2>>"$OUT/bench.log" | tee -a "$OUT/session.log"
  done
fi
step done
