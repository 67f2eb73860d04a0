"""The two sample types every loader returns and every transform, prompt sampler and trainer consumes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the one-line message names the file and what is wrong."""


# Loaders share these so every message has the same shape: "<path>: <where> <what is wrong>".


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`; `what` says what the file should be, for the not-found message."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: expected {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} holds a JSON {type(data).__name__}, expected an object ({what})")
    return data


def get_field(obj: Any, key: str, path: Path, where: str, types: type | tuple[type, ...] | None = None) -> Any:
    """obj[key], or a DatasetError naming the file, the JSON location and the field."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: {where} is a JSON {type(obj).__name__}, expected an object")
    if key not in obj:
        raise DatasetError(f"{path}: {where} has no {key!r}")
    value = obj[key]
    if types is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types)):
        names = "/".join(t.__name__ for t in _tuple(types))
        raise DatasetError(f"{path}: {where}.{key} is a {type(value).__name__}, expected {names}")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def read_rgb(path: Path, what: str) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an image file, or a DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: expected {what}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports broken files with any of these
        raise DatasetError(f"{path} is not a readable image ({what}): {exc}") from None


def _segment_arrays(n: int, labels, ids, is_crowd, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-segment arrays in their canonical dtypes, each checked to have one entry per mask."""
    out = (
        np.asarray(labels, dtype=np.int64).reshape(-1),
        np.asarray(ids, dtype=np.int64).reshape(-1),
        np.asarray(is_crowd, dtype=bool).reshape(-1),
    )
    for field, arr in zip(("labels", "ids", "is_crowd"), out):
        if arr.shape[0] != n:
            raise ValueError(f"{where}: {n} masks but {arr.shape[0]} {field}")
    return out


@dataclass
class ImageSample:
    """One image and its panoptic segments (thing instances and stuff regions alike).

    Pixels covered by no mask are void/unlabelled (or padding after a transform)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, H, W) bool
    labels: np.ndarray  # (N,) int64 taxonomy class index
    ids: np.ndarray  # (N,) int64 segment id
    is_crowd: np.ndarray  # (N,) bool
    name: str

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.uint8)
        if self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"{self.name}: image must be (H, W, 3), got {self.image.shape}")
        h, w = self.image.shape[:2]
        masks = np.asarray(self.masks, dtype=bool)
        self.masks = masks.reshape(-1, h, w) if masks.size == 0 else masks
        if self.masks.ndim != 3 or self.masks.shape[1:] != (h, w):
            raise ValueError(f"{self.name}: masks {self.masks.shape} do not match image {self.image.shape}")
        self.labels, self.ids, self.is_crowd = _segment_arrays(
            len(self.masks), self.labels, self.ids, self.is_crowd, self.name
        )

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class VideoSample:
    """A clip and its instances; an instance's mask is all False in the frames it is absent from."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (N, T, H, W) bool
    labels: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) int64, the same instance keeps its id across frames
    is_crowd: np.ndarray  # (N,) bool
    name: str

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.uint8)
        if self.frames.ndim != 4 or self.frames.shape[3] != 3:
            raise ValueError(f"{self.name}: frames must be (T, H, W, 3), got {self.frames.shape}")
        t, h, w = self.frames.shape[:3]
        masks = np.asarray(self.masks, dtype=bool)
        self.masks = masks.reshape(-1, t, h, w) if masks.size == 0 else masks
        if self.masks.ndim != 4 or self.masks.shape[1:] != (t, h, w):
            raise ValueError(f"{self.name}: masks {self.masks.shape} do not match frames {self.frames.shape}")
        self.labels, self.ids, self.is_crowd = _segment_arrays(
            len(self.masks), self.labels, self.ids, self.is_crowd, self.name
        )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def frame(self, t: int) -> ImageSample:
        """Frame t alone, with only the instances visible in it (ids kept, so frames can be matched)."""
        present = self.masks[:, t].any(axis=(1, 2))
        return ImageSample(
            image=self.frames[t],
            masks=self.masks[present, t],
            labels=self.labels[present],
            ids=self.ids[present],
            is_crowd=self.is_crowd[present],
            name=f"{self.name}[{t}]",
        )
