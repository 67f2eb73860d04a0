"""GFLOP/s of XNNPACK's fp32 convolution and matrix kernels as each installed runtime ships them.

    python scripts/xnnpack_conv_probe.py --threads 1 2 --out results/cpu/xnnpack-kernels-probe.json

ExecuTorch and LiteRT both run convolutions in XNNPACK, but each package compiles its own copy. The probe
times the same work in both: a 3x3 conv (XNNPACK's indirect GEMM, "IGEMM") and a linear layer of the shape of
that conv's GEMM (XNNPACK's plain GEMM), each in a process of its own per thread count (ExecuTorch's thread
pool is one per process, and resizing it after a method has run is not reliable). Per thread, a kernel near
the machine's fp32 floor (`cpu_flop_floor_gflops` in the JSON, all cores) is sound; one well under the GEMM of
the same package is what to look at with a profiler. The conv's time includes the two layout transposes around
it (a few percent of it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

# name -> (module factory, input shape, FLOPs): the neck's stride-4 output conv of EdgeNeXt-S at 512x512
# (128 -> 128 channels at 128x128), and that conv's GEMM (pixels x 9 taps' channels) as one linear.
LAYERS = {
    "conv3x3": (lambda: nn.Conv2d(128, 128, 3, padding=1), (1, 128, 128, 128), 2 * 128 * 128 * 128 * 128 * 9),
    "linear": (lambda: nn.Linear(128 * 9, 128), (128 * 128, 128 * 9), 2 * 128 * 128 * 128 * 128 * 9),
}


def executorch_call(module: nn.Module, sample: torch.Tensor, threads: int):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    _unsafe_reset_threadpool(threads)
    program = torch.export.export(module, (sample,))
    buffer = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    method = Runtime.get().load_program(buffer).load_method("forward")
    return lambda: method.execute([sample])


def litert_call(module: nn.Module, sample: torch.Tensor, threads: int):
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "layer.tflite"
        litert_torch.convert(module, (sample,)).export(str(path))
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
    runner = interpreter.get_signature_runner()
    (name,) = interpreter.get_signature_list()["serving_default"]["inputs"]
    array = sample.numpy()
    return lambda: runner(**{name: array})


RUNTIMES = {"executorch": executorch_call, "litert": litert_call}


def measure(runtime: str, threads: int, runs: int) -> list[dict]:
    rows = []
    for layer, (factory, shape, flops) in LAYERS.items():
        sample = torch.randn(shape)
        call = RUNTIMES[runtime](factory().eval(), sample, threads)
        for _ in range(3):
            call()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        p50 = statistics.median(times)
        rows.append({"runtime": runtime, "layer": layer, "threads": threads, "p50_ms": round(p50 * 1e3, 2),
                     "gflops_per_s": round(flops / p50 / 1e9, 1),
                     "gflops_per_s_per_thread": round(flops / p50 / 1e9 / threads, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runtimes", nargs="+", choices=sorted(RUNTIMES), default=sorted(RUNTIMES))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("RUNTIME", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.runs)))
        return
    from rapsam.bench.machine import machine_info, versions

    rows = []
    for runtime in args.runtimes:
        for threads in args.threads:
            child = subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--child", runtime,
                                    str(threads)], capture_output=True, text=True, check=False)
            if child.returncode:
                sys.exit(f"{runtime} with {threads} threads failed: {child.stderr.strip().splitlines()[-1]}")
            for row in json.loads(child.stdout.strip().splitlines()[-1]):
                rows.append(row)
                print(f"{runtime:10s} {row['layer']:8s} {threads} threads {row['p50_ms']:8.2f} ms "
                      f"{row['gflops_per_s']:6.1f} GFLOP/s ({row['gflops_per_s_per_thread']:.1f} per thread)")
    if args.out:
        document = {"runs": args.runs, "machine": machine_info(), "versions": versions(), "rows": rows}
        args.out.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
