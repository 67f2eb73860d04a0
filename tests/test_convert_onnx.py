"""ONNX: convert the tiny model, run the files in onnxruntime, check names, metadata and bytes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rapsam.convert import convert
from rapsam.convert.onnx import MANIFEST_KEY, gelu_in_fusable_order
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


def test_deformable_convs_sample_by_row_gathers(converted) -> None:
    ops = Counter(n.op_type for n in onnx.load(converted.folder / "encode.onnx").graph.node)
    # four bilinear corners per deformable conv (three in the neck); ONNX Runtime's GridSample is far slower
    assert ops["GridSample"] == 0 and ops["Gather"] == 12


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


def _gelu_as_torch_onnx_writes_it():
    """`x * (0.5 * (1 + erf(x / sqrt2)))`, the node order of torch.onnx's exact GELU, constants as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    constants = [numpy_helper.from_array(np.array(value, np.float32), name)
                 for name, value in (("sqrt2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["scaled"]), helper.make_node("Erf", ["scaled"], ["erf"]),
             helper.make_node("Add", ["erf", "one"], ["one_plus"]),
             helper.make_node("Mul", ["half", "one_plus"], ["gate"]), helper.make_node("Mul", ["x", "gate"], ["y"])]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _optimized_ops(model, tmp_path: Path) -> tuple[list[str], np.ndarray]:
    """The op types ONNX Runtime runs after its graph optimizations, and its output on fixed inputs."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32) * 4
    return [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node], session.run(None, {"x": x})[0]


def test_gelus_are_reordered_for_onnxruntime_to_fuse_with_the_same_values(tmp_path: Path) -> None:
    model = _gelu_as_torch_onnx_writes_it()
    ops_before, before = _optimized_ops(model, tmp_path)
    assert "Erf" in ops_before and "Gelu" not in ops_before  # ONNX Runtime leaves this order unfused
    assert gelu_in_fusable_order(model.graph) == 1
    onnx.checker.check_model(model, full_check=True)
    ops_after, after = _optimized_ops(model, tmp_path)
    assert ops_after == ["Gelu"]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    assert gelu_in_fusable_order(model.graph) == 0  # nothing left to reorder
    model = _gelu_as_torch_onnx_writes_it()
    model.graph.node.append(onnx.helper.make_node("Identity", ["gate"], ["gate_too"]))
    assert gelu_in_fusable_order(model.graph) == 0  # the 0.5 * (1 + erf) product is read elsewhere: left as is
    model = _gelu_as_torch_onnx_writes_it()
    model.graph.output.append(onnx.helper.make_tensor_value_info("gate", onnx.TensorProto.FLOAT, [4, 64]))
    assert gelu_in_fusable_order(model.graph) == 0  # nor when it is an output of the graph
