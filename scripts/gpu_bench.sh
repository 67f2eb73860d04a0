#!/usr/bin/env bash
# All the GPU work of a session in one call, on the lent machine (see DEVELOPERS.md), from the repo root:
#   OUT=$OUT bash scripts/gpu_bench.sh
# Budget: under 5 minutes on one H100/H200 with the machine's torch (2.11+CUDA). Each step has its own
# timeout; the paper run saves its results after every variant, so a step cut short keeps what it measured.
# Writes to $OUT: gpu.txt, bench-cuda-paper.json, paper.txt, profile.txt, bench-cuda-profile.json, bench.log.
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONWARNINGS=ignore
bench() { python3 -m rapsam.bench "$@" 2>>"$OUT/bench.log"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} | tee "$OUT/gpu.txt"

# 1. The paper's setting (segment at 1344x800, batch 1) for each table-3 variant, and 512x512: eager
#    fp32/fp16/bf16 and torch.compile (CUDA graphs) in fp16.
timeout 230 bench --paper --device cuda --input-size 512x512 --precisions fp32,fp16,bf16 \
    --compile-precisions fp16 --warmup 10 --runs 100 --out "$OUT/bench-cuda-paper.json" | tee "$OUT/paper.txt"

# 2. Where the time goes: kernels of R18 at the paper's size, eager fp16 and compiled fp16.
timeout 60 bench --model rapsam_r18 --device cuda --input-size 800x1344 --entry-points segment \
    --runtimes torch-eager,torch-compile --precisions fp16 --warmup 10 --runs 50 \
    --profile "$OUT/profile.txt" --out "$OUT/bench-cuda-profile.json" > /dev/null

tail -n 30 "$OUT/paper.txt"
tail -n 5 "$OUT/bench.log"
