"""Every variant exports with torch.export at a static size and matches eager: all four entry points of the tiny
variant, `segment` (which holds `encode` and `panoptic`) and `prompt` of the full-size ones."""

from __future__ import annotations

import pytest
import torch

import rapsam
from rapsam.config import VARIANTS
from rapsam.export import ENTRY_POINTS, example_inputs, export_entry_point, get_entry_point

FULL_SIZE = [pytest.param(name, marks=pytest.mark.slow) for name in VARIANTS if name != "rapsam_tiny"]


def _check_entry_points(model, input_size: tuple[int, int], entries=tuple(ENTRY_POINTS)) -> None:
    for entry in entries:
        program = export_entry_point(model, entry, input_size=input_size, num_prompts=3)
        inputs = example_inputs(model, entry, input_size=input_size, num_prompts=3)
        with torch.no_grad():
            exported = program.module()(*inputs)
            eager = get_entry_point(entry).wrapper(model)(*inputs)
        assert len(exported) == len(get_entry_point(entry).outputs)
        for name, a, b in zip(get_entry_point(entry).outputs, exported, eager):
            assert a.shape == b.shape, (entry, name)
            assert float((a - b).abs().max()) <= 1e-5, (entry, name)


def test_tiny_variant_exports(tiny_model) -> None:
    _check_entry_points(tiny_model, (64, 96))


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_variant_exports(name: str) -> None:
    # `segment` is `panoptic(encode(image))` in one graph: it exports every op of the other two; the tiny
    # variant's test exports all four wrappers.
    _check_entry_points(rapsam.build_model(name), (128, 128), ("segment", "prompt"))


def test_exported_graph_has_no_python_fallbacks(tiny_model) -> None:
    program = export_entry_point(tiny_model, "segment", input_size=(64, 64))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert all(t.startswith("aten.") or "getitem" in t for t in targets), targets
    assert "aten.grid_sampler.default" in targets  # the deformable conv


def test_example_inputs_follow_the_contract(tiny_model) -> None:
    features, boxes, kinds = example_inputs(tiny_model, "prompt", input_size=(64, 96), num_prompts=5)
    assert features.shape == (1, 32, 16, 24)
    assert boxes.shape == (1, 5, 4) and boxes.dtype == torch.float32
    assert kinds.shape == (1, 5) and kinds.dtype == torch.int32
    with pytest.raises(ValueError, match="multiples of 32"):
        example_inputs(tiny_model, "encode", input_size=(50, 64))
