"""The Python API on images: numpy HxWx3 uint8 or PIL in, panoptic maps / prompt masks / track ids out.

Images are resized keeping their aspect ratio to fit the model input and padded bottom/right with the
pixel mean (zero after normalization, as the official preprocessor pads), then outputs are brought back
onto the original image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from rapsam.models.head import BOX, POINT
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

if TYPE_CHECKING:
    from rapsam.models.rapsam import RapSAM

# The official model turns a click into a box of this half-size, in pixels of the resized image.
CLICK_HALF_SIZE = 3.0
SIZE_MULTIPLE = 32
DEFAULT_THRESHOLDS = PanopticThresholds()


@dataclass(frozen=True)
class Letterbox:
    """How an image of `image_size` sits in the model input: scaled to `valid_size`, padded to `input_size`."""

    image_size: tuple[int, int]
    valid_size: tuple[int, int]
    input_size: tuple[int, int]


def check_input_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = size
    if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"input size {height}x{width} must be positive multiples of {SIZE_MULTIPLE}")
    return height, width


def as_rgb_array(image: Any) -> np.ndarray:
    """PIL image or numpy HxWx3 uint8 -> numpy HxWx3 uint8, with a clear error for anything else."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL, without importing it
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy HxWx3 uint8 array or a PIL image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected dtype uint8 (0..255), got {image.dtype}; convert with .astype(np.uint8)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has an empty side: {image.shape}")
    return image


def letterbox(image: np.ndarray, input_size: tuple[int, int], pad_value: Sequence[float]) -> tuple[torch.Tensor, Letterbox]:
    """HxWx3 uint8 -> (1, 3, H_in, W_in) float32 RGB 0..255 and where the image sits in it."""
    height, width = image.shape[:2]
    scale = min(input_size[0] / height, input_size[1] / width)
    valid = (max(1, round(height * scale)), max(1, round(width * scale)))
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]  # copies: PIL arrays are read-only
    x = F.interpolate(x, size=valid, mode="bilinear", align_corners=False)
    canvas = torch.tensor(pad_value, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, *input_size).clone()
    canvas[:, :, : valid[0], : valid[1]] = x
    return canvas, Letterbox(image_size=(height, width), valid_size=valid, input_size=input_size)


def prompts_to_boxes(
    points: Sequence[Sequence[float]], boxes: Sequence[Sequence[float]], box: Letterbox
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks (x, y) and boxes (x0, y0, x1, y1) in image pixels -> prompt boxes (1, K, 4), kinds (1, K).

    Prompt boxes are in the export contract's frame: the image stretched to the model input size.
    """
    height, width = box.image_size
    rows: list[list[float]] = []
    for x, y in (tuple(p) for p in points):
        if not (0 <= x <= width and 0 <= y <= height):
            raise ValueError(f"point ({x}, {y}) lies outside the {width}x{height} image")
        rows.append([x, y, x, y])
    for x0, y0, x1, y1 in (tuple(b) for b in boxes):
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"box ({x0}, {y0}, {x1}, {y1}) is empty or outside the {width}x{height} image")
        rows.append([x0, y0, x1, y1])
    if not rows:
        raise ValueError("give at least one point or box")
    # The official head normalizes prompts by the unpadded image extent, the graph by the model input:
    # stretching the prompt (not the image) to the input makes the two agree on a letterboxed image.
    stretch = torch.tensor([box.input_size[1] / width, box.input_size[0] / height]).repeat(2)
    scaled = torch.tensor(rows, dtype=torch.float32) * stretch
    # A click is a box of +-3 pixels of the resized image, stretched likewise.
    half = CLICK_HALF_SIZE * torch.tensor([box.input_size[1] / box.valid_size[1], box.input_size[0] / box.valid_size[0]])
    scaled[: len(points)] += torch.cat([-half, half])
    kinds = torch.tensor([POINT] * len(points) + [BOX] * len(boxes))
    return scaled[None], kinds[None]


class ImageAPI:
    """User-level methods of the RapSAM module (mixed into it)."""

    config: Any

    def _prepare(self: RapSAM, image: Any, input_size: tuple[int, int] | None) -> tuple[torch.Tensor, Letterbox]:
        size = check_input_size(input_size or self.config.default_size)
        return letterbox(as_rgb_array(image), size, self.config.pad_value)

    @torch.inference_mode()
    def segment(
        self: RapSAM,
        image: Any,
        *,
        input_size: tuple[int, int] | None = None,
        thresholds: PanopticThresholds = DEFAULT_THRESHOLDS,
    ) -> PanopticResult:
        """Panoptic segmentation of one image: segment map at image size + one entry per segment."""
        x, box = self._prepare(image, input_size)
        mask_logits, class_logits, _ = self.segment_logits(x)
        return _merge(self, mask_logits[0], class_logits[0], box, thresholds)

    @torch.inference_mode()
    def prompt(
        self: RapSAM,
        image: Any,
        *,
        points: Sequence[Sequence[float]] = (),
        boxes: Sequence[Sequence[float]] = (),
        input_size: tuple[int, int] | None = None,
    ) -> PromptResult:
        """One mask (image size) and predicted IoU per prompt: points first, then boxes."""
        x, box = self._prepare(image, input_size)
        prompt_boxes, kinds = prompts_to_boxes(points, boxes, box)
        mask_logits, iou = self.prompt_logits(self.encode(x), prompt_boxes, kinds)
        return prompt_masks(
            mask_logits[0], iou[0], valid=kinds[0] >= 0, input_size=box.input_size,
            valid_size=box.valid_size, image_size=box.image_size,
        )

    @torch.inference_mode()
    def track(
        self: RapSAM,
        frames: Iterable[Any],
        *,
        input_size: tuple[int, int] | None = None,
        thresholds: PanopticThresholds = DEFAULT_THRESHOLDS,
    ) -> list[TrackedFrame]:
        """Panoptic segmentation of each frame with instance ids kept across frames (query matching)."""
        tracker = QueryTracker()
        results = []
        for frame in frames:
            x, box = self._prepare(frame, input_size)
            mask_logits, class_logits, queries = self.segment_logits(x)
            panoptic = _merge(self, mask_logits[0], class_logits[0], box, thresholds)
            results.append(TrackedFrame(panoptic=panoptic, instance_ids=instance_ids(tracker, panoptic, queries[0])))
        return results


@dataclass(frozen=True)
class TrackedFrame:
    """`instance_ids[i]` is the video-wide id of `panoptic.segments[i]` (-1 for stuff)."""

    panoptic: PanopticResult
    instance_ids: tuple[int, ...]


def _merge(
    model: RapSAM, mask_logits: torch.Tensor, class_logits: torch.Tensor, box: Letterbox, thresholds: PanopticThresholds
) -> PanopticResult:
    logits = upsample_mask_logits(
        mask_logits, input_size=box.input_size, valid_size=box.valid_size, image_size=box.image_size
    )
    return panoptic_merge(
        logits, class_logits, is_thing=model.config.taxonomy.is_thing,
        object_mask_threshold=thresholds.object_mask_threshold, overlap_threshold=thresholds.overlap_threshold,
    )
