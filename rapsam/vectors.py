"""Test vectors: the inputs, entry-point outputs and post-processed results that every app's port of
`rapsam.pipeline` must reproduce, written by the Python reference beside an artifact.

A folder holds `vectors.json` (schema, source, tolerances, and per case the files below with their shapes),
the real photos and a short synthetic clip as PNG, raw little-endian float32 / int32 tensors (`.bin`: the
letterboxed input, every output of `segment`, `encode` and `prompt`), panoptic segment maps as 8-bit PNG
(0 void, ids 1..S) with their segments in the JSON, one 0/255 PNG per prompt mask, and per clip frame its
`segment` outputs and instance ids (a port's tracker can start from the stored outputs, no runtime needed). `check_vectors` is the Python side of what each app's tests do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rapsam.fileio import atomic_dir
from rapsam.inference import letterbox, prompts_to_boxes
from rapsam.pipeline import EncodedImage, Predictor, encode, panoptic, prompt, prompt_feeds, track
from rapsam.postprocess import PanopticResult

SCHEMA_VERSION = 1
# What a port of the same artifact must meet. The letterboxed input allows for another resize
# implementation (canvas, Android Bitmap, Core Image); masks are compared as binary masks.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"input_mean_abs": 1.0, "mask_iou": 0.99, "segment_agreement": 0.99, "logits_max_abs": 0.01,
             "iou_abs": 0.01},
    "reduced": {"input_mean_abs": 1.0, "mask_iou": 0.97, "segment_agreement": 0.97, "logits_max_abs": 0.25,
                "iou_abs": 0.05},
}
CLIP_FRAMES = 6
CLIP_SIZE = (128, 128)


class VectorsError(ValueError):
    """A vectors folder that is missing, unreadable or of another schema."""


def photo_prompts(image_size: tuple[int, int]) -> tuple[list[list[float]], list[list[float]]]:
    """Two clicks and one box at fixed places of the image, in image pixels (x, y)."""
    height, width = image_size
    points = [[0.5 * width, 0.45 * height], [0.25 * width, 0.7 * height]]
    boxes = [[0.2 * width, 0.15 * height, 0.8 * width, 0.9 * height]]
    return points, boxes


def _photos() -> list[tuple[str, np.ndarray]]:
    from skimage import data

    return [("astronaut", data.astronaut()), ("coffee", data.coffee())]


def _clip() -> np.ndarray:
    from rapsam.data.synthetic import synthetic_video

    return synthetic_video(0, "valid", 0, image_size=CLIP_SIZE, num_frames=CLIP_FRAMES).frames


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def tensor(self, name: str, value: np.ndarray) -> dict[str, Any]:
        value = np.ascontiguousarray(value)
        dtype = "int32" if np.issubdtype(value.dtype, np.integer) else "float32"
        (self.folder / f"{name}.bin").write_bytes(value.astype(f"<{'i4' if dtype == 'int32' else 'f4'}").tobytes())
        return {"file": f"{name}.bin", "shape": list(value.shape), "dtype": dtype}

    def png(self, name: str, value: np.ndarray) -> str:
        Image.fromarray(value).save(self.folder / f"{name}.png")
        return f"{name}.png"


def _panoptic_entry(writer: _Writer, name: str, result: PanopticResult, classes: tuple[str, ...]) -> dict[str, Any]:
    if len(result.segments) > 255:
        raise VectorsError(f"{name}: {len(result.segments)} segments do not fit an 8-bit segment map")
    return {
        "segment_map": writer.png(f"{name}.panoptic", result.segment_map.astype(np.uint8)),
        "segments": [{"id": s.id, "class_id": s.class_id, "class_name": classes[s.class_id], "is_thing": s.is_thing,
                      "score": round(float(s.score), 6), "area": s.area} for s in result.segments],
    }


def write_vectors(predictor: Predictor, out: str | Path, *, precision: str | None = None,
                  progress: Callable[[str], None] = lambda message: None) -> Path:
    """Run `predictor` (an artifact through its runtime, or the PyTorch model) on the photos, their prompts and
    the clip, and write what it computed to `out` (replaced as a whole, never left half-written)."""
    precision = precision or predictor.precision  # the artifact's, or the one a PyTorch stand-in speaks for
    classes = predictor.taxonomy.class_names
    cases = []
    with atomic_dir(out) as folder:
        writer = _Writer(folder)
        for name, image in _photos():
            progress(f"[vectors] {name}")
            x, box = letterbox(image, predictor.input_size, predictor.pad_value)
            segment_out = predictor.runner.run("segment", {"image": x.numpy()})
            result, _ = panoptic(predictor, image)
            encoded = encode(predictor, image)
            points, boxes = photo_prompts(image.shape[:2])
            prompted = prompt(predictor, encoded, points=points, boxes=boxes)
            raw_inputs, raw_outputs = _raw_prompt(predictor, encoded, *prompts_to_boxes(points, boxes, box))
            cases.append({
                "name": name,
                "image": writer.png(name, image),
                "letterbox": {"image_size": list(box.image_size), "valid_size": list(box.valid_size),
                              "input_size": list(box.input_size)},
                "input": writer.tensor(f"{name}.input", x.numpy()),
                "segment": {key: writer.tensor(f"{name}.segment.{key}", value) for key, value in segment_out.items()},
                "panoptic": _panoptic_entry(writer, name, result, classes),
                "encode": {"features": writer.tensor(f"{name}.encode.features", encoded.features)},
                "prompt": {
                    "points": points, "boxes": boxes,
                    # One call as packed into the K slots: the first K prompts, padding after them.
                    "inputs": {key: writer.tensor(f"{name}.prompt.{key}", raw_inputs[key]) for key in ("boxes", "kinds")},
                    "outputs": {key: writer.tensor(f"{name}.prompt.{key}", v) for key, v in raw_outputs.items()},
                    "masks": [writer.png(f"{name}.prompt{i}", mask.astype(np.uint8) * 255)
                              for i, mask in enumerate(prompted.masks)],
                    "iou": [round(float(v), 6) for v in prompted.iou],
                },
            })
        progress("[vectors] clip")
        frames = []
        for t, (frame, tracked) in enumerate(zip(_clip(), track(predictor, _clip()))):
            x, _ = letterbox(frame, predictor.input_size, predictor.pad_value)
            raw = predictor.runner.run("segment", {"image": x.numpy()})  # what a port's tracker starts from
            entry = _panoptic_entry(writer, f"clip{t}", tracked.panoptic, classes)
            frames.append({"image": writer.png(f"clip{t}", frame), **entry,
                           "segment": {key: writer.tensor(f"clip{t}.segment.{key}", v) for key, v in raw.items()},
                           "instance_ids": list(tracked.instance_ids)})
        document = {
            "schema_version": SCHEMA_VERSION, "source": predictor.name, "runtime": predictor.runner.runtime,
            "input_size": list(predictor.input_size), "prompt_slots": predictor.prompt_slots, "precision": precision,
            "tolerances": TOLERANCES["fp32" if precision == "fp32" else "reduced"],
            "photos": cases, "clip": {"frames": frames},
        }
        (folder / "vectors.json").write_text(json.dumps(document, indent=1) + "\n")
    return Path(out)


def _raw_prompt(predictor: Predictor, encoded: EncodedImage, boxes: torch.Tensor,
                kinds: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One `prompt` call as an app packs it: the first K prompts in the artifact's K slots (all of them for the
    model), the rest of the slots padding. Its exact inputs and raw outputs."""
    slots = predictor.prompt_slots or boxes.shape[1]
    inputs = prompt_feeds(encoded, boxes[:, :slots], kinds[:, :slots], slots)
    return inputs, predictor.runner.run("prompt", inputs)


# ----------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class VectorCheck:
    case: str
    check: str
    value: float
    limit: float
    passed: bool


def read_vectors(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "vectors.json"
    if not path.is_file():
        raise VectorsError(f"{path} not found: write vectors with rapsam-vectors SOURCE --out {folder}")
    document = json.loads(path.read_text())
    if document.get("schema_version") != SCHEMA_VERSION:
        raise VectorsError(f"{path} has schema {document.get('schema_version')}; this rapsam reads "
                           f"{SCHEMA_VERSION}: write them again")
    return document


def load_tensor(folder: Path, entry: Mapping[str, Any]) -> np.ndarray:
    dtype = "<i4" if entry["dtype"] == "int32" else "<f4"
    return np.frombuffer((folder / entry["file"]).read_bytes(), dtype=dtype).reshape(entry["shape"])


def _png(folder: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(folder / name))


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _segment_agreement(folder: Path, entry: Mapping[str, Any], result: PanopticResult) -> float:
    """Share of pixels whose class (void = -1) is the same in the stored and the new panoptic result."""
    def classes(segment_map: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
        lookup = np.full(max([0, *(i for i, _ in segments)]) + 1, -1)
        for segment_id, class_id in segments:
            lookup[segment_id] = class_id
        return lookup[segment_map]

    stored = classes(_png(folder, entry["segment_map"]).astype(np.int64),
                     [(s["id"], s["class_id"]) for s in entry["segments"]])
    new = classes(result.segment_map.astype(np.int64), [(s.id, s.class_id) for s in result.segments])
    return float((stored == new).mean())


def check_vectors(predictor: Predictor, folder: str | Path) -> list[VectorCheck]:
    """Run `predictor` on the vectors' inputs through the same pipeline and compare with what they hold."""
    folder = Path(folder)
    document = read_vectors(folder)
    tol = document["tolerances"]
    checks: list[VectorCheck] = []

    def at_least(case: str, check: str, value: float, limit: float) -> None:
        checks.append(VectorCheck(case, check, value, limit, value >= limit))

    def at_most(case: str, check: str, value: float, limit: float) -> None:
        checks.append(VectorCheck(case, check, value, limit, value <= limit))

    for case in document["photos"]:
        name, image = case["name"], _png(folder, case["image"])
        x, _ = letterbox(image, predictor.input_size, predictor.pad_value)
        at_most(name, "input mean abs", float(np.abs(x.numpy() - load_tensor(folder, case["input"])).mean()),
                tol["input_mean_abs"])
        outputs = predictor.runner.run("segment", {"image": load_tensor(folder, case["input"])})
        at_most(name, "segment class_logits max abs", float(np.abs(
            outputs["class_logits"] - load_tensor(folder, case["segment"]["class_logits"])).max()), tol["logits_max_abs"])
        at_least(name, "segment mask IoU", _mask_iou(
            outputs["mask_logits"] > 0, load_tensor(folder, case["segment"]["mask_logits"]) > 0), tol["mask_iou"])
        result, _ = panoptic(predictor, image)
        at_least(name, "panoptic class agreement", _segment_agreement(folder, case["panoptic"], result),
                 tol["segment_agreement"])
        prompted = prompt(predictor, encode(predictor, image), points=case["prompt"]["points"],
                          boxes=case["prompt"]["boxes"])
        for i, (mask_file, iou) in enumerate(zip(case["prompt"]["masks"], case["prompt"]["iou"])):
            at_least(name, f"prompt {i} mask IoU", _mask_iou(prompted.masks[i], _png(folder, mask_file) > 127),
                     tol["mask_iou"])
            at_most(name, f"prompt {i} IoU score abs", abs(float(prompted.iou[i]) - iou), tol["iou_abs"])
    frames = document["clip"]["frames"]
    tracked = list(track(predictor, (_png(folder, f["image"]) for f in frames)))
    for t, (entry, frame) in enumerate(zip(frames, tracked)):
        at_least(f"clip{t}", "panoptic class agreement", _segment_agreement(folder, entry, frame.panoptic),
                 tol["segment_agreement"])
    same_ids = all(list(f.instance_ids) == entry["instance_ids"] for entry, f in zip(frames, tracked))
    at_least("clip", "instance ids identical", float(same_ids), 1.0)
    return checks


def checks_table(checks: list[VectorCheck]) -> str:
    lines = [f"{'case':<12}{'check':<32}{'value':>12}{'limit':>10}  result"]
    for c in checks:
        lines.append(f"{c.case:<12}{c.check:<32}{c.value:>12.6f}{c.limit:>10.4f}  {'ok' if c.passed else 'FAILED'}")
    failed = sum(not c.passed for c in checks)
    lines.append(f"vectors {'PASSED' if not failed else f'FAILED ({failed} of {len(checks)} checks)'}")
    return "\n".join(lines)
