from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from rapsam.training import HungarianMatcher, SetCriterion, Target, point_sample, uncertain_point_coords
from rapsam.training.losses import mask_iou

C = 5  # classes; index C is "no object"
BIG = 20.0


def blocks(n: int, size: int) -> torch.Tensor:
    """n (<= 4) distinct boolean rectangles (n, size, size) on a size/16 grid, clear of the image border.

    Clear of the border because point sampling pads with zeros (as detectron2): a positive mask touching
    the border reads ~0.5 there, a floor that would hide what the "perfect prediction" tests check.
    """
    u = size // 16
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        masks[i, 2 * u : (6 + 2 * i) * u, (2 + 3 * i) * u : (5 + 3 * i) * u] = True
    return masks


def sharp_predictions(target: Target, num_queries: int, perm: torch.Tensor, size: int):
    """Logits where query perm[j] predicts target j perfectly (at `size`, typically 1/4 of the target)."""
    masks = target.masks.float()
    if len(target):
        masks = F.interpolate(masks[None], size=(size, size), mode="nearest")[0]
    cls = torch.full((num_queries, C + 1), -BIG)
    cls[:, C] = BIG
    mask = torch.full((num_queries, size, size), -BIG)
    for j, q in enumerate(perm.tolist()):
        cls[q] = -BIG
        cls[q, target.labels[j]] = BIG
        mask[q] = BIG * (2 * masks[j] - 1)
    return cls, mask


def test_point_sample_is_bilinear_interpolation() -> None:
    grid = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])  # H=2, W=3; pixel centres at ((j+.5)/3, (i+.5)/2)
    coords = torch.tensor([[[0.5 / 3, 0.25], [0.5, 0.5], [1.0 / 3, 0.25], [2.5 / 3, 0.75], [0.4, 0.6]]])
    out = point_sample(grid[None, None], coords)
    assert out.shape == (1, 1, 5)

    def by_hand(x: float, y: float) -> float:
        px, py = x * 3 - 0.5, y * 2 - 0.5  # continuous pixel index
        x0, y0 = int(torch.tensor(px).floor()), int(torch.tensor(py).floor())
        fx, fy = px - x0, py - y0
        value = 0.0
        for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
            for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                if 0 <= yy < 2 and 0 <= xx < 3:
                    value += wy * wx * float(grid[yy, xx])
        return value

    expected = torch.tensor([by_hand(float(x), float(y)) for x, y in coords[0]])
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[0, 0, :4], torch.tensor([0.0, 2.5, 0.5, 5.0]))


def test_uncertain_points_favour_boundaries() -> None:
    # A ramp crossing zero at x = 0.5: the least certain points are those closest to that line.
    x = (torch.arange(32) + 0.5) / 32
    logits = (BIG * (x - 0.5)).expand(2, 1, 32, 32)
    coords = uncertain_point_coords(logits, 200, 3.0, 0.75)
    assert coords.shape == (2, 200, 2) and coords.min() >= 0 and coords.max() <= 1
    distance = (coords[..., 0] - 0.5).abs()
    # The importance-sampled share is the ~1/4 of 600 uniform points with |x - .5| < ~.13 (plus a few at the
    # image edge, where zero padding pulls the logits towards 0, as in detectron2).
    assert (distance[:, :150] < 0.15).float().mean() > 0.9
    assert distance[:, 150:].max() > 0.3  # the random share covers the whole image


def test_matcher_recovers_permutation_and_ignores_target_order() -> None:
    size, q = 16, 10
    target = Target(labels=torch.tensor([1, 3, 0, 4]), masks=blocks(4, 4 * size))
    perm = torch.tensor([7, 2, 9, 4])
    cls, mask = sharp_predictions(target, q, perm, size)
    matcher = HungarianMatcher(num_points=500)
    [(pred_idx, tgt_idx)] = matcher(cls[None], mask[None], [target])
    assert pred_idx.dtype == tgt_idx.dtype == torch.long
    assert dict(zip(tgt_idx.tolist(), pred_idx.tolist())) == {j: int(perm[j]) for j in range(4)}

    order = torch.tensor([2, 0, 3, 1])
    shuffled = Target(labels=target.labels[order], masks=target.masks[order])
    [(pred2, tgt2)] = matcher(cls[None], mask[None], [shuffled])
    assert dict(zip(tgt2.tolist(), pred2.tolist())) == {j: int(perm[order[j]]) for j in range(4)}


def test_matcher_batch_with_empty_image_and_mixed_resolutions() -> None:
    size, q = 16, 6
    full = Target(labels=torch.tensor([2, 1]), masks=blocks(2, 4 * size))
    half = Target(labels=torch.tensor([2, 1]), masks=blocks(2, 2 * size).float())  # another resolution
    empty = Target(labels=torch.zeros(0, dtype=torch.long), masks=torch.zeros(0, 64, 64, dtype=torch.bool))
    cls0, mask0 = sharp_predictions(full, q, torch.tensor([3, 0]), size)
    cls2, mask2 = sharp_predictions(half, q, torch.tensor([1, 5]), size)
    cls = torch.stack((cls0, torch.randn(q, C + 1), cls2))
    mask = torch.stack((mask0, torch.randn(q, size, size), mask2))
    out = HungarianMatcher(num_points=300)(cls, mask, [full, empty, half])
    assert [p.tolist() for p, _ in out] == [[0, 3], [], [1, 5]]
    assert [t.tolist() for _, t in out] == [[1, 0], [], [0, 1]]


def make_batch(num_queries: int = 8, size: int = 16, stages: int = 2):
    """Two images with targets (perfect logits) and one without; per-stage copies of the logits."""
    t0 = Target(labels=torch.tensor([1, 3, 0]), masks=blocks(3, 4 * size))
    t1 = Target(labels=torch.tensor([4]), masks=blocks(1, 4 * size))
    t2 = Target(labels=torch.zeros(0, dtype=torch.long), masks=torch.zeros(0, 4 * size, 4 * size, dtype=torch.bool))
    c0, m0 = sharp_predictions(t0, num_queries, torch.tensor([5, 1, 2]), size)
    c1, m1 = sharp_predictions(t1, num_queries, torch.tensor([0]), size)
    c2, m2 = sharp_predictions(t2, num_queries, torch.tensor([], dtype=torch.long), size)
    cls, mask = torch.stack((c0, c1, c2)), torch.stack((m0, m1, m2))
    return [cls.clone() for _ in range(stages)], [mask.clone() for _ in range(stages)], [t0, t1, t2]


def test_perfect_predictions_give_small_loss_and_wrong_ones_large() -> None:
    crit = SetCriterion(C, num_points=1000)
    cls, mask, targets = make_batch(stages=3)
    perfect = crit.panoptic(cls, mask, targets)
    assert set(perfect) == {f"s{i}.{k}" for i in range(3) for k in ("cls", "mask", "dice")}
    for i in range(3):
        assert perfect[f"s{i}.cls"] < 1e-6
        # Bilinear point sampling leaves a floor at mask boundaries (soft targets, interpolated logits).
        assert perfect[f"s{i}.mask"] < 0.6 and perfect[f"s{i}.dice"] < 0.6

    # Wrong classes and complemented masks: no assignment can rescue these (a mere query shuffle would be
    # undone by the matcher).
    wrong = crit.panoptic([c.roll(1, dims=-1) for c in cls], [-m for m in mask], targets)
    for key in perfect:
        assert wrong[key] > 4 * perfect[key] + 1.0, key  # dice saturates at 1 per mask (x5)


def test_class_loss_weights_no_object() -> None:
    crit = SetCriterion(C, num_points=64)
    targets = [Target(torch.tensor([2, 0]), blocks(2, 32)), Target(torch.tensor([4]), blocks(1, 32))]
    indices = [(torch.tensor([1, 3]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    crit.matcher = lambda *_: indices  # fixed assignment: isolate the class term from matching
    cls = torch.randn(2, 4, C + 1)
    losses = crit.panoptic([cls], [torch.randn(2, 4, 8, 8)], targets)
    labels = torch.full((2, 4), C)
    labels[0, 1], labels[0, 3], labels[1, 2] = 0, 2, 4
    weight = torch.ones(C + 1)
    weight[C] = 0.1
    expected = F.cross_entropy(cls.reshape(-1, C + 1), labels.reshape(-1), weight=weight)
    torch.testing.assert_close(losses["s0.cls"], 2.0 * expected)
    assert not torch.allclose(expected, F.cross_entropy(cls.reshape(-1, C + 1), labels.reshape(-1)))


def test_gradients_reach_every_logit_tensor_even_without_targets() -> None:
    crit = SetCriterion(C, num_points=200)
    cls, mask, targets = make_batch(stages=2)
    cls = [torch.randn_like(c, requires_grad=True) for c in cls]
    mask = [torch.randn_like(m, requires_grad=True) for m in mask]
    sum(crit.panoptic(cls, mask, targets).values()).backward()
    for t in cls + mask:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0

    # A batch with no target at all: mask terms are zero yet still in the graph.
    empty = [Target(torch.zeros(0, dtype=torch.long), torch.zeros(0, 32, 32))]
    c = torch.randn(1, 4, C + 1, requires_grad=True)
    m = torch.randn(1, 4, 8, 8, requires_grad=True)
    losses = crit.panoptic([c], [m], empty)
    assert losses["s0.mask"] == 0 and losses["s0.dice"] == 0 and losses["s0.cls"] > 0
    sum(losses.values()).backward()
    assert m.grad is not None and (m.grad == 0).all()
    assert c.grad is not None and c.grad[..., C].lt(0).all()  # pushed towards "no object"


def test_low_precision_logits_and_tube_targets() -> None:
    crit = SetCriterion(C, num_points=200)
    t, size = 3, 8
    tube = Target(torch.tensor([1, 2]), torch.cat([blocks(2, 4 * size)] * t, dim=1))  # (N, T*H, W)
    cls = torch.randn(1, 4, C + 1, dtype=torch.bfloat16, requires_grad=True)
    mask = torch.randn(1, 4, t * size, size, dtype=torch.bfloat16, requires_grad=True)
    losses = crit.panoptic([cls], [mask], [tube])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert mask.grad is not None and mask.grad.dtype == torch.bfloat16


def prompt_batch(size: int = 16):
    masks = torch.zeros(2, 3, size, size, dtype=torch.bool)
    masks[0, 0, :8, :8] = True
    masks[0, 1, 4:, 2:10] = True
    masks[1, 0, 8:, :] = True
    masks[1, 2, :, :3] = True
    valid = torch.tensor([[True, True, False], [True, False, True]])
    logits = [torch.randn(2, 3, size, size, requires_grad=True) for _ in range(2)]
    return logits, torch.rand(2, 3, requires_grad=True), masks, valid


def test_prompt_loss_ignores_invalid_prompts() -> None:
    crit = SetCriterion(C, num_points=100)
    logits, iou, masks, valid = prompt_batch()
    torch.manual_seed(1)
    before = crit.prompt(logits, iou, masks, valid)
    assert set(before) == {"p0.mask", "p0.dice", "p1.mask", "p1.dice", "p.iou"}
    changed = [lg.detach().clone() for lg in logits]
    iou2 = iou.detach().clone()
    for lg in changed:
        lg[~valid] = torch.randn(int((~valid).sum()), 16, 16) * 50
    iou2[~valid] = 7.0
    torch.manual_seed(1)
    after = crit.prompt(changed, iou2, masks, valid)
    for key in before:
        torch.testing.assert_close(before[key], after[key])
    sum(before.values()).backward()
    for lg in logits:
        assert lg.grad[~valid].abs().sum() == 0 and lg.grad[valid].abs().sum() > 0
    assert iou.grad[~valid].abs().sum() == 0


def test_prompt_iou_target_is_actual_iou() -> None:
    crit = SetCriterion(C, num_points=100)
    logits, _, masks, valid = prompt_batch()
    final = logits[-1].detach()
    pred, gt = final[valid] > 0, masks[valid]
    actual = (pred & gt).flatten(1).sum(1).float() / (pred | gt).flatten(1).sum(1).float()
    torch.testing.assert_close(mask_iou(final[valid], gt), actual)

    iou = torch.zeros(2, 3)
    iou[valid] = actual
    assert crit.prompt(logits, iou, masks, valid)["p.iou"] < 1e-10
    loss = crit.prompt(logits, torch.zeros(2, 3), masks, valid)["p.iou"]
    torch.testing.assert_close(loss, (actual**2).mean())

    # Logits at stride 4 of the targets are upsampled before thresholding: a perfect low-res mask scores 1.
    gt = masks[1, 0]  # bottom half: an edge that bilinear upsampling + threshold reproduces exactly
    low = (F.avg_pool2d(gt[None].float(), 4) * 2 - 1) * BIG
    assert low.shape == (1, 4, 4) and mask_iou(low, gt[None]).item() == 1.0


def test_prompt_without_valid_prompts_is_zero_but_connected() -> None:
    crit = SetCriterion(C, num_points=50)
    logits, iou, masks, _ = prompt_batch()
    losses = crit.prompt(logits, iou, masks, torch.zeros(2, 3, dtype=torch.bool))
    assert all(v == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(lg.grad is not None for lg in logits) and iou.grad is not None


def test_optimisation_reduces_loss() -> None:
    crit = SetCriterion(C, num_points=256)
    targets = [Target(torch.tensor([1, 3]), blocks(2, 32)), Target(torch.tensor([2]), blocks(1, 32))]
    cls = torch.zeros(2, 6, C + 1, requires_grad=True)
    mask = (0.1 * torch.randn(2, 6, 8, 8)).requires_grad_()
    opt = torch.optim.Adam([cls, mask], lr=0.2)

    def total() -> torch.Tensor:
        return sum(crit.panoptic([cls, cls * 1.0], [mask, mask * 1.0], targets).values())

    torch.manual_seed(3)
    start = total().item()
    for _ in range(30):
        opt.zero_grad()
        total().backward()
        opt.step()
    torch.manual_seed(3)
    assert total().item() < 0.5 * start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_num_masks_is_all_reduced_under_distributed() -> None:
    if not dist.is_available():
        pytest.skip("torch.distributed not built")
    crit = SetCriterion(C, num_points=100)
    logits, iou, masks, valid = prompt_batch()
    torch.manual_seed(5)
    local = crit.prompt(logits, iou, masks, valid)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(5)
        reduced = crit.prompt(logits, iou, masks, valid)
    finally:
        dist.destroy_process_group()
    for key in local:  # one rank: the average over ranks is the local count
        torch.testing.assert_close(local[key], reduced[key])
