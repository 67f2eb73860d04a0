"""COCO-SAM style prompts made from ground-truth masks.

Every prompt is a box (K, 4) in xyxy pixel coordinates (pixel edges: pixel (x, y) spans [x, x+1]) plus a
kind, because RAP-SAM's prompt encoder takes clicks as tiny boxes: a click at pixel centre (cx, cy) is the
box (cx-3, cy-3, cx+3, cy+3) clipped to the image. Kinds: 0 = point, 1 = box, -1 = padding.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, minimum_filter

from rapsam.data.samples import ImageSample
from rapsam.taxonomy import SHAPES, Taxonomy

POINT, BOX, PAD = 0, 1, -1
POINT_HALF_SIZE = 3.0

Prompts = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (K,4) float32, kinds (K,) int32, masks (K,H,W) bool


def _promptable(sample: ImageSample, things_only: bool, taxonomy: Taxonomy) -> np.ndarray:
    """Indices of segments that may be prompted: crowd regions have no single object to point at."""
    ok = ~sample.is_crowd & sample.masks.any(axis=(1, 2))
    if things_only:
        ok &= np.asarray(taxonomy.is_thing, dtype=bool)[sample.labels]
    return np.flatnonzero(ok)


def point_box(x: float, y: float, height: int, width: int) -> np.ndarray:
    """The tiny box a click at (x, y) stands for, clipped to the image."""
    box = np.array([x - POINT_HALF_SIZE, y - POINT_HALF_SIZE, x + POINT_HALF_SIZE, y + POINT_HALF_SIZE])
    return np.clip(box, 0, [width, height, width, height]).astype(np.float32)


def tight_box(mask: np.ndarray) -> np.ndarray:
    """xyxy box of a non-empty mask on pixel edges, so it contains every mask pixel entirely."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _empty(k: int, h: int, w: int) -> Prompts:
    return np.zeros((k, 4), np.float32), np.full(k, PAD, np.int32), np.zeros((k, h, w), bool)


def sample_prompts(
    sample: ImageSample,
    num_prompts: int,
    rng: np.random.Generator,
    *,
    point_fraction: float = 0.5,
    things_only: bool = False,
    box_jitter: float = 0.0,
    click_margin: int = 0,
    taxonomy: Taxonomy = SHAPES,
) -> Prompts:
    """`num_prompts` prompts on distinct random segments, each a point with probability `point_fraction`
    else a box whose edges move by up to `box_jitter` of its width/height; padded with kind -1.

    A click lands on a random pixel of its segment whose square of +-`click_margin` pixels lies inside the
    segment (the margin shrinks for segments too thin for it): with a margin of POINT_HALF_SIZE the click's
    box covers its segment only, as a user's click (and the evaluation's centre-most click) does, rather than
    straddling an edge where it names two segments at once."""
    h, w = sample.size
    boxes, kinds, targets = _empty(num_prompts, h, w)
    candidates = _promptable(sample, things_only, taxonomy)
    chosen = rng.permutation(candidates)[:num_prompts]
    for k, seg in enumerate(chosen):
        mask = sample.masks[seg]
        targets[k] = mask
        if rng.random() < point_fraction:
            ys, xs = np.nonzero(_click_region(mask, click_margin))
            j = rng.integers(len(ys))
            boxes[k] = point_box(xs[j] + 0.5, ys[j] + 0.5, h, w)
            kinds[k] = POINT
        else:
            box = tight_box(mask)
            if box_jitter > 0:
                side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
                box = box + rng.uniform(-box_jitter, box_jitter, 4) * side
                box = np.clip(box, 0, [w, h, w, h])
                box[2:] = np.maximum(box[2:], box[:2] + 1e-3)  # keep x2 > x1, y2 > y1
            boxes[k] = box
            kinds[k] = BOX
    return boxes, kinds, targets


def _click_region(mask: np.ndarray, margin: int) -> np.ndarray:
    """The pixels of a non-empty mask whose (2 margin + 1)-pixel square lies inside it (outside the image
    counts as outside the mask), with the margin lowered until some pixel qualifies."""
    for radius in range(margin, 0, -1):
        inner = minimum_filter(mask.view(np.uint8), size=2 * radius + 1, mode="constant", cval=0).view(bool)
        if inner.any():
            return inner
    return mask


def center_point_prompts(sample: ImageSample, *, things_only: bool = False, taxonomy: Taxonomy = SHAPES) -> Prompts:
    """One click per promptable segment, at the pixel farthest from its boundary (and from the image
    border), as the "1 point" evaluation uses: deterministic, and never on an ambiguous edge."""
    h, w = sample.size
    segs = _promptable(sample, things_only, taxonomy)
    boxes, kinds, targets = _empty(len(segs), h, w)
    for k, seg in enumerate(segs):
        mask = sample.masks[seg]
        dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        boxes[k] = point_box(x + 0.5, y + 0.5, h, w)
        kinds[k] = POINT
        targets[k] = mask
    return boxes, kinds, targets


def box_prompts(sample: ImageSample, *, things_only: bool = False, taxonomy: Taxonomy = SHAPES) -> Prompts:
    """The tight box of every promptable segment, for box-prompt evaluation."""
    h, w = sample.size
    segs = _promptable(sample, things_only, taxonomy)
    boxes, kinds, targets = _empty(len(segs), h, w)
    for k, seg in enumerate(segs):
        boxes[k] = tight_box(sample.masks[seg])
        kinds[k] = BOX
        targets[k] = sample.masks[seg]
    return boxes, kinds, targets
