"""Calibration data for the calibrated schemes: the contract inputs of every entry point on real images.

Images come from an image folder, a COCO panoptic root (prompts sampled on its ground-truth masks) or the
synthetic generator, are letterboxed exactly as the apps do it, and run once through the fp32 model, so
`panoptic`/`prompt` calibrate on the features they will really see rather than on noise.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from rapsam.data.prompts import BOX, POINT, sample_prompts
from rapsam.data.samples import DatasetError, read_rgb
from rapsam.export import get_entry_point
from rapsam.inference import Letterbox, check_input_size, letterbox, prompts_to_boxes
from rapsam.models.rapsam import RapSAM
from rapsam.quantize.base import Calibration, QuantizationError
from rapsam.taxonomy import SHAPES, Taxonomy

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SYNTHETIC = "synthetic"
PROGRESS_EVERY = 10

# One image and, where the source has them, prompts on it: (boxes (K, 4) xyxy pixels, kinds (K,)).
Item = tuple[str, np.ndarray, "tuple[np.ndarray, np.ndarray] | None"]


def load_calibration(
    source: str | Path,
    model: RapSAM,
    *,
    input_size: tuple[int, int],
    num_prompts: int,
    entry_points: Sequence[str],
    count: int = 64,
    seed: int = 0,
    progress: Callable[[str], None] = lambda m: None,
) -> Calibration:
    """Feeds {entry point: [{input name: array}]} for `entry_points` on `count` images of `source`."""
    if count < 1:
        raise QuantizationError(f"calibration count is {count}: give at least 1 image")
    for entry in entry_points:
        try:
            get_entry_point(entry)
        except KeyError as exc:
            raise QuantizationError(str(exc.args[0])) from None
    input_size = check_input_size(input_size)
    if str(source) == SYNTHETIC:
        with tempfile.TemporaryDirectory(prefix="rapsam-calib-") as tmp:
            from rapsam.data.synthetic import write_synthetic

            # Training scenes: the held-out validation scenes are what the accuracy gate scores on.
            roots = write_synthetic(tmp, num_train=count, num_val=0, num_videos_train=0, num_videos_val=0,
                                    image_size=model.config.default_size, seed=seed)
            # The generator's classes are SHAPES whatever the model's taxonomy: only pixels and masks matter here.
            items = list(_coco_items(roots["coco_root"], count, num_prompts, seed, SHAPES))
        return _build(items, SYNTHETIC, model, input_size, num_prompts, entry_points, progress)
    path = Path(source)
    if not path.exists():
        raise QuantizationError(f"calibration source {path} does not exist: give an image folder, a COCO "
                                f"panoptic root or '{SYNTHETIC}'")
    if not path.is_dir():
        raise QuantizationError(f"calibration source {path} is a file: give an image folder, a COCO panoptic "
                                f"root or '{SYNTHETIC}'")
    if _coco_split(path) is not None:
        items = _coco_items(path, count, num_prompts, seed, model.config.taxonomy)
    else:
        items = _folder_items(path, count, num_prompts, seed)
    return _build(items, str(path), model, input_size, num_prompts, entry_points, progress)


def _coco_split(root: Path) -> str | None:
    """The split a COCO panoptic root calibrates on: train where there is one, so that the val split stays
    unseen for the accuracy gate (`--eval-data`)."""
    for split in ("train", "val"):
        if (root / "annotations" / f"panoptic_{split}2017.json").is_file():
            return split
    return None


def _order(n: int, count: int, seed: int) -> list[int]:
    """A seeded shuffle, so a small `count` still spans the whole source rather than its first files."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n)[:count]]


def _coco_items(root: Path, count: int, num_prompts: int, seed: int, taxonomy: Taxonomy) -> Iterator[Item]:
    from rapsam.data.coco_panoptic import CocoPanoptic

    split = _coco_split(root)
    try:
        dataset = CocoPanoptic(root, split or "train", taxonomy=taxonomy)
    except DatasetError as exc:
        raise QuantizationError(f"calibration data: {exc}") from None
    if len(dataset) == 0:
        raise QuantizationError(f"{dataset.json_path} lists no images: give a COCO root with images")
    rng = np.random.default_rng([seed, 1])
    for i in _order(len(dataset), count, seed):
        try:
            sample = dataset[i]
        except DatasetError as exc:
            raise QuantizationError(f"calibration data: {exc}") from None
        boxes, kinds, _ = sample_prompts(sample, num_prompts, rng, taxonomy=taxonomy)
        yield sample.name, sample.image, (boxes, kinds)


def _folder_items(folder: Path, count: int, num_prompts: int, seed: int) -> Iterator[Item]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QuantizationError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): give a folder of "
                                f"photos, a COCO panoptic root or '{SYNTHETIC}'")
    rng = np.random.default_rng([seed, 2])
    for i in _order(len(files), count, seed):
        try:
            image = read_rgb(files[i], "a calibration image")
        except DatasetError:
            raise QuantizationError(f"{files[i]} is not a readable image: remove or replace it") from None
        yield files[i].name, image, _random_prompts(image.shape[:2], num_prompts, rng)


def _random_prompts(size: tuple[int, int], num_prompts: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """1..K random clicks and boxes inside the image (as `sample_prompts` returns them), the rest padding:
    without masks there is nothing to aim at, but the ranges the prompt encoder sees are what matter."""
    h, w = size
    boxes = np.zeros((num_prompts, 4), np.float32)
    kinds = np.full(num_prompts, -1, np.int32)
    for k in range(int(rng.integers(1, num_prompts + 1))):
        if rng.random() < 0.5:
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            boxes[k], kinds[k] = [x, y, x, y], POINT
        else:
            x0, y0 = rng.uniform(0, 0.7 * w), rng.uniform(0, 0.7 * h)
            x1, y1 = rng.uniform(x0 + 0.1 * w, w), rng.uniform(y0 + 0.1 * h, h)
            boxes[k], kinds[k] = [x0, y0, min(x1, w), min(y1, h)], BOX
    return boxes, kinds


def _contract_prompts(
    prompts: tuple[np.ndarray, np.ndarray], box: Letterbox, num_prompts: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel prompts -> the contract's (1, K, 4) boxes / (1, K) kinds, through the same `prompts_to_boxes`
    the apps use, so calibration sees the frame the artifact is fed in."""
    boxes, kinds = prompts
    points = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b, k in zip(boxes, kinds) if k == POINT]
    rects = [tuple(b) for b, k in zip(boxes, kinds) if k == BOX]
    out_boxes = np.zeros((1, num_prompts, 4), np.float32)
    out_kinds = np.full((1, num_prompts), -1, np.int32)
    if points or rects:
        scaled, scaled_kinds = prompts_to_boxes(points, rects, box)
        n = scaled.shape[1]
        out_boxes[0, :n] = scaled[0].numpy()
        out_kinds[0, :n] = scaled_kinds[0].numpy()
    return out_boxes, out_kinds


def _build(
    items: Iterator[Item] | list[Item],
    source: str,
    model: RapSAM,
    input_size: tuple[int, int],
    num_prompts: int,
    entry_points: Sequence[str],
    progress: Callable[[str], None],
) -> Calibration:
    items = list(items) if not isinstance(items, list) else items
    feeds: dict[str, list[dict[str, np.ndarray]]] = {e: [] for e in entry_points}
    need_features = any(e in ("panoptic", "prompt") for e in entry_points)
    model = model.eval()
    n = len(items)
    for i, (_, image, prompts) in enumerate(items, start=1):
        x, box = letterbox(image, input_size, model.config.pad_value)
        pixels = x.numpy().astype(np.float32)
        features = None
        if need_features:
            with torch.no_grad():
                features = model.encode(x).numpy().astype(np.float32)
        for entry in entry_points:
            if entry in ("encode", "segment"):
                feeds[entry].append({"image": pixels})
            elif entry == "panoptic":
                feeds[entry].append({"features": features})
            elif entry == "prompt":
                boxes, kinds = _contract_prompts(prompts, box, num_prompts)
                feeds[entry].append({"features": features, "boxes": boxes, "kinds": kinds})
        if i % PROGRESS_EVERY == 0 or i == n:
            progress(f"[calibration] {i}/{n}")
    return Calibration(feeds=feeds, source=source, digest=feeds_digest(feeds))


def feeds_digest(feeds: dict[str, list[dict[str, np.ndarray]]]) -> str:
    """sha256 over entry, input name, dtype, shape and bytes of every array, in sorted entry/name order, so
    the digest depends on the data alone and not on the order entry points were asked in."""
    digest = hashlib.sha256()
    for entry in sorted(feeds):
        for k, feed in enumerate(feeds[entry]):
            for name in sorted(feed):
                array = np.ascontiguousarray(feed[name])
                digest.update(f"{entry}/{k}/{name}/{array.dtype.str}/{array.shape}".encode())
                digest.update(array.tobytes())
    return digest.hexdigest()
