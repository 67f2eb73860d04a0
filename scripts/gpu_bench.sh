#!/usr/bin/env bash
# All the GPU work of a session in one call, on the lent machine (see DEVELOPERS.md), from the repo root:
#   OUT=$OUT bash scripts/gpu_bench.sh
# Budget: at most 7.5 minutes on one H100/H200 with the machine's torch (2.11+CUDA), most of it torch.compile.
# Each step has its own timeout and the paper runs save after every variant, so a step cut short keeps what
# it measured. Writes to $OUT: tables.txt (what the steps print), bench.log (progress), profile.txt, and
# bench-cuda-{paper,compile,nhwc}.json. DEVICE=cpu BENCH_EXTRA="--runs 1 --warmup 0" checks the plumbing here.
set -uo pipefail
OUT=${OUT:-results/gpu}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1
# bench SECONDS ARGS...: rapsam-bench under a timeout, its tables appended to tables.txt.
bench() {
    local seconds=$1; shift
    # shellcheck disable=SC2086 (BENCH_EXTRA is a word list)
    timeout "$seconds" python3 -m rapsam.bench --device "$DEVICE" --warmup 10 --runs 100 "$@" ${BENCH_EXTRA:-} \
        2>>"$OUT/bench.log" | tee -a "$OUT/tables.txt"
}
step() { echo "== $(date +%T) $*" | tee -a "$OUT/bench.log" "$OUT/tables.txt"; }

step machine
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
} | tee -a "$OUT/tables.txt"

# 1. Every paper variant at its speed setting (1344x800) and at 512x512: eager fp32/fp16/bf16, and the same
#    eager kernels replayed from one CUDA graph (launch overhead gone, no compiler).
step "1 eager and CUDA graph, fp32/fp16/bf16"
bench 150 --paper --models rapsam_r18,rapsam_edgenext_s,rapsam_topformer_b,rapsam_r50 --input-size 512x512 \
    --runtimes torch-eager,torch-cudagraph --precisions fp32,fp16,bf16 --out "$OUT/bench-cuda-paper.json"

# 2. torch.compile (reduce-overhead: CUDA graphs) fp16 at 1344x800, the variants with a speed target first.
step "2 torch.compile fp16"
bench 210 --paper --models rapsam_r18,rapsam_edgenext_s,rapsam_topformer_b,rapsam_r50 \
    --runtimes torch-compile --compile-mode reduce-overhead --precisions fp16 --out "$OUT/bench-cuda-compile.json"

# 3. Where the time goes: R18's kernels at the paper's size, fp16, eager and from the CUDA graph.
step "3 profile"
bench 45 --model rapsam_r18 --input-size 800x1344 --entry-points segment \
    --runtimes torch-eager,torch-cudagraph --precisions fp16 --runs 30 --profile "$OUT/profile.txt" \
    --out /tmp/bench-cuda-profile.json > /dev/null

# 4. NHWC (channels_last) fp16, eager and CUDA graph: what the layout is worth to cuDNN.
step "4 channels_last fp16"
bench 45 --paper --models rapsam_r18,rapsam_edgenext_s,rapsam_topformer_b --runtimes torch-eager,torch-cudagraph \
    --precisions fp16 --channels-last \
    --out "$OUT/bench-cuda-nhwc.json" > /dev/null

step done
tail -n 5 "$OUT/bench.log"
