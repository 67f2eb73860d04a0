"""The Python API on images: validation, letterboxing, prompts, panoptic results and tracking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rapsam.config import get_config
from rapsam.inference import letterbox, prompts_to_boxes
from rapsam.models.head import BOX, POINT, normalize_boxes
from rapsam.models.rapsam import RapSAM
from rapsam.postprocess import PanopticThresholds
from rapsam.taxonomy import Taxonomy

KEEP_ALL = PanopticThresholds(object_mask_threshold=0.0, overlap_threshold=0.0)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return data.coffee()[::4, ::4]  # 100x150 real photo


def test_letterbox_geometry_and_padding() -> None:
    image = np.full((50, 70, 3), 200, np.uint8)
    x, box = letterbox(image, (64, 64), pad_value=(1.0, 2.0, 3.0))
    assert x.shape == (1, 3, 64, 64)
    assert box.valid_size == (46, 64) and box.image_size == (50, 70)
    assert float(x[0, 0, :46].min()) == pytest.approx(200.0)
    assert x[0, :, 46:, :].mean(dim=(1, 2)).tolist() == [1.0, 2.0, 3.0]


def test_prompts_become_model_input_boxes() -> None:
    _, box = letterbox(np.zeros((50, 100, 3), np.uint8), (64, 128), pad_value=(0, 0, 0))
    boxes, kinds = prompts_to_boxes([(10, 20)], [(0, 0, 50, 25)], box)
    scale = 64 / 50
    assert boxes[0, 0].tolist() == pytest.approx([10 * scale - 3, 20 * scale - 3, 10 * scale + 3, 20 * scale + 3])
    assert boxes[0, 1].tolist() == pytest.approx([0, 0, 50 * scale, 25 * scale])
    assert kinds.tolist() == [[POINT, BOX]]


def test_letterboxed_prompts_are_normalized_by_the_image_as_the_official_head_does() -> None:
    """The official head divides prompts by the unpadded image (`img_shape`); a click is +-3 pixels there."""
    _, box = letterbox(np.zeros((300, 400, 3), np.uint8), (128, 128), pad_value=(0, 0, 0))
    assert box.valid_size == (96, 128)  # 32 rows of padding below the image
    boxes, _ = prompts_to_boxes([(200, 150)], [(40, 30, 120, 270)], box)
    ours = normalize_boxes(boxes, height=128, width=128)
    resized = 96 / 300  # image -> model input
    official = torch.tensor([
        [200 * resized - 3, 150 * resized - 3, 200 * resized + 3, 150 * resized + 3],
        [40 * resized, 30 * resized, 120 * resized, 270 * resized],
    ]) / torch.tensor([128, 96, 128, 96])  # img_shape (h, w) = (96, 128)
    torch.testing.assert_close(ours[0], normalize_boxes(official * 100, height=100, width=100))


@pytest.mark.parametrize(
    ("points", "boxes", "message"),
    [
        ([(200, 5)], [], "outside"),
        ([], [(10, 10, 5, 20)], "empty or outside"),
        ([], [(0, 0, 10, 60)], "empty or outside"),
        ([], [], "at least one"),
    ],
)
def test_bad_prompts_are_refused(tiny_model, points, boxes, message) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model.prompt(np.zeros((50, 100, 3), np.uint8), points=points, boxes=boxes)


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((32, 32), np.uint8), ValueError, "HxWx3"),
        (np.zeros((32, 32, 4), np.uint8), ValueError, "HxWx3"),
        (np.zeros((32, 32, 3), np.float32), ValueError, "uint8"),
        ([[1, 2, 3]], TypeError, "numpy HxWx3 uint8 array or a PIL image"),
    ],
)
def test_bad_images_are_refused(tiny_model, image, error, message) -> None:
    with pytest.raises(error, match=message):
        tiny_model.segment(image)


def test_bad_input_size_is_refused(tiny_model) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_model.segment(np.zeros((32, 32, 3), np.uint8), input_size=(60, 64))


def test_segment_photo_gives_a_consistent_panoptic_map(tiny_model, photo) -> None:
    result = tiny_model.segment(photo, thresholds=KEEP_ALL)
    assert result.segment_map.shape == photo.shape[:2]
    assert len(result.segments) > 0
    for segment in result.segments:
        assert int((result.segment_map == segment.id).sum()) == segment.area
        assert segment.is_thing == tiny_model.config.taxonomy.is_thing[segment.class_id]
    assert set(np.unique(result.segment_map)) <= {0} | {s.id for s in result.segments}


def test_pil_and_numpy_give_the_same_result(tiny_model, photo) -> None:
    from PIL import Image

    a = tiny_model.segment(photo, thresholds=KEEP_ALL)
    b = tiny_model.segment(Image.fromarray(photo), thresholds=KEEP_ALL)
    np.testing.assert_array_equal(a.segment_map, b.segment_map)


def test_prompt_photo_gives_one_mask_per_prompt(tiny_model, photo) -> None:
    result = tiny_model.prompt(photo, points=[(75, 50), (10, 10)], boxes=[(20, 20, 120, 90)])
    assert result.masks.shape == (3, *photo.shape[:2]) and result.masks.dtype == bool
    assert result.iou.shape == (3,) and result.index.tolist() == [0, 1, 2]
    # the same prompt alone gives the same mask: prompts never see each other
    alone = tiny_model.prompt(photo, boxes=[(20, 20, 120, 90)])
    np.testing.assert_array_equal(alone.masks[0], result.masks[2])
    assert alone.iou[0] == pytest.approx(result.iou[2], abs=1e-5)


def test_track_keeps_ids_over_repeated_frames(photo) -> None:
    # With every class a thing, the random model's segments all get instance ids.
    base = get_config("rapsam_tiny")
    all_things = Taxonomy("all_things", base.taxonomy.class_names, (True,) * base.taxonomy.num_classes)
    model = RapSAM(dataclasses.replace(base, taxonomy=all_things)).eval()
    frames = model.track([photo, photo, photo[:, ::-1].copy()], thresholds=KEEP_ALL)
    assert len(frames) == 3
    first, second = frames[0], frames[1]
    things = [i for i, s in enumerate(first.panoptic.segments) if s.is_thing]
    assert len(things) >= 2
    assert first.instance_ids == second.instance_ids
    assert all(first.instance_ids[i] >= 0 for i in things)
    assert all(i == -1 for s, i in zip(first.panoptic.segments, first.instance_ids) if not s.is_thing)
    assert len({i for i in first.instance_ids if i >= 0}) == len(things)
    flipped = frames[2]
    assert all((i >= 0) == s.is_thing for s, i in zip(flipped.panoptic.segments, flipped.instance_ids))


def test_api_does_not_track_gradients(tiny_model, photo) -> None:
    result = tiny_model.prompt(photo, points=[(75, 50)])
    assert isinstance(result.iou, np.ndarray)
    assert torch.is_grad_enabled()
