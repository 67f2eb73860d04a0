"""Post-processing: panoptic merge, upsampling, prompt masks, query tracking, colours."""

import numpy as np
import pytest
import torch

from rapsam.postprocess import (
    PanopticThresholds,
    QueryTracker,
    Segment,
    colorize,
    default_palette,
    overlay,
    panoptic_merge,
    prompt_masks,
    semantic_map,
    upsample_mask_logits,
)

IS_THING = (True, True, False)  # 0 person, 1 car, 2 sky; column 3 is no-object
IN, OUT = 6.0, -6.0


def _box(rows: slice, cols: slice) -> torch.Tensor:
    m = torch.full((8, 8), OUT)
    m[rows, cols] = IN
    return m


def _cls(label: int, logit: float) -> torch.Tensor:
    c = torch.zeros(4)
    c[label] = logit
    return c


def _scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Seven queries on an 8x8 grid; class scores softmax(L at label, 0 elsewhere)."""
    queries = [
        (_box(slice(0, 4), slice(0, 4)), _cls(0, 6.0)),  # q0 person, 0.9926
        (_box(slice(3, 7), slice(3, 7)), _cls(0, 5.0)),  # q1 person, overlaps q0 at (3,3)
        (_box(slice(7, 8), slice(0, 8)), _cls(2, 4.0)),  # q2 sky, bottom row
        (_box(slice(0, 7), slice(7, 8)), _cls(2, 4.0)),  # q3 sky, right column -> merged with q2
        (_box(slice(0, 2), slice(4, 7)), _cls(1, 1.0)),  # q4 car, score 0.475 -> dropped
        (_box(slice(5, 7), slice(0, 2)), _cls(3, 6.0)),  # q5 no-object -> dropped
        (_box(slice(0, 5), slice(0, 2)), _cls(1, 4.5)),  # q6 car, mostly under q0: 2/10 visible
    ]
    return torch.stack([m for m, _ in queries]), torch.stack([c for _, c in queries])


def _expected_map() -> np.ndarray:
    expected = np.zeros((8, 8), np.int32)
    expected[3:7, 3:7] = 2
    expected[0:4, 0:4] = 1  # q0 wins the overlap pixel (3,3)
    expected[7, :] = 3
    expected[0:7, 7] = 3
    return expected


def _score(logit: float) -> float:
    return float(np.exp(logit) / (np.exp(logit) + 3.0))


def test_panoptic_merge_scene() -> None:
    masks, classes = _scene()
    result = panoptic_merge(masks, classes, is_thing=IS_THING)
    assert result.segment_map.dtype == np.int32
    np.testing.assert_array_equal(result.segment_map, _expected_map())
    assert [(s.id, s.class_id, s.is_thing, s.area, s.queries) for s in result.segments] == [
        (1, 0, True, 16, (0,)),
        (2, 0, True, 15, (1,)),
        (3, 2, False, 15, (2, 3)),  # the two sky queries merge into one stuff segment
    ]
    scores = [s.score for s in result.segments]
    np.testing.assert_allclose(scores, [_score(6), _score(5), _score(4)], rtol=1e-6)


def test_overlap_ratio_is_inclusive() -> None:
    """q6 wins 2 of its 10 pixels: kept at overlap 0.2 (>=), dropped above."""
    masks, classes = _scene()
    result = panoptic_merge(masks, classes, is_thing=IS_THING, overlap_threshold=0.2)
    expected = _expected_map()
    expected[4, 0:2] = 4
    np.testing.assert_array_equal(result.segment_map, expected)
    assert result.segments[-1] == Segment(4, 1, pytest.approx(_score(4.5)), True, 2, (6,))
    dropped = panoptic_merge(masks, classes, is_thing=IS_THING, overlap_threshold=0.21)
    np.testing.assert_array_equal(dropped.segment_map, _expected_map())


def test_score_threshold_is_strict() -> None:
    masks, classes = _scene()
    sky_score = float(torch.softmax(classes[2], -1).max())  # q2 and q3 score exactly this
    result = panoptic_merge(masks, classes, is_thing=IS_THING, object_mask_threshold=sky_score)
    assert [s.class_id for s in result.segments] == [0, 0]  # sky (== threshold) is gone
    expected = _expected_map()
    expected[expected == 3] = 0
    np.testing.assert_array_equal(result.segment_map, expected)
    below = float(np.nextafter(np.float32(sky_score), np.float32(0)))
    kept = panoptic_merge(masks, classes, is_thing=IS_THING, object_mask_threshold=below)
    np.testing.assert_array_equal(kept.segment_map, _expected_map())


def test_thresholds_dataclass_and_empty_result() -> None:
    masks, classes = _scene()
    th = PanopticThresholds()
    assert (th.object_mask_threshold, th.overlap_threshold) == (0.8, 0.8)
    result = panoptic_merge(masks, classes, is_thing=IS_THING, object_mask_threshold=0.999)
    assert result.segments == () and not result.segment_map.any()
    with pytest.raises(ValueError):
        panoptic_merge(masks, classes, is_thing=(True, False))


def test_semantic_map_colorize_overlay() -> None:
    masks, classes = _scene()
    result = panoptic_merge(masks, classes, is_thing=IS_THING)
    sem = semantic_map(result.segment_map, result.segments)
    assert sem[0, 0] == 0 and sem[7, 0] == 2 and sem[0, 4] == -1

    palette = default_palette(3, seed=0)
    assert palette.dtype == np.uint8 and palette.shape == (3, 3) and palette.min() >= 40
    np.testing.assert_array_equal(palette, default_palette(3, seed=0))
    assert not np.array_equal(palette, default_palette(3, seed=1))

    colour = colorize(result.segment_map, result.segments, palette)
    assert colour.shape == (8, 8, 3) and colour.dtype == np.uint8
    np.testing.assert_array_equal(colour[5, 5], palette[0])
    np.testing.assert_array_equal(colour[7, 3], palette[2])
    np.testing.assert_array_equal(colour[0, 5], [0, 0, 0])

    image = np.full((8, 8, 3), 100, np.uint8)
    blended = overlay(image, colour, alpha=0.5)
    assert blended.shape == (8, 8, 3) and blended.dtype == np.uint8
    np.testing.assert_array_equal(blended[5, 5], np.rint(50 + 0.5 * palette[0].astype(float)))
    kept = overlay(image, colour, 0.5, where=result.segment_map > 0)
    np.testing.assert_array_equal(kept[0, 5], [100, 100, 100])
    np.testing.assert_array_equal(kept[5, 5], blended[5, 5])


def test_upsample_crops_valid_region() -> None:
    """Same-size first step is exact, so the output is the valid window, then a 2x ramp."""
    ramp = torch.arange(8.0).expand(8, 8).clone()
    ramp[4:, :] = 100.0  # padding rows
    ramp[:, 6:] = 100.0  # padding cols
    logits = ramp[None]  # (1, 8, 8)
    cropped = upsample_mask_logits(logits, input_size=(8, 8), valid_size=(4, 6), image_size=(4, 6))
    torch.testing.assert_close(cropped, ramp[None, :4, :6])

    up = upsample_mask_logits(logits, input_size=(8, 8), valid_size=(4, 6), image_size=(8, 12))
    assert up.shape == (1, 8, 12)
    expected_row = torch.clamp(0.5 * torch.arange(12.0) - 0.25, 0.0, 5.0)  # align_corners=False
    torch.testing.assert_close(up[0], expected_row.expand(8, 12))


def test_upsample_realistic_geometry() -> None:
    """A 200x100 (WxH) image resized to 64x32 and padded to 64x64; mask = left half of the image."""
    low = torch.full((2, 16, 16), -5.0)  # stride 4 of the 64x64 input
    low[0, :8, :8] = 5.0  # left half of the valid (top 8 rows) region
    low[0, 8:, :] = 5.0  # padding that must not leak in
    up = upsample_mask_logits(low, input_size=(64, 64), valid_size=(32, 64), image_size=(100, 200))
    assert up.shape == (2, 100, 200)
    mask = (up[0] > 0).numpy()
    assert mask[:95, :95].all() and not mask[:, 105:].any()
    assert not (up[1] > 0).any()
    with pytest.raises(ValueError):
        upsample_mask_logits(low, input_size=(64, 64), valid_size=(65, 64), image_size=(10, 10))


def test_prompt_masks_drop_padding() -> None:
    logits = torch.full((4, 4, 4), -3.0)
    logits[0, :2, :2] = 3.0
    logits[2, :, :] = 3.0
    iou = torch.tensor([0.9, 0.1, 0.7, 0.3])
    valid = torch.tensor([True, False, True, False])
    result = prompt_masks(
        logits, iou, valid=valid, input_size=(16, 16), valid_size=(16, 16), image_size=(16, 16)
    )
    np.testing.assert_array_equal(result.index, [0, 2])
    assert result.index.dtype == np.int64
    np.testing.assert_allclose(result.iou, [0.9, 0.7], rtol=1e-6)
    assert result.iou.dtype == np.float32
    assert result.masks.shape == (2, 16, 16) and result.masks.dtype == bool
    assert result.masks[0, :7, :7].all() and not result.masks[0, 9:, :].any()
    assert result.masks[1].all()

    none = prompt_masks(
        logits, iou, valid=torch.zeros(4, dtype=torch.bool),
        input_size=(16, 16), valid_size=(16, 16), image_size=(16, 16),
    )
    assert none.masks.shape == (0, 16, 16) and none.iou.shape == (0,) and none.index.shape == (0,)


def _embeddings(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_tracker_permutation_keeps_ids() -> None:
    tracker = QueryTracker()
    q = _embeddings(5)
    alive = torch.tensor([True, True, False, True, True])
    ids0 = tracker.update(q, alive)
    assert ids0.dtype == np.int64
    np.testing.assert_array_equal(ids0, [0, 1, -1, 2, 3])

    perm = torch.tensor([3, 0, 4, 2, 1])
    ids1 = tracker.update(q[perm] + 0.01 * _embeddings(5, seed=1), alive[perm])
    np.testing.assert_array_equal(ids1, ids0[perm.numpy()])


def test_tracker_new_and_reborn_queries_get_new_ids() -> None:
    tracker = QueryTracker()
    q = _embeddings(4)
    np.testing.assert_array_equal(tracker.update(q, torch.tensor([True, True, False, False])), [0, 1, -1, -1])
    # query 2 comes alive: new id
    np.testing.assert_array_equal(tracker.update(q, torch.tensor([True, True, True, False])), [0, 1, 2, -1])
    # query 1 dies
    np.testing.assert_array_equal(tracker.update(q, torch.tensor([True, False, True, False])), [0, -1, 2, -1])
    # query 1 returns with a different embedding: new id, 1 is never reused
    q2 = q.clone()
    q2[1] = _embeddings(1, seed=7)[0]
    ids = tracker.update(q2, torch.tensor([True, True, True, True]))
    np.testing.assert_array_equal(ids, [0, 3, 2, 4])  # new ids in query order: slot 1, then 3

    tracker.reset()
    np.testing.assert_array_equal(tracker.update(q, torch.ones(4, dtype=torch.bool)), [0, 1, 2, 3])
