"""TopFormer (Zhang et al., CVPR 2022) as hustvl/TopFormer builds it, with the names of its checkpoints.

A MobileNetV2-style token pyramid (`tpm`) gives local tokens at strides 4, 8, 16 and 32. Those four maps are
average-pooled to one grid at stride 64 (`ppa`), concatenated and mixed by four attention blocks (`trans`).
Semantic injection modules (`SIM`) then fuse these global tokens back into the local tokens.

Taps. The official segmentation backbone returns only the three SIM outputs (strides 8, 16, 32; its
`decode_out_indices` are 1, 2, 3 and `SIM.0` is an Identity). Our neck also needs a stride-4 map, so we return
  stride 4:  the token pyramid's stride-4 output (`tpm` index 0, the local tokens SIM.0 would have used),
  stride 8, 16, 32: the outputs of SIM.1, SIM.2, SIM.3, as in the official segmentation model.
This keeps the whole official segmentation backbone (global attention included) and its module names, and
adds no new weights; the stride-4 map is narrow (16/24/32 channels) because the official one is.

Pretrained weights. The ImageNet files (topformer-T-224-66.2.pth, topformer-S-224-72.3.pth,
topformer-B-224-75.3.pth; weights under `state_dict_ema`) come from the classification model, built with
`injection=False`: they hold `tpm.*`, `trans.*` and a classifier `head.bn.*` / `head.l.*` (dropped here),
but no `SIM.*` keys. The authors' segmentation training loads them non-strictly and trains SIM from the
initialisation below; `official_absent_prefixes` names those keys.

Pooling. The official `PyramidPoolAgg` pools adaptively. Where the windows tile a map exactly with
power-of-two sides (always so for input sides that are multiples of 64) `avg_pool2d`, or `mean` for a 1x1
grid, gives the same bits and we use it; elsewhere (1333x800, 224x224) the adaptive op stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rapsam.models.backbones.base import Backbone, FeatureInfo, register_backbone

# (kernel, expand ratio, out channels, stride) of each inverted residual block, as in the official `cfgs`.
BlockSpec = tuple[int, int, int, int]


@dataclass(frozen=True)
class TopFormerConfig:
    blocks: tuple[BlockSpec, ...]
    # Indices of the blocks whose outputs are the stride 4, 8, 16, 32 tokens (`embed_out_indice`).
    embed_out_indices: tuple[int, int, int, int]
    injection_channels: int  # width of each SIM output (`out_channels[1:]`)
    num_heads: int
    depths: int = 4
    key_dim: int = 16
    attn_ratio: int = 2
    mlp_ratio: int = 2
    c2t_stride: int = 2  # the global tokens sit at stride 32 * c2t_stride
    stem_channels: int = 16

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Widths of the four token maps (`channels` in the official config)."""
        c4, c8, c16, c32 = (self.blocks[i][2] for i in self.embed_out_indices)
        return c4, c8, c16, c32


# The three official `cfgs` tables; small and base add a tenth block at stride 32.
TOPFORMER_CONFIGS = {
    "topformer_tiny": TopFormerConfig(
        blocks=(
            (3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1), (5, 3, 32, 2), (5, 3, 32, 1),
            (3, 3, 64, 2), (3, 3, 64, 1), (5, 6, 96, 2), (5, 6, 96, 1),
        ),
        embed_out_indices=(2, 4, 6, 8),
        injection_channels=128,
        num_heads=4,
    ),
    "topformer_small": TopFormerConfig(
        blocks=(
            (3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1), (5, 3, 48, 2), (5, 3, 48, 1),
            (3, 3, 96, 2), (3, 3, 96, 1), (5, 6, 128, 2), (5, 6, 128, 1), (3, 6, 128, 1),
        ),
        embed_out_indices=(2, 4, 6, 9),
        injection_channels=192,
        num_heads=6,
    ),
    "topformer_base": TopFormerConfig(
        blocks=(
            (3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1), (5, 3, 64, 2), (5, 3, 64, 1),
            (3, 3, 128, 2), (3, 3, 128, 1), (5, 6, 160, 2), (5, 6, 160, 1), (3, 6, 160, 1),
        ),
        embed_out_indices=(2, 4, 6, 9),
        injection_channels=256,
        num_heads=8,
    ),
}


class ConvBN(nn.Sequential):
    """Conv without bias + BatchNorm; the children are named `c` and `bn` as in the official `Conv2d_BN`."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.add_module("c", conv)
        self.add_module("bn", nn.BatchNorm2d(out_channels))


class ConvModule(nn.Module):
    """mmcv's ConvModule with a norm and no activation: its children are `conv` and `bn`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class InvertedResidual(nn.Module):
    def __init__(
        self, *, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        # Without expansion the official block has no pointwise conv, so the indices in `conv` shift.
        expand = [ConvBN(in_channels, hidden), nn.ReLU()] if expand_ratio != 1 else []
        self.conv = nn.Sequential(
            *expand,
            ConvBN(hidden, hidden, kernel=kernel, stride=stride, groups=hidden),
            nn.ReLU(),
            ConvBN(hidden, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TokenPyramidModule(nn.Module):
    def __init__(
        self, *, blocks: tuple[BlockSpec, ...], out_indices: tuple[int, ...], stem_channels: int
    ) -> None:
        super().__init__()
        self.out_indices = out_indices
        self.stem = nn.Sequential(ConvBN(3, stem_channels, kernel=3, stride=2), nn.ReLU())
        self.layer_names: list[str] = []
        in_channels = stem_channels
        for i, (kernel, expand_ratio, out_channels, stride) in enumerate(blocks):
            # The official widths go through _make_divisible(c, 8): the identity for multiples of 8.
            if out_channels % 8:
                raise ValueError(f"block {i}: {out_channels} channels is not a multiple of 8")
            self.layer_names.append(f"layer{i + 1}")
            block = InvertedResidual(
                in_channels=in_channels,
                out_channels=out_channels,
                kernel=kernel,
                stride=stride,
                expand_ratio=expand_ratio,
            )
            self.add_module(self.layer_names[-1], block)
            in_channels = out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)  # (B, 16, H/2, W/2)
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs  # strides 4, 8, 16, 32


class Attention(nn.Module):
    def __init__(self, *, dim: int, key_dim: int, num_heads: int, attn_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.d = attn_ratio * key_dim
        self.dh = self.d * num_heads
        self.to_q = ConvBN(dim, key_dim * num_heads)
        self.to_k = ConvBN(dim, key_dim * num_heads)
        self.to_v = ConvBN(dim, self.dh)
        self.proj = nn.Sequential(nn.ReLU6(), ConvBN(self.dh, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.to_q(x).reshape(b, self.num_heads, self.key_dim, h * w).permute(0, 1, 3, 2)  # (B, nh, N, kd)
        k = self.to_k(x).reshape(b, self.num_heads, self.key_dim, h * w)  # (B, nh, kd, N)
        v = self.to_v(x).reshape(b, self.num_heads, self.d, h * w).permute(0, 1, 3, 2)  # (B, nh, N, d)
        # The official code defines a 1/sqrt(key_dim) scale but never applies it; the weights expect no scale.
        attn = torch.matmul(q, k).softmax(dim=-1)  # (B, nh, N, N)
        out = torch.matmul(attn, v).permute(0, 1, 3, 2).reshape(b, self.dh, h, w)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ConvBN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.ReLU6()
        self.fc2 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """Attention + MLP with residuals; the official drop path is training-only and owns no weights."""

    def __init__(self, *, dim: int, key_dim: int, num_heads: int, attn_ratio: int, mlp_ratio: int) -> None:
        super().__init__()
        self.attn = Attention(dim=dim, key_dim=key_dim, num_heads=num_heads, attn_ratio=attn_ratio)
        self.mlp = Mlp(dim=dim, hidden=dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    def __init__(
        self, *, depth: int, dim: int, key_dim: int, num_heads: int, attn_ratio: int, mlp_ratio: int
    ) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            Block(dim=dim, key_dim=key_dim, num_heads=num_heads, attn_ratio=attn_ratio, mlp_ratio=mlp_ratio)
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


def _pool_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """adaptive_avg_pool2d(x, size), with static-window ops wherever those give the same bits."""
    if size == (1, 1):
        return x.mean(dim=(2, 3), keepdim=True)  # what adaptive pooling itself runs for a 1x1 output
    h, w = x.shape[-2:]
    kernel = (h // size[0], w // size[1])
    tiles = kernel[0] * size[0] == h and kernel[1] * size[1] == w
    # Only power-of-two windows: with areas like 9 or 49 avg_pool2d rounds differently in the last bit.
    if tiles and all(k & (k - 1) == 0 for k in kernel):
        return F.avg_pool2d(x, kernel, kernel)
    return F.adaptive_avg_pool2d(x, size)  # overlapping or unequal windows, as at 1333x800


class PyramidPoolAgg(nn.Module):
    def __init__(self, *, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        h, w = inputs[-1].shape[-2:]
        size = ((h - 1) // self.stride + 1, (w - 1) // self.stride + 1)  # ceil(stride-32 grid / stride)
        return torch.cat([_pool_to(x, size) for x in inputs], dim=1)  # (B, sum(channels), H/64, W/64)


class InjectionMultiSum(nn.Module):
    """Official SIM: local tokens gated by, and summed with, the upsampled global tokens."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.local_embedding = ConvModule(in_channels, out_channels)
        self.global_embedding = ConvModule(in_channels, out_channels)
        self.global_act = ConvModule(in_channels, out_channels)

    def forward(self, x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
        size = x_local.shape[-2:]
        local_feat = self.local_embedding(x_local)
        gate = F.relu6(self.global_act(x_global) + 3.0) / 6.0  # the official h_sigmoid
        gate = F.interpolate(gate, size=size, mode="bilinear", align_corners=False)
        global_feat = self.global_embedding(x_global)
        global_feat = F.interpolate(global_feat, size=size, mode="bilinear", align_corners=False)
        return local_feat * gate + global_feat


class TopFormer(Backbone):
    # Keys the ImageNet checkpoint does not hold: the authors train SIM from scratch during segmentation.
    official_absent_prefixes: tuple[str, ...] = ("SIM.",)

    def __init__(self, *, config: TopFormerConfig) -> None:
        super().__init__()
        channels = config.channels
        self.feature_info = FeatureInfo(channels=(channels[0],) + (config.injection_channels,) * 3)
        self.tpm = TokenPyramidModule(
            blocks=config.blocks, out_indices=config.embed_out_indices, stem_channels=config.stem_channels
        )
        self.ppa = PyramidPoolAgg(stride=config.c2t_stride)
        self.split_channels = list(channels)
        self.trans = BasicLayer(
            depth=config.depths,
            dim=sum(channels),
            key_dim=config.key_dim,
            num_heads=config.num_heads,
            attn_ratio=config.attn_ratio,
            mlp_ratio=config.mlp_ratio,
        )
        # Index 0 stays an Identity so that the official names SIM.1..3 line up with strides 8..32.
        self.SIM = nn.ModuleList(
            [nn.Identity()]
            + [InjectionMultiSum(in_channels=c, out_channels=config.injection_channels) for c in channels[1:]]
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """The official `init_weights`; it matters for SIM, which no pretrained file covers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = self.tpm(x)  # 4 maps, (B, channels[i], H/2^(i+2), W/2^(i+2))
        global_tokens = self.trans(self.ppa(tokens))  # (B, sum(channels), H/64, W/64)
        semantics = global_tokens.split(self.split_channels, dim=1)
        c8 = self.SIM[1](tokens[1], semantics[1])  # (B, injection_channels, H/8, W/8)
        c16 = self.SIM[2](tokens[2], semantics[2])
        c32 = self.SIM[3](tokens[3], semantics[3])
        return tokens[0], c8, c16, c32

    @staticmethod
    def official_key_map(key: str) -> str | None:
        # The ImageNet classifier (BatchNorm1d `head.bn` + Linear `head.l`) is not part of the backbone.
        return None if key.startswith("head.") else key


@register_backbone("topformer_tiny")
def topformer_tiny() -> TopFormer:
    return TopFormer(config=TOPFORMER_CONFIGS["topformer_tiny"])


@register_backbone("topformer_small")
def topformer_small() -> TopFormer:
    return TopFormer(config=TOPFORMER_CONFIGS["topformer_small"])


@register_backbone("topformer_base")
def topformer_base() -> TopFormer:
    return TopFormer(config=TOPFORMER_CONFIGS["topformer_base"])
