#!/usr/bin/env bash
# Retrain the built-in demo weights (rapsam_edgenext_demo) on one lent GPU in about 7 minutes, in three stages
# of the registered config demo_edgenext_gpu (rapsam/training/config.py):
#   A  joint co-training at a constant rate, which also measures the iteration speed;
#   B  more joint co-training from A's weights, the rate decayed twice near its end;
#   C  a stage weighted to click prompts (85% clicks, 20% video batches) from B's weights, decayed once.
# B's and C's iterations are set from A's measured speed so that the whole run ends within TOTAL_S seconds of
# its start; every stage also runs under `timeout`, checkpoints every 100 iterations and, when cut short, its
# last checkpoint becomes its weights, so some weights always come back.
#
#   OUT=$OUT bash scripts/gpu_demo_train.sh        # on the GPU machine, from the repo root
#
# $OUT receives (at most 8 files): model.safetensors (the newest finished stage's weights, fp32),
# stage_b.safetensors (joint-only weights, for comparison), summary.json (speed, iterations, seconds, losses of
# every stage), train.log (everything printed), log.jsonl (every stage's logged losses, with a "stage" key).
#
# Knobs (environment): TOTAL_S (460: seconds for the whole script), ITERS_A (400), BATCH (32), WORKERS
# (min(12, cores - 2)), IMAGES (1000 train scenes) / VIDEOS (200), AMP (none|bf16), CHECKPOINT_EVERY (100), DATA (data/synthetic-gpu),
# RUNS (a scratch folder for checkpoints, /tmp/rapsam-gpu-runs), SPLIT_B (0.55: B's share of B + C), MAX_ITERS
# (no cap), INIT (weights stage A starts from, e.g. the built-in rapsam/weights/rapsam_edgenext_demo.safetensors;
# unset: from scratch). A CPU rehearsal of the whole pipeline in about 3 minutes:
#   OUT=/tmp/gpu-out TOTAL_S=150 ITERS_A=6 BATCH=2 WORKERS=1 IMAGES=12 VIDEOS=4 DATA=/tmp/syn-tiny MAX_ITERS=20 \
#       bash scripts/gpu_demo_train.sh
#
# Afterwards, here (CPU): bash scripts/gpu_demo_finish.sh PATH/TO/model.safetensors evaluates the weights on the
# held-out split that the built-in weights were judged on and, only if they are better, installs them (fp16).
set -euo pipefail
: "${OUT:?set OUT to the folder that should receive the weights and logs}"
START=$(date +%s)
TOTAL_S=${TOTAL_S:-460}
ITERS_A=${ITERS_A:-400}
BATCH=${BATCH:-32}
CORES=$(nproc)
WORKERS=${WORKERS:-$(( CORES > 14 ? 12 : (CORES > 3 ? CORES - 2 : 1) ))}
IMAGES=${IMAGES:-1000}
VIDEOS=${VIDEOS:-200}
AMP=${AMP:-none}
DATA=${DATA:-data/synthetic-gpu}
RUNS=${RUNS:-/tmp/rapsam-gpu-runs}
SPLIT_B=${SPLIT_B:-0.55}
MAX_ITERS=${MAX_ITERS:-0}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-100}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
exec > >(tee -a "$OUT/train.log") 2>&1

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( TOTAL_S - $(elapsed) )); }

# Everything training imports, checked before any time is spent; safetensors writes the weights.
python3 - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "numpy", "scipy", "PIL", "safetensors", "tomllib") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_demo_train.sh: missing Python packages {missing}: install them (safetensors writes the weights)")
import torch
import rapsam.training.trainer  # noqa: F401  (the whole training import chain)
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      f"{' (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else ''}")
PY
echo "cores $CORES, workers $WORKERS, batch $BATCH, amp $AMP, budget ${TOTAL_S}s"

# The scenes: train only on new ones; val is the first 50 held-out scenes, the same as data/synthetic's.
if [ ! -d "$DATA/coco" ]; then
    python3 -m rapsam.data.synthetic "$DATA" --num-train "$IMAGES" --num-val 50 --num-videos-train "$VIDEOS" \
        --num-videos-val 10 --seed 0 > /dev/null
fi
echo "[$(elapsed)s] data ready in $DATA"

COMMON=(--set synthetic="$DATA" --set batch_size="$BATCH" --set num_workers="$WORKERS" --set amp="$AMP"
        --set checkpoint_every="$CHECKPOINT_EVERY")

# stage NAME ITERATIONS TIMEOUT_S [--set ...]: one training run; when it is cut short or fails, its last
# checkpoint (if any) becomes its model.safetensors. Returns 0 when the stage left weights.
stage() {
    local name=$1 iterations=$2 limit=$3
    shift 3
    local dir="$RUNS/$name" rc=0
    rm -rf "$dir"
    echo "[$(elapsed)s] stage $name: $iterations iterations, at most ${limit}s"
    timeout --signal=TERM --kill-after=10 "$limit" python3 -m rapsam.training demo_edgenext_gpu "${COMMON[@]}" \
        --set output="$dir" --set iterations="$iterations" --set seed="$SEED" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "[$(elapsed)s] stage $name ended with status $rc (124: timeout); using its last checkpoint"
        [ -f "$dir/last.pt" ] || { echo "stage $name wrote no checkpoint"; return 1; }
        python3 - "$dir" <<'PY' || return 1
import json, sys
from pathlib import Path
import torch
from rapsam.checkpoint import save_checkpoint
from rapsam.training.config import TrainConfig
from rapsam.training.trainer import build_training_model
run = Path(sys.argv[1])
values = json.loads((run / "config.json").read_text())
config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
model = build_training_model(config)
model.load_state_dict(state["model"])
save_checkpoint(model, run / "model.safetensors", provenance={
    "trained_by": "scripts/gpu_demo_train.sh", "config": config.name, "iterations": str(state["iteration"])})
(run / "summary.json").write_text(json.dumps({"iterations": state["iteration"], "cut_short": True}) + "\n")
print(f"{run}/model.safetensors from last.pt at iteration {state['iteration']}")
PY
    fi
    [ -f "$dir/model.safetensors" ] || return 1
    cp "$dir/model.safetensors" "$OUT/model.safetensors.tmp" && mv "$OUT/model.safetensors.tmp" "$OUT/model.safetensors"
    python3 - "$dir" "$name" "$OUT" <<'PY'
import json, sys
from pathlib import Path
run, name, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
summary_path = out / "summary.json"
summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"stages": {}}
stage = json.loads((run / "summary.json").read_text())
stage["config"] = json.loads((run / "config.json").read_text())
records = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").is_file() else []
stage["last_log"] = records[-1] if records else None
summary["stages"][name] = stage
summary_path.write_text(json.dumps(summary, indent=2) + "\n")
with (out / "log.jsonl").open("a") as f:
    for r in records:
        f.write(json.dumps({"stage": name, **r}) + "\n")
PY
}

# A: constant rate after the warm-up; its speed sets B's and C's lengths.
SEED=1
A_START=$(date +%s)
stage a "$ITERS_A" $(( $(left) < 150 ? $(left) : 150 )) --set "decay_at=[]" --set warmup_iterations=100 \
    ${INIT:+--set init_weights="$INIT"}
A_WALL=$(( $(date +%s) - A_START ))
read -r ITERS_B ITERS_C LIMIT_B LIMIT_C < <(python3 - "$RUNS/a/summary.json" "$ITERS_A" "$A_WALL" "$(left)" \
    "$SPLIT_B" "$MAX_ITERS" <<'PY'
import json, sys
summary, iters_a, wall, left, split_b, max_iters = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
    float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
done = json.load(open(summary))  # a stage cut short has only its checkpoint's iteration count
speed = done.get("iterations_per_s") or max(done.get("iterations", 1), 1) / max(wall, 1.0)
overhead = max(wall - iters_a / speed, 5.0)  # start-up: imports, CUDA, loader workers, the final save
train_s = max(left - 2 * overhead - 25, 10)  # 25 s spare for the copies and the speed's noise
total = max(int(train_s * speed * 0.93), 4)
if max_iters:
    total = min(total, max_iters)
b = max(int(total * split_b), 2)
c = max(total - b, 2)
limit_b = int(overhead + b / speed * 1.15 + 10)
limit_c = int(left - 8 - limit_b)
if train_s <= 10:  # no time for B and C: A's weights are the result
    b = c = 0
print(b, c, limit_b, max(limit_c, 5))
print(f"speed {speed:.2f} it/s, start-up {overhead:.0f}s, {left:.0f}s left -> B {b} + C {c} iterations", file=sys.stderr)
PY
)
echo "[$(elapsed)s] plan: B $ITERS_B iterations (<= ${LIMIT_B}s), C $ITERS_C iterations (<= ${LIMIT_C}s)"

if [ "$ITERS_B" -eq 0 ]; then
    echo "[$(elapsed)s] no time left for stages B and C: $OUT/model.safetensors holds stage a's"
    exit 0
fi
SEED=2
stage b "$ITERS_B" "$LIMIT_B" --set init_weights="$RUNS/a/model.safetensors" --set warmup_iterations=20 \
    --set "decay_at=[0.7, 0.9]"
cp "$RUNS/b/model.safetensors" "$OUT/stage_b.safetensors"

SEED=3
LIMIT_C=$(( $(left) - 8 ))
stage c "$ITERS_C" $(( LIMIT_C > 5 ? LIMIT_C : 5 )) --set init_weights="$RUNS/b/model.safetensors" --set lr=3e-4 \
    --set warmup_iterations=20 --set "decay_at=[0.8]" --set point_fraction=0.85 --set video_fraction=0.2 || \
    echo "stage c left no weights; $OUT/model.safetensors holds stage b's"
echo "[$(elapsed)s] done: $OUT/model.safetensors; next, on the CPU machine: bash scripts/gpu_demo_finish.sh <it>"
ls -la "$OUT"
