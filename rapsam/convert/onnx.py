"""ONNX: one `.onnx` file per entry point (`encode.onnx`, ...), `torch.onnx.export(..., dynamo=True)`,
simplified with onnxsim, checked with `onnx.checker`, the manifest in `metadata_props`, run by onnxruntime.

Three choices are for ONNX Runtime's CPU kernels, each with the same values (EdgeNeXt-S `segment` at 512x512):
the deformable convs sample by row gathers, not `GridSample` (38 ms of the call, against 2 ms of `Gather`);
EdgeNeXt's channels-first LayerNorms are one `LayerNormalization` between transposes, not strided reductions
(-8 ms); and exact GELUs are written in the operand order that ONNX Runtime fuses into one `Gelu` kernel.

The IR version is written down to what onnxruntime-web accepts, so the same files serve web apps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from rapsam.convert.base import ConversionError, ConvertedFiles, TargetRequest, package_version
from rapsam.export import export_entry_point, get_entry_point
from rapsam.models.backbones.edgenext import layer_norm_form
from rapsam.models.deform_conv import deform_sampler
from rapsam.models.rapsam import RapSAM

MANIFEST_KEY = "rapsam.manifest"


class OnnxConverter:
    name = "onnx"
    extra = "onnx"
    packages = ("onnx", "onnxscript", "onnxsim", "onnxruntime")
    default_precision = "fp32"
    # opset 18 runs on every current onnxruntime; IR 9 is what onnxruntime-web (max 13) and older runtimes load.
    option_defaults = MappingProxyType({"opset": 18, "ir_version": 9, "simplify": True})

    def versions(self) -> dict[str, str]:
        return {p: package_version(p) for p in self.packages}

    def convert(self, model: RapSAM, request: TargetRequest, folder: Path) -> ConvertedFiles:
        files = {}
        for entry in request.entry_points:
            proto = _export(model, entry, request)
            path = folder / f"{entry}.onnx"
            path.write_bytes(proto.SerializeToString(deterministic=True))
            files[entry] = path.name
        return ConvertedFiles(
            entry_files=files,
            entry_methods={e: None for e in files},
            info={"opset": request.options["opset"], "ir_version": request.options["ir_version"]},
        )

    def embed_manifest(self, folder: Path, files: ConvertedFiles, manifest: str) -> None:
        import onnx

        for file in files.entry_files.values():
            proto = onnx.load(folder / file)
            del proto.metadata_props[:]
            proto.metadata_props.add(key=MANIFEST_KEY, value=manifest)
            (folder / file).write_bytes(proto.SerializeToString(deterministic=True))

    def open(self, folder: Path, files: ConvertedFiles) -> OnnxRunner:
        return OnnxRunner(folder, files)


def _export(model: RapSAM, entry: str, request: TargetRequest):
    import onnx
    import torch

    with deform_sampler(model, "gather_pixels_last"), layer_norm_form(model, "channels_last"):
        program = export_entry_point(
            model, entry, input_size=request.input_size, num_prompts=request.num_prompts,
            half=request.precision == "fp16",
        )
    contract = get_entry_point(entry)
    try:
        onnx_program = torch.onnx.export(
            program, (), dynamo=True, opset_version=request.options["opset"],
            input_names=list(contract.inputs), output_names=list(contract.outputs), verbose=False,
        )
    except Exception as exc:  # the exporter raises many types; one line is what the user needs
        raise ConversionError(f"torch.onnx.export of {entry} failed: {str(exc).splitlines()[0]}") from exc
    proto = onnx_program.model_proto
    if request.options["simplify"]:
        import onnxsim

        proto, ok = onnxsim.simplify(proto)
        if not ok:
            raise ConversionError(f"onnxsim could not validate the simplified {entry}; retry with simplify=False")
    gelu_in_fusable_order(proto.graph)
    proto.ir_version = min(proto.ir_version, request.options["ir_version"])
    proto.producer_name, proto.producer_version = "rapsam", ""
    proto.doc_string = ""
    onnx.checker.check_model(proto, full_check=True)
    _check_names(proto, entry)
    return onnx.load_model_from_string(proto.SerializeToString(deterministic=True))


def gelu_in_fusable_order(graph) -> int:
    """Rewrites exact GELUs as torch.onnx writes them, `x * (0.5 * (1 + erf(x / sqrt2)))`, into
    `(x * 0.5) * (1 + erf(x / sqrt2))`, which ONNX Runtime's GeluFusion turns into one kernel (it does not match
    the first order: 18 GELUs of EdgeNeXt-S stayed five element-wise passes each). Multiplying by 0.5 is exact,
    so the values are the same bits. Returns how many were rewritten."""
    from onnx import numpy_helper

    producer = {output: node for node in graph.node for output in node.output}
    scalars = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    scalars.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t) for node in graph.node
                    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})

    def made_by(name: str, op_type: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def is_half(name: str) -> bool:
        return name in scalars and scalars[name].size == 1 and float(scalars[name]) == 0.5

    # a graph output counts as a use: rewriting the 0.5 * (1 + erf) product would change it
    uses = Counter([*(name for node in graph.node for name in node.input), *(o.name for o in graph.output)])
    rewritten = 0
    for outer in (node for node in graph.node if node.op_type == "Mul"):
        for x, scaled in (outer.input, outer.input[::-1]):
            half = made_by(scaled, "Mul")
            if half is None or uses[scaled] != 1:
                continue
            constant, one_plus = half.input if is_half(half.input[0]) else half.input[::-1]
            add = made_by(one_plus, "Add")
            erf = None if add is None else made_by(add.input[0], "Erf") or made_by(add.input[1], "Erf")
            div = None if erf is None else made_by(erf.input[0], "Div")
            if is_half(constant) and div is not None and div.input[0] == x:
                half.input[:] = [x, constant]
                outer.input[:] = [half.output[0], one_plus]
                rewritten += 1
                break
    return rewritten


def _check_names(proto, entry: str) -> None:
    contract = get_entry_point(entry)
    inputs = tuple(i.name for i in proto.graph.input)
    outputs = tuple(o.name for o in proto.graph.output)
    if inputs != contract.inputs or outputs != contract.outputs:
        raise ConversionError(f"{entry}.onnx has inputs {inputs} / outputs {outputs}, the contract says "
                              f"{contract.inputs} / {contract.outputs}")


class OnnxRunner:
    """`threads` sets ONNX Runtime's intra-op threads (default: its own choice); `providers` its execution
    providers in order of preference (default CPU)."""

    def __init__(
        self,
        folder: Path,
        files: ConvertedFiles,
        *,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime as ort

        self.runtime = f"onnxruntime {ort.__version__} ({', '.join(providers)})"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {
            entry: ort.InferenceSession(str(folder / file), options, providers=list(providers))
            for entry, file in files.entry_files.items()
        }

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[entry]
        names = [o.name for o in session.get_outputs()]
        feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
        return dict(zip(names, session.run(names, feeds)))


CONVERTER = OnnxConverter()

