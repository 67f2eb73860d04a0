"""Training losses of RAP-SAM: Mask2Former's set criterion for object queries, one-to-one mask losses and
IoU regression for prompt queries.

All math runs in fp32 whatever the logits' dtype (mixed-precision logits saturate BCE and dice), and mask
terms are normalised by the number of target masks averaged over DDP ranks, so that every rank's gradient
has the same scale whatever its share of masks. Terms that have nothing to supervise return
`0 * logits.sum()` rather than a constant: DDP then still sees a gradient (of zeros) for every parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from rapsam.training.matcher import HungarianMatcher, Target, point_sample, sample_targets, uncertain_point_coords

__all__ = ["SetCriterion", "dice_loss", "mask_iou", "sigmoid_ce_loss"]


def sigmoid_ce_loss(logits: Tensor, targets: Tensor, num_masks: Tensor) -> Tensor:
    """Point-sampled BCE, (M, P) x (M, P): mean over points, summed over masks, / num_masks."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: Tensor) -> Tensor:
    """Point-sampled dice with +1 smoothing, (M, P) x (M, P), summed over masks, / num_masks."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


@torch.no_grad()
def mask_iou(logits: Tensor, targets: Tensor) -> Tensor:
    """IoU of (sigmoid(logits) > 0.5) against binary targets: (M, h, w) x (M, H, W) -> (M,) fp32.

    The logits are resized bilinearly to the targets' size, as inference upsamples them before
    thresholding. Two empty masks count as a perfect match (IoU 1).
    """
    logits = logits.float()
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits[:, None], size=targets.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    pred = logits > 0
    gt = targets.to(device=logits.device) > 0.5
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _global_count(count: int, device: torch.device) -> Tensor:
    """Number of masks averaged over ranks, >= 1: the shared normaliser of every mask term."""
    total = torch.tensor(float(count), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    return total.clamp(min=1.0)


def _zero(*tensors: Tensor) -> Tensor:
    """A zero that is still a function of `tensors` (see the module docstring)."""
    return sum(t.float().sum() for t in tensors) * 0.0


class SetCriterion:
    """RAP-SAM's loss: matched class/mask/dice for object queries at every decoder stage, one-to-one
    mask/dice + IoU regression for prompt queries. Returned dicts hold weighted terms: total = sum(values).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        iou_weight: float = 1.0,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        self.num_classes = num_classes
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.iou_weight = iou_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        # Matching uses the same weights as the loss (paper: 2 / 5 / 5), and as many points.
        self.matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)
        # Queries vastly outnumber objects: down-weighting "no object" keeps them from dominating the CE.
        self.class_weights = torch.ones(num_classes + 1)
        self.class_weights[-1] = no_object_weight

    # ------------------------------------------------------------------ object queries

    def panoptic(
        self, class_logits: Sequence[Tensor], mask_logits: Sequence[Tensor], targets: Sequence[Target]
    ) -> dict[str, Tensor]:
        """Per stage i: "s{i}.cls", "s{i}.mask", "s{i}.dice"; each stage is matched on its own."""
        if len(class_logits) != len(mask_logits):
            raise ValueError(f"{len(class_logits)} class stages but {len(mask_logits)} mask stages")
        if len(class_logits) == 0:
            return {}
        device = class_logits[0].device
        num_masks = _global_count(sum(len(t) for t in targets), device)
        losses: dict[str, Tensor] = {}
        for i, (cls, masks) in enumerate(zip(class_logits, mask_logits)):
            cls, masks = cls.float(), masks.float()
            indices = self.matcher(cls, masks, targets)
            losses[f"s{i}.cls"] = self.class_weight * self._class_loss(cls, targets, indices)
            bce, dice = self._matched_mask_losses(masks, targets, indices, num_masks)
            losses[f"s{i}.mask"] = self.mask_weight * bce
            losses[f"s{i}.dice"] = self.dice_weight * dice
        return losses

    def _class_loss(self, cls: Tensor, targets: Sequence[Target], indices: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Weighted CE over all queries; unmatched queries are trained towards "no object" (index C)."""
        classes = torch.full(cls.shape[:2], self.num_classes, dtype=torch.long, device=cls.device)
        for b, (target, (pred_idx, tgt_idx)) in enumerate(zip(targets, indices)):
            classes[b, pred_idx] = target.labels.to(cls.device, torch.long)[tgt_idx]
        weight = self.class_weights.to(cls.device)
        return F.cross_entropy(cls.transpose(1, 2), classes, weight=weight)

    def _matched_mask_losses(
        self, masks: Tensor, targets: Sequence[Target], indices: list[tuple[Tensor, Tensor]], num_masks: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch_idx = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(indices)])
        pred_idx = torch.cat([p for p, _ in indices])
        if pred_idx.numel() == 0:
            zero = _zero(masks)
            return zero, zero.clone()
        preds = masks[batch_idx, pred_idx]  # (M, h, w)
        coords = uncertain_point_coords(
            preds[:, None], self.num_points, self.oversample_ratio, self.importance_sample_ratio
        )
        # Targets may differ in resolution between images: sample each image's masks with its own points.
        point_targets, start = [], 0
        for target, (p, t) in zip(targets, indices):
            if p.numel():
                point_targets.append(
                    sample_targets(target.masks[t.to(target.masks.device)], coords[start : start + len(p)])
                )
                start += len(p)
        point_targets_t = torch.cat(point_targets)
        point_logits = point_sample(preds[:, None], coords).squeeze(1)
        return sigmoid_ce_loss(point_logits, point_targets_t, num_masks), dice_loss(
            point_logits, point_targets_t, num_masks
        )

    # ------------------------------------------------------------------ prompt queries

    def prompt(
        self, mask_logits: Sequence[Tensor], iou: Tensor, target_masks: Tensor, valid: Tensor
    ) -> dict[str, Tensor]:
        """Per stage i: "p{i}.mask", "p{i}.dice"; plus "p.iou" for the IoU head against the last stage.

        Prompt k is supervised by target_masks[:, k] directly (no matching); `valid` False = padding.
        """
        valid = valid.to(device=iou.device, dtype=torch.bool)
        num_masks = _global_count(int(valid.sum()), iou.device)
        targets = target_masks.to(iou.device)[valid]  # (M, H, W)
        losses: dict[str, Tensor] = {}
        for i, logits in enumerate(mask_logits):
            preds = logits.float()[valid]  # (M, h, w)
            if preds.shape[0] == 0:
                losses[f"p{i}.mask"] = _zero(logits)
                losses[f"p{i}.dice"] = _zero(logits)
                continue
            coords = uncertain_point_coords(
                preds[:, None], self.num_points, self.oversample_ratio, self.importance_sample_ratio
            )
            point_logits = point_sample(preds[:, None], coords).squeeze(1)
            point_targets = sample_targets(targets, coords)
            losses[f"p{i}.mask"] = self.mask_weight * sigmoid_ce_loss(point_logits, point_targets, num_masks)
            losses[f"p{i}.dice"] = self.dice_weight * dice_loss(point_logits, point_targets, num_masks)
        pred_iou = iou.float()[valid]
        if pred_iou.numel() == 0 or len(mask_logits) == 0:
            losses["p.iou"] = _zero(iou)
        else:
            actual = mask_iou(mask_logits[-1][valid], targets)
            # Sum / global count = a mean over all valid prompts of all ranks.
            losses["p.iou"] = self.iou_weight * F.mse_loss(pred_iou, actual, reduction="sum") / num_masks
        return losses
