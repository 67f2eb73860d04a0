"""The one interface every backend converter implements, and the registry that looks them up by name.

A converter is one straight pipeline per entry point (`rapsam.export.export_entry_point` -> lower ->
save) that writes its format's files into a staging folder, and opens such files again as a `Runner`
for the parity checker. Backend packages are imported lazily inside each converter module, so
`import rapsam` never needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from rapsam.models.rapsam import RapSAM

Precision = Literal["fp32", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")


class ConversionError(RuntimeError):
    """A conversion that cannot go on: the message is one line that names the fix."""


class MissingBackendError(ConversionError):
    pass


@dataclass(frozen=True)
class TargetRequest:
    """What a converter is asked for: everything but the model and its exported programs."""

    entry_points: tuple[str, ...]
    input_size: tuple[int, int]  # (H, W) of the image input
    num_prompts: int  # K, the static prompt count of the `prompt` entry point
    precision: Precision
    options: Mapping[str, Any] = field(default_factory=dict)  # target-specific, validated by the converter


@dataclass(frozen=True)
class ConvertedFiles:
    """What a converter wrote into the staging folder.

    `entry_files` maps each entry point to the file (relative to the folder) that holds it, and
    `entry_methods` to the method/signature/function name inside it (None where the file holds one).
    `info` is target-specific manifest content (delegated ops, deployment target, runtimes that load it).
    """

    entry_files: Mapping[str, str]
    entry_methods: Mapping[str, str | None]
    info: Mapping[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """Runs entry points of a converted artifact: numpy inputs by contract name -> numpy outputs by name."""

    runtime: str  # e.g. "onnxruntime 1.32.0"

    def run(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Converter(Protocol):
    name: str  # the --target value
    extra: str  # pip extra that installs its packages: rapsam[<extra>]
    packages: tuple[str, ...]  # importable modules it needs
    default_precision: Precision
    option_defaults: Mapping[str, Any]  # accepted target options and their defaults

    def versions(self) -> dict[str, str]:
        """Versions of the converter packages, for the manifest."""
        ...

    def convert(self, model: RapSAM, request: TargetRequest, folder: Path) -> ConvertedFiles:
        """Export `request.entry_points` of `model` (eval mode, fp32) and write the artifact into `folder`."""
        ...

    def embed_manifest(self, folder: Path, files: ConvertedFiles, manifest: str) -> None:
        """Write the manifest JSON into the artifact's own metadata, where the format has any."""
        ...

    def open(self, folder: Path, files: ConvertedFiles) -> Runner | str:
        """A Runner for the files in `folder`, or a one-line reason why numerics cannot run here."""
        ...


TARGET_MODULES = {
    "coreml": "rapsam.convert.coreml",
    "executorch": "rapsam.convert.executorch",
    "tflite": "rapsam.convert.tflite",
    "onnx": "rapsam.convert.onnx",
}


def get_converter(target: str) -> Converter:
    if target not in TARGET_MODULES:
        raise ConversionError(f"unknown target {target!r}; valid targets: {', '.join(TARGET_MODULES)}, all")
    converter: Converter = importlib.import_module(TARGET_MODULES[target]).CONVERTER
    missing = [p for p in converter.packages if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingBackendError(
            f"target {target} needs {', '.join(missing)}: pip install 'rapsam[{converter.extra}]'"
        )
    return converter


def package_version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return getattr(importlib.import_module(module), "__version__", "unknown")
