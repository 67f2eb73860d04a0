"""ONNX: convert the tiny model, run the files in onnxruntime, check names, metadata and bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rapsam.convert import convert
from rapsam.convert.onnx import MANIFEST_KEY
from rapsam.convert.parity import ReferenceRunner, parity_photos
from rapsam.export import ENTRY_POINTS, example_inputs
from rapsam.inference import letterbox

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    [result] = convert("onnx", model="rapsam_tiny", input_size=(64, 96), num_prompts=3, out_dir=out,
                       progress=lambda m: None)
    return result


def test_every_entry_point_runs_and_matches(converted, tiny_model) -> None:
    assert converted.written and converted.parity.passed
    assert sorted(p.name for p in converted.folder.iterdir()) == sorted(
        [f"{e}.onnx" for e in ENTRY_POINTS] + ["manifest.json", "parity.json"])
    reference = ReferenceRunner(tiny_model)
    image, _ = letterbox(parity_photos()[0][1], (64, 96), tiny_model.config.pixel_mean)
    for entry, spec in ENTRY_POINTS.items():
        session = ort.InferenceSession(str(converted.folder / f"{entry}.onnx"), providers=["CPUExecutionProvider"])
        assert tuple(i.name for i in session.get_inputs()) == spec.inputs
        assert tuple(o.name for o in session.get_outputs()) == spec.outputs
        inputs = dict(zip(spec.inputs, (t.numpy() for t in example_inputs(tiny_model, entry, input_size=(64, 96), num_prompts=3))))
        if "image" in inputs:
            inputs["image"] = image.numpy()
        expected = reference.run(entry, inputs)
        for name, value in zip(spec.outputs, session.run(list(spec.outputs), inputs)):
            assert np.abs(value - expected[name]).max() <= 1e-4 * max(1.0, np.abs(expected[name]).max()), (entry, name)


def test_parity_numbers_are_fp32_tight(converted) -> None:
    rows = {(r.entry, r.case, r.output): r for r in converted.parity.rows}
    assert rows[("encode", "-", "features")].max_abs < 1e-5
    assert rows[("segment", "-", "mask_logits")].extra["mask_iou"] >= 0.999
    assert rows[("prompt", "padded_middle", "iou")].extra["iou_abs_error"] < 1e-4
    assert min(r.cosine for r in converted.parity.rows) >= 0.99999


def test_manifest_is_embedded_and_ir_version_is_web_safe(converted) -> None:
    on_disk = (converted.folder / "manifest.json").read_text()
    for entry in ENTRY_POINTS:
        proto = onnx.load(converted.folder / f"{entry}.onnx")
        assert {p.key: p.value for p in proto.metadata_props}[MANIFEST_KEY] == on_disk
        assert proto.ir_version <= 9 and proto.opset_import[0].version == 18
    manifest = json.loads(on_disk)
    assert manifest["target"] == {"name": "onnx", "opset": 18, "ir_version": 9,
                                  "options": {"opset": 18, "ir_version": 9, "simplify": True}}
    assert manifest["entry_points"]["prompt"]["file"] == "prompt.onnx"


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    paths = []
    for run in ("a", "b"):
        [result] = convert("onnx", model="rapsam_tiny", input_size=(64, 64), entry_points=["encode"],
                           out_dir=tmp_path / run, parity=False, progress=lambda m: None)
        paths.append(result.folder / "encode.onnx")
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_fp16_encode_and_segment_pass_the_fp16_gate(tmp_path: Path) -> None:
    [result] = convert("onnx", model="rapsam_tiny", input_size=(64, 64), entry_points=["encode", "segment"],
                       precision="fp16", out_dir=tmp_path, progress=lambda m: None)
    assert result.written and result.parity.passed and result.manifest["precision"]["compute"] == "fp16"
    features = next(r for r in result.parity.rows if r.output == "features")
    assert 1e-6 < features.max_abs < 1e-2  # really computed in fp16, and close
