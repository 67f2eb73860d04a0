"""What quantization cost, in task metrics on held-out data: the quantized artifact through its own runtime beside
the fp32 PyTorch model, scored by rapsam-eval's code. The gate keeps an artifact only if it holds `keep` of the
fp32 model's PQ and prompt mIoU (click and box)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rapsam.convert.base import Runner
from rapsam.evaluation.evaluate import Predictor, evaluate, torch_predictor
from rapsam.models.rapsam import RapSAM

GATED = ("pq", "prompt_point", "prompt_box")


@dataclass(frozen=True)
class AccuracyReport:
    data: str
    reference: Mapping[str, float | None]  # the fp32 PyTorch model's headline metrics
    quantized: Mapping[str, float | None]  # the artifact's, through its runtime
    keep: float
    passed: bool
    reason: str | None  # why the gate did not judge (no data, an fp32 model that scores nothing)

    def ratio(self, metric: str) -> float | None:
        ref, got = self.reference.get(metric), self.quantized.get(metric)
        return got / ref if ref and got is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": {m: self.ratio(m) for m in self.reference}}

    def table(self) -> str:
        lines = ["| metric | fp32 (PyTorch) | quantized | kept |", "|---|---:|---:|---:|"]
        for metric in self.reference:
            ref, got, ratio = self.reference[metric], self.quantized.get(metric), self.ratio(metric)
            cells = [f"{v:.3f}" if v is not None else "-" for v in (ref, got)]
            lines.append(f"| {metric} | {cells[0]} | {cells[1]} | {f'{ratio:.1%}' if ratio is not None else '-'} |")
        verdict = "passed" if self.passed else f"failed (needs {self.keep:.0%} of fp32 on {', '.join(GATED)})"
        return "\n".join([*lines, f"gate: {self.reason or verdict}"])


def headline(results: Mapping[str, Any]) -> dict[str, float | None]:
    """PQ, click and box mIoU, VIS mAP (fractions) of an `evaluate` result."""
    kinds = results.get("prompt", {}).get("per_kind", {})
    return {
        "pq": results["panoptic"]["All"]["pq"] if "panoptic" in results else None,
        "prompt_point": kinds.get("point", {}).get("miou"),
        "prompt_box": kinds.get("box", {}).get("miou"),
        "video_ap": results["video"]["AP"] if "video" in results else None,
    }


def synthetic_heldout(model: RapSAM, count: int, folder: Path) -> Path:
    """The synthetic generator's validation scenes (seeded per split and index: the demo never trained on them)."""
    from rapsam.data import write_synthetic

    write_synthetic(folder, num_train=1, num_val=count, num_videos_train=1, num_videos_val=max(count // 10, 2),
                    image_size=tuple(model.config.default_size))
    return folder


def accuracy_report(
    model: RapSAM,
    runner: Runner | str,
    *,
    input_size: tuple[int, int],
    prompt_slots: int,
    data: str | Path | None = None,
    limit: int = 50,
    keep: float = 0.95,
    progress: Callable[[str], None] = lambda message: None,
) -> AccuracyReport:
    """Evaluate the fp32 model and the quantized runner on the same held-out data. `data`: a root with `coco/`
    (and `ytvis/`), a COCO panoptic root, or "synthetic"; by default the synthetic scenes for a model of the
    synthetic classes, and no gate (with the reason) for the others, nor where the artifact cannot run here
    (`runner` is then the converter's reason, e.g. Core ML off macOS)."""
    if isinstance(runner, str):
        return AccuracyReport("none", {}, {}, keep, passed=True, reason=f"not judged: {runner}")
    if data is None and model.config.taxonomy.name != "shapes":
        return AccuracyReport("none", {}, {}, keep, passed=True,
                              reason=f"not judged: give --eval-data (COCO val) for a {model.config.taxonomy.name} model")
    with tempfile.TemporaryDirectory(prefix="rapsam-heldout-") as tmp:
        root = synthetic_heldout(model, limit, Path(tmp)) if data in (None, "synthetic") else Path(data)
        coco = root / "coco" if (root / "coco").is_dir() else root
        ytvis = root / "ytvis" if (root / "ytvis").is_dir() else None
        reference = torch_predictor(model, input_size)
        quantized = Predictor(runner, "quantized", input_size, prompt_slots, model.config.taxonomy,
                              model.config.pad_value)
        scores = []
        for name, predictor in (("fp32", reference), ("quantized", quantized)):
            progress(f"[accuracy] {name} on {root if data else 'held-out synthetic scenes'}")
            scores.append(headline(evaluate(predictor, coco=coco, ytvis=ytvis, limit=limit)))
    ref, got = scores
    judged = [m for m in GATED if ref.get(m)]
    if not judged:
        return AccuracyReport(str(data or "synthetic"), ref, got, keep, passed=True,
                              reason="not judged: the fp32 model scores 0 here (random weights?)")
    passed = all((got.get(m) or 0.0) >= keep * (ref[m] or 0.0) for m in judged)
    return AccuracyReport(str(data or "synthetic"), ref, got, keep, passed=passed, reason=None)
