"""CoreML target: conversion of every entry point, the spec checks that stand in for a runtime off macOS,
the manifest in the package metadata, deterministic bytes, options and errors.

Core ML predicts only on macOS, so the numeric parity test runs there and is skipped elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("coremltools")

import rapsam  # noqa: E402
from rapsam.convert import check_artifact, convert  # noqa: E402
from rapsam.convert import coreml  # noqa: E402
from rapsam.convert.base import ConversionError, TargetRequest, get_converter  # noqa: E402
from rapsam.convert.parity import check_parity  # noqa: E402
from rapsam.export import ENTRY_POINTS, example_inputs, export_entry_point  # noqa: E402

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
    if not ON_MAC:  # no Core ML runtime: said plainly, gated as not run
        assert not converted.parity.ran and not parity["ran"]
        assert converted.parity.reason.startswith("CoreML runs only on macOS: numerics not run here (spec checked:")
        assert converted.manifest["parity"]["gate"] == "not_run"
    else:
        assert converted.parity.passed
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


@pytest.mark.skipif(ON_MAC, reason="off macOS the converter must say why numerics do not run")
def test_open_off_macos_gives_the_reason(converted) -> None:
    from rapsam.convert.base import ConvertedFiles

    files = ConvertedFiles({e: f"{e}.mlpackage" for e in ENTRY_POINTS}, {e: None for e in ENTRY_POINTS},
                           converted.manifest["target"])
    reason = coreml.CONVERTER.open(converted.folder, files)
    assert isinstance(reason, str) and "\n" not in reason
    assert "encode, panoptic, prompt, segment match the contract" in reason and "iOS17" in reason


@pytest.mark.skipif(ON_MAC, reason="off macOS the converter must say why numerics do not run")
def test_check_of_a_converted_folder_reports_not_run(converted) -> None:
    report = check_artifact(converted.folder, progress=lambda m: None)
    assert not report.ran and report.reason.startswith("CoreML runs only on macOS")


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
