"""COCO panoptic segmentation in its official layout (one JSON plus one id-coded PNG per image).

    root/annotations/panoptic_{split}2017.json
    root/annotations/panoptic_{split}2017/<annotation file_name>.png   segment id = R + 256 G + 256^2 B, 0 = void
    root/{split}2017/<image file_name>.jpg

The JSON is checked when the dataset is opened, so a malformed file fails before training starts;
images and PNGs are read (and checked) lazily per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rapsam.data.samples import DatasetError, ImageSample, get_field, read_json, read_rgb
from rapsam.taxonomy import SHAPES, Taxonomy


@dataclass(frozen=True)
class _Segment:
    id: int
    label: int
    is_crowd: bool


@dataclass(frozen=True)
class _Entry:
    image_path: Path
    png_path: Path
    segments: tuple[_Segment, ...]
    name: str
    where: str  # "annotations[i]", for messages


def category_labels(categories: Any, path: Path, taxonomy: Taxonomy, *, check_isthing: bool) -> dict[int, int]:
    """JSON category id -> taxonomy index, matched by name, so datasets may number categories as they like."""
    if not isinstance(categories, list):
        raise DatasetError(f"{path}: 'categories' is a {type(categories).__name__}, expected a list")
    index = {name: i for i, name in enumerate(taxonomy.class_names)}
    labels: dict[int, int] = {}
    for k, cat in enumerate(categories):
        where = f"categories[{k}]"
        cat_id = get_field(cat, "id", path, where, int)
        name = get_field(cat, "name", path, where, str)
        if name not in index:
            raise DatasetError(
                f"{path}: {where} has unknown category {name!r} (id {cat_id}); taxonomy {taxonomy.name!r} has "
                f"{', '.join(taxonomy.class_names[:12])}{', ...' if taxonomy.num_classes > 12 else ''}"
            )
        if check_isthing and "isthing" in cat and bool(cat["isthing"]) != taxonomy.is_thing[index[name]]:
            kind = "thing" if taxonomy.is_thing[index[name]] else "stuff"
            raise DatasetError(
                f"{path}: {where} {name!r} has isthing={cat['isthing']} but it is {kind} in {taxonomy.name!r}"
            )
        if cat_id in labels:
            raise DatasetError(f"{path}: {where} repeats category id {cat_id}")
        labels[cat_id] = index[name]
    return labels


class CocoPanoptic:
    """COCO panoptic images as `ImageSample`s: one mask per thing instance and per stuff region."""

    def __init__(self, root: str | Path, split: str = "train", taxonomy: Taxonomy = SHAPES) -> None:
        self.root = Path(root)
        self.split = split
        self.taxonomy = taxonomy
        self.json_path = self.root / "annotations" / f"panoptic_{split}2017.json"
        self.png_dir = self.root / "annotations" / f"panoptic_{split}2017"
        self.image_dir = self.root / f"{split}2017"
        data = read_json(self.json_path, "the COCO panoptic annotation JSON (images, annotations, categories)")
        self.entries = self._parse(data)

    def _parse(self, data: dict[str, Any]) -> list[_Entry]:
        path = self.json_path
        labels = category_labels(
            get_field(data, "categories", path, "the file"), path, self.taxonomy, check_isthing=True
        )
        images = get_field(data, "images", path, "the file", list)
        image_files: dict[int, str] = {}
        for k, img in enumerate(images):
            image_files[get_field(img, "id", path, f"images[{k}]", int)] = get_field(
                img, "file_name", path, f"images[{k}]", str
            )
        entries = []
        for k, ann in enumerate(get_field(data, "annotations", path, "the file", list)):
            where = f"annotations[{k}]"
            image_id = get_field(ann, "image_id", path, where, int)
            png_name = get_field(ann, "file_name", path, where, str)
            if image_id not in image_files:
                raise DatasetError(f"{path}: {where} has image_id {image_id}, which no entry of 'images' has")
            segments = []
            seen: set[int] = set()
            for j, seg in enumerate(get_field(ann, "segments_info", path, where, list)):
                swhere = f"{where}.segments_info[{j}]"
                seg_id = get_field(seg, "id", path, swhere, int)
                cat_id = get_field(seg, "category_id", path, swhere, int)
                if cat_id not in labels:
                    raise DatasetError(f"{path}: {swhere} has category_id {cat_id}, which 'categories' does not list")
                if seg_id <= 0 or seg_id in seen:
                    raise DatasetError(f"{path}: {swhere} has id {seg_id}; ids must be positive and unique per image")
                seen.add(seg_id)
                segments.append(_Segment(seg_id, labels[cat_id], bool(seg.get("iscrowd", 0))))
            entries.append(
                _Entry(
                    image_path=self.image_dir / image_files[image_id],
                    png_path=self.png_dir / png_name,
                    segments=tuple(segments),
                    name=image_files[image_id],
                    where=where,
                )
            )
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> ImageSample:
        entry = self.entries[i]
        image = read_rgb(entry.image_path, f"the image of {self.json_path.name} {entry.where}")
        png = read_rgb(entry.png_path, f"the panoptic PNG of {self.json_path.name} {entry.where}")
        if png.shape != image.shape:
            raise DatasetError(
                f"{entry.png_path} is {png.shape[1]}x{png.shape[0]} but its image {entry.image_path.name} "
                f"is {image.shape[1]}x{image.shape[0]}"
            )
        rgb = png.astype(np.int64)
        id_map = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        masks = np.zeros((len(entry.segments), *image.shape[:2]), dtype=bool)
        for k, seg in enumerate(entry.segments):
            masks[k] = id_map == seg.id
            if not masks[k].any():
                raise DatasetError(
                    f"{entry.png_path} has no pixel of segment id {seg.id} listed in "
                    f"{self.json_path.name} {entry.where}.segments_info[{k}]"
                )
        return ImageSample(
            image=image,
            masks=masks,
            labels=np.array([s.label for s in entry.segments], dtype=np.int64),
            ids=np.array([s.id for s in entry.segments], dtype=np.int64),
            is_crowd=np.array([s.is_crowd for s in entry.segments], dtype=bool),
            name=entry.name,
        )
