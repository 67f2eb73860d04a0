"""What an app does around the export contract, over the PyTorch model or any converted artifact: letterbox,
`segment` + panoptic merge, `encode` once per image then `prompt` per click or box (packed into the
artifact's K slots, padding kind -1), and instance ids across video frames by query matching.

rapsam-eval, rapsam-demo and rapsam-vectors all run this code, and every sample app ports it: the test
vectors it writes are what a port must reproduce.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rapsam.convert.base import Runner
from rapsam.inference import DEFAULT_THRESHOLDS, Letterbox, TrackedFrame, letterbox, prompts_to_boxes
from rapsam.postprocess import (
    PanopticResult,
    PanopticThresholds,
    PromptResult,
    QueryTracker,
    instance_ids,
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
    precision: str = "fp32"  # an artifact's compute precision, or its quantization scheme


def torch_predictor(model: Any, input_size: tuple[int, int] | None = None) -> Predictor:
    from rapsam.convert.parity import ReferenceRunner

    return Predictor(ReferenceRunner(model.eval()), "torch", tuple(input_size or model.config.default_size), None,
                     model.config.taxonomy, model.config.pad_value)


def artifact_predictor(folder: str | Path) -> Predictor:
    from rapsam.convert.base import MissingBackendError, get_converter
    from rapsam.convert.manifest import converted_files, precision_label, prompt_slots, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    runner = get_converter(manifest["target"]["name"]).open(folder, converted_files(manifest))
    if isinstance(runner, str):  # the converter's reason why its runtime cannot run here
        raise MissingBackendError(f"{folder}: {runner}")
    classes = manifest["classes"]
    taxonomy = Taxonomy(name=manifest["taxonomy"], class_names=tuple(c["name"] for c in classes),
                        is_thing=tuple(bool(c["is_thing"]) for c in classes))
    pad = tuple(float(v) for v in manifest["normalization"]["pad_value"])
    return Predictor(runner, str(folder), tuple(manifest["input_size"]), prompt_slots(manifest), taxonomy,
                     (pad[0], pad[1], pad[2]), precision_label(manifest))


def open_predictor(source: str | Path | None = None, *, weights: str | Path | None = None,
                   input_size: tuple[int, int] | None = None) -> Predictor:
    """A converted artifact folder (it holds manifest.json) through its runtime; else a registered model name
    in PyTorch with `weights` or its built-in ones; no source: the model of `weights`, else the default
    model with its built-in weights."""
    if source is not None and (Path(source) / "manifest.json").is_file():
        if weights is not None or input_size is not None:
            raise ValueError(f"{source} is a converted artifact: its weights and input size are fixed; "
                             "drop --weights / --input-size")
        return artifact_predictor(source)
    if source is not None and Path(source).exists():
        raise FileNotFoundError(f"{source} has no manifest.json: pass a folder written by rapsam-convert "
                                "or a model name (rapsam-info lists them)")
    from rapsam.checkpoint import build_model, builtin_weights
    from rapsam.convert import DEFAULT_MODEL

    weights = weights or builtin_weights(str(source or DEFAULT_MODEL))
    model = build_model(str(source) if source else (None if weights else DEFAULT_MODEL), weights)
    return torch_predictor(model, input_size)


def panoptic(predictor: Predictor, image: np.ndarray,
             thresholds: PanopticThresholds = DEFAULT_THRESHOLDS) -> tuple[PanopticResult, np.ndarray]:
    """`segment` on one RGB image, merged at image size; with the object queries [N, d] (for tracking)."""
    x, box = letterbox(image, predictor.input_size, predictor.pad_value)
    out = predictor.runner.run("segment", {"image": x.numpy()})
    logits = upsample_mask_logits(torch.from_numpy(out["mask_logits"][0]), input_size=box.input_size,
                                  valid_size=box.valid_size, image_size=box.image_size)
    result = panoptic_merge(logits, torch.from_numpy(out["class_logits"][0]), is_thing=predictor.taxonomy.is_thing,
                            object_mask_threshold=thresholds.object_mask_threshold,
                            overlap_threshold=thresholds.overlap_threshold)
    return result, out["queries"][0]


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """`encode`'s features of one image and where the image sits in the model input."""

    features: np.ndarray
    box: Letterbox


def encode(predictor: Predictor, image: np.ndarray) -> EncodedImage:
    x, box = letterbox(image, predictor.input_size, predictor.pad_value)
    return EncodedImage(predictor.runner.run("encode", {"image": x.numpy()})["features"], box)


def prompt(predictor: Predictor, encoded: EncodedImage, *, points: Sequence[Sequence[float]] = (),
           boxes: Sequence[Sequence[float]] = ()) -> PromptResult:
    """One mask (image size) and predicted IoU per prompt, points first then boxes, in image pixels. An
    artifact's K prompt slots take the prompts K at a time; unused slots are padding (kind -1)."""
    box = encoded.box
    if len(points) + len(boxes) == 0:
        return PromptResult(masks=np.zeros((0, *box.image_size), dtype=bool), iou=np.zeros(0, dtype=np.float32),
                            index=np.zeros(0, dtype=np.int64))
    prompt_boxes, kinds = prompts_to_boxes(points, boxes, box)
    count = prompt_boxes.shape[1]
    slots = predictor.prompt_slots or count
    logits, ious = [], []
    for first in range(0, count, slots):
        used = min(slots, count - first)
        feeds = prompt_feeds(encoded, prompt_boxes[:, first:first + used], kinds[:, first:first + used], slots)
        out = predictor.runner.run("prompt", feeds)
        logits.append(torch.from_numpy(out["mask_logits"][0][:used]))
        ious.append(torch.from_numpy(out["iou"][0][:used]))
    return prompt_masks(torch.cat(logits), torch.cat(ious), valid=torch.ones(count, dtype=torch.bool),
                        input_size=box.input_size, valid_size=box.valid_size, image_size=box.image_size)


def prompt_feeds(encoded: EncodedImage, boxes: torch.Tensor, kinds: torch.Tensor, slots: int) -> dict[str, np.ndarray]:
    """`prompt`'s inputs for up to `slots` prompts (boxes (1, k, 4), kinds (1, k)): the rest of the K slots are
    padding, a zero box of kind -1."""
    pad = slots - boxes.shape[1]
    return {"features": encoded.features,
            "boxes": torch.cat([boxes, torch.zeros(1, pad, 4)], dim=1).numpy(),
            "kinds": torch.cat([kinds, torch.full((1, pad), -1)], dim=1).to(torch.int32).numpy()}


def track(predictor: Predictor, frames: Iterable[np.ndarray],
          thresholds: PanopticThresholds = DEFAULT_THRESHOLDS) -> Iterator[TrackedFrame]:
    """Each frame's panoptic result with video-wide ids for its thing segments, frame by frame as they come
    (a camera or a long video never has to fit in memory)."""
    tracker = QueryTracker()
    for frame in frames:
        result, queries = panoptic(predictor, frame, thresholds)
        yield TrackedFrame(panoptic=result, instance_ids=instance_ids(tracker, result, torch.from_numpy(queries)))
