"""Hand-checked cases for the evaluation metrics (answers worked out in the comments).

Maps are mostly single rows (1 x W) so pixel counts can be read off the column ranges.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import numpy as np
import pytest

from rapsam.evaluation import (
    PanopticAnnotation,
    PQAccumulator,
    PromptIoUAccumulator,
    SegmentInfo,
    Tube,
    mask_iou,
    pq_compute,
    tube_iou,
    video_ap,
)


def row(width: int, spans: dict[tuple[int, int], int]) -> np.ndarray:
    """1 x width id map; spans maps inclusive (first, last) column ranges to ids, the rest is 0."""
    m = np.zeros((1, width), dtype=np.int64)
    for (a, b), sid in spans.items():
        m[0, a : b + 1] = sid
    return m


# ----------------------------------------------------------------------------- panoptic quality


def test_pq_perfect_prediction() -> None:
    gt = PanopticAnnotation(row(8, {(0, 3): 1, (4, 7): 2}), [SegmentInfo(1, 1), SegmentInfo(2, 2)])
    pred = PanopticAnnotation(row(8, {(0, 3): 7, (4, 7): 9}), [SegmentInfo(7, 1), SegmentInfo(9, 2)])
    res = pq_compute([(gt, pred)], {1: True, 2: False})
    assert res["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert res["Things"]["n"] == 1 and res["Stuff"]["n"] == 1


def test_pq_match_at_0_6_plus_fp_and_fn() -> None:
    # gt:   cols 0-9 id 1 (10 px), cols 10-15 id 2 (6 px), cols 16-17 VOID.
    # pred: cols 0-5 id 10 (6 px), cols 14-17 id 30 (4 px).
    # 1 vs 10: inter 6, union 6 + 10 - 6 - 0 = 10 -> IoU 0.6 > 0.5: TP.
    # 2 vs 30: inter 2, union 4 + 6 - 2 - 2 (void) = 6 -> 0.33: no match, so gt 2 is a FN;
    # pred 30 lies 2/4 = 0.5 on VOID, not > 0.5, so it is a FP.
    # cat 1: tp 1, iou 0.6, fp 1, fn 1 -> PQ = 0.6 / (1 + 0.5 + 0.5) = 0.3, SQ = 0.6, RQ = 0.5.
    # cat 2 (stuff) appears nowhere: not counted in n; Stuff averages over nothing -> 0.0, n 0.
    gt = PanopticAnnotation(row(18, {(0, 9): 1, (10, 15): 2}), [SegmentInfo(1, 1), SegmentInfo(2, 1)])
    pred = PanopticAnnotation(row(18, {(0, 5): 10, (14, 17): 30}), [SegmentInfo(10, 1), SegmentInfo(30, 1)])
    res = pq_compute([(gt, pred)], {1: True, 2: False})
    assert res["All"]["pq"] == pytest.approx(0.3)
    assert res["All"]["sq"] == pytest.approx(0.6)
    assert res["All"]["rq"] == pytest.approx(0.5)
    assert res["All"]["n"] == 1
    assert res["Stuff"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert res["per_class"][1]["tp"] == 1 and res["per_class"][1]["fp"] == 1 and res["per_class"][1]["fn"] == 1
    assert res["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}


def test_pq_iou_exactly_half_is_not_a_match() -> None:
    # gt cols 0-3 (4 px), pred cols 0-1 (2 px): IoU 2 / 4 = 0.5, not > 0.5 -> 1 FP + 1 FN, PQ 0.
    gt = PanopticAnnotation(row(4, {(0, 3): 1}), [SegmentInfo(1, 1)])
    pred = PanopticAnnotation(row(4, {(0, 1): 5}), [SegmentInfo(5, 1)])
    res = pq_compute([(gt, pred)], {1: True})
    assert res["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    assert res["All"]["n"] == 1


def test_pq_void_pixels_are_excluded_from_union() -> None:
    # gt cols 0-3 id 1, cols 4-7 VOID; pred cols 0-5: inter 4, union 6 + 4 - 4 - 2 = 4 -> IoU 1.0
    # (it would be 4/6 if the two predicted VOID pixels counted).
    gt = PanopticAnnotation(row(8, {(0, 3): 1}), [SegmentInfo(1, 1)])
    pred = PanopticAnnotation(row(8, {(0, 5): 5}), [SegmentInfo(5, 1)])
    assert pq_compute([(gt, pred)], {1: True})["All"]["pq"] == pytest.approx(1.0)


def test_pq_prediction_on_crowd_region_is_not_a_false_positive() -> None:
    # gt: cols 0-5 crowd of cat 1, cols 6-11 id 2 cat 1.
    # pred 10 (cat 1) = cols 6-11: perfect TP. pred 11 (cat 1) = cols 0-3: 4/4 on its category's crowd
    # -> ignored. pred 12 (cat 2) = cols 4-5: on a crowd of *another* category -> FP of cat 2.
    # The crowd itself is never a FN. cat 1: PQ 1; cat 2: fp 1 -> PQ 0. All = (1 + 0) / 2.
    gt = PanopticAnnotation(row(12, {(0, 5): 1, (6, 11): 2}), [SegmentInfo(1, 1, iscrowd=True), SegmentInfo(2, 1)])
    pred = PanopticAnnotation(
        row(12, {(0, 3): 11, (4, 5): 12, (6, 11): 10}), [SegmentInfo(10, 1), SegmentInfo(11, 1), SegmentInfo(12, 2)]
    )
    res = pq_compute([(gt, pred)], {1: True, 2: True})
    assert res["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert res["per_class"][2]["fp"] == 1
    assert res["All"]["pq"] == pytest.approx(0.5) and res["All"]["n"] == 2


def test_pq_things_and_stuff_averages() -> None:
    # Thing cat 1 perfect (PQ 1). Stuff cat 3: gt cols 4-13 (10 px), pred cols 4-9 (6 px), the rest
    # of the prediction unlabeled -> IoU 0.6, tp 1 -> PQ 0.6, SQ 0.6, RQ 1.
    # All = mean(1, 0.6) = 0.8; Things = 1; Stuff = 0.6. Cat 5 never appears and is not counted.
    gt = PanopticAnnotation(row(14, {(0, 3): 1, (4, 13): 2}), [SegmentInfo(1, 1), SegmentInfo(2, 3)])
    pred = PanopticAnnotation(row(14, {(0, 3): 5, (4, 9): 6}), [SegmentInfo(5, 1), SegmentInfo(6, 3)])
    acc = PQAccumulator({1: True, 3: False, 5: True})
    acc.add(gt, pred)
    res = acc.result()
    assert res["All"]["pq"] == pytest.approx(0.8) and res["All"]["n"] == 2
    assert res["All"]["rq"] == pytest.approx(1.0)
    assert res["Things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert res["Stuff"]["pq"] == pytest.approx(0.6) and res["Stuff"]["n"] == 1


def test_pq_streams_over_images() -> None:
    # Image 0: perfect (tp 1, iou 1). Image 1: the gt is missed (fn 1).
    # cat 1: PQ = 1 / (1 + 0.5) = 2/3, SQ 1, RQ 2/3.
    acc = PQAccumulator({1: True})
    seg = [SegmentInfo(1, 1)]
    acc.add(PanopticAnnotation(row(4, {(0, 3): 1}), seg), PanopticAnnotation(row(4, {(0, 3): 1}), seg))
    acc.add(PanopticAnnotation(row(4, {(0, 3): 1}), seg), PanopticAnnotation(row(4, {}), []))
    res = acc.result()["All"]
    assert res["pq"] == pytest.approx(2 / 3) and res["sq"] == pytest.approx(1.0) and res["rq"] == pytest.approx(2 / 3)


def test_pq_malformed_predictions_raise() -> None:
    gt = PanopticAnnotation(row(4, {(0, 3): 1}), [SegmentInfo(1, 1)])
    acc = PQAccumulator({1: True})
    acc.add(gt, PanopticAnnotation(row(4, {(0, 3): 5}), [SegmentInfo(5, 1)]))
    with pytest.raises(ValueError, match=r"image 1: pred segment id 6 is in the map"):
        acc.add(gt, PanopticAnnotation(row(4, {(0, 3): 6}), []))
    with pytest.raises(ValueError, match=r"not in the map"):
        acc.add(gt, PanopticAnnotation(row(4, {(0, 3): 5}), [SegmentInfo(5, 1), SegmentInfo(8, 1)]))
    with pytest.raises(ValueError, match=r"unknown category_id 4"):
        acc.add(gt, PanopticAnnotation(row(4, {(0, 3): 5}), [SegmentInfo(5, 4)]))


# ----------------------------------------------------------------------------- prompt mIoU


def test_mask_iou_and_prompt_miou() -> None:
    gt = np.zeros((3, 4, 4), dtype=bool)
    gt[0, :2, :2] = True  # 4 px
    gt[1, :2, :2] = True  # 4 px
    pred = gt.copy()
    pred[1, 1, :] = False  # keeps 2 of the 4 gt pixels -> IoU 2/4 = 0.5
    # prompt 2: both empty -> 1.0 by convention.
    np.testing.assert_allclose(mask_iou(pred, gt), [1.0, 0.5, 1.0])
    assert mask_iou(np.zeros((4, 4), bool), gt[0])[0] == 0.0  # empty prediction of a real mask

    acc = PromptIoUAccumulator()
    acc.add(pred[:2], gt[:2], kind="point")  # 1.0, 0.5
    acc.add(np.zeros((1, 4, 4), bool), gt[:1], kind="box")  # 0.0
    res = acc.result()
    assert res["miou"] == pytest.approx(0.5) and res["n"] == 3  # (1 + 0.5 + 0) / 3
    assert res["per_kind"]["point"] == {"miou": 0.75, "n": 2}
    assert res["per_kind"]["box"] == {"miou": 0.0, "n": 1}


# ----------------------------------------------------------------------------- video AP


def box_tube(frames: list[tuple[int, int, int, int] | None], size: int = 8) -> np.ndarray:
    """(T, size, size) masks with one inclusive-exclusive box (y0, y1, x0, x1) per frame, None = absent."""
    m = np.zeros((len(frames), size, size), dtype=bool)
    for t, b in enumerate(frames):
        if b is not None:
            m[t, b[0] : b[1], b[2] : b[3]] = True
    return m


def test_video_ap_perfect_detection() -> None:
    masks = box_tube([(0, 2, 0, 2), (1, 3, 1, 3)])
    res = video_ap([Tube(1, 1, masks)], [Tube(1, 1, masks.copy(), score=0.3)])
    # Precision is tp / (tp + fp + eps) as in COCOeval, hence approx: 1 - 2.2e-16, like the reference.
    assert res == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "AR1": 1.0, "AR10": 1.0, "AR100": 1.0})


def test_video_ap_higher_scored_false_positive() -> None:
    # One gt; d1 (0.9) misses it, d2 (0.8) is exact. At every threshold: tp = [0, 1], fp = [1, 1],
    # rc = [0, 1], pr = [0, 0.5] -> envelope [0.5, 0.5]; every recall threshold reads 0.5 -> AP 0.5.
    # AR1 only sees d1 -> 0; AR10 = 1. A detection of a category without gt (cat 9) is dropped.
    g = box_tube([(0, 2, 0, 2)])
    dts = [Tube(1, 1, box_tube([(5, 7, 5, 7)]), score=0.9), Tube(1, 1, g.copy(), score=0.8), Tube(1, 9, g, score=1.0)]
    res = video_ap([Tube(1, 1, g)], dts)
    assert res["AP"] == pytest.approx(0.5) and res["AP50"] == pytest.approx(0.5)
    assert res["AR1"] == 0.0 and res["AR10"] == 1.0 and res["AR100"] == 1.0


def test_video_ap_101_point_interpolation() -> None:
    # Two gts in two videos; dets by score: d1 hits g1, d2 is a FP, d3 hits g2.
    # tp = [1, 1, 2], fp = [0, 1, 1], rc = [.5, .5, 1], pr = [1, .5, 2/3] -> envelope [1, 2/3, 2/3].
    # searchsorted(rc, thr, "left"): thresholds 0.00..0.50 (51 of them) -> index 0 -> 1.0;
    # 0.51..1.00 (50) -> index 2 -> 2/3. AP = (51 + 50 * 2/3) / 101 = 0.834983...
    g1, g2 = box_tube([(0, 2, 0, 2)]), box_tube([(4, 6, 4, 6)])
    gts = [Tube(1, 1, g1), Tube(2, 1, g2)]
    dts = [Tube(1, 1, g1, score=0.9), Tube(2, 1, box_tube([(0, 1, 7, 8)]), score=0.8), Tube(2, 1, g2, score=0.7)]
    res = video_ap(gts, dts)
    assert res["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # maxDet 1 is per video: video 1 keeps d1 (TP), video 2 keeps d2 (its top score, a FP) -> recall 1/2.
    assert res["AR1"] == pytest.approx(0.5) and res["AR10"] == 1.0


def test_video_ap_tube_matching_two_of_three_frames() -> None:
    # gt 2x2 box in all 3 frames (12 px); det identical in frames 0-1, absent in frame 2:
    # IoU = (4 + 4 + 0) / (4 + 4 + 4) = 2/3 -> matched at thresholds .50 .55 .60 .65 only.
    # AP = 4/10 (each matched threshold has AP 1, the others 0), AP50 1, AP75 0.
    g = box_tube([(0, 2, 0, 2)] * 3)
    d = box_tube([(0, 2, 0, 2), (0, 2, 0, 2), None])
    assert tube_iou([Tube(1, 1, d)], [Tube(1, 1, g)])[0, 0] == pytest.approx(2 / 3)
    # A det present where the gt is absent counts in the union the same way.
    assert tube_iou([Tube(1, 1, g)], [Tube(1, 1, d)])[0, 0] == pytest.approx(2 / 3)
    res = video_ap([Tube(1, 1, g)], [Tube(1, 1, d)])
    assert res["AP"] == pytest.approx(0.4) and res["AP50"] == pytest.approx(1.0) and res["AP75"] == 0.0
    assert res["AR100"] == pytest.approx(0.4)


def test_video_ap_crowd_handling() -> None:
    # g1 regular 2x2 at the corner; crowd gt = 4x4 block elsewhere (16 px). d1 (0.9) is a 2x2 inside
    # the crowd, d2 (0.8) is exactly g1.
    # ytvoseval (default): crowd IoU is the plain tube IoU 4/16 = 0.25 -> d1 unmatched -> FP -> AP 0.5
    # (as in the higher-scored-FP case). COCOeval rule (crowd_iou="detection"): 4/4 = 1 -> d1 is
    # matched to the crowd and ignored -> only d2 counts -> AP 1. The crowd gt never counts as missed.
    g1 = box_tube([(0, 2, 0, 2)])
    crowd = box_tube([(4, 8, 4, 8)])
    gts = [Tube(1, 1, crowd, iscrowd=True), Tube(1, 1, g1)]
    dts = [Tube(1, 1, box_tube([(5, 7, 5, 7)]), score=0.9), Tube(1, 1, g1, score=0.8)]
    assert video_ap(gts, dts)["AP"] == pytest.approx(0.5)
    assert video_ap(gts, dts, crowd_iou="detection")["AP"] == pytest.approx(1.0)
    # A crowd absorbs any number of detections; a category with only crowd gts is undefined (-1).
    many = [Tube(1, 1, box_tube([(4, 6, 4, 6)]), score=0.95), Tube(1, 1, box_tube([(6, 8, 6, 8)]), score=0.9)]
    assert video_ap(gts, [*many, dts[1]], crowd_iou="detection")["AP"] == pytest.approx(1.0)
    assert video_ap(gts[:1], dts)["AP"] == -1.0


def test_video_ap_matches_pycocotools_on_single_frames() -> None:
    """T = 1 tubes are COCO instance masks: compare with COCOeval 'segm' (areaRng "all" entries)."""
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    size, image_ids = 24, [1, 2, 3, 4]

    def rect() -> np.ndarray:
        m = np.zeros((size, size), dtype=bool)
        y, x = rng.integers(0, size - 6, size=2)
        h, w = rng.integers(3, 10, size=2)
        m[y : y + h, x : x + w] = True
        return m

    gts: list[Tube] = []
    dts: list[Tube] = []
    for image_id in image_ids:
        for _ in range(3):
            cat = int(rng.integers(1, 4))
            g = rect()
            gts.append(Tube(image_id, cat, g[None], iscrowd=bool(rng.random() < 0.2)))
            for _ in range(int(rng.integers(0, 3))):
                d = np.roll(g, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
                dts.append(Tube(image_id, cat, d[None], score=float(np.round(rng.random(), 1))))
        dts.append(Tube(image_id, int(rng.integers(1, 4)), rect()[None], score=float(np.round(rng.random(), 1))))

    def rle(m: np.ndarray) -> dict:
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    dataset = {
        "images": [{"id": i, "height": size, "width": size} for i in image_ids],
        "categories": [{"id": c} for c in sorted({g.category_id for g in gts})],
        "annotations": [
            {
                "id": k + 1,
                "image_id": g.video_id,
                "category_id": g.category_id,
                "iscrowd": int(g.iscrowd),
                "segmentation": rle(g.masks[0]),
                "area": float(g.masks[0].sum()),
                "bbox": mask_utils.toBbox(rle(g.masks[0])).tolist(),
            }
            for k, g in enumerate(gts)
        ],
    }
    results = [
        {"image_id": d.video_id, "category_id": d.category_id, "score": d.score, "segmentation": rle(d.masks[0])}
        for d in dts
    ]
    with redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    ours = video_ap(gts, dts, video_ids=image_ids, crowd_iou="detection")
    expected = {"AP": 0, "AP50": 1, "AP75": 2, "AR1": 6, "AR10": 7, "AR100": 8}
    for key, index in expected.items():
        assert ours[key] == pytest.approx(ev.stats[index], abs=1e-12), key
    assert 0.0 < ours["AP"] < 1.0  # a non-trivial case
