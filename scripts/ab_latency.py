"""Latency of several converted artifacts of one entry point, called round-robin in one process.

rapsam-bench times each runtime in its own process, one after another; on a VM whose speed drifts by 10-20%
over minutes (this project's CI host), two of its rows can differ by that much for no reason of their own.
Called in turns, every artifact sees the same drift, so their ratios hold (int8 against fp32, before against
after a converter change):

    python scripts/ab_latency.py --entry segment --rounds 20 --out results/cpu/int8-ab-edgenext_s-512.json \
        onnxruntime=bench-artifacts/fp32/rapsam_edgenext_s-512x512-onnx \
        onnxruntime=bench-artifacts/int8-static/rapsam_edgenext_s-512x512-onnx-int8-static

Each argument is RUNTIME=FOLDER (onnxruntime, executorch or litert); the first folder of each runtime is the
baseline of its ratios. The inputs are the reference model's example inputs, as rapsam-bench's. A pause
between calls lets the last runtime's worker threads stop spinning (ONNX Runtime's spin for a while after a
call, and take the cores from whichever call comes next).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rapsam.bench.desktop import ARTIFACT_TARGETS, MeasureSpec, artifact_call
from rapsam.bench.machine import machine_info
from rapsam.checkpoint import build_model
from rapsam.convert.manifest import ManifestError, precision_label, read_manifest
from rapsam.export import example_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", metavar="RUNTIME=FOLDER")
    parser.add_argument("--entry", default="segment")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between calls (default 0.2)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if bad := [a for a in args.artifacts if "=" not in a or a.split("=", 1)[0] not in ARTIFACT_TARGETS]:
        parser.error(f"{bad[0]!r}: give RUNTIME=FOLDER, RUNTIME one of {', '.join(ARTIFACT_TARGETS)}")
    pairs = [tuple(argument.split("=", 1)) for argument in args.artifacts]
    try:
        manifests = [read_manifest(folder) for _, folder in pairs]
    except ManifestError as error:
        parser.error(str(error))
    (model_name,), (input_size,) = {m["model"]["name"] for m in manifests}, {tuple(m["input_size"]) for m in manifests}
    inputs = example_inputs(build_model(model_name).eval(), args.entry, input_size=input_size)
    calls = []
    for runtime, folder in pairs:
        spec = MeasureSpec(runtime=runtime, device="cpu", model=model_name, entry_point=args.entry,
                           input_size=input_size, threads=args.threads, artifact=folder)
        call, _ = artifact_call(spec, None, inputs)
        for _ in range(args.warmup):
            call()
        calls.append(call)
    samples: list[list[float]] = [[] for _ in calls]
    for round_ in range(args.rounds):
        for call, times in zip(calls, samples):
            time.sleep(args.pause)
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
        print(f"round {round_ + 1}/{args.rounds}", end="\r", file=sys.stderr, flush=True)

    rows, baselines = [], {}
    for (runtime, folder), manifest, times in zip(pairs, manifests, samples):
        p50 = statistics.median(times)
        baseline = baselines.setdefault(runtime, p50)
        scheme = precision_label(manifest)
        rows.append({"runtime": runtime, "folder": folder, "precision": scheme, "p50_ms": round(p50, 1),
                     "min_ms": round(min(times), 1), "speedup_vs_first": round(baseline / p50, 2), "ms": times})
        print(f"{runtime:12s} {scheme:13s} p50 {p50:7.1f} ms  min {min(times):7.1f} ms  "
              f"x{baseline / p50:.2f} against the first {runtime} artifact")
    if args.out:
        document = {"entry_point": args.entry, "input_size": list(input_size), "threads": args.threads,
                    "warmup": args.warmup, "rounds": args.rounds, "pause_s": args.pause, "model": model_name,
                    "machine": machine_info(), "rows": rows}
        args.out.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
