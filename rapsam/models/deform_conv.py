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

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from rapsam.models.switches import set_on_modules, switched


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def _sampling_points(
    offset: torch.Tensor,
    *,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmcv-layout offsets [B*dg, 2*kh*kw, Ho, Wo] -> the pixel rows and columns sampled, each
    [B*dg, kh*kw, Ho, Wo]."""
    groups_batch, _, out_h, out_w = offset.shape
    kh, kw = kernel_size
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
    return rows + offset_y, cols + offset_x


def _grid_sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Zero-padded bilinear samples of x [N, C, H, W] at pixel rows / cols [N, P, Ho, Wo]: [N, C, P*Ho, Wo]."""
    groups_batch, points, out_h, out_w = rows.shape
    height, width = x.shape[-2:]
    # align_corners=True maps -1 / +1 to the centres of the first / last pixel.
    grid_x = cols * (2.0 / (width - 1)) - 1.0
    grid_y = rows * (2.0 / (height - 1)) - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1).reshape(groups_batch, points * out_h, out_w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _gather_sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """`_grid_sample` as four gathers (`_bilinear_corners`), each reading one scalar per channel: for
    runtimes whose grid_sample lowering is slow (litert-torch emits ~170 M element-wise ops outside
    XNNPACK for the neck of rapsam_edgenext_s at 512x512; this needs ~4 M)."""
    groups_batch, channels, height, width = x.shape
    points, out_h, out_w = rows.shape[1:]
    rows, cols = rows.reshape(groups_batch, -1), cols.reshape(groups_batch, -1)  # (N, L)
    # (C, N*H*W): one index_select per corner serves every batch element and channel.
    table = x.reshape(groups_batch, channels, height * width).transpose(0, 1).reshape(channels, -1)
    base = (torch.arange(groups_batch, dtype=x.dtype, device=x.device) * (height * width)).view(-1, 1)
    terms = []
    for flat, corner_weight in _bilinear_corners(rows, cols, height, width, base):
        values = table.index_select(1, flat.reshape(-1).to(torch.int32))  # (C, N*L)
        values = values.reshape(channels, groups_batch, -1).transpose(0, 1)  # (N, C, L)
        terms.append(values * corner_weight.unsqueeze(1))
    return _sum(terms).reshape(groups_batch, channels, points * out_h, out_w)


def _sum(terms: list[torch.Tensor]) -> torch.Tensor:
    """The terms added in order, without a zero to start from: a 0-dim constant operand is one more op, and
    a quantizer that annotates the add quantizes it (XNNPACK's layout pass then fails on the 0-dim input)."""
    return functools.reduce(torch.add, terms)


def _bilinear_corners(
    rows: torch.Tensor, cols: torch.Tensor, height: int, width: int, base: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The four bilinear corners of sampling points at pixel rows / cols of an H x W map: for each, the flat
    index into a (batch*H*W) table (a float, `base` added: each batch element's offset) and the corner's
    weight, 0 where the corner lies outside the map. Validity is clamps, not comparisons, so that mobile
    delegates (XNNPACK) run all of it; the index arithmetic runs once per sampling point, not per channel."""
    top, left = rows.floor(), cols.floor()
    frac_y, frac_x = rows - top, cols - left
    corners = []
    for corner_y, weight_y in ((top, 1.0 - frac_y), (top + 1.0, frac_y)):
        # 1 where 0 <= row <= H-1 (rows are integers here), else 0.
        inside_y = (corner_y + 1.0).clamp(0.0, 1.0) * (height - corner_y).clamp(0.0, 1.0)
        for corner_x, weight_x in ((left, 1.0 - frac_x), (left + 1.0, frac_x)):
            inside = inside_y * (corner_x + 1.0).clamp(0.0, 1.0) * (width - corner_x).clamp(0.0, 1.0)
            flat = corner_y.clamp(0.0, height - 1.0) * width + corner_x.clamp(0.0, width - 1.0) + base
            corners.append((flat, weight_y * weight_x * inside))
    return corners


def _deform_conv_pixels_last(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """The whole modulated deformable conv (one group, one deformable group) with the pixels last: each
    bilinear corner is one `index_select` of whole channel vectors, contiguous rows of a (B*H*W, C) table,
    and the modulated samples of every kernel point form one (B*Ho*Wo, kh*kw*C) matrix for a single matmul
    with the weight; mobile delegates (XNNPACK) run all of it but the row copies.
    For GPUs under torch.compile, which fuses the four gathers, their weights and the modulation into one
    kernel, and for ExecuTorch, whose portable `grid_sampler_2d` reads one scalar per channel and sample
    (34 ms of EdgeNeXt-S's `segment` at 512x512 against 3 ms for these row copies, ETDump).
    x (B, C, H, W), rows / cols / mask (B, P, Ho, Wo) -> (B, O, Ho, Wo)."""
    batch, channels, height, width = x.shape
    points, out_h, out_w = rows.shape[1:]
    table = x.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    # Positions in float32: fp16 holds integers exactly only up to 2048, and flat indices go far beyond.
    rows, cols = rows.permute(0, 2, 3, 1).float(), cols.permute(0, 2, 3, 1).float()  # (B, Ho, Wo, P)
    modulation = mask.permute(0, 2, 3, 1).float()
    base = (torch.arange(batch, dtype=torch.float32, device=x.device) * (height * width)).view(-1, 1, 1, 1)
    columns = _sum([
        table.index_select(0, flat.reshape(-1).to(torch.int32))  # (B*Ho*Wo*P, C)
        * (corner_weight * modulation).to(x.dtype).reshape(-1, 1)
        for flat, corner_weight in _bilinear_corners(rows, cols, height, width, base)
    ])
    kernel = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], points * channels)  # kernel point, then channel
    out = F.linear(columns.reshape(batch * out_h * out_w, points * channels), kernel, bias)
    return out.view(batch, out_h, out_w, -1).permute(0, 3, 1, 2)


_CHANNEL_MAJOR_SAMPLERS = {"grid_sample": _grid_sample, "gather": _gather_sample}
SAMPLERS = (*_CHANNEL_MAJOR_SAMPLERS, "gather_pixels_last")


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
    sampler: str = "grid_sample",
) -> torch.Tensor:
    """DCNv2 forward with mmcv's argument meaning; see the module docstring for the layouts. `sampler`
    picks how the bilinear samples are taken ("grid_sample", "gather" or "gather_pixels_last", the same
    values; the last needs groups = deform_groups = 1)."""
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
    rows, cols = _sampling_points(
        offset.reshape(batch * deform_groups, 2 * points, out_h, out_w),
        kernel_size=(kh, kw),
        stride=stride,
        padding=padding,
        dilation=dilation,
    )
    if sampler == "gather_pixels_last":
        if groups != 1 or deform_groups != 1:
            raise ValueError(f"the gather_pixels_last sampler takes groups=1 and deform_groups=1, got "
                             f"{groups} and {deform_groups}: use grid_sample")
        return _deform_conv_pixels_last(x, rows, cols, mask, weight, bias)
    group_channels = channels // deform_groups
    sampled = _CHANNEL_MAJOR_SAMPLERS[sampler](
        x.reshape(batch * deform_groups, group_channels, height + pad_h, width + pad_w), rows, cols
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
        self.sampler = "grid_sample"  # a converter may switch it for its runtime: see `deform_sampler`
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
            sampler=self.sampler,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"deform_groups={self.deform_groups}, bias={self.bias is not None}"
        )


def set_deform_sampler(model: nn.Module, sampler: str) -> list[str]:
    """Every ModulatedDeformConv2d of `model` samples with `sampler` from now on (same values, another op
    sequence for a compiler to lower); returns the samplers they had."""
    return set_on_modules(model, ModulatedDeformConv2d, "sampler", sampler, SAMPLERS)


def deform_sampler(model: nn.Module, sampler: str) -> contextlib.AbstractContextManager[None]:
    """`set_deform_sampler` inside the block only."""
    return switched(model, ModulatedDeformConv2d, "sampler", sampler, SAMPLERS)
