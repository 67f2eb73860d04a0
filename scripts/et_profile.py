"""Where an ExecuTorch program spends its time, per op: ETDump events of one method, summed by op name.

    python scripts/et_profile.py artifacts/rapsam_edgenext_s-512x512-executorch/model.pte --method segment \
        --out results/cpu/etdump-segment.json

The pip runtime records XNNPACK's own per-operator events inside each DELEGATE_CALL ("Fully Connected (NC,
F32) GEMM", "Convolution (NHWC, F32) IGEMM", ...) and one `native_call_<op>` event per portable kernel, so
the table shows both what runs outside the delegate and what costs most inside it. Times are medians over
--runs calls, in ms; inputs are random in the method's own shapes (an image in 0..255).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch


def profile(pte: Path, method: str, runs: int, instances: str | None = None) -> dict:
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    plain = portable_lib._load_for_executorch(str(pte))
    meta = plain.method_meta(method)
    inputs = tuple(torch.rand(tuple(meta.input_tensor_meta(i).sizes())) * 255 for i in range(meta.num_inputs()))
    times = []
    for _ in range(runs + 1):  # the first call sets up XNNPACK's weights
        start = time.perf_counter()
        plain.run_method(method, inputs)
        times.append((time.perf_counter() - start) * 1e3)
    traced = portable_lib._load_for_executorch(str(pte), enable_etdump=True)
    for _ in range(runs):
        traced.run_method(method, inputs)
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "run.etdp"
        traced.write_etdump_result_to_file(str(etdump))
        inspector = Inspector(etdump_path=str(etdump))
    ops: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    instance_rows = []
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is None:
                continue
            name = re.sub(r" #\d+$", "", event.name)  # XNNPACK numbers each instance of an operator
            ops[name][0] += 1
            ops[name][1] += event.perf_data.p50
            if instances and re.search(instances, event.name):
                instance_rows.append({"op": event.name, "ms": round(event.perf_data.p50, 3)})
    rows = [{"op": name, "calls": int(calls), "ms": round(ms, 3)}
            for name, (calls, ms) in sorted(ops.items(), key=lambda kv: -kv[1][1])]
    result = {"pte": str(pte), "method": method, "runs": runs, "p50_ms": round(statistics.median(times[1:]), 2),
              "ops": rows}
    if instances:
        result["instances"] = instance_rows  # in execution order
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pte", type=Path)
    parser.add_argument("--method", default="segment")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--instances", metavar="REGEX",
                        help="also list every call of the ops whose name matches, in execution order")
    args = parser.parse_args()
    if not args.pte.is_file():
        raise SystemExit(f"error: no .pte at {args.pte}; convert one with rapsam-convert --target executorch")
    result = profile(args.pte, args.method, args.runs, args.instances)
    print(f"{args.method}: p50 {result['p50_ms']} ms without tracing")
    for row in result["ops"][: args.top]:
        print(f"{row['ms']:9.2f} ms {row['calls']:5d}x  {row['op']}")
    for row in result.get("instances", []):
        print(f"{row['ms']:9.2f} ms  {row['op']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
