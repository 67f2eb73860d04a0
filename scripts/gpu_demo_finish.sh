#!/usr/bin/env bash
# After scripts/gpu_demo_train.sh, on the CPU machine: evaluate the GPU-trained weights on the held-out split the
# built-in weights were judged on (data/synthetic, written like make_demo_weights.sh's if missing) and, only
# when they are better (click mIoU up, PQ and box mIoU within TOLERANCE of the built-in ones), install them in
# fp16 with their evaluation, as make_demo_weights.sh does.
#
#   bash scripts/gpu_demo_finish.sh PATH/TO/model.safetensors [--install]
#
# Without --install it only evaluates and compares (eval JSON beside the weights). TRAINED_BY overrides the
# provenance line written into the weights (say which INIT the GPU run started from).
set -euo pipefail
WEIGHTS=${1:?give the weights gpu_demo_train.sh wrote (its \$OUT/model.safetensors)}
INSTALL=${2:-}
DATA=${DATA:-data/synthetic}
TOLERANCE=${TOLERANCE:-0.02}
BUILTIN=rapsam/weights/rapsam_edgenext_demo
if [ ! -d "$DATA/coco" ]; then  # the demo_edgenext config's data: 200 train / 50 val scenes, seed 0
    python3 -m rapsam.data.synthetic "$DATA" --num-train 200 --num-val 50 --num-videos-train 40 --num-videos-val 10
fi
EVAL="${WEIGHTS%.safetensors}.eval.json"
rapsam-eval --weights "$WEIGHTS" --synthetic "$DATA" --out "$EVAL"
python3 - "$EVAL" "$BUILTIN.eval.json" "$TOLERANCE" <<'PY'
import json, sys
new, old, tol = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
def metrics(r):
    kinds = r["prompt"]["per_kind"]
    return {"pq": r["panoptic"]["All"]["pq"], "click": kinds["point"]["miou"], "box": kinds["box"]["miou"],
            "vis_ap": r["video"]["AP"]}
n, o = metrics(new), metrics(old)
for k in n:
    print(f"{k:7s} built-in {o[k]:.3f}  new {n[k]:.3f}")
better = n["click"] > o["click"] and n["pq"] >= o["pq"] - tol and n["box"] >= o["box"] - tol
print("better: install with --install" if better else "not better: keep the built-in weights")
sys.exit(0 if better else 3)
PY
if [ "$INSTALL" = "--install" ]; then
    python3 - "$WEIGHTS" "${TRAINED_BY:-scripts/gpu_demo_train.sh (one GPU)}" <<'PY'
import sys
from rapsam.checkpoint import BUILTIN_WEIGHTS_DIR, build_model, save_checkpoint
model = build_model(weights=sys.argv[1])
path = save_checkpoint(model.half(), BUILTIN_WEIGHTS_DIR / f"{model.config.name}.safetensors",
                       provenance={"trained_by": sys.argv[2],
                                   "data": "rapsam.data.synthetic seed 0 (1000 train scenes)"})
print(f"wrote {path}")
PY
    # The fp16 weights judged again, as make_demo_weights.sh does.
    rapsam-eval --synthetic "$DATA" --out "$BUILTIN.eval.json"
fi
