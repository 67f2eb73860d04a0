"""Training batches as a pure function of (seed, iteration, rank): the same run resumes exactly, with any number
of loader workers, and the ranks of a distributed run read disjoint images within each epoch (a distributed
sampler over one seeded permutation per epoch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rapsam.data import (
    CocoPanoptic,
    ImageSample,
    VideoSample,
    YouTubeVIS,
    horizontal_flip,
    large_scale_jitter,
    pseudo_video,
    sample_prompts,
    write_synthetic,
)
from rapsam.taxonomy import Taxonomy
from rapsam.training.config import TrainConfig
from rapsam.training.matcher import Target


@dataclass
class ImageBatch:
    """COCO images: panoptic targets and COCO-SAM prompts (boxes xyxy in input pixels, kinds, target masks)."""

    images: torch.Tensor  # (B, 3, S, S) float32 RGB 0..255
    targets: list[Target]  # masks (N, S, S) bool
    boxes: torch.Tensor  # (B, K, 4) float32
    kinds: torch.Tensor  # (B, K) int32: 0 click, 1 box, -1 padding
    prompt_masks: torch.Tensor  # (B, K, S, S) bool


@dataclass
class VideoBatch:
    """Clips: each instance one tube target, its frames stacked along the height like the tube features."""

    frames: torch.Tensor  # (B, T, 3, S, S) float32
    targets: list[Target]  # masks (N, T*S, S) bool


Batch = ImageBatch | VideoBatch


def is_video_iteration(iteration: int, fraction: float) -> bool:
    """Spreads `fraction` of the iterations evenly (the same answer on every rank, so DDP ranks agree)."""
    return int((iteration + 1) * fraction) > int(iteration * fraction)


def epoch_indices(seed: int, iteration: int, rank: int, world: int, batch: int, size: int) -> list[int]:
    """The `batch` dataset indices of (iteration, rank): consecutive slots of one seeded permutation per epoch."""
    first = (iteration * world + rank) * batch
    indices = []
    for position in range(first, first + batch):
        epoch, offset = divmod(position, size)
        indices.append(int(np.random.default_rng((seed, epoch)).permutation(size)[offset]))
    return indices


class Datasets:
    """The readers a run trains on, opened once per process (loader workers inherit them)."""

    def __init__(self, config: TrainConfig, taxonomy: Taxonomy) -> None:
        coco, ytvis = config.coco, config.ytvis
        if config.synthetic is not None:
            root = Path(config.synthetic)
            if not (root / "coco").is_dir():
                write_synthetic(root, num_train=config.synthetic_images, num_val=max(config.synthetic_images // 4, 4),
                                num_videos_train=config.synthetic_videos,
                                num_videos_val=max(config.synthetic_videos // 4, 2),
                                image_size=(config.synthetic_size, config.synthetic_size), seed=config.seed)
            coco, ytvis = coco or str(root / "coco"), ytvis or str(root / "ytvis")
        assert coco is not None
        self.images = CocoPanoptic(coco, "train", taxonomy=taxonomy)
        self.videos = YouTubeVIS(ytvis, "train", taxonomy=taxonomy, clip_length=config.clip_length) if ytvis else None


class IterationBatches(torch.utils.data.Dataset):
    """Item i is this rank's whole batch of iteration i; a DataLoader over range(start, end) prefetches them."""

    def __init__(self, config: TrainConfig, datasets: Datasets, *, rank: int, world: int,
                 pad_value: tuple[float, float, float]) -> None:
        self.config, self.datasets, self.rank, self.world = config, datasets, rank, world
        self.pad_value = tuple(round(v) for v in pad_value)

    def __len__(self) -> int:
        return self.config.iterations

    def __getitem__(self, iteration: int) -> Batch:
        config = self.config
        video = is_video_iteration(iteration, config.video_fraction)
        source: Any = self.datasets.videos if video and self.datasets.videos is not None else self.datasets.images
        indices = epoch_indices(config.seed + (1 if video else 0), iteration, self.rank, self.world,
                                config.batch_size, len(source))
        rngs = [np.random.default_rng((config.seed, iteration, self.rank, j)) for j in range(config.batch_size)]
        if video:
            return self._video_batch([self._clip(source, i, rng) for i, rng in zip(indices, rngs)])
        return self._image_batch([self._augment(source[i], rng) for i, rng in zip(indices, rngs)], rngs)

    def _clip(self, source: Any, index: int, rng: np.random.Generator) -> VideoSample:
        if isinstance(source, YouTubeVIS):
            clip = source.sample_clip(index, rng)
        else:
            clip = pseudo_video(source[index], self.config.clip_length, rng, pad_value=self.pad_value)
        return self._augment(clip, rng)

    def _augment(self, sample: Any, rng: np.random.Generator) -> Any:
        sample = large_scale_jitter(sample, self.config.crop_size, rng, scale_range=self.config.scale_range,
                                    pad_value=self.pad_value)
        return horizontal_flip(sample, rng)

    def _image_batch(self, samples: list[ImageSample], rngs: list[np.random.Generator]) -> ImageBatch:
        prompts = [sample_prompts(s, self.config.num_prompts, rng, point_fraction=self.config.point_fraction,
                                  click_margin=self.config.click_margin)
                   for s, rng in zip(samples, rngs)]
        return ImageBatch(
            images=torch.stack([_image_tensor(s.image) for s in samples]),
            targets=[_target(s.labels, s.masks) for s in samples],
            boxes=torch.stack([torch.from_numpy(p[0]) for p in prompts]),
            kinds=torch.stack([torch.from_numpy(p[1]) for p in prompts]),
            prompt_masks=torch.stack([torch.from_numpy(p[2]) for p in prompts]),
        )

    def _video_batch(self, clips: list[VideoSample]) -> VideoBatch:
        frames = torch.stack([torch.stack([_image_tensor(f) for f in clip.frames]) for clip in clips])
        # (N, T, S, S) -> (N, T*S, S): frames stacked along the height, as the tube features are.
        tubes = [c.masks.reshape(len(c.labels), c.masks.shape[1] * c.masks.shape[2], c.masks.shape[3]) for c in clips]
        targets = [_target(c.labels, masks) for c, masks in zip(clips, tubes)]
        return VideoBatch(frames=frames, targets=targets)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()


def _target(labels: np.ndarray, masks: np.ndarray) -> Target:
    return Target(labels=torch.from_numpy(labels.astype(np.int64)), masks=torch.from_numpy(masks.astype(bool)))


def batch_to(batch: Batch, device: torch.device) -> Batch:
    targets = [Target(t.labels.to(device), t.masks.to(device)) for t in batch.targets]
    if isinstance(batch, VideoBatch):
        return VideoBatch(frames=batch.frames.to(device), targets=targets)
    return ImageBatch(images=batch.images.to(device), targets=targets, boxes=batch.boxes.to(device),
                      kinds=batch.kinds.to(device), prompt_masks=batch.prompt_masks.to(device))


def batch_images(batch: Batch) -> int:
    """Images the batch shows the network (frames count one each)."""
    if isinstance(batch, VideoBatch):
        return batch.frames.shape[0] * batch.frames.shape[1]
    return batch.images.shape[0]
