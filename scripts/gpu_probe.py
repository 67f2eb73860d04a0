"""Where the compiled GPU time of one variant goes, and which compile settings cut it: a diagnostic for the
lent GPU (issue 5's >= 1,000 FPS target), not a benchmark of record (that is rapsam-bench).

Each probe compiles one part of the model (the backbone alone, `encode` = backbone + neck, or the whole
`segment`) with `torch.compile` in a mode without Inductor's own CUDA graphs, records the compiled kernels in
one CUDA graph (rapsam.bench.timing), times the replays with CUDA events, and checks the fp16 outputs
against eager fp32 (binary-mask IoU of the mask logits, max abs error). Rows are saved after every probe,
so a run cut short by its deadline keeps what it measured.

    python3 scripts/gpu_probe.py --out probe.json --deadline 200            # on the GPU
    python3 scripts/gpu_probe.py --device cpu --size 64x64 --model rapsam_tiny --runs 2 --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rapsam.bench.schema import latency_summary
from rapsam.bench.timing import capture_cuda_graph, time_calls, timer_for
from rapsam.checkpoint import build_model
from rapsam.export import example_inputs
from rapsam.models.deform_conv import deform_sampler
from rapsam.models.rapsam import RapSAM


class Part(nn.Module):
    """One prefix of `segment`: "backbone" (normalization + backbone), "encode" (+ neck) or "segment"."""

    def __init__(self, model: RapSAM, part: str) -> None:
        super().__init__()
        self.model, self.part = model, part

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.part == "backbone":
            x = (image - self.model.pixel_mean) / self.model.pixel_std
            return tuple(self.model.backbone(x))
        if self.part == "encode":
            return (self.model.encode(image),)
        return tuple(self.model.segment_logits(image))


@dataclass(frozen=True)
class Probe:
    name: str
    part: str = "segment"
    mode: str = "default"
    channels_last: bool = False
    sampler: str = "grid_sample"
    inductor: dict[str, Any] = field(default_factory=dict)


PROBES = (
    Probe("segment"),
    Probe("backbone only", part="backbone"),
    Probe("encode (backbone + neck)", part="encode"),
    Probe("encode, pixels-last gather", part="encode", sampler="gather_pixels_last"),
    Probe("segment, pixels-last gather", sampler="gather_pixels_last"),
    Probe("segment, pixels-last gather, frozen", sampler="gather_pixels_last", inductor={"freezing": True}),
    Probe("segment, NHWC", channels_last=True),
    Probe("segment, gather sampler", sampler="gather"),
    Probe("segment, 1x1 convs as matmuls", inductor={"conv_1x1_as_mm": True}),
    Probe("segment, frozen (BN folded)", inductor={"freezing": True}),
    Probe("segment, NHWC + gather + 1x1 as mm", channels_last=True, sampler="gather",
          inductor={"conv_1x1_as_mm": True}),
    Probe("segment, max-autotune-no-cudagraphs", mode="max-autotune-no-cudagraphs"),
)


@contextlib.contextmanager
def _inductor_config(flags: dict[str, Any]) -> Iterator[None]:
    from torch._inductor import config

    with config.patch(flags):
        yield


def _mask_agreement(reference: torch.Tensor, output: torch.Tensor) -> tuple[float, float]:
    """Binary-mask IoU (logit > 0) and max abs error of mask logits against the fp32 reference."""
    ref, out = reference.float().cpu(), output.float().cpu()
    union = ((ref > 0) | (out > 0)).sum().item()
    iou = ((ref > 0) & (out > 0)).sum().item() / union if union else 1.0
    return iou, (ref - out).abs().max().item()


def run_probe(probe: Probe, *, model_name: str, size: tuple[int, int], device: str, precision: torch.dtype,
              warmup: int, runs: int, reference: Callable[[str], tuple[torch.Tensor, ...]]) -> dict[str, Any]:
    torch._dynamo.reset()
    model = build_model(model_name, None, seed=0)
    (image,) = example_inputs(model, "segment", input_size=size)
    layout = torch.channels_last if probe.channels_last else torch.contiguous_format
    part = Part(model, probe.part).to(device, precision).eval().to(memory_format=layout)
    image = image.to(device, precision).contiguous(memory_format=layout)
    compiled = torch.compile(part, mode=probe.mode, fullgraph=True)

    def call() -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            return compiled(image)

    started = time.perf_counter()
    graph = "none (not CUDA)"
    with deform_sampler(part, probe.sampler), _inductor_config(probe.inductor):
        replay = call
        if device == "cuda":
            try:
                replay, graph = capture_cuda_graph(call), "captured"
            except Exception as exc:  # noqa: BLE001 (time the un-graphed kernels rather than lose the row)
                graph = f"none ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        outputs = replay()
    compile_s = time.perf_counter() - started
    latency = latency_summary(time_calls(replay, warmup=warmup, runs=runs, timer=timer_for(device)))
    iou, max_error = _mask_agreement(reference(probe.part)[0], outputs[0])
    return {**asdict(probe), "model": model_name, "input_size": list(size), "compile_s": round(compile_s, 1), "cuda_graph": graph,
            "latency_ms": latency, "fps": 1000.0 / latency["p50"], "first_output_iou_vs_fp32": iou,
            "first_output_max_abs_error_vs_fp32": max_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rapsam_r18")
    parser.add_argument("--size", default="800x1344", help="HxW (default: the paper's 1333x800, padded)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--only", help="comma-separated probe numbers (0-based) to run")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds; no probe starts after 85%% of it")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    size = tuple(int(v) for v in args.size.split("x"))
    precision = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    references: dict[str, tuple[torch.Tensor, ...]] = {}

    def reference(part: str) -> tuple[torch.Tensor, ...]:
        if part not in references:
            model = build_model(args.model, None, seed=0).to(args.device).eval()
            (image,) = example_inputs(model, "segment", input_size=size)
            with torch.inference_mode():
                references[part] = tuple(t.cpu() for t in Part(model, part)(image.to(args.device)))
        return references[part]

    probes = [PROBES[int(i)] for i in args.only.split(",")] if args.only else list(PROBES)
    machine = {"python": platform.python_version(), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    rows: list[dict[str, Any]] = []
    for probe in probes:
        if time.monotonic() - started > 0.85 * args.deadline:
            rows.append({**asdict(probe), "skipped": "deadline"})
            print(f"{probe.name}: skipped (deadline)", flush=True)
            continue
        try:
            row = run_probe(probe, model_name=args.model, size=size, device=args.device, precision=precision,
                            warmup=args.warmup, runs=args.runs, reference=reference)
            print(f"{probe.name:<44} {row['fps']:8.1f} FPS  p50 {row['latency_ms']['p50']:.3f} ms  "
                  f"compile {row['compile_s']:.0f} s  mask IoU vs fp32 {row['first_output_iou_vs_fp32']:.4f}",
                  flush=True)
        except Exception as exc:  # noqa: BLE001 (a probe that fails is a row with its reason)
            row = {**asdict(probe), "failed": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            print(f"{probe.name}: failed: {row['failed']}", flush=True)
        rows.append(row)
        args.out.write_text(json.dumps({"machine": machine, "precision": args.precision, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
