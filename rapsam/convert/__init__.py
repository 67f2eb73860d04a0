"""`rapsam.convert.convert(...)`: model -> artifact folder with manifest and parity report, per target.

Each target writes one folder, `<out>/<model>-<H>x<W>-<target>/`, holding the artifact file(s),
`manifest.json` and `parity.json`. It is built under a temporary name and renamed into place only when
complete and, unless the gate is off, only when parity passed: a failed run never leaves a half-written
or wrong artifact where a good one is expected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapsam.checkpoint import build_model, builtin_weights, weights_id
from rapsam.convert.base import (
    PRECISIONS,
    TARGET_MODULES,
    ConversionError,
    MissingBackendError,
    TargetRequest,
    get_converter,
)
from rapsam.convert.manifest import (
    build_manifest,
    converted_files,
    dumps,
    prompt_slots,
    read_manifest,
    validate_manifest,
)
from rapsam.convert.parity import ParityReport, check_parity
from rapsam.export import ENTRY_POINTS
from rapsam.inference import check_input_size

# The built-in demo: trained on the synthetic shapes data, its weights ship in rapsam/weights/, so that a default
# artifact segments real scenes instead of noise.
DEFAULT_MODEL = "rapsam_edgenext_demo"

__all__ = ["DEFAULT_MODEL", "ConversionError", "ConversionResult", "MissingBackendError", "check_artifact", "convert",
           "folder_name"]


@dataclass(frozen=True)
class ConversionResult:
    target: str
    folder: Path  # the final folder (or, when the gate failed, where it would have gone)
    manifest: dict[str, Any]
    parity: ParityReport | None
    written: bool  # False when a gate refused the artifact
    failed_gates: tuple[str, ...] = ()  # which: "parity", "accuracy" (quantized artifacts)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Exporters and backends log warnings about things that do not concern a user (torchvision ops absent,
# deprecated pytree APIs): keep the progress lines readable.
_NOISY_LOGGERS = (
    "torch.onnx", "torch._export", "torch.export", "torch.utils._pytree", "onnxscript", "coremltools", "executorch",
    "litert_torch", "torchao",
)


@contextlib.contextmanager
def _quiet_backends():
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _resolve_targets(target: str) -> list[str]:
    return list(TARGET_MODULES) if target == "all" else [target]


def convert(
    target: str,
    *,
    model: str | None = None,
    weights: str | Path | None = None,
    classifier: str | Path | None = None,
    dataset: str | None = None,
    seed: int = 0,
    input_size: tuple[int, int] | None = None,
    entry_points: Sequence[str] = tuple(ENTRY_POINTS),
    num_prompts: int = 4,
    precision: str | None = None,
    out_dir: str | Path = "artifacts",
    parity: bool = True,
    parity_gate: bool = True,
    random_init: bool = False,
    quantize: str | None = None,
    calib: str | Path | None = None,
    calib_count: int = 64,
    keep_float: Sequence[str] = (),
    auto_keep: int = 0,
    eval_data: str | Path | None = None,
    keep_accuracy: float = 0.95,
    options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] = _log,
) -> list[ConversionResult]:
    """Convert one target (or "all") and return what was written. Raises ConversionError on bad input.

    `weights` is our checkpoint, or the authors' released `.pth` with its `classifier` file (and
    optionally `dataset`), imported on the fly as `rapsam-import` would. Without weights, a variant with
    built-in weights (the default, the demo) uses them unless `random_init`; the others are a seeded random
    init. `input_size` defaults to the variant's own.

    `quantize` names a scheme of the target's quantizer (rapsam.quantize), calibrated on `calib` (an image
    folder, a COCO panoptic root or "synthetic") where the scheme needs it; the artifact is then also scored
    against the fp32 model on held-out data (`eval_data`) and kept only if it holds `keep_accuracy` of its PQ
    and prompt mIoU (unless `parity_gate` is off)."""
    targets = _resolve_targets(target)
    converters = {t: get_converter(t) for t in targets}  # fails fast, before any work, on missing packages
    if input_size is not None:
        input_size = check_input_size(tuple(input_size))
    quantizer = None
    if quantize is not None:
        from rapsam.quantize.base import QuantizationError, get_quantizer

        if len(targets) != 1:
            raise ConversionError("--quantize takes one --target, not all")
        quantizer = get_quantizer(targets[0])
        if quantize not in quantizer.schemes:
            raise QuantizationError(f"target {targets[0]} has no scheme {quantize!r}; "
                                    f"it has {', '.join(quantizer.schemes)}")
        if quantize in quantizer.calibrated and calib is None:
            raise QuantizationError(f"scheme {quantize} is calibrated: give --calib DATA "
                                    "(an image folder, a COCO panoptic root, or 'synthetic')")
    if auto_keep and quantize is None:
        raise ConversionError("--auto-keep ranks layers for quantization: give --quantize SCHEME too")
    if auto_keep < 0:
        raise ConversionError(f"--auto-keep must be 0 or more, got {auto_keep}")
    unknown = [e for e in entry_points if e not in ENTRY_POINTS]
    if unknown or not entry_points:
        raise ConversionError(f"unknown entry points {unknown}; valid: {', '.join(ENTRY_POINTS)}")
    if precision is not None and precision not in PRECISIONS:
        raise ConversionError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if num_prompts < 1:
        raise ConversionError(f"--num-prompts must be at least 1, got {num_prompts}")
    for t, converter in converters.items():
        unknown_options = set(options or {}) - set(converter.option_defaults)
        if len(targets) == 1 and unknown_options:
            raise ConversionError(f"target {t} has no options {sorted(unknown_options)}; "
                                  f"it takes {sorted(converter.option_defaults) or 'none'}")

    if weights is None and not random_init:
        weights = builtin_weights(model or DEFAULT_MODEL)
    net = build_model(model or (None if weights else DEFAULT_MODEL), weights, seed=seed, classifier=classifier,
                      dataset=dataset)
    input_size = input_size or check_input_size(tuple(net.config.default_size))
    weights_name = weights_id(weights, seed, classifier)
    if weights is None:
        progress(f"note: no --weights given: {net.config.name} is a random init (seed {seed}); the manifest says so")
    calibration = None
    if quantizer is not None and quantize in quantizer.calibrated:
        from rapsam.quantize.calibration import load_calibration

        assert calib is not None
        calibration = load_calibration(calib, net, input_size=input_size, num_prompts=num_prompts,
                                       entry_points=tuple(entry_points), count=calib_count, progress=progress)
    sensitivity = None
    if quantizer is not None and auto_keep:
        from rapsam.quantize.sensitivity import most_sensitive, rank_layers

        sensitivity = rank_layers(net, calib, calibration, input_size=input_size, num_prompts=num_prompts,
                                  progress=progress)
        keep_float = (*keep_float, *most_sensitive(sensitivity, auto_keep))
    quantization = None if quantizer is None or quantize is None else Quantization(
        quantizer, quantize, calibration, tuple(keep_float), eval_data, keep_accuracy, sensitivity)
    results = []
    for t, converter in converters.items():
        request = TargetRequest(
            entry_points=tuple(entry_points), input_size=input_size, num_prompts=num_prompts,
            precision=precision or converter.default_precision,
            options={k: v for k, v in {**converter.option_defaults, **(options or {})}.items()
                     if k in converter.option_defaults},
        )
        results.append(_convert_one(net, converter, request, Path(out_dir), weights_name, parity, parity_gate,
                                    progress, quantization))
    return results


def folder_name(model: str, input_size: tuple[int, int], target: str, scheme: str | None = None) -> str:
    """`<model>-<H>x<W>-<target>[-<scheme>]`: where `convert` writes an artifact under its out_dir."""
    return f"{model}-{input_size[0]}x{input_size[1]}-{target}" + (f"-{scheme}" if scheme else "")


@dataclass(frozen=True)
class Quantization:
    """What `convert(quantize=...)` hands each conversion: the toolchain, scheme, data and gate."""

    quantizer: Any
    scheme: str
    calibration: Any
    keep_float: tuple[str, ...]
    eval_data: str | Path | None
    keep_accuracy: float
    sensitivity: Any = None  # the layer ranking of --auto-keep, most sensitive first


def _convert_one(net, converter, request, out_dir, weights_name, run_parity, parity_gate, progress,
                 quantization: Quantization | None = None) -> ConversionResult:
    height, width = request.input_size
    final = out_dir / folder_name(net.config.name, request.input_size, converter.name,
                                  quantization.scheme if quantization is not None else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; the artifact is meant to be shared
    try:
        started = time.perf_counter()
        kind = request.precision if quantization is None else quantization.scheme
        progress(f"[{converter.name}] converting {', '.join(request.entry_points)} at {height}x{width}, {kind}")
        with _quiet_backends():
            if quantization is None:
                files = converter.convert(net, request, staging)
            else:
                files = quantization.quantizer.quantize(net, request, quantization.scheme, quantization.calibration,
                                                        staging, quantization.keep_float)
        progress(f"[{converter.name}] converted in {time.perf_counter() - started:.1f}s")
        manifest = build_manifest(net, target=converter.name, request=request, files=files,
                                  weights=weights_name, converter_versions=converter.versions())
        parity_precision = request.precision
        if quantization is not None:
            parity_precision = "int8"
            calibration = quantization.calibration
            manifest["precision"]["quantization"] = {
                "scheme": quantization.scheme,
                "calibration": None if calibration is None else {
                    "source": calibration.source, "samples": len(calibration), "sha256": calibration.digest},
                "kept_float": list(files.info.get("kept_float", [])),
            }
            if quantization.sensitivity is not None:
                from rapsam.quantize.sensitivity import ranking_summary

                manifest["precision"]["quantization"]["sensitivity"] = ranking_summary(quantization.sensitivity)
        report = None
        if run_parity:
            started = time.perf_counter()
            runner = converter.open(staging, files)  # parity and the accuracy gate share it
            report = check_parity(
                net, runner, target=converter.name, entry_points=request.entry_points,
                input_size=request.input_size, num_prompts=request.num_prompts, precision=parity_precision,
                progress=lambda m: progress(f"[{converter.name}] {m}"),
            )
            progress(report.table())
            progress(f"[{converter.name}] parity in {time.perf_counter() - started:.1f}s")
            (staging / "parity.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        accuracy = None
        if quantization is not None and run_parity:
            from rapsam.quantize.accuracy import accuracy_report

            accuracy = accuracy_report(
                net, runner, input_size=request.input_size, prompt_slots=request.num_prompts,
                data=quantization.eval_data, keep=quantization.keep_accuracy,
                progress=lambda m: progress(f"[{converter.name}] {m}"))
            progress(accuracy.table())
            (staging / "accuracy.json").write_text(json.dumps(accuracy.to_dict(), indent=2, sort_keys=True) + "\n")
            manifest["precision"]["quantization"]["accuracy"] = accuracy.to_dict()
        # A quantized artifact whose task metrics were judged is gated by them: its worst-case parity (one
        # click's mask on one image) may differ where the metrics on held-out data do not.
        parity_gates = accuracy is None or accuracy.reason is not None
        if report is not None:
            gate = "not_run" if not report.ran else "passed" if report.passed else "failed"
            if gate == "failed" and not parity_gates:
                gate = "informative"
            elif gate == "failed" and not parity_gate:
                gate = "failed_ignored"  # --no-parity-gate: kept, and marked
            manifest["parity"] = {"gate": gate, **report.to_dict()}
        validate_manifest(manifest)
        text = dumps(manifest)
        converter.embed_manifest(staging, files, text)
        (staging / "manifest.json").write_text(text)
        failed = [name for name, gate_failed in (
            ("parity", report is not None and manifest["parity"]["gate"] == "failed"),
            ("accuracy", accuracy is not None and not accuracy.passed),
        ) if gate_failed and parity_gate]
        if failed:
            progress(f"[{converter.name}] {' and '.join(failed)} gate failed: nothing written to {final}")
            return ConversionResult(converter.name, final, manifest, report, written=False,
                                    failed_gates=tuple(failed))
        _replace_folder(staging, final)
        progress(f"[{converter.name}] wrote {final}")
        return ConversionResult(converter.name, final, manifest, report, written=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_folder(staging: Path, final: Path) -> None:
    """Swap the finished folder into place; the old one is removed only after the new one is there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    staging.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_artifact(
    folder: str | Path,
    *,
    weights: str | Path | None = None,
    classifier: str | Path | None = None,
    dataset: str | None = None,
    progress: Callable[[str], None] = _log,
) -> ParityReport:
    """Re-run the parity checker on a converted folder (`rapsam-convert --check FOLDER`)."""
    folder = Path(folder)
    manifest = read_manifest(folder, error=ConversionError)
    stored = manifest["model"]["weights"]
    builtin = builtin_weights(manifest["model"]["name"])
    if weights is None and builtin is not None and weights_id(builtin) == stored:
        weights = builtin
    if weights is None and not manifest["model"]["random_init"]:
        raise ConversionError(f"{folder} was converted from weights {stored}: pass the same file with --weights")
    seed = int(stored.split("seed=")[1]) if manifest["model"]["random_init"] else 0
    if weights is not None and weights_id(weights, classifier=classifier) != stored:
        given = f"--weights {weights}" + (f" with --classifier {classifier}" if classifier is not None else "")
        raise ConversionError(f"{given} is not what {folder} was converted from ({stored})")
    converter = get_converter(manifest["target"]["name"])
    net = build_model(manifest["model"]["name"], weights, seed=seed, classifier=classifier, dataset=dataset)
    num_prompts = prompt_slots(manifest) or manifest["prompts"]["max_prompts"]
    report = check_parity(
        net, converter.open(folder, converted_files(manifest)), target=converter.name,
        entry_points=tuple(manifest["entry_points"]),
        input_size=tuple(manifest["input_size"]), num_prompts=num_prompts,
        precision="int8" if manifest["precision"].get("quantization") else manifest["precision"]["compute"],
        progress=progress,
    )
    progress(report.table())
    return report
