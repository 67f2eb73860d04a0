#!/usr/bin/env bash
# How rapsam/weights/rapsam_edgenext_demo.safetensors was made, on a 2-core CPU (about 45 minutes in all; the second stage ran to iteration 1250 with the lr decayed at 1050, which this reproduces):
# joint co-training on the synthetic data, then a shorter stage weighted to click prompts, then the weights in
# fp16 (the same metrics, half the size) with their evaluation beside them.
set -euo pipefail
DATA=${DATA:-data/synthetic}
RUNS=${RUNS:-runs}
python3 -m rapsam.training demo_edgenext --set synthetic="$DATA" --set output="$RUNS/demo"
python3 -m rapsam.training demo_edgenext --set synthetic="$DATA" --set output="$RUNS/demo-clicks" \
    --set init_weights="$RUNS/demo/model.safetensors" --set iterations=1250 --set lr=3e-4 \
    --set warmup_iterations=50 --set "decay_at=[0.84]" --set point_fraction=0.85 --set video_fraction=0.2
python3 - "$RUNS/demo-clicks/model.safetensors" <<'PY'
import sys
from rapsam.checkpoint import BUILTIN_WEIGHTS_DIR, build_model, save_checkpoint
model = build_model(weights=sys.argv[1])
path = save_checkpoint(model.half(), BUILTIN_WEIGHTS_DIR / f"{model.config.name}.safetensors",
                       provenance={"trained_by": "scripts/make_demo_weights.sh", "data": "rapsam.data.synthetic seed 0"})
print(f"wrote {path}")
PY
rapsam-eval --synthetic "$DATA" --out rapsam/weights/rapsam_edgenext_demo.eval.json
