"""ModulatedDeformConv2d (grid_sample) against a direct DCNv2 gather written like mmcv's kernel."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rapsam.models.deform_conv import ModulatedDeformConv2d, deform_sampler

TOLERANCE = 1e-5


def _bilinear_gather(image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """mmcv's `dmcn_im2col_bilinear` vectorised: image [N, C, H, W], ys/xs [N, L] -> [N, C, L].

    Samples with y <= -1, y >= H, x <= -1 or x >= W are 0; otherwise each of the four integer corners
    contributes its bilinear weight only when it lies inside the image.
    """
    n, c, height, width = image.shape
    flat = image.reshape(n, c, height * width)
    inside = (ys > -1) & (xs > -1) & (ys < height) & (xs < width)
    y_low, x_low = torch.floor(ys), torch.floor(xs)
    ly, lx = ys - y_low, xs - x_low
    value = torch.zeros(n, c, ys.shape[1], dtype=image.dtype)
    for y_corner, wy in ((y_low, 1 - ly), (y_low + 1, ly)):
        for x_corner, wx in ((x_low, 1 - lx), (x_low + 1, lx)):
            valid = (y_corner >= 0) & (y_corner <= height - 1) & (x_corner >= 0) & (x_corner <= width - 1)
            index = (y_corner.clamp(0, height - 1) * width + x_corner.clamp(0, width - 1)).long()
            corner = torch.gather(flat, 2, index[:, None, :].expand(n, c, -1))
            value = value + corner * (wy * wx * valid)[:, None, :]
    return value * inside[:, None, :]


def deform_conv2d_reference(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int = 1,
    deform_groups: int = 1,
) -> torch.Tensor:
    """DCNv2 as mmcv computes it (im2col with modulated bilinear samples, then GEMM), in float64."""
    x, offset, mask, weight = (t.double() for t in (x, offset, mask, weight))
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    _, _, out_h, out_w = offset.shape
    points = kh * kw
    ki = torch.arange(kh, dtype=torch.float64).repeat_interleave(kw)  # kernel point k = i * kw + j
    kj = torch.arange(kw, dtype=torch.float64).repeat(kh)
    ho = torch.arange(out_h, dtype=torch.float64)
    wo = torch.arange(out_w, dtype=torch.float64)
    base_y = (ho[None, :, None] * stride[0] - padding[0]) + ki[:, None, None] * dilation[0]  # (K, Ho, 1)
    base_x = (wo[None, None, :] * stride[1] - padding[1]) + kj[:, None, None] * dilation[1]  # (K, 1, Wo)
    off = offset.reshape(batch, deform_groups, points, 2, out_h, out_w)
    ys = (base_y + off[:, :, :, 0]).reshape(batch * deform_groups, -1)  # (B*dg, K*Ho*Wo)
    xs = (base_x + off[:, :, :, 1]).reshape(batch * deform_groups, -1)
    image = x.reshape(batch * deform_groups, channels // deform_groups, height, width)
    columns = _bilinear_gather(image, ys, xs).reshape(batch, deform_groups, -1, points, out_h, out_w)
    columns = columns * mask.reshape(batch, deform_groups, 1, points, out_h, out_w)
    columns = columns.reshape(batch, groups, channels // groups * points, out_h * out_w)
    w = weight.reshape(groups, out_channels // groups, -1)
    out = torch.einsum("gok,bgkl->bgol", w, columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.double()[None, :, None, None]
    return out


def _random_case(module: ModulatedDeformConv2d, batch: int, height: int, width: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, module.in_channels, height, width, generator=generator)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    points = module.deform_groups * kh * kw
    # Half fractional offsets in [-4, 4] (many samples fall outside the image), half integers, which put
    # samples exactly on pixel centres and on the y = -1 / y = H borders of mmcv's validity test.
    fractional = torch.rand(batch, 2 * points, out_h, out_w, generator=generator) * 8 - 4
    integer = torch.randint(-4, 5, (batch, 2 * points, out_h, out_w), generator=generator).float()
    offset = torch.where(torch.rand(fractional.shape, generator=generator) < 0.5, fractional, integer)
    mask = torch.rand(batch, points, out_h, out_w, generator=generator)
    if module.bias is not None:
        with torch.no_grad():
            module.bias.uniform_(-1, 1, generator=generator)
    return x, offset, mask


CASES = [
    # (in, out, kernel, stride, padding, dilation, groups, deform_groups, bias, batch, H, W)
    (8, 16, 3, 1, 1, 1, 1, 1, True, 2, 9, 11),  # the neck's configuration, odd sizes
    (6, 4, 3, 2, 1, 1, 1, 1, True, 1, 13, 10),  # stride 2
    (4, 8, 3, 1, 2, 2, 1, 1, False, 2, 12, 7),  # dilation 2, no bias
    (4, 6, 3, 1, 0, 1, 1, 1, True, 1, 8, 9),  # no padding
    (5, 7, (3, 5), (2, 1), (0, 2), (1, 2), 1, 1, True, 1, 11, 12),  # rectangular everything
    (8, 8, 3, 1, 1, 1, 1, 2, True, 2, 10, 10),  # deform_groups 2
    (8, 12, 3, 1, 1, 1, 4, 2, True, 1, 9, 8),  # groups 4
    (4, 4, 1, 1, 0, 1, 1, 1, True, 1, 6, 5),  # 1x1 kernel
    (3, 5, 3, 1, 1, 1, 1, 1, True, 1, 1, 9),  # one-row image
    (3, 5, 3, 1, 1, 1, 1, 1, True, 1, 7, 1),  # one-column image
]


@pytest.mark.parametrize("sampler", ["grid_sample", "gather", "gather_pixels_last"])
@pytest.mark.parametrize("index", range(len(CASES)))
def test_matches_reference(index: int, sampler: str) -> None:
    c_in, c_out, kernel, stride, padding, dilation, groups, dg, bias, batch, height, width = CASES[index]
    torch.manual_seed(index)
    dcn = ModulatedDeformConv2d(
        c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
        groups=groups, deform_groups=dg, bias=bias,
    )
    x, offset, mask = _random_case(dcn, batch, height, width, seed=100 + index)
    if sampler == "gather_pixels_last" and (groups, dg) != (1, 1):
        with pytest.raises(ValueError, match="takes groups=1 and deform_groups=1"), deform_sampler(dcn, sampler):
            dcn(x, offset, mask)
        return
    with torch.no_grad(), deform_sampler(dcn, sampler):
        out = dcn(x, offset, mask)
    assert dcn.sampler == "grid_sample"  # restored
    expected = deform_conv2d_reference(
        x, offset, mask, dcn.weight, dcn.bias, stride=dcn.stride, padding=dcn.padding,
        dilation=dcn.dilation, groups=groups, deform_groups=dg,
    )
    assert out.shape == expected.shape
    assert (out.double() - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)])
def test_zero_offset_unit_mask_is_conv2d(stride: int, padding: int, dilation: int) -> None:
    torch.manual_seed(1)
    dcn = ModulatedDeformConv2d(6, 10, 3, stride=stride, padding=padding, dilation=dilation)
    nn.init.uniform_(dcn.bias, -1, 1)
    x = torch.randn(2, 6, 11, 9)
    expected = F.conv2d(x, dcn.weight, dcn.bias, stride=stride, padding=padding, dilation=dilation)
    offset = torch.zeros(2, 18, *expected.shape[2:])
    mask = torch.ones(2, 9, *expected.shape[2:])
    with torch.no_grad():
        out = dcn(x, offset, mask)
    assert (out - expected).abs().max().item() <= TOLERANCE


def test_parameters_match_mmcv_names() -> None:
    dcn = ModulatedDeformConv2d(8, 16, 3, padding=1, groups=2)
    assert {k: tuple(v.shape) for k, v in dcn.state_dict().items()} == {"weight": (16, 4, 3, 3), "bias": (16,)}
    no_bias = ModulatedDeformConv2d(8, 16, 3, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]


def test_rejects_wrong_offset_shape() -> None:
    dcn = ModulatedDeformConv2d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="offset"):
        dcn(torch.randn(1, 4, 5, 5), torch.zeros(1, 9, 5, 5), torch.ones(1, 9, 5, 5))


class _NeckDeformBlock(nn.Module):
    """How the official RAP-SAM neck drives the op: one 3x3 conv predicts offsets and mask."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(channels, 27, 3, padding=1)
        self.dcn = ModulatedDeformConv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = torch.chunk(self.offset_conv(x), 3, dim=1)
        offset = torch.cat((o1, o2), 1)
        return self.dcn(x, offset, mask.sigmoid())


def test_neck_pattern_exports() -> None:
    torch.manual_seed(2)
    block = _NeckDeformBlock(8).eval()
    nn.init.normal_(block.offset_conv.weight, std=0.5)  # offsets of a few pixels, not all zero
    x = torch.randn(1, 8, 12, 10)
    program = torch.export.export(block, (x,))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert any("grid_sampler" in str(target) for target in targets), targets
    # Only ATen operators (and tuple indexing): no Python callables or higher-order fallbacks.
    assert all(isinstance(t, torch._ops.OpOverload) or t is operator.getitem for t in targets), targets
    with torch.no_grad():
        eager = block(x)
        exported = program.module()(x)
        o1, o2, mask = torch.chunk(block.offset_conv(x), 3, dim=1)
        reference = deform_conv2d_reference(
            x, torch.cat((o1, o2), 1), mask.sigmoid(), block.dcn.weight, block.dcn.bias,
            stride=(1, 1), padding=(1, 1), dilation=(1, 1),
        )
    assert (exported - eager).abs().max().item() <= TOLERANCE
    assert (eager.double() - reference).abs().max().item() <= TOLERANCE
