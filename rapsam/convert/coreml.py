"""CoreML target: every entry point as an ML Program (`.mlpackage`), converted by coremltools from the
`torch.export` program of `rapsam.export`.

- iOS16 / iOS17: one package per entry point (`encode.mlpackage`, ...). iOS18: one multifunction package
  (`rapsam.mlpackage`, one function per entry point; weights the entries share are stored once).
- Precision is Core ML's compute precision (fp16 by default, as Apple's GPU and Neural Engine run it);
  inputs and outputs stay the contract's float32 / int32 either way.
- The saved spec's input/output names, shapes and dtypes are checked against the contract, and the
  specification version. Core ML predicts only on macOS; elsewhere the parity checker runs the saved ML
  Program through `rapsam.convert.mil`'s reference evaluator (fp16-simulated where the program computes in
  fp16), and on macOS it runs both and reports how far the device is from the evaluator.
- The bytes are deterministic: coremltools' random package identifiers, unordered protobuf maps and
  conversion date are normalised after every save (see `_normalise_package`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import tempfile
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

import rapsam
from rapsam.convert import mil
from rapsam.convert.base import ConversionError, ConvertedFiles, TargetRequest, package_version
from rapsam.convert.manifest import spec_key, tensor_specs
from rapsam.export import export_entry_point, get_entry_point
from rapsam.models.rapsam import RapSAM

# deployment target -> Core ML specification version it implies
SPEC_VERSIONS = {"iOS16": 7, "iOS17": 8, "iOS18": 9}
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
MULTIFUNCTION_TARGET = "iOS18"  # the first target whose runtime loads multifunction packages
MULTIFUNCTION_FILE = "rapsam.mlpackage"
MANIFEST_KEY = "rapsam.manifest"
IMAGE_INPUTS = ("image",)  # inputs that become a ct.ImageType with `image_input`
MAX_RANK = 5  # Core ML rejects tensors of higher rank
# coremltools writes this beside the model for ExecuTorch's CoreML delegate; it is no part of the package.
_DEBUG_MAPPING = "executorch_debug_handle_mapping.json"
_CONVERSION_DATE_KEY = "com.github.apple.coremltools.conversion_date"
_PACKAGE_NAMESPACE = uuid.UUID("5b6f0c1e-7f43-4f55-9a55-7261707361d0")  # fixed: package ids from item paths


@dataclass(frozen=True)
class CoreMLOptions:
    deployment_target: str
    compute_units: str
    image_input: bool

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> CoreMLOptions:
        merged = {**CONVERTER.option_defaults, **options}
        target, units, image = merged["deployment_target"], merged["compute_units"], merged["image_input"]
        if target not in SPEC_VERSIONS:
            raise ConversionError(f"coreml option deployment_target={target!r} is not one of {', '.join(SPEC_VERSIONS)}")
        if units not in COMPUTE_UNITS:
            raise ConversionError(f"coreml option compute_units={units!r} is not one of {', '.join(COMPUTE_UNITS)}")
        if not isinstance(image, bool):
            raise ConversionError(f"coreml option image_input={image!r} must be true or false")
        return cls(target, units, image)

    @property
    def multifunction(self) -> bool:
        return self.deployment_target == MULTIFUNCTION_TARGET


@contextlib.contextmanager
def _quiet_coremltools() -> Iterator[None]:
    """Keep coremltools to its errors: it logs a warning per int64 constant and per missing macOS binding,
    draws progress bars on stderr, and warns of an overflow when it lowers `clamp(min=...)` in fp16 (its
    float32-max upper bound becomes +inf, which clips nothing, as intended)."""
    log = logging.getLogger("coremltools")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"coremltools\.")  # its own APIs
            yield
    finally:
        log.setLevel(level)


def _coremltools() -> Any:
    with _quiet_coremltools():
        import coremltools

    return coremltools


def _check_rank(program: torch.export.ExportedProgram, entry: str) -> None:
    """Core ML rejects tensors above rank 5; the model is written to stay within it."""
    for node in program.graph.nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor) and value.dim() > MAX_RANK:
            raise ConversionError(f"coreml: {entry} makes a rank-{value.dim()} tensor at {node.name} ({node.target}), "
                                  f"which Core ML rejects; write the model with tensors of rank <= {MAX_RANK}")


# --- conversion -----------------------------------------------------------------------------------------


def _input_type(ct: Any, name: str, spec: Mapping[str, Any], options: CoreMLOptions) -> Any:
    if options.image_input and name in IMAGE_INPUTS:
        # Vision feeds CVPixelBuffers: RGB 0..255 as is, the graph normalises (scale 1, bias 0).
        return ct.ImageType(name=name, shape=tuple(spec["shape"]), scale=1.0, bias=[0.0, 0.0, 0.0],
                            color_layout=ct.colorlayout.RGB, channel_first=True)
    return ct.TensorType(name=name, shape=tuple(spec["shape"]), dtype=np.dtype(spec["dtype"]).type)


def _convert_entry(ct: Any, model: RapSAM, entry: str, request: TargetRequest, options: CoreMLOptions,
                   program: torch.export.ExportedProgram | None = None) -> Any:
    """One entry point -> an in-memory ML Program with the contract's tensor names, metadata and descriptions.

    `program` replaces the entry's own export (a quantized program of `rapsam.quantize.coreml`)."""
    contract = get_entry_point(entry)
    specs = tensor_specs(model, request)
    if program is None:
        program = export_entry_point(model, entry, input_size=request.input_size, num_prompts=request.num_prompts)
    _check_rank(program, entry)
    program = program.run_decompositions({})
    precision = ct.precision.FLOAT16 if request.precision == "fp16" else ct.precision.FLOAT32
    try:
        with _quiet_coremltools():
            mlmodel = ct.convert(
                program,
                convert_to="mlprogram",
                inputs=[_input_type(ct, n, specs[spec_key(entry, n)], options) for n in contract.inputs],
                # float32 outputs as the contract says (fp16 compute would otherwise make them fp16)
                outputs=[ct.TensorType(name=n, dtype=np.float32) for n in contract.outputs],
                minimum_deployment_target=getattr(ct.target, options.deployment_target),
                compute_precision=precision,
                skip_model_load=True,  # compiling needs macOS; the runner loads it there
            )
    except Exception as error:  # coremltools raises ValueError/NotImplementedError/RuntimeError/...
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConversionError(f"coremltools cannot convert entry point {entry}: {first_line} "
                              "(rewrite that op in the model so it exports, or pick another --target)") from error
    _describe(mlmodel, model, entry, specs)
    return mlmodel


def _describe(mlmodel: Any, model: RapSAM, entry: str, specs: Mapping[str, Mapping[str, Any]]) -> None:
    """What Xcode shows about the model and its tensors."""
    mlmodel.author = "rapsam"
    mlmodel.license = "Apache-2.0 (code); see the manifest for the weights"
    mlmodel.version = rapsam.__version__
    mlmodel.short_description = f"RAP-SAM {model.config.name}: {entry} entry point"
    contract = get_entry_point(entry)
    for name in contract.inputs:
        mlmodel.input_description[name] = specs[spec_key(entry, name)]["meaning"]
    for name in contract.outputs:
        mlmodel.output_description[name] = specs[spec_key(entry, name)]["meaning"]


def _save_single(mlmodels: Mapping[str, Any], folder: Path) -> dict[str, str]:
    files = {}
    for entry, mlmodel in mlmodels.items():
        files[entry] = f"{entry}.mlpackage"
        mlmodel.save(str(folder / files[entry]))
        _normalise_package(folder / files[entry], mlmodel.get_spec())
    return files


def _save_multifunction(ct: Any, mlmodels: Mapping[str, Any], folder: Path, model: RapSAM) -> dict[str, str]:
    """One package, one function per entry point; the first entry point is the default function."""
    with tempfile.TemporaryDirectory(prefix="rapsam-coreml-") as scratch:
        descriptor = ct.utils.MultiFunctionDescriptor()
        for entry, mlmodel in mlmodels.items():
            path = str(Path(scratch) / f"{entry}.mlpackage")
            mlmodel.save(path)
            descriptor.add_function(path, src_function_name="main", target_function_name=entry)
        descriptor.default_function_name = next(iter(mlmodels))
        with _quiet_coremltools():
            ct.utils.save_multifunction(descriptor, str(folder / MULTIFUNCTION_FILE))
    package = ct.models.MLModel(str(folder / MULTIFUNCTION_FILE), skip_model_load=True)
    first = next(iter(mlmodels.values()))
    for key in ("author", "license", "version"):
        setattr(package, key, getattr(first, key))
    package.short_description = f"RAP-SAM {model.config.name}: entry points {', '.join(mlmodels)} as functions"
    for key, value in first.user_defined_metadata.items():  # coremltools version and source
        package.user_defined_metadata[key] = value
    _normalise_package(folder / MULTIFUNCTION_FILE, package.get_spec())
    return {entry: MULTIFUNCTION_FILE for entry in mlmodels}


def _normalise_package(path: Path, spec: Any) -> None:
    """Rewrite a saved package so the same conversion gives the same bytes.

    coremltools names package items with random UUIDs, serialises protobuf maps (metadata) in a per-process
    hash order, stamps the conversion date, and leaves a debug file for ExecuTorch beside the model. The
    model spec is rewritten with deterministic serialisation and without the date, the manifest with
    identifiers derived from each item's path (they are only keys inside Manifest.json).
    """
    spec.description.metadata.userDefined.pop(_CONVERSION_DATE_KEY, None)
    (path / _DEBUG_MAPPING).unlink(missing_ok=True)
    manifest_path = path / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {old: str(uuid.uuid5(_PACKAGE_NAMESPACE, item["path"])).upper()
               for old, item in manifest["itemInfoEntries"].items()}
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    (path / "Data" / root["path"]).write_bytes(spec.SerializeToString(deterministic=True))
    manifest["itemInfoEntries"] = {renamed[old]: item for old, item in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


# --- what can be checked without a Core ML runtime ------------------------------------------------------


def _function_description(spec: Any, method: str | None) -> Any:
    if method is None:
        return spec.description
    return next(f for f in spec.description.functions if f.name == method)


def _feature(feature: Any) -> dict[str, Any]:
    """Name, shape and dtype of one input/output as the spec declares it (images as "image RGB")."""
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType, ImageFeatureType

    if feature.type.WhichOneof("Type") == "imageType":
        image = feature.type.imageType
        color = ImageFeatureType.ColorSpace.Name(image.colorSpace)
        return {"name": feature.name, "shape": [1, 3, int(image.height), int(image.width)], "dtype": f"image {color}"}
    array = feature.type.multiArrayType
    dtype = ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
    return {"name": feature.name, "shape": [int(s) for s in array.shape], "dtype": dtype}


def _expected(spec: Mapping[str, Any], name: str, options: CoreMLOptions) -> dict[str, Any]:
    dtype = "image RGB" if options.image_input and name in IMAGE_INPUTS else spec["dtype"]
    return {"name": name, "shape": list(spec["shape"]), "dtype": dtype}


def _mil_ops(spec: Any, method: str | None) -> dict[str, int]:
    """MIL op types and how often each occurs in one function (nested blocks included)."""
    counts: Counter[str] = Counter()

    def walk(block: Any) -> None:
        for op in block.operations:
            counts[op.type] += 1
            for inner in op.blocks:
                walk(inner)

    function = spec.mlProgram.functions[method or "main"]
    for block in function.block_specializations.values():
        walk(block)
    return dict(sorted(counts.items()))


def _check_spec(ct: Any, folder: Path, entry_files: Mapping[str, str], entry_methods: Mapping[str, str | None],
                model: RapSAM, request: TargetRequest, options: CoreMLOptions) -> dict[str, Any]:
    """Read each saved spec back (no compile) and compare it with the contract; raise on any difference."""
    specs = tensor_specs(model, request)
    checked, mil_ops, versions = {}, {}, set()
    for entry in request.entry_points:
        spec = ct.utils.load_spec(str(folder / entry_files[entry]))
        versions.add(spec.specificationVersion)
        description = _function_description(spec, entry_methods[entry])
        contract = get_entry_point(entry)
        found = {"inputs": [_feature(f) for f in description.input], "outputs": [_feature(f) for f in description.output]}
        expected = {"inputs": [_expected(specs[spec_key(entry, n)], n, options) for n in contract.inputs],
                    "outputs": [_expected(specs[spec_key(entry, n)], n, options) for n in contract.outputs]}
        if found != expected:
            got, want = next((g, w) for side in found for g, w in zip(found[side] + [None], expected[side] + [None])
                             if g != w)
            raise ConversionError(f"coreml: the saved {entry} spec disagrees with the contract: {got} where the "
                                  f"contract has {want}; a converter bug, report it with the coremltools version")
        checked[entry] = found
        mil_ops[entry] = _mil_ops(spec, entry_methods[entry])
    wanted = SPEC_VERSIONS[options.deployment_target]
    if versions != {wanted}:
        raise ConversionError(f"coreml: specification versions {sorted(versions)} do not match "
                              f"deployment_target={options.deployment_target} (version {wanted}); "
                              "raise deployment_target to what the ops need")
    return {"specification_version": wanted, "entry_points": checked, "matches_contract": True, "mil_ops": mil_ops}


# --- running on macOS -----------------------------------------------------------------------------------


class CoreMLRunner:
    """Core ML predictions through coremltools (macOS only), with the compute units of the conversion."""

    def __init__(self, folder: Path, files: ConvertedFiles, compute_units: str, image_input: bool,
                 reference: mil.MILRunner | None = None) -> None:
        self._ct = _coremltools()
        self.runtime = f"coremltools {package_version('coremltools')} Core ML ({compute_units})"
        self._folder, self._files = folder, files
        self._units = self._ct.ComputeUnit[compute_units]
        self._image_input = image_input
        self._models: dict[str, Any] = {}
        self.reference = reference
        self.agreement: dict[str, float] = {}  # "entry output" -> worst relative error against the reference

    def _model(self, entry: str) -> Any:
        if entry not in self._models:
            path = str(self._folder / self._files.entry_files[entry])
            self._models[entry] = self._ct.models.MLModel(path, compute_units=self._units,
                                                          function_name=self._files.entry_methods[entry])
        return self._models[entry]

    def _feed(self, name: str, value: np.ndarray) -> Any:
        if self._image_input and name in IMAGE_INPUTS:
            from PIL import Image

            pixels = np.clip(np.rint(value[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)  # (H, W, 3)
            return Image.fromarray(pixels)  # uint8 (H, W, 3) is RGB
        return value

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        contract = get_entry_point(entry)
        outputs = self._model(entry).predict({n: self._feed(n, inputs[n]) for n in contract.inputs})
        outputs = {name: np.asarray(outputs[name], dtype=np.float32) for name in contract.outputs}
        if self.reference is not None:  # how far the device is from the MIL reference on the same inputs
            expected = self.reference.run(entry, inputs)
            for name, value in outputs.items():
                error = mil.relative_error(torch.from_numpy(value), torch.from_numpy(expected[name]))
                key = f"{entry} {name}"
                self.agreement[key] = max(self.agreement.get(key, 0.0), error)
        return outputs

    def diagnose(self, model: RapSAM, entry: str, inputs: Mapping[str, np.ndarray], input_size: tuple[int, int],
                 num_prompts: int) -> list[str]:
        """The device against the MIL reference (worst relative mean error per output), then the reference's
        own per-op audit."""
        if self.reference is None:
            return []
        lines = [f"Core ML vs MIL reference, {key}: relative error {error:.3g}"
                 for key, error in sorted(self.agreement.items()) if key.startswith(f"{entry} ")]
        return lines + self.reference.diagnose(model, entry, inputs, input_size, num_prompts)


# --- the converter --------------------------------------------------------------------------------------


def save_converted(ct: Any, mlmodels: Mapping[str, Any], folder: Path, model: RapSAM, request: TargetRequest,
                   options: CoreMLOptions) -> ConvertedFiles:
    """Save the entries' ML Programs (one package each, or one multifunction package), check the saved specs
    against the contract, and describe them for the manifest."""
    if options.multifunction:
        entry_files = _save_multifunction(ct, mlmodels, folder, model)
        entry_methods: dict[str, str | None] = {entry: entry for entry in mlmodels}
    else:
        entry_files = _save_single(mlmodels, folder)
        entry_methods = {entry: None for entry in mlmodels}
    spec_check = _check_spec(ct, folder, entry_files, entry_methods, model, request, options)
    info = {
        "format": "mlprogram",
        "deployment_target": options.deployment_target,
        "compute_units": options.compute_units,
        "image_input": options.image_input,
        "multifunction": options.multifunction,
        "spec_check": {k: v for k, v in spec_check.items() if k != "mil_ops"},
        "mil_ops": spec_check["mil_ops"],
        "runtimes": ["Core ML (iOS, iPadOS, macOS, visionOS)"],
    }
    return ConvertedFiles(entry_files=entry_files, entry_methods=entry_methods, info=info)


class CoreMLConverter:
    name = "coreml"
    extra = "coreml"
    packages = ("coremltools",)
    default_precision = "fp16"  # what Apple's GPU and Neural Engine compute in
    option_defaults = MappingProxyType({"deployment_target": "iOS17", "compute_units": "ALL", "image_input": False})

    def versions(self) -> dict[str, str]:
        return {"coremltools": package_version("coremltools")}

    def convert(self, model: RapSAM, request: TargetRequest, folder: Path) -> ConvertedFiles:
        options = CoreMLOptions.parse(request.options)
        ct = _coremltools()
        mlmodels = {entry: _convert_entry(ct, model, entry, request, options) for entry in request.entry_points}
        return save_converted(ct, mlmodels, folder, model, request, options)

    def embed_manifest(self, folder: Path, files: ConvertedFiles, manifest: str) -> None:
        """The manifest JSON goes into each package's user-defined metadata under `rapsam.manifest`."""
        ct = _coremltools()
        for name in sorted(set(files.entry_files.values())):
            package = ct.models.MLModel(str(folder / name), skip_model_load=True)  # reads the spec, no compile
            package.user_defined_metadata[MANIFEST_KEY] = manifest
            _normalise_package(folder / name, package.get_spec())  # rewrites the spec file; weights stay

    def open(self, folder: Path, files: ConvertedFiles) -> CoreMLRunner | mil.MILRunner | str:
        """Off macOS the MIL reference evaluator; on macOS Core ML itself, checked against the evaluator. A
        program the evaluator cannot run (an op it lacks) is the reason numerics were not run, naming the op."""
        try:
            reference: mil.MILRunner | None = mil.MILRunner(folder, files.entry_files, files.entry_methods,
                                                            bool(files.info["image_input"]))
        except mil.MILError as error:
            if platform.system() != "Darwin":
                return f"CoreML runs only on macOS, and {error}"
            reference = None
        if platform.system() != "Darwin":
            return reference
        return CoreMLRunner(folder, files, str(files.info["compute_units"]), bool(files.info["image_input"]), reference)


CONVERTER = CoreMLConverter()
