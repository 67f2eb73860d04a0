"""CoreML target: conversion of every entry point, the spec checks, the manifest in the package metadata,
deterministic bytes, options and errors, and numerics: off macOS through the MIL reference evaluator
(`rapsam.convert.mil`, fp16-simulated), on macOS through Core ML checked against that evaluator.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("coremltools")

import rapsam
from rapsam.convert import convert, coreml, mil
from rapsam.convert.base import ConversionError, TargetRequest, get_converter
from rapsam.convert.manifest import converted_files
from rapsam.convert.parity import check_parity
from rapsam.export import ENTRY_POINTS, example_inputs, export_entry_point

SIZE = (64, 64)
ON_MAC = platform.system() == "Darwin"


def _request(entries: tuple[str, ...], precision: str = "fp16", size: tuple[int, int] = SIZE, **options) -> TargetRequest:
    return TargetRequest(entry_points=entries, input_size=size, num_prompts=3, precision=precision,
                         options={**coreml.CONVERTER.option_defaults, **options})


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fp16_ops(spec, function: str = "main") -> int:
    """How many MIL ops of a function output fp16 tensors (fp16 compute casts its fp32 inputs)."""
    block = next(iter(spec.mlProgram.functions[function].block_specializations.values()))
    fp16 = coreml._coremltools().proto.MIL_pb2.DataType.FLOAT16
    return sum(out.type.tensorType.dataType == fp16 for op in block.operations for out in op.outputs)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The end-to-end conversion of the tiny model, every entry point, default options (fp16, iOS17)."""
    out = tmp_path_factory.mktemp("coreml")
    (result,) = convert("coreml", model="rapsam_tiny", input_size=SIZE, num_prompts=3, out_dir=out,
                        progress=lambda m: None)
    return result


def test_end_to_end_writes_packages_manifest_and_parity(converted) -> None:
    import coremltools as ct

    folder = converted.folder
    assert converted.written and folder.name == "rapsam_tiny-64x64-coreml"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["manifest.json", "parity.json"] + [f"{e}.mlpackage" for e in ENTRY_POINTS])
    parity = json.loads((folder / "parity.json").read_text())
    assert converted.parity.passed and parity["ran"] and converted.manifest["parity"]["gate"] == "passed"
    if not ON_MAC:  # the MIL reference evaluator stands in for Core ML, in fp16 as the program says
        assert parity["runtime"].startswith("MIL reference, fp16-simulated (coremltools 9.")
        assert {row["entry"] for row in parity["results"]} == set(ENTRY_POINTS)
        assert parity["findings"] == []  # no op overflows, loses precision or departs from PyTorch
    manifest_text = (folder / "manifest.json").read_text()
    assert converted.manifest["precision"]["compute"] == "fp16"
    for entry in ENTRY_POINTS:
        package = ct.models.MLModel(str(folder / f"{entry}.mlpackage"), skip_model_load=True)
        assert package.user_defined_metadata[coreml.MANIFEST_KEY] == manifest_text
        assert coreml._CONVERSION_DATE_KEY not in package.user_defined_metadata
        assert package.author == "rapsam" and package.license.startswith("Apache-2.0")
        assert entry in package.short_description
        assert not (folder / f"{entry}.mlpackage" / coreml._DEBUG_MAPPING).exists()


def test_spec_check_reads_back_the_contract(converted) -> None:
    target = converted.manifest["target"]
    assert target["deployment_target"] == "iOS17" and target["compute_units"] == "ALL"
    check = target["spec_check"]
    assert check["specification_version"] == 8 and check["matches_contract"]
    prompt = check["entry_points"]["prompt"]
    assert [t["name"] for t in prompt["inputs"]] == ["features", "boxes", "kinds"]
    assert prompt["inputs"][2] == {"name": "kinds", "shape": [1, 3], "dtype": "int32"}
    assert prompt["outputs"][0] == {"name": "mask_logits", "shape": [1, 3, 16, 16], "dtype": "float32"}
    segment = check["entry_points"]["segment"]
    assert [t["name"] for t in segment["outputs"]] == ["mask_logits", "class_logits", "queries"]
    for entry, section in converted.manifest["entry_points"].items():
        assert [t["shape"] for t in section["inputs"]] == [t["shape"] for t in check["entry_points"][entry]["inputs"]]


def test_deformable_conv_is_a_resample_op(converted) -> None:
    mil_ops = converted.manifest["target"]["mil_ops"]
    assert set(mil_ops) == set(ENTRY_POINTS)
    for entry in ("encode", "segment"):  # grid_sample -> MIL resample, one per deformable conv
        assert mil_ops[entry]["resample"] == 3
    assert "resample" not in mil_ops["prompt"]


def test_spec_check_rejects_a_spec_that_disagrees(converted, tiny_model) -> None:
    files = {e: f"{e}.mlpackage" for e in ENTRY_POINTS}
    methods = {e: None for e in ENTRY_POINTS}
    options = coreml.CoreMLOptions.parse({})
    ct = coreml._coremltools()
    with pytest.raises(ConversionError, match="saved encode spec disagrees with the contract"):
        coreml._check_spec(ct, converted.folder, files, methods, tiny_model, _request(("encode",), size=(96, 64)), options)
    with pytest.raises(ConversionError, match="deployment_target=iOS18"):
        coreml._check_spec(ct, converted.folder, files, methods, tiny_model, _request(("prompt",)),
                           coreml.CoreMLOptions.parse({"deployment_target": "iOS18"}))


def test_fp32_is_deterministic_and_keeps_fp32_compute(tiny_model, tmp_path) -> None:
    import coremltools as ct

    digests = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        files = coreml.CONVERTER.convert(tiny_model, _request(("panoptic",), precision="fp32"), folder)
        coreml.CONVERTER.embed_manifest(folder, files, '{"same": "manifest"}\n')
        digests.append(_tree_digest(folder))
    assert digests[0] == digests[1]
    assert _fp16_ops(ct.utils.load_spec(str(tmp_path / "a" / "panoptic.mlpackage"))) == 0


def test_fp16_computes_in_fp16(converted) -> None:
    import coremltools as ct

    assert _fp16_ops(ct.utils.load_spec(str(converted.folder / "panoptic.mlpackage"))) > 0


def test_ios18_is_one_multifunction_package_with_image_input(tiny_model, tmp_path) -> None:
    import coremltools as ct

    request = _request(("encode", "prompt"), deployment_target="iOS18", image_input=True)
    files = coreml.CONVERTER.convert(tiny_model, request, tmp_path)
    assert dict(files.entry_files) == {"encode": "rapsam.mlpackage", "prompt": "rapsam.mlpackage"}
    assert dict(files.entry_methods) == {"encode": "encode", "prompt": "prompt"}
    assert files.info["multifunction"] and files.info["spec_check"]["specification_version"] == 9
    spec = ct.utils.load_spec(str(tmp_path / "rapsam.mlpackage"))
    assert [f.name for f in spec.description.functions] == ["encode", "prompt"]
    assert spec.description.defaultFunctionName == "encode"
    image = files.info["spec_check"]["entry_points"]["encode"]["inputs"][0]
    assert image == {"name": "image", "shape": [1, 3, 64, 64], "dtype": "image RGB"}
    assert files.info["spec_check"]["entry_points"]["prompt"]["inputs"][0]["dtype"] == "float32"
    assert "resample" in files.info["mil_ops"]["encode"]
    coreml.CONVERTER.embed_manifest(tmp_path, files, "{}\n")
    package = ct.models.MLModel(str(tmp_path / "rapsam.mlpackage"), skip_model_load=True)
    assert package.user_defined_metadata[coreml.MANIFEST_KEY] == "{}\n" and package.author == "rapsam"


def test_every_entry_point_stays_within_core_ml_rank(tiny_model) -> None:
    for entry in ("encode", "panoptic", "prompt", "segment"):
        program = export_entry_point(tiny_model, entry, input_size=SIZE, num_prompts=3)
        assert max(n.meta["val"].dim() for n in program.graph.nodes
                   if isinstance(n.meta.get("val"), torch.Tensor)) <= coreml.MAX_RANK


def test_rank_six_is_refused_with_the_fix() -> None:
    class Wide(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (x.reshape(2, 1, 1, 1, 1, 4).sum(-1),)

    program = torch.export.export(Wide(), (torch.ones(8),))
    with pytest.raises(ConversionError, match="rank <= 5"):
        coreml._check_rank(program, "wide")


def test_an_op_coreml_cannot_lower_names_the_op(tiny_model, tmp_path, monkeypatch) -> None:
    class Digamma(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
            return (torch.special.digamma(image + 1),)

    def export_digamma(model, entry, *, input_size, num_prompts=4, half=False):
        return torch.export.export(Digamma(), example_inputs(model, entry, input_size=input_size))

    monkeypatch.setattr(coreml, "export_entry_point", export_digamma)
    with pytest.raises(ConversionError, match="cannot convert entry point encode: .*digamma.* pick another --target"):
        coreml.CONVERTER.convert(tiny_model, _request(("encode",)), tmp_path)


@pytest.mark.parametrize(("options", "message"), [
    ({"deployment_target": "iOS15"}, "deployment_target='iOS15' is not one of iOS16, iOS17, iOS18"),
    ({"compute_units": "GPU"}, "compute_units='GPU' is not one of ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE"),
    ({"image_input": "yes"}, "image_input='yes' must be true or false"),
])
def test_bad_options_fail_before_any_work(tiny_model, tmp_path, options, message) -> None:
    with pytest.raises(ConversionError, match=message):
        coreml.CONVERTER.convert(tiny_model, _request(("encode",), **options), tmp_path)
    assert not list(tmp_path.iterdir())


def test_unknown_option_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(ConversionError, match=r"target coreml has no options \['quantize'\]"):
        convert("coreml", model="rapsam_tiny", input_size=SIZE, out_dir=tmp_path, options={"quantize": "int8"})


def test_converter_interface() -> None:
    converter = get_converter("coreml")
    assert converter is coreml.CONVERTER and converter.default_precision == "fp16"
    assert set(converter.option_defaults) == {"deployment_target", "compute_units", "image_input"}
    assert converter.versions()["coremltools"].startswith("9.")


@pytest.mark.skipif(ON_MAC, reason="off macOS the converter opens the MIL reference evaluator")
def test_open_off_macos_is_the_mil_reference(converted, tiny_model) -> None:
    from rapsam.convert.mil import MILRunner

    runner = coreml.CONVERTER.open(converted.folder, converted_files(converted.manifest))
    assert isinstance(runner, MILRunner)
    image = example_inputs(tiny_model, "encode", input_size=SIZE)[0].numpy()
    features = runner.run("encode", {"image": image})["features"]
    with torch.no_grad():
        expected = tiny_model.encode(torch.from_numpy(image)).numpy()
    assert features.shape == expected.shape and features.dtype == np.float32
    relative = np.abs(features - expected).max() / np.abs(expected).max()
    assert 1e-5 < relative < 5e-3  # fp16 storage between ops: not exact, close


@pytest.mark.skipif(ON_MAC, reason="off macOS: what parity says when the evaluator lacks an op")
def test_an_op_the_evaluator_lacks_is_named_in_the_report(converted, monkeypatch) -> None:
    monkeypatch.delitem(mil.OPS, "softmax")
    reason = coreml.CONVERTER.open(converted.folder, converted_files(converted.manifest))
    assert isinstance(reason, str) and "\n" not in reason
    assert "MIL ops softmax are not implemented by the reference evaluator" in reason


def test_fp32_program_matches_pytorch_through_the_evaluator(tiny_model, tmp_path) -> None:
    request = _request(("encode", "prompt"), precision="fp32")
    files = coreml.CONVERTER.convert(tiny_model, request, tmp_path)
    runner = mil.MILRunner(tmp_path, files.entry_files, files.entry_methods, image_input=False)
    report = check_parity(tiny_model, runner, target="coreml", entry_points=request.entry_points, input_size=SIZE,
                          num_prompts=3, precision="fp32")
    assert report.passed and report.runtime.startswith("MIL reference, fp32"), report.table()
    assert report.findings == ()
    worst = max(row.extra.get("relative_error", 0.0) for row in report.rows)
    assert worst < 1e-4  # fp32 weights, fp32 arithmetic: the program is the model


def _plant(package: Path, copy: Path, op_type: str, edit) -> str:
    """Copy a package and change one op of its program with `edit(op, block)`; the op's output name."""
    shutil.copytree(package, copy)
    ct = coreml._coremltools()
    spec = ct.utils.load_spec(str(copy))
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    op = next(op for op in block.operations if op.type == op_type)
    edit(op, block)
    (model_file,) = copy.rglob("*.mlmodel")
    model_file.write_bytes(spec.SerializeToString())
    return op.outputs[0].name


def _softmax_over_another_axis(op, block) -> None:
    axis = op.inputs["axis"].arguments[0].name
    const = next(c for c in block.operations if c.type == "const" and c.outputs[0].name == axis)
    const.attributes["val"].immediateValue.tensor.ints.values[0] = 1


def test_a_planted_semantic_bug_is_caught_and_localized(converted, tiny_model, tmp_path) -> None:
    """A softmax over the wrong axis in a copy of the prompt program: parity fails and the audit names that op."""
    planted = _plant(converted.folder / "prompt.mlpackage", tmp_path / "prompt.mlpackage", "softmax",
                     _softmax_over_another_axis)
    runner = mil.MILRunner(tmp_path, {"prompt": "prompt.mlpackage"}, {"prompt": None}, image_input=False)
    report = check_parity(tiny_model, runner, target="coreml", entry_points=("prompt",), input_size=SIZE,
                          num_prompts=3, precision="fp16")
    assert not report.passed
    assert any(f.startswith(f"prompt: differs from PyTorch at softmax {planted}") for f in report.findings), report.findings
    # the untouched program passes the same check
    clean = mil.MILRunner(converted.folder, {"prompt": "prompt.mlpackage"}, {"prompt": None}, image_input=False)
    assert check_parity(tiny_model, clean, target="coreml", entry_points=("prompt",), input_size=SIZE, num_prompts=3,
                        precision="fp16").passed


def test_the_old_hard_mask_overflows_fp16_and_the_audit_says_where(tiny_model, tmp_path, monkeypatch) -> None:
    """The hard mask once divided by fp32's smallest normal: fine in PyTorch, inf in an fp16 Core ML program
    (the constant rounds to an fp16 subnormal whose reciprocal overflows). The evaluator found it; this keeps
    the finding reproducible."""
    from rapsam.models import decoder

    def old_hard_mask(mask_logits: torch.Tensor) -> torch.Tensor:
        tiny = torch.finfo(mask_logits.dtype).tiny
        return mask_logits.clamp(0.0, tiny) / tiny

    monkeypatch.setattr(decoder, "hard_mask", old_hard_mask)
    files = coreml.CONVERTER.convert(tiny_model, _request(("prompt",)), tmp_path)
    runner = mil.MILRunner(tmp_path, files.entry_files, files.entry_methods, image_input=False)
    report = check_parity(tiny_model, runner, target="coreml", entry_points=("prompt",), input_size=SIZE,
                          num_prompts=3, precision="fp16")
    assert not report.passed
    overflows = [f for f in report.findings if "fp16 overflow in" in f]
    assert overflows and overflows[0].startswith("prompt: fp16 overflow in "), report.findings


def test_macos_runner_reports_agreement_with_the_reference(converted, tiny_model, monkeypatch) -> None:
    """On macOS each prediction is also run through the evaluator; here a stand-in for MLModel.predict (the
    reference's own outputs, one scaled by 1.01) shows what the report says."""
    files = converted_files(converted.manifest)
    reference = mil.MILRunner(converted.folder, files.entry_files, files.entry_methods, image_input=False)

    class FakeModel:
        def predict(self, feeds):
            outputs = reference.run("encode", feeds)
            return {"features": outputs["features"] * 1.01}

    runner = coreml.CoreMLRunner(converted.folder, files, "CPU_ONLY", False, reference)
    monkeypatch.setattr(runner, "_model", lambda entry: FakeModel())
    image = example_inputs(tiny_model, "encode", input_size=SIZE)[0].numpy()
    runner.run("encode", {"image": image})
    (line,) = [line for line in runner.diagnose(tiny_model, "encode", {"image": image}, SIZE, 3) if "Core ML vs" in line]
    assert line.startswith("Core ML vs MIL reference, encode features: relative error 0.01")


@pytest.mark.skipif(not ON_MAC, reason="Core ML predicts only on macOS")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_parity_on_macos(tiny_model, tmp_path, precision) -> None:
    request = _request(tuple(ENTRY_POINTS), precision=precision)
    files = coreml.CONVERTER.convert(tiny_model, request, tmp_path)
    report = check_parity(tiny_model, coreml.CONVERTER.open(tmp_path, files), target="coreml",
                          entry_points=request.entry_points, input_size=SIZE, num_prompts=3, precision=precision)
    assert report.passed, report.table()


@pytest.mark.slow
def test_bytes_are_identical_across_processes(tiny_model, tmp_path) -> None:
    """Protobuf map order follows a per-process hash seed: only a second process shows it."""
    script = ("import sys, pathlib, rapsam; from rapsam.convert import coreml; from rapsam.convert.base import TargetRequest;"
              "r = TargetRequest(('encode',), (64, 64), 3, 'fp16', coreml.CONVERTER.option_defaults);"
              "f = coreml.CONVERTER.convert(rapsam.build_model('rapsam_tiny'), r, pathlib.Path(sys.argv[1]));"
              "coreml.CONVERTER.embed_manifest(pathlib.Path(sys.argv[1]), f, '{}\\n')")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, capture_output=True)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")


@pytest.mark.slow
def test_default_model_converts_at_512(tmp_path) -> None:
    model = rapsam.build_model("rapsam_edgenext_s")
    files = coreml.CONVERTER.convert(model, _request(tuple(ENTRY_POINTS), size=(512, 512)), tmp_path)
    assert files.info["spec_check"]["entry_points"]["segment"]["outputs"][0]["shape"] == [1, 100, 128, 128]
    assert files.info["mil_ops"]["encode"]["resample"] == 3
