"""The shared conversion machinery: parity checker, tolerance gate, manifest schema, atomic output, CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import rapsam.convert as convert_module
from rapsam.cli import convert_main
from rapsam.convert import convert
from rapsam.convert.base import ConversionError, ConvertedFiles, MissingBackendError, get_converter
from rapsam.convert.manifest import ManifestError, validate_manifest
from rapsam.convert.parity import TOLERANCES, ReferenceRunner, check_parity, mask_iou, prompt_cases, worst_mask_iou


class PerturbedRunner(ReferenceRunner):
    """The reference with a planted bug: one output of one entry point scaled."""

    def __init__(self, model, entry: str, output: str, scale: float) -> None:
        super().__init__(model)
        self.runtime = "planted bug"
        self.entry, self.output, self.scale = entry, output, scale

    def run(self, entry, inputs):
        outputs = super().run(entry, inputs)
        if entry == self.entry:
            outputs[self.output] = outputs[self.output] * self.scale
        return outputs


@dataclass
class FakeConverter:
    """A backend whose 'artifact' is the reference model, optionally with a planted bug."""

    runner_factory: object = None
    name: str = "fake"
    extra: str = "fake"
    packages: tuple = ()
    default_precision: str = "fp32"
    option_defaults: dict = field(default_factory=dict)

    def versions(self):
        return {"fake": "1"}

    def convert(self, model, request, folder: Path) -> ConvertedFiles:
        self.model = model
        (folder / "model.bin").write_bytes(b"weights")
        return ConvertedFiles({e: "model.bin" for e in request.entry_points}, {e: e for e in request.entry_points})

    def embed_manifest(self, folder, files, manifest):
        (folder / "model.bin").write_bytes(b"weights" + manifest.encode())

    def open(self, folder, files):
        return self.runner_factory(self.model) if self.runner_factory else ReferenceRunner(self.model)


def _use(monkeypatch, converter) -> None:
    monkeypatch.setattr(convert_module, "get_converter", lambda target: converter)
    monkeypatch.setattr(convert_module, "_resolve_targets", lambda target: [target])


def test_parity_of_the_reference_with_itself_is_exact(tiny_model) -> None:
    report = check_parity(tiny_model, ReferenceRunner(tiny_model), target="self", entry_points=("encode", "panoptic", "prompt", "segment"),
                          input_size=(64, 64), num_prompts=3, precision="fp32")
    assert report.passed and report.inputs == ("astronaut", "chelsea", "coffee")
    cases = {row.case for row in report.rows if row.entry == "prompt"}
    assert cases == {"one_point", "points", "one_box", "mixed", "padded_middle"}
    assert all(row.max_abs == 0.0 for row in report.rows)


@pytest.mark.parametrize(("entry", "output", "scale", "failing"), [
    ("segment", "class_logits", 10.0, {"relative_error"}),  # a 10x blow-up keeps argmax and cosine, not scale
    ("prompt", "mask_logits", -1.0, {"cosine", "mask_iou"}),
    ("prompt", "iou", 1.01, {"iou_abs_error"}),
])
def test_planted_bugs_are_caught(tiny_model, entry, output, scale, failing) -> None:
    report = check_parity(tiny_model, PerturbedRunner(tiny_model, entry, output, scale), target="bug",
                          entry_points=(entry,), input_size=(64, 64), num_prompts=3, precision="fp32")
    assert not report.passed
    failed = {name for row in report.rows if row.output == output for name, c in row.checks.items() if not c.passed}
    assert failing <= failed


def test_mask_iou_and_prompt_sweep() -> None:
    ref = np.array([[[[1.0, -1.0], [1.0, -1.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    art = np.array([[[[1.0, 1.0], [1.0, -1.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])
    assert mask_iou(ref, art) == pytest.approx(2 / 3)  # pooled: 2 shared pixels of 3 in either mask
    assert worst_mask_iou(ref, art) == pytest.approx(2 / 3)  # the empty-in-both mask counts 1
    big = np.concatenate([ref, -np.ones((1, 1, 2, 2))], axis=1)
    big[0, 2] = 1.0  # a fully matching 4-pixel mask weighs more than the 3-pixel one with a flipped pixel
    assert mask_iou(big, np.concatenate([art, big[:, 2:]], axis=1)) == pytest.approx(6 / 7)
    cases = prompt_cases(4, (48, 64))
    boxes, kinds = cases["padded_middle"]
    assert kinds.tolist() == [[1, -1, -1, 0]] and boxes.dtype == np.float32 and kinds.dtype == np.int32
    assert (boxes[0, kinds[0] >= 0][:, 2:] <= [64 * 1.3, 48 * 1.3]).all()


def test_fp16_mask_margin_leaves_out_only_undecided_pixels() -> None:
    """A pixel at 0.5% of the largest |logit| flips on fp16 rounding alone: not counted under the fp16 margin;
    an inverted decided pixel still is."""
    margin = TOLERANCES["fp16"].mask_margin
    ref = np.array([[[[8.0, 0.04], [-8.0, -3.0]]]])  # 0.04 / 8 = 0.5% < 2^-7
    flipped_near_zero = ref * np.array([[[[1.0, -1.0], [1.0, 1.0]]]])
    assert mask_iou(ref, flipped_near_zero) == pytest.approx(1 / 2)
    assert mask_iou(ref, flipped_near_zero, margin=margin) == 1.0
    inverted = ref * np.array([[[[1.0, 1.0], [1.0, -1.0]]]])  # -3 -> 3: decided, wrong
    assert mask_iou(ref, inverted, margin=margin) == pytest.approx(1 / 2)
    assert TOLERANCES["fp32"].mask_margin == 0.0

def test_conversion_writes_folder_with_manifest_and_parity(tmp_path, monkeypatch) -> None:
    _use(monkeypatch, FakeConverter())
    [result] = convert("fake", model="rapsam_tiny", input_size=(64, 64), num_prompts=3, out_dir=tmp_path,
                       progress=lambda m: None)
    assert result.written and result.folder == tmp_path / "rapsam_tiny-64x64-fake"
    manifest = json.loads((result.folder / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["parity"]["gate"] == "passed" and manifest["model"]["weights"] == "random-init:seed=0"
    assert manifest["entry_points"]["prompt"]["inputs"][2] == {
        "name": "kinds", "shape": [1, 3], "dtype": "int32", "meaning": manifest["entry_points"]["prompt"]["inputs"][2]["meaning"]}
    assert manifest["entry_points"]["segment"]["outputs"][0]["shape"] == [1, 8, 16, 16]
    assert [c["name"] for c in manifest["classes"]][:2] == ["circle", "square"] and manifest["no_object_index"] == 8
    assert json.loads((result.folder / "parity.json").read_text())["passed"] is True
    assert (result.folder / "model.bin").read_bytes().endswith((result.folder / "manifest.json").read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["rapsam_tiny-64x64-fake"]  # no staging left behind


def test_failed_gate_keeps_the_old_artifact_and_writes_nothing(tmp_path, monkeypatch) -> None:
    _use(monkeypatch, FakeConverter())
    [good] = convert("fake", model="rapsam_tiny", input_size=(64, 64), out_dir=tmp_path, progress=lambda m: None)
    before = (good.folder / "manifest.json").read_bytes()
    _use(monkeypatch, FakeConverter(lambda m: PerturbedRunner(m, "encode", "features", 2.0)))
    [bad] = convert("fake", model="rapsam_tiny", input_size=(64, 64), out_dir=tmp_path, progress=lambda m: None)
    assert not bad.written and not bad.parity.passed
    assert (good.folder / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["rapsam_tiny-64x64-fake"]
    [kept] = convert("fake", model="rapsam_tiny", input_size=(64, 64), out_dir=tmp_path, parity_gate=False,
                     progress=lambda m: None)
    assert kept.written and json.loads((kept.folder / "manifest.json").read_text())["parity"]["gate"] == "failed_ignored"


def test_bad_requests_fail_before_any_work(tmp_path, monkeypatch) -> None:
    _use(monkeypatch, FakeConverter())
    with pytest.raises(ValueError, match="multiples of 32"):
        convert("fake", model="rapsam_tiny", input_size=(50, 64), out_dir=tmp_path)
    with pytest.raises(ConversionError, match="unknown entry points"):
        convert("fake", model="rapsam_tiny", entry_points=["decode"], out_dir=tmp_path)
    with pytest.raises(ConversionError, match="has no options"):
        convert("fake", model="rapsam_tiny", options={"opset": 17}, out_dir=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_unknown_target_and_missing_backend_name_the_fix(monkeypatch) -> None:
    with pytest.raises(ConversionError, match="unknown target 'caffe'; valid targets: coreml, executorch, tflite, onnx, all"):
        get_converter("caffe")
    import rapsam.convert.onnx as onnx_module

    monkeypatch.setattr(onnx_module.CONVERTER, "packages", ("no_such_package_xyz",), raising=False)
    with pytest.raises(MissingBackendError, match=r"pip install 'rapsam\[onnx\]'"):
        get_converter("onnx")


def test_manifest_validation_names_the_field() -> None:
    with pytest.raises(ManifestError, match="manifest.model is missing"):
        validate_manifest({"schema_version": 1})
    with pytest.raises(ManifestError, match="schema_version has type str"):
        validate_manifest({"schema_version": "1"})


def test_cli_errors_are_one_line(capsys) -> None:
    assert convert_main(["--target", "onnx", "--model", "rapsam_nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'rapsam_nope'")
    assert convert_main(["--target", "onnx", "--input-size", "100x64"]) == 2
    assert "multiples of 32" in capsys.readouterr().err
    assert convert_main(["--target", "onnx", "--weights", "/nonexistent.safetensors"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert convert_main(["--check", "/nonexistent"]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
