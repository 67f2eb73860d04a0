"""ONNX int8: the ONNX converter's fp32 files, quantized by onnxruntime's own quantizer, one file per entry.

  int8-static   QDQ, per-channel symmetric int8 weights, per-tensor uint8 activations (MinMax calibration)
  int8-dynamic  int8 weights, activations quantized at run time (no calibration)

The files keep the converter's names, inputs and outputs, so `rapsam.convert.onnx.CONVERTER.open` runs them.
"""

from __future__ import annotations

import ast
import fnmatch
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from rapsam.convert.base import ConvertedFiles, TargetRequest
from rapsam.export import example_inputs
from rapsam.models.rapsam import RapSAM
from rapsam.quantize.base import (
    Calibration,
    check_calibration_entries,
    check_feed_shapes,
    check_scheme,
)

SCHEMES = MappingProxyType({
    "int8-static": "QDQ int8: per-channel symmetric int8 weights, uint8 activations calibrated by MinMax",
    "int8-dynamic": "int8 weights, activations quantized at run time; no calibration",
})
# Only the weight-bearing ops: they hold nearly all FLOPs and bytes, while quantizing the glue around them
# (Add, Mul, Sigmoid, Div by the class temperature, ...) adds requantization points that cost accuracy (the
# prompt head's iou fell to cosine -0.1 with ORT's default op list, 0.99 with this one) and CPU time.
STATIC_OPS = ("Conv", "Gemm", "MatMul")
DYNAMIC_OPS = ("Conv", "MatMul", "Attention")  # what ORT's dynamic (IntegerOps) registry can turn into integer ops
INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
                         "QAttention", "QGemm", "QLinearConv", "QLinearMatMul"})
COMPUTE_OPS = frozenset(STATIC_OPS + DYNAMIC_OPS + ("Gather",))
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


class OnnxQuantizer:
    target = "onnx"
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
        """Convert to fp32 in a scratch folder, then quantize each entry file into `folder` under its name."""
        from rapsam.convert.onnx import CONVERTER

        check_scheme(self, scheme, calibration)
        if scheme in self.calibrated:
            calibration = check_calibration_entries(calibration, request.entry_points)
            for entry in request.entry_points:  # before the fp32 conversion: a wrong calibration costs nothing
                check_feed_shapes(entry, calibration.feeds[entry], example_inputs(
                    model, entry, input_size=request.input_size, num_prompts=request.num_prompts))
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        options = {**CONVERTER.option_defaults, **{k: v for k, v in request.options.items()
                                                  if k in CONVERTER.option_defaults}}
        float_request = replace(request, precision="fp32", options=options)
        model = model.eval()
        with tempfile.TemporaryDirectory(prefix="rapsam-quant-onnx-") as tmp:
            scratch = Path(tmp)
            converted = CONVERTER.convert(model, float_request, scratch)
            kept: list[str] = []
            counts: dict[str, int] = {}
            float_bytes: dict[str, int] = {}
            for entry, file in converted.entry_files.items():
                prepared = _preprocess(scratch / file, scratch / f"{entry}.prepared.onnx")
                excluded = _nodes_to_keep_float(prepared, model, entry, float_request, keep_float, scheme)
                feeds = calibration.feeds[entry] if scheme in self.calibrated and calibration else None
                _quantize_file(prepared, folder / file, scheme, feeds, excluded, options["ir_version"])
                kept += [f"{entry}:{name}" for name in excluded]
                counts[file] = count_quantized_nodes(folder / file)
                float_bytes[file] = (scratch / file).stat().st_size
        info: dict[str, Any] = {**converted.info, "quantization": scheme, "kept_float": kept,
                                "quantized_nodes": counts, "float_bytes": float_bytes}
        if calibration is not None and scheme in self.calibrated:
            info["calibration"] = {"source": calibration.source, "digest": calibration.digest,
                                   "images": len(calibration)}
        return ConvertedFiles(entry_files=dict(converted.entry_files), entry_methods=dict(converted.entry_methods),
                              info=info)


def _preprocess(source: Path, target: Path) -> Path:
    """ORT's recommended pre-pass (shape inference, so the quantizer sees every tensor's type). Graph
    optimization is skipped: it renames and fuses nodes (breaking `keep_float`) and writes stray opset
    imports. Symbolic shape inference fails on contrib ops (com.microsoft Attention), so it falls back to
    ONNX shape inference, then to the file as it is: the converter already ran onnxsim's inference."""
    from onnxruntime.quantization import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(source), str(target), skip_optimization=True, skip_symbolic_shape=skip_symbolic)
            return target
        except Exception:  # noqa: BLE001, S112 - the pass is optional: any failure means "try the next option"
            continue
    return source


class _FeedReader:
    """ORT's CalibrationDataReader over one entry point's calibration feeds (a fresh iterator per pass)."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._iter: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._iter, None)
        return None if feed is None else dict(feed)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


def _reader(feeds: Sequence[Mapping[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_FeedReader, CalibrationDataReader):
        pass

    return Reader(feeds)


def _quantize_file(
    source: Path,
    target: Path,
    scheme: str,
    feeds: Sequence[Mapping[str, np.ndarray]] | None,
    exclude: Sequence[str],
    ir_version: int,
) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(prefix="rapsam-quant-") as tmp:
        raw = Path(tmp) / target.name
        if scheme == "int8-static":
            assert feeds is not None
            # U8S8 (uint8 activations, int8 weights) is the combination ORT's x86 CPU kernels run fastest: the
            # AVX2/AVX-512/VNNI integer dot products take one unsigned and one signed operand, and ARM's
            # kernels handle it too. Activations stay asymmetric (ReLU outputs use the whole uint8 range);
            # weights are per-channel symmetric, so their zero point is 0 and no correction term is needed.
            # Weights use 7 bits (reduce_range): x86 CPUs without VNNI sum u8 x s8 pairs into saturating int16
            # (vpmaddubsw), which full-range weights overflow; on such a host the tiny model's int8 features
            # fell to cosine 0.998 and the decoder's outputs to 0.84-0.90, against 0.9999 / 0.95+ with VNNI.
            quantize_static(
                str(source), str(raw), _reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=list(STATIC_OPS), nodes_to_exclude=list(exclude),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        else:
            quantize_dynamic(
                str(source), str(raw), op_types_to_quantize=list(DYNAMIC_OPS), per_channel=True,
                reduce_range=True, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
                extra_options={"WeightSymmetric": True},
            )
        _finish(raw, target, ir_version)


def _finish(raw: Path, target: Path, ir_version: int) -> None:
    """Re-serialize deterministically, at the converter's IR version, without opsets no node uses."""
    import onnx

    proto = onnx.load(raw)
    proto.ir_version = min(proto.ir_version, ir_version)
    used = {node.domain for node in proto.graph.node} | {""}
    kept = [o for o in proto.opset_import if o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    proto.producer_name, proto.producer_version = "rapsam", ""
    onnx.checker.check_model(proto)
    target.write_bytes(proto.SerializeToString(deterministic=True))


def count_quantized_nodes(path: Path) -> int:
    """Compute nodes that now run on int8: integer ops (dynamic) or ops fed by a DequantizeLinear (QDQ)."""
    import onnx

    graph = onnx.load(path).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(
        1 for n in graph.node
        if n.op_type in INTEGER_OPS
        or (n.op_type in COMPUTE_OPS and any(i in dequantized for i in n.input))
    )


# ---- keep_float: ONNX node -> the module it came from -------------------------------------------------


def _nodes_to_keep_float(
    path: Path, model: RapSAM, entry: str, request: TargetRequest, patterns: Sequence[str], scheme: str
) -> list[str]:
    """Names of the quantizable nodes of `path` whose module matches a pattern (best effort, see below)."""
    if not patterns:
        return []
    import onnx

    graph = onnx.load(path).graph
    modules = node_modules(graph, _fx_scopes(model, entry, request))
    ops = STATIC_OPS if scheme == "int8-static" else DYNAMIC_OPS
    return [n.name for n in graph.node if n.op_type in ops and _keep(modules.get(n.name), patterns)]


def _keep(module: str | None, patterns: Sequence[str]) -> bool:
    """A module is kept float when it or one of its parents matches: `panoptic_head` covers its children."""
    if module is None:
        return False
    parts = module.split(".") if module else []
    prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes for pattern in patterns)


def _fx_scopes(model: RapSAM, entry: str, request: TargetRequest) -> dict[str, str]:
    """torch.export node name -> innermost module path. The dynamo exporter names ONNX nodes and values
    after these (`node_linear_15` -> `linear_15`), but onnxsim drops its name-scope metadata, so the
    program is exported again (seconds) to recover them; only done when `keep_float` is given."""
    from rapsam.export import export_entry_point

    program = export_entry_point(model, entry, input_size=request.input_size, num_prompts=request.num_prompts)
    scopes = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            scopes[node.name] = _strip_root(list(stack.values())[-1][0])
    return scopes


def _strip_root(path: str) -> str:
    """Module paths relative to the RapSAM model: the entry-point wrapper holds it as `model`."""
    path = path.removeprefix("L['self'].").replace("/", ".").strip(".")
    return path.removeprefix("model.") if path != "model" else ""


def node_modules(graph, fx_scopes: Mapping[str, str]) -> dict[str, str]:
    """ONNX node name -> module path, from the strongest evidence a node carries:

    1. the exporter's name-scope metadata, or a legacy exporter's `/module/path/Op` node name;
    2. the torch.export node it was named after (node name without `node_`, or one of its outputs);
    3. the parameter it reads (`model.panoptic_head.pos_linear.bias` -> `panoptic_head.pos_linear`), for
       nodes onnxsim created (`Gemm_4`);
    4. otherwise a node between nodes of one module (every mapped producer and consumer agrees) joins it.
    """
    params = {i.name for i in graph.initializer if i.name.startswith("model.")}
    modules: dict[str, str] = {}
    for node in graph.node:
        module = _direct_module(node, fx_scopes, params)
        if module is not None:
            modules[node.name] = module
    producers = {o: n.name for n in graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    for node in graph.node:
        if node.name in modules:
            continue
        around = [producers[i] for i in node.input if i in producers]
        around += [c for o in node.output for c in consumers.get(o, ())]
        mapped = {modules[n] for n in around if n in modules}
        if len(mapped) == 1:
            modules[node.name] = mapped.pop()
    return modules


def _direct_module(node, fx_scopes: Mapping[str, str], params: set[str]) -> str | None:
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                scopes = prop.value
            last = scopes[-1] if isinstance(scopes, list | tuple) and scopes else scopes
            if isinstance(last, str):
                return _strip_root(last)
    if node.name.startswith("/") and node.name.count("/") > 1:
        return _strip_root(node.name.rsplit("/", 1)[0])
    for name in (node.name.removeprefix("node_"), *node.output):
        if name in fx_scopes:
            return fx_scopes[name]
    for name in node.input:
        if name in params:
            return _strip_root(name.rsplit(".", 1)[0])
    return None


QUANTIZER = OnnxQuantizer()
