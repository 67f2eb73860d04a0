"""`rapsam-eval`: PQ on COCO panoptic, 1-point / box mIoU on COCO-SAM prompts and YouTube-VIS mAP, for the
PyTorch model or a converted artifact through its runtime, with the pre- and post-processing the apps use
(letterbox, export-contract entry points, panoptic merge, query-matching tracker): a converted or quantized
artifact is judged on the same data and by the same code as the model it came from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rapsam.convert.base import Runner
from rapsam.data import CocoPanoptic, ImageSample, YouTubeVIS, box_prompts, center_point_prompts
from rapsam.evaluation.panoptic_quality import PanopticAnnotation, PQAccumulator, SegmentInfo
from rapsam.evaluation.prompt_iou import PromptIoUAccumulator
from rapsam.evaluation.video_ap import Tube, video_ap
from rapsam.inference import letterbox, prompts_to_boxes
from rapsam.postprocess import (
    PanopticResult,
    PanopticThresholds,
    QueryTracker,
    panoptic_merge,
    prompt_masks,
    upsample_mask_logits,
)
from rapsam.taxonomy import Taxonomy


@dataclass(frozen=True)
class Predictor:
    """Anything that runs the export contract's entry points, with what pre-processing it expects."""

    runner: Runner
    name: str  # "torch" or the artifact folder
    input_size: tuple[int, int]
    prompt_slots: int | None  # K of an artifact's prompt entry point; None: any number
    taxonomy: Taxonomy
    pad_value: tuple[float, float, float]


def torch_predictor(model: Any, input_size: tuple[int, int] | None = None) -> Predictor:
    from rapsam.convert.parity import ReferenceRunner

    return Predictor(ReferenceRunner(model.eval()), "torch", tuple(input_size or model.config.default_size), None,
                     model.config.taxonomy, model.config.pad_value)


def artifact_predictor(folder: str | Path) -> Predictor:
    from rapsam.convert.base import get_converter
    from rapsam.convert.manifest import converted_files, prompt_slots, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    runner = get_converter(manifest["target"]["name"]).open(folder, converted_files(manifest))
    classes = manifest["classes"]
    taxonomy = Taxonomy(name=manifest["taxonomy"], class_names=tuple(c["name"] for c in classes),
                        is_thing=tuple(bool(c["is_thing"]) for c in classes))
    pad = tuple(float(v) for v in manifest["normalization"]["pad_value"])
    return Predictor(runner, str(folder), tuple(manifest["input_size"]), prompt_slots(manifest), taxonomy,
                     (pad[0], pad[1], pad[2]))


def _panoptic(
    predictor: Predictor, image: np.ndarray, thresholds: PanopticThresholds
) -> tuple[PanopticResult, np.ndarray]:
    x, box = letterbox(image, predictor.input_size, predictor.pad_value)
    out = predictor.runner.run("segment", {"image": x.numpy()})
    logits = upsample_mask_logits(torch.from_numpy(out["mask_logits"][0]), input_size=box.input_size,
                                  valid_size=box.valid_size, image_size=box.image_size)
    result = panoptic_merge(logits, torch.from_numpy(out["class_logits"][0]), is_thing=predictor.taxonomy.is_thing,
                            object_mask_threshold=thresholds.object_mask_threshold,
                            overlap_threshold=thresholds.overlap_threshold)
    return result, out["queries"][0]


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
        result, _ = _panoptic(predictor, sample.image, thresholds)
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
        x, box = letterbox(sample.image, predictor.input_size, predictor.pad_value)
        features = predictor.runner.run("encode", {"image": x.numpy()})["features"]
        clicks, _, click_masks = center_point_prompts(sample)
        boxes, _, box_masks = box_prompts(sample)
        # A click prompt is its point's +-3 px box: its centre is the point, which the app would send.
        points = np.stack([(clicks[:, 0] + clicks[:, 2]) / 2, (clicks[:, 1] + clicks[:, 3]) / 2], axis=1)
        for kind, prompts, masks in (("point", points, click_masks), ("box", boxes, box_masks)):
            slots = predictor.prompt_slots or max(len(prompts), 1)
            for first in range(0, len(prompts), slots):
                chunk = [tuple(float(v) for v in p) for p in prompts[first:first + slots]]
                points_chunk, boxes_chunk = (chunk, []) if kind == "point" else ([], chunk)
                prompt_boxes, kinds = prompts_to_boxes(points_chunk, boxes_chunk, box)
                pad = slots - prompt_boxes.shape[1]
                prompt_boxes = torch.cat([prompt_boxes, torch.zeros(1, pad, 4)], dim=1)
                kinds = torch.cat([kinds, torch.full((1, pad), -1)], dim=1).to(torch.int32)
                out = predictor.runner.run("prompt", {"features": features, "boxes": prompt_boxes.numpy(),
                                                      "kinds": kinds.numpy()})
                result = prompt_masks(torch.from_numpy(out["mask_logits"][0]), torch.from_numpy(out["iou"][0]),
                                      valid=kinds[0] >= 0, input_size=box.input_size, valid_size=box.valid_size,
                                      image_size=box.image_size)
                accumulator.add(result.masks, masks[first:first + slots], kind=kind)
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
        tracker = QueryTracker()
        tracks: dict[int, dict[str, Any]] = {}
        for t in range(length):
            result, queries = _panoptic(predictor, video.frames[t], thresholds)
            alive = torch.zeros(queries.shape[0], dtype=torch.bool)
            for segment in result.segments:
                if segment.is_thing:
                    alive[list(segment.queries)] = True
            ids = tracker.update(torch.from_numpy(queries), alive)
            for segment in result.segments:
                if not segment.is_thing:
                    continue
                track = tracks.setdefault(int(ids[segment.queries[0]]), {
                    "masks": np.zeros((length, height, width), dtype=bool), "classes": [], "scores": []})
                track["masks"][t] = result.segment_map == segment.id
                track["classes"].append(segment.class_id)
                track["scores"].append(segment.score)
        for track in tracks.values():
            label = int(np.bincount(track["classes"]).argmax())
            dts.append(Tube(v, label, track["masks"], score=float(np.mean(track["scores"]))))
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
