"""The dataset layer: RLE codec, loaders of the official formats, prompts, augmentations, generator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from rapsam.data import (
    BOX,
    PAD,
    POINT,
    CocoPanoptic,
    DatasetError,
    ImageSample,
    VideoSample,
    YouTubeVIS,
    box_prompts,
    center_point_prompts,
    fit_scale,
    horizontal_flip,
    large_scale_jitter,
    pseudo_video,
    resize_pad,
    rle,
    sample_prompts,
    synthetic_image,
    synthetic_video,
    write_synthetic,
)
from rapsam.data.synthetic import main as synthetic_main
from rapsam.taxonomy import SHAPES

SIZE = (64, 80)
NUM_FRAMES = 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic(
        root,
        num_train=4,
        num_val=2,
        num_videos_train=3,
        num_videos_val=1,
        image_size=SIZE,
        num_frames=NUM_FRAMES,
        seed=3,
    )


@pytest.fixture
def coco_copy(dataset: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(dataset["coco_root"], tmp_path / "coco"))


@pytest.fixture
def ytvis_copy(dataset: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset["ytvis_root"], tmp_path / "ytvis"))


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------- RLE


def test_rle_round_trip_random_masks() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (16, 9), (64, 48), (33, 100)]:
        for density in (0.02, 0.5, 0.97):
            mask = rng.random(shape) < density
            encoded = rle.encode(mask)
            assert encoded["size"] == list(shape) and isinstance(encoded["counts"], str)
            assert np.array_equal(rle.decode(encoded), mask)
            assert np.array_equal(rle.decode({**encoded, "counts": encoded["counts"].encode()}), mask)
            assert rle.area(encoded) == mask.sum()


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((5, 4), bool),
        np.ones((5, 4), bool),
        np.pad(np.ones((1, 1), bool), ((2, 3), (1, 0))),
        np.array([[True, False, True, True, False, False, False, False, True]]),
        np.array([[False], [True], [True]]),
        np.zeros((0, 0), bool),
        np.zeros((0, 6), bool),
    ],
    ids=["empty", "full", "single-pixel", "1xN", "Nx1", "0x0", "0xN"],
)
def test_rle_edge_cases(mask: np.ndarray) -> None:
    decoded = rle.decode(rle.encode(mask))
    assert decoded.shape == mask.shape and decoded.dtype == bool
    assert np.array_equal(decoded, mask)


def test_rle_counts_match_pycocotools_reference_strings() -> None:
    """Strings pycocotools 2.0.11 `maskUtils.encode` produced, so byte-compatibility is checked even
    where pycocotools is not installed (large runs, negative deltas, sign bits)."""
    m = np.zeros((6, 5), bool)
    m[1:4, 2] = m[0, 0] = m[5, 4] = True
    m[2:5, 3:5] = True
    assert rle.encode(m)["counts"] == "01<2H0O1"
    corner = np.zeros((1000, 700), bool)
    corner[999, 699] = True
    assert rle.encode(corner)["counts"] == "ob[e01"
    cols = np.zeros((1000, 700), bool)
    cols[3:900, 0] = cols[0:2, 1] = cols[500:, 2] = True
    assert rle.encode(cols)["counts"] == "3Ql0T3QTOf[1b?^VWe0"
    assert rle.decode({"size": [1000, 700], "counts": "3Ql0T3QTOf[1b?^VWe0"}).sum() == cols.sum()
    assert rle.encode(np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1]], bool))["counts"] == "01113O"
    assert rle.encode(np.zeros((4, 3), bool))["counts"] == "<"
    assert rle.encode(np.ones((4, 3), bool))["counts"] == "0<"


def test_rle_uncompressed_counts_and_bbox() -> None:
    mask = rle.decode({"size": [3, 4], "counts": [4, 2, 5, 1]})  # column-major: col 1 rows 1-2, col 3 row 2
    expected = np.zeros((3, 4), bool)
    expected[1:3, 1] = expected[2, 3] = True
    assert np.array_equal(mask, expected)
    assert rle.to_bbox(mask) == [1.0, 1.0, 3.0, 2.0]
    assert rle.to_bbox(rle.encode(mask)) == [1.0, 1.0, 3.0, 2.0]
    assert rle.to_bbox(np.zeros((3, 3), bool)) == [0.0, 0.0, 0.0, 0.0]
    assert rle.area({"size": [3, 4], "counts": [4, 2, 5, 1]}) == 3


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"counts": "0<"}, "'size'"),
        ({"size": [4, 3]}, "'counts'"),
        ({"size": [4], "counts": "0<"}, "size"),
        ({"size": [4, 3], "counts": [1, 2]}, "cover 3 pixels"),
        ({"size": [4, 3], "counts": "0\x7f"}, "invalid character"),
        ({"size": [4, 3], "counts": "0l"}, "ends inside"),
        ({"size": [4, 3], "counts": 12}, "'counts' must be"),
        ([1, 2], "dict"),
    ],
)
def test_rle_malformed_input_raises_value_error(bad, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        rle.decode(bad)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools vs numpy 2 `__array__` copy keyword
def test_rle_byte_identical_to_pycocotools() -> None:
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (1, 13), (40, 30), (200, 150)]:
        for density in (0.0, 0.01, 0.5, 1.0):
            mask = rng.random(shape) < density
            if shape == (200, 150):
                mask = np.zeros(shape, bool)
                mask[10:180, 20:140] = rng.random((170, 120)) > density / 10
            ref = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            ours = rle.encode(mask)
            assert ours["counts"] == ref["counts"].decode()
            assert ours["size"] == list(ref["size"])
            assert np.array_equal(rle.decode(ref), mask)
            assert np.array_equal(mask_utils.decode({"size": ours["size"], "counts": ours["counts"].encode()}), mask)


# ---------------------------------------------------------------- generator + loaders


def test_coco_panoptic_reads_back_what_was_drawn(dataset: dict[str, Path]) -> None:
    for split, n in (("train", 4), ("val", 2)):
        ds = CocoPanoptic(dataset["coco_root"], split)
        assert len(ds) == n
        for i in range(n):
            sample = ds[i]
            drawn = synthetic_image(3, split, i, SIZE)
            assert isinstance(sample, ImageSample) and sample.name == drawn.name
            assert sample.image.shape == (*SIZE, 3) and sample.image.dtype == np.uint8
            assert np.array_equal(sample.masks, drawn.masks)
            assert np.array_equal(sample.labels, drawn.labels) and np.array_equal(sample.ids, drawn.ids)
            assert np.abs(sample.image.astype(int) - drawn.image).mean() < 10  # JPEG quality 95
            assert sample.masks.sum(axis=0).max() <= 1  # panoptic: each pixel in at most one segment
            assert sample.masks.any(axis=(1, 2)).all() and (sample.masks.sum(axis=(1, 2)) >= 30).all()
            assert ((0 <= sample.labels) & (sample.labels < SHAPES.num_classes)).all()
            assert len(set(sample.ids.tolist())) == len(sample.ids) and not sample.is_crowd.any()
            stuff = [int(label) for label in sample.labels if not SHAPES.is_thing[label]]
            assert 1 <= len(stuff) == len(set(stuff)) <= 3  # one region per stuff class
            things = [label for label in sample.labels if SHAPES.is_thing[label]]
            assert len(things) <= 5
    data = json.loads(dataset["coco_train_json"].read_text())
    for cat in data["categories"]:
        assert bool(cat["isthing"]) == SHAPES.is_thing[SHAPES.class_names.index(cat["name"])]
    png_dir = dataset["coco_root"] / "annotations" / "panoptic_train2017"
    assert sorted(p.name for p in png_dir.iterdir()) == [a["file_name"] for a in data["annotations"]]


def test_synthetic_is_deterministic_and_seed_dependent() -> None:
    a, b = synthetic_image(5, "train", 2, (64, 64)), synthetic_image(5, "train", 2, (64, 64))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, synthetic_image(6, "train", 2, (64, 64)).image)
    va, vb = synthetic_video(5, "train", 0, (64, 64), 3), synthetic_video(5, "train", 0, (64, 64), 3)
    assert np.array_equal(va.frames, vb.frames) and np.array_equal(va.masks, vb.masks)


def test_synthetic_classes_have_distinct_colours() -> None:
    """Mean colour per class over a few scenes: every pair well apart, so colour alone identifies a class."""
    sums, counts = np.zeros((SHAPES.num_classes, 3)), np.zeros(SHAPES.num_classes)
    for i in range(12):
        s = synthetic_image(0, "train", i, (64, 64))
        for mask, label in zip(s.masks, s.labels):
            sums[label] += s.image[mask].sum(axis=0)
            counts[label] += mask.sum()
    assert (counts > 0).all()
    means = sums / counts[:, None]
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(len(means)) * 1e9
    assert dist.min() > 40


def test_ytvis_reads_back_moving_instances(dataset: dict[str, Path]) -> None:
    data = json.loads(dataset["ytvis_train_json"].read_text())
    assert [c["name"] for c in data["categories"]] == [n for n, t in zip(SHAPES.class_names, SHAPES.is_thing) if t]
    for ann in data["annotations"]:
        assert len(ann["segmentations"]) == NUM_FRAMES
        for seg, area, bbox in zip(ann["segmentations"], ann["areas"], ann["bboxes"]):
            assert (seg is None) == (area is None) == (bbox is None)
            assert seg is None or (isinstance(seg["counts"], str) and rle.area(seg) == area)
    ds = YouTubeVIS(dataset["ytvis_root"], "train", clip_length=2)
    assert len(ds) == 3
    all_ids: list[int] = []
    for i in range(len(ds)):
        video = ds.full_video(i)
        drawn = synthetic_video(3, "train", i, SIZE, NUM_FRAMES)
        assert isinstance(video, VideoSample) and video.name == drawn.name
        assert video.frames.shape == (NUM_FRAMES, *SIZE, 3)
        assert np.array_equal(video.masks, drawn.masks) and np.array_equal(video.labels, drawn.labels)
        assert np.abs(video.frames.astype(int) - drawn.frames).mean() < 10
        assert all(SHAPES.is_thing[label] for label in video.labels)
        assert (video.masks.sum(axis=0) <= 1).all()
        all_ids += video.ids.tolist()
        moved = False
        for masks in video.masks:
            present = [t for t in range(NUM_FRAMES) if masks[t].any()]
            centres = [np.argwhere(masks[t]).mean(axis=0) for t in present]
            moved |= any(np.abs(c - centres[0]).max() > 1.5 for c in centres[1:])
        assert moved  # velocities are 1-3 px per frame on each axis
        for t in range(NUM_FRAMES):  # per-frame view keeps ids, so frames can be matched
            frame = video.frame(t)
            assert set(frame.ids.tolist()) <= set(video.ids.tolist()) and frame.masks.any(axis=(1, 2)).all()
        clip = ds[i]
        assert clip.frames.shape[0] == 2 and np.array_equal(clip.frames, video.frames[:2])
        assert set(clip.ids.tolist()) <= set(video.ids.tolist())
        for n, inst in enumerate(clip.ids):
            assert np.array_equal(clip.masks[n], video.masks[list(video.ids).index(inst), :2])
    assert len(set(all_ids)) == len(all_ids)  # instance ids are unique split-wide
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(20):
        clip = ds.sample_clip(0, rng)
        full = ds.full_video(0).frames
        starts.add(next(s for s in range(NUM_FRAMES - 1) if np.array_equal(full[s : s + 2], clip.frames)))
    assert len(starts) > 1
    valid = YouTubeVIS(dataset["ytvis_root"], "valid", clip_length=NUM_FRAMES + 2)
    clip = valid[0]
    assert clip.frames.shape[0] == NUM_FRAMES + 2 and np.array_equal(clip.frames[-1], clip.frames[NUM_FRAMES - 1])


def test_ytvis_absent_frames_are_none(ytvis_copy: Path) -> None:
    path = ytvis_copy / "train.json"
    _edit_json(
        path,
        lambda d: d["annotations"][0].update(
            segmentations=[None] + d["annotations"][0]["segmentations"][1:],
            areas=[None] + d["annotations"][0]["areas"][1:],
        ),
    )
    video = YouTubeVIS(ytvis_copy, "train").full_video(0)
    assert not video.masks[0, 0].any() and video.masks[0, 1:].any()
    assert video.frame(0).masks.shape[0] == video.masks[:, 0].any(axis=(1, 2)).sum()


def test_cli_writes_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic_main(
        [
            str(tmp_path),
            "--num-train",
            "1",
            "--num-val",
            "1",
            "--num-videos-train",
            "1",
            "--num-videos-val",
            "1",
            "--size",
            "48",
            "--num-frames",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert "panoptic_train2017.json" in out and "valid.json" in out
    assert CocoPanoptic(tmp_path / "coco", "val")[0].image.shape == (48, 48, 3)
    assert YouTubeVIS(tmp_path / "ytvis", "valid").full_video(0).frames.shape == (2, 48, 48, 3)


# ---------------------------------------------------------------- errors


def test_missing_json_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"panoptic_train2017\.json not found: expected the COCO panoptic"):
        CocoPanoptic(tmp_path, "train")
    with pytest.raises(DatasetError, match=r"valid\.json not found"):
        YouTubeVIS(tmp_path, "valid")


def test_missing_field_names_file_and_field(coco_copy: Path, ytvis_copy: Path) -> None:
    path = coco_copy / "annotations" / "panoptic_train2017.json"
    _edit_json(path, lambda d: d["annotations"][1].pop("segments_info"))
    with pytest.raises(DatasetError) as err:
        CocoPanoptic(coco_copy, "train")
    assert str(path) in str(err.value) and "annotations[1] has no 'segments_info'" in str(err.value)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)
    _edit_json(path, lambda d: d.pop("categories"))
    with pytest.raises(DatasetError, match="has no 'categories'"):
        CocoPanoptic(coco_copy, "train")
    vpath = ytvis_copy / "train.json"
    _edit_json(vpath, lambda d: d["annotations"][0].pop("segmentations"))
    with pytest.raises(DatasetError, match=r"train\.json: annotations\[0\] has no 'segmentations'"):
        YouTubeVIS(ytvis_copy, "train")


def test_unknown_category_is_named(coco_copy: Path, ytvis_copy: Path) -> None:
    path = coco_copy / "annotations" / "panoptic_val2017.json"
    _edit_json(path, lambda d: d["categories"][2].update(name="hexagon"))
    with pytest.raises(DatasetError, match=r"panoptic_val2017\.json: categories\[2\] has unknown category 'hexagon'"):
        CocoPanoptic(coco_copy, "val")
    vpath = ytvis_copy / "valid.json"
    _edit_json(vpath, lambda d: d["categories"][0].update(name="cube"))
    with pytest.raises(DatasetError, match=r"valid\.json: categories\[0\] has unknown category 'cube'"):
        YouTubeVIS(ytvis_copy, "valid")


def test_corrupt_or_inconsistent_files_name_the_file(coco_copy: Path, ytvis_copy: Path) -> None:
    ds = CocoPanoptic(coco_copy, "train")
    png = coco_copy / "annotations" / "panoptic_train2017" / "000000000001.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=r"000000000001\.png is not a readable image"):
        ds[0]
    (coco_copy / "train2017" / "000000000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"000000000002\.jpg not found: expected the image"):
        ds[1]
    path = coco_copy / "annotations" / "panoptic_train2017.json"
    _edit_json(path, lambda d: d["annotations"][2]["segments_info"][0].update(id=999_999))
    with pytest.raises(DatasetError, match=r"000000000003\.png has no pixel of segment id 999999"):
        CocoPanoptic(coco_copy, "train")[2]
    _edit_json(
        ytvis_copy / "train.json",
        lambda d: d["annotations"][0]["segmentations"].__setitem__(0, {"size": [SIZE[0], SIZE[1]], "counts": [1, 2]}),
    )
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.segmentations\[0\]: RLE runs cover 3 pixels"):
        YouTubeVIS(ytvis_copy, "train").full_video(0)


# ---------------------------------------------------------------- prompts


def _scene() -> ImageSample:
    return synthetic_image(1, "train", 7, (64, 64))


def test_sample_prompts_points_boxes_and_padding() -> None:
    sample = _scene()
    n = len(sample.masks)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        boxes, kinds, targets = sample_prompts(sample, n + 3, rng)
        assert boxes.dtype == np.float32 and kinds.dtype == np.int32 and targets.dtype == bool
        assert boxes.shape == (n + 3, 4) and targets.shape == (n + 3, *sample.size)
        assert (kinds[n:] == PAD).all() and not boxes[n:].any() and not targets[n:].any()
        seen.update(kinds[:n].tolist())
        for box, kind, target in zip(boxes[:n], kinds[:n], targets[:n]):
            assert any(np.array_equal(target, m) for m in sample.masks)
            if kind == POINT:
                x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2  # exact unless clipped at the border
                if 3 <= x <= 61 and 3 <= y <= 61:
                    assert box[2] - box[0] == 6 and target[int(y), int(x)]
                assert (box >= 0).all() and (box[[2, 3]] <= 64).all()
            else:
                ys, xs = np.nonzero(target)
                assert box[0] <= xs.min() and box[1] <= ys.min() and box[2] >= xs.max() + 1 and box[3] >= ys.max() + 1
                assert box[2] - box[0] == xs.max() + 1 - xs.min()  # tight when not jittered
        assert len({tuple(np.flatnonzero(t.ravel())[:5]) for t in targets[:n]}) == n  # distinct segments
    assert seen == {POINT, BOX}
    boxes, kinds, _ = sample_prompts(sample, 2, rng, point_fraction=1.0)
    assert (kinds == POINT).all()
    boxes, kinds, _ = sample_prompts(sample, 2, rng, point_fraction=0.0, box_jitter=0.1)
    assert (kinds == BOX).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_click_margin_keeps_the_click_box_inside_its_segment() -> None:
    mask = np.zeros((32, 32), bool)
    mask[4:20, 6:26] = True  # 16 x 20: room for a +-3 px square
    mask[24:26, 2:30] = True  # a 2 px strip, part of the same segment
    sample = ImageSample(np.zeros((32, 32, 3), np.uint8), mask[None], np.array([0]), np.array([1]),
                         np.zeros(1, bool), "margin")
    rng = np.random.default_rng(0)
    for _ in range(50):
        boxes, kinds, _ = sample_prompts(sample, 1, rng, point_fraction=1.0, click_margin=3)
        x0, y0, x1, y1 = boxes[0]
        assert kinds[0] == POINT and mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].all()
    thin = np.zeros((32, 32), bool)
    thin[10:12, 3:29] = True  # too thin for the margin: the clicks still land on it
    sample = ImageSample(np.zeros((32, 32, 3), np.uint8), thin[None], np.array([0]), np.array([1]),
                         np.zeros(1, bool), "thin")
    for _ in range(20):
        boxes, _, _ = sample_prompts(sample, 1, rng, point_fraction=1.0, click_margin=3)
        assert thin[int((boxes[0, 1] + boxes[0, 3]) / 2), int((boxes[0, 0] + boxes[0, 2]) / 2)]


def test_prompts_skip_crowd_and_stuff_when_asked() -> None:
    sample = _scene()
    sample.is_crowd[0] = True
    rng = np.random.default_rng(0)
    _, kinds, targets = sample_prompts(sample, 20, rng)
    assert (kinds != PAD).sum() == len(sample.masks) - 1
    assert not any(np.array_equal(t, sample.masks[0]) for t in targets)
    _, kinds, targets = sample_prompts(sample, 20, rng, things_only=True)
    things = [i for i in range(1, len(sample.masks)) if SHAPES.is_thing[sample.labels[i]]]
    assert (kinds != PAD).sum() == len(things)


def test_center_point_and_box_prompts_are_deterministic() -> None:
    sample = _scene()
    boxes, kinds, targets = center_point_prompts(sample)
    again, _, _ = center_point_prompts(sample)
    assert np.array_equal(boxes, again) and (kinds == POINT).all() and np.array_equal(targets, sample.masks)
    for box, mask in zip(boxes, targets):
        x, y = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        assert binary_erosion(mask)[y, x]  # inside, off the boundary
    boxes, kinds, targets = box_prompts(sample)
    assert (kinds == BOX).all()
    for box, mask in zip(boxes, targets):
        assert rle.to_bbox(mask) == [box[0], box[1], box[2] - box[0], box[3] - box[1]]


# ---------------------------------------------------------------- transforms


def _square_sample(h: int = 96, w: int = 128) -> ImageSample:
    """A grey gradient with a red square and a green bar: colour tells whether masks follow pixels."""
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = np.linspace(60, 160, w, dtype=np.uint8)[None, :, None]
    masks = np.zeros((2, h, w), bool)
    masks[0, 20:60, 30:70] = True
    masks[1, 70:80, 10:120] = True
    image[masks[0]] = (255, 0, 0)
    image[masks[1]] = (0, 255, 0)
    return ImageSample(image, masks, np.array([1, 5]), np.array([11, 22]), np.zeros(2, bool), "squares")


def _assert_aligned(sample: ImageSample) -> None:
    colours = {11: (255, 0, 0), 22: (0, 255, 0)}
    for mask, seg_id in zip(sample.masks, sample.ids):
        colour = np.array(colours[int(seg_id)])
        inner = binary_erosion(mask, iterations=2)
        assert (np.abs(sample.image[inner].astype(int) - colour).max(axis=-1) < 40).all()
        outer = ~binary_dilation(mask, iterations=2)
        assert not (np.abs(sample.image[outer].astype(int) - colour).max(axis=-1) < 40).any()


def test_large_scale_jitter_size_alignment_and_dropping() -> None:
    sample = _square_sample()
    rng = np.random.default_rng(0)
    dropped = 0
    for _ in range(25):
        out = large_scale_jitter(sample, (64, 72), rng, pad_value=(0, 0, 255))
        assert out.image.shape == (64, 72, 3) and out.masks.shape[1:] == (64, 72)
        assert out.masks.any(axis=(1, 2)).all() and len(out.labels) == len(out.ids) == len(out.masks)
        assert {(int(i), int(c)) for i, c in zip(out.ids, out.labels)} <= {(11, 1), (22, 5)}
        dropped += len(out.masks) < 2
        _assert_aligned(out)
        blue = (out.image == (0, 0, 255)).all(axis=-1)
        assert not (blue & out.masks.any(axis=0)).any()  # padding belongs to no mask
    assert dropped > 0  # large scales crop instances away
    small = large_scale_jitter(sample, 64, rng, scale_range=(0.5, 0.5))
    assert small.image.shape == (64, 64, 3)
    assert (small.image[24:, :] == 0).all() and (small.image[:, 32:] == 0).all()  # 96x128 -> 24x32, padded


def test_large_scale_jitter_and_flip_treat_clip_frames_alike() -> None:
    sample = _square_sample()
    video = pseudo_video(sample, 3, np.random.default_rng(0), max_shift=0.0)  # three identical frames
    out = large_scale_jitter(video, 64, np.random.default_rng(4), scale_range=(0.8, 1.6))
    assert out.frames.shape == (3, 64, 64, 3) and out.masks.shape[1:] == (3, 64, 64)
    assert (out.frames == out.frames[:1]).all() and (out.masks == out.masks[:, :1]).all()
    flipped = horizontal_flip(out, np.random.default_rng(0), p=1.0)
    assert np.array_equal(flipped.frames, out.frames[:, :, ::-1]) and np.array_equal(
        flipped.masks, out.masks[..., ::-1]
    )
    for t in range(3):
        _assert_aligned(flipped.frame(t))


def test_horizontal_flip() -> None:
    sample = _square_sample()
    flipped = horizontal_flip(sample, np.random.default_rng(0), p=1.0)
    assert np.array_equal(flipped.image, sample.image[:, ::-1]) and np.array_equal(
        flipped.masks, sample.masks[:, :, ::-1]
    )
    _assert_aligned(flipped)
    assert horizontal_flip(sample, np.random.default_rng(0), p=0.0) is sample
    twice = horizontal_flip(flipped, np.random.default_rng(0), p=1.0)
    assert np.array_equal(twice.image, sample.image) and np.array_equal(twice.masks, sample.masks)


def test_resize_pad_letterboxes_top_left() -> None:
    sample = _square_sample(96, 128)
    out = resize_pad(sample, 64)
    assert fit_scale(sample.size, 64) == 0.5
    assert out.image.shape == (64, 64, 3) and len(out.masks) == 2
    assert (out.image[48:] == 0).all() and not out.masks[:, 48:].any()
    assert np.array_equal(out.masks[0], np.pad(np.ones((20, 20), bool), ((10, 34), (15, 29))))
    _assert_aligned(out)
    same = resize_pad(sample, (96, 128))
    assert np.array_equal(same.image, sample.image) and np.array_equal(same.masks, sample.masks)


def test_pseudo_video_shifts_linearly() -> None:
    sample = _square_sample()
    for seed in range(5):
        video = pseudo_video(sample, 4, np.random.default_rng(seed), max_shift=0.2)
        assert video.frames.shape == (4, 96, 128, 3) and video.masks.shape == (2, 4, 96, 128)
        assert np.array_equal(video.ids, sample.ids) and np.array_equal(video.labels, sample.labels)
        assert np.array_equal(video.frames[0], sample.image) and np.array_equal(video.masks[:, 0], sample.masks)
        corner0 = np.argwhere(video.masks[0, 0]).min(axis=0)  # the red square stays in view at 20% shift
        shifts = [np.argwhere(video.masks[0, t]).min(axis=0) - corner0 for t in range(4)]
        step = shifts[-1] / 3
        for t, s in enumerate(shifts):
            assert np.abs(s - t * step).max() <= 1  # rounding of t * (dy, dx)
        dy, dx = shifts[-1]
        assert abs(dy) <= 0.2 * 96 + 1 and abs(dx) <= 0.2 * 128 + 1
        last = video.frames[-1]
        if dy > 0:
            assert (last[:dy] == 0).all()  # vacated rows are padding
        if dx < 0:
            assert (last[:, dx:] == 0).all()
        for t in range(4):
            _assert_aligned(video.frame(t))
