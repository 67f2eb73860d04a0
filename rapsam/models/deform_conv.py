"""Modulated deformable convolution (DCNv2) written with one `grid_sample`, so that it exports.

Semantics follow mmcv's `ModulatedDeformConv2d` (the op the official RAP-SAM neck uses), so its
checkpoint keys `...weight` / `...bias` load unchanged:

- `offset` is [B, 2 * deform_groups * kh * kw, Ho, Wo]; for deformable group g and kernel point
  k = i * kw + j, channel g * 2 * kh * kw + 2 * k is the row (y) offset and the next one the column (x)
  offset (mmcv's `modulated_deformable_im2col` kernel reads them at `2 * (i * kw + j)` and `+ 1`).
- `mask` is [B, deform_groups * kh * kw, Ho, Wo], already passed through a sigmoid by the caller.
- Kernel point (i, j) of output pixel (ho, wo) samples the input at
  y = ho * stride_h - pad_h + i * dilation_h + offset_y, x likewise, with bilinear interpolation in
  which every corner outside the image reads 0. mmcv additionally zeroes samples with y <= -1,
  y >= H (x likewise), but there all four corners are already outside, so zero-padded bilinear
  sampling (`grid_sample(..., padding_mode="zeros", align_corners=True)`) computes the same value.
- The sampled columns are ordered channel-major, then kernel point, which is exactly
  `weight.reshape(out_channels, -1)`; the product with the weight is a (grouped) 1x1 convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def _sampling_grid(
    offset: torch.Tensor,
    *,
    in_size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Turn mmcv-layout offsets [B*dg, 2*kh*kw, Ho, Wo] into a grid [B*dg, kh*kw*Ho, Wo, 2] in [-1, 1]."""
    groups_batch, _, out_h, out_w = offset.shape
    (height, width), (kh, kw) = in_size, kernel_size
    points = kh * kw
    kwargs = {"dtype": offset.dtype, "device": offset.device}
    # Where each kernel point lands without offset, as (kh*kw, Ho, Wo). Tensors stay at rank <= 5: CoreML
    # and other mobile compilers refuse rank 6.
    rows = (torch.arange(kh, **kwargs) * dilation[0]).view(kh, 1, 1, 1) + (
        torch.arange(out_h, **kwargs) * stride[0] - padding[0]
    ).view(1, 1, out_h, 1)
    cols = (torch.arange(kw, **kwargs) * dilation[1]).view(1, kw, 1, 1) + (
        torch.arange(out_w, **kwargs) * stride[1] - padding[1]
    ).view(1, 1, 1, out_w)
    rows = rows.expand(kh, kw, out_h, out_w).reshape(points, out_h, out_w)
    cols = cols.expand(kh, kw, out_h, out_w).reshape(points, out_h, out_w)
    offset_y, offset_x = offset.reshape(groups_batch, points, 2, out_h, out_w).unbind(dim=2)
    # align_corners=True maps -1 / +1 to the centres of the first / last pixel.
    grid_x = (cols + offset_x) * (2.0 / (width - 1)) - 1.0  # (B*dg, kh*kw, Ho, Wo)
    grid_y = (rows + offset_y) * (2.0 / (height - 1)) - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1)  # (B*dg, kh*kw, Ho, Wo, 2)
    return grid.reshape(groups_batch, points * out_h, out_w, 2)


def modulated_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    deform_groups: int = 1,
) -> torch.Tensor:
    """DCNv2 forward with mmcv's argument meaning; see the module docstring for the layouts."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    points = kh * kw
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    expected_offset = (batch, 2 * deform_groups * points, out_h, out_w)
    expected_mask = (batch, deform_groups * points, out_h, out_w)
    if tuple(offset.shape) != expected_offset or tuple(mask.shape) != expected_mask:
        raise ValueError(
            f"offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not match "
            f"the expected {expected_offset} / {expected_mask}"
        )

    # align_corners normalisation divides by (size - 1): give a 1-pixel side a zero neighbour,
    # which changes nothing because corners outside the image read 0 anyway.
    pad_h, pad_w = int(height == 1), int(width == 1)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    grid = _sampling_grid(
        offset.reshape(batch * deform_groups, 2 * points, out_h, out_w),
        in_size=(height + pad_h, width + pad_w),
        kernel_size=(kh, kw),
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    group_channels = channels // deform_groups
    sampled = F.grid_sample(
        x.reshape(batch * deform_groups, group_channels, height + pad_h, width + pad_w),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )  # (B*dg, C/dg, kh*kw*Ho, Wo)
    sampled = sampled.reshape(batch * deform_groups, group_channels, points, out_h, out_w)
    sampled = sampled * mask.reshape(batch * deform_groups, 1, points, out_h, out_w)
    columns = sampled.reshape(batch, channels * points, out_h, out_w)  # channel-major, then kernel point
    return F.conv2d(columns, weight.reshape(out_channels, -1, 1, 1), bias, groups=groups)


class ModulatedDeformConv2d(nn.Module):
    """Drop-in for `mmcv.ops.ModulatedDeformConv2d` (same argument meaning and parameter names)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if in_channels % deform_groups:
            raise ValueError(f"deform_groups={deform_groups} must divide in_channels={in_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deform_groups = deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # mmcv's init: uniform(+-1/sqrt(fan_in over all input channels)), zero bias.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return modulated_deform_conv2d(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            deform_groups=self.deform_groups,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deform_groups={self.deform_groups}, bias={self.bias is not None}"
        )
