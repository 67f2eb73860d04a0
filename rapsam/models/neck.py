"""The lite neck (official `YOSONeck`): a top-down path of deformable 3x3 convs and transposed-conv
upsampling, then cross-level aggregation into one stride-4 map F with two coordinate channels.

Module and parameter names follow `seg/models/necks/ramsam_neck.py` of the official code so that its
checkpoints load key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rapsam.models.backbones.base import FEATURE_STRIDES, FeatureInfo
from rapsam.models.deform_conv import ModulatedDeformConv2d

# 9 kernel points x (dy, dx) offsets + 9 modulation scalars, for one deformable group.
_OFFSET_CHANNELS = 27


class DeformLayer(nn.Module):
    """(Deformable) 3x3 conv + BN + ReLU, then a 4x4 stride-2 transposed conv + BN + ReLU (x2 upsampling)."""

    def __init__(self, *, in_planes: int, out_planes: int, deformable: bool = True) -> None:
        super().__init__()
        self.deformable = deformable
        if deformable:
            self.dcn_offset = nn.Conv2d(in_planes, _OFFSET_CHANNELS, 3, 1, 1)
            self.dcn = ModulatedDeformConv2d(in_planes, out_planes, 3, stride=1, padding=1, bias=False)
            # Zero offsets and mask logits start the layer as a plain conv scaled by sigmoid(0), as the
            # official init does.
            nn.init.zeros_(self.dcn_offset.weight)
            nn.init.zeros_(self.dcn_offset.bias)
        else:
            # Same weight name and shape, so a deformable checkpoint's conv weights still load.
            self.dcn = nn.Conv2d(in_planes, out_planes, 3, 1, 1, bias=False)
        self.dcn_bn = nn.BatchNorm2d(out_planes)
        self.up_sample = nn.ConvTranspose2d(out_planes, out_planes, 4, stride=2, padding=1, bias=False)
        self.up_bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deformable:
            offset_mask = self.dcn_offset(x)
            # The official code calls the first two chunks "offset_x, offset_y", but concatenated they
            # are simply mmcv's interleaved (dy, dx) layout.
            offset_a, offset_b, mask = torch.chunk(offset_mask, 3, dim=1)
            x = self.dcn(x, torch.cat((offset_a, offset_b), dim=1), mask.sigmoid())
        else:
            x = self.dcn(x)
        x = self.relu(self.dcn_bn(x))
        return self.relu(self.up_bn(self.up_sample(x)))  # (B, C_out, 2H, 2W)


class LiteDeformConv(nn.Module):
    def __init__(self, *, agg_dim: int, backbone_channels: tuple[int, int, int, int], deformable: bool) -> None:
        super().__init__()
        c4, c8, c16, c32 = (c // 2 for c in backbone_channels)
        self.lateral_conv0 = nn.Conv2d(backbone_channels[3], c32, 1)
        self.deform_conv1 = DeformLayer(in_planes=c32, out_planes=c16, deformable=deformable)
        self.lateral_conv1 = nn.Conv2d(backbone_channels[2], c16, 1)
        self.deform_conv2 = DeformLayer(in_planes=c16, out_planes=c8, deformable=deformable)
        self.lateral_conv2 = nn.Conv2d(backbone_channels[1], c8, 1)
        self.deform_conv3 = DeformLayer(in_planes=c8, out_planes=c4, deformable=deformable)
        self.lateral_conv3 = nn.Conv2d(backbone_channels[0], c4, 1)
        self.output_conv = nn.Conv2d(agg_dim, agg_dim, 3, 1, 1)
        self.bias = nn.Parameter(torch.zeros(1, agg_dim, 1, 1))
        self.conv_a5 = nn.Conv2d(c32, agg_dim, 1, bias=False)
        self.conv_a4 = nn.Conv2d(c16, agg_dim, 1, bias=False)
        self.conv_a3 = nn.Conv2d(c8, agg_dim, 1, bias=False)
        self.conv_a2 = nn.Conv2d(c4, agg_dim, 1, bias=False)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        f4, f8, f16, f32 = features
        x5 = self.lateral_conv0(f32)
        x4 = self.lateral_conv1(f16) + self.deform_conv1(x5)
        x3 = self.lateral_conv2(f8) + self.deform_conv2(x4)
        x2 = self.lateral_conv3(f4) + self.deform_conv3(x3)
        size = x2.shape[-2:]  # stride 4
        # Sizes instead of the official scale factors: identical results, and exporters want static sizes.
        x = (
            _upsample(self.conv_a5(x5), size)
            + _upsample(self.conv_a4(x4), size)
            + _upsample(self.conv_a3(x3), size)
            + self.conv_a2(x2)
            + self.bias
        )
        return self.output_conv(x)  # (B, agg_dim, H/4, W/4)


def _upsample(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): x then y, each running linearly from -1 to 1 across the map."""
    batch, _, height, width = x.shape
    xs = torch.linspace(-1.0, 1.0, width, dtype=x.dtype, device=x.device)
    ys = torch.linspace(-1.0, 1.0, height, dtype=x.dtype, device=x.device)
    grid_x = xs.view(1, 1, 1, width).expand(batch, 1, height, width)
    grid_y = ys.view(1, 1, height, 1).expand(batch, 1, height, width)
    return torch.cat([grid_x, grid_y], dim=1)


class YOSONeck(nn.Module):
    def __init__(
        self, *, feature_info: FeatureInfo, agg_dim: int = 128, hidden_dim: int = 256, deformable: bool = True
    ) -> None:
        super().__init__()
        if feature_info.strides != FEATURE_STRIDES:
            raise ValueError(f"the neck needs maps at strides {FEATURE_STRIDES}, got {feature_info.strides}")
        self.deconv = LiteDeformConv(
            agg_dim=agg_dim, backbone_channels=feature_info.channels, deformable=deformable
        )
        self.loc_conv = nn.Conv2d(agg_dim + 2, hidden_dim, 1)

    def forward(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = self.deconv(features)
        return self.loc_conv(torch.cat([x, coordinate_channels(x)], dim=1))  # (B, hidden_dim, H/4, W/4)
