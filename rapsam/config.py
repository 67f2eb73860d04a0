"""Named RAP-SAM variants: frozen configs in one registry. `get_config(name)` is the only door."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from rapsam.taxonomy import COCO_PANOPTIC, SHAPES, Taxonomy

# ImageNet statistics in RGB order on 0..255 pixels, as the official data preprocessor uses them.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class RapSAMConfig:
    """Everything that decides the architecture. Defaults are the paper's (and the official config's)."""

    name: str
    backbone: str
    agg_dim: int = 128  # neck aggregation width
    hidden_dim: int = 256  # d: width of F and of every query
    deformable: bool = True  # False: plain 3x3 convs in the neck, for targets that want them
    num_queries: int = 100
    num_stages: int = 3
    num_heads: int = 8
    ffn_channels: int = 2048
    temperature: float = 0.1  # decoder-stage class logits are divided by it
    classifier: Literal["open_vocab", "linear"] = "open_vocab"
    class_embed_dim: int = 768  # CLIP ConvNeXt-L text width in the official classifier file
    class_prototypes: int = 1
    taxonomy: Taxonomy = COCO_PANOPTIC
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    # Channel order the network was trained on, which pixel_mean/std follow. Artifacts always take RGB;
    # "BGR" flips inside the graph. The official preprocessor (`bgr_to_rgb=True`) hands the network RGB.
    channel_order: Literal["RGB", "BGR"] = "RGB"
    # The prompt-type embedding a click uses. The official training and evaluation label every prompt,
    # click or box, as a box (`pb_labels` all ones), so its "point" row is never trained.
    click_embedding: Literal["point", "box"] = "box"
    default_size: tuple[int, int] = field(default=(512, 512))

    @property
    def pad_value(self) -> tuple[float, float, float]:
        """The RGB pixel that normalizes to zero: what letterboxing pads with, as the official padding does."""
        return self.pixel_mean[::-1] if self.channel_order == "BGR" else self.pixel_mean

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RapSAMConfig:
        data = dict(data)
        taxonomy = data.pop("taxonomy")
        return cls(**_lists_as_tuples(data), taxonomy=Taxonomy(**_lists_as_tuples(taxonomy)))


def _lists_as_tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


VARIANTS: dict[str, RapSAMConfig] = {}


def _register(config: RapSAMConfig) -> None:
    VARIANTS[config.name] = config


for _name, _backbone in (
    ("rapsam_r18", "resnet18"),
    ("rapsam_r50", "resnet50"),
    ("rapsam_edgenext_xxs", "edgenext_xx_small"),
    ("rapsam_edgenext_xs", "edgenext_x_small"),
    ("rapsam_edgenext_s", "edgenext_small"),
    ("rapsam_topformer_t", "topformer_tiny"),
    ("rapsam_topformer_s", "topformer_small"),
    ("rapsam_topformer_b", "topformer_base"),
    ("rapsam_seaformer_t", "seaformer_tiny"),
    ("rapsam_seaformer_s", "seaformer_small"),
    ("rapsam_seaformer_b", "seaformer_base"),
    ("rapsam_seaformer_l", "seaformer_large"),
):
    _register(RapSAMConfig(name=_name, backbone=_backbone))

# Seconds to build, export and convert: the variant of the tests and of CI's every-target conversions.
_register(
    RapSAMConfig(
        name="rapsam_tiny",
        backbone="tiny",
        agg_dim=16,
        hidden_dim=32,
        num_queries=8,
        num_stages=2,
        num_heads=4,
        ffn_channels=64,
        class_embed_dim=16,
        class_prototypes=2,
        taxonomy=SHAPES,
        default_size=(64, 64),
    )
)


# The built-in demo: the smallest EdgeNeXt with a narrower, shorter decoder, trained from scratch on the synthetic
# shapes data on a 2-core CPU (`rapsam-train demo_edgenext`); its weights ship in rapsam/weights/.
_register(
    RapSAMConfig(
        name="rapsam_edgenext_demo",
        backbone="edgenext_xx_small",
        agg_dim=64,
        hidden_dim=128,
        num_queries=20,
        num_heads=4,
        ffn_channels=512,
        # Trained from scratch: a linear classifier (no text embeddings to align with).
        classifier="linear",
        taxonomy=SHAPES,
        default_size=(128, 128),
    )
)


def get_config(name: str) -> RapSAMConfig:
    if name not in VARIANTS:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name]
