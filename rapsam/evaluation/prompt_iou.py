"""Prompt (interactive) segmentation mIoU, as in the COCO-SAM / EdgeSAM 1-point evaluations.

Each prompt yields one predicted mask compared with the GT mask it was sampled from; mIoU is the
plain mean of the per-prompt IoUs over all prompts (not a per-image or per-class mean, and not a
ratio of summed intersections to summed unions).
"""

from __future__ import annotations

import numpy as np


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-mask IoU of (K, H, W) boolean stacks -> (K,) float64; (H, W) inputs count as K = 1.

    An empty-vs-empty pair (union 0) scores 1.0: the prediction is exactly right, and SAM-style
    evaluations count it so. Prompts are sampled from non-empty GT masks, so this rarely matters.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.ndim == 2:
        pred = pred[None]
    if gt.ndim == 2:
        gt = gt[None]
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same (K, H, W) shape")
    inter = np.logical_and(pred, gt).reshape(len(pred), -1).sum(axis=1)
    union = np.logical_or(pred, gt).reshape(len(pred), -1).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


class PromptIoUAccumulator:
    """Collects per-prompt IoUs, overall and per prompt kind (e.g. "point", "box")."""

    def __init__(self) -> None:
        self._ious: dict[str, list[np.ndarray]] = {}

    def add(self, pred: np.ndarray, gt: np.ndarray, kind: str = "point") -> np.ndarray:
        """Adds K prompts of one kind; returns their IoUs."""
        ious = mask_iou(pred, gt)
        self._ious.setdefault(kind, []).append(ious)
        return ious

    def result(self) -> dict:
        """{"miou", "n", "per_kind": {kind: {"miou", "n"}}}; miou is a fraction, NaN when n = 0."""
        per_kind = {}
        for kind, chunks in self._ious.items():
            ious = np.concatenate(chunks)
            per_kind[kind] = {"miou": float(ious.mean()) if len(ious) else float("nan"), "n": len(ious)}
        everything = (
            np.concatenate([c for chunks in self._ious.values() for c in chunks]) if self._ious else np.zeros(0)
        )
        miou = float(everything.mean()) if len(everything) else float("nan")
        return {"miou": miou, "n": len(everything), "per_kind": per_kind}
