"""Panoptic quality (PQ, SQ, RQ) with the exact semantics of panopticapi's `pq_compute`.

Reference: cocodataset/panopticapi, `panopticapi/evaluation.py` (`pq_compute_single_core` and
`PQStat.pq_average`). The reference reads PNGs and JSON; here each image is given as an id map plus
its segment list, so the numbers match the reference on the same predictions without the
panopticapi / PIL dependency and without per-image files.

Rules reproduced from the reference (per image):

* gt id 0 is VOID (unlabeled pixels); pred id 0 is "no prediction" and is never a segment unless it
  is listed in the pred segments (the reference behaves the same way).
* A gt/pred pair is a match iff same category, gt not crowd and IoU > 0.5 (strictly), where
  `union = pred_area + gt_area - intersection - |pred ∩ VOID|`: VOID pixels do not penalise a pred.
* Unmatched non-crowd gt -> FN. Unmatched pred -> FP unless more than half of it lies on VOID plus
  the crowd region of its own category (then it is ignored). As in the reference only *one* crowd
  region per category is used: the last crowd segment of that category in the gt segment list.
* Class averages ("All", "Things", "Stuff") run over categories with tp + fp + fn > 0.

Deviations (documented, none changes the numbers on valid COCO-panoptic data):

* gt segment areas are counted from the gt map; the reference reads `area` from the gt JSON, which
  is the same pixel count for COCO panoptic.
* Errors are `ValueError` (the reference raises `KeyError`) and name the image index (the order of
  `add` calls) instead of the image id.
* A gt segment with a category not in `categories` raises; the reference silently drops it.
* An average over zero categories (e.g. "Stuff" for a things-only label set) gives 0.0 with n = 0;
  the reference divides by zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

VOID = 0


@dataclass(frozen=True)
class SegmentInfo:
    """One entry of COCO-panoptic `segments_info`."""

    id: int
    category_id: int
    iscrowd: bool = False


@dataclass
class PanopticAnnotation:
    """One image: an (H, W) integer id map and the segments it contains."""

    segment_map: np.ndarray
    segments: Sequence[SegmentInfo] = field(default_factory=list)


@dataclass
class _ClassStat:
    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0


class PQAccumulator:
    """Streams images into per-class tp/fp/fn/IoU sums, like panopticapi's `PQStat`."""

    def __init__(self, categories: Mapping[int, bool]) -> None:
        """`categories`: category_id -> isthing. Its order is the order of `per_class` in results."""
        self.categories = {int(k): bool(v) for k, v in categories.items()}
        self._stats: dict[int, _ClassStat] = {k: _ClassStat() for k in self.categories}
        self._num_images = 0

    def add(self, gt: PanopticAnnotation, pred: PanopticAnnotation) -> None:
        """Adds one image.

        Raises ValueError, naming the image index, when a pred id in the map has no segment info,
        when a listed pred segment has no pixel in the map (panopticapi raises on this as well: a
        prediction must not list empty segments), when a category is unknown, or when the maps'
        shapes differ.
        """
        index = self._num_images
        gt_map = np.asarray(gt.segment_map)
        pred_map = np.asarray(pred.segment_map)
        if gt_map.shape != pred_map.shape:
            raise ValueError(f"image {index}: gt map shape {gt_map.shape} != pred map shape {pred_map.shape}")

        gt_segms = {int(s.id): s for s in gt.segments}
        pred_segms = {int(s.id): s for s in pred.segments}
        for s in gt_segms.values():
            self._check_category(index, "gt", s)

        # Joint histogram of (gt id, pred id) pairs; keys come out sorted like the reference's np.unique.
        gt_ids, gt_inv = np.unique(gt_map.ravel(), return_inverse=True)
        pred_ids, pred_inv = np.unique(pred_map.ravel(), return_inverse=True)
        counts = np.bincount(gt_inv * len(pred_ids) + pred_inv, minlength=len(gt_ids) * len(pred_ids))
        counts = counts.reshape(len(gt_ids), len(pred_ids))
        gt_area = dict(zip(gt_ids.tolist(), counts.sum(axis=1).tolist()))
        pred_area = dict(zip(pred_ids.tolist(), counts.sum(axis=0).tolist()))
        gi, pi = np.nonzero(counts)
        gt_pred = {(int(gt_ids[g]), int(pred_ids[p])): int(counts[g, p]) for g, p in zip(gi, pi)}

        for label in pred_area:
            if label not in pred_segms:
                if label == VOID:
                    continue
                raise ValueError(f"image {index}: pred segment id {label} is in the map but not in the segments")
            self._check_category(index, "pred", pred_segms[label])
        missing = [label for label in pred_segms if label not in pred_area]
        if missing:
            raise ValueError(f"image {index}: pred segment ids {missing} are in the segments but not in the map")

        gt_matched: set[int] = set()
        pred_matched: set[int] = set()
        for (gt_label, pred_label), intersection in gt_pred.items():
            if gt_label not in gt_segms or pred_label not in pred_segms:
                continue
            g, p = gt_segms[gt_label], pred_segms[pred_label]
            if g.iscrowd or g.category_id != p.category_id:
                continue
            union = pred_area[pred_label] + gt_area[gt_label] - intersection - gt_pred.get((VOID, pred_label), 0)
            iou = intersection / union
            if iou > 0.5:
                stat = self._stats[g.category_id]
                stat.tp += 1
                stat.iou += iou
                gt_matched.add(gt_label)
                pred_matched.add(pred_label)

        crowd_by_category: dict[int, int] = {}
        for gt_label, g in gt_segms.items():
            if gt_label in gt_matched:
                continue
            if g.iscrowd:
                crowd_by_category[g.category_id] = gt_label
                continue
            self._stats[g.category_id].fn += 1

        for pred_label, p in pred_segms.items():
            if pred_label in pred_matched:
                continue
            ignored = gt_pred.get((VOID, pred_label), 0)
            if p.category_id in crowd_by_category:
                ignored += gt_pred.get((crowd_by_category[p.category_id], pred_label), 0)
            if ignored / pred_area[pred_label] > 0.5:
                continue
            self._stats[p.category_id].fp += 1

        self._num_images += 1

    def _check_category(self, index: int, which: str, segment: SegmentInfo) -> None:
        if segment.category_id not in self.categories:
            raise ValueError(
                f"image {index}: {which} segment id {segment.id} has unknown category_id {segment.category_id}"
            )

    def _average(self, isthing: bool | None) -> tuple[dict[str, float | int], dict[int, dict[str, float | int]]]:
        """`PQStat.pq_average`: plain mean over the classes that appear (tp + fp + fn > 0)."""
        pq = sq = rq = 0.0
        n = 0
        per_class: dict[int, dict[str, float | int]] = {}
        for cat, cat_isthing in self.categories.items():
            if isthing is not None and isthing != cat_isthing:
                continue
            s = self._stats[cat]
            counts = {"tp": s.tp, "fp": s.fp, "fn": s.fn}
            if s.tp + s.fp + s.fn == 0:
                per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, **counts}
                continue
            n += 1
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            pq_c = s.iou / denom
            sq_c = s.iou / s.tp if s.tp != 0 else 0.0
            rq_c = s.tp / denom
            per_class[cat] = {"pq": pq_c, "sq": sq_c, "rq": rq_c, **counts}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class

    def result(self) -> dict:
        """{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {cat: {"pq", "sq", "rq", "tp", "fp", "fn"}}}.

        Values are fractions in [0, 1] (panopticapi prints them x100).
        """
        results: dict = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            results[name], per_class = self._average(isthing)
            if name == "All":
                results["per_class"] = per_class
        return results


def pq_compute(pairs: Iterable[tuple[PanopticAnnotation, PanopticAnnotation]], categories: Mapping[int, bool]) -> dict:
    """PQ over (gt, pred) pairs; see `PQAccumulator.result` for the returned dict."""
    acc = PQAccumulator(categories)
    for gt, pred in pairs:
        acc.add(gt, pred)
    return acc.result()
