"""TFLite: convert the tiny model into one .tflite, run its signatures in ai-edge-litert, check names, numbers,
embedded manifest, runtimes, error paths and bytes.

One conversion of all four entry points is most of this file's time (about 45 s of CPU, nearly all of it
torch decompositions inside litert-torch); fp16 and determinism convert again and are marked slow.
"""

from __future__ import annotations

import itertools
import json
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

from rapsam.convert import ConversionError, convert, tflite
from rapsam.convert.base import ConvertedFiles, TargetRequest
from rapsam.convert.parity import ReferenceRunner, parity_photos
from rapsam.export import ENTRY_POINTS, example_inputs
from rapsam.inference import letterbox

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

SIZE = (64, 96)  # not square: a swapped H/W anywhere in the NHWC lowering would show
LITERT = f"ai-edge-litert {version('ai-edge-litert')}"  # the runtime key in the manifest


def _quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    [result] = convert("tflite", model="rapsam_tiny", input_size=SIZE, num_prompts=3,
                       out_dir=tmp_path_factory.mktemp("tflite"), progress=_quiet)
    return result


def _files(entries=tuple(ENTRY_POINTS)) -> ConvertedFiles:
    return ConvertedFiles(entry_files={e: tflite.MODEL_FILE for e in entries}, entry_methods={e: e for e in entries})


def test_end_to_end_writes_one_model_with_manifest_and_passing_parity(converted) -> None:
    assert converted.written and converted.parity.passed
    assert sorted(p.name for p in converted.folder.iterdir()) == ["manifest.json", "model.tflite", "parity.json"]
    assert json.loads((converted.folder / "parity.json").read_text())["passed"] is True
    manifest = json.loads((converted.folder / "manifest.json").read_text())
    assert manifest["parity"]["gate"] == "passed"
    assert manifest["entry_points"]["prompt"]["file"] == "model.tflite"
    assert manifest["entry_points"]["prompt"]["method"] == "prompt"
    assert manifest["target"]["runtimes"][LITERT] == "ok"
    assert "GATHER_ND" in manifest["target"]["builtin_ops"]  # the deformable convs' row gathers


def test_signatures_carry_the_contract_names_and_nchw_shapes(converted) -> None:
    path = converted.folder / tflite.MODEL_FILE
    found = tflite.signatures(path)
    assert set(found) == set(ENTRY_POINTS)
    for entry, contract in ENTRY_POINTS.items():
        inputs, outputs = found[entry]  # the flatbuffer keeps them sorted by name
        assert sorted(inputs) == sorted(contract.inputs) and sorted(outputs) == sorted(contract.outputs)
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("prompt")
    inputs = runner.get_input_details()
    assert inputs["features"]["shape"].tolist() == [1, 32, SIZE[0] // 4, SIZE[1] // 4]
    assert inputs["kinds"]["dtype"] == np.int32 and inputs["boxes"]["dtype"] == np.float32
    image = Interpreter(model_path=str(path)).get_signature_runner("encode").get_input_details()["image"]
    assert image["shape"].tolist() == [1, 3, *SIZE] and image["dtype"] == np.float32


def test_every_entry_point_matches_pytorch(converted, tiny_model) -> None:
    runner = tflite.CONVERTER.open(converted.folder, _files())  # the final file, manifest embedded
    reference = ReferenceRunner(tiny_model)
    photo, _ = letterbox(parity_photos()[1][1], SIZE, tiny_model.config.pixel_mean)
    for entry, contract in ENTRY_POINTS.items():
        sample = example_inputs(tiny_model, entry, input_size=SIZE, num_prompts=3)
        inputs = {name: value.numpy() for name, value in zip(contract.inputs, sample)}
        if "image" in inputs:
            inputs["image"] = photo.numpy()
        expected, actual = reference.run(entry, inputs), runner.run(entry, inputs)
        assert set(actual) == set(contract.outputs)
        for name, value in expected.items():
            assert actual[name].shape == value.shape, (entry, name)
            error = np.abs(actual[name] - value).max()
            assert error <= 1e-4 * max(1.0, np.abs(value).max()), (entry, name, error)
            if name == "mask_logits":
                assert ((actual[name] > 0) == (value > 0)).mean() >= 0.999, entry


def test_manifest_is_embedded_in_the_flatbuffer_metadata(converted) -> None:
    from ai_edge_litert import schema_py_generated as schema

    path = converted.folder / tflite.MODEL_FILE
    on_disk = (converted.folder / "manifest.json").read_text()
    assert tflite.read_embedded_manifest(path) == on_disk
    model = schema.Model.GetRootAs(path.read_bytes(), 0)  # the raw schema, as an app would read it
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert tflite.MANIFEST_KEY in names and "min_runtime_version" in names  # the converter's entry is kept


def test_embedding_again_replaces_the_entry_and_keeps_the_numbers(converted, tmp_path: Path) -> None:
    shutil.copy(converted.folder / tflite.MODEL_FILE, tmp_path / tflite.MODEL_FILE)
    tflite.CONVERTER.embed_manifest(tmp_path, _files(), '{"replaced": true}\n')
    assert tflite.read_embedded_manifest(tmp_path / tflite.MODEL_FILE) == '{"replaced": true}\n'
    assert tflite.signatures(tmp_path / tflite.MODEL_FILE) == tflite.signatures(converted.folder / tflite.MODEL_FILE)
    inputs = {"image": np.full((1, 3, *SIZE), 100.0, np.float32)}
    before = tflite.CONVERTER.open(converted.folder, _files()).run("segment", inputs)
    after = tflite.CONVERTER.open(tmp_path, _files()).run("segment", inputs)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


def test_runtimes_are_probed_in_a_child_process(converted, tmp_path: Path) -> None:
    runtimes = tflite.probe_runtimes(converted.folder / tflite.MODEL_FILE)  # the file with the manifest in it
    assert runtimes[LITERT] == "ok"
    assert runtimes == json.loads((converted.folder / "manifest.json").read_text())["target"]["runtimes"]
    assert all("\n" not in verdict for verdict in runtimes.values())
    (tmp_path / "broken.tflite").write_bytes(b"not a flatbuffer")
    broken = tflite.probe_runtimes(tmp_path / "broken.tflite")
    assert broken[LITERT] != "ok" and "\n" not in broken[LITERT]


def _litert_model(module: torch.nn.Module, sample: dict[str, torch.Tensor], path: Path) -> Path:
    import litert_torch

    litert_torch.Converter().signature("run", module, sample_kwargs=sample).convert().export(str(path))
    return path


class _PromptMask(torch.nn.Module):
    """The prompt head's pattern: prompts see only themselves, a mask built from torch.eye at run time."""

    def forward(self, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"masked": scores + (1 - torch.eye(3, dtype=scores.dtype)) * -10000.0}


def test_folding_keeps_iota_out_of_the_model(tmp_path: Path) -> None:
    sample = {"scores": torch.rand(1, 3, 3)}
    raw = _litert_model(torch.export.export(_PromptMask(), (), sample).module(), sample, tmp_path / "raw.tflite")
    assert "STABLEHLO_IOTA" in tflite.builtin_ops(raw)  # why the fold exists: no runtime here has its kernel
    assert "STABLEHLO_IOTA" in tflite.probe_runtimes(raw)[LITERT]
    module = tflite.fold_input_free_nodes(torch.export.export(_PromptMask(), (), sample).module())
    folded = _litert_model(module, sample, tmp_path / "folded.tflite")
    assert "STABLEHLO_IOTA" not in tflite.builtin_ops(folded)
    from ai_edge_litert.interpreter import Interpreter

    out = Interpreter(model_path=str(folded)).get_signature_runner("run")(scores=sample["scores"].numpy())
    np.testing.assert_allclose(out["masked"], _PromptMask()(**sample)["masked"].numpy(), atol=1e-5)


class _HalfPad(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": torch.nn.functional.pad(image.half(), (1, 1, 1, 1)).float()}


def test_an_op_litert_cannot_lower_is_one_line_naming_the_fix(tiny_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tflite, "_contract_module", lambda model, entry, request: (
        _HalfPad().eval(), {"image": torch.rand(1, 3, 8, 8)}))
    request = TargetRequest(entry_points=("encode",), input_size=(64, 64), num_prompts=3, precision="fp32")
    with pytest.raises(ConversionError) as error:
        tflite.CONVERTER.convert(tiny_model, request, tmp_path)
    message = str(error.value)
    assert "\n" not in message and "litert-torch could not convert encode" in message and "rapsam/models" in message


def test_unknown_options_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="target tflite has no options"):
        convert("tflite", model="rapsam_tiny", input_size=(64, 64), options={"quantize": "int8"}, out_dir=tmp_path)


@pytest.mark.slow
def test_fp16_stores_half_weights_and_passes_the_fp16_gate(tmp_path: Path) -> None:
    # `encode` only: fp16 is a rewrite of the finished fp32 file (`_fp16_weights`), the same for every signature.
    [result] = convert("tflite", model="rapsam_tiny", input_size=SIZE, num_prompts=3, precision="fp16",
                       entry_points=("encode",), out_dir=tmp_path, progress=_quiet)
    assert result.written and result.parity.passed
    assert result.manifest["precision"]["compute"] == "fp16" and "float16" in result.manifest["target"]["fp16"]
    path = result.folder / tflite.MODEL_FILE
    assert "DEQUANTIZE" in tflite.builtin_ops(path)
    # measured: 95% of the constant float values are stored in fp16 (the rest: small constants, no weights)
    assert _fp16_share_of_float_constants(path) > 0.9
    features = next(r for r in result.parity.rows if r.output == "features")
    assert 1e-7 < features.max_abs < 1e-2  # the weights really changed, and the features barely


def _fp16_share_of_float_constants(path: Path) -> float:
    from ai_edge_litert import schema_py_generated as schema

    model = tflite._read_model(path)
    values = {schema.TensorType.FLOAT16: 0, schema.TensorType.FLOAT32: 0}
    for tensor in model.subgraphs[0].tensors:
        data = model.buffers[tensor.buffer].data
        if tensor.type in values and data is not None:
            values[tensor.type] += data.size // (2 if tensor.type == schema.TensorType.FLOAT16 else 4)
    return values[schema.TensorType.FLOAT16] / sum(values.values())


@pytest.mark.slow
def test_same_inputs_give_identical_bytes(tiny_model, tmp_path: Path) -> None:
    # One signature: the converter's path is the same for each, and converting twice is the slow part.
    request = TargetRequest(entry_points=("prompt",), input_size=(64, 64), num_prompts=3, precision="fp32")
    contents = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        files = tflite.CONVERTER.convert(tiny_model, request, tmp_path / run)
        tflite.CONVERTER.embed_manifest(tmp_path / run, files, '{"same": "manifest"}\n')
        contents.append((tmp_path / run / tflite.MODEL_FILE).read_bytes())
    assert contents[0] == contents[1]
    # fp16 is the fp32 file's weights rewritten: the same fp32 bytes must give the same fp16 bytes
    assert tflite._fp16_weights(contents[0]) == tflite._fp16_weights(contents[1])


def test_fully_connected_weights_are_constants(converted) -> None:
    """A FULLY_CONNECTED whose weights are activations (the mask pooling, before `pixel_pooling`) repacks them on
    every call: 37 of 47 ms per decoder stage of EdgeNeXt-S at 512x512 in LiteRT. Pooling is a BATCH_MATMUL."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(converted.folder / tflite.MODEL_FILE))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    checked = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] == schema.BuiltinOperator.FULLY_CONNECTED:
                weights = graph.tensors[op.inputs[1]]
                assert model.buffers[weights.buffer].data is not None, _text(weights.name)
                checked += 1
    assert checked > 20
    assert "BATCH_MATMUL" in tflite.builtin_ops(converted.folder / tflite.MODEL_FILE)


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def test_window_profiler_times_every_op_once(converted, capsys) -> None:
    """scripts/tflite_windows.py: consecutive windows of a signature's ops, each cut out and run as its own model."""
    import importlib.util
    import re

    script = Path(__file__).parents[1] / "scripts" / "tflite_windows.py"
    spec = importlib.util.spec_from_file_location("tflite_windows", script)
    windows = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(windows)
    assert windows.main([str(converted.folder / tflite.MODEL_FILE), "--signature", "panoptic", "--window", "25",
                         "--runs", "1"]) == 0
    out = capsys.readouterr().out
    spans = [tuple(map(int, m)) for m in re.findall(r"^\[\s*(\d+),\s*(\d+)\)", out, re.MULTILINE)]
    count = int(re.search(r"\((\d+) ops of signature panoptic\)", out).group(1))
    assert spans[0][0] == 0 and spans[-1][1] == count and len(spans) == -(-count // 25)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
