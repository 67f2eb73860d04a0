"""Redraw docs/demo-overlay.png: the built-in demo weights on held-out (val) synthetic scenes.

    python3 scripts/demo_overlay.py [--data data/synthetic] [--out docs/demo-overlay.png]

`--data` is a root written by `python -m rapsam.data.synthetic` (its coco/ and ytvis/), read as
`rapsam-eval --synthetic` reads it. The picture is a grid of COLUMNS tiles per row, each a 128x128 scene drawn
at SCALE x:
  1. held-out images (the first COLUMNS of the val split);
  2. their panoptic segmentation, coloured by class;
  3. one click (green dot) per image and its mask: the click the evaluation uses (interior point farthest from
     the border) on the image's first thing segment;
  4. the first COLUMNS frames of the first held-out video, things coloured and numbered by the tracker's ids.
Everything is fixed, so the same weights and data give the same picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from rapsam.data import CocoPanoptic, ImageSample, YouTubeVIS, center_point_prompts
from rapsam.demo import panoptic_picture, prompt_picture, track_picture
from rapsam.pipeline import Predictor, encode, open_predictor, panoptic, prompt, track
from rapsam.postprocess import PanopticResult

COLUMNS = 4  # tiles per row: images, and frames of the video
SCALE = 2  # each 128x128 scene is drawn at 256x256 so that masks, the click and the ids are easy to see
MODEL = "rapsam_edgenext_demo"  # its weights ship with the package


def upscale(array: np.ndarray) -> np.ndarray:
    """An image or a mask / segment map (first two axes H, W) SCALE times larger, nearest neighbour."""
    return array.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def scaled(result: PanopticResult) -> PanopticResult:
    """The result on the SCALE x image (segment areas are those of the model's image)."""
    return PanopticResult(upscale(result.segment_map), result.segments)


def crop(picture: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A rapsam.demo picture without the legend strip it adds on the right."""
    return picture[: image.shape[0], : image.shape[1]]


def panoptic_tile(predictor: Predictor, sample: ImageSample) -> np.ndarray:
    result, _ = panoptic(predictor, sample.image)
    big = upscale(sample.image)
    return crop(panoptic_picture(big, scaled(result), predictor.taxonomy.class_names), big)


def click_tile(predictor: Predictor, sample: ImageSample) -> np.ndarray:
    boxes, _, _ = center_point_prompts(sample, things_only=True, taxonomy=predictor.taxonomy)
    if len(boxes) == 0:
        raise ValueError(f"{sample.name} has no thing to click on")
    x0, y0, x1, y1 = boxes[0]  # a click is stored as its +-3 px box
    point = ((x0 + x1) / 2, (y0 + y1) / 2)
    result = prompt(predictor, encode(predictor, sample.image), points=[point])
    big = upscale(sample.image)
    masks = np.stack([upscale(mask) for mask in result.masks])
    return crop(prompt_picture(big, masks, result.iou, [(point[0] * SCALE, point[1] * SCALE)], []), big)


def video_tiles(predictor: Predictor, videos: YouTubeVIS) -> list[np.ndarray]:
    frames = videos.full_video(0).frames[:COLUMNS]
    return [track_picture(upscale(frame), scaled(tracked.panoptic), tracked.instance_ids)
            for frame, tracked in zip(frames, track(predictor, frames))]


def overlay_picture(predictor: Predictor, data: Path) -> np.ndarray:
    images = CocoPanoptic(data / "coco", "val", taxonomy=predictor.taxonomy)
    videos = YouTubeVIS(data / "ytvis", "valid", taxonomy=predictor.taxonomy)
    if len(images) < COLUMNS or len(videos) == 0 or videos.num_frames(0) < COLUMNS:
        raise ValueError(f"{data} needs {COLUMNS} val images and a val video of {COLUMNS} frames")
    samples = [images[i] for i in range(COLUMNS)]
    rows = [
        [upscale(s.image) for s in samples],
        [panoptic_tile(predictor, s) for s in samples],
        [click_tile(predictor, s) for s in samples],
        video_tiles(predictor, videos),
    ]
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description="Redraw docs/demo-overlay.png from the built-in demo weights.")
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="synthetic data root")
    parser.add_argument("--out", type=Path, default=Path("docs/demo-overlay.png"), help="PNG to write")
    args = parser.parse_args()
    picture = overlay_picture(open_predictor(MODEL), args.data)
    Image.fromarray(picture).save(args.out, optimize=True)
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]}, {args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
