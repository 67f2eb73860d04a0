"""ResNet-18/50 as torchvision defines them; the ImageNet files users download from torchvision load as they are.

RAP-SAM's R50 row uses mmdet's ResNet (style 'pytorch': stride on the 3x3 conv), whose parameter names are
torchvision's, so the released RAP-SAM checkpoint maps onto this module too. BatchNorm stays frozen at
inference, as `norm_eval=True` does in the official config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rapsam.models.backbones.base import Backbone, FeatureInfo, register_backbone


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, *, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, *, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


@dataclass(frozen=True)
class ResNetConfig:
    block: type[BasicBlock | Bottleneck]
    depths: tuple[int, int, int, int]


RESNET_CONFIGS = {
    "resnet18": ResNetConfig(block=BasicBlock, depths=(2, 2, 2, 2)),
    "resnet50": ResNetConfig(block=Bottleneck, depths=(3, 4, 6, 3)),
}


class ResNet(Backbone):
    def __init__(self, *, config: ResNetConfig) -> None:
        super().__init__()
        block = config.block
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        widths = (64, 128, 256, 512)
        for index, (width, depth) in enumerate(zip(widths, config.depths)):
            stride = 1 if index == 0 else 2
            blocks = []
            for i in range(depth):
                blocks.append(block(in_channels=in_channels, channels=width, stride=stride if i == 0 else 1))
                in_channels = width * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.feature_info = FeatureInfo(channels=tuple(w * block.expansion for w in widths))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        c4 = self.layer1(x)
        c8 = self.layer2(c4)
        c16 = self.layer3(c8)
        c32 = self.layer4(c16)
        return c4, c8, c16, c32

    @staticmethod
    def official_key_map(key: str) -> str | None:
        # torchvision files carry the ImageNet classifier, which segmentation never uses.
        return None if key.startswith("fc.") else key


@register_backbone("resnet18")
def resnet18() -> ResNet:
    return ResNet(config=RESNET_CONFIGS["resnet18"])


@register_backbone("resnet50")
def resnet50() -> ResNet:
    return ResNet(config=RESNET_CONFIGS["resnet50"])
