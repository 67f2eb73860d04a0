"""What every backbone promises the neck: four maps at strides 4, 8, 16, 32 with declared widths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

FEATURE_STRIDES: tuple[int, int, int, int] = (4, 8, 16, 32)


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and stride of each returned map, finest first."""

    channels: tuple[int, int, int, int]
    strides: tuple[int, int, int, int] = FEATURE_STRIDES


class Backbone(nn.Module):
    """Base class: subclasses set `feature_info` and return one tensor per entry of it.

    `official_key_map` turns a key of the authors' pretrained checkpoint into ours; the default is
    the identity because our modules keep the official names. Return None to drop a key on purpose
    (a classifier head the segmentation model never uses).

    `official_absent_prefixes` names our modules that the ImageNet file cannot hold (segmentation-only
    parts such as TopFormer's injection modules); they keep their initialisation when it loads.
    """

    feature_info: FeatureInfo
    official_absent_prefixes: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def official_key_map(key: str) -> str | None:
        return key


BackboneBuilder = Callable[[], Backbone]
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    def add(builder: BackboneBuilder) -> BackboneBuilder:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = builder
        return builder

    return add


def build_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; valid names: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]()
