"""LiteRT int8 / fp16: the TFLite converter's fp32 `model.tflite`, quantized by ai-edge-quantizer, signatures kept.

  int8-static   int8 weights (per output channel, symmetric) and int8 activations (per tensor, min/max ranges
                calibrated per signature) for CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED,
                with QUANTIZE / DEQUANTIZE around them; everything else (layer norms, softmax, attention's
                activation-by-activation BATCH_MATMULs, gathers) stays fp32
  int8-dynamic  int8 weights of every op ai-edge-quantizer can quantize dynamically; activations are quantized
                by the kernels at run time; no calibration
  fp16          fp16 weights behind DEQUANTIZE: the float converter's own `--precision fp16` recipe

Signature inputs and outputs stay float32 and keep the contract's names, so the float converter's `open`
(LiteRTRunner), `embed_manifest` and the shared parity check apply unchanged.

Why only the weight-bearing ops in int8-static: quantizing every op (ai-edge-quantizer's default a8w8 recipe)
puts the layer norms' MEAN / SQUARED_DIFFERENCE / RSQRT and attention's BATCH_MATMULs in int8; on the tiny
model the panoptic outputs fell to cosine 0.4-0.5 (class logits -0.08) that way, 0.94-0.96 with this op list.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from rapsam.convert.base import ConvertedFiles, TargetRequest
from rapsam.export import get_entry_point
from rapsam.models.rapsam import RapSAM
from rapsam.quantize.base import (
    Calibration,
    QuantizationError,
    check_calibration_entries,
    check_scheme,
    kept_modules,
)

SCHEMES = MappingProxyType({
    "int8-static": "int8 weights (per channel) and activations (per tensor, calibrated) of conv / fully-connected "
                   "ops; float32 signatures",
    "int8-dynamic": "int8 weights, activations quantized at run time by the kernels; no calibration",
    "fp16": "fp16 weights behind DEQUANTIZE (TFLite float16 quantization); no calibration",
})
# The ops both int8 schemes quantize (ai-edge-quantizer's names). Not BATCH_MATMUL: its dynamic recipe
# quantizes a constant left operand (the query embeddings' products), which the kernel refuses ("lhs float32
# and rhs int8" only); statically, attention's activation-by-activation products lose too much (see above).
QUANTIZED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE")
# Builtin op -> (index of its weight input, axis of the weight's output channels in TFLite's layout).
WEIGHTED_OPS = MappingProxyType({
    "FULLY_CONNECTED": (1, 0), "CONV_2D": (1, 0), "TRANSPOSE_CONV": (1, 0), "DEPTHWISE_CONV_2D": (1, 3),
    "BATCH_MATMUL": (1, 0), "EMBEDDING_LOOKUP": (1, 0),
})
QUANTIZED_TYPES = ("INT8", "INT16", "FLOAT16")
BIAS_INPUTS = MappingProxyType({"FULLY_CONNECTED": 2, "CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "TRANSPOSE_CONV": 3})


class LiteRTQuantizer:
    target = "tflite"
    schemes: Mapping[str, str] = SCHEMES
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
        """Convert to fp32 in a scratch folder, then quantize that flatbuffer into `folder`/model.tflite."""
        from rapsam.convert.tflite import CONVERTER, FP16_NOTE, MODEL_FILE, builtin_ops, probe_runtimes

        check_scheme(self, scheme, calibration)
        if request.precision != "fp32":
            raise QuantizationError(f"tflite quantization starts from the fp32 model, not precision "
                                    f"{request.precision}: drop --precision (use --quantize fp16 for fp16 weights)")
        feeds = _calibration_feeds(calibration, request.entry_points) if scheme in self.calibrated else None
        kept = kept_modules(model, keep_float)
        if kept and scheme == "fp16":
            raise QuantizationError("keep_float does not apply to fp16: fp16 weights are dequantized to fp32 "
                                    "before every op; drop --keep-float or use an int8 scheme")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rapsam-quant-tflite-") as tmp:
            converted = CONVERTER.convert(model.eval(), replace(request, precision="fp32"), Path(tmp))
            content = (Path(tmp) / MODEL_FILE).read_bytes()
        quantized, kept_ops = quantize_flatbuffer(content, scheme, feeds, model=model, kept=kept)
        path = folder / MODEL_FILE
        path.write_bytes(quantized)
        runtimes = probe_runtimes(path)
        primary, status = next(iter(runtimes.items()))  # the runtime the parity check runs
        if status != "ok":
            raise QuantizationError(f"the {scheme} model does not run in {primary}: {status}; update "
                                    "ai-edge-litert / ai-edge-quantizer, or name the failing module in --keep-float")
        info: dict[str, Any] = {
            **converted.info, "runtimes": runtimes, "builtin_ops": builtin_ops(path),
            "quantization": scheme, "kept_float": kept_ops, "quantized_ops": quantized_ops(path),
            "float_bytes": {MODEL_FILE: len(content)},
        }
        if scheme == "fp16":
            info["fp16"] = FP16_NOTE
        if feeds is not None and calibration is not None:
            info["calibration"] = {"source": calibration.source, "digest": calibration.digest,
                                   "images": len(calibration)}
        return ConvertedFiles(entry_files=dict(converted.entry_files), entry_methods=dict(converted.entry_methods),
                              info=info)


def _calibration_feeds(
    calibration: Calibration | None, entry_points: Sequence[str]
) -> dict[str, list[dict[str, np.ndarray]]]:
    """{signature: [feed]}: every entry point's feeds, each with every contract input (checked here, because
    ai-edge-quantizer would fail deep inside its interpreter or calibrate nothing)."""
    calibration = check_calibration_entries(calibration, entry_points)
    feeds = {}
    for entry in entry_points:
        names = get_entry_point(entry).inputs
        lacking = sorted({n for feed in calibration.feeds[entry] for n in names if n not in feed})
        if lacking:
            raise QuantizationError(f"calibration feeds of {entry} lack input {', '.join(lacking)}; it takes "
                                    f"{', '.join(names)}: make the calibration again with load_calibration")
        feeds[entry] = [{n: np.ascontiguousarray(feed[n]) for n in names} for feed in calibration.feeds[entry]]
    return feeds


def quantize_flatbuffer(
    content: bytes,
    scheme: str,
    feeds: Mapping[str, Sequence[Mapping[str, np.ndarray]]] | None = None,
    *,
    model: RapSAM | None = None,
    kept: Sequence[str] = (),
) -> tuple[bytes, list[str]]:
    """The fp32 flatbuffer `content` quantized with `scheme`, and the ops left float for the `kept` modules of
    `model` ("signature:OP:output tensor")."""
    from rapsam.convert.tflite import _fp16_weights

    if scheme == "fp16":
        return _fp16_weights(content), []
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    kept_ops = _ops_to_keep_float(content, model, kept) if kept else []
    float_scopes = {op.rsplit(":", 1)[1] for op in kept_ops}
    if scheme == "int8-static":
        float_scopes |= _activation_products(content)
    engine = quantizer.Quantizer(_flat_biases(content))
    if scheme == "int8-static":
        for op in QUANTIZED_OPS:
            engine.add_static_config(".*", qtyping.TFLOperationName(op), activation_num_bits=8, weight_num_bits=8)
    else:
        for op in QUANTIZED_OPS:
            engine.add_dynamic_config(".*", qtyping.TFLOperationName(op), num_bits=8)
    # Signature inputs and outputs stay float32: integer ones would break the contract the apps call.
    for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        engine.update_quantization_recipe(".*", io, algorithm_key=AlgorithmName.NO_QUANTIZE)
    if float_scopes:  # later rules win: these ops match no quantizing rule any more
        scopes = sorted(name + ";" for name in float_scopes)
        engine.update_quantization_recipe("^(?:" + "|".join(map(re.escape, scopes)) + ")$",
                                          qtyping.TFLOperationName.ALL_SUPPORTED,
                                          algorithm_key=AlgorithmName.NO_QUANTIZE)
    with _quiet():
        ranges = engine.calibrate(dict(feeds), num_threads=min(4, os.cpu_count() or 1)) if feeds else None
        result = engine.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
    return _float_outputs(bytes(result.quantized_model)), kept_ops


def _flat_biases(content: bytes) -> bytes:
    """Biases of the quantized ops as the 1-D tensors TFLite's kernels read them as.

    litert-torch writes some (EdgeNeXt's channels-last linears, the neck's transposed convs) as (1, 1, 1, C);
    ai-edge-quantizer then quantizes them per channel along axis 0 (size 1) and the interpreter refuses the
    model ("num_scales must be 1 ... but got 168"). The values and their order are the same either way.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    tflite = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    changed = False
    for subgraph in tflite.subgraphs:
        for op in subgraph.operators:
            index = BIAS_INPUTS.get(_opname(tflite, op))
            if index is None or len(op.inputs) <= index or op.inputs[index] < 0:
                continue
            bias = subgraph.tensors[op.inputs[index]]
            if bias.shape is not None and len(bias.shape) > 1 and _is_constant(tflite, subgraph, op.inputs[index]):
                bias.shape = np.array([int(np.prod(bias.shape))], dtype=np.int32)
                bias.shapeSignature = None
                changed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tflite)) if changed else content


def _activation_products(content: bytes) -> set[str]:
    """Output names of the FULLY_CONNECTED ops whose "weight" is an activation: the mask products (kernels x
    pixel features). With both operands quantized per tensor the prompt masks fell to cosine 0.61 on the tiny
    model; they hold no weight to shrink, so they stay float."""
    from ai_edge_litert.tools import flatbuffer_utils

    tflite = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    return {
        _text(subgraph.tensors[op.outputs[0]].name)
        for subgraph in tflite.subgraphs for op in subgraph.operators
        if _opname(tflite, op) == "FULLY_CONNECTED" and not _is_constant(tflite, subgraph, op.inputs[1])
    }


@contextmanager
def _quiet() -> Iterator[None]:
    """ai-edge-quantizer logs a warning per weight that signatures share ("overriding other previously quantized
    data in buffer"): the same weights give the same int8 values, so it is noise here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _float_outputs(content: bytes) -> bytes:
    """Point each signature output back at its float32 tensor.

    ai-edge-quantizer 0.10 keeps outputs float (OUTPUT is not quantized) except one that other ops also read
    (`queries` feeds the mask products): it then quantizes that tensor for its int8 readers and redirects the
    output to the QUANTIZE op's int8 result, whose buffer the interpreter never fills ("Tensor data is null").
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tflite = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    changed = False
    for index, subgraph in enumerate(tflite.subgraphs):
        quantized_from = {
            int(op.outputs[0]): int(op.inputs[0]) for op in subgraph.operators
            if _opname(tflite, op) == "QUANTIZE" and subgraph.tensors[op.inputs[0]].type == schema.TensorType.FLOAT32
        }
        if not any(int(t) in quantized_from for t in subgraph.outputs):
            continue
        changed = True
        subgraph.outputs = [quantized_from.get(int(t), int(t)) for t in subgraph.outputs]
        for signature in tflite.signatureDefs or []:
            if signature.subgraphIndex == index:
                for output in signature.outputs:
                    output.tensorIndex = quantized_from.get(output.tensorIndex, output.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tflite)) if changed else content


def quantized_ops(path: Path) -> dict[str, dict[str, int]]:
    """{signature: {op type: count}} of the compute ops that read an int8 / fp16 tensor, or a constant that a
    DEQUANTIZE expands: the proof that the scheme reached the graph."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    tflite = flatbuffer_utils.read_model(str(path))
    types = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
    counts: dict[str, dict[str, int]] = {}
    for signature in tflite.signatureDefs or []:
        subgraph = tflite.subgraphs[signature.subgraphIndex]
        dequantized = {int(op.outputs[0]) for op in subgraph.operators
                       if _opname(tflite, op) == "DEQUANTIZE" and _is_constant(tflite, subgraph, op.inputs[0])}
        ops = Counter(
            _opname(tflite, op) for op in subgraph.operators
            if _opname(tflite, op) not in ("QUANTIZE", "DEQUANTIZE")
            and any(t >= 0 and (types[subgraph.tensors[t].type] in QUANTIZED_TYPES or t in dequantized)
                    for t in op.inputs)
        )
        counts[_text(signature.signatureKey)] = dict(sorted(ops.items()))
    return counts


# ---- keep_float: TFLite op -> the module it came from ---------------------------------------------------
#
# litert-torch names tensors after the module stack of the program it converts, but the float converter hands
# it a flat graph (`_ContractIO` around the exported entry point), so every name is `..._ContractIO;<n>` and
# carries no module path. The weights do: each conv / fully-connected op reads a constant that is a parameter
# of one module, up to layout (OIHW -> OHWI), a split along the output channels (attention's in_proj into q, k,
# v) and a per-channel scale (batch norm folded into the conv). Ops without weights take the side of their
# neighbours when all labelled neighbours agree.


def _ops_to_keep_float(content: bytes, model: RapSAM | None, kept: Sequence[str]) -> list[str]:
    """"signature:OP:output tensor" of the quantizable ops inside a kept module."""
    from ai_edge_litert.tools import flatbuffer_utils

    assert model is not None, "keep_float needs the model whose modules it names"
    tflite = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    params = _weight_index(model)
    found: list[str] = []
    for signature in tflite.signatureDefs or []:
        subgraph = tflite.subgraphs[signature.subgraphIndex]
        labels = _propagate(subgraph, {
            i: _keep(module, kept) for i, op in enumerate(subgraph.operators)
            if (module := _weight_module(tflite, subgraph, op, params)) is not None
        })
        for i, op in enumerate(subgraph.operators):
            name = _opname(tflite, op)
            if labels.get(i) and _aeq_name(name) in QUANTIZED_OPS:
                found.append(f"{_text(signature.signatureKey)}:{name}:{_text(subgraph.tensors[op.outputs[0]].name)}")
    if not found:
        raise QuantizationError(f"keep_float modules {', '.join(kept)} own no quantizable op of the TFLite "
                                "model (its ops were matched to modules by their weights): drop --keep-float "
                                "or name a module with conv / linear layers")
    return found


def _keep(module: str, kept: Sequence[str]) -> bool:
    return any(module == k or module.startswith(k + ".") for k in kept)


def _aeq_name(builtin: str) -> str:
    return "CONV_2D_TRANSPOSE" if builtin == "TRANSPOSE_CONV" else builtin


def _fingerprint(weight: np.ndarray, axis: int) -> np.ndarray:
    """(C, N) per output channel: its sorted values over its largest magnitude. Invariant to the layout of the
    other axes and to a positive per-channel scale (a folded batch norm)."""
    rows = np.sort(np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1).astype(np.float64), axis=1)
    scale = np.abs(rows).max(axis=1, keepdims=True)
    return rows / np.where(scale == 0, 1.0, scale)


def _weight_index(model: RapSAM) -> list[tuple[str, np.ndarray]]:
    """(module name, weight) for every parameter or buffer with two or more axes."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [(name.rsplit(".", 1)[0], t.detach().cpu().numpy()) for name, t in tensors if t.dim() >= 2]


def _weight_module(tflite, subgraph, op, params: Sequence[tuple[str, np.ndarray]]) -> str | None:
    """The one module whose weight (or a block of its output channels) this op reads, if exactly one."""
    name = _opname(tflite, op)
    if name not in WEIGHTED_OPS:
        return None
    index, axis = WEIGHTED_OPS[name]
    weight = _constant(tflite, subgraph, op.inputs[index]) if len(op.inputs) > index else None
    if weight is None or weight.ndim < 2:
        return None
    channels, target = weight.shape[axis], _fingerprint(weight, axis)
    hits = set()
    for module, param in params:
        for param_axis in (0, 1):
            size = param.shape[param_axis]
            if param.size * channels != weight.size * size or size % channels:
                continue
            for block in np.split(param, size // channels, axis=param_axis):
                if np.allclose(_fingerprint(block, param_axis), target, atol=1e-4):
                    hits.add(module)
    return hits.pop() if len(hits) == 1 else None


def _propagate(subgraph, labels: dict[int, bool]) -> dict[int, bool]:
    """Label the unlabelled ops whose labelled producers and consumers all agree, until nothing changes."""
    producer = {int(t): i for i, op in enumerate(subgraph.operators) for t in op.outputs}
    neighbours: dict[int, set[int]] = {i: set() for i in range(len(subgraph.operators))}
    for i, op in enumerate(subgraph.operators):
        for t in op.inputs:
            if int(t) in producer:
                neighbours[i].add(producer[int(t)])
                neighbours[producer[int(t)]].add(i)
    labels = dict(labels)
    changed = True
    while changed:
        changed = False
        for i, around in neighbours.items():
            seen = {labels[n] for n in around if n in labels}
            if i not in labels and len(seen) == 1:
                labels[i] = seen.pop()
                changed = True
    return labels


# ---- flatbuffer helpers -------------------------------------------------------------------------------


def _opname(tflite, op) -> str:
    code = tflite.operatorCodes[op.opcodeIndex]
    # builtinCode holds codes >= 127 that the deprecated one-byte field cannot; older writers fill only that one.
    return _builtin_names()[max(code.builtinCode, code.deprecatedBuiltinCode)]


@functools.cache
def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _is_constant(tflite, subgraph, tensor: int) -> bool:
    buffer = tflite.buffers[subgraph.tensors[tensor].buffer]
    return buffer.data is not None and len(buffer.data) > 0


def _constant(tflite, subgraph, tensor: int) -> np.ndarray | None:
    """A float32 constant tensor's value, else None."""
    from ai_edge_litert import schema_py_generated as schema

    if tensor < 0 or not _is_constant(tflite, subgraph, tensor):
        return None
    t = subgraph.tensors[tensor]
    if t.type != schema.TensorType.FLOAT32:
        return None
    return np.frombuffer(bytes(tflite.buffers[t.buffer].data), np.float32).reshape(t.shape)


def _text(name: str | bytes | None) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else name or ""


QUANTIZER = LiteRTQuantizer()
