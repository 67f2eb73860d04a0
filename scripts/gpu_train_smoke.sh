#!/usr/bin/env bash
# The training smoke of the lent GPU (see DEVELOPERS.md), from the repo root: OUT=$OUT bash scripts/gpu_train_smoke.sh
# R18 and EdgeNeXt-S at the paper's crop (1024) and batch (2 per GPU), bf16 AMP, 50 iterations of joint
# co-training on synthetic data; each run's summary.json (it/s, images/s, peak CUDA memory, hours for the
# paper's 12 epochs on 16 such GPUs) lands in $OUT as train-<config>.json. About 3 minutes on one H100/H200.
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1
for config in smoke_r18 smoke_edgenext_s; do
    echo "== $(date +%T) $config" | tee -a "$OUT/train.log"
    timeout "${TRAIN_TIMEOUT:-100}" python3 -m rapsam.training "$config" --set output="/tmp/runs/$config" ${TRAIN_EXTRA:-} \
        2>&1 | tee -a "$OUT/train.log" | tail -n 3
    cp "/tmp/runs/$config/summary.json" "$OUT/train-$config.json" 2>/dev/null || echo "$config: no summary"
done
