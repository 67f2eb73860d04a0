"""PT2E (torch.export-based) static quantization of one entry point, shared by the toolchains that take a
quantized torch program: ExecuTorch (XNNPACK's quantizer) and Core ML (w8a8).

export -> `prepare_pt2e(quantizer)` -> calibration feeds -> `convert_pt2e` -> export again: the returned
ExportedProgram holds quantize / dequantize pairs around the ops the quantizer annotated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rapsam.convert.base import TargetRequest
from rapsam.export import example_inputs, get_entry_point
from rapsam.models.rapsam import RapSAM
from rapsam.quantize.base import QuantizationError, check_feed_shapes

# The entry wrappers of `rapsam.export` hold the model under this attribute name: a model module `neck` is
# the graph's `model.neck` in `nn_module_stack`.
WRAPPER_PREFIX = "model."


def quantize_program(model: RapSAM, entry: str, request: TargetRequest, quantizer: Any,
                     feeds: Sequence[Mapping[str, np.ndarray]], scheme: str) -> torch.export.ExportedProgram:
    """The entry's program with `quantizer`'s int8 pairs, calibrated on `feeds` ({contract input: array})."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    wrapper = get_entry_point(entry).wrapper(model).eval()
    inputs = example_inputs(model, entry, input_size=request.input_size, num_prompts=request.num_prompts)
    batches = torch_feeds(entry, feeds, inputs)
    step = "export"
    try:
        graph = torch.export.export(wrapper, inputs, strict=False).module()
        plain_conv_weights(graph)
        step = "prepare"
        prepared = prepare_pt2e(graph, quantizer)
        step = "calibrate"
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        step = "convert"
        converted = convert_pt2e(prepared)
        step = "export the quantized graph of"
        return torch.export.export(converted, inputs, strict=False)
    except Exception as exc:  # torch.export and PT2E raise many types; the first line names the op
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise QuantizationError(f"{scheme} could not {step} {entry}: {first}") from exc


def torch_feeds(entry: str, feeds: Sequence[Mapping[str, np.ndarray]],
                inputs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """Calibration feeds as torch tuples in the contract's order, refused if made for other shapes."""
    check_feed_shapes(entry, feeds, inputs)
    names = get_entry_point(entry).inputs
    return [tuple(torch.from_numpy(np.asarray(feed[name])) for name in names) for feed in feeds]


def plain_conv_weights(graph: torch.fx.GraphModule) -> None:
    """Give convolutions whose weight is a reshape of a parameter (the deformable conv's 1x1 product) that
    reshaped weight as a parameter of its own: `prepare_pt2e`'s conv-bn fusion needs the conv weight to be
    an attribute ("Expected get_attr node, got call_function") and folds the BatchNorm into it in place."""
    reshapes = {torch.ops.aten.reshape.default, torch.ops.aten.view.default}
    convs = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target not in convs:
            continue
        weight = node.args[1]
        if weight.op != "call_function" or weight.target not in reshapes or weight.args[0].op != "get_attr":
            continue
        value = weight.target(graph.get_parameter(weight.args[0].target), *weight.args[1:])
        name = f"{weight.args[0].target.replace('.', '_')}_{weight.name}"
        graph.register_parameter(name, torch.nn.Parameter(value.detach().clone(), requires_grad=False))
        with graph.graph.inserting_before(node):
            attribute = graph.graph.get_attr(name)
        attribute.meta.update(weight.meta)
        node.replace_input_with(weight, attribute)
    graph.graph.eliminate_dead_code()
    graph.recompile()
