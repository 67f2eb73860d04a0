"""Small synthetic datasets in the official COCO panoptic and YouTube-VIS 2019 formats.

Scenes are the SHAPES taxonomy: 1-3 textured stuff bands (sky, grass, water, wall) under 1-5 flat
coloured shapes (circle, square, triangle, star). Each class has its own colour and texture, so a small
CNN learns them in minutes on a CPU, and the files go through exactly the loaders real data uses.

Every scene comes from its own generator seeded by (seed, split, index), so it can be redrawn
(`synthetic_image`, `synthetic_video`) to check what a loader reads back, and datasets of different sizes
share their first scenes.

    python -m rapsam.data.synthetic OUT_DIR --num-train 64 --num-val 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from rapsam.data import rle
from rapsam.data.samples import ImageSample, VideoSample
from rapsam.taxonomy import SHAPES

THINGS = tuple(i for i, t in enumerate(SHAPES.is_thing) if t)
STUFF = tuple(i for i, t in enumerate(SHAPES.is_thing) if not t)
# JSON category ids are deliberately not the taxonomy indices: loaders must map them by name.
COCO_CATEGORY_IDS = {i: (i + 1 if SHAPES.is_thing[i] else 100 + i) for i in range(SHAPES.num_classes)}
YTVIS_CATEGORY_IDS = {label: k + 1 for k, label in enumerate(THINGS)}
BASE_COLOURS = {
    "circle": (220, 40, 40),  # red
    "square": (240, 210, 40),  # yellow
    "triangle": (180, 60, 210),  # purple
    "star": (245, 245, 245),  # white
    "sky": (135, 190, 235),  # light blue, smooth gradient
    "grass": (60, 150, 50),  # green, vertical blades
    "water": (25, 65, 150),  # dark blue, horizontal waves
    "wall": (140, 110, 90),  # brown, light brick mortar
}
MIN_VISIBLE_PIXELS = 30
SIZE_RANGE = (0.10, 0.35)  # shape extent, as a fraction of the shorter image side
_SPLIT_CODES = {"coco/train": 1, "coco/val": 2, "ytvis/train": 3, "ytvis/valid": 4}


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _colour(label: int, rng: np.random.Generator, jitter: int) -> np.ndarray:
    return np.array(BASE_COLOURS[SHAPES.class_names[label]], float) + rng.integers(-jitter, jitter + 1, 3)


def _texture(label: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float canvas of a stuff class: its colour plus a class-specific pattern."""
    y, x = np.mgrid[0:h, 0:w].astype(float)
    name = SHAPES.class_names[label]
    if name == "sky":
        pattern = 35 * y / h
    elif name == "grass":
        pattern = 25 * np.sin(2 * np.pi * x / rng.uniform(4, 8) + rng.uniform(0, 2 * np.pi))
    elif name == "water":
        pattern = 25 * np.sin(2 * np.pi * y / rng.uniform(6, 10) + 1.5 * np.sin(x / rng.uniform(5, 9)))
    else:  # wall: bricks, every other row offset by half a brick
        bh, bw = rng.integers(8, 13), rng.integers(14, 22)
        row = (y // bh).astype(int)
        mortar = (y % bh < 1.5) | ((x + (row % 2) * bw / 2) % bw < 1.5)
        pattern = np.where(mortar, 70.0, 0.0)
    pattern = pattern[..., None] + rng.normal(0, 6, (h, w, 3))
    return _colour(label, rng, 15) + pattern


def _stuff_regions(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Region index map of 1-3 horizontal bands with wavy boundaries, and each band's class."""
    k = int(rng.integers(1, 4))
    labels = [int(c) for c in rng.choice(STUFF, k, replace=False)]
    region = np.zeros((h, w), int)
    x = np.arange(w)
    y = np.arange(h)[:, None]
    for b in range(1, k):
        base = h * (b / k + rng.uniform(-0.08, 0.08))
        wave = rng.uniform(0, 0.06) * h * np.sin(2 * np.pi * x / (w * rng.uniform(0.4, 1.2)) + rng.uniform(0, 6.3))
        region += y >= base + wave
    return region, labels


def _shape_mask(label: int, h: int, w: int, cx: float, cy: float, extent: float, angle: float) -> np.ndarray:
    """The (H, W) mask of a shape about `extent` pixels across, centred at (cx, cy)."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    r = extent / 2
    name = SHAPES.class_names[label]
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    else:
        if name == "square":
            radii, n = [r * np.sqrt(2) * 0.8], 4
        elif name == "triangle":
            radii, n = [r * 1.1], 3
        else:  # star: alternating outer and inner vertices
            radii, n = [r * 1.1, r * 0.45], 10
        t = angle + 2 * np.pi * np.arange(n) / n
        rad = np.resize(radii, n)
        draw.polygon(list(zip(cx + rad * np.cos(t), cy + rad * np.sin(t))), fill=1)
    return np.asarray(canvas, bool)


def _random_thing(rng: np.random.Generator, h: int, w: int) -> tuple[int, np.ndarray, float, float]:
    """(label, colour, extent, angle) of a new shape."""
    label = int(rng.choice(THINGS))
    return label, _colour(label, rng, 20), rng.uniform(*SIZE_RANGE) * min(h, w), rng.uniform(0, 2 * np.pi)


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(canvas + rng.normal(0, 3, canvas.shape), 0, 255).round().astype(np.uint8)


def synthetic_image(seed: int, split: str, index: int, image_size: tuple[int, int] = (128, 128)) -> ImageSample:
    """The scene `write_synthetic` writes as image `index` of COCO split `split` ("train"/"val"),
    before JPEG compression. `ids` are the panoptic segment ids of the PNG."""
    rng = _rng(seed, f"coco/{split}", index)
    h, w = image_size
    region, stuff = _stuff_regions(h, w, rng)
    canvas = np.zeros((h, w, 3))
    for k, label in enumerate(stuff):
        canvas[region == k] = _texture(label, h, w, rng)[region == k]
    owner = np.full((h, w), -1)  # which shape each pixel shows; later shapes occlude earlier ones
    things = []
    for k in range(int(rng.integers(1, 6))):
        label, colour, extent, angle = _random_thing(rng, h, w)
        mask = _shape_mask(label, h, w, rng.uniform(0, w), rng.uniform(0, h), extent, angle)
        canvas[mask] = colour + rng.normal(0, 8, (int(mask.sum()), 3))
        owner[mask] = k
        things.append(label)
    segments: list[tuple[np.ndarray, int]] = [(owner == k, label) for k, label in enumerate(things)]
    segments += [((region == k) & (owner < 0), label) for k, label in enumerate(stuff)]
    segments = [(m, label) for m, label in segments if m.sum() >= MIN_VISIBLE_PIXELS]
    counters: dict[int, int] = {}
    ids = []
    for _, label in segments:
        counters[label] = counters.get(label, 0) + 1
        ids.append(COCO_CATEGORY_IDS[label] * 1000 + counters[label])  # exercises all three PNG channels
    return ImageSample(
        image=_finish(canvas, rng),
        masks=np.array([m for m, _ in segments]).reshape(-1, h, w),
        labels=np.array([label for _, label in segments], np.int64),
        ids=np.array(ids, np.int64),
        is_crowd=np.zeros(len(segments), bool),
        name=f"{index + 1:012d}.jpg",
    )


def synthetic_video(
    seed: int, split: str, index: int, image_size: tuple[int, int] = (128, 128), num_frames: int = 5
) -> VideoSample:
    """The clip `write_synthetic` writes as video `index` of YouTube-VIS split `split` ("train"/"valid"),
    before JPEG compression: 1-3 shapes moving linearly over a static background. `ids` count from 1
    within the video; the JSON renumbers them split-wide. A mask is empty in frames where fewer than
    MIN_VISIBLE_PIXELS of the shape show (the JSON says None there)."""
    rng = _rng(seed, f"ytvis/{split}", index)
    h, w = image_size
    region, stuff = _stuff_regions(h, w, rng)
    background = np.zeros((h, w, 3))
    for k, label in enumerate(stuff):
        background[region == k] = _texture(label, h, w, rng)[region == k]
    tracks = []
    for _ in range(int(rng.integers(1, 4))):
        label, colour, extent, angle = _random_thing(rng, h, w)
        velocity = rng.uniform(1, 3, 2) * rng.choice([-1, 1], 2)  # (vx, vy) px per frame
        travel = velocity * (num_frames - 1)
        start = []
        for v, side in zip(travel, (w, h)):  # keep the whole path inside the frame where possible
            lo, hi = extent / 2 - min(0.0, v), side - extent / 2 - max(0.0, v)
            start.append(rng.uniform(lo, hi) if lo < hi else side / 2)
        tracks.append((label, colour, extent, angle, np.array(start), velocity))
    frames = np.zeros((num_frames, h, w, 3), np.uint8)
    masks = np.zeros((len(tracks), num_frames, h, w), bool)
    for t in range(num_frames):
        canvas = background.copy()
        owner = np.full((h, w), -1)
        for n, (label, colour, extent, angle, start, velocity) in enumerate(tracks):
            cx, cy = start + t * velocity
            mask = _shape_mask(label, h, w, cx, cy, extent, angle)
            canvas[mask] = colour + rng.normal(0, 8, (int(mask.sum()), 3))
            owner[mask] = n
        frames[t] = _finish(canvas, rng)
        for n in range(len(tracks)):
            visible = owner == n
            masks[n, t] = visible if visible.sum() >= MIN_VISIBLE_PIXELS else False
    keep = masks.any(axis=(1, 2, 3))
    return VideoSample(
        frames=frames,
        masks=masks[keep],
        labels=np.array([tr[0] for tr in tracks], np.int64)[keep],
        ids=np.arange(1, len(tracks) + 1, dtype=np.int64)[keep],
        is_crowd=np.zeros(int(keep.sum()), bool),
        name=f"{split}_{index:04d}",
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _write_coco(root: Path, split: str, num: int, image_size: tuple[int, int], seed: int) -> Path:
    png_dir = root / "annotations" / f"panoptic_{split}2017"
    image_dir = root / f"{split}2017"
    png_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        sample = synthetic_image(seed, split, i, image_size)
        image_id = i + 1
        Image.fromarray(sample.image).save(image_dir / sample.name, quality=95)
        id_map = np.zeros(sample.size, np.int64)
        segments = []
        for mask, label, seg_id in zip(sample.masks, sample.labels, sample.ids):
            id_map[mask] = seg_id
            segments.append(
                {
                    "id": int(seg_id),
                    "category_id": COCO_CATEGORY_IDS[int(label)],
                    "iscrowd": 0,
                    "area": int(mask.sum()),
                    "bbox": rle.to_bbox(mask),
                }
            )
        png_name = Path(sample.name).with_suffix(".png").name
        rgb = np.stack([id_map % 256, id_map // 256 % 256, id_map // 256**2], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(png_dir / png_name)
        images.append({"id": image_id, "file_name": sample.name, "height": sample.size[0], "width": sample.size[1]})
        annotations.append({"image_id": image_id, "file_name": png_name, "segments_info": segments})
    categories = [
        {
            "id": COCO_CATEGORY_IDS[i],
            "name": name,
            "isthing": int(SHAPES.is_thing[i]),
            "supercategory": "shape",
            "color": list(BASE_COLOURS[name]),
        }
        for i, name in enumerate(SHAPES.class_names)
    ]
    path = root / "annotations" / f"panoptic_{split}2017.json"
    info = {"description": f"rapsam synthetic shapes, seed {seed}", "version": "1.0"}
    _write_json(
        path, {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
    )
    return path


def _write_ytvis(root: Path, split: str, num: int, image_size: tuple[int, int], num_frames: int, seed: int) -> Path:
    videos, annotations = [], []
    h, w = image_size
    for i in range(num):
        clip = synthetic_video(seed, split, i, image_size, num_frames)
        video_id = i + 1
        file_names = [f"{clip.name}/{5 * t:05d}.jpg" for t in range(num_frames)]  # YouTube-VIS keeps every 5th frame
        for t, name in enumerate(file_names):
            (root / "JPEGImages" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(clip.frames[t]).save(root / "JPEGImages" / name, quality=95)
        videos.append({"id": video_id, "width": w, "height": h, "length": num_frames, "file_names": file_names})
        for masks, label in zip(clip.masks, clip.labels):
            present = [bool(m.any()) for m in masks]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": YTVIS_CATEGORY_IDS[int(label)],
                    "iscrowd": 0,
                    "height": h,
                    "width": w,
                    "segmentations": [rle.encode(m) if p else None for m, p in zip(masks, present)],
                    "areas": [int(m.sum()) if p else None for m, p in zip(masks, present)],
                    "bboxes": [rle.to_bbox(m) if p else None for m, p in zip(masks, present)],
                }
            )
    categories = [
        {"id": YTVIS_CATEGORY_IDS[i], "name": SHAPES.class_names[i], "supercategory": "shape"} for i in THINGS
    ]
    path = root / f"{split}.json"
    info = {"description": f"rapsam synthetic moving shapes, seed {seed}", "version": "1.0"}
    _write_json(
        path, {"info": info, "licenses": [], "videos": videos, "annotations": annotations, "categories": categories}
    )
    return path


def write_synthetic(
    root: str | Path,
    *,
    num_train: int = 64,
    num_val: int = 16,
    num_videos_train: int = 16,
    num_videos_val: int = 4,
    image_size: tuple[int, int] = (128, 128),
    num_frames: int = 5,
    seed: int = 0,
) -> dict[str, Path]:
    """Write `root/coco` (COCO panoptic train/val) and `root/ytvis` (YouTube-VIS train/valid); returns
    the roots to hand to `CocoPanoptic` / `YouTubeVIS` and the JSON files written."""
    root = Path(root)
    coco, ytvis = root / "coco", root / "ytvis"
    return {
        "coco_root": coco,
        "ytvis_root": ytvis,
        "coco_train_json": _write_coco(coco, "train", num_train, image_size, seed),
        "coco_val_json": _write_coco(coco, "val", num_val, image_size, seed),
        "ytvis_train_json": _write_ytvis(ytvis, "train", num_videos_train, image_size, num_frames, seed),
        "ytvis_valid_json": _write_ytvis(ytvis, "valid", num_videos_val, image_size, num_frames, seed),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rapsam.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=16)
    parser.add_argument("--num-videos-train", type=int, default=16)
    parser.add_argument("--num-videos-val", type=int, default=4)
    parser.add_argument("--size", type=int, nargs="+", default=[128], metavar="PX", help="H [W] of every image")
    parser.add_argument("--num-frames", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.size) > 2:
        parser.error("--size takes one or two numbers")
    size = (args.size[0], args.size[-1])
    paths = write_synthetic(
        args.out_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        num_videos_train=args.num_videos_train,
        num_videos_val=args.num_videos_val,
        image_size=size,
        num_frames=args.num_frames,
        seed=args.seed,
    )
    print(
        f"COCO panoptic: {args.num_train} train + {args.num_val} val images of {size[0]}x{size[1]} in {paths['coco_root']}"
    )
    print(
        f"YouTube-VIS: {args.num_videos_train} train + {args.num_videos_val} valid videos of {args.num_frames} frames "
        f"in {paths['ytvis_root']}"
    )
    for key in ("coco_train_json", "coco_val_json", "ytvis_train_json", "ytvis_valid_json"):
        print(f"  {key}: {paths[key]}")


if __name__ == "__main__":
    main()
