"""The app pipeline (rapsam.pipeline), the test vectors every app reproduces, and rapsam-demo."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rapsam.checkpoint import build_model
from rapsam.cli import demo_main, vectors_main
from rapsam.data.synthetic import synthetic_video
from rapsam.pipeline import encode, open_predictor, prompt, torch_predictor, track
from rapsam.vectors import VectorsError, check_vectors, load_tensor, read_vectors, write_vectors

SIZE = 64


@pytest.fixture(scope="module")
def tiny_predictor():
    return open_predictor("rapsam_tiny", input_size=(SIZE, SIZE))


@pytest.fixture(scope="module")
def vectors(tiny_predictor, tmp_path_factory) -> Path:
    return write_vectors(tiny_predictor, tmp_path_factory.mktemp("v") / "vectors")


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    from rapsam.convert import convert

    [result] = convert("onnx", model="rapsam_tiny", input_size=(SIZE, SIZE), num_prompts=2,
                       entry_points=["encode", "prompt", "segment"], out_dir=tmp_path_factory.mktemp("onnx"),
                       parity=False, progress=lambda m: None)
    return result.folder


def test_prompts_beyond_the_slots_run_k_at_a_time_and_give_what_one_call_gives(tiny_predictor) -> None:
    image = np.asarray(Image.fromarray(synthetic_video(0, "valid", 0).frames[0]).resize((90, 70)))
    encoded = encode(tiny_predictor, image)
    points, boxes = [[10.0, 12.0], [40.0, 30.0], [80.0, 60.0]], [[5.0, 5.0, 50.0, 40.0], [30.0, 20.0, 89.0, 69.0]]
    at_once = prompt(tiny_predictor, encoded, points=points, boxes=boxes)
    two_slots = prompt(dataclasses.replace(tiny_predictor, prompt_slots=2), encoded, points=points, boxes=boxes)
    assert at_once.masks.shape == (5, 70, 90) and two_slots.masks.shape == (5, 70, 90)
    np.testing.assert_array_equal(two_slots.masks, at_once.masks)
    np.testing.assert_allclose(two_slots.iou, at_once.iou, atol=1e-5)
    none = prompt(tiny_predictor, encoded)
    assert none.masks.shape == (0, 70, 90) and none.iou.shape == (0,)


def test_pipeline_track_matches_the_model_api(tiny_predictor) -> None:
    frames = synthetic_video(0, "valid", 0, num_frames=4).frames
    ours = list(track(tiny_predictor, iter(frames)))  # a generator: frames are taken as they come
    model = tiny_predictor.runner.model
    reference = model.track(list(frames), input_size=(SIZE, SIZE))
    assert [f.instance_ids for f in ours] == [f.instance_ids for f in reference]
    for a, b in zip(ours, reference):
        np.testing.assert_array_equal(a.panoptic.segment_map, b.panoptic.segment_map)


def test_open_predictor_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        open_predictor(tmp_path)
    with pytest.raises(KeyError):
        open_predictor("rapsam_nope")


def test_vectors_hold_what_the_pipeline_computed(vectors: Path, tiny_predictor) -> None:
    document = read_vectors(vectors)
    assert document["input_size"] == [SIZE, SIZE] and document["tolerances"]["mask_iou"] == 0.99
    assert [c["name"] for c in document["photos"]] == ["astronaut", "coffee"]
    coffee = document["photos"][1]
    image = np.asarray(Image.open(vectors / coffee["image"]))
    assert image.shape == (400, 600, 3) and coffee["letterbox"]["valid_size"] == [43, 64]
    assert load_tensor(vectors, coffee["input"]).shape == (1, 3, SIZE, SIZE)
    mask_logits = load_tensor(vectors, coffee["segment"]["mask_logits"])
    assert mask_logits.dtype == np.float32 and mask_logits.shape[-2:] == (SIZE // 4, SIZE // 4)
    kinds = load_tensor(vectors, coffee["prompt"]["inputs"]["kinds"])
    assert kinds.dtype == np.int32 and kinds.tolist() == [[0, 0, 1]]  # two clicks, one box
    # The stored prompt masks are the pipeline's, at image size.
    prompted = prompt(tiny_predictor, encode(tiny_predictor, image), points=coffee["prompt"]["points"],
                      boxes=coffee["prompt"]["boxes"])
    for i, name in enumerate(coffee["prompt"]["masks"]):
        np.testing.assert_array_equal(np.asarray(Image.open(vectors / name)) > 127, prompted.masks[i])
    segment_map = np.asarray(Image.open(vectors / coffee["panoptic"]["segment_map"]))
    assert segment_map.shape == (400, 600)
    assert sorted(np.unique(segment_map[segment_map > 0]).tolist()) == sorted(
        s["id"] for s in coffee["panoptic"]["segments"] if s["area"] > 0)
    frames = document["clip"]["frames"]
    assert len(frames) == 6 and all(len(f["instance_ids"]) == len(f["segments"]) for f in frames)
    queries = load_tensor(vectors, frames[0]["segment"]["queries"])
    assert queries.shape == (1, tiny_predictor.runner.model.config.num_queries, tiny_predictor.runner.model.config.hidden_dim)


def test_the_same_model_passes_its_vectors_and_the_onnx_artifact_reproduces_them(vectors: Path, tiny_predictor,
                                                                                  onnx_folder: Path) -> None:
    assert all(c.passed for c in check_vectors(tiny_predictor, vectors))
    checks = check_vectors(open_predictor(onnx_folder), vectors)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    assert {c.check for c in checks} >= {"segment mask IoU", "prompt 2 mask IoU", "instance ids identical"}


def test_a_different_model_or_a_changed_vector_fails(vectors: Path, tmp_path: Path) -> None:
    other = torch_predictor(build_model("rapsam_tiny", seed=1), (SIZE, SIZE))  # another random init
    assert not all(c.passed for c in check_vectors(other, vectors))
    planted = tmp_path / "planted"
    planted.mkdir()
    for path in vectors.iterdir():
        (planted / path.name).write_bytes(path.read_bytes())
    document = json.loads((planted / "vectors.json").read_text())
    mask_file = planted / document["photos"][0]["prompt"]["masks"][0]
    Image.fromarray(255 - np.asarray(Image.open(mask_file))).save(mask_file)  # an inverted mask
    checks = check_vectors(open_predictor("rapsam_tiny", input_size=(SIZE, SIZE)), planted)
    assert [(c.case, c.check) for c in checks if not c.passed] == [("astronaut", "prompt 0 mask IoU")]


def test_vectors_errors(tmp_path: Path, tiny_predictor) -> None:
    with pytest.raises(VectorsError, match="not found: write vectors with rapsam-vectors"):
        read_vectors(tmp_path)
    (tmp_path / "vectors.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(VectorsError, match="has schema 99"):
        read_vectors(tmp_path)


def test_vectors_cli_writes_beside_an_artifact_and_checks(onnx_folder: Path, capsys) -> None:
    assert vectors_main([str(onnx_folder)]) == 0
    document = read_vectors(onnx_folder / "vectors")
    assert document["runtime"].startswith("onnxruntime") and document["prompt_slots"] == 2
    assert vectors_main(["rapsam_tiny", "--input-size", f"{SIZE}x{SIZE}", "--check", str(onnx_folder / "vectors")]) == 0
    assert "vectors PASSED" in capsys.readouterr().out
    assert vectors_main([str(onnx_folder), "--weights", "w.safetensors"]) == 2
    assert "is a converted artifact" in capsys.readouterr().err


def test_demo_image_with_prompts_and_video(tmp_path: Path, capsys) -> None:
    image = tmp_path / "photo.png"
    Image.fromarray(synthetic_video(0, "valid", 0).frames[0]).resize((96, 80)).save(image)
    assert demo_main(["rapsam_tiny", "--image", str(image), "--points", "20,30", "--box", "10,10,60,50",
                      "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "panoptic:" in out and "prompt 1:" in out and "encode" in out
    panoptic_png = Image.open(tmp_path / "out" / "photo.panoptic.png")
    assert panoptic_png.size[1] >= 80 and panoptic_png.size[0] == 96 + 150  # the picture and its legend
    assert (tmp_path / "out" / "photo.prompts.png").is_file()
    clip = tmp_path / "clip.gif"
    frames = [Image.fromarray(f) for f in synthetic_video(0, "valid", 1, num_frames=4).frames]
    frames[0].save(clip, save_all=True, append_images=frames[1:])
    assert demo_main(["rapsam_tiny", "--video", str(clip), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "clip.tracks.gif").n_frames == 4
    assert capsys.readouterr().out.count("frame ") == 4


def test_demo_errors(tmp_path: Path, capsys) -> None:
    assert demo_main(["rapsam_tiny", "--image", str(tmp_path / "missing.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert demo_main(["rapsam_tiny", "--video", str(tmp_path / "missing.mp4")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo_main(["rapsam_tiny", "--video", "x.gif", "--points", "1,2"])
    try:
        import cv2  # noqa: F401
    except ImportError:
        assert demo_main(["rapsam_tiny", "--camera", "0"]) == 2
        assert "pip install opencv-python" in capsys.readouterr().err



def test_convert_vectors_come_from_the_artifact_runtime_or_else_from_the_model(onnx_folder: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from rapsam.cli import _artifact_vectors
    from rapsam.convert.base import MissingBackendError
    from rapsam.convert.manifest import read_manifest

    copy = tmp_path / onnx_folder.name
    copy.mkdir()
    for path in onnx_folder.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    result = SimpleNamespace(folder=copy, manifest=read_manifest(copy))
    assert _artifact_vectors(result, "rapsam_tiny", None) == f"vectors {copy / 'vectors'}"
    assert read_vectors(copy / "vectors")["runtime"].startswith("onnxruntime")

    def no_runtime(folder: object) -> None:
        raise MissingBackendError("coremltools predicts only on macOS")

    monkeypatch.setattr("rapsam.pipeline.artifact_predictor", no_runtime)
    note = _artifact_vectors(result, "rapsam_tiny", None)
    assert note.endswith("(from the PyTorch model: coremltools predicts only on macOS)")
    document = read_vectors(copy / "vectors")
    assert document["source"] == "torch" and document["input_size"] == [SIZE, SIZE]


def test_an_artifact_whose_runtime_cannot_run_here_is_one_clear_error(onnx_folder: Path, capsys,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from rapsam.convert.onnx import CONVERTER

    monkeypatch.setattr(type(CONVERTER), "open", lambda self, folder, files: "CoreML runs only on macOS")
    assert demo_main([str(onnx_folder), "--image", "x.png"]) == 2
    assert capsys.readouterr().err.strip().endswith(": CoreML runs only on macOS")
