"""What quantization cost, across artifacts: one Markdown table + JSON from converted folders and bench results.

Each folder contributes its manifest: target, scheme, size on disk, the accuracy gate's metrics (the fp32
PyTorch model's and the artifact's, on the same held-out data) and what stayed float. Latency comes from
`rapsam-bench` results (rows of the same model, input size, target runtime and precision / scheme), so the
table's numbers are all measured, none typed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rapsam.convert.manifest import precision_label, read_manifest
from rapsam.quantize.base import QuantizationError

METRICS = ("pq", "prompt_point", "prompt_box", "video_ap")
LATENCY_ENTRIES = ("segment", "prompt")


def artifact_row(folder: str | Path) -> dict[str, Any]:
    """The figures of one converted folder (quantized or not)."""
    folder = Path(folder)
    manifest = read_manifest(folder, error=QuantizationError)
    quantization = manifest["precision"].get("quantization") or {}
    accuracy = quantization.get("accuracy") or {}
    return {
        "folder": str(folder),
        "model": manifest["model"]["name"],
        "input_size": list(manifest["input_size"]),
        "target": manifest["target"]["name"],
        "scheme": precision_label(manifest),
        "size_mb": round(_size(folder, manifest) / 2**20, 3),
        "reference": dict(accuracy.get("reference") or {}),
        "metrics": dict(accuracy.get("quantized") or {}),
        "gate": _gate(quantization, accuracy),
        "gate_reason": accuracy.get("reason"),
        "parity": _parity(manifest),
        "kept_float": len(quantization.get("kept_float", [])),
        "calibration_sha256": (quantization.get("calibration") or {}).get("sha256"),
        "latency_ms": {},
    }


def _gate(quantization: Mapping[str, Any], accuracy: Mapping[str, Any]) -> str:
    """passed / failed / not judged (the reason is in `gate_reason`); "-" for an artifact that is not quantized."""
    if not quantization:
        return "-"
    if not accuracy or accuracy.get("reason"):
        return "not judged"
    return "passed" if accuracy.get("passed") else "failed"


def _parity(manifest: Mapping[str, Any]) -> dict[str, float | None]:
    """The worst mask IoU and class agreement against fp32 PyTorch over the parity checker's inputs and prompts
    (None where parity did not run)."""
    rows = (manifest.get("parity") or {}).get("results") or []

    def worst(check: str) -> float | None:
        values = [row["checks"][check]["value"] for row in rows if check in row["checks"]]
        return min(values) if values else None

    return {"mask_iou": worst("mask_iou"), "label_agreement": worst("class_top1")}


def _size(folder: Path, manifest: Mapping[str, Any]) -> int:
    """Bytes of the artifact files (a .mlpackage is a folder), each counted once."""
    total = 0
    for name in sorted({section["file"] for section in manifest["entry_points"].values()}):
        path = folder / name
        total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return total


def add_latency(rows: Sequence[dict[str, Any]], measurements: Iterable[Any]) -> None:
    """Fill each row's p50 latency (ms) per entry point from rapsam-bench measurements of the same artifact kind."""
    from rapsam.bench.desktop import ARTIFACT_TARGETS

    for m in measurements:
        if m.status != "ok" or m.entry_point not in LATENCY_ENTRIES:
            continue
        for row in rows:
            if (ARTIFACT_TARGETS.get(m.runtime) == row["target"] and row["scheme"] == m.precision
                    and row["model"] == m.model and list(row["input_size"]) == list(m.input_size)):
                row["latency_ms"][m.entry_point] = round(m.latency_ms["p50"], 2)


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of the table, the fp32 PyTorch reference first (from the first row that was judged). Parity is the
    worst case over the checker's inputs and prompts: an alarm for a broken artifact, not the task metric."""
    header = ["target", "scheme", "size MB", "PQ", "click mIoU", "box mIoU", "VIS AP", "parity mask IoU (worst)",
              "parity labels (worst)", *(f"{e} p50 ms" for e in LATENCY_ENTRIES), "gate"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 3) + "---|"]
    reference = next((row["reference"] for row in rows if row["reference"]), None)
    if reference:
        cells = ["PyTorch", "fp32 (reference)", "-", *(_metric(reference.get(m)) for m in METRICS), "1", "1",
                 *("-" for _ in LATENCY_ENTRIES), "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for row in rows:
        metrics = [_metric(row["metrics"].get(m), row["reference"].get(m)) for m in METRICS]
        latency = [f"{row['latency_ms'][e]:.1f}" if e in row["latency_ms"] else "-" for e in LATENCY_ENTRIES]
        parity = [f"{row['parity'][k]:.3f}" if row["parity"][k] is not None else "-"
                  for k in ("mask_iou", "label_agreement")]
        cells = [row["target"], row["scheme"], f"{row['size_mb']:.2f}", *metrics, *parity, *latency, row["gate"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metric(value: float | None, reference: float | None = None) -> str:
    if value is None:
        return "-"
    kept = f" ({value / reference:.0%})" if reference else ""
    return f"{100 * value:.1f}{kept}"


def write_report(folders: Sequence[str | Path], out: str | Path, bench: Sequence[str | Path] = ()) -> str:
    """Rows of `folders` with the latency of `bench` results, written to `out`.json and `out`.md."""
    from rapsam.bench.schema import read_results

    if not folders:
        raise QuantizationError("give the folders of rapsam-convert to report on")
    rows = [artifact_row(folder) for folder in folders]
    for path in bench:
        add_latency(rows, read_results(path).measurements)
    table = markdown(rows)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=2, sort_keys=True) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    return table
