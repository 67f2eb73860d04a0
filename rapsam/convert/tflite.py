"""TFLite / LiteRT: one `model.tflite` with one signature per entry point, converted by litert-torch, run by
ai-edge-litert's interpreter, the manifest in the flatbuffer's own `metadata` table as "rapsam.manifest".

Signature inputs and outputs carry the contract's names (image, features, boxes, kinds; mask_logits, ...) and
its NCHW layout: litert-torch moves to NHWC inside the graph, not at the signature. fp16 is TFLite's own
"float16 quantization" (litert-torch's `full_fp16_recipe`): conv / fully-connected weights stored as fp16
behind DEQUANTIZE ops, which GPU delegates and fp16-capable XNNPACK run in fp16 and desktop CPUs in fp32.
An fp16 graph (`export_entry_point(half=True)`) cannot be used: the TFLite converter rejects fp16 PAD,
layer norms and more ("failed to legalize operation 'tfl.pad'").
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch.fx.node import map_arg

from rapsam.convert.base import ConversionError, ConvertedFiles, TargetRequest, package_version
from rapsam.convert.executorch import xnnpack_forms
from rapsam.export import example_inputs, export_entry_point, get_entry_point
from rapsam.models.rapsam import RapSAM

MODEL_FILE = "model.tflite"
MANIFEST_KEY = "rapsam.manifest"  # name of the flatbuffer metadata entry that holds the manifest JSON
# Runtimes tried on every artifact (import path of their Interpreter, distribution name); the first is the
# one the parity check runs.
RUNTIMES = (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"))

FP16_NOTE = ("TFLite float16 quantization: CONV_2D / DEPTHWISE_CONV_2D / TRANSPOSE_CONV / FULLY_CONNECTED "
             "weights stored as fp16 behind DEQUANTIZE (litert-torch full_fp16_recipe); GPU delegates and "
             "fp16-capable XNNPACK compute in fp16, other CPUs dequantize once and compute in fp32")


class TFLiteConverter:
    name = "tflite"
    extra = "tflite"
    packages = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    default_precision = "fp32"
    option_defaults: Mapping[str, Any] = MappingProxyType({})

    def versions(self) -> dict[str, str]:
        return {p.replace("_", "-"): package_version(p) for p in self.packages}

    def convert(self, model: RapSAM, request: TargetRequest, folder: Path) -> ConvertedFiles:
        import litert_torch

        converter = litert_torch.Converter()
        # litert-torch lowers grid_sample with per-channel index arithmetic outside XNNPACK (most of
        # `encode`'s time): the deformable convs sample by row gathers here, to the same values (the pixels-last
        # form: whole channel vectors per corner, 3-5% faster than channel-major gathers for EdgeNeXt-S at
        # 512x512); and the mask pooling is a BATCH_MATMUL over chunks of pixels instead of a FULLY_CONNECTED
        # with the features as its weights. Depthwise kernels over 5x5 compute in column groups, as for
        # ExecuTorch: LiteRT's XNNPACK ran EdgeNeXt's 7x7 and 9x9 ones as grouped GEMMs.
        with xnnpack_forms(model):
            for entry in request.entry_points:
                module, sample = _contract_module(model, entry, request)
                converter.signature(entry, module, sample_kwargs=sample)
        path = folder / MODEL_FILE
        _lower(converter, request, path)
        _check_signatures(path, request.entry_points)
        runtimes = probe_runtimes(path)
        primary = _runtime_key(RUNTIMES[0][1])
        if runtimes[primary] != "ok":
            raise ConversionError(f"the converted model does not run in {primary}: {runtimes[primary]}; "
                                  f"update ai-edge-litert, or rewrite the op it names in rapsam/models")
        info: dict[str, Any] = {"layout": "NCHW at every signature, as the contract", "runtimes": runtimes,
                                "builtin_ops": builtin_ops(path)}
        if request.precision == "fp16":
            info["fp16"] = FP16_NOTE
        return ConvertedFiles(
            entry_files={e: MODEL_FILE for e in request.entry_points},
            entry_methods={e: e for e in request.entry_points},
            info=info,
        )

    def embed_manifest(self, folder: Path, files: ConvertedFiles, manifest: str) -> None:
        """Add (or replace) the metadata entry "rapsam.manifest": one more buffer, signatures untouched."""
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils

        path = folder / MODEL_FILE
        tflite = flatbuffer_utils.read_model(str(path))
        data = np.frombuffer(manifest.encode("utf-8"), dtype=np.uint8)
        tflite.metadata = tflite.metadata or []
        existing = next((m for m in tflite.metadata if _text(m.name) == MANIFEST_KEY), None)
        if existing is not None:
            tflite.buffers[existing.buffer].data = data
        else:
            tflite.buffers.append(schema.BufferT(data=data))
            tflite.metadata.append(schema.MetadataT(name=MANIFEST_KEY, buffer=len(tflite.buffers) - 1))
        flatbuffer_utils.write_model(tflite, str(path))

    def open(self, folder: Path, files: ConvertedFiles) -> LiteRTRunner:
        return LiteRTRunner(folder / MODEL_FILE)


class LiteRTRunner:
    """Runs the signatures of one .tflite through ai-edge-litert (its default XNNPACK CPU delegate)."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.runtime = f"{_runtime_key(RUNTIMES[0][1])} (CPU, XNNPACK)"
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.signatures: dict[str, Any] = {}  # one runner per signature, its tensors allocated once

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        contract = get_entry_point(entry)
        if entry not in self.signatures:
            self.signatures[entry] = self.interpreter.get_signature_runner(entry)
        outputs = self.signatures[entry](**{name: np.ascontiguousarray(inputs[name]) for name in contract.inputs})
        return {name: outputs[name] for name in contract.outputs}


def read_embedded_manifest(path: Path) -> str | None:
    """The manifest JSON embedded in a .tflite's metadata, or None when it has none."""
    tflite = _read_model(path)
    for entry in tflite.metadata or []:
        if _text(entry.name) == MANIFEST_KEY:
            return bytes(tflite.buffers[entry.buffer].data).decode("utf-8")
    return None


def builtin_ops(path: Path) -> list[str]:
    """The builtin op names the model uses: what a selective (size-reduced) TFLite runtime build must keep."""
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    tflite = _read_model(path)
    # builtinCode holds codes >= 127 that the deprecated one-byte field cannot; older writers fill only that one.
    return sorted({names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in tflite.operatorCodes})


# Loads the model and runs every signature once on zeros, in a child process: tflite-runtime 2.14 is built
# against NumPy 1.x and may crash (not only raise) under NumPy 2, which must not take the conversion down.
_PROBE = """
import importlib, sys
import numpy as np
try:
    interpreter = importlib.import_module(sys.argv[1]).Interpreter(model_path=sys.argv[2])
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        runner(**{n: np.zeros(d["shape"], d["dtype"]) for n, d in runner.get_input_details().items()})
    print("ok")
except BaseException as exc:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    print(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")
"""


def probe_runtimes(path: Path, timeout_s: float = 600.0) -> dict[str, str]:
    """"<runtime> <version>" -> "ok" where it loads the model and runs every signature, else a one-line error."""
    results = {}
    for module, distribution in RUNTIMES:
        key = _runtime_key(distribution)
        if key.endswith("not installed"):
            results[key] = "not installed"
            continue
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, module, str(path)], capture_output=True, check=False,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            results[key] = f"no answer within {timeout_s:.0f} s"
            continue
        lines = done.stdout.strip().splitlines()
        results[key] = lines[-1] if lines else f"crashed (exit code {done.returncode})"
    return results


def _runtime_key(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        return f"{distribution} not installed"


def _contract_module(
    model: RapSAM, entry: str, request: TargetRequest
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The exported entry point as a module that litert-torch names after the contract, and its sample inputs.

    litert-torch names signature inputs after keyword arguments (positional ones become args_0, ...) and
    outputs after the keys of a returned dict (a tuple gives output_0, ...).
    """
    program = export_entry_point(model, entry, input_size=request.input_size, num_prompts=request.num_prompts)
    graph = fold_input_free_nodes(program.module())
    contract = get_entry_point(entry)
    sample = example_inputs(model, entry, input_size=request.input_size, num_prompts=request.num_prompts)
    return _ContractIO(graph, contract.inputs, contract.outputs), dict(zip(contract.inputs, sample))


class _ContractIO(torch.nn.Module):
    def __init__(self, graph: torch.fx.GraphModule, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.graph_module, self.input_names, self.output_names = graph, inputs, outputs
        # An ExportedProgram's module refuses .eval(); litert-torch warns about modules in training mode.
        self.training = False

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.graph_module(*(inputs[name] for name in self.input_names))
        return dict(zip(self.output_names, outputs))


_SEEDED = torch.Tag.nondeterministic_seeded  # random ops: never folded


def fold_input_free_nodes(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Replace every computation that reads no input and no weight by its value (aranges, eyes and what is
    computed from them: the prompts' attention mask, sine-encoding frequencies, deformable-conv base grids).

    Why: the TFLite converter leaves some of them (torch.eye) as STABLEHLO_IOTA, for which neither
    ai-edge-litert 2.3 nor tflite-runtime 2.14 has a kernel ("Didn't find op for builtin opcode
    'STABLEHLO_IOTA'").
    """
    graph = graph_module.graph
    values: dict[Any, Any] = {}
    for node in graph.nodes:
        random = isinstance(node.target, torch._ops.OpOverload) and _SEEDED in node.target.tags
        if node.op == "call_function" and not random and all(n in values for n in node.all_input_nodes):
            values[node] = node.target(*map_arg(node.args, values.get), **map_arg(node.kwargs, values.get))
    # Only the last constant of each chain (one that a live node reads) becomes a buffer.
    frontier = [n for n, v in values.items() if isinstance(v, torch.Tensor) and any(u not in values for u in n.users)]
    for index, node in enumerate(frontier):
        name = f"rapsam_folded_{index}"  # stable names: the same graph gives the same bytes
        graph_module.register_buffer(name, values[node].contiguous())
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        attr.meta.update(node.meta)
        node.replace_all_uses_with(attr)
    graph.eliminate_dead_code()
    graph_module.recompile()
    return graph_module


def _lower(converter, request: TargetRequest, path: Path) -> None:
    """litert-torch's conversion of all signatures into one flatbuffer at `path`; errors reduced to one line."""
    try:
        with _litert_progress_off():
            content = converter.convert().model_content()
    except Exception as exc:  # the MLIR passes raise ValueError/RuntimeError with multi-line dumps
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"litert-torch could not convert {', '.join(request.entry_points)}: {first}; "
                              f"rewrite that op in rapsam/models so it lowers to TFLite builtins, "
                              f"or convert the other entry points (--entry-points)") from exc
    path.write_bytes(_fp16_weights(content) if request.precision == "fp16" else content)


def _fp16_weights(content: bytes) -> bytes:
    """TFLite float16 quantization with the recipe litert-torch's `full_fp16_recipe` expands to (the same
    bytes as `convert(quant_config=full_fp16_recipe())`), called directly to turn its progress report off."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    fp16 = quantizer.Quantizer(content)
    fp16.add_weight_only_config(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
        granularity=qtyping.QuantGranularity.TENSORWISE, algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    # It warns once per weight that segment shares with encode/panoptic ("overriding other previously
    # quantized data"): the same weights give the same fp16 values, so the warning is noise here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return bytes(fp16.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _litert_progress_off() -> Iterator[None]:
    """litert-torch prints a line per conversion stage unless this variable says no; the orchestrator reports."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


def _check_signatures(path: Path, entry_points: tuple[str, ...]) -> None:
    """Each signature must carry exactly the contract's tensor names (what apps and the Runner rely on)."""
    found = signatures(path)
    for entry in entry_points:
        contract = get_entry_point(entry)
        inputs, outputs = found.get(entry, ((), ()))
        if sorted(inputs) != sorted(contract.inputs) or sorted(outputs) != sorted(contract.outputs):
            raise ConversionError(f"signature {entry!r} of {MODEL_FILE} has inputs {inputs} / outputs {outputs}, "
                                  f"the contract says {contract.inputs} / {contract.outputs}; "
                                  f"use the litert-torch version of rapsam[tflite]")


def signatures(path: Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Signature key -> (input names, output names), read from the flatbuffer without a runtime."""
    return {
        _text(s.signatureKey): (tuple(_text(t.name) for t in s.inputs), tuple(_text(t.name) for t in s.outputs))
        for s in _read_model(path).signatureDefs or []
    }


def _read_model(path: Path):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model(str(path))


def _text(name: str | bytes | None) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else name or ""


CONVERTER = TFLiteConverter()
