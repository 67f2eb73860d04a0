"""EdgeNeXt backbone (Maaz et al., arXiv 2206.10589), written after the authors' mmaaz60/EdgeNeXt.

A ConvNeXt-like four-stage network: a patchify stem and 2x2 strided downsampling convs, ConvEncoder
blocks (depthwise conv + inverted bottleneck), and one SDTA block at the end of stages 2-4 (split
depthwise convs + cross-covariance attention over channels, XCA).

Module and parameter names follow `models/edgenext.py`, `models/conv_encoder.py`,
`models/sdta_encoder.py` and `models/layers.py` of that repository, so the released ImageNet files
(`edgenext_xx_small.pth`, `edgenext_x_small.pth`, `edgenext_small.pth`, `edgenext_small_usi.pth`) load
strictly; only the classifier (`norm.*`, `head.*`) is dropped.

Outputs are the raw outputs of the four stages (strides 4, 8, 16, 32). We add no per-output norms:
they would not be in the ImageNet file and would start random, and every stage output is already
normalised by the LayerNorm that opens the next downsampling layer or by the neck's own convs + norms.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rapsam.models.backbones.base import Backbone, FeatureInfo, register_backbone
from rapsam.models.functional import l2_normalize
from rapsam.models.switches import switched

Quad = tuple[int, int, int, int]


@dataclass(frozen=True)
class EdgeNeXtConfig:
    """One EdgeNeXt size; the defaults are shared by all official sizes (`models/model.py`)."""

    depths: Quad
    dims: Quad
    heads: Quad = (8, 8, 8, 8)
    global_blocks: Quad = (0, 1, 1, 1)  # SDTA blocks at the end of each stage
    kernel_sizes: Quad = (3, 5, 7, 9)  # ConvEncoder depthwise kernels
    d2_scales: Quad = (2, 2, 3, 4)  # channel splits of each stage's SDTA block
    use_pos_embd_xca: tuple[bool, bool, bool, bool] = (False, True, False, False)
    expan_ratio: int = 4
    layer_scale_init_value: float = 1e-6


EDGENEXT_SIZES: dict[str, EdgeNeXtConfig] = {
    "xx_small": EdgeNeXtConfig(depths=(2, 2, 6, 2), dims=(24, 48, 88, 168), heads=(4, 4, 4, 4)),
    "x_small": EdgeNeXtConfig(depths=(3, 3, 9, 3), dims=(32, 64, 100, 192), heads=(4, 4, 4, 4)),
    "small": EdgeNeXtConfig(depths=(3, 3, 9, 3), dims=(48, 96, 160, 304)),
}


LAYER_NORM_FORMS = ("written_out", "channels_last")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, the official `channels_first` LayerNorm."""

    def __init__(self, *, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.form = "written_out"  # a converter may switch it for its runtime: see `layer_norm_form`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_last":
            # One fused LayerNorm kernel between two permutes, for runtimes whose reductions over dim 1 of an
            # NCHW map are strided passes (ONNX Runtime: about 8 ms less for EdgeNeXt-S at 512x512).
            normed = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
            return normed.permute(0, 3, 1, 2)
        return channels_first_layer_norm(x, self.weight, self.bias, self.eps)


def channels_first_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over dim 1 of a (B, C, H, W) map, written out (no permutes) exactly as the authors do, so
    outputs match theirs bit for bit. The affine parameters broadcast as 4-D (1, C, 1, 1) tensors: XNNPACK
    keeps a map channels-last only through ops whose every operand is 4-D."""
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    x = (x - mean) / torch.sqrt(var + eps)
    return _per_channel(weight) * x + _per_channel(bias)


def _per_channel(vector: torch.Tensor) -> torch.Tensor:
    return vector.view(1, -1, 1, 1)


def _pointwise(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """`linear` over the channels of a (B, C, H, W) map, as a 1x1 conv."""
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


def layer_norm_form(model: nn.Module, form: str) -> contextlib.AbstractContextManager[None]:
    """Inside the block, every LayerNorm2d of `model` computes in `form` (the same values, another op sequence
    for a compiler to lower): "written_out" as the authors, or "channels_last" as one `layer_norm`."""
    return switched(model, LayerNorm2d, "form", form, LAYER_NORM_FORMS)


KERNEL_FORMS = ("whole", "column_groups")
# XNNPACK's largest single-pass depthwise kernel (5x5): deeper ones ran as grouped GEMMs with one channel per
# group, 5-9x slower (a 7x7 over 160 channels at 32x32: 9.5 ms in ExecuTorch, 4.3 ms in LiteRT; in column
# groups 1.0 and 0.7 ms).
SINGLE_PASS_TAPS = 25


class DepthwiseConv2d(nn.Conv2d):
    """A k x k depthwise conv with stride 1 and same padding: `nn.Conv2d` (same parameters and state dict) whose
    `form` a converter may switch (see `kernel_form`). "column_groups" sums convs over groups of at most
    SINGLE_PASS_TAPS // k kernel columns: the same values up to the order of the sums. Each group's conv pads
    as the whole one does and the group's output window is sliced out of its wider result; no separate pad
    op, which XNNPACK refused in int8 programs (StaticConstantPad between differently quantized tensors)."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.form = "whole"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.kernel_size
        if self.form == "whole" or height * width <= SINGLE_PASS_TAPS:
            return super().forward(x)
        columns = max(1, SINGLE_PASS_TAPS // height)
        out = None
        for start in range(0, width, columns):
            # Output column o of this group's conv is output column o - start of the whole kernel's.
            part = F.conv2d(x, self.weight[..., start:start + columns], self.bias if out is None else None,
                            padding=self.padding, groups=self.groups)[..., start:start + x.shape[-1]]
            out = part if out is None else out + part
        return out


def kernel_form(model: nn.Module, form: str) -> contextlib.AbstractContextManager[None]:
    """Inside the block, every DepthwiseConv2d of `model` computes in `form`: "whole" as one conv, or
    "column_groups" for XNNPACK (ExecuTorch, LiteRT; ONNX Runtime runs the whole 7x7 kernel 3x faster)."""
    return switched(model, DepthwiseConv2d, "form", form, KERNEL_FORMS)


class PositionalEncodingFourier(nn.Module):
    """Sine/cosine encoding of normalised (y, x) positions, projected to `dim` channels by a 1x1 conv."""

    def __init__(self, *, dim: int, hidden_dim: int = 32, temperature: float = 10000.0) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.hidden_dim = hidden_dim
        # Frequencies depend on the config only: computed once, kept out of the state dict.
        dim_t = torch.arange(hidden_dim, dtype=torch.float32)
        self.register_buffer("dim_t", temperature ** (2 * (dim_t // 2) / hidden_dim), persistent=False)

    def _fourier(self, length: int) -> torch.Tensor:
        # The official code takes a cumsum over an all-true mask; for an unpadded map that is just
        # 1..length, so arange gives the same numbers without cumsum (which mobile exporters dislike).
        pos = torch.arange(1, length + 1, dtype=torch.float32, device=self.dim_t.device)
        pos = pos / (length + 1e-6) * (2 * math.pi)
        angles = pos[:, None] / self.dim_t  # (L, D)
        # Even channels take sin, odd channels cos, interleaved as in the authors' code.
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)  # (L, D)

    def forward(self, height: int, width: int) -> torch.Tensor:
        pos_y = self._fourier(height)[:, None, :].expand(height, width, self.hidden_dim)
        pos_x = self._fourier(width)[None, :, :].expand(height, width, self.hidden_dim)
        pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)[None]  # (1, 2D, H, W)
        return self.token_projection(pos.to(self.token_projection.weight.dtype))  # (1, C, H, W), the same for every image of a batch


class ConvEncoder(nn.Module):
    """Depthwise conv, then LayerNorm + inverted bottleneck on channels-last tokens, layer-scaled."""

    def __init__(
        self, *, dim: int, kernel_size: int, expan_ratio: int, layer_scale_init_value: float
    ) -> None:
        super().__init__()
        self.dwconv = DepthwiseConv2d(dim, kernel_size)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expan_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expan_ratio * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.form = "channels_last"  # see `block_form`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "channels_first":
            return x + _bottleneck_channels_first(self, self.dwconv(x))
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)  # (B, C, H, W)


class XCA(nn.Module):
    """Cross-covariance attention: a (C/h x C/h) attention map per head, between channels, not tokens."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        # Chunking the last dim keeps every tensor at rank <= 4 (the official 5-D permute does not
        # convert everywhere); the qkv channel layout is (3, heads, head_dim) either way.
        q, k, v = (
            t.transpose(1, 2).reshape(batch, self.num_heads, head_dim, tokens)  # (B, h, d, N)
            for t in self.qkv(x).split(dim, dim=2)
        )
        x = self._attend(q, k, v).reshape(batch, dim, tokens).transpose(1, 2)  # (B, N, C)
        return self.proj(x)

    def channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` on a (B, C, H, W) map: the same values, with no transposes around the projections."""
        batch, dim, height, width = x.shape
        head_dim, tokens = dim // self.num_heads, height * width
        q, k, v = (
            t.reshape(batch, self.num_heads, head_dim, tokens)  # (B, h, d, N)
            for t in _pointwise(x, self.qkv).reshape(batch, 3 * dim, tokens).split(dim, dim=1)
        )
        return _pointwise(self._attend(q, k, v).reshape(batch, dim, height, width), self.proj)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k = l2_normalize(q), l2_normalize(k)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, h, d, d)
        return attn.softmax(dim=-1) @ v  # (B, h, d, N)


class SDTAEncoder(nn.Module):
    """Split depthwise transpose attention: multi-scale split convs, XCA, then an inverted bottleneck."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        scales: int,
        use_pos_emb: bool,
        expan_ratio: int,
        layer_scale_init_value: float,
    ) -> None:
        super().__init__()
        self.width = math.ceil(dim / scales)
        # The forward pass needs exactly `scales` chunks: one conv per chunk but the last.
        if scales < 2 or len(range(0, dim, self.width)) != scales:
            raise ValueError(f"SDTA cannot split {dim} channels into {scales} groups")
        self.convs = nn.ModuleList(
            nn.Conv2d(self.width, self.width, kernel_size=3, padding=1, groups=self.width)
            for _ in range(scales - 1)
        )
        self.pos_embd = PositionalEncodingFourier(dim=dim) if use_pos_emb else None
        self.norm_xca = nn.LayerNorm(dim, eps=1e-6)
        self.gamma_xca = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.xca = XCA(dim=dim, num_heads=num_heads)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expan_ratio * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expan_ratio * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.form = "channels_last"  # see `block_form`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, height, width = x.shape
        chunks = torch.split(x, self.width, dim=1)
        # Each chunk's conv also sees the previous chunk's output: a growing receptive field (Res2Net).
        outs = [self.convs[0](chunks[0])]
        for conv, chunk in zip(self.convs[1:], chunks[1:-1]):
            outs.append(conv(outs[-1] + chunk))
        y = torch.cat([*outs, chunks[-1]], dim=1)

        if self.form == "channels_first":
            if self.pos_embd is not None:
                y = y + self.pos_embd(height, width)
            y = y + _per_channel(self.gamma_xca) * self.xca.channels_first(_norm_channels_first(y, self.norm_xca))
            return x + _bottleneck_channels_first(self, y)
        y = y.reshape(batch, dim, height * width).transpose(1, 2)  # (B, N, C)
        if self.pos_embd is not None:
            y = y + self.pos_embd(height, width).reshape(1, dim, height * width).transpose(1, 2)
        y = y + self.gamma_xca * self.xca(self.norm_xca(y))
        y = y.reshape(batch, height, width, dim)  # (B, H, W, C)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)  # (B, C, H, W)


def _norm_channels_first(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return channels_first_layer_norm(x, norm.weight, norm.bias, norm.eps)


def _bottleneck_channels_first(block: ConvEncoder | SDTAEncoder, y: torch.Tensor) -> torch.Tensor:
    """The layer-scaled LayerNorm + inverted bottleneck that ends both blocks, on a (B, C, H, W) map."""
    hidden = block.act(_pointwise(_norm_channels_first(y, block.norm), block.pwconv1))
    return _per_channel(block.gamma) * _pointwise(hidden, block.pwconv2)


BLOCK_FORMS = ("channels_last", "channels_first")


def block_form(model: nn.Module, form: str) -> contextlib.AbstractContextManager[None]:
    """Inside the block, every ConvEncoder and SDTAEncoder of `model` computes in `form`: "channels_last" as
    the authors (LayerNorm and linears on (B, H, W, C) tokens, between two permutes), or "channels_first" on
    the (B, C, H, W) map itself (LayerNorms written out over dim 1, linears as 1x1 convs): the same parameters,
    the same values up to the order of the sums. XNNPACK (ExecuTorch) runs convs channels-last and linears
    channels-first, so the authors' form costs it a transpose at every permute and linear."""
    return switched(model, (ConvEncoder, SDTAEncoder), "form", form, BLOCK_FORMS)


class EdgeNeXt(Backbone):
    """The official EdgeNeXt without its classifier; returns the four stage outputs."""

    def __init__(self, *, config: EdgeNeXtConfig) -> None:
        super().__init__()
        dims = config.dims
        self.feature_info = FeatureInfo(channels=dims)
        stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dim=dims[0]))
        downsamples = [
            nn.Sequential(LayerNorm2d(dim=dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downsamples])
        self.stages = nn.ModuleList(self._stage(config, i) for i in range(4))
        self.apply(_init_weights)

    @staticmethod
    def _stage(config: EdgeNeXtConfig, i: int) -> nn.Sequential:
        dim, depth, n_global = config.dims[i], config.depths[i], config.global_blocks[i]
        conv_blocks = [
            ConvEncoder(
                dim=dim,
                kernel_size=config.kernel_sizes[i],
                expan_ratio=config.expan_ratio,
                layer_scale_init_value=config.layer_scale_init_value,
            )
            for _ in range(depth - n_global)
        ]
        sdta_blocks = [
            SDTAEncoder(
                dim=dim,
                num_heads=config.heads[i],
                scales=config.d2_scales[i],
                use_pos_emb=config.use_pos_embd_xca[i],
                expan_ratio=config.expan_ratio,
                layer_scale_init_value=config.layer_scale_init_value,
            )
            for _ in range(n_global)
        ]
        return nn.Sequential(*conv_blocks, *sdta_blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outs = []
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))  # (B, C_i, H / 2^(i+2), W / 2^(i+2))
            outs.append(x)
        return outs[0], outs[1], outs[2], outs[3]

    @staticmethod
    def official_key_map(key: str) -> str | None:
        # The ImageNet classifier: final LayerNorm and the 1000-way linear layer.
        if key.startswith(("norm.", "head.")):
            return None
        return key


def _init_weights(module: nn.Module) -> None:
    # As the authors train from scratch: truncated normal (std 0.02) for convs and linears.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_backbone("edgenext_xx_small")
def edgenext_xx_small() -> EdgeNeXt:
    return EdgeNeXt(config=EDGENEXT_SIZES["xx_small"])


@register_backbone("edgenext_x_small")
def edgenext_x_small() -> EdgeNeXt:
    return EdgeNeXt(config=EDGENEXT_SIZES["x_small"])


@register_backbone("edgenext_small")
def edgenext_small() -> EdgeNeXt:
    return EdgeNeXt(config=EDGENEXT_SIZES["small"])
