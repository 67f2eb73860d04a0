"""One parity checker for every target: the PyTorch reference and the artifact on the same real photos and
a sweep of prompts, compared per output with one tolerance table.

Random tensors alone are not enough (a public exporter's noise-only test once missed a 10x logit
divergence that real images showed), so the inputs are real photos letterboxed as the apps do it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from rapsam.convert.base import Runner
from rapsam.export import get_entry_point
from rapsam.inference import letterbox
from rapsam.models.head import BOX, PADDING, POINT
from rapsam.models.rapsam import RapSAM
from rapsam.postprocess import panoptic_merge, semantic_map

MASK_OUTPUTS = ("mask_logits",)
LOWER_IS_BETTER = ("relative_error", "iou_abs_error")
HIGHER_IS_BETTER = ("mask_iou", "worst_mask_iou", "class_top1", "panoptic_agreement")


@dataclass(frozen=True)
class Tolerance:
    """Gates of one precision. Masks are judged by IoU of the thresholded logits, tensors by cosine
    (direction) and by the largest error relative to the largest reference value (scale)."""

    mask_iou: float
    cosine: float
    relative_error: float
    class_top1: float
    iou_abs_error: float
    panoptic_agreement: float
    # Pixels whose reference logit lies within this share of the mask's largest |logit| of 0 are undecided at
    # the precision (fp16 flips them on rounding alone) and are left out of the mask IoUs.
    mask_margin: float = 0.0


# The one tolerance table. fp16 is judged in mask space: its logits drift, its masks must not.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(mask_iou=0.999, cosine=0.99999, relative_error=1e-2, class_top1=0.99, iou_abs_error=1e-3, panoptic_agreement=0.999),
    "fp16": Tolerance(mask_iou=0.98, cosine=0.999, relative_error=5e-2, class_top1=0.95, iou_abs_error=2e-2, panoptic_agreement=0.98,
                      mask_margin=2.0**-7),
    # Quantized artifacts: parity only catches a broken artifact; what int8 costs is judged by the task metrics
    # (rapsam.quantize.accuracy), which gate it.
    "int8": Tolerance(mask_iou=0.5, cosine=0.9, relative_error=0.5, class_top1=0.5, iou_abs_error=0.5, panoptic_agreement=0.5),
}


@dataclass(frozen=True)
class Check:
    value: float
    limit: float
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


@dataclass(frozen=True)
class OutputParity:
    """Worst case over all inputs of one output of one entry point (or of a prompt case)."""

    entry: str
    case: str
    output: str
    max_abs: float
    mean_abs: float
    cosine: float
    extra: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks.values())


@dataclass(frozen=True)
class ParityReport:
    target: str
    precision: str
    runtime: str | None  # None: numerics not run here
    reason: str | None  # why they were not run
    rows: tuple[OutputParity, ...] = ()
    inputs: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()  # per-op notes of runners that can localize (the Core ML MIL reference)

    @property
    def ran(self) -> bool:
        return self.runtime is not None

    @property
    def passed(self) -> bool:
        return self.ran and all(row.passed for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            data = asdict(row)
            data["checks"] = {k: {**asdict(c), "passed": c.passed} for k, c in row.checks.items()}
            data["passed"] = row.passed
            rows.append(data)
        return {
            "target": self.target, "precision": self.precision, "runtime": self.runtime, "ran": self.ran,
            "reason": self.reason, "passed": self.passed, "inputs": list(self.inputs),
            "tolerance": asdict(TOLERANCES[self.precision]), "results": rows, "findings": list(self.findings),
        }

    def table(self) -> str:
        if not self.ran:
            return f"parity [{self.target}]: numerics not run: {self.reason}"
        lines = [f"parity [{self.target}, {self.precision}, {self.runtime}]",
                 f"{'entry':<9}{'case':<15}{'output':<14}{'max abs':>10}{'mean abs':>10}{'cosine':>10}  checks"]
        for r in self.rows:
            checks = ", ".join(f"{k} {c.value:.4g}{'>=' if c.higher_is_better else '<='}{c.limit:g}"
                               f"{'' if c.passed else ' FAIL'}" for k, c in r.checks.items())
            lines.append(f"{r.entry:<9}{r.case:<15}{r.output:<14}{r.max_abs:>10.3g}{r.mean_abs:>10.3g}"
                         f"{r.cosine:>10.6f}  {checks}")
        lines += [f"  op audit: {finding}" for finding in self.findings]
        lines.append(f"parity {'PASSED' if self.passed else 'FAILED'}")
        return "\n".join(lines)


def parity_photos() -> list[tuple[str, np.ndarray]]:
    """Real photos that ship with scikit-image: a person, a cat, a cup on a table."""
    from skimage import data

    return [("astronaut", data.astronaut()), ("chelsea", data.chelsea()), ("coffee", data.coffee())]


def prompt_cases(num_prompts: int, input_size: tuple[int, int], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The prompt sweep: boxes (1, K, 4) float32 and kinds (1, K) int32 per case, in the input frame."""
    rng = np.random.default_rng(seed)
    height, width = input_size
    k = num_prompts

    def click() -> list[float]:
        x, y = rng.uniform(0.1 * width, 0.9 * width), rng.uniform(0.1 * height, 0.9 * height)
        return [x - 3, y - 3, x + 3, y + 3]

    def box() -> list[float]:
        x0, y0 = rng.uniform(0, 0.6 * width), rng.uniform(0, 0.6 * height)
        return [x0, y0, x0 + rng.uniform(0.15, 0.4) * width, y0 + rng.uniform(0.15, 0.4) * height]

    def case(slots: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        boxes = [click() if s == POINT else box() if s == BOX else [0.0, 0.0, 0.0, 0.0] for s in slots]
        return np.asarray([boxes], np.float32), np.asarray([slots], np.int32)

    pad = [PADDING] * k
    cases = {
        "one_point": case([POINT] + pad[1:]),
        "points": case([POINT] * k),
        "one_box": case([BOX] + pad[1:]),
        "mixed": case([POINT if i % 2 == 0 else BOX for i in range(k)]),
    }
    if k > 1:
        cases["padded_middle"] = case([BOX] + pad[1:-1] + [POINT])
    return cases


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a == 0 or norm_b == 0:  # zeros match only zeros: an all-zero artifact output must fail
        return 1.0 if norm_a == norm_b else 0.0
    return float(a @ b / (norm_a * norm_b))


def mask_iou(reference: np.ndarray, artifact: np.ndarray, valid: np.ndarray | None = None, margin: float = 0.0) -> float:
    """IoU of the thresholded (logit > 0) masks pooled over the mask axis 1: total intersection over total union.

    Pooling weighs each mask by its area, so a broken mask counts as much as it covers while a few flipped
    pixels of a tiny low-score mask (common with random weights) do not decide the verdict; 1 if all are empty.
    Pixels whose reference logit is within `margin` x the mask's largest |logit| of 0 are not counted."""
    ref, art = _masks(reference, valid, margin), _masks(artifact, valid, margin, reference)
    union = int((ref | art).sum())
    return 1.0 if union == 0 else int((ref & art).sum()) / union


def worst_mask_iou(reference: np.ndarray, artifact: np.ndarray, valid: np.ndarray | None = None,
                   margin: float = 0.0) -> float:
    """The lowest IoU of a single mask (masks empty in both count 1): reported, not gated."""
    ref, art = _masks(reference, valid, margin), _masks(artifact, valid, margin, reference)
    inter = (ref & art).reshape(len(ref), -1).sum(1)
    union = (ref | art).reshape(len(ref), -1).sum(1)
    ious = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(ious.min()) if len(ious) else 1.0


def _masks(logits: np.ndarray, valid: np.ndarray | None, margin: float = 0.0,
           reference: np.ndarray | None = None) -> np.ndarray:
    """(M, h, w) booleans: logit > 0 where the reference logit is decided (outside the margin band)."""
    reference = logits if reference is None else reference
    masks, ref = logits[0] > 0, reference[0]
    if margin > 0:
        scale = np.abs(ref).reshape(len(ref), -1).max(1).reshape(-1, 1, 1)
        masks = masks & (np.abs(ref) >= margin * scale)
    return masks if valid is None else masks[valid]


def _panoptic_agreement(model: RapSAM, ref: dict[str, np.ndarray], art: dict[str, np.ndarray]) -> float:
    """Share of pixels with the same class after the panoptic merge, every query kept (most sensitive)."""
    maps = []
    for outputs in (ref, art):
        merged = panoptic_merge(
            torch.from_numpy(outputs["mask_logits"][0]), torch.from_numpy(outputs["class_logits"][0]),
            is_thing=model.config.taxonomy.is_thing, object_mask_threshold=0.0, overlap_threshold=0.0,
        )
        maps.append(semantic_map(merged.segment_map, merged.segments))
    return float((maps[0] == maps[1]).mean())


class ReferenceRunner:
    """The PyTorch model behind the same interface as an artifact."""

    runtime = f"torch {torch.__version__} (reference)"

    def __init__(self, model: RapSAM) -> None:
        self.model = model

    @torch.no_grad()
    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        contract = get_entry_point(entry)
        outputs = contract.wrapper(self.model)(*(torch.from_numpy(inputs[name]) for name in contract.inputs))
        return {name: value.numpy() for name, value in zip(contract.outputs, outputs)}


def check_parity(
    model: RapSAM,
    runner: Runner | str,
    *,
    target: str,
    entry_points: Sequence[str],
    input_size: tuple[int, int],
    num_prompts: int,
    precision: str,
    progress: Callable[[str], None] = lambda message: None,
) -> ParityReport:
    """Compare `runner` with the reference on real photos and the prompt sweep; worst case per output."""
    if isinstance(runner, str):
        return ParityReport(target=target, precision=precision, runtime=None, reason=runner)
    tolerance = TOLERANCES[precision]
    reference = ReferenceRunner(model)
    collected: dict[tuple[str, str, str], list[dict[str, float]]] = {}

    def compare(entry: str, case: str, ref: dict[str, np.ndarray], art: dict[str, np.ndarray], valid=None) -> None:
        for name, ref_value in ref.items():
            art_value = np.asarray(art[name], dtype=np.float32).reshape(ref_value.shape)
            diff = np.abs(ref_value.astype(np.float32) - art_value)
            scale = float(np.abs(ref_value).max())
            metrics = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                       "cosine": _cosine(ref_value, art_value),
                       "relative_error": float(diff.max()) / scale if scale > 0 else float(diff.max())}
            if name in MASK_OUTPUTS:
                metrics["mask_iou"] = mask_iou(ref_value, art_value, valid, tolerance.mask_margin)
                metrics["worst_mask_iou"] = worst_mask_iou(ref_value, art_value, valid, tolerance.mask_margin)
            if name == "class_logits":
                metrics["class_top1"] = float((ref_value.argmax(-1) == art_value.argmax(-1)).mean())
            if name == "iou":
                metrics["iou_abs_error"] = float(diff.max())
            collected.setdefault((entry, case, name), []).append(metrics)
        if {"mask_logits", "class_logits"} <= set(ref):
            collected.setdefault((entry, case, "panoptic_map"), []).append(
                {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "panoptic_agreement": _panoptic_agreement(model, ref, art)}
            )

    first_inputs: dict[str, dict[str, np.ndarray]] = {}  # per entry point, for a runner's per-op audit

    def run(entry: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first_inputs.setdefault(entry, inputs)
        return runner.run(entry, inputs)

    photos = parity_photos()
    for photo_name, photo in photos:
        progress(f"parity: {photo_name}")
        image, _ = letterbox(photo, input_size, model.config.pad_value)
        image_np = image.numpy()
        # Each entry point gets the same inputs on both sides, so a drift is pinned to the entry that
        # makes it; `segment` checks the chained image -> masks path end to end.
        features = reference.run("encode", {"image": image_np})["features"]
        if "encode" in entry_points:
            compare("encode", "-", {"features": features}, run("encode", {"image": image_np}))
        if "segment" in entry_points:
            compare("segment", "-", reference.run("segment", {"image": image_np}), run("segment", {"image": image_np}))
        if "panoptic" in entry_points:
            inputs = {"features": features}
            compare("panoptic", "-", reference.run("panoptic", inputs), run("panoptic", inputs))
        if "prompt" in entry_points:
            for case, (boxes, kinds) in prompt_cases(num_prompts, input_size).items():
                inputs = {"features": features, "boxes": boxes, "kinds": kinds}
                compare("prompt", case, reference.run("prompt", inputs), run("prompt", inputs), kinds[0] >= 0)

    rows = []
    for (entry, case, output), runs in collected.items():
        worst = {
            "max_abs": max(r["max_abs"] for r in runs),
            "mean_abs": float(np.mean([r["mean_abs"] for r in runs])),
            "cosine": min(r["cosine"] for r in runs),
        }
        extra = {k: min(r[k] for r in runs) for k in HIGHER_IS_BETTER if k in runs[0]}
        extra |= {k: max(r[k] for r in runs) for k in LOWER_IS_BETTER if k in runs[0]}
        checks = {}
        if output != "panoptic_map":
            checks["cosine"] = Check(worst["cosine"], tolerance.cosine, True)
        for key, value in extra.items():
            if hasattr(tolerance, key):
                checks[key] = Check(value, getattr(tolerance, key), key not in LOWER_IS_BETTER)
        rows.append(OutputParity(entry=entry, case=case, output=output, extra=extra, checks=checks, **worst))
    findings = []
    diagnose = getattr(runner, "diagnose", None)
    if diagnose is not None:
        for entry, inputs in first_inputs.items():
            progress(f"parity: per-op audit of {entry}")
            findings += [f"{entry}: {line}" for line in diagnose(model, entry, inputs, input_size, num_prompts)]
    return ParityReport(
        target=target, precision=precision, runtime=runner.runtime, reason=None, rows=tuple(rows),
        inputs=tuple(name for name, _ in photos), findings=tuple(findings),
    )
