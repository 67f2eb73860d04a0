"""rapsam-eval: metrics of the PyTorch model and of a converted artifact on the same data, and an oracle that
answers with the ground truth scoring perfectly through the whole pipeline (letterbox, upsample, merge, PQ,
prompt mIoU, query tracker, tube AP)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rapsam.cli import eval_main
from rapsam.config import get_config
from rapsam.data import CocoPanoptic, YouTubeVIS, write_synthetic
from rapsam.data.prompts import BOX, POINT, tight_box
from rapsam.evaluation.evaluate import (
    Predictor,
    artifact_predictor,
    evaluate,
    evaluate_panoptic,
    results_table,
    torch_predictor,
)
from rapsam.inference import letterbox
from rapsam.postprocess import PanopticThresholds
from rapsam.taxonomy import SHAPES

SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic(root, num_train=2, num_val=4, num_videos_train=1, num_videos_val=2, image_size=(SIZE, SIZE),
                    num_frames=3)
    return root


def data(root: Path) -> dict[str, str]:
    return {"coco": str(root / "coco"), "ytvis": str(root / "ytvis")}


def _check_ranges(results: Mapping) -> None:
    for group in ("All", "Things", "Stuff"):
        g = results["panoptic"][group]
        assert all(0.0 <= g[k] <= 1.0 for k in ("pq", "sq", "rq")), (group, g)
    assert results["panoptic"]["images"] == 2
    prompt = results["prompt"]
    assert set(prompt["per_kind"]) == {"point", "box"} and prompt["n"] > 0
    assert all(0.0 <= v["miou"] <= 1.0 and v["n"] > 0 for v in prompt["per_kind"].values())
    assert prompt["per_kind"]["point"]["n"] == prompt["per_kind"]["box"]["n"]  # every segment once each way
    video = results["video"]
    assert video["videos"] == 2
    assert all(0.0 <= video[k] <= 1.0 for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100")), video


def test_untrained_model_gives_numbers_in_range(tiny_model, synthetic_root: Path) -> None:
    results = evaluate(torch_predictor(tiny_model), **data(synthetic_root), limit=2)
    assert results["predictor"] == "torch" and results["input_size"] == [SIZE, SIZE] and results["split"] == "val"
    _check_ranges(results)
    table = results_table(results)
    for text in ("torch at 64x64 (val)", "PQ All", "PQ Things", "PQ Stuff", "prompt mIoU point", "box",
                 "VIS mAP", "(2 videos)"):
        assert text in table, text
    only = evaluate(torch_predictor(tiny_model), coco=data(synthetic_root)["coco"], tasks=("prompt",), limit=1)
    assert set(only) == {"predictor", "input_size", "split", "prompt"}


# ----------------------------------------------------------------------------- the oracle


class OracleRunner:
    """Answers the export contract's entry points with the ground truth of whatever image it is shown (found by
    its letterboxed pixels): mask logits +-20 at `stride` of the input, a confident class per segment,
    no-object elsewhere, one-hot queries per instance (so the tracker keeps a video instance's id)."""

    runtime = "oracle"
    num_queries = 16

    def __init__(self, input_size: tuple[int, int], pad_value, stride: int) -> None:
        self.input_size, self.pad_value, self.stride = input_size, pad_value, stride
        self.truth: dict[bytes, tuple[np.ndarray, np.ndarray, list[int]]] = {}
        self.calls: dict[str, int] = {}

    def add(self, image: np.ndarray, masks: np.ndarray, labels: np.ndarray, queries: list[int]) -> None:
        x, box = letterbox(image, self.input_size, self.pad_value)
        assert box.valid_size == box.input_size == box.image_size  # no scaling: masks live on input pixels
        self.truth[x.numpy().tobytes()] = (masks, labels, queries)

    def _find(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
        return self.truth[np.ascontiguousarray(array, dtype=np.float32).tobytes()]

    def _logits(self, masks: np.ndarray) -> torch.Tensor:
        m = torch.from_numpy(masks).float()[None]
        if self.stride > 1:
            m = F.avg_pool2d(m, self.stride)
        return 40.0 * (m[0] - 0.5)  # +20 inside, -20 outside (fractions in between at stride > 1)

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls[entry] = self.calls.get(entry, 0) + 1
        h, w = self.input_size[0] // self.stride, self.input_size[1] // self.stride
        if entry == "encode":
            return {"features": inputs["image"].copy()}  # the image itself: "prompt" looks it up again
        if entry == "segment":
            masks, labels, queries = self._find(inputs["image"])
            n, c = self.num_queries, SHAPES.num_classes
            mask_logits = torch.full((n, h, w), -20.0)
            class_logits = torch.zeros(n, c + 1)
            class_logits[:, c] = 20.0  # no-object
            for mask, label, q in zip(masks, labels, queries):
                mask_logits[q] = self._logits(mask[None])[0]
                class_logits[q, c], class_logits[q, int(label)] = 0.0, 20.0
            return {"mask_logits": mask_logits[None].numpy(), "class_logits": class_logits[None].numpy(),
                    "queries": torch.eye(n)[None].numpy()}
        assert entry == "prompt"
        masks, _, _ = self._find(inputs["features"])
        boxes, kinds = inputs["boxes"][0], inputs["kinds"][0]
        tight = np.stack([tight_box(m) for m in masks])
        out = torch.full((len(kinds), h, w), -20.0)
        for k, (box, kind) in enumerate(zip(boxes, kinds)):
            if kind == POINT:
                x, y = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
                hits = np.flatnonzero(masks[:, y, x])
                if len(hits):
                    out[k] = self._logits(masks[hits[0]][None])[0]
            elif kind == BOX:
                out[k] = self._logits(masks[int(np.abs(tight - box).sum(1).argmin())][None])[0]
        return {"mask_logits": out[None].numpy(), "iou": np.ones((1, len(kinds)), np.float32)}


def oracle_predictor(root: Path, stride: int, *, limit: int) -> tuple[Predictor, OracleRunner]:
    pad = get_config("rapsam_tiny").pad_value
    runner = OracleRunner((SIZE, SIZE), pad, stride)
    images = CocoPanoptic(root / "coco", "val", taxonomy=SHAPES)
    for i in range(limit):
        sample = images[i]
        runner.add(sample.image, sample.masks, sample.labels, list(range(len(sample.masks))))
    videos = YouTubeVIS(root / "ytvis", "valid", taxonomy=SHAPES)
    for v in range(min(limit, len(videos))):
        video = videos.full_video(v)
        for t in range(video.num_frames):
            present = [n for n in range(len(video.masks)) if video.masks[n, t].any()]
            runner.add(video.frames[t], video.masks[present, t], video.labels[present], present)
    return Predictor(runner, "oracle", (SIZE, SIZE), None, SHAPES, pad), runner


def test_an_oracle_scores_perfectly(synthetic_root: Path) -> None:
    # Full-resolution logits: nothing is lost to the stride, so every metric must be exactly perfect.
    predictor, runner = oracle_predictor(synthetic_root, stride=1, limit=4)
    results = evaluate(predictor, **data(synthetic_root), limit=4)
    assert runner.calls["segment"] == 4 + 2 * 3 and runner.calls["encode"] == 4
    panoptic = results["panoptic"]
    for group in ("All", "Things", "Stuff"):
        assert panoptic[group]["n"] > 0 and panoptic[group]["pq"] == pytest.approx(1.0), (group, panoptic[group])
    assert all(c["fp"] == 0 and c["fn"] == 0 for c in panoptic["per_class"].values())
    for kind, value in results["prompt"]["per_kind"].items():
        assert value["miou"] == pytest.approx(1.0), (kind, value)
    video = results["video"]
    assert video["AP"] == pytest.approx(1.0) and video["AR10"] == pytest.approx(1.0), video
    assert "PQ All     100.0  SQ  100.0  RQ  100.0" in results_table(results)


def test_an_oracle_at_stride_4_stays_near_perfect(synthetic_root: Path) -> None:
    # The export contract's stride-4 logits, upsampled bilinearly: only the outlines of the shapes blur.
    predictor, _ = oracle_predictor(synthetic_root, stride=4, limit=4)
    results = evaluate(predictor, **data(synthetic_root), limit=4)
    # At 64 px the shapes are 6-22 px across, so a 4x4 cell is a good part of one: measured PQ 79.5 (things 62.0,
    # stuff 97.0), prompt mIoU 0.79, VIS AP 67.5 / AP50 100 (at 128 px: PQ 95.3, mIoU 0.94).
    panoptic = results["panoptic"]
    assert panoptic["All"]["pq"] >= 0.7 and panoptic["Stuff"]["pq"] >= 0.9, panoptic
    assert results["prompt"]["miou"] >= 0.7, results["prompt"]
    assert results["video"]["AP50"] == pytest.approx(1.0) and results["video"]["AP"] >= 0.5, results["video"]


# ----------------------------------------------------------------------------- artifacts


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from rapsam.convert import convert

    # The entry points the evaluation runs (not "panoptic"), with the default options (onnxsim on).
    [result] = convert("onnx", model="rapsam_tiny", input_size=(SIZE, SIZE), num_prompts=4,
                       entry_points=["encode", "prompt", "segment"],
                       out_dir=tmp_path_factory.mktemp("onnx"), parity=False, progress=lambda m: None)
    assert result.written
    return result.folder


class Recorder:
    """A runner that keeps every call: what went in and what came out."""

    def __init__(self, runner) -> None:
        self.runner, self.runtime = runner, runner.runtime
        self.calls: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]] = []

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.runner.run(entry, inputs)
        self.calls.append((entry, {k: np.array(v) for k, v in inputs.items()}, outputs))
        return outputs


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-3, atol=1e-4)


def test_artifact_scores_as_the_model_it_came_from(onnx_folder: Path, tiny_model, synthetic_root: Path) -> None:
    artifact = artifact_predictor(onnx_folder)
    assert artifact.prompt_slots == 4 and artifact.input_size == (SIZE, SIZE)
    assert artifact.taxonomy.class_names == SHAPES.class_names and artifact.taxonomy.is_thing == SHAPES.is_thing
    reference = torch_predictor(tiny_model)  # the same seeded random init the converter used
    assert artifact.pad_value == pytest.approx(reference.pad_value)
    # The same prompt chunking as the artifact's 4 slots, so both see the very same inputs.
    reference = dataclasses.replace(reference, prompt_slots=artifact.prompt_slots)
    artifact = dataclasses.replace(artifact, runner=Recorder(artifact.runner))
    reference = dataclasses.replace(reference, runner=Recorder(reference.runner))
    got = evaluate(artifact, **data(synthetic_root), limit=2)
    want = evaluate(reference, **data(synthetic_root), limit=2)
    assert got["predictor"] == str(onnx_folder)
    _check_ranges(got)

    # An untrained model scores ~0, so equal metrics alone say little: every call the evaluation made must
    # have had the same inputs and (to fp32 tolerance) the same outputs in the runtime as in PyTorch.
    got_calls, want_calls = artifact.runner.calls, reference.runner.calls
    assert [c[0] for c in got_calls] == [c[0] for c in want_calls]
    assert {c[0] for c in got_calls} == {"segment", "encode", "prompt"}
    for (entry, got_in, got_out), (_, want_in, want_out) in zip(got_calls, want_calls):
        assert got_in.keys() == want_in.keys() and got_out.keys() == want_out.keys()
        assert all(_close(got_in[k], want_in[k]) for k in got_in), entry  # "features" come from each runner
        assert all(_close(got_out[k], want_out[k]) for k in got_out), (entry, [k for k in got_out
                                                                               if not _close(got_out[k], want_out[k])])

    for group in ("All", "Things", "Stuff"):
        for key in ("pq", "sq", "rq"):
            assert got["panoptic"][group][key] == pytest.approx(want["panoptic"][group][key], abs=0.02), (group, key)
    # With the merge's thresholds at 0 the untrained model paints segments too: the same ones through both.
    images = CocoPanoptic(synthetic_root / "coco", "val", taxonomy=SHAPES)
    loose = PanopticThresholds(object_mask_threshold=0.0, overlap_threshold=0.0)
    for results in (got, want):
        predictor = artifact if results is got else reference
        results["loose"] = evaluate_panoptic(predictor, images, limit=2, thresholds=loose)
    assert sum(c["tp"] + c["fp"] for c in want["loose"]["per_class"].values()) > 0
    for name in ("panoptic", "loose"):
        for cls, value in want[name]["per_class"].items():
            counts = {k: got[name]["per_class"][cls][k] for k in ("tp", "fp", "fn")}
            assert counts == {k: value[k] for k in ("tp", "fp", "fn")}, (name, cls)
            assert got[name]["per_class"][cls]["sq"] == pytest.approx(value["sq"], abs=0.02), (name, cls)
    for kind in ("point", "box"):
        assert got["prompt"]["per_kind"][kind]["n"] == want["prompt"]["per_kind"][kind]["n"]
        assert got["prompt"]["per_kind"][kind]["miou"] == pytest.approx(want["prompt"]["per_kind"][kind]["miou"],
                                                                        abs=0.01)
    for key in ("AP", "AP50", "AR10"):
        assert got["video"][key] == pytest.approx(want["video"][key], abs=0.02), key


# ----------------------------------------------------------------------------- CLI


def test_eval_cli_errors_are_one_line(capsys, tmp_path: Path) -> None:
    assert eval_main(["--artifact", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: give data")
    assert eval_main(["--artifact", str(tmp_path), "--coco", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "manifest.json" in err[0]


def test_eval_cli_runs_an_artifact(onnx_folder: Path, synthetic_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    assert eval_main(["--artifact", str(onnx_folder), "--synthetic", str(synthetic_root), "--limit", "1",
                      "--tasks", "panoptic,video", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PQ All" in printed and "VIS mAP" in printed and "prompt mIoU" not in printed
    saved = json.loads(out.read_text())
    assert saved["panoptic"]["images"] == 1 and saved["video"]["videos"] == 1 and "prompt" not in saved
