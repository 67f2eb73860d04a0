"""The per-layer int8 sensitivity pass: the simulated int8 maths, the ranking, and --auto-keep end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rapsam
from rapsam.convert import ConversionError, convert
from rapsam.quantize import load_calibration
from rapsam.quantize.sensitivity import (
    candidate_layers,
    fake_quantize_activation,
    fake_quantize_weight,
    layer_sensitivity,
    most_sensitive,
)

SIZE, K = (64, 64), 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return rapsam.build_model("rapsam_tiny").eval()


@pytest.fixture(scope="module")
def calibration(model):
    return load_calibration("synthetic", model, input_size=SIZE, num_prompts=K, entry_points=("segment", "prompt"),
                            count=3)


@pytest.fixture(scope="module")
def ranking(model, calibration):
    return layer_sensitivity(model, calibration)


def test_int8_weights_sit_on_a_per_channel_grid_within_half_a_step() -> None:
    weight = torch.randn(5, 3, 3, 3) * torch.tensor([1e-3, 0.1, 1.0, 10.0, 0.0]).view(5, 1, 1, 1)
    quantized = fake_quantize_weight(weight)
    for row, got in zip(weight, quantized):
        step = float(row.abs().max()) / 127
        assert float((got - row).abs().max()) <= step / 2 + 1e-12
        if step:
            levels = got / step
            assert torch.allclose(levels, levels.round(), atol=1e-4) and float(levels.abs().max()) <= 127 + 1e-4
    assert torch.equal(quantized[4], weight[4])  # an all-zero channel stays zero, no division by zero


def test_int8_activations_keep_zero_exact_and_clamp_outside_the_range() -> None:
    x = torch.linspace(-1.0, 3.0, 1001)
    quantized = fake_quantize_activation(x, -1.0, 3.0)
    step = 4.0 / 255
    assert float((quantized - x).abs().max()) <= step / 2 + 1e-6
    assert len(torch.unique(quantized)) <= 256
    assert float(fake_quantize_activation(torch.zeros(3), 0.5, 2.0).abs().max()) == 0.0  # range widened to hold 0
    assert float(fake_quantize_activation(torch.tensor([10.0]), -1.0, 3.0)) == pytest.approx(3.0, abs=step)


def test_every_layer_is_ranked_once_most_sensitive_first(model, ranking) -> None:
    assert sorted(s.module for s in ranking) == sorted(candidate_layers(model))
    scores = [s.mask_iou for s in ranking]
    assert scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] < 1.0  # int8 of some layer changes some mask pixel of a random-init model
    assert {s.kind for s in ranking} >= {"Conv2d", "Linear", "MultiheadAttention"}
    top = most_sensitive(ranking, 3)
    assert top == [s.module for s in ranking[:3]]
    assert most_sensitive(ranking, 10_000) == [s.module for s in ranking if s.mask_iou < 1.0]


def test_the_pass_restores_the_model_and_is_deterministic(model, calibration, ranking) -> None:
    image = torch.from_numpy(calibration.feeds["segment"][0]["image"])
    with torch.no_grad():
        before = model.segment_logits(image)[0]
        again = layer_sensitivity(model, calibration)
        after = model.segment_logits(image)[0]
    assert torch.equal(before, after)
    assert again == ranking


def test_a_layer_whose_int8_inputs_lose_resolution_ranks_first(model, calibration) -> None:
    """An outlier in one layer's calibration inputs stretches its per-tensor int8 range, so every ordinary
    value falls into a few levels: the pass must name that layer first."""
    name = "panoptic_head.mask_heads.0.kernel_update.dynamic_layer"
    layer = model.get_submodule(name)

    def outlier(_module, args):
        x = args[0]
        return (torch.cat([x[..., :-1], torch.full_like(x[..., -1:], 1e4)], -1),)

    handle = layer.register_forward_pre_hook(outlier)
    saved = layer.weight.data.clone()
    layer.weight.data[:, -1] = 0.0  # the outlier feature is ignored by fp32: only its range hurts int8
    try:
        ranking = layer_sensitivity(model, calibration)
    finally:
        handle.remove()
        layer.weight.data = saved
    assert ranking[0].module == name, [(s.module, round(s.mask_iou, 4)) for s in ranking[:3]]


def test_auto_keep_keeps_the_ranked_layers_float_in_the_artifact(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    result, = convert("onnx", model="rapsam_tiny", random_init=True, input_size=SIZE, num_prompts=K,
                      entry_points=("segment",), quantize="int8-static", calib="synthetic", calib_count=2,
                      auto_keep=2, out_dir=tmp_path, parity=False, progress=lambda _: None)
    quantization = json.loads((result.folder / "manifest.json").read_text())["precision"]["quantization"]
    ranked = [row["module"] for row in quantization["sensitivity"]]
    assert len(ranked) == 10 and np.all(np.diff([row["mask_iou"] for row in quantization["sensitivity"]]) >= 0)
    kept = [name.split(":", 1)[1] for name in quantization["kept_float"]]  # "segment:<ONNX node>"
    assert len(kept) >= 2, ranked[:2]  # at least one node for each of the two layers
    graph = onnx.load(result.folder / "segment.onnx").graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    nodes = {n.name: n for n in graph.node}
    weights = {name: nodes[name].input[1] for name in kept}
    assert all(weight not in dequantized for weight in weights.values()), weights  # float weights, float maths
    assert any(n.input[1] in dequantized for n in graph.node if n.op_type in ("Gemm", "MatMul", "Conv"))


def test_auto_keep_needs_a_scheme(tmp_path) -> None:
    with pytest.raises(ConversionError, match="--quantize"):
        convert("onnx", model="rapsam_tiny", random_init=True, input_size=SIZE, auto_keep=2, out_dir=tmp_path)
