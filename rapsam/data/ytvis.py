"""YouTube-VIS 2019 in its official layout: one JSON per split, RLE masks, JPEG frames.

    root/{split}.json         videos[{id, file_names, height, width, length}],
                              annotations[{id, video_id, category_id, iscrowd, segmentations, areas, bboxes}],
                              categories[{id, name}]
    root/JPEGImages/<file_names[t]>

A segmentation is an RLE (compressed string or uncompressed list counts) or None in frames where the
instance is absent. The JSON (and every RLE's size) is checked when the dataset is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rapsam.data import rle
from rapsam.data.coco_panoptic import category_labels
from rapsam.data.samples import DatasetError, VideoSample, get_field, read_json, read_rgb
from rapsam.taxonomy import SHAPES, Taxonomy


@dataclass(frozen=True)
class _Track:
    id: int
    label: int
    is_crowd: bool
    segmentations: tuple[dict[str, Any] | None, ...]
    where: str


@dataclass(frozen=True)
class _Video:
    id: int
    file_names: tuple[str, ...]
    height: int
    width: int
    tracks: tuple[_Track, ...]
    where: str


class YouTubeVIS:
    """Videos as `VideoSample` clips of `clip_length` consecutive frames (or whole, for evaluation)."""

    def __init__(
        self, root: str | Path, split: str = "train", taxonomy: Taxonomy = SHAPES, clip_length: int = 2
    ) -> None:
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        self.root = Path(root)
        self.split = split
        self.taxonomy = taxonomy
        self.clip_length = clip_length
        self.json_path = self.root / f"{split}.json"
        self.frame_dir = self.root / "JPEGImages"
        data = read_json(self.json_path, "the YouTube-VIS annotation JSON (videos, annotations, categories)")
        self.videos = self._parse(data)

    def _parse(self, data: dict[str, Any]) -> list[_Video]:
        path = self.json_path
        labels = category_labels(
            get_field(data, "categories", path, "the file"), path, self.taxonomy, check_isthing=False
        )
        videos: dict[int, dict[str, Any]] = {}
        for k, video in enumerate(get_field(data, "videos", path, "the file", list)):
            where = f"videos[{k}]"
            vid = get_field(video, "id", path, where, int)
            file_names = get_field(video, "file_names", path, where, list)
            if not file_names or not all(isinstance(f, str) for f in file_names):
                raise DatasetError(f"{path}: {where}.file_names must be a non-empty list of frame paths")
            length = video.get("length", len(file_names))
            if length != len(file_names):
                raise DatasetError(f"{path}: {where}.length is {length} but it has {len(file_names)} file_names")
            videos[vid] = {
                "id": vid,
                "file_names": tuple(file_names),
                "height": get_field(video, "height", path, where, int),
                "width": get_field(video, "width", path, where, int),
                "tracks": [],
                "where": where,
            }
        # Official test/valid JSONs have no annotations; such a split still loads, with no instances.
        for k, ann in enumerate(data.get("annotations", [])):
            where = f"annotations[{k}]"
            vid = get_field(ann, "video_id", path, where, int)
            if vid not in videos:
                raise DatasetError(f"{path}: {where} has video_id {vid}, which no entry of 'videos' has")
            video = videos[vid]
            cat_id = get_field(ann, "category_id", path, where, int)
            if cat_id not in labels:
                raise DatasetError(f"{path}: {where} has category_id {cat_id}, which 'categories' does not list")
            segs = get_field(ann, "segmentations", path, where, list)
            if len(segs) != len(video["file_names"]):
                raise DatasetError(
                    f"{path}: {where}.segmentations has {len(segs)} entries but video {vid} has "
                    f"{len(video['file_names'])} frames"
                )
            for t, seg in enumerate(segs):
                self._check_rle(seg, video, f"{where}.segmentations[{t}]")
            video["tracks"].append(
                _Track(
                    id=get_field(ann, "id", path, where, int),
                    label=labels[cat_id],
                    is_crowd=bool(ann.get("iscrowd", 0)),
                    segmentations=tuple(segs),
                    where=where,
                )
            )
        return [_Video(**{**v, "tracks": tuple(v["tracks"])}) for v in videos.values()]

    def _check_rle(self, seg: Any, video: dict[str, Any], where: str) -> None:
        if seg is None:
            return
        if isinstance(seg, list):
            raise DatasetError(f"{self.json_path}: {where} is a polygon list; only RLE masks are supported")
        try:
            h, w = rle.shape(seg)
        except ValueError as exc:
            raise DatasetError(f"{self.json_path}: {where}: {exc}") from None
        if (h, w) != (video["height"], video["width"]):
            raise DatasetError(
                f"{self.json_path}: {where} has size {[h, w]} but the video is {[video['height'], video['width']]}"
            )

    def __len__(self) -> int:
        return len(self.videos)

    def num_frames(self, i: int) -> int:
        return len(self.videos[i].file_names)

    def __getitem__(self, i: int) -> VideoSample:
        """The clip that starts at frame 0: deterministic, for validation-style use of a training split."""
        return self.clip(i, 0)

    def sample_clip(self, i: int, rng: np.random.Generator) -> VideoSample:
        """A clip with a uniformly random start frame, for training."""
        start = int(rng.integers(0, max(1, self.num_frames(i) - self.clip_length + 1)))
        return self.clip(i, start)

    def full_video(self, i: int) -> VideoSample:
        """Every frame and every instance, for evaluation."""
        return self._load(i, list(range(self.num_frames(i))), keep_absent=True)

    def clip(self, i: int, start: int) -> VideoSample:
        """`clip_length` frames from `start`; a video shorter than that repeats its last frame.
        Instances absent from the whole clip are left out."""
        last = self.num_frames(i) - 1
        if not 0 <= start <= last:
            raise IndexError(f"start frame {start} outside video {i} with {last + 1} frames")
        return self._load(i, [min(start + k, last) for k in range(self.clip_length)], keep_absent=False)

    def _load(self, i: int, frame_ids: list[int], keep_absent: bool) -> VideoSample:
        video = self.videos[i]
        frames = np.zeros((len(frame_ids), video.height, video.width, 3), dtype=np.uint8)
        for k, t in enumerate(frame_ids):
            path = self.frame_dir / video.file_names[t]
            image = read_rgb(path, f"frame {t} of {self.json_path.name} {video.where}")
            if image.shape[:2] != (video.height, video.width):
                raise DatasetError(
                    f"{path} is {image.shape[1]}x{image.shape[0]} but {self.json_path.name} {video.where} "
                    f"says {video.width}x{video.height}"
                )
            frames[k] = image
        masks = np.zeros((len(video.tracks), len(frame_ids), video.height, video.width), dtype=bool)
        for n, track in enumerate(video.tracks):
            for k, t in enumerate(frame_ids):
                seg = track.segmentations[t]
                if seg is not None:
                    try:
                        masks[n, k] = rle.decode(seg)
                    except ValueError as exc:
                        raise DatasetError(f"{self.json_path}: {track.where}.segmentations[{t}]: {exc}") from None
        keep = np.ones(len(video.tracks), dtype=bool) if keep_absent else masks.any(axis=(1, 2, 3))
        return VideoSample(
            frames=frames,
            masks=masks[keep],
            labels=np.array([t.label for t in video.tracks], dtype=np.int64)[keep],
            ids=np.array([t.id for t in video.tracks], dtype=np.int64)[keep],
            is_crowd=np.array([t.is_crowd for t in video.tracks], dtype=bool)[keep],
            name=_video_name(video),
        )


def _video_name(video: _Video) -> str:
    """The frame folder (the official video key), else the numeric id."""
    folder = Path(video.file_names[0]).parent.as_posix()
    return folder if folder not in ("", ".") else f"video_{video.id}"
