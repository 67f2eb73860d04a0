"""Training runs as frozen configs: named ones in a registry, others from a TOML file, `--set key=value` on top."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib


class TrainConfigError(ValueError):
    """A training config that cannot run: the message names the file or key and the fix."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults follow the paper and the official config (AdamW lr 1e-4, wd 0.05, 500
    warm-up iterations, step decay at 8/12 and 11/12 of the schedule, 1024x1024 large-scale jitter, 2 images
    per GPU, gradient norm clipped at 0.01)."""

    name: str
    model: str = "rapsam_r18"
    # Architecture changes over the named variant (e.g. fewer queries for the demo); saved with the weights.
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    # The class list trained (a name of rapsam.taxonomy.TAXONOMIES); default: the model's, "shapes" on synthetic data.
    taxonomy: str | None = None
    init_weights: str | None = None  # our .safetensors (or the official .pth) to start from
    coco: str | None = None  # root of a COCO panoptic layout (annotations/panoptic_{split}2017.json, ...)
    ytvis: str | None = None  # root of a YouTube-VIS 2019 layout ({split}.json, JPEGImages/)
    # Write a synthetic dataset (rapsam.data.synthetic) here if it is missing, and train on it.
    synthetic: str | None = None
    synthetic_images: int = 200
    synthetic_videos: int = 40
    synthetic_size: int = 128
    crop_size: int = 1024
    scale_range: tuple[float, float] = (0.1, 2.0)
    batch_size: int = 2  # per process
    iterations: int = 44358  # PAPER_ITERATIONS
    lr: float = 1e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 0.05
    warmup_iterations: int = 500
    decay_at: tuple[float, ...] = (8 / 12, 11 / 12)  # fractions of `iterations`
    decay_factor: float = 0.1
    clip_grad: float = 0.01
    amp: Literal["none", "bf16", "fp16"] = "none"
    sync_bn: bool = False
    # Joint co-training: this fraction of iterations are video batches (YouTube-VIS clips, or pseudo-videos
    # made from COCO images when there is no YouTube-VIS); the others are COCO images with both the panoptic
    # and the prompt (COCO-SAM) losses on the same features.
    video_fraction: float = 0.25
    clip_length: int = 2
    num_prompts: int = 8
    point_fraction: float = 0.5  # of the prompts: clicks; the rest boxes
    # Clicks land where their +-click_margin px square lies inside the segment (rapsam.data.sample_prompts);
    # 0 = anywhere on it, edges included, where a click's +-3 px box straddles two segments.
    click_margin: int = 0
    num_points: int = 12544  # mask points sampled per mask for the matcher and the losses
    num_workers: int = 2
    seed: int = 0
    log_every: int = 20
    checkpoint_every: int = 1000
    output: str | None = None  # default runs/<name>

    def __post_init__(self) -> None:
        if self.amp not in ("none", "bf16", "fp16"):
            raise TrainConfigError(f"amp={self.amp!r}: use none, bf16 or fp16")
        if not 0.0 <= self.video_fraction <= 1.0:
            raise TrainConfigError(f"video_fraction={self.video_fraction} must be within [0, 1]")
        if self.coco is None and self.synthetic is None:
            raise TrainConfigError(f"config {self.name!r} names no data: set coco (a COCO panoptic root) or synthetic")
        for key in ("batch_size", "iterations", "crop_size", "clip_length", "num_points"):
            if getattr(self, key) < 1:
                raise TrainConfigError(f"{key}={getattr(self, key)} must be at least 1")

    @property
    def output_dir(self) -> Path:
        return Path(self.output or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_overrides"] = dict(self.model_overrides)
        return data

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# 12 epochs of COCO (118,287 images) at the paper's global batch of 32 (16 GPUs x 2) is 44,358 iterations.
PAPER_IMAGES_PER_EPOCH = 118287
PAPER_GLOBAL_BATCH = 32
PAPER_ITERATIONS = -(-12 * PAPER_IMAGES_PER_EPOCH // PAPER_GLOBAL_BATCH)
assert PAPER_ITERATIONS == TrainConfig.iterations

CONFIGS: dict[str, TrainConfig] = {}


def _register(config: TrainConfig) -> None:
    CONFIGS[config.name] = config


_register(TrainConfig(name="coco_r18", model="rapsam_r18", coco="data/coco", ytvis="data/ytvis", amp="bf16"))
# The built-in demo weights: the smallest EdgeNeXt, a narrower decoder, trained from scratch on this 2-core CPU.
_register(TrainConfig(
    name="demo_edgenext", model="rapsam_edgenext_demo", synthetic="data/synthetic", crop_size=128,
    scale_range=(0.5, 1.5), batch_size=8, iterations=3000, lr=1e-3, backbone_lr_mult=1.0, warmup_iterations=100,
    clip_grad=1.0, num_points=2048, num_prompts=6, num_workers=1, log_every=25, checkpoint_every=250,
))
# The demo model retrained on one lent GPU in minutes (scripts/gpu_demo_train.sh runs it in stages and sets
# the iterations from the measured speed): 4x the batch on 5x the scenes, clicks inside their segment.
_register(CONFIGS["demo_edgenext"].replace(
    name="demo_edgenext_gpu", synthetic="data/synthetic-gpu", synthetic_images=1000, synthetic_videos=200,
    batch_size=32, click_margin=3, num_workers=12, log_every=50, checkpoint_every=100,
))
# The lent-GPU smoke run: the paper's crop and batch, AMP, 50 iterations of joint co-training on synthetic data.
for _model in ("rapsam_r18", "rapsam_edgenext_s"):
    _register(TrainConfig(
        name=f"smoke_{_model.removeprefix('rapsam_')}", model=_model, synthetic="data/synthetic-smoke",
        synthetic_images=16, synthetic_videos=8, amp="bf16", iterations=50, warmup_iterations=10, log_every=10,
        checkpoint_every=1000, num_workers=4, backbone_lr_mult=1.0,
    ))


def load_config(source: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """A registered name or a TOML file (its keys are TrainConfig's; `base = "name"` starts from a registered
    config), then `key=value` overrides (values parsed as TOML, bare words as strings)."""
    if source in CONFIGS:
        config = CONFIGS[source]
        values: dict[str, Any] = {}
    else:
        path = Path(source)
        if not path.is_file():
            raise TrainConfigError(f"{source} is neither a file nor a registered config ({', '.join(sorted(CONFIGS))})")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise TrainConfigError(f"{path}: not valid TOML ({exc})") from None
        base = values.pop("base", None)
        if base is not None and base not in CONFIGS:
            raise TrainConfigError(f"{path}: base = {base!r} is not a registered config ({', '.join(sorted(CONFIGS))})")
        config = CONFIGS[base] if base else None
        values.setdefault("name", path.stem)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise TrainConfigError(f"--set {item!r}: write key=value")
        values[key.strip()] = _parse_value(raw.strip())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainConfigError(f"unknown config keys {unknown}; valid: {', '.join(sorted(known))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return config.replace(**values) if config is not None else TrainConfig(**values)


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
