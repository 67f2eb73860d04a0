"""Geometric augmentations on numpy samples, applied identically to image, masks and every frame of a clip.

Padding is at the bottom/right only, so a pixel's coordinates before and after padding agree;
padded pixels take `pad_value` in the image and belong to no mask.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from rapsam.data.samples import ImageSample, VideoSample

Sample = ImageSample | VideoSample
Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _stack(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Images as (T, H, W, 3) and masks as (M, H, W), so one code path serves images and clips."""
    if isinstance(sample, VideoSample):
        n, t, h, w = sample.masks.shape
        return sample.frames, sample.masks.reshape(n * t, h, w)
    return sample.image[None], sample.masks


def _unstack(sample: Sample, images: np.ndarray, masks: np.ndarray, drop_empty: bool = True) -> Sample:
    """`sample` with new pixels; instances left without a single pixel (in any frame) are dropped."""
    h, w = images.shape[1:3]
    if isinstance(sample, VideoSample):
        masks = masks.reshape(len(sample.masks), images.shape[0], h, w)
        keep = masks.any(axis=(1, 2, 3)) if drop_empty else np.ones(len(masks), bool)
        fields = {"frames": images}
    else:
        keep = masks.any(axis=(1, 2)) if drop_empty else np.ones(len(masks), bool)
        fields = {"image": images[0]}
    return replace(
        sample,
        masks=masks[keep],
        labels=sample.labels[keep],
        ids=sample.ids[keep],
        is_crowd=sample.is_crowd[keep],
        **fields,
    )


def _resize(images: np.ndarray, masks: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear (antialiased when shrinking) for pixels, nearest for masks, with the same pixel-centre
    geometry so the two stay aligned."""
    src_h, src_w = images.shape[1:3]
    if (h, w) == (src_h, src_w):
        return images, masks
    out = np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in images])
    rows = np.minimum(((np.arange(h) + 0.5) * src_h / h).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * src_w / w).astype(np.int64), src_w - 1)
    return out, masks[:, rows][:, :, cols]


def _place(
    images: np.ndarray, masks: np.ndarray, out_h: int, out_w: int, top: int, left: int, pad_value
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the window at (top, left) of size (out_h, out_w) from the input, padding past its bottom/right."""
    h = min(out_h, images.shape[1] - top)
    w = min(out_w, images.shape[2] - left)
    out_images = np.empty((images.shape[0], out_h, out_w, 3), np.uint8)
    out_images[:] = np.asarray(pad_value, np.uint8)
    out_images[:, :h, :w] = images[:, top : top + h, left : left + w]
    out_masks = np.zeros((masks.shape[0], out_h, out_w), bool)
    out_masks[:, :h, :w] = masks[:, top : top + h, left : left + w]
    return out_images, out_masks


def fit_scale(size: tuple[int, int], output_size: Size) -> float:
    """The scale at which an image of `size` (H, W) just fits in `output_size`; divide predictions made
    on a `resize_pad` output by it (after cropping the padding) to get back to the original image."""
    out_h, out_w = _hw(output_size)
    return min(out_h / size[0], out_w / size[1])


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def large_scale_jitter(
    sample: Sample,
    output_size: Size,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.1, 2.0),
    pad_value: tuple[int, int, int] = (0, 0, 0),
) -> Sample:
    """LSJ (Ghiasi et al.): resize to fit `output_size` times a random factor in `scale_range`, then a
    random `output_size` crop (when larger) and bottom/right padding (when smaller)."""
    out_h, out_w = _hw(output_size)
    images, masks = _stack(sample)
    size = images.shape[1:3]
    h, w = _scaled(size, fit_scale(size, (out_h, out_w)) * rng.uniform(*scale_range))
    images, masks = _resize(images, masks, h, w)
    top = int(rng.integers(0, max(0, h - out_h) + 1))
    left = int(rng.integers(0, max(0, w - out_w) + 1))
    return _unstack(sample, *_place(images, masks, out_h, out_w, top, left, pad_value))


def resize_pad(sample: Sample, output_size: Size, pad_value: tuple[int, int, int] = (0, 0, 0)) -> Sample:
    """Deterministic letterbox for evaluation: fit into `output_size`, pad bottom/right. Keeps every
    instance (even one that shrinks to nothing) so evaluation targets stay aligned."""
    out_h, out_w = _hw(output_size)
    images, masks = _stack(sample)
    h, w = _scaled(images.shape[1:3], fit_scale(images.shape[1:3], (out_h, out_w)))
    images, masks = _resize(images, masks, min(h, out_h), min(w, out_w))
    return _unstack(sample, *_place(images, masks, out_h, out_w, 0, 0, pad_value), drop_empty=False)


def horizontal_flip(sample: Sample, rng: np.random.Generator, p: float = 0.5) -> Sample:
    """Mirror left-right with probability p (one draw for the whole clip)."""
    if rng.random() >= p:
        return sample
    images, masks = _stack(sample)
    return _unstack(sample, images[:, :, ::-1].copy(), masks[:, :, ::-1].copy(), drop_empty=False)


def shift(image: np.ndarray, masks: np.ndarray, dy: int, dx: int, pad_value=(0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Content moved by (dy, dx) pixels (positive = down/right); what moves out is lost, what is
    uncovered is `pad_value` / no mask."""
    h, w = image.shape[:2]
    out_image = np.empty_like(image)
    out_image[:] = np.asarray(pad_value, np.uint8)
    out_masks = np.zeros_like(masks)
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    if abs(dy) < h and abs(dx) < w:
        out_image[dst_y, dst_x] = image[src_y, src_x]
        out_masks[:, dst_y, dst_x] = masks[:, src_y, src_x]
    return out_image, out_masks


def pseudo_video(
    sample: ImageSample,
    num_frames: int,
    rng: np.random.Generator,
    max_shift: float = 0.1,
    pad_value: tuple[int, int, int] = (0, 0, 0),
) -> VideoSample:
    """A clip made from one image by sliding it in one random direction: frame t is shifted by
    round(t * (dy, dx)) with the total shift (frame num_frames-1) at most `max_shift` of the image size.
    It teaches the tracker to associate instances (ids are kept) without real video."""
    h, w = sample.size
    angle = rng.uniform(0, 2 * np.pi)
    magnitude = rng.uniform(0, max_shift)
    steps = max(1, num_frames - 1)
    dy = magnitude * h * np.sin(angle) / steps
    dx = magnitude * w * np.cos(angle) / steps
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    masks = np.empty((len(sample.masks), num_frames, h, w), bool)
    for t in range(num_frames):
        frames[t], masks[:, t] = shift(sample.image, sample.masks, round(t * dy), round(t * dx), pad_value)
    return VideoSample(
        frames=frames,
        masks=masks,
        labels=sample.labels.copy(),
        ids=sample.ids.copy(),
        is_crowd=sample.is_crowd.copy(),
        name=sample.name,
    )
