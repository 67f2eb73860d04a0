"""ONNX: one `.onnx` file per entry point (`encode.onnx`, ...), `torch.onnx.export(..., dynamo=True)`,
simplified with onnxsim, checked with `onnx.checker`, the manifest in `metadata_props`, run by onnxruntime.

The IR version is written down to what onnxruntime-web accepts, so the same files serve web apps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from rapsam.convert.base import ConversionError, ConvertedFiles, TargetRequest, package_version
from rapsam.export import export_entry_point, get_entry_point
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
    proto.ir_version = min(proto.ir_version, request.options["ir_version"])
    proto.producer_name, proto.producer_version = "rapsam", ""
    proto.doc_string = ""
    onnx.checker.check_model(proto, full_check=True)
    _check_names(proto, entry)
    return onnx.load_model_from_string(proto.SerializeToString(deterministic=True))


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

