"""ExecuTorch int8: PT2E quantization with the XNNPACK quantizer, lowered into the float converter's `.pte`.

Pipeline per entry point (ExecuTorch's `examples/xnnpack/quantization` recipe):
`torch.export(...).module()` of the entry wrapper -> `prepare_pt2e` (XNNPACKQuantizer) -> calibration
feeds -> `convert_pt2e` -> `torch.export` again -> `constant_prop_pass` (quantization primitives left alone);
then all entries at once through the float converter's XNNPACK lowering into one `model.pte` with one method
per entry point, so `rapsam.convert.executorch.CONVERTER.open` runs it and its manifest method and
delegation report apply.

- "int8-static": int8 weights (per output channel, symmetric) and int8 activations (per tensor, from
  calibration ranges) for every pattern XNNPACK's quantizer knows (conv, linear, add, mul, cat, pools);
  XNNPACK runs them as integer kernels. Everything else (LayerNorm, softmax, grid_sample, ...) stays fp32
  between dequantize / quantize pairs. Activation ranges are the calibration's min / max (see
  `_min_max_activations`).
- "int8-dynamic": int8 weights of the linears only, activations quantized per call from their own range:
  nothing to calibrate (one pass over the example inputs only because `convert_pt2e` wants observed
  weights). Convolutions stay fp32, so it mostly helps the linear-heavy heads.
- Ops computed from constants alone (a linear of the query embeddings) are never quantized: they fold
  into constants, as in the float program.
- `keep_float`: fnmatch patterns of the model's module names. XNNPACK's quantizer refuses
  `set_module_name(name, None)` in executorch 1.5.1 (it asserts a config), so kept modules are excluded with
  its node filter instead: an op is annotated only if no module on its `nn_module_stack` is kept. The
  entry wrappers hold the model as `model`, so a model name `panoptic_head` is the graph's
  `model.panoptic_head`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from rapsam.convert import executorch as float_converter
from rapsam.convert.base import ConvertedFiles, TargetRequest
from rapsam.export import example_inputs, get_entry_point
from rapsam.models.rapsam import RapSAM
from rapsam.quantize.base import (
    Calibration,
    QuantizationError,
    check_calibration_entries,
    check_scheme,
    kept_modules,
)
from rapsam.quantize.pt2e import (
    WEIGHT_PRODUCTS,
    WRAPPER_PREFIX,
    constant_nodes,
    float_weight_products,
    quantize_program,
)

QUANTIZED_NAMESPACE = "quantized_decomposed."


class ExecuTorchQuantizer:
    target = "executorch"
    schemes = MappingProxyType({
        "int8-static": "int8 weights (per channel) and activations (per tensor, calibrated) for XNNPACK",
        "int8-dynamic": "int8 linear weights, activations quantized at run time; no calibration",
    })
    calibrated = frozenset({"int8-static"})

    def quantize(
        self,
        model: RapSAM,
        request: TargetRequest,
        scheme: str,
        calibration: Calibration | None,
        folder: Path,
        keep_float: Sequence[str] = (),
    ) -> ConvertedFiles:
        check_scheme(self, scheme, calibration)
        options = _options(request)
        kept = kept_modules(model, keep_float)
        programs = {}
        for entry in request.entry_points:
            feeds = _feeds(model, request, entry, scheme, calibration)
            # The float converter's forms: row gathers for the deformable convs, and depthwise kernels over 5x5
            # in column groups (whole, an int8 7x7 over 160 channels at 32x32 took 20 ms; in groups 1.8 ms).
            with float_converter.xnnpack_forms(model):
                programs[entry] = quantize_program(model, entry, request, _quantizer(scheme, kept), feeds, scheme)
        # Counted before the reductions become (fp32) products.
        float_products = {entry: len(float_weight_products(program)) for entry, program in programs.items()}
        programs = {entry: _fold_constants(float_converter.quantized_rewrites(program))
                    for entry, program in programs.items()}
        quantized_ops = {entry: _quantized_ops(program) for entry, program in programs.items()}
        edge = _lower(programs)
        delegation = {entry: float_converter._delegation(edge.exported_program(entry))
                      for entry in request.entry_points}
        if options.strict_delegation:
            float_converter._check_strict(delegation, options.backend)
        program = float_converter._to_executorch(edge)
        float_converter.check_methods_load(program, request.entry_points)
        (folder / float_converter.FILE_NAME).write_bytes(program)
        return ConvertedFiles(
            entry_files={entry: float_converter.FILE_NAME for entry in request.entry_points},
            entry_methods={entry: entry for entry in request.entry_points},
            info={
                "backend": options.backend,
                "manifest_method": float_converter.MANIFEST_METHOD,
                "non_delegated_ops": {entry: d.outside for entry, d in delegation.items()},
                "delegated_nodes": {entry: d.delegated_nodes for entry, d in delegation.items()},
                "delegate_calls": {entry: d.delegate_calls for entry, d in delegation.items()},
                "quantization": scheme,
                "kept_float": kept,
                "quantized_ops": quantized_ops,
                "float_weight_products": float_products,
            },
        )


def _options(request: TargetRequest) -> float_converter.ExecuTorchOptions:
    """The float converter's options, narrowed to what a quantized program can lower to."""
    options = float_converter.ExecuTorchOptions.parse(request.options)
    if options.backend != "xnnpack":
        raise QuantizationError(f"executorch quantization lowers to XNNPACK only, not backend={options.backend}: "
                                "its quantized ops have no portable kernels here; use backend=xnnpack")
    if request.precision != "fp32":
        raise QuantizationError(f"executorch quantization starts from the fp32 graph, not precision "
                                f"{request.precision}: drop --precision (int8 ops dequantize to fp32)")
    return options


def _feeds(model: RapSAM, request: TargetRequest, entry: str, scheme: str,
           calibration: Calibration | None) -> Sequence[Mapping[str, Any]]:
    """Inputs to observe ({contract name: array}). Dynamic quantization observes weights only, so the example
    inputs do; static scales come from the calibration images."""
    if scheme not in ExecuTorchQuantizer.calibrated:
        names = get_entry_point(entry).inputs
        inputs = example_inputs(model, entry, input_size=request.input_size, num_prompts=request.num_prompts)
        return [{name: value.numpy() for name, value in zip(names, inputs)}]
    return check_calibration_entries(calibration, [entry]).feeds[entry]


def _quantizer(scheme: str, kept: Sequence[str]) -> Any:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer()
    if scheme == "int8-static":
        quantizer.set_global(_min_max_activations(get_symmetric_quantization_config(is_per_channel=True)))
    else:
        # By op, not by nn.Linear: attention's in/out projections are `linear` ops of MultiheadAttention.
        quantizer.set_operator_type(torch.ops.aten.linear.default,
                                    get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    return quantizer.set_filter_function(_Quantizable({WRAPPER_PREFIX + name for name in kept}))


def _min_max_activations(config: Any) -> Any:
    """XNNPACK's static config with activation ranges from MinMax observers instead of its Histogram ones.

    The histogram's range search in `convert_pt2e` costs ~0.15 s per observed tensor (minutes for a full
    model on 2 cores). MinMax is what the ONNX scheme calibrates with, the demo's int8 .pte keeps 99-101% of
    its fp32 PQ and prompt mIoU with it (README), and the accuracy gate judges every artifact either way.
    """
    from dataclasses import replace

    from torchao.quantization.pt2e import MinMaxObserver

    spec = config.input_activation
    activations = replace(spec, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return replace(config, input_activation=activations, output_activation=activations)


# Inside a deformable conv only its weight product is int8: the rest computes sampling positions, flat row
# indices (up to B*H*W) and bilinear weights, coordinates that one int8 scale per tensor would move by whole
# pixels or rows.
_DEFORM_CONV = "ModulatedDeformConv2d"


class _Quantizable:
    """The quantizer's node filter: false for ops traced inside a kept module (graph names), for the sampling
    arithmetic of the deformable convs, and for ops computed from constants alone.

    Constant ops (a linear of the query embeddings, say) cost nothing at run time once folded, but
    quantized they keep their dequantize / choose_qparams in the graph, which constant folding must not
    touch: in the dynamic scheme those then fall outside XNNPACK, where ExecuTorch has no kernel for them
    ("Missing out variants: quantized_decomposed::choose_qparams").
    """

    def __init__(self, kept: set[str]) -> None:
        self.kept = kept
        self.constant: dict[Any, bool] = {}

    def __call__(self, node: Any) -> bool:
        if node.op != "call_function":
            return True  # weights and inputs: the op that uses them decides
        if node not in self.constant:
            self.constant = constant_nodes(node.graph)  # annotation inserts nodes (scalars as attributes): look again
        if self.constant[node]:
            return False
        stack = node.meta.get("nn_module_stack", {}).values()
        if str(node.target) not in WEIGHT_PRODUCTS and any(str(kind).endswith(_DEFORM_CONV) for _, kind in stack):
            return False
        # A kept module covers its submodules: the head's stages are called from its methods (prompt,
        # panoptic), never through the head's own __call__, so the head itself is not on their stack.
        return not any(path == kept or path.startswith(kept + ".") for path, _ in stack for kept in self.kept)


def _quantized_ops(program: Any) -> dict[str, int]:
    """Quantize / dequantize / choose_qparams nodes by op: proof that the scheme reached the graph."""
    ops: Counter[str] = Counter()
    for node in program.graph.nodes:
        name = str(node.target) if node.op == "call_function" else ""
        if name.startswith(QUANTIZED_NAMESPACE):
            ops[name] += 1
    return dict(sorted(ops.items()))


def _fold_constants(program: Any) -> Any:
    """The float converter's constant folding, minus the quantization primitives.

    `constant_prop_pass` skips quantize / dequantize only as edge ops, and this program is still ATen: left
    to its defaults it folds `dequantize_per_channel(int8 weight)` back into an fp32 weight, and the .pte
    silently runs float convolutions (measured: encode's .pte grew instead of shrinking).
    """
    from executorch.exir.operator.util import _QUANT_PRIMITIVES
    from executorch.exir.passes.constant_prop_pass import _DEFAULT_SKIP_TARGETS

    return float_converter.folded(program, {}, skip_targets={*_DEFAULT_SKIP_TARGETS, *_QUANT_PRIMITIVES})


def _lower(programs: Mapping[str, Any]) -> Any:
    """All entries as one EdgeProgramManager lowered to XNNPACK, as the float converter lowers them."""
    try:
        return float_converter.lower_programs(dict(programs), "xnnpack", "fp32")
    except Exception as exc:  # lowering raises many types; the first line names the op
        raise QuantizationError(f"executorch could not lower quantized {', '.join(programs)} for xnnpack: "
                                f"{float_converter._first_line(exc)}") from exc


QUANTIZER = ExecuTorchQuantizer()
