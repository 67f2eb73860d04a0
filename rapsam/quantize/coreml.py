"""CoreML compression: the float converter's ML Programs with compressed weights (and int8 activations), saved
as the same `.mlpackage` files, so `rapsam.convert.coreml.CONVERTER.open` loads them and its spec check applies.

  int8-weights  `linear_quantize_weights`: per-output-channel symmetric int8 weights
  palettize-6   `palettize_weights`: k-means, a 64-entry look-up table per weight (6-bit indices)
  palettize-4   `palettize_weights`: k-means, a 16-entry look-up table per weight (4-bit indices)
  w8a8          int8 weights and int8 activations, calibrated (iOS17+)

- Weights are decompressed by `constexpr_*` ops when the model loads: Core ML computes in `request.precision`
  (fp16 by default) either way, so the schemes shrink the files and memory traffic, not the arithmetic.
  iOS16/17 programs hold `constexpr_affine_dequantize` / `constexpr_lut_to_dense`, iOS18 programs
  `constexpr_blockwise_shift_scale` / the iOS18 `constexpr_lut_to_dense`.
- Every float constant of more than `WEIGHT_THRESHOLD` elements is compressed (coremltools' default, 2048,
  would leave the small models' 32x32 linears float; smaller tensors hold little of any model's bytes).
- Palettization keeps one table per weight tensor on every deployment target. iOS18's per-grouped-channel
  tables could fit closer, but coremltools skips (leaves float) every weight whose channel count the group
  size does not divide (the deformable convs' 27-channel offsets, the 12-channel neck), and they do not load
  on iOS16/17. K-means is scikit-learn's with a fixed seed, run on one thread: its multi-threaded Lloyd
  steps sum partial centroids in the order threads finish, which changes the last bits and so the bytes.
- w8a8: Core ML's own activation calibration (`linear_quantize_activations`) runs the model, which only macOS
  can, and coremltools' torch-side `CoreMLQuantizer` imports `torch.ao.quantization.quantizer`, which torch
  2.13 no longer has. So the torch graph is quantized with torchao's PT2E (`prepare_pt2e` -> calibration feeds
  -> `convert_pt2e`) by a small annotator of the same recipe: the activation input of each conv / linear int8
  per tensor (min/max observed), its weight int8 per output channel, symmetric. coremltools turns the
  quantize / dequantize pairs into MIL `quantize` / `dequantize` ops and the int8 weights into `constexpr_*`
  ops; the remaining float weights (transposed convs, folded constants) then get `int8-weights`.
- iOS18 multifunction packages: coremltools' compression refuses multifunction models, so each entry's model
  is compressed before the functions are merged (deterministically, so weights the entries share compress
  to the same values).
- `keep_float`: a weight stays float when its constant is a parameter of a kept module (`p_model_<path>`) or
  when an op that reads it was traced inside one (MIL op names keep the torch.export node names, whose
  `nn_module_stack` names the module; a conv fused with its BatchNorm carries the BatchNorm's name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from rapsam.convert import coreml as float_converter
from rapsam.convert.base import ConvertedFiles, TargetRequest
from rapsam.export import export_entry_point
from rapsam.models.rapsam import RapSAM
from rapsam.quantize.base import (
    Calibration,
    QuantizationError,
    check_calibration_entries,
    check_scheme,
    kept_modules,
)
from rapsam.quantize.pt2e import WRAPPER_PREFIX, quantize_program

SCHEMES = MappingProxyType({
    "int8-weights": "per-channel symmetric int8 weights (linear_quantize_weights); fp16/fp32 compute",
    "palettize-6": "6-bit k-means palettized weights, one 64-entry table per weight (palettize_weights)",
    "palettize-4": "4-bit k-means palettized weights, one 16-entry table per weight (palettize_weights)",
    "w8a8": "int8 weights and int8 conv/linear input activations calibrated on --calib (iOS17+)",
})
PALETTE_BITS = MappingProxyType({"palettize-6": 6, "palettize-4": 4})
WEIGHT_THRESHOLD = 512  # elements: constants of more than this are compressed
ACTIVATION_TARGETS = ("iOS17", "iOS18")  # MIL quantize / dequantize ops arrived with iOS17
COMPRESSION_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense",
                   "quantize", "dequantize")
KMEANS_SEED_NOTE = "scikit-learn KMeans(random_state=0) on one thread"
PARAMETER_PREFIX = "p_model_"  # torch.export's placeholder (and so MIL constant) name of a model parameter
CAST_SUFFIX = "_cast_fp16"  # what coremltools appends to an op's name when fp16 compute casts it


class CoreMLQuantizer:
    target = "coreml"
    schemes: Mapping[str, str] = SCHEMES
    calibrated = frozenset({"w8a8"})

    def quantize(
        self,
        model: RapSAM,
        request: TargetRequest,
        scheme: str,
        calibration: Calibration | None,
        folder: Path,
        keep_float: Sequence[str] = (),
    ) -> ConvertedFiles:
        """Convert each entry as the float converter does, compress it, then save and check as it does."""
        check_scheme(self, scheme, calibration)
        options = float_converter.CoreMLOptions.parse(request.options)
        if scheme in self.calibrated:
            _check_calibrated(calibration, request, options)
        kept = kept_modules(model, keep_float)
        model = model.eval()
        folder = Path(folder)
        ct = float_converter._coremltools()
        mlmodels, kept_float = {}, []
        for entry in request.entry_points:
            if scheme in self.calibrated:
                assert calibration is not None
                program = quantize_program(model, entry, request, _annotator({WRAPPER_PREFIX + k for k in kept}),
                                           calibration.feeds[entry], scheme)
                mlmodel = float_converter._convert_entry(ct, model, entry, request, options, program)
            else:
                mlmodel = float_converter._convert_entry(ct, model, entry, request, options)
            float_names = _kept_constants(mlmodel, model, entry, request, kept) if kept else []
            mlmodels[entry] = _compress(mlmodel, scheme, float_names)
            kept_float += [f"{entry}:{name}" for name in float_names]
        files = float_converter.save_converted(ct, mlmodels, folder, model, request, options)
        info = {**files.info, "quantization": scheme, "kept_float": kept_float,
                "compression_ops": {entry: {op: ops.get(op, 0) for op in COMPRESSION_OPS}
                                    for entry, ops in files.info["mil_ops"].items()},
                "weight_bytes": {name: _weight_bytes(folder / name) for name in sorted(set(files.entry_files.values()))}}
        if scheme in PALETTE_BITS:
            info["kmeans"] = KMEANS_SEED_NOTE
        if calibration is not None and scheme in self.calibrated:
            info["calibration"] = {"source": calibration.source, "digest": calibration.digest,
                                   "images": len(calibration)}
        return ConvertedFiles(entry_files=files.entry_files, entry_methods=files.entry_methods, info=info)


def _weight_bytes(package: Path) -> int:
    """Bytes of a package's weight files: what compression shrinks (the spec file holds the graph)."""
    return sum(p.stat().st_size for p in (package / "Data").rglob("weight*.bin"))


def _check_calibrated(calibration: Calibration | None, request: TargetRequest,
                      options: float_converter.CoreMLOptions) -> None:
    if options.deployment_target not in ACTIVATION_TARGETS:
        raise QuantizationError(f"w8a8 quantizes activations, which Core ML runs from iOS17: "
                                f"add --option deployment_target=iOS17 (not {options.deployment_target})")
    check_calibration_entries(calibration, request.entry_points)


# ---- weight compression (coremltools.optimize.coreml) -------------------------------------------------


def _compress(mlmodel: Any, scheme: str, float_names: Sequence[str]) -> Any:
    """The compressed copy of one in-memory ML Program; `float_names` are constants left as they are."""
    import coremltools.optimize.coreml as cto

    keep = {name: None for name in float_names}
    with float_converter._quiet_coremltools():
        if scheme in PALETTE_BITS:
            op_config = cto.OpPalettizerConfig(mode="kmeans", nbits=PALETTE_BITS[scheme],
                                               weight_threshold=WEIGHT_THRESHOLD)
            with _one_thread():
                return cto.palettize_weights(mlmodel, cto.OptimizationConfig(op_config, op_name_configs=keep))
        # w8a8's program already holds int8 weights for its convs and linears: this takes the rest
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                weight_threshold=WEIGHT_THRESHOLD)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(op_config, op_name_configs=keep))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """K-means on one thread: the same weights then give the same tables, bit for bit."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# ---- keep_float: MIL constant -> the module it belongs to ---------------------------------------------


def _kept_constants(mlmodel: Any, model: RapSAM, entry: str, request: TargetRequest,
                    kept: Sequence[str]) -> list[str]:
    """Names of the compressible float constants of `mlmodel` that belong to a kept module."""
    modules = _node_modules(model, entry, request)
    parameters = {PARAMETER_PREFIX + name.replace(".", "_"): name.rsplit(".", 1)[0]
                  for name, _ in model.named_parameters()}
    names = []
    for op in mlmodel._mil_program.functions["main"].operations:
        value = op.outputs[0].val if op.op_type == "const" else None
        if not isinstance(value, np.ndarray) or value.size <= WEIGHT_THRESHOLD or value.dtype.kind != "f":
            continue
        owners = [parameters.get(op.name.removesuffix("_to_fp16"))]
        owners += [modules.get(_node_name(child.name, modules)) for child in op.outputs[0].child_ops]
        if any(_is_kept(owner, kept) for owner in owners):
            names.append(op.name)
    return names


def _node_modules(model: RapSAM, entry: str, request: TargetRequest) -> dict[str, str]:
    """torch.export node name -> innermost module path, from the same program the converter lowers (it
    exports deterministically, so the names agree)."""
    program = export_entry_point(model, entry, input_size=request.input_size, num_prompts=request.num_prompts)
    modules = {}
    for node in program.run_decompositions({}).graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            modules[node.name] = list(stack.values())[-1][0].removeprefix(WRAPPER_PREFIX)
    return modules


def _node_name(op_name: str, nodes: Mapping[str, str]) -> str:
    """The torch.export node a MIL op came from: its name without the fp16 cast suffix, or the longest
    prefix of it that is a node (coremltools names the ops it splits one node into `<node>_<i>`)."""
    name = op_name.removesuffix(CAST_SUFFIX)
    while name not in nodes and "_" in name:
        name = name.rsplit("_", 1)[0]
    return name


def _is_kept(module: str | None, kept: Sequence[str]) -> bool:
    return module is not None and any(module == k or module.startswith(k + ".") for k in kept)


# ---- w8a8: PT2E on the torch graph, then the float converter's coremltools call -----------------------


def _annotator(kept: set[str]) -> Any:
    """A PT2E quantizer for Core ML's int8 path: conv2d / linear read an int8 per-tensor activation (min/max
    calibrated, asymmetric: ReLU outputs use the whole range) and an int8 per-output-channel symmetric weight.
    Ops traced inside a kept module, and ops on constants alone (a linear of the query embeddings, folded
    into a constant by the converter), stay float."""
    import torch
    from torchao.quantization.pt2e import MinMaxObserver, PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec, Quantizer

    activation = QuantizationSpec(torch.int8, MinMaxObserver.with_args(eps=2**-12), quant_min=-128,
                                  quant_max=127, qscheme=torch.per_tensor_affine)
    weight = QuantizationSpec(torch.int8, PerChannelMinMaxObserver.with_args(eps=2**-12), quant_min=-127,
                              quant_max=127, qscheme=torch.per_channel_symmetric, ch_axis=0)
    targets = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}

    class CoreMLInt8(Quantizer):
        def annotate(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
            dynamic: set[Any] = set()
            for node in graph.graph.nodes:  # topological: an op is dynamic when an input is
                if node.op == "placeholder" or any(i in dynamic for i in node.all_input_nodes):
                    dynamic.add(node)
            for node in graph.graph.nodes:
                if node.op != "call_function" or node.target not in targets:
                    continue
                source, weights = node.args[0], node.args[1]
                stack = [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
                if source in dynamic and weights.op == "get_attr" and not any(p in kept for p in stack):
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={source: activation, weights: weight}, _annotated=True)
            return graph

        def validate(self, graph: torch.fx.GraphModule) -> None:
            pass

    return CoreMLInt8()


QUANTIZER = CoreMLQuantizer()
