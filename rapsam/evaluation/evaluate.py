"""`rapsam-eval`: PQ on COCO panoptic, 1-point / box mIoU on COCO-SAM prompts and YouTube-VIS mAP, for the
PyTorch model or a converted artifact through its runtime, with the pre- and post-processing the apps use
(letterbox, export-contract entry points, panoptic merge, query-matching tracker): a converted or quantized
artifact is judged on the same data and by the same code as the model it came from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rapsam.data import CocoPanoptic, ImageSample, YouTubeVIS, box_prompts, center_point_prompts
from rapsam.evaluation.panoptic_quality import PanopticAnnotation, PQAccumulator, SegmentInfo
from rapsam.evaluation.prompt_iou import PromptIoUAccumulator
from rapsam.evaluation.video_ap import Tube, video_ap
from rapsam.pipeline import Predictor, artifact_predictor, encode, panoptic, prompt, torch_predictor, track
from rapsam.postprocess import PanopticResult, PanopticThresholds

__all__ = ["Predictor", "artifact_predictor", "evaluate", "results_table", "torch_predictor"]


def ground_truth(sample: ImageSample) -> PanopticAnnotation:
    """The sample's masks as a panoptic map (ids 1..N, 0 void) with taxonomy indices as categories."""
    segment_map = np.zeros(sample.image.shape[:2], dtype=np.int64)
    for i, mask in enumerate(sample.masks):
        segment_map[mask] = i + 1
    segments = [SegmentInfo(i + 1, int(label), bool(crowd)) for i, (label, crowd)
                in enumerate(zip(sample.labels, sample.is_crowd))]
    return PanopticAnnotation(segment_map, segments)


def prediction(result: PanopticResult) -> PanopticAnnotation:
    return PanopticAnnotation(result.segment_map.astype(np.int64),
                              [SegmentInfo(s.id, s.class_id) for s in result.segments])


def evaluate_panoptic(predictor: Predictor, dataset: CocoPanoptic, *, limit: int | None = None,
                      thresholds: PanopticThresholds = PanopticThresholds(),
                      progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    accumulator = PQAccumulator(dict(enumerate(predictor.taxonomy.is_thing)))
    count = min(len(dataset), limit or len(dataset))
    for i in range(count):
        sample = dataset[i]
        result, _ = panoptic(predictor, sample.image, thresholds)
        accumulator.add(ground_truth(sample), prediction(result))
        _tick(progress, "panoptic", i, count)
    return {"images": count, **accumulator.result()}


def evaluate_prompts(predictor: Predictor, dataset: CocoPanoptic, *, limit: int | None = None,
                     progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Every non-crowd segment once as a click at its interior point farthest from the border, once as its box."""
    accumulator = PromptIoUAccumulator()
    count = min(len(dataset), limit or len(dataset))
    for i in range(count):
        sample = dataset[i]
        encoded = encode(predictor, sample.image)
        clicks, _, click_masks = center_point_prompts(sample)
        boxes, _, box_masks = box_prompts(sample)
        # A click prompt is its point's +-3 px box: its centre is the point, which the app would send.
        points = np.stack([(clicks[:, 0] + clicks[:, 2]) / 2, (clicks[:, 1] + clicks[:, 3]) / 2], axis=1)
        if len(points):
            accumulator.add(prompt(predictor, encoded, points=points.tolist()).masks, click_masks, kind="point")
        if len(boxes):
            accumulator.add(prompt(predictor, encoded, boxes=boxes.tolist()).masks, box_masks, kind="box")
        _tick(progress, "prompts", i, count)
    return {"images": count, **accumulator.result()}


def evaluate_video(predictor: Predictor, dataset: YouTubeVIS, *, limit: int | None = None,
                   thresholds: PanopticThresholds = PanopticThresholds(),
                   progress: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Each video frame by frame as the apps track: panoptic merge, ids by query matching (MinVIS); a track's
    class is its most frequent class and its score the mean of its per-frame scores."""
    gts: list[Tube] = []
    dts: list[Tube] = []
    count = min(len(dataset), limit or len(dataset))
    for v in range(count):
        video = dataset.full_video(v)
        length, height, width = video.frames.shape[:3]
        gts += [Tube(v, int(label), masks, iscrowd=bool(crowd))
                for label, masks, crowd in zip(video.labels, video.masks, video.is_crowd)]
        tracks: dict[int, dict[str, Any]] = {}
        for t, frame in enumerate(track(predictor, video.frames, thresholds)):
            for segment, instance in zip(frame.panoptic.segments, frame.instance_ids):
                if instance < 0:
                    continue
                tube = tracks.setdefault(instance, {
                    "masks": np.zeros((length, height, width), dtype=bool), "classes": [], "scores": []})
                tube["masks"][t] = frame.panoptic.segment_map == segment.id
                tube["classes"].append(segment.class_id)
                tube["scores"].append(segment.score)
        for tube in tracks.values():
            label = int(np.bincount(tube["classes"]).argmax())
            dts.append(Tube(v, label, tube["masks"], score=float(np.mean(tube["scores"]))))
        _tick(progress, "video", v, count)
    return {"videos": count, **video_ap(gts, dts, video_ids=range(count))}


def _tick(progress: Callable[[str], None], what: str, index: int, count: int) -> None:
    if (index + 1) % 25 == 0 or index + 1 == count:
        progress(f"[{what}] {index + 1}/{count}")


def evaluate(
    predictor: Predictor,
    *,
    coco: str | Path | None = None,
    ytvis: str | Path | None = None,
    split: str = "val",
    tasks: tuple[str, ...] = ("panoptic", "prompt", "video"),
    limit: int | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """The metrics of `tasks` that the given data allow; video needs `ytvis`, the others `coco`."""
    results: dict[str, Any] = {"predictor": predictor.name, "input_size": list(predictor.input_size), "split": split}
    if coco is not None and ("panoptic" in tasks or "prompt" in tasks):
        images = CocoPanoptic(coco, split, taxonomy=predictor.taxonomy)
        if "panoptic" in tasks:
            results["panoptic"] = evaluate_panoptic(predictor, images, limit=limit, progress=progress)
        if "prompt" in tasks:
            results["prompt"] = evaluate_prompts(predictor, images, limit=limit, progress=progress)
    if ytvis is not None and "video" in tasks:
        video_split = "valid" if split == "val" else split
        videos = YouTubeVIS(ytvis, video_split, taxonomy=predictor.taxonomy)
        results["video"] = evaluate_video(predictor, videos, limit=limit, progress=progress)
    return results


def results_table(results: Mapping[str, Any]) -> str:
    """PQ/SQ/RQ x100, mIoU, mAP x100: the numbers as papers print them."""
    lines = [f"{results['predictor']} at {results['input_size'][0]}x{results['input_size'][1]} ({results['split']})"]
    if "panoptic" in results:
        p = results["panoptic"]
        for group in ("All", "Things", "Stuff"):
            g = p[group]
            lines.append(f"  PQ {group:<6} {100 * g['pq']:6.1f}  SQ {100 * g['sq']:6.1f}  RQ {100 * g['rq']:6.1f}  "
                         f"({g['n']} classes, {p['images']} images)")
    if "prompt" in results:
        kinds = results["prompt"]["per_kind"]
        lines.append("  prompt mIoU " + "  ".join(f"{k} {v['miou']:.3f} ({v['n']})" for k, v in kinds.items()))
    if "video" in results:
        v = results["video"]
        lines.append(f"  VIS mAP {100 * v['AP']:.1f}  AP50 {100 * v['AP50']:.1f}  AP75 {100 * v['AP75']:.1f}  "
                     f"AR10 {100 * v['AR10']:.1f} ({v['videos']} videos)")
    return "\n".join(lines)
