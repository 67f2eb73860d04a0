"""PT2E (torch.export-based) static quantization of one entry point, shared by the toolchains that take a
quantized torch program: ExecuTorch (XNNPACK's quantizer) and Core ML (w8a8).

export -> `prepare_pt2e(quantizer)` -> calibration feeds -> `convert_pt2e` -> export again: the returned
ExportedProgram holds quantize / dequantize pairs around the ops the quantizer annotated.
"""

from __future__ import annotations

import operator
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
# The ops whose weight operand a quantizer makes int8.
WEIGHT_PRODUCTS = frozenset({"aten.conv2d.default", "aten.convolution.default", "aten.linear.default"})


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
        plain_weights(graph)
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


def plain_weights(graph: torch.fx.GraphModule) -> None:
    """Give every conv and linear whose weight is computed from parameters alone (a reshape, a slice, an
    unsqueeze: the deformable conv's 1x1 product, EdgeNeXt's linears as 1x1 convs and its depthwise kernels
    in column groups) that weight as a parameter of its own. Quantizers observe and quantize a weight only
    when it is an attribute: computed, it stayed fp32 (an int8 EdgeNeXt-S `.pte` of 28.5 MB instead of 14.8,
    its pointwise convs float), and `prepare_pt2e`'s conv-bn fusion fails on it ("Expected get_attr node,
    got call_function")."""
    constant = constant_nodes(graph.graph)
    computed: dict[torch.fx.Node, Any] = {}

    def value(node: Any) -> Any:
        """The value of a constant node (or of a literal argument)."""
        if not isinstance(node, torch.fx.Node):
            return node
        if node not in computed:
            if node.op == "get_attr":
                computed[node] = operator.attrgetter(node.target)(graph)
            else:
                args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), value)
                computed[node] = node.target(*args, **kwargs)
        return computed[node]

    for node in list(graph.graph.nodes):
        if node.op != "call_function" or str(node.target) not in WEIGHT_PRODUCTS:
            continue
        weight = node.args[1]
        if weight.op != "call_function" or not constant[weight]:
            continue
        name = f"{weight.name}_weight"
        graph.register_parameter(name, torch.nn.Parameter(value(weight).detach().clone(), requires_grad=False))
        with graph.graph.inserting_before(node):
            attribute = graph.graph.get_attr(name)
        attribute.meta.update(weight.meta)
        node.replace_input_with(weight, attribute)
    graph.graph.eliminate_dead_code()
    graph.recompile()


def constant_nodes(graph: torch.fx.Graph) -> dict[torch.fx.Node, bool]:
    """Whether each node of a graph module's graph is computed from its attributes (parameters, constants)
    alone."""
    constant: dict[torch.fx.Node, bool] = {}
    for node in graph.nodes:  # topological order: inputs are known before their users
        constant[node] = node.op == "get_attr" or (
            node.op == "call_function" and all(constant[i] for i in node.all_input_nodes))
    return constant


def float_weight_products(program: torch.export.ExportedProgram) -> list[str]:
    """The convs and linears of a quantized program that run on a float weight (not a dequantized int8
    constant): the kept modules', and any the quantizer missed. Products of constants alone (a linear of the
    query embeddings) are left out: the converters fold them."""
    inputs = set(program.graph_signature.user_inputs)
    variable: set[torch.fx.Node] = set()
    names = []
    for node in program.graph.nodes:  # topological order
        if node.op == "placeholder" and node.name in inputs or any(i in variable for i in node.all_input_nodes):
            variable.add(node)
        if node in variable and node.op == "call_function" and str(node.target) in WEIGHT_PRODUCTS \
                and "dequantize" not in str(getattr(node.args[1], "target", "")):
            names.append(node.name)
    return names
