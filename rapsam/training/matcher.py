"""Hungarian matching of object queries to ground-truth masks (Mask2Former's `HungarianMatcher`).

Costs are computed on a set of random points rather than on full masks: it is what Mask2Former and the
RAP-SAM paper train with, it keeps memory at O(Q * N * P) instead of O(Q * N * H * W), and it makes the
target resolution irrelevant (targets are typically at the input resolution, logits at stride 4; video
"tube" targets stack the T frames along the height axis and need nothing special).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["HungarianMatcher", "Target", "point_sample", "sample_targets", "uncertain_point_coords"]


@dataclass
class Target:
    """Ground truth of one image (or one clip, masks stacked along height).

    `masks` may have any resolution as long as it covers the same field of view as the logits: everything
    reads it through normalised point coordinates.
    """

    labels: Tensor  # (N,) int64 class ids in [0, C)
    masks: Tensor  # (N, H, W) bool or float in [0, 1]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def point_sample(input: Tensor, coords: Tensor, align_corners: bool = False) -> Tensor:
    """Bilinear values of `input` (N, C, H, W) at `coords` (N, P, 2), xy in [0, 1] -> (N, C, P).

    detectron2's convention: [0, 1] spans the whole image (pixel edges with align_corners=False), so the
    same coordinates address a mask at stride 4 and at full resolution.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(input.dtype)  # (N, P, 1, 2)
    return F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners).squeeze(3)


@torch.no_grad()
def uncertain_point_coords(
    logits: Tensor, num_points: int, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75
) -> Tensor:
    """PointRend's training sampler: (N, 1, H, W) logits -> (N, P, 2) xy in [0, 1].

    A share of the points goes where the prediction is least certain (|logit| small, i.e. at its
    boundaries), where the loss carries information; the rest stay uniform so that confident but wrong
    regions still get gradient.
    """
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits.float(), coords).abs().squeeze(1)  # (N, num_sampled)
    num_uncertain = min(int(importance_sample_ratio * num_points), num_sampled)
    num_random = num_points - num_uncertain
    index = uncertainty.topk(num_uncertain, dim=1).indices  # (N, num_uncertain)
    coords = coords.gather(1, index.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat((coords, torch.rand(n, num_random, 2, device=logits.device)), dim=1)
    return coords


def sample_targets(masks: Tensor, coords: Tensor) -> Tensor:
    """Target masks (N, H, W) at points (N, P, 2) -> (N, P) float32 (soft at boundaries, as Mask2Former)."""
    return point_sample(masks[:, None].to(device=coords.device, dtype=torch.float32), coords).squeeze(1)


def batch_sigmoid_ce(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise mean sigmoid BCE, (Q, P) x (N, P) -> (Q, N), without materialising (Q, N, P)."""
    p = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / p


def batch_dice(inputs: Tensor, targets: Tensor) -> Tensor:
    """Pairwise dice loss with +1 smoothing, (Q, P) x (N, P) -> (Q, N)."""
    probs = inputs.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """One-to-one assignment of queries to targets minimising a weighted class + mask + dice cost.

    Returns, per image, (pred_idx, tgt_idx) int64 tensors on the logits' device, sorted by pred_idx;
    an image without targets gives two empty tensors.
    """

    def __init__(
        self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ) -> None:
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def __call__(
        self, class_logits: Tensor, mask_logits: Tensor, targets: Sequence[Target]
    ) -> list[tuple[Tensor, Tensor]]:
        if len(targets) != class_logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {class_logits.shape[0]}")
        return [self._match_one(class_logits[b], mask_logits[b], t) for b, t in enumerate(targets)]

    def _match_one(self, class_logits: Tensor, mask_logits: Tensor, target: Target) -> tuple[Tensor, Tensor]:
        device = class_logits.device
        if len(target) == 0:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return empty, empty.clone()
        labels = target.labels.to(device=device, dtype=torch.long)
        # The class cost drops the constant of -log p: the probability itself is better behaved in the sum.
        cost_class = -class_logits.float().softmax(-1)[:, labels]  # (Q, N)

        # Same points for every prediction and every target, so the pairwise costs compare like with like.
        coords = torch.rand(1, self.num_points, 2, device=device)
        preds = point_sample(mask_logits[:, None].float(), coords.expand(mask_logits.shape[0], -1, -1)).squeeze(1)
        masks = sample_targets(target.masks, coords.expand(len(target), -1, -1))
        cost = (
            self.cost_class * cost_class
            + self.cost_mask * batch_sigmoid_ce(preds, masks)
            + self.cost_dice * batch_dice(preds, masks)
        )
        # A non-finite cost (overflowed logits) would make scipy raise; treat it as "never pick this pair".
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8).cpu()
        pred_idx, tgt_idx = linear_sum_assignment(cost.numpy())
        return (
            torch.as_tensor(pred_idx, dtype=torch.long, device=device),
            torch.as_tensor(tgt_idx, dtype=torch.long, device=device),
        )
