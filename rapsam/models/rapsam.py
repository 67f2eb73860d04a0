"""The assembled RAP-SAM: backbone -> lite neck -> shared decoder with two adapters.

Attribute names (`backbone`, `neck`, `panoptic_head`) are the official detector's, so its state dict
maps onto ours key for key. `encode`, `panoptic_logits`, `prompt_logits` and `segment_logits` are the
tensor-level bodies of the export contract's entry points (see rapsam/export.py).
"""

from __future__ import annotations

import torch
from torch import nn

from rapsam.config import RapSAMConfig
from rapsam.inference import ImageAPI
from rapsam.models.backbones import build_backbone
from rapsam.models.head import RapSAMHead
from rapsam.models.neck import YOSONeck


def random_class_embed(config: RapSAMConfig) -> torch.Tensor:
    """Unit text-embedding stand-ins (E, C+1, P) as the official head makes without a classifier file:
    orthogonal class rows, and a zero no-object column."""
    num_classes = config.taxonomy.num_classes
    embed = torch.empty(num_classes, config.class_embed_dim)
    nn.init.orthogonal_(embed)
    embed = nn.functional.normalize(embed, dim=-1)
    prototypes = embed[:, None, :].expand(-1, config.class_prototypes, -1)  # (C, P, E)
    background = torch.zeros(1, config.class_prototypes, config.class_embed_dim)
    return torch.cat([prototypes, background]).permute(2, 0, 1).contiguous()


class RapSAM(ImageAPI, nn.Module):
    """Tensor-level entry points here; `segment`, `prompt` and `track` on images come from ImageAPI."""

    def __init__(self, config: RapSAMConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        self.neck = YOSONeck(
            feature_info=self.backbone.feature_info,
            agg_dim=config.agg_dim,
            hidden_dim=config.hidden_dim,
            deformable=config.deformable,
        )
        self.panoptic_head = RapSAMHead(
            num_classes=config.taxonomy.num_classes,
            num_queries=config.num_queries,
            channels=config.hidden_dim,
            num_stages=config.num_stages,
            num_heads=config.num_heads,
            ffn_channels=config.ffn_channels,
            temperature=config.temperature,
            class_embed=random_class_embed(config) if config.classifier == "open_vocab" else None,
            clicks_as_boxes=config.click_embedding == "box",
        )
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1), persistent=False)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) RGB 0..255 -> features F (B, d, H/4, W/4)."""
        if self.config.channel_order == "BGR":
            image = image.flip(1)
        x = (image - self.pixel_mean) / self.pixel_std
        return self.neck(self.backbone(x))

    def panoptic_logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> mask logits (B, N, H/4, W/4), class logits (B, N, C+1), queries (B, N, d)."""
        return self.panoptic_head.panoptic(features)

    def prompt_logits(
        self, features: torch.Tensor, boxes: torch.Tensor, kinds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """boxes (B, K, 4) pixel xyxy on the model input, kinds (B, K) -> mask logits (B, K, H/4, W/4), IoU (B, K)."""
        return self.panoptic_head.prompt(features, boxes, kinds)

    def segment_logits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.panoptic_logits(self.encode(image))
