"""Datasets for training and evaluation: COCO panoptic, YouTube-VIS 2019, SAM-style prompts from masks,
augmentations, and a synthetic generator that writes both official formats."""

from rapsam.data import rle
from rapsam.data.coco_panoptic import CocoPanoptic
from rapsam.data.prompts import BOX, PAD, POINT, box_prompts, center_point_prompts, sample_prompts
from rapsam.data.samples import DatasetError, ImageSample, VideoSample
from rapsam.data.transforms import fit_scale, horizontal_flip, large_scale_jitter, pseudo_video, resize_pad
from rapsam.data.ytvis import YouTubeVIS

__all__ = [
    "BOX",
    "PAD",
    "POINT",
    "CocoPanoptic",
    "DatasetError",
    "ImageSample",
    "VideoSample",
    "YouTubeVIS",
    "box_prompts",
    "center_point_prompts",
    "fit_scale",
    "horizontal_flip",
    "large_scale_jitter",
    "pseudo_video",
    "resize_pad",
    "rle",
    "sample_prompts",
    "synthetic_image",
    "synthetic_video",
    "write_synthetic",
]


def __getattr__(name: str):
    # The generator loads lazily so `python -m rapsam.data.synthetic` does not import itself twice.
    if name in ("synthetic_image", "synthetic_video", "write_synthetic"):
        from rapsam.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'rapsam.data' has no attribute {name!r}")
