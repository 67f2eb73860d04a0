"""YouTube-VIS mask AP / AR with the semantics of the official evaluator.

Reference: youtubevos/cocoapi `PythonAPI/pycocotools/ytvoseval.py` (`YTVOSeval`), a fork of
pycocotools `COCOeval` where an "image" is a video and a mask is a tube:

* IoU of two tubes = sum over frames of |intersection| / sum over frames of |union|, frames where a
  tube is absent being empty masks; 0 when the union is empty.
* Per (video, category): detections sorted by score (descending, stable), the first 100 kept, and
  greedily matched at each IoU threshold in np.linspace(.5, .95, 10) (match iff IoU >= threshold),
  crowd gts ("ignore") tried last; a detection matched to a crowd gt is ignored, and a crowd gt can
  absorb several detections.
* Accumulation as `COCOeval.accumulate`: per category, scores pooled over videos (stable sort),
  tp/fp cumsums, the monotone precision envelope, 101 recall thresholds via
  `np.searchsorted(rc, recThrs, side="left")`; AP is the mean over valid (> -1) entries.
* Categories are those of the gts (the reference takes the gt file's category list; a category with
  no gt yields no valid entry there either). Videos are those of the gts unless `video_ids` is given.

Crowd IoU: `ytvoseval.computeIoU` builds the `iscrowd` list but never uses it (the
`maskUtils.iou(d, g, iscrowd)` call is commented out), so a crowd gt gets the plain tube IoU. That
is the default here. `crowd_iou="detection"` instead uses image COCOeval's rule for crowd gts,
|intersection| / |detection|, summed over frames; with T = 1 that reproduces pycocotools COCOeval.

Not computed: the small/medium/large area breakdown (only areaRng "all"; a tube with an average
area above 1e10 pixels, the only thing "all" would exclude, cannot occur in practice).
Undefined values (no non-crowd gt at all) are -1, as in the reference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)


@dataclass
class Tube:
    """One instance across a video: masks (T, H, W) bool, an all-False frame meaning absent."""

    video_id: int
    category_id: int
    masks: np.ndarray
    score: float = 1.0
    iscrowd: bool = False


def tube_iou(
    dts: Sequence[Tube], gts: Sequence[Tube], crowd_iou: Literal["union", "detection"] = "union"
) -> np.ndarray:
    """(D, G) spatio-temporal IoU. Pixel counts are exact (float32 products per frame, int64 sums)."""
    ious = np.zeros((len(dts), len(gts)))
    if not dts or not gts:
        return ious
    shapes = {np.shape(t.masks) for t in (*dts, *gts)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"video {gts[0].video_id}: tubes must share one (T, H, W) shape, got {sorted(shapes)}")
    num_frames = next(iter(shapes))[0]
    inter = np.zeros((len(dts), len(gts)), dtype=np.int64)
    area_d = np.zeros(len(dts), dtype=np.int64)
    area_g = np.zeros(len(gts), dtype=np.int64)
    for f in range(num_frames):
        d = np.stack([np.asarray(t.masks[f], dtype=bool).ravel() for t in dts])
        g = np.stack([np.asarray(t.masks[f], dtype=bool).ravel() for t in gts])
        # float32 is exact for counts below 2**24 pixels per frame.
        inter += np.rint(d.astype(np.float32) @ g.astype(np.float32).T).astype(np.int64)
        area_d += d.sum(axis=1)
        area_g += g.sum(axis=1)
    union = area_d[:, None] + area_g[None, :] - inter
    if crowd_iou == "detection":
        crowd = np.array([bool(t.iscrowd) for t in gts])
        union = np.where(crowd[None, :], area_d[:, None], union)
    elif crowd_iou != "union":
        raise ValueError(f"crowd_iou must be 'union' or 'detection', got {crowd_iou!r}")
    np.divide(inter, union, out=ious, where=union > 0)
    return ious


def _evaluate_video(
    gts: list[Tube], dts: list[Tube], crowd_iou: Literal["union", "detection"]
) -> dict[str, np.ndarray] | None:
    """`evaluateVid` for one (video, category) at maxDet 100: which detections match / are ignored."""
    if not gts and not dts:
        return None
    order = np.argsort([-d.score for d in dts], kind="mergesort")[: MAX_DETS[-1]]
    dts = [dts[i] for i in order]
    gt_order = np.argsort([int(bool(g.iscrowd)) for g in gts], kind="mergesort")
    gts = [gts[i] for i in gt_order]
    gt_ig = np.array([bool(g.iscrowd) for g in gts], dtype=bool)
    ious = tube_iou(dts, gts, crowd_iou)

    num_t = len(IOU_THRS)
    gt_matched = np.zeros((num_t, len(gts)), dtype=bool)
    dt_matched = np.zeros((num_t, len(dts)), dtype=bool)
    dt_ig = np.zeros((num_t, len(dts)), dtype=bool)
    if len(dts) and len(gts):
        for t_ind, t in enumerate(IOU_THRS):
            for d_ind in range(len(dts)):
                best = min(t, 1 - 1e-10)
                m = -1
                for g_ind in range(len(gts)):
                    if gt_matched[t_ind, g_ind] and not gt_ig[g_ind]:
                        continue  # already taken, and not a crowd
                    if m > -1 and not gt_ig[m] and gt_ig[g_ind]:
                        break  # matched a regular gt; only crowd gts remain
                    if ious[d_ind, g_ind] < best:
                        continue
                    best = ious[d_ind, g_ind]
                    m = g_ind
                if m == -1:
                    continue
                dt_ig[t_ind, d_ind] = gt_ig[m]
                dt_matched[t_ind, d_ind] = True
                gt_matched[t_ind, m] = True
    return {
        "scores": np.array([d.score for d in dts], dtype=np.float64),
        "dt_matched": dt_matched,
        "dt_ignore": dt_ig,
        "gt_ignore": gt_ig,
    }


def _accumulate(evals: list[dict[str, np.ndarray]], max_det: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`COCOeval.accumulate` for one category and maxDet: precision (T, R) and recall (T,)."""
    scores = np.concatenate([e["scores"][:max_det] for e in evals])
    inds = np.argsort(-scores, kind="mergesort")
    dtm = np.concatenate([e["dt_matched"][:, :max_det] for e in evals], axis=1)[:, inds]
    dt_ig = np.concatenate([e["dt_ignore"][:, :max_det] for e in evals], axis=1)[:, inds]
    gt_ig = np.concatenate([e["gt_ignore"] for e in evals])
    npig = np.count_nonzero(~gt_ig)
    if npig == 0:
        return None
    tp_sum = np.cumsum(dtm & ~dt_ig, axis=1).astype(np.float64)
    fp_sum = np.cumsum(~dtm & ~dt_ig, axis=1).astype(np.float64)
    precision = np.zeros((len(IOU_THRS), len(REC_THRS)))
    recall = np.zeros(len(IOU_THRS))
    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
        nd = len(tp)
        rc = tp / npig
        pr = (tp / (fp + tp + np.spacing(1))).tolist()
        recall[t] = rc[-1] if nd else 0
        for i in range(nd - 1, 0, -1):  # precision envelope: make it non-increasing
            pr[i - 1] = max(pr[i - 1], pr[i])
        # Recall thresholds beyond the reached recall keep precision 0 (the reference's try/except).
        for r_ind, p_ind in enumerate(np.searchsorted(rc, REC_THRS, side="left")):
            if p_ind >= nd:
                break
            precision[t, r_ind] = pr[p_ind]
    return precision, recall


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def video_ap(
    gts: Sequence[Tube],
    dts: Sequence[Tube],
    video_ids: Iterable[int] | None = None,
    crowd_iou: Literal["union", "detection"] = "union",
) -> dict[str, float]:
    """{"AP", "AP50", "AP75", "AR1", "AR10", "AR100"} as fractions, -1 where undefined.

    `video_ids` defaults to the videos of `gts`; pass the dataset's full list when some videos have
    no gt tube, since the reference counts detections in such videos as false positives. Detections
    in other videos or of categories absent from `gts` are dropped, as in the reference.
    """
    cat_ids = sorted({int(g.category_id) for g in gts})
    vid_ids = sorted({int(v) for v in video_ids} if video_ids is not None else {int(g.video_id) for g in gts})
    gt_by: dict[tuple[int, int], list[Tube]] = defaultdict(list)
    dt_by: dict[tuple[int, int], list[Tube]] = defaultdict(list)
    for g in gts:
        gt_by[int(g.video_id), int(g.category_id)].append(g)
    for d in dts:
        dt_by[int(d.video_id), int(d.category_id)].append(d)

    num_t, num_r, num_k, num_m = len(IOU_THRS), len(REC_THRS), len(cat_ids), len(MAX_DETS)
    precision = -np.ones((num_t, num_r, num_k, num_m))
    recall = -np.ones((num_t, num_k, num_m))
    for k, cat in enumerate(cat_ids):
        evals = [_evaluate_video(gt_by[v, cat], dt_by[v, cat], crowd_iou) for v in vid_ids]
        evals = [e for e in evals if e is not None]
        if not evals:
            continue
        for m, max_det in enumerate(MAX_DETS):
            acc = _accumulate(evals, max_det)
            if acc is not None:
                precision[:, :, k, m], recall[:, k, m] = acc

    m100 = MAX_DETS.index(100)
    return {
        "AP": _mean_valid(precision[:, :, :, m100]),
        "AP50": _mean_valid(precision[np.where(IOU_THRS == 0.5)[0], :, :, m100]),
        "AP75": _mean_valid(precision[np.where(IOU_THRS == 0.75)[0], :, :, m100]),
        "AR1": _mean_valid(recall[:, :, MAX_DETS.index(1)]),
        "AR10": _mean_valid(recall[:, :, MAX_DETS.index(10)]),
        "AR100": _mean_valid(recall[:, :, m100]),
    }
