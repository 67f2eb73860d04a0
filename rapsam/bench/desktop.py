"""The desktop harness: the same entry point on the same inputs through every runtime on this machine.

Runtimes: the reference model in PyTorch eager and `torch.compile`, and the artifacts of `rapsam-convert`
in ONNX Runtime, ExecuTorch (XNNPACK) and LiteRT (XNNPACK). On a GPU: eager in fp32/fp16/bf16, the eager
kernels replayed from one CUDA graph ("torch-cudagraph": no launch overhead, no compiler), `torch.compile`
(CUDA graphs with mode "reduce-overhead"), ONNX Runtime's CUDA/TensorRT providers when installed. Each measurement is `measure(spec)`: load, first call, warm-up, timed calls. On the CPU each
runs in its own process by default (`python -m rapsam.bench.worker`), so that its peak RSS is its own and a
runtime that crashes costs one row, not the run.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from rapsam.bench.machine import machine_info, peak_rss_mb, versions
from rapsam.bench.schema import Measurement, Results, latency_summary, skipped
from rapsam.bench.timing import BenchError, capture_cuda_graph, resolve_device, time_calls, timer_for
from rapsam.models.deform_conv import set_deform_sampler

TORCH_RUNTIMES = ("torch-eager", "torch-cudagraph", "torch-compile")
# torch.compile modes that replay their kernels from CUDA graphs of their own (cudagraph trees).
_SELF_GRAPHING_MODES = ("reduce-overhead", "max-autotune")
# Artifact runtime -> the rapsam-convert target it runs.
ARTIFACT_TARGETS = {"onnxruntime": "onnx", "executorch": "executorch", "litert": "tflite"}
RUNTIMES = (*TORCH_RUNTIMES, *ARTIFACT_TARGETS)
DEFAULT_CPU_RUNTIMES = ("torch-eager", "onnxruntime", "executorch", "litert")
DEFAULT_CUDA_RUNTIMES = TORCH_RUNTIMES
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Quantization schemes every artifact runtime's target has (rapsam.quantize): benchmarked as "precisions".
QUANTIZED = ("int8-static", "int8-dynamic")
CALIBRATION_IMAGES = 16  # speed does not depend on how good the ranges are: a short calibration will do


@dataclass(frozen=True)
class MeasureSpec:
    """One measurement, all in plain values so that it crosses to a worker process as JSON."""

    runtime: str
    device: str
    model: str
    entry_point: str
    input_size: tuple[int, int]
    precision: str = "fp32"
    weights: str | None = None
    seed: int = 0
    num_prompts: int = 4
    threads: int | None = None
    warmup: int = 5
    runs: int = 30
    artifact: str | None = None  # the converted folder, for artifact runtimes
    compile_mode: str | None = None
    channels_last: bool = False  # PyTorch runtimes: NHWC activations and conv weights
    freeze: bool = False  # torch-compile: Inductor's freezing (weights as constants, BatchNorm folded)
    deform_sampler: str | None = None  # PyTorch runtimes: how the neck's deformable convs sample (deform_conv.py)

    @property
    def own_cuda_graph(self) -> bool:
        """Whether rapsam-bench records the kernels in a CUDA graph itself: torch-cudagraph always, and
        torch-compile on CUDA in the modes without Inductor's own CUDA graphs ("default",
        "max-autotune-no-cudagraphs"), whose replays then skip the copies into static input buffers and the
        bookkeeping that `reduce-overhead` does on the host at every call."""
        if self.runtime == "torch-cudagraph":
            return True
        mode = self.compile_mode or "default"
        return self.runtime == "torch-compile" and self.device == "cuda" and mode not in _SELF_GRAPHING_MODES

    @property
    def thread_count(self) -> int:
        """The threads every runtime is given, and what the results record: without --threads, torch's
        default (the cores). Left to themselves the runtimes differ: LiteRT's interpreter takes 1."""
        return self.threads or torch.get_num_threads()

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"threads": self.thread_count}
        if self.runtime == "torch-compile":
            options["compile_mode"] = self.compile_mode or "default"
            if self.own_cuda_graph:
                options["cuda_graph"] = "captured"
            if self.freeze:
                options["freezing"] = True
        if self.runtime in TORCH_RUNTIMES and self.device == "cuda":
            options["cudnn_benchmark"] = True
        if self.runtime in TORCH_RUNTIMES and self.channels_last:
            options["memory_format"] = "channels_last"
        if self.runtime in TORCH_RUNTIMES and self.deform_sampler:
            options["deform_sampler"] = self.deform_sampler
        if self.runtime in ("executorch", "litert"):
            options["delegate"] = "xnnpack"
        if self.runtime == "onnxruntime":
            options["provider"] = "CUDA" if self.device == "cuda" else "CPU"
        return options


# --- one measurement -----------------------------------------------------------------------------------


def _torch_call(spec: MeasureSpec, model: Any, inputs: tuple[torch.Tensor, ...]) -> tuple[Callable[[], Any], None]:
    from rapsam.export import get_entry_point

    dtype = DTYPES[spec.precision]
    layout = torch.channels_last if spec.channels_last else torch.contiguous_format
    if spec.deform_sampler:
        set_deform_sampler(model, spec.deform_sampler)
    wrapper = get_entry_point(spec.entry_point).wrapper(model).to(spec.device, dtype).eval()
    wrapper = wrapper.to(memory_format=layout)

    def placed(x: torch.Tensor) -> torch.Tensor:
        x = x.to(spec.device, dtype if x.is_floating_point() else x.dtype)
        return x.contiguous(memory_format=layout) if x.dim() == 4 else x

    inputs = tuple(placed(x) for x in inputs)
    if spec.device == "cuda":
        torch.backends.cudnn.benchmark = True  # static shapes: time each conv's algorithms once, keep the fastest
    if spec.runtime == "torch-compile":
        # Freezing treats the weights as constants of this inference graph: BatchNorm folds into the convs and
        # weight-only arithmetic is done once at compile time.
        options = {**torch._inductor.list_mode_options(spec.compile_mode or "default"), "freezing": spec.freeze}
        wrapper = torch.compile(wrapper, fullgraph=True, options=options)

    def call() -> Any:
        with torch.inference_mode():
            return wrapper(*inputs)

    if spec.own_cuda_graph:
        return capture_cuda_graph(call), None
    return call, None


def artifact_call(spec: MeasureSpec, model: Any, inputs: tuple[torch.Tensor, ...]) -> tuple[Callable[[], Any], float]:
    from rapsam.convert.manifest import converted_files
    from rapsam.export import get_entry_point

    if spec.artifact is None:
        raise BenchError(f"{spec.runtime} needs a converted artifact folder")
    folder = Path(spec.artifact)
    files = converted_files(json.loads((folder / "manifest.json").read_text()))
    if spec.runtime == "onnxruntime":
        import onnxruntime as ort

        from rapsam.convert.onnx import OnnxRunner

        wanted = ("TensorrtExecutionProvider", "CUDAExecutionProvider") if spec.device == "cuda" else ()
        providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
        if spec.device == "cuda" and len(providers) == 1:
            raise BenchError("onnxruntime has no CUDA provider here: pip install onnxruntime-gpu")
        runner: Any = OnnxRunner(folder, files, threads=spec.thread_count, providers=providers)
    elif spec.runtime == "executorch":
        from rapsam.convert.executorch import ExecuTorchRunner

        runner = ExecuTorchRunner(folder / files.entry_files[spec.entry_point], threads=spec.thread_count)
    else:
        from rapsam.convert.tflite import LiteRTRunner

        runner = LiteRTRunner(folder / files.entry_files[spec.entry_point], threads=spec.thread_count)
    feeds = {name: t.numpy() for name, t in zip(get_entry_point(spec.entry_point).inputs, inputs)}
    size_mb = (folder / files.entry_files[spec.entry_point]).stat().st_size / 2**20
    return (lambda: runner.run(spec.entry_point, feeds)), size_mb


def measure(spec: MeasureSpec) -> Measurement:
    """Load, first call, `warmup` calls, `runs` timed calls; failures become a failed Measurement."""
    from rapsam.checkpoint import build_model
    from rapsam.export import example_inputs

    base = {"runtime": spec.runtime, "device": spec.device, "model": spec.model, "entry_point": spec.entry_point,
            "input_size": tuple(spec.input_size), "precision": spec.precision, "options": spec.options()}
    try:
        if spec.runtime in TORCH_RUNTIMES:
            torch.set_num_threads(spec.thread_count)
        if spec.device == "cuda":
            # What earlier measurements of this process left (compiled graphs and their CUDA graph pools)
            # must not count as this one's memory.
            torch._dynamo.reset()
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        # The reference model makes the inputs for every runtime: all run the same numbers.
        model = build_model(spec.model, spec.weights, seed=spec.seed)
        inputs = example_inputs(model, spec.entry_point, input_size=spec.input_size, num_prompts=spec.num_prompts)
        timer = timer_for(spec.device)
        started = time.perf_counter()
        call, artifact_mb = (_torch_call if spec.runtime in TORCH_RUNTIMES else artifact_call)(spec, model, inputs)
        load_ms = (time.perf_counter() - started) * 1000
        first_ms = load_ms + timer.measure(call)
        samples = time_calls(call, warmup=spec.warmup, runs=spec.runs, timer=timer)
    except Exception as exc:  # noqa: BLE001 (each runtime raises its own types: each becomes one failed row)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return Measurement(**base, status="failed", reason=reason)
    latency = latency_summary(samples)
    return Measurement(
        **base, warmup=spec.warmup, runs=spec.runs, latency_ms=latency, fps=1000.0 / latency["p50"],
        first_run_ms=first_ms, artifact_mb=artifact_mb,
        peak_rss_mb=peak_rss_mb(),
        peak_device_mb=torch.cuda.max_memory_allocated() / 2**20 if spec.device == "cuda" else None,
    )


def measure_isolated(spec: MeasureSpec, *, timeout_s: float = 1800) -> Measurement:
    """`measure` in a fresh worker process: its peak RSS is this measurement's alone."""
    payload = json.dumps(dataclasses.asdict(spec))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run([sys.executable, "-m", "rapsam.bench.worker"], input=payload, capture_output=True,
                              text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return _failed(spec, f"worker timed out after {timeout_s:.0f}s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return _failed(spec, f"worker exited with {done.returncode}: {tail}"[:300])
    return Measurement.from_dict(json.loads(lines[-1]))


def _failed(spec: MeasureSpec, reason: str) -> Measurement:
    return Measurement(runtime=spec.runtime, device=spec.device, model=spec.model, entry_point=spec.entry_point,
                       input_size=tuple(spec.input_size), precision=spec.precision, options=spec.options(),
                       status="failed", reason=reason)


# --- a whole run ---------------------------------------------------------------------------------------


def entry_gmacs(model: Any, entry: str, input_size: tuple[int, int], num_prompts: int) -> float:
    """GMACs of one call of `entry`, counted on the reference model (every MAC torch's counter sees)."""
    from rapsam.complexity import _all_macs
    from rapsam.export import example_inputs, get_entry_point

    wrapper = get_entry_point(entry).wrapper(model)
    inputs = example_inputs(model, entry, input_size=input_size, num_prompts=num_prompts)
    with torch.no_grad():
        return _all_macs(wrapper, *inputs) / 1e9


def _artifact_folder(runtime: str, model: str, weights: str | None, input_size: tuple[int, int], precision: str,
                     entries: Sequence[str], num_prompts: int, root: Path, progress: Callable[[str], None]) -> Path:
    """The converted folder for `runtime`: reused when its manifest matches the request and was written by
    this very rapsam source (an artifact of older converter code would time that code), else converted."""
    from rapsam.checkpoint import weights_id
    from rapsam.convert import convert, folder_name
    from rapsam.convert.manifest import prompt_slots, source_fingerprint

    target = ARTIFACT_TARGETS[runtime]
    quantize = precision if precision in QUANTIZED else None
    root = root / precision
    folder = root / folder_name(model, input_size, target, quantize)
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        slots = prompt_slots(manifest) or num_prompts
        scheme = (manifest["precision"].get("quantization") or {}).get("scheme")
        if (manifest["model"]["weights"] == weights_id(weights) and set(entries) <= set(manifest["entry_points"])
                and (scheme == quantize if quantize else manifest["precision"]["compute"] == precision and not scheme)
                and slots == num_prompts and manifest["versions"].get("rapsam_source") == source_fingerprint()):
            progress(f"[{runtime}] reusing {folder}")
            return folder
    progress(f"[{runtime}] converting {model} {input_size[0]}x{input_size[1]} {precision} for {target}")
    results = convert(target, model=model, weights=weights, input_size=input_size, entry_points=list(entries),
                      num_prompts=num_prompts, precision=None if quantize else precision, out_dir=root,
                      parity=False, quantize=quantize, calib="synthetic" if quantize else None,
                      calib_count=CALIBRATION_IMAGES, progress=progress)
    return results[0].folder


def run_desktop(
    *,
    model: str,
    weights: str | None = None,
    input_sizes: Sequence[tuple[int, int]] = ((512, 512),),
    entry_points: Sequence[str] = ("encode", "panoptic", "prompt", "segment"),
    runtimes: Sequence[str] | None = None,
    precisions: Sequence[str] = ("fp32",),
    device: str = "auto",
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 30,
    num_prompts: int = 4,
    compile_mode: str | None = None,
    compile_precisions: Sequence[str] | None = None,
    channels_last: bool = False,
    freeze: bool = False,
    deform_sampler: str | None = None,
    artifacts: str | Path = "bench-artifacts",
    isolate: bool | None = None,
    settings: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> Results:
    """Every (runtime, precision, size, entry point) on this machine; what cannot run is a skipped row with
    its reason. `isolate` (default: on the CPU) runs each measurement in its own process.
    `compile_precisions` limits torch-compile (the slow one to prepare) to some of `precisions`;
    `channels_last` runs the PyTorch runtimes on NHWC tensors; `freeze` compiles with Inductor's freezing;
    `deform_sampler` picks how their deformable convs sample."""
    from rapsam.checkpoint import build_model
    from rapsam.convert.base import MissingBackendError, get_converter

    device = resolve_device(device)
    runtimes = tuple(runtimes or (DEFAULT_CUDA_RUNTIMES if device == "cuda" else DEFAULT_CPU_RUNTIMES))
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise BenchError(f"unknown runtimes {unknown}; valid: {', '.join(RUNTIMES)}")
    bad = [p for p in precisions if p not in DTYPES and p not in QUANTIZED]
    if bad:
        raise BenchError(f"unknown precisions {bad}; valid: {', '.join([*DTYPES, *QUANTIZED])}")
    isolate = device == "cpu" if isolate is None else isolate
    # Only counted on, never timed; torch's module tracker trips over parameters that want grads.
    reference = build_model(model, weights).requires_grad_(False)
    measurements: list[Measurement] = []
    for size in input_sizes:
        gmacs = {entry: entry_gmacs(reference, entry, size, num_prompts) for entry in entry_points}
        for runtime in runtimes:
            for precision in precisions:
                if runtime == "torch-compile" and compile_precisions is not None and precision not in compile_precisions:
                    continue
                reason = _unsupported(runtime, device, precision)
                folder = None
                if reason is None and runtime in ARTIFACT_TARGETS:
                    try:
                        get_converter(ARTIFACT_TARGETS[runtime])
                        folder = _artifact_folder(runtime, model, weights, size, precision, entry_points,
                                                  num_prompts, Path(artifacts), progress)
                    except MissingBackendError as exc:
                        reason = str(exc)
                    except Exception as exc:  # noqa: BLE001 (a failed conversion is a row, not the end of the run)
                        reason = f"conversion failed: {exc}".splitlines()[0][:300]
                for entry in entry_points:
                    if reason is not None:
                        measurements.append(skipped(runtime, device, model, entry, size, precision, reason))
                        progress(f"[{runtime}] {entry} {precision}: skipped ({reason})")
                        continue
                    spec = MeasureSpec(
                        runtime=runtime, device=device, model=model, entry_point=entry, input_size=size,
                        precision=precision, weights=weights, num_prompts=num_prompts, threads=threads,
                        warmup=warmup, runs=runs, artifact=str(folder) if folder else None, compile_mode=compile_mode,
                        channels_last=channels_last, freeze=freeze, deform_sampler=deform_sampler,
                    )
                    progress(f"[{runtime}] {entry} {size[0]}x{size[1]} {precision}: {warmup} warm-up + {runs} runs")
                    result = measure_isolated(spec) if isolate else measure(spec)
                    result = dataclasses.replace(result, gmacs=gmacs[entry])
                    if result.status == "ok":
                        result = dataclasses.replace(result, gflops_per_s=2 * gmacs[entry] / (result.latency_ms["p50"] / 1000))
                        progress(f"[{runtime}] {entry}: p50 {result.latency_ms['p50']:.1f} ms")
                    else:
                        progress(f"[{runtime}] {entry}: {result.status} ({result.reason})")
                    measurements.append(result)
    return Results(
        machine=machine_info(), versions=versions(), measurements=measurements,
        settings={"model": model, "weights": weights, "input_sizes": [list(s) for s in input_sizes],
                  "entry_points": list(entry_points), "runtimes": list(runtimes), "precisions": list(precisions),
                  "device": device, "threads": threads, "warmup": warmup, "runs": runs, "num_prompts": num_prompts,
                  "compile_mode": compile_mode, "compile_precisions": list(compile_precisions or precisions),
                  "channels_last": channels_last, "freeze": freeze, "deform_sampler": deform_sampler, "isolated": isolate, **(settings or {})},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def run_paper(
    *,
    device: str = "auto",
    models: Sequence[str] | None = None,
    extra_sizes: Sequence[tuple[int, int]] = (),
    save: Callable[[Results], None] = lambda results: None,
    progress: Callable[[str], None] = lambda message: None,
    **options: Any,
) -> Results:
    """The paper's speed setting (table 3: `segment` at 1333x800, padded to 1344x800 as the official
    preprocessor does, batch 1) for each of its variants (or `models` of them, in that order), plus
    `extra_sizes`; `save` gets the results so far after each variant, so that a run cut short keeps what it
    measured."""
    from rapsam.complexity import PAPER_INPUT_SIZE, PAPER_ROWS, padded_size

    variants = [row.variant for row in PAPER_ROWS]
    unknown = [m for m in models or () if m not in variants]
    if unknown:
        raise BenchError(f"{unknown} are not paper variants; valid: {', '.join(variants)}")
    sizes = [padded_size(*PAPER_INPUT_SIZE), *extra_sizes]
    merged: Results | None = None
    for variant in models or variants:
        progress(f"== {variant}")
        results = run_desktop(model=variant, device=device, input_sizes=sizes, entry_points=("segment",),
                              settings={"paper": True}, progress=progress, **options)
        merged = results if merged is None else dataclasses.replace(
            merged, measurements=[*merged.measurements, *results.measurements])
        merged = dataclasses.replace(merged, settings={**merged.settings, "models": list(models or variants)})
        save(merged)
    assert merged is not None
    return merged


def _layout(m: Measurement) -> str:
    """What a row ran with beyond runtime and precision: compile mode, freezing, deformable sampler, NHWC."""
    options = m.options
    return "".join(f" {text}" for text in (
        options.get("compile_mode"), "frozen" if options.get("freezing") else None, options.get("deform_sampler"),
        "NHWC" if options.get("memory_format") == "channels_last" else None) if text)


def paper_table(results: Results) -> str:
    """Per variant: params and GMACs as the paper counts them, then FPS, p50/p99 and peak memory per runtime
    and precision, with the speed-up over eager fp32 (the best marked *), beside the paper's A100 FPS."""
    from rapsam.checkpoint import build_model
    from rapsam.complexity import PAPER_INPUT_SIZE, PAPER_ROWS, model_cost, padded_size

    size = padded_size(*PAPER_INPUT_SIZE)
    header = f"  {'runtime':<34}{'FPS':>9}{'p50 ms':>9}{'p99 ms':>9}{'mem MB':>9}{'x eager fp32':>14}"
    lines = [f"FPS at {size[0]}x{size[1]}, batch 1, segment (mem: peak CUDA memory on a GPU, else peak RSS)"]
    for row in PAPER_ROWS:
        rows = [m for m in results.measurements
                if m.model == row.variant and m.status == "ok" and tuple(m.input_size) == size]
        if not rows:
            continue
        cost = model_cost(build_model(row.variant), size)[-1]
        paper_fps = f", paper A100 {row.a100_fps:.1f} FPS" if row.a100_fps else ""
        title = (f"{row.variant}: {cost.params / 1e6:.2f} M params (paper {row.params_m}), "
                 f"{cost.macs_paper / 1e9:.1f} GMACs (paper {row.gmacs}){paper_fps}")
        lines += ["", title, header]
        base = next((m.fps for m in rows if m.runtime == "torch-eager" and m.precision == "fp32"
                     and "memory_format" not in m.options), None)
        best = max(rows, key=lambda m: m.fps or 0.0)
        for m in rows:
            speedup = f"{m.fps / base:.2f}{'*' if m is best else ' '}" if base and m.fps else "-"
            label = f"{m.runtime.removeprefix('torch-')} {m.precision}{_layout(m)}"
            lines.append(f"  {label:<34}{_cell(m.fps, 9)}{m.latency_ms['p50']:>9.2f}"
                         f"{m.latency_ms['p99']:>9.2f}{_cell(_memory_mb(m), 9, 0)}{speedup:>14}")
    return "\n".join(lines)


def _unsupported(runtime: str, device: str, precision: str) -> str | None:
    """Why this (runtime, device, precision) cannot run here, or None."""
    if precision in QUANTIZED and runtime not in ARTIFACT_TARGETS:
        return (f"{precision} is an artifact scheme (rapsam-convert --quantize): measure it with "
                f"{', '.join(ARTIFACT_TARGETS)}")
    if runtime in ("executorch", "litert") and device == "cuda":
        return f"{runtime} runs on CPUs and phones, not CUDA (benchmark it with --device cpu)"
    if runtime in ARTIFACT_TARGETS and precision == "bf16":
        return "artifacts are converted in fp32 or fp16"
    if runtime == "torch-cudagraph" and device != "cuda":
        return "CUDA graphs replay GPU kernels: use --device cuda"
    if runtime == "torch-compile" and device == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        return "torch.compile on the CPU needs a C++ compiler (g++) on PATH"
    if device == "cpu" and precision != "fp32" and runtime in TORCH_RUNTIMES:
        return f"{precision} PyTorch on the CPU is not a deployment path; measure fp32 (or --device cuda)"
    return None


def cpu_share(result: Measurement, floor_gflops: float | None) -> float | None:
    """Achieved GFLOP/s over the machine's fp32 floor."""
    if result.gflops_per_s is None or not floor_gflops:
        return None
    return result.gflops_per_s / floor_gflops


def _cell(value: float | None, width: int, digits: int = 1) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def _memory_mb(m: Measurement) -> float | None:
    """Peak CUDA memory of a GPU measurement, peak RSS of the others."""
    return m.peak_device_mb if m.device == "cuda" else m.peak_rss_mb


def format_table(results: Results) -> str:
    """The terminal table: one row per measurement, skipped and failed rows with their reason."""
    floor = results.machine.get("cpu_flop_floor_gflops")
    measurements = results.measurements
    width = max([21, *(len(m.runtime + _layout(m)) + 1 for m in measurements)])
    model_width = max([20, *(len(m.model) + 1 for m in measurements)])
    precision_width = max([6, *(len(m.precision) + 1 for m in measurements)])
    header = f"{'model':<{model_width}}{'runtime':<{width}}{'entry':<10}{'size':<10}{'prec':<{precision_width}}" \
             f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}" \
             f"{'FPS':>8}{'GFLOP/s':>9}{'floor%':>7}{'first ms':>10}{'mem MB':>8}{'file MB':>8}"
    lines = [header, "-" * len(header)]
    notes = []
    for m in measurements:
        size = f"{m.input_size[0]}x{m.input_size[1]}"
        if m.status != "ok":
            notes.append(f"{m.model} {m.runtime} {m.entry_point} {size} {m.precision}: {m.status}: {m.reason}")
            continue
        lat = m.latency_ms
        share = cpu_share(m, floor) if m.device == "cpu" else None
        lines.append(
            f"{m.model:<{model_width}}{m.runtime + _layout(m):<{width}}{m.entry_point:<10}{size:<10}"
            f"{m.precision:<{precision_width}}{lat['p50']:>9.1f}"
            f"{lat['p90']:>9.1f}{lat['p99']:>9.1f}{_cell(m.fps, 8)}{_cell(m.gflops_per_s, 9)}{_cell(share * 100 if share else None, 7, 0)}"
            f"{_cell(m.first_run_ms, 10, 0)}{_cell(_memory_mb(m), 8, 0)}{_cell(m.artifact_mb, 8)}"
        )
    machine = results.machine
    gpus = ", ".join(g["name"] for g in machine.get("gpus", []))
    title = f"{machine.get('cpu_model')} ({machine.get('cpu_cores')} cores, fp32 floor {floor} GFLOP/s)" + (
        f", {gpus} (mem: peak CUDA memory on cuda rows, peak RSS on the others)" if gpus else "")
    return "\n".join([title, *lines, *notes])


def profile_table(spec: MeasureSpec, *, steps: int = 5, rows: int = 40) -> str:
    """torch.profiler's table of where one entry point's time goes (kernels by CUDA time on a GPU, ops by
    CPU time otherwise), after the same warm-up as a measurement: for naming what dominates."""
    from torch.profiler import ProfilerActivity, profile

    from rapsam.checkpoint import build_model
    from rapsam.export import example_inputs

    if spec.runtime not in TORCH_RUNTIMES:
        raise BenchError(f"--profile covers the PyTorch runtimes; {spec.runtime} has its own profiler")
    model = build_model(spec.model, spec.weights, seed=spec.seed)
    inputs = example_inputs(model, spec.entry_point, input_size=spec.input_size, num_prompts=spec.num_prompts)
    call, _ = _torch_call(spec, model, inputs)
    time_calls(call, warmup=max(spec.warmup, 1), runs=1, timer=timer_for(spec.device))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if spec.device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            call()
        if spec.device == "cuda":
            torch.cuda.synchronize()
    # Kernels by their own time: a compiled region's total would top the table and name nothing.
    sort_by = "self_cuda_time_total" if spec.device == "cuda" else "cpu_time_total"
    title = (f"{spec.model} {spec.entry_point} {spec.input_size[0]}x{spec.input_size[1]} {spec.runtime} "
             f"{spec.precision} on {spec.device}, {steps} calls")
    return f"{title}\n{prof.key_averages().table(sort_by=sort_by, row_limit=rows)}"
