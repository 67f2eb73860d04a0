"""A few-thousand-parameter backbone for fast tests and CI conversions; no pretrained file exists for it."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from rapsam.models.backbones.base import Backbone, FeatureInfo, register_backbone


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class TinyBackbone(Backbone):
    def __init__(self, *, channels: tuple[int, int, int, int] = (16, 24, 32, 48)) -> None:
        super().__init__()
        self.feature_info = FeatureInfo(channels=channels)
        self.stem = nn.Sequential(_stage(3, channels[0], 2), _stage(channels[0], channels[0], 2))
        self.stages = nn.ModuleList(_stage(a, b, 2) for a, b in itertools.pairwise(channels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c4 = self.stem(x)  # (B, C0, H/4, W/4)
        c8 = self.stages[0](c4)
        c16 = self.stages[1](c8)
        c32 = self.stages[2](c16)
        return c4, c8, c16, c32


@register_backbone("tiny")
def tiny() -> TinyBackbone:
    return TinyBackbone()
