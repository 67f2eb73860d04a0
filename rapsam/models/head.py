"""The RAP-SAM head (official `RapSAMVideoHead`): object queries and prompt queries through one shared
3-stage decoder, then the asymmetric adapters (pooling + dynamic conv for objects, cross-attention to F
for prompts). Names follow `seg/models/heads/rapsam_head.py` and `mask2former_vid.py`.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
from torch import nn

from rapsam.models.decoder import (
    MASKED_LOGIT,
    POOLINGS,
    CrossAttenHead,
    KernelUpdator,
    MultiheadAttention,
    PixelFeatures,
    hard_mask_pool,
    open_vocab_logits,
)
from rapsam.models.switches import switched

POINT, BOX, PADDING = 0, 1, -1


class StageOutputs(NamedTuple):
    """What training supervises: per decoder stage (and, last, the adapter) class logits (B, Q, C+1) and mask
    logits (B, Q, h, w); the prompt adapter's IoU (B, K) (None for objects); the final queries (B, Q, C)."""

    class_logits: list[torch.Tensor]
    mask_logits: list[torch.Tensor]
    iou: torch.Tensor | None
    queries: torch.Tensor

# mmdet's inverse_sigmoid clamps with this eps; the official head then takes the sigmoid again.
_BOX_EPS = 1e-5


def box_sine_encoding(boxes: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """mmdet's `coordinate_to_encoding` of (cx, cy, w, h) in [0, 1]: (B, K, 4) -> (B, K, 4 * num_feats),
    ordered y, x, w, h, each as interleaved sin/cos."""
    dim_t = torch.arange(num_feats, dtype=boxes.dtype, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    parts = []
    for index in (1, 0, 2, 3):
        pos = boxes[..., index, None] * (2 * math.pi) / dim_t  # (B, K, num_feats)
        parts.append(torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(2))
    return torch.cat(parts, dim=-1)


def normalize_boxes(boxes: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """Pixel (x0, y0, x1, y1) -> (cx, cy, w, h) in (0, 1), as the official `prepare_for_dn_mo` at eval.

    sigmoid(inverse_sigmoid(x)) there is x1 / (x1 + x2) with mmdet's clamps; written out directly.
    """
    scale = boxes.new_tensor([width, height, width, height])
    x0, y0, x1, y1 = (boxes / scale).unbind(-1)
    cxcywh = torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1).clamp(0.0, 1.0)
    low, high = cxcywh.clamp(min=_BOX_EPS), (1 - cxcywh).clamp(min=_BOX_EPS)
    return low / (low + high)


class PromptAttention(nn.Module):
    """mmcv's `MultiheadAttention` wrapper (`.attn`, identity added) used as the prompt adapter."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.attn = MultiheadAttention(channels, num_heads)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return query + self.attn(query, keys, keys)


class RapSAMHead(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        num_queries: int,
        channels: int,
        num_stages: int,
        num_heads: int,
        ffn_channels: int,
        temperature: float,
        class_embed: torch.Tensor | None,
        clicks_as_boxes: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.clicks_as_boxes = clicks_as_boxes
        self.pooling = "matmul"  # a converter may switch it for its runtime: see `pixel_pooling`
        self.mask_tokens = nn.Embedding(1, channels)
        self.pb_embedding = nn.Embedding(2, channels)
        self.pos_linear = nn.Linear(2 * channels, channels)
        self.kernels = nn.Embedding(num_queries, channels)
        self.mask_heads = nn.ModuleList(
            CrossAttenHead(
                num_classes=num_classes, channels=channels, num_heads=num_heads, ffn_channels=ffn_channels,
                class_embed=class_embed,
            )
            for _ in range(num_stages)
        )
        self.panoptic_attn = KernelUpdator(in_channels=channels, feat_channels=channels)
        self.open_vocab = class_embed is not None
        classifier_out = class_embed.shape[0] if class_embed is not None else num_classes + 1
        self.panoptic_cls = nn.Sequential(nn.Linear(channels, classifier_out))
        self.prompt_attn = PromptAttention(channels, num_heads)
        self.prompt_norm = nn.LayerNorm(channels)
        self.prompt_iou = nn.Linear(channels, 1)

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        """Install text embeddings (C, P, E) as the official classifier file holds them (unit rows, one set of
        P prototypes per class); the no-object column is added as zeros."""
        if not self.open_vocab:
            raise ValueError("this model has a linear classifier; text embeddings need classifier='open_vocab'")
        current = self.mask_heads[0].fc_cls  # (E, C+1, P)
        expected = (current.shape[1] - 1, current.shape[2], current.shape[0])
        if tuple(embeddings.shape) != expected:
            raise ValueError(f"class embeddings of shape {tuple(embeddings.shape)}, the model needs (C, P, E) = {expected}")
        background = embeddings.new_zeros(1, *embeddings.shape[1:])
        table = torch.cat([embeddings, background]).permute(2, 0, 1).contiguous()  # (E, C+1, P)
        for stage in self.mask_heads:
            stage.fc_cls.copy_(table)

    def decode(
        self, features: torch.Tensor, kernels: torch.Tensor, attn_bias: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The shared decoder: per-stage class logits, mask logits (B, Q, h, w) and IoU, and the final kernels."""
        pixels = PixelFeatures.of(features, self.pooling)
        class_logits, masks, ious, kernels = self._decode(pixels, kernels, attn_bias)
        return class_logits, [pixels.unflatten(m) for m in masks], ious, kernels

    def _decode(
        self, pixels: PixelFeatures, kernels: torch.Tensor, attn_bias: torch.Tensor | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        mask_logits = pixels.masks(kernels)
        class_logits, all_masks, ious = [], [], []
        for stage in self.mask_heads:
            logits, mask_logits, iou, kernels = stage(pixels, kernels, mask_logits, attn_bias)
            class_logits.append(logits / self.temperature)
            all_masks.append(mask_logits)
            ious.append(iou)
        return class_logits, all_masks, ious, kernels

    def panoptic(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features (B, C, h, w) -> mask logits (B, N, h, w), class logits (B, N, C+1), queries (B, N, C)."""
        outputs = self.panoptic_stages(features)
        return outputs.mask_logits[-1], outputs.class_logits[-1], outputs.queries

    def panoptic_stages(self, features: torch.Tensor) -> StageOutputs:
        """Every supervised output: each decoder stage, then the object adapter (the inference output)."""
        batch = features.shape[0]
        pixels = PixelFeatures.of(features, self.pooling)
        kernels = self.kernels.weight.unsqueeze(0).expand(batch, -1, -1)
        class_logits, all_masks, _, kernels = self._decode(pixels, kernels, None)
        # Object adapter: pooling + dynamic conv on the last stage's masks.
        kernels = self.panoptic_attn(hard_mask_pool(all_masks[-1], pixels), kernels)
        all_masks.append(pixels.masks(kernels))
        # The adapter's logits are not divided by the stage temperature, as in the official head.
        if self.open_vocab:
            class_logits.append(open_vocab_logits(self.panoptic_cls(kernels), self.mask_heads[0].fc_cls))
        else:
            class_logits.append(self.panoptic_cls(kernels))
        return StageOutputs(class_logits, [pixels.unflatten(m) for m in all_masks], None, kernels)

    def prompt_queries(self, boxes: torch.Tensor, kinds: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
        """boxes (B, K, 4) pixel xyxy, kinds (B, K) in {0 point, 1 box, -1 padding} -> queries (B, K, C)."""
        # Arithmetic instead of an embedding lookup: any integer dtype works and padding (-1) needs no clamp.
        point_embed, box_embed = self.pb_embedding.weight.unbind(0)
        uses_box_row = (kinds >= POINT) if self.clicks_as_boxes else (kinds == BOX)
        is_box = uses_box_row.unsqueeze(-1).to(point_embed.dtype)  # (B, K, 1)
        label = point_embed + is_box * (box_embed - point_embed) + self.mask_tokens.weight
        encoding = box_sine_encoding(normalize_boxes(boxes, height=height, width=width), label.shape[-1] // 2)
        return label + self.pos_linear(encoding)

    def prompt(
        self, features: torch.Tensor, boxes: torch.Tensor, kinds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, h, w), boxes (B, K, 4), kinds (B, K) -> mask logits (B, K, h, w), IoU (B, K).

        Prompts never see each other (self-attention only on the diagonal), so each slot's answer is
        independent of the others and padded slots change nothing; their outputs are blanked.
        """
        outputs = self.prompt_stages(features, boxes, kinds)
        # A select, not products with a 0/1 validity: int8 quantizers annotate products and sums, and one int8
        # scale over logits and the -1e4 blank erased the valid masks (ExecuTorch int8, measured).
        valid = kinds >= 0
        mask_logits = outputs.mask_logits[-1]
        mask_logits = torch.where(valid[..., None, None], mask_logits, torch.full_like(mask_logits, MASKED_LOGIT))
        assert outputs.iou is not None
        return mask_logits, torch.where(valid, outputs.iou, torch.zeros_like(outputs.iou))

    def prompt_stages(self, features: torch.Tensor, boxes: torch.Tensor, kinds: torch.Tensor) -> StageOutputs:
        """Every supervised prompt output: each decoder stage's masks, then the prompt adapter's masks and IoU;
        padded slots are not blanked (training masks them out of the loss)."""
        height, width = features.shape[-2] * 4, features.shape[-1] * 4
        kernels = self.prompt_queries(boxes, kinds, height=height, width=width)
        num_prompts = kernels.shape[1]
        eye = torch.eye(num_prompts, dtype=features.dtype, device=features.device)
        attn_bias = (1 - eye) * MASKED_LOGIT
        pixels = PixelFeatures.of(features, self.pooling)
        class_logits, all_masks, _, kernels = self._decode(pixels, kernels, attn_bias)
        # Prompt adapter: cross-attention from each prompt to every pixel of F.
        kernels = self.prompt_norm(self.prompt_attn(kernels, pixels.pixels_first))
        iou = self.prompt_iou(kernels).squeeze(-1)  # (B, K)
        all_masks.append(pixels.masks(kernels))
        return StageOutputs(class_logits, [pixels.unflatten(m) for m in all_masks], iou, kernels)


def pixel_pooling(model: nn.Module, pooling: str) -> contextlib.AbstractContextManager[None]:
    """Every RapSAMHead of `model` pools with `pooling` (see `PixelFeatures`) inside the block only."""
    return switched(model, RapSAMHead, "pooling", pooling, POOLINGS)
