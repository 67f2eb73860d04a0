"""`rapsam-bench coreml-report`: the numbers of Xcode's Core ML performance report as a results file.

Xcode (14+; per-op costs from 15) shows a report for an .mlpackage on a connected device: median prediction,
load and compilation times, and the compute unit of every operation. It exports no file of them that we
could establish, so this reads the same fields written down in a small documented JSON (or CSV) file; the
layout is in docs/bench-devices.md. The report gives medians only: every latency key is the median.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import rapsam
from rapsam.bench.android import ArtifactFacts, read_manifest, save_and_print, summary
from rapsam.bench.ios import coreml_device
from rapsam.bench.schema import LATENCY_KEYS, Measurement, Results, ResultsError
from rapsam.bench.timing import BenchError
from rapsam.fileio import read_json_object

LATENCY_FROM = "Xcode performance report median"
_TOP = {"device": str, "os": str, "compute_units": str, "entry_points": dict}
_CSV_COLUMNS = ("entry_point", "median_prediction_ms", "device", "os", "compute_units")


def load_coreml_report(path: str | Path) -> dict[str, Any]:
    """A report file (.json, or .csv with one row per entry point) -> the JSON layout, checked."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"report not found: {path}")
    if path.suffix.lower() == ".csv":
        report = _from_csv(path)
    else:
        report = read_json_object(path, what="a report object", error=BenchError)
    for name, kind in _TOP.items():
        if not isinstance(report.get(name), kind):
            raise BenchError(f"{path}: field {name!r} is missing or not a {kind.__name__}")
    if not report["entry_points"]:
        raise BenchError(f"{path}: no entry points")
    for entry, section in report["entry_points"].items():
        if not isinstance(section, dict) or not _is_number(section.get("median_prediction_ms")):
            raise BenchError(f"{path}: entry point {entry} needs median_prediction_ms, a number")
        if not _is_number(section.get("median_load_ms", 0.0)):
            raise BenchError(f"{path}: entry point {entry}: median_load_ms must be a number")
    return report


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_csv(path: Path) -> dict[str, Any]:
    """Columns entry_point, median_prediction_ms, device, os, compute_units (the same in every row), and
    optionally median_load_ms, median_compilation_ms, platform, soc."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in _CSV_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise BenchError(f"{path}: the CSV needs a header with {', '.join(_CSV_COLUMNS)} (missing {missing})")
    report: dict[str, Any] = {"entry_points": {}}
    for row in rows:
        for name in ("device", "os", "compute_units", "platform", "soc"):
            if row.get(name) and report.setdefault(name, row[name]) != row[name]:
                raise BenchError(f"{path}: column {name} differs between rows ({report[name]}, {row[name]})")
        try:
            report["entry_points"][row["entry_point"]] = {
                key: float(row[key]) for key in ("median_prediction_ms", "median_load_ms", "median_compilation_ms")
                if row.get(key)
            }
        except ValueError as exc:
            raise BenchError(f"{path}: entry point {row['entry_point']}: {exc}") from None
    return report


def report_facts(report: Mapping[str, Any], artifact: Path | None) -> ArtifactFacts:
    """Model, input size and precision: from the artifact's manifest, else from the report's own fields."""
    if artifact is not None:
        return read_manifest(artifact / "manifest.json")
    try:
        height, width = report["input_size"]
        return ArtifactFacts(model=str(report["model"]), input_size=(int(height), int(width)),
                             precision=str(report["precision"]), entries={}, target={}, versions={})
    except (KeyError, TypeError, ValueError):
        raise BenchError("the report names no model, input_size and precision: pass --artifact (the Core ML "
                         "folder it was made from)") from None


def ops_by_unit(operations: Any) -> str | None:
    """'Neural Engine 410, CPU 3': where the operations ran, most used unit first."""
    if not isinstance(operations, list) or not operations:
        return None
    counts = Counter(str(op.get("compute_unit", "unknown")) for op in operations if isinstance(op, dict))
    return ", ".join(f"{unit} {count}" for unit, count in counts.most_common())


def report_measurement(entry: str, section: Mapping[str, Any], report: Mapping[str, Any],
                       facts: ArtifactFacts) -> Measurement:
    median = float(section["median_prediction_ms"])
    load = section.get("median_load_ms")
    options = {"compute_units": report["compute_units"], "latency_from": LATENCY_FROM}
    ops = ops_by_unit(section.get("operations"))
    return Measurement(
        runtime="coreml", device=coreml_device(report.get("platform"), report["device"]), model=facts.model,
        entry_point=entry, input_size=facts.input_size, precision=facts.precision,
        options=options | ({"ops_on": ops} if ops else {}), latency_ms=dict.fromkeys(LATENCY_KEYS, median),
        fps=1000.0 / median, first_run_ms=float(load) + median if load is not None else None,
    )


def import_coreml_report(report_path: str | Path, *, artifact: str | Path | None = None) -> Results:
    """A report file -> Results: one coreml Measurement per entry point it lists."""
    report = load_coreml_report(report_path)
    facts = report_facts(report, Path(artifact) if artifact is not None else None)
    return Results(
        machine={"kind": "macos" if report.get("platform") == "macOS" else "ios", "device": report["device"],
                 "os": report["os"], "soc": report.get("soc"), "source": "Xcode Core ML performance report"},
        versions={"rapsam": rapsam.__version__, "python": platform.python_version(),
                  **({"xcode": str(report["xcode"])} if report.get("xcode") else {})},
        settings={"report": str(report_path), "artifact": str(artifact) if artifact is not None else None},
        measurements=[report_measurement(e, s, report, facts) for e, s in report["entry_points"].items()],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def register(subparsers: Any) -> None:
    """Add `coreml-report` to a `rapsam-bench` argparse subparsers object (ios.register calls this)."""
    parser = subparsers.add_parser(
        "coreml-report", help="import the numbers of Xcode's Core ML performance report",
        description="Turn the medians of an Xcode Core ML performance report, written down as JSON or CSV "
                    "(layout in docs/bench-devices.md), into a results file.")
    parser.add_argument("report", type=Path, help="report .json or .csv")
    parser.add_argument("--artifact", type=Path, help="the Core ML folder the report was made from (model, size, "
                        "precision; needed unless the report names them)")
    parser.add_argument("--out", type=Path, help="results JSON (default results/bench-ios-<device>-coreml.json)")
    parser.set_defaults(func=coreml_report_main)


def coreml_report_main(args: argparse.Namespace) -> int:
    try:
        results = import_coreml_report(args.report, artifact=args.artifact)
        return save_and_print(results, args.out,
                              lambda m: f"{summary(m)} ({m.options.get('ops_on', 'no op table')})")
    except (BenchError, ResultsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
