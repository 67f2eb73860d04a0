"""Where a LiteRT signature spends its time, by windows of its ops: each window of consecutive operators is cut
out as a model of its own (inputs: the tensors it reads but does not make) and timed in ai-edge-litert.

    python scripts/tflite_windows.py artifacts/rapsam_edgenext_s-512x512-tflite/model.tflite --signature panoptic \
        --window 40
    python scripts/tflite_windows.py model.tflite --signature panoptic --bounds 0,2,3,6,8   # finer, by op index

LiteRT's Python API has no op profiler (`benchmark_model` has one, built for a phone or from source). Cut
windows are an approximation: XNNPACK partitions each window on its own, and ops that read integer tensors
(gather indices) see random or zero inputs, so gathers may run faster than in the whole graph. The sum of the
windows tracks the whole signature's time; the hot windows are what to read.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def op_names(model) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    return [names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in model.operatorCodes]


def subgraph_of(model, signature: str) -> int:
    for definition in model.signatureDefs:
        key = definition.signatureKey
        if (key.decode() if isinstance(key, bytes) else key) == signature:
            return definition.subgraphIndex
    raise SystemExit(f"no signature {signature!r} in the model")


def window_model(path: Path, subgraph: int, start: int, stop: int):
    """Operators [start, stop) of one subgraph as a model of their own."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    graph = model.subgraphs[subgraph]
    ops = graph.operators[start:stop]
    made = {t for op in ops for t in op.outputs}

    def constant(t: int) -> bool:
        data = model.buffers[graph.tensors[t].buffer].data
        return data is not None and len(data) > 0

    inputs = sorted({t for op in ops for t in op.inputs if t >= 0 and t not in made and not constant(t)})
    later = {t for op in graph.operators[stop:] for t in op.inputs} | set(graph.outputs)
    outputs = sorted(t for t in made if t in later) or [ops[-1].outputs[0]]
    graph.operators = ops
    graph.inputs = np.array(inputs, dtype=np.int32)
    graph.outputs = np.array(outputs, dtype=np.int32)
    model.subgraphs = [graph]
    model.signatureDefs = []
    return model, ops


def time_model(path: Path, threads: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        value = rng.uniform(-1, 1, detail["shape"]) if detail["dtype"] == np.float32 else np.zeros(detail["shape"])
        interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
    interpreter.invoke()  # first call: XNNPACK packs its weights
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    from ai_edge_litert.tools import flatbuffer_utils

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--signature", required=True)
    parser.add_argument("--window", type=int, default=40, help="ops per window (default 40)")
    parser.add_argument("--bounds", help="comma list of op indices to cut at, instead of --window")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    model = flatbuffer_utils.read_model(str(args.model))
    subgraph = subgraph_of(model, args.signature)
    count = len(model.subgraphs[subgraph].operators)
    bounds = ([int(b) for b in args.bounds.split(",")] if args.bounds
              else [*range(0, count, args.window), count])
    names = op_names(model)
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "window.tflite"
        for start, stop in itertools.pairwise(bounds):
            window, ops = window_model(args.model, subgraph, start, stop)
            flatbuffer_utils.write_model(window, str(cut))
            ms = time_model(cut, args.threads, args.runs)
            total += ms
            kinds = Counter(names[op.opcodeIndex] for op in ops)
            print(f"[{start:5d}, {stop:5d})  {ms:8.2f} ms  " + " ".join(f"{k} x{n}" for k, n in kinds.most_common()),
                  flush=True)
    print(f"sum of windows: {total:.1f} ms ({count} ops of signature {args.signature})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
