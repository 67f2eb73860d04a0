"""SeaFormer (Wan et al., ICLR 2023) backbones: MobileNetV2 stages plus squeeze-enhanced axial attention.

Module and parameter names follow the authors' code (fudan-zvg/SeaFormer: `seaformer-cls/seaformer.py` and
`seaformer-seg/mmseg/models/backbones/seaformer.py` share every backbone name) so that their ImageNet
checkpoints `SeaFormer_{T,S,B,L}.pth` load strictly; only the classifier `linear.*` is dropped.

Official layout, with the stride of each stage's output:

    smb1 (stem_block + layers) /4, smb2 /8, smb3 /16, smb4 /32, smb5 /64
    tiny/small/base:  trans1 after smb4 (/32), trans2 after smb5 (/64)
    large:            trans1 after smb3 (/16), trans2 after smb4 (/32), trans3 after smb5 (/64)

The official segmentation backbone returns smb2 (/8) and every transformer stage (/32, /64; large also
/16). The neck wants /4, /8, /16, /32, so we return:

    /4   smb1                    the last stride-4 map (the official model computes it, never returns it)
    /8   smb2                    the official /8 output
    /16  smb3 (large: + trans1)  the last stride-16 map; for large the official /16 output
    /32  smb5 + last trans       the network's final map, computed at stride 32 instead of 64

Why the last stage moves to stride 32 instead of tapping smb4 (+ trans) and cutting the rest: smb5 and the
last transformer stage hold 54-70% of the pretrained backbone weights (tiny 70%, small 68%, base 70%,
large 54%) and produce the features the ImageNet classifier was trained on. Running smb5's single
inverted residual at stride 1 (DeepLab's output-stride trick) keeps every pretrained weight in use, loads
the checkpoint with only the classifier dropped, and gives the neck the final features as its coarsest
level, as ResNet's C5 does. The 3x3 depth-wise convs of the last transformer stage are dilated by 2 so they
cover the same image extent as in pretraining; axial attention is global along each axis and interpolates
its positional embeddings to the map size, so it needs no change. The price is compute: at 1333x800 the
re-strided stage costs tiny 2.59 GMACs against 1.91 at official strides (small 5.11/3.59, base 9.75/6.28,
large 28.9/24.2), and cutting after smb4 would cost 1.57/2.89/4.82/22.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rapsam.models.backbones.base import Backbone, FeatureInfo, register_backbone

# One inverted-residual layer of a StackedMV2Block: (kernel, expansion, out channels, stride).
MV2Layer = tuple[int, int, int, int]


@dataclass(frozen=True)
class SeaFormerConfig:
    """Official hyper-parameters of one size (`SeaFormer_{T,S,B,L}` in `seaformer-cls/seaformer.py`)."""

    stages: tuple[tuple[MV2Layer, ...], ...]  # smb1..smb5 (smb1 also owns the stride-2 stem conv)
    channels: tuple[int, ...]  # stem width, then the output width of each smb stage
    emb_dims: tuple[int, ...]  # width of each transformer stage (= output width of the smb it follows)
    key_dims: tuple[int, ...]
    depths: tuple[int, ...]
    mlp_ratios: tuple[int, ...]
    num_heads: int
    attn_ratio: int = 2


TINY = SeaFormerConfig(
    stages=(
        ((3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1)),
        ((5, 3, 32, 2), (5, 3, 32, 1)),
        ((3, 3, 64, 2), (3, 3, 64, 1)),
        ((5, 3, 128, 2),),
        ((3, 6, 160, 2),),
    ),
    channels=(16, 16, 32, 64, 128, 160),
    emb_dims=(128, 160),
    key_dims=(16, 24),
    depths=(2, 2),
    mlp_ratios=(2, 4),
    num_heads=4,
)
SMALL = SeaFormerConfig(
    stages=(
        ((3, 1, 16, 1), (3, 4, 24, 2), (3, 3, 24, 1)),
        ((5, 3, 48, 2), (5, 3, 48, 1)),
        ((3, 3, 96, 2), (3, 3, 96, 1)),
        ((5, 4, 160, 2),),
        ((3, 6, 192, 2),),
    ),
    channels=(16, 24, 48, 96, 160, 192),
    emb_dims=(160, 192),
    key_dims=(16, 24),
    depths=(3, 3),
    mlp_ratios=(2, 4),
    num_heads=6,
)
BASE = SeaFormerConfig(
    stages=(
        ((3, 1, 16, 1), (3, 4, 32, 2), (3, 3, 32, 1)),
        ((5, 3, 64, 2), (5, 3, 64, 1)),
        ((3, 3, 128, 2), (3, 3, 128, 1)),
        ((5, 4, 192, 2),),
        ((3, 6, 256, 2),),
    ),
    channels=(16, 32, 64, 128, 192, 256),
    emb_dims=(192, 256),
    key_dims=(16, 24),
    depths=(4, 4),
    mlp_ratios=(2, 4),
    num_heads=8,
)
LARGE = SeaFormerConfig(
    stages=(
        ((3, 3, 32, 1), (3, 4, 64, 2), (3, 4, 64, 1)),
        ((5, 4, 128, 2), (5, 4, 128, 1)),
        ((3, 4, 192, 2), (3, 4, 192, 1)),
        ((5, 4, 256, 2),),
        ((3, 6, 320, 2),),
    ),
    channels=(32, 64, 128, 192, 256, 320),
    emb_dims=(192, 256, 320),
    key_dims=(16, 20, 24),
    depths=(3, 3, 3),
    mlp_ratios=(2, 4, 6),
    num_heads=8,
)


class Conv2dBN(nn.Sequential):
    """Bias-free conv then BatchNorm, as the official `Conv2d_BN` (children `c`, `bn`).

    `zero_init` starts the BN scale at 0, as the official code does for the attention projections; it only
    matters when training from scratch, a checkpoint overwrites it.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int = 1,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        padding = dilation * (kernel // 2)
        self.c = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        if zero_init:
            nn.init.zeros_(self.bn.weight)


class InvertedResidual(nn.Module):
    """MobileNetV2 block; `conv` indices (0, 2, 4) match the official Sequential with its activations.

    `residual` is decided by the caller from the official stride, which may differ from the one we run.
    """

    def __init__(self, *, in_ch: int, out_ch: int, kernel: int, stride: int, expand_ratio: int, residual: bool) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [Conv2dBN(in_ch, hidden), nn.ReLU()]
        layers += [
            Conv2dBN(hidden, hidden, kernel=kernel, stride=stride, groups=hidden),
            nn.ReLU(),
            Conv2dBN(hidden, out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class StackedMV2Block(nn.Module):
    """One `smbN` stage: the stem conv (smb1 only), then inverted residuals `layer1`, `layer2`, ...

    `keep_resolution` runs the first layer at stride 1 whatever its official stride.
    """

    def __init__(self, *, layers: tuple[MV2Layer, ...], in_ch: int, stem: bool, keep_resolution: bool) -> None:
        super().__init__()
        self.stem_block = nn.Sequential(Conv2dBN(3, in_ch, kernel=3, stride=2), nn.ReLU()) if stem else None
        self.num_layers = len(layers)
        for i, (kernel, expand_ratio, out_ch, stride) in enumerate(layers):
            layer = InvertedResidual(
                in_ch=in_ch,
                out_ch=out_ch,
                kernel=kernel,
                stride=1 if i == 0 and keep_resolution else stride,
                expand_ratio=expand_ratio,
                residual=stride == 1 and in_ch == out_ch,
            )
            self.add_module(f"layer{i + 1}", layer)
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem_block is not None:
            x = self.stem_block(x)
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


class SqueezeAxialPositionalEmbedding(nn.Module):
    """Learned embedding of 16 positions along one axis, resampled to the axis length."""

    def __init__(self, *, dim: int, length: int = 16) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, dim, length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, N)
        n = x.shape[-1]
        # Official: 1-D linear resampling. A 1xL bilinear resize is the same arithmetic (the height
        # 1 -> 1 maps rows exactly) and is an op every mobile exporter has.
        pos = F.interpolate(self.pos_embed.unsqueeze(2), size=(1, n), mode="bilinear", align_corners=False)
        return x + pos.squeeze(2)


class SeaAttention(nn.Module):
    """Squeeze-enhanced axial attention (`Sea_Attention`): attention over row means and over column means,
    broadcast back to the full map, gating a depth-wise detail branch."""

    def __init__(self, *, dim: int, key_dim: int, num_heads: int, attn_ratio: int, dilation: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        nh_kd = key_dim * num_heads
        self.dh = attn_ratio * key_dim * num_heads
        self.to_q = Conv2dBN(dim, nh_kd)
        self.to_k = Conv2dBN(dim, nh_kd)
        self.to_v = Conv2dBN(dim, self.dh)
        self.proj = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, dim, zero_init=True))
        self.proj_encode_row = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, self.dh, zero_init=True))
        self.pos_emb_rowq = SqueezeAxialPositionalEmbedding(dim=nh_kd)
        self.pos_emb_rowk = SqueezeAxialPositionalEmbedding(dim=nh_kd)
        self.proj_encode_column = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, self.dh, zero_init=True))
        self.pos_emb_columnq = SqueezeAxialPositionalEmbedding(dim=nh_kd)
        self.pos_emb_columnk = SqueezeAxialPositionalEmbedding(dim=nh_kd)
        qkv_ch = 2 * nh_kd + self.dh
        self.dwconv = Conv2dBN(qkv_ch, qkv_ch, kernel=3, dilation=dilation, groups=qkv_ch)
        self.act = nn.ReLU6()
        self.pwconv = Conv2dBN(qkv_ch, dim)

    def _axial(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Multi-head attention among the N positions of one squeezed axis: (B, C, N) -> (B, dh, N)."""
        b, _, n = q.shape
        q = q.reshape(b, self.num_heads, -1, n).transpose(2, 3)  # (B, heads, N, key_dim)
        k = k.reshape(b, self.num_heads, -1, n)  # (B, heads, key_dim, N)
        v = v.reshape(b, self.num_heads, -1, n).transpose(2, 3)  # (B, heads, N, d)
        attn = (q @ k * self.scale).softmax(dim=-1)  # (B, heads, N, N)
        return (attn @ v).transpose(2, 3).reshape(b, self.dh, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, dim, H, W)
        b, _, h, w = x.shape
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        detail = self.pwconv(self.act(self.dwconv(torch.cat([q, k, v], dim=1))))  # (B, dim, H, W)

        # Average over W to get one token per row and attend among the H rows; likewise for columns. The
        # (H, 1) and (1, W) results broadcast back over the full map.
        row = self._axial(self.pos_emb_rowq(q.mean(-1)), self.pos_emb_rowk(k.mean(-1)), v.mean(-1))
        row = self.proj_encode_row(row.reshape(b, self.dh, h, 1))
        col = self._axial(self.pos_emb_columnq(q.mean(-2)), self.pos_emb_columnk(k.mean(-2)), v.mean(-2))
        col = self.proj_encode_column(col.reshape(b, self.dh, 1, w))
        context = self.proj(v + row + col)  # (B, dim, H, W)
        return F.hardsigmoid(context) * detail


class Mlp(nn.Module):
    """1x1 expand, 3x3 depth-wise (with bias), activation, 1x1 project."""

    def __init__(self, *, dim: int, hidden: int, dilation: int) -> None:
        super().__init__()
        self.fc1 = Conv2dBN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, dilation, dilation, groups=hidden)
        self.act = nn.ReLU6()
        self.fc2 = Conv2dBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """Residual attention then residual MLP; the official drop path is training-only and owns no weights."""

    def __init__(
        self, *, dim: int, key_dim: int, num_heads: int, attn_ratio: int, mlp_ratio: int, dilation: int
    ) -> None:
        super().__init__()
        self.attn = SeaAttention(
            dim=dim, key_dim=key_dim, num_heads=num_heads, attn_ratio=attn_ratio, dilation=dilation
        )
        self.mlp = Mlp(dim=dim, hidden=dim * mlp_ratio, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """One `transN` stage: `transformer_blocks.0..` at a fixed width and resolution."""

    def __init__(self, *, config: SeaFormerConfig, index: int, dilation: int) -> None:
        super().__init__()
        self.transformer_blocks = nn.Sequential(
            *(
                Block(
                    dim=config.emb_dims[index],
                    key_dim=config.key_dims[index],
                    num_heads=config.num_heads,
                    attn_ratio=config.attn_ratio,
                    mlp_ratio=config.mlp_ratios[index],
                    dilation=dilation,
                )
                for _ in range(config.depths[index])
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer_blocks(x)


class SeaFormer(Backbone):
    """SeaFormer feature extractor returning maps at strides 4, 8, 16, 32 (taps: module docstring)."""

    # Index, among the per-stage outputs of smb1..smb5 (each after its transformer stage if it has one),
    # of the map returned at stride 4, 8, 16, 32.
    TAPS = (0, 1, 2, 4)

    def __init__(self, *, config: SeaFormerConfig) -> None:
        super().__init__()
        if len(config.stages) != 5 or len(config.stages[-1]) != 1:
            # Re-striding smb5 without dilating later layers of it is only right for a one-layer stage.
            raise ValueError("SeaFormer expects five MobileNet stages, the last one a single layer")
        self.num_stages = len(config.stages)
        self.num_trans = len(config.depths)
        for i, layers in enumerate(config.stages):
            last = i == self.num_stages - 1
            self.add_module(
                f"smb{i + 1}",
                StackedMV2Block(
                    layers=layers,
                    in_ch=config.channels[i],
                    stem=i == 0,
                    # The official stride-64 stage runs at stride 32 here (module docstring).
                    keep_resolution=last,
                ),
            )
        for j in range(self.num_trans):
            last = j == self.num_trans - 1
            self.add_module(f"trans{j + 1}", BasicLayer(config=config, index=j, dilation=2 if last else 1))
        c4, c8, c16, c32 = (config.channels[1 + i] for i in self.TAPS)
        self.feature_info = FeatureInfo(channels=(c4, c8, c16, c32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        stage_outputs = []
        first_trans_stage = self.num_stages - self.num_trans
        for i in range(self.num_stages):
            x = getattr(self, f"smb{i + 1}")(x)
            if i >= first_trans_stage:
                x = getattr(self, f"trans{i - first_trans_stage + 1}")(x)
            stage_outputs.append(x)
        c4, c8, c16, c32 = (stage_outputs[i] for i in self.TAPS)
        return c4, c8, c16, c32

    @staticmethod
    def official_key_map(key: str) -> str | None:
        # The ImageNet classifier (`linear`) is the only official weight a feature extractor has no use for.
        return None if key.startswith("linear.") else key


@register_backbone("seaformer_tiny")
def seaformer_tiny() -> SeaFormer:
    return SeaFormer(config=TINY)


@register_backbone("seaformer_small")
def seaformer_small() -> SeaFormer:
    return SeaFormer(config=SMALL)


@register_backbone("seaformer_base")
def seaformer_base() -> SeaFormer:
    return SeaFormer(config=BASE)


@register_backbone("seaformer_large")
def seaformer_large() -> SeaFormer:
    return SeaFormer(config=LARGE)
