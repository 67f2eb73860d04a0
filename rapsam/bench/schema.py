"""The benchmark results file: one versioned JSON schema for desktop runs, GPUs and phones.

A file holds the machine it ran on, the versions of everything that ran, the exact settings, and one
Measurement per (runtime, device, entry point, input size, precision). `rapsam-bench report` merges
files from many machines; every reader goes through `read_results`, which validates.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rapsam.fileio import atomic_path, read_json_object

SCHEMA_VERSION = 1
Status = Literal["ok", "skipped", "failed"]
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "min", "max")


class ResultsError(ValueError):
    """A results file that cannot be read or does not follow the schema."""


@dataclass(frozen=True)
class Measurement:
    """One runtime running one entry point at one size and precision on one device.

    `status` "skipped" (runtime not installed, no GPU, ...) and "failed" carry the one-line `reason` and
    no numbers. Latencies are milliseconds per call of the entry point at `batch`.
    """

    runtime: str  # torch-eager, torch-compile, onnxruntime, executorch, litert, coreml (the same names on phones)
    device: str  # cpu, cuda, android:<model>, ios:<model>
    model: str
    entry_point: str
    input_size: tuple[int, int]
    precision: str  # fp32, fp16, bf16, int8
    status: Status = "ok"
    reason: str | None = None
    batch: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)  # threads, provider, compile mode, delegate
    warmup: int = 0
    runs: int = 0
    latency_ms: Mapping[str, float] | None = None  # LATENCY_KEYS
    fps: float | None = None  # batch * 1000 / p50
    first_run_ms: float | None = None  # load (or compile) + first inference
    peak_rss_mb: float | None = None
    peak_device_mb: float | None = None  # CUDA / accelerator memory where the runtime reports it
    artifact_mb: float | None = None
    gmacs: float | None = None  # of one call, counted on the reference model
    gflops_per_s: float | None = None  # 2 * gmacs / p50

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        data["options"] = dict(self.options)
        data["latency_ms"] = dict(self.latency_ms) if self.latency_ms is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ResultsError(f"measurement has unknown fields {unknown}")
        values = dict(data)
        values["input_size"] = tuple(values["input_size"])
        return cls(**values)


def skipped(runtime: str, device: str, model: str, entry_point: str, input_size: tuple[int, int], precision: str,
            reason: str, **options: Any) -> Measurement:
    return Measurement(runtime=runtime, device=device, model=model, entry_point=entry_point, input_size=input_size,
                       precision=precision, status="skipped", reason=reason, options=options)


@dataclass(frozen=True)
class Results:
    machine: Mapping[str, Any]  # os, cpu_model, cpu_cores, cpu_flop_floor_gflops, gpus, driver / device, soc, os
    versions: Mapping[str, str]  # rapsam, python, torch and each runtime that ran
    settings: Mapping[str, Any]  # the command's arguments, exactly
    measurements: Sequence[Measurement]
    created: str = ""  # ISO 8601, UTC
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "machine": dict(self.machine),
            "versions": dict(self.versions),
            "settings": dict(self.settings),
            "measurements": [m.to_dict() for m in self.measurements],
        }


_REQUIRED = {"schema_version": int, "created": str, "machine": dict, "versions": dict, "settings": dict,
             "measurements": list}
_MEASUREMENT_REQUIRED = {"runtime": str, "device": str, "model": str, "entry_point": str, "input_size": list,
                         "precision": str, "status": str}


def validate_results(data: Mapping[str, Any], *, source: str = "results") -> Results:
    """A parsed results document -> Results, or ResultsError naming the first problem."""
    for name, kind in _REQUIRED.items():
        if not isinstance(data.get(name), kind):
            raise ResultsError(f"{source}: field {name!r} is missing or not a {kind.__name__}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"{source}: schema_version {data['schema_version']}, this rapsam reads {SCHEMA_VERSION}")
    measurements = []
    for index, item in enumerate(data["measurements"]):
        where = f"{source}: measurements[{index}]"
        for name, kind in _MEASUREMENT_REQUIRED.items():
            if not isinstance(item.get(name), kind):
                raise ResultsError(f"{where}.{name} is missing or not a {kind.__name__}")
        if item["status"] not in ("ok", "skipped", "failed"):
            raise ResultsError(f"{where}.status must be ok, skipped or failed, not {item['status']!r}")
        if item["status"] == "ok" and not (
            isinstance(item.get("latency_ms"), dict) and set(LATENCY_KEYS) <= set(item["latency_ms"])
        ):
            raise ResultsError(f"{where}: an ok measurement needs latency_ms with {', '.join(LATENCY_KEYS)}")
        if item["status"] != "ok" and not item.get("reason"):
            raise ResultsError(f"{where}: a {item['status']} measurement needs a reason")
        try:
            measurements.append(Measurement.from_dict(item))
        except (TypeError, ResultsError) as exc:
            raise ResultsError(f"{where}: {exc}") from None
    return Results(
        machine=data["machine"], versions=data["versions"], settings=data["settings"], measurements=measurements,
        created=data["created"], schema_version=data["schema_version"],
    )


def write_results(results: Results, path: str | Path) -> Path:
    path = Path(path)
    validate_results(results.to_dict(), source=str(path))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_results(path: str | Path) -> Results:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file not found: {path}")
    data = read_json_object(path, what="a results object", error=ResultsError)
    return validate_results(data, source=str(path))


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 (linear interpolation, as numpy's default), mean, min and max of timed runs."""
    if not samples_ms:
        raise ValueError("no timed runs")
    ordered = sorted(samples_ms)

    def percentile(q: float) -> float:
        position = (len(ordered) - 1) * q
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "p50": percentile(0.50), "p90": percentile(0.90), "p99": percentile(0.99),
        "mean": sum(ordered) / len(ordered), "min": ordered[0], "max": ordered[-1],
    }


# --- the sample apps' benchmark lines --------------------------------------------------------------------------
# The Android and iOS sample apps' benchmark modes print one `RAPSAM_BENCH {json}` line per pipeline stage
# (StageTimer.kt, StageTimer.swift; tests/data/bench/app_bench_lines.txt is the golden sample all three check):
#   ok:     context + {"stage", "status": "ok", "runs", "latency_ms": {LATENCY_KEYS}}
#   failed: context + {"status": "failed", "reason"}
# The context: platform (android, ios), device, os, cores, artifact, backend, runtime (the app's description of
# it), model, precision, input_size [h, w], image, image_size [h, w], warmup.

APP_MARKER = "RAPSAM_BENCH"
APP_RUNTIMES = {"executorch": "executorch", "litert": "litert", "litert-gpu": "litert", "coreml": "coreml"}
_APP_CONTEXT = ("platform", "device", "backend", "model", "precision")


def parse_app_lines(text: str) -> list[dict[str, Any]]:
    """Every `RAPSAM_BENCH {json}` line of an app's output, in order, checked; a line may carry a log prefix
    (logcat's time, pid and tag). A line that does not follow the format is a ResultsError."""
    records = []
    for line in text.splitlines():
        _, marker, payload = line.partition(f"{APP_MARKER} ")
        if not marker:
            continue
        try:
            record = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"a {APP_MARKER} line is not JSON ({exc}): {payload[:120]}") from None
        _check_app_record(record, payload)
        records.append(record)
    return records


def _check_app_record(record: Any, payload: str) -> None:
    def bad(what: str) -> ResultsError:
        return ResultsError(f"a {APP_MARKER} line {what}: {payload[:160]}")

    if not isinstance(record, dict):
        raise bad("is not a JSON object")
    if record.get("status") == "failed":
        if not isinstance(record.get("reason"), str):
            raise bad("says failed without a reason")
        return
    if record.get("status") != "ok":
        raise bad("has a status other than ok or failed")
    for name in ("stage", *_APP_CONTEXT):
        if not isinstance(record.get(name), str):
            raise bad(f"has no {name}")
    if not isinstance(record.get("runs"), int) or record["runs"] < 1:
        raise bad("has no runs")
    latency = record.get("latency_ms")
    if not (isinstance(latency, dict) and all(isinstance(latency.get(k), (int, float)) for k in LATENCY_KEYS)):
        raise bad(f"needs latency_ms with {', '.join(LATENCY_KEYS)}")
    size = record.get("input_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) for x in size)):
        raise bad("needs input_size [height, width]")


def app_measurement(record: Mapping[str, Any]) -> Measurement:
    """One ok line -> one Measurement: the stage is the entry point, the app's back end and runtime go into
    options (source "app" tells these rows from the bare entry points'); `load` runs once and is its first run."""
    latency = {key: float(record["latency_ms"][key]) for key in LATENCY_KEYS}
    load = record["stage"] == "load"
    image = record.get("image")
    if image and isinstance(record.get("image_size"), list):
        image = f"{image} {'x'.join(str(x) for x in reversed(record['image_size']))}"  # width x height
    options = {"source": "app", "backend": record["backend"], "runtime": record.get("runtime"), "image": image}
    return Measurement(
        runtime=APP_RUNTIMES.get(record["backend"], record["backend"]),
        device=f"{record['platform']}:{record['device']}", model=record["model"], entry_point=record["stage"],
        input_size=(record["input_size"][0], record["input_size"][1]), precision=record["precision"],
        options={key: value for key, value in options.items() if value is not None},
        warmup=0 if load else int(record.get("warmup", 0)), runs=record["runs"], latency_ms=latency,
        fps=None if load else 1000.0 / latency["p50"], first_run_ms=latency["p50"] if load else None,
    )
