"""One decoder stage of RAP-SAM (official `CrossAttenHead` with `KernelUpdator`), shared by object and
prompt queries, and the classifiers it predicts with.

Per stage: masks M = Q.F; pooled features X = sum(hard(M) * F); gated dynamic conv
Q' = Gate_x(X) * X' + Gate_q(X) * Q'; self-attention; FFN; then class logits, mask kernels and an IoU score.
Names follow `seg/models/heads/yoso_head.py` of the official code.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from rapsam.models.functional import l2_normalize

# The official open-vocabulary head scales cosines by exp(4.6052) ~ 100 (CLIP's logit scale), taken in
# float32 as its buffer is: 100.00296..., not float64's 100.00298...
OPEN_VOCAB_LOGIT_SCALE = float(torch.tensor(4.6052, dtype=torch.float32).exp())
# A finite "minus infinity": exact zero after softmax in fp32 and no overflow in fp16.
MASKED_LOGIT = -1.0e4


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention with `nn.MultiheadAttention`'s parameter names and maths.

    Written out (matmul + softmax) so that every exporter sees plain ops instead of the fused fast path.
    `attn_bias` (Lq, Lk) is added to the attention logits; use MASKED_LOGIT to forbid a pair.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if query is key and key is value:
            # Self-attention: one projection GEMM instead of three (as nn.MultiheadAttention does); each small
            # GEMM of the decoder is a separate ~3.5 us kernel on a GPU.
            projected = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            projected = (F.linear(x, w, b) for x, w, b in zip(
                (query, key, value), self.in_proj_weight.chunk(3), self.in_proj_bias.chunk(3)))
        q, k, v = (self._heads(t) for t in projected)  # (B, h, L, d/h) each
        logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, Lq, Lk)
        if attn_bias is not None:
            logits = logits + attn_bias
        out = logits.softmax(dim=-1) @ v  # (B, h, Lq, d/h)
        batch, heads, length, head_dim = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, heads * head_dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)


class KernelUpdator(nn.Module):
    """The gated dynamic conv of K-Net: pooled features X update the kernels Q through two sigmoid gates."""

    def __init__(self, *, in_channels: int = 256, feat_channels: int = 256, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.feat_channels = feat_channels
        self.dynamic_layer = nn.Linear(in_channels, 2 * feat_channels)
        self.input_layer = nn.Linear(in_channels, 2 * feat_channels)
        self.input_gate = nn.Linear(in_channels, feat_channels)
        self.update_gate = nn.Linear(in_channels, feat_channels)
        self.norm_in = nn.LayerNorm(feat_channels)
        self.norm_out = nn.LayerNorm(feat_channels)
        self.input_norm_in = nn.LayerNorm(feat_channels)
        self.input_norm_out = nn.LayerNorm(feat_channels)
        self.activation = nn.ReLU()
        self.fc_layer = nn.Linear(feat_channels, out_channels)
        self.fc_norm = nn.LayerNorm(out_channels)

    def forward(self, update_feature: torch.Tensor, input_feature: torch.Tensor) -> torch.Tensor:
        """update_feature: pooled features X (B, Q, C); input_feature: kernels Q (B, Q, C)."""
        param_in, param_out = self.dynamic_layer(update_feature).split(self.feat_channels, dim=-1)
        input_in, input_out = self.input_layer(input_feature).split(self.feat_channels, dim=-1)
        gate_feats = input_in * param_in
        input_gate = self.input_norm_in(self.input_gate(gate_feats)).sigmoid()
        update_gate = self.norm_in(self.update_gate(gate_feats)).sigmoid()
        features = update_gate * self.norm_out(param_out) + input_gate * self.input_norm_out(input_out)
        return self.activation(self.fc_norm(self.fc_layer(features)))


class FFN(nn.Module):
    """mmcv's FFN layout (`layers.0.0`, `layers.1`) with the identity added inside."""

    def __init__(self, *, embed_dims: int, feedforward_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU()),
            nn.Linear(feedforward_channels, embed_dims),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Three linear layers with ReLU between: indices 0, 2, 4 as in the official Sequentials."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


def open_vocab_logits(embedding: torch.Tensor, class_embed: torch.Tensor) -> torch.Tensor:
    """Cosine between each query embedding (B, Q, E) and the text prototypes (E, C+1, P), best prototype
    per class, times CLIP's logit scale. The no-object column is a zero vector, so its logit is 0."""
    cosine = torch.einsum("bqe,ecp->bqcp", l2_normalize(embedding), class_embed)
    # One prototype (every shipped classifier) needs no max: amax is a portable kernel in ExecuTorch.
    best = cosine.squeeze(-1) if cosine.shape[-1] == 1 else cosine.amax(dim=-1)
    return OPEN_VOCAB_LOGIT_SCALE * best  # (B, Q, C+1)


POOLINGS = ("matmul", "pixel_chunks")
# Most pixels per chunk of the "pixel_chunks" pooling: XNNPACK streams its packed right operand once per 5
# rows of the left one, and a chunk's features (1024 x 256 fp32, 1 MB) stay in cache where the whole map's
# 16 MB came from memory 20 times per product. 512 to 4096 ran alike (EdgeNeXt-S at 512x512, AVX2 host).
POOLING_CHUNK_PIXELS = 1024


class PixelFeatures(NamedTuple):
    """F (B, C, h, w) laid out once per image for every mask product of the decoder: plain matrix products
    on these run at the backends' GEMM speed, where an einsum on the 4-D map did not (ONNX Runtime spent a
    third of `segment` in Einsum).

    `of`'s `pooling` says how masks pool the features (same values): "matmul", masks @ F laid out pixels-first;
    "pixel_chunks", one batched product over chunks of pixels whose features fit in cache, then a sum over
    the chunks, for the XNNPACK converters (ExecuTorch, TFLite). XNNPACK's pooling product of the whole
    map ran at 60 GFLOP/s, against 100 for the mask product of the same size, and litert-torch turns the
    single product into a FULLY_CONNECTED whose weights are the features, repacked on every call."""

    channels_first: torch.Tensor  # (B, C, h*w), for masks = Q . F
    pixels_first: torch.Tensor  # (B, h*w, C), for pooling and the prompt adapter's keys
    height: int
    width: int
    chunks: torch.Tensor | None = None  # (B * N, h*w / N, C): pixels_first in N chunks, for "pixel_chunks"

    @classmethod
    def of(cls, features: torch.Tensor, pooling: str = "matmul") -> PixelFeatures:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        flat = features.flatten(2)
        pixels_first = flat.transpose(1, 2)
        chunks = None
        if pooling == "pixel_chunks":  # laid out once for every stage: XNNPACK copies at each reshape
            size = _chunk_size(flat.shape[-1])
            chunks = pixels_first.reshape(-1, size, flat.shape[1])
        return cls(flat, pixels_first, features.shape[-2], features.shape[-1], chunks)

    def masks(self, kernels: torch.Tensor) -> torch.Tensor:
        """Mask logits of kernels (B, Q, C): (B, Q, h*w)."""
        return kernels @ self.channels_first

    def pool(self, weights: torch.Tensor) -> torch.Tensor:
        """Per-query sums of the features weighted by weights (B, Q, h*w): (B, Q, C)."""
        if self.chunks is None:
            return weights @ self.pixels_first
        batch, queries, pixels = weights.shape
        size = self.chunks.shape[1]
        pieces = weights.unflatten(-1, (pixels // size, size)).transpose(1, 2).reshape(-1, queries, size)
        return torch.bmm(pieces, self.chunks).unflatten(0, (batch, -1)).sum(dim=1)

    def unflatten(self, masks: torch.Tensor) -> torch.Tensor:
        return masks.unflatten(-1, (self.height, self.width))


def _chunk_size(pixels: int) -> int:
    """The largest divisor of the pixel count up to POOLING_CHUNK_PIXELS, for at least two chunks: a product
    with a batch of one is what litert-torch turns into a FULLY_CONNECTED."""
    return next(s for s in range(min(POOLING_CHUNK_PIXELS, max(pixels // 2, 1)), 0, -1) if pixels % s == 0)


def hard_mask(mask_logits: torch.Tensor) -> torch.Tensor:
    """1.0 where logit > 0 (sigmoid > 0.5), else 0.0, in the logits' dtype, exact for every float.

    Written as a clamp to [0, 1] and a ceiling instead of a comparison and a cast: mobile delegates (XNNPACK)
    run both, but left `gt` + cast to ExecuTorch's slow portable kernels. It holds no constant that a backend
    could fold into the preceding matrix product (ONNX Runtime folds a multiply into MatMul) or that fp16
    cannot hold: the former `clamp(x, 0, tiny) / tiny` stored fp32's smallest normal, which Core ML's fp16
    programs round to a subnormal whose reciprocal overflows (NaN masks; `rapsam.convert.mil` found it)."""
    return torch.ceil(mask_logits.clamp(0.0, 1.0))


def hard_mask_pool(mask_logits: torch.Tensor, pixels: PixelFeatures) -> torch.Tensor:
    """Sum of the features under each query's binary mask, for mask logits (B, Q, h*w): (B, Q, C)."""
    if torch.is_grad_enabled():
        # The binary mask selects pixels and has no gradient (the official `sigmoid() > 0.5`); through the
        # old clamp-and-divide, logits of exactly 0 got a 1/tiny slope, which overflowed bf16 training.
        mask_logits = mask_logits.detach()
    return pixels.pool(hard_mask(mask_logits))


class CrossAttenHead(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        channels: int,
        num_heads: int,
        ffn_channels: int,
        class_embed: torch.Tensor | None,
    ) -> None:
        """`class_embed` (E, C+1, P) selects the open-vocabulary classifier; None a linear one."""
        super().__init__()
        self.kernel_update = KernelUpdator(in_channels=channels, feat_channels=channels, out_channels=channels)
        self.s_atten = MultiheadAttention(channels, num_heads)
        self.s_atten_norm = nn.LayerNorm(channels)
        self.ffn = FFN(embed_dims=channels, feedforward_channels=ffn_channels)
        self.ffn_norm = nn.LayerNorm(channels)
        self.cls_fcs = nn.Sequential(nn.Linear(channels, channels, bias=False), nn.LayerNorm(channels), nn.ReLU())
        self.open_vocab = class_embed is not None
        if class_embed is not None:
            self.register_buffer("fc_cls", class_embed.clone())
            self.cls_proj = mlp(channels, channels, class_embed.shape[0])
        else:
            self.fc_cls = nn.Linear(channels, num_classes + 1)
            nn.init.constant_(self.fc_cls.bias, -math.log((1 - 0.01) / 0.01))
        self.mask_fcs = nn.Sequential(nn.Linear(channels, channels, bias=False), nn.LayerNorm(channels), nn.ReLU())
        self.fc_mask = nn.Linear(channels, channels)
        self.iou_embed = mlp(channels, channels, 1)

    def forward(
        self, pixels: PixelFeatures, kernels: torch.Tensor, mask_logits: torch.Tensor, attn_bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """pixels: F, kernels (B, Q, C), mask_logits (B, Q, h*w) ->
        class logits (B, Q, C+1) before the head's temperature, mask logits (B, Q, h*w), IoU (B, Q, 1),
        new kernels (B, Q, C)."""
        pooled = hard_mask_pool(mask_logits, pixels)
        kernels = self.kernel_update(pooled, kernels)
        kernels = self.s_atten_norm(kernels + self.s_atten(kernels, kernels, kernels, attn_bias))
        obj_feat = self.ffn_norm(self.ffn(kernels))

        cls_feat = self.cls_fcs(obj_feat)
        if self.open_vocab:
            class_logits = open_vocab_logits(self.cls_proj(cls_feat), self.fc_cls)
        else:
            class_logits = self.fc_cls(cls_feat)
        mask_feat = self.mask_fcs(obj_feat)
        new_masks = pixels.masks(self.fc_mask(mask_feat))
        return class_logits, new_masks, self.iou_embed(mask_feat), obj_feat
