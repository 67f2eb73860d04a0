"""The one interface every quantizing toolchain implements, and the calibration data they share.

A quantizer writes the same file format as its target's converter (so `get_converter(target).open` runs it
and the shared manifest, parity checker and folder swap of `rapsam.convert` apply unchanged); it only takes a
scheme and, for the calibrated schemes, a `Calibration`: the contract inputs of every entry point on real
images, made once by the fp32 model.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rapsam.convert.base import ConversionError, ConvertedFiles, TargetRequest
from rapsam.models.rapsam import RapSAM


class QuantizationError(ConversionError):
    """A quantization that cannot go on: one line naming the fix (an unknown scheme lists the valid ones)."""


@dataclass(frozen=True)
class Calibration:
    """Calibration inputs by entry point, each a list of feeds {contract input name: array} (batch 1).

    `encode`/`segment` get letterboxed images (1, 3, H, W) float32 RGB 0..255; `panoptic` the fp32 model's
    features of the same images; `prompt` those features with prompts (1, K, 4) / kinds (1, K) sampled on the
    images' ground-truth masks (or at random where the source has none). `digest` is the sha256 of every
    array in order: what the manifest records, so that the same data always names the same calibration.
    """

    feeds: Mapping[str, Sequence[Mapping[str, np.ndarray]]]
    source: str
    digest: str

    def __len__(self) -> int:
        return len(next(iter(self.feeds.values()), ()))


class Quantizer(Protocol):
    target: str  # the --target it quantizes for
    schemes: Mapping[str, str]  # scheme name -> one line on what it does
    calibrated: frozenset[str]  # the schemes that need a Calibration

    def quantize(
        self,
        model: RapSAM,
        request: TargetRequest,
        scheme: str,
        calibration: Calibration | None,
        folder: Path,
        keep_float: Sequence[str] = (),
    ) -> ConvertedFiles:
        """Write `request.entry_points` of `model` quantized with `scheme` into `folder`, in the format of the
        target's converter. `keep_float` holds fnmatch patterns of module names (`panoptic_head.*`) left in float;
        the files' `info["kept_float"]` lists what actually stayed float."""
        ...


QUANTIZER_MODULES = {
    "onnx": "rapsam.quantize.onnx",
    "executorch": "rapsam.quantize.executorch",
    "tflite": "rapsam.quantize.tflite",
    "coreml": "rapsam.quantize.coreml",
}


def get_quantizer(target: str) -> Quantizer:
    if target not in QUANTIZER_MODULES:
        raise QuantizationError(f"no quantizer for target {target!r}; targets: {', '.join(QUANTIZER_MODULES)}")
    try:
        module = importlib.import_module(QUANTIZER_MODULES[target])
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("rapsam"):
            raise QuantizationError(f"quantization for {target} is not built yet") from None
        raise
    return module.QUANTIZER


def check_scheme(quantizer: Quantizer, scheme: str, calibration: Calibration | None) -> None:
    if scheme not in quantizer.schemes:
        raise QuantizationError(f"target {quantizer.target} has no scheme {scheme!r}; "
                                f"it has {', '.join(quantizer.schemes)}")
    if scheme in quantizer.calibrated and (calibration is None or len(calibration) == 0):
        raise QuantizationError(f"scheme {scheme} of {quantizer.target} is calibrated: give --calib DATA "
                                "(an image folder, a COCO panoptic root, or 'synthetic')")


def check_calibration_entries(calibration: Calibration | None, entry_points: Sequence[str]) -> Calibration:
    """The calibration of a calibrated scheme, refused (with the fix) when it lacks feeds for an entry point."""
    assert calibration is not None  # check_scheme has refused a missing one
    missing = [e for e in entry_points if not calibration.feeds.get(e)]
    if missing:
        raise QuantizationError(f"the calibration has no inputs for {', '.join(missing)}: load it with "
                                f"entry_points including {', '.join(missing)}")
    return calibration


def check_feed_shapes(entry: str, feeds: Sequence[Mapping[str, np.ndarray]], inputs: Sequence[Any]) -> None:
    """Refuse feeds made at another input size or prompt count than `inputs` (the entry's example inputs, in
    the contract's order): they would calibrate nothing useful, or crash deep inside a toolchain."""
    from rapsam.export import get_entry_point

    for feed in feeds:
        for name, example in zip(get_entry_point(entry).inputs, inputs, strict=True):
            got = tuple(np.shape(feed.get(name, np.empty(0))))
            if name not in feed or got != tuple(example.shape):
                raise QuantizationError(f"calibration input {entry}/{name} has shape {got}, the model takes "
                                        f"{tuple(example.shape)}: load the calibration with the same input size "
                                        "and num_prompts")


def kept_modules(model: RapSAM, patterns: Sequence[str]) -> list[str]:
    """The outermost module names of `model` that match a pattern (their submodules go with them).

    A pattern that matches nothing is refused: a typo would otherwise quantize what was meant to stay float.
    """
    names = [name for name, _ in model.named_modules() if name]
    matched: list[str] = []
    for pattern in patterns:
        hits = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            top = sorted({name.split(".")[0] for name in names})
            raise QuantizationError(f"keep_float pattern {pattern!r} matches no module of the model; "
                                    f"top-level modules: {', '.join(top)}")
        matched.extend(hits)
    chosen = set(matched)
    return sorted(name for name in chosen if not any(_is_under(name, other) for other in chosen if other != name))


def _is_under(name: str, parent: str) -> bool:
    return name.startswith(parent + ".")
