"""The manifest: one versioned JSON schema for every target, written beside the artifact and embedded
where the format has metadata. Sample apps read it instead of hard-coding anything."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import rapsam
from rapsam.convert.base import ConvertedFiles, TargetRequest
from rapsam.export import get_entry_point
from rapsam.fileio import read_json_object
from rapsam.inference import CLICK_HALF_SIZE
from rapsam.models.head import BOX, PADDING, POINT
from rapsam.models.rapsam import RapSAM
from rapsam.postprocess import PanopticThresholds, default_palette

SCHEMA_VERSION = 1

_MEANINGS = {
    "image": "RGB image, 0..255, letterboxed to the input size (pad bottom/right with the pixel mean)",
    "features": "stride-4 feature map F from `encode`",
    "boxes": "prompt boxes x0,y0,x1,y1 on the image stretched to the input size; a click is a small box (see prompts)",
    "kinds": "prompt kind per slot: 0 click, 1 box, -1 padding",
    "mask_logits": "mask logits at stride 4 (threshold at 0); upsample x4 to the input, crop, resize",
    "class_logits": "class logits per query; the last column is no-object; softmax then argmax",
    "queries": "object query embeddings, for matching instances across video frames",
    "iou": "predicted IoU of each prompt's mask (0 for padding slots)",
}


def tensor_specs(model: RapSAM, request: TargetRequest) -> dict[str, dict[str, Any]]:
    """Shape, dtype and meaning of every tensor name of the contract at this input size and prompt count."""
    height, width = request.input_size
    d, n, k = model.config.hidden_dim, model.config.num_queries, request.num_prompts
    shapes = {
        "image": ([1, 3, height, width], "float32"),
        "features": ([1, d, height // 4, width // 4], "float32"),
        "boxes": ([1, k, 4], "float32"),
        "kinds": ([1, k], "int32"),
        "class_logits": ([1, n, model.config.taxonomy.num_classes + 1], "float32"),
        "queries": ([1, n, d], "float32"),
        "iou": ([1, k], "float32"),
    }
    specs = {name: {"shape": s, "dtype": t, "meaning": _MEANINGS[name]} for name, (s, t) in shapes.items()}
    for entry, queries in (("panoptic", n), ("prompt", k)):
        specs[f"{entry}.mask_logits"] = {
            "shape": [1, queries, height // 4, width // 4], "dtype": "float32", "meaning": _MEANINGS["mask_logits"],
        }
    return specs


def _entry_section(model: RapSAM, request: TargetRequest, files: ConvertedFiles) -> dict[str, Any]:
    specs = tensor_specs(model, request)
    section = {}
    for entry in request.entry_points:
        contract = get_entry_point(entry)
        section[entry] = {
            "file": files.entry_files[entry],
            "method": files.entry_methods.get(entry),
            "inputs": [{"name": name, **specs[spec_key(entry, name)]} for name in contract.inputs],
            "outputs": [{"name": name, **specs[spec_key(entry, name)]} for name in contract.outputs],
        }
    return section


def spec_key(entry: str, name: str) -> str:
    """`mask_logits` has N rows for panoptic/segment and K for prompt; every other name has one shape."""
    if name != "mask_logits":
        return name
    return "prompt.mask_logits" if entry == "prompt" else "panoptic.mask_logits"


def build_manifest(
    model: RapSAM,
    *,
    target: str,
    request: TargetRequest,
    files: ConvertedFiles,
    weights: str,
    converter_versions: Mapping[str, str],
) -> dict[str, Any]:
    config = model.config
    palette = default_palette(config.taxonomy.num_classes)
    thresholds = PanopticThresholds()
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "name": config.name,
            "backbone": config.backbone,
            "weights": weights,
            "random_init": weights.startswith("random-init"),
            "hidden_dim": config.hidden_dim,
            "num_queries": config.num_queries,
        },
        "target": {"name": target, "options": dict(request.options), **dict(files.info)},
        "input_size": list(request.input_size),
        "normalization": {
            "in_graph": True,
            "channel_order": "RGB",
            "input_range": [0, 255],
            "mean": list(config.pixel_mean),
            "std": list(config.pixel_std),
            "network_channel_order": config.channel_order,
            "pad_value": list(config.pad_value),
            "resize": "keep aspect ratio, bilinear, pad bottom/right",
        },
        "entry_points": _entry_section(model, request, files),
        "classes": [
            {"id": i, "name": name, "is_thing": thing, "color": palette[i].tolist()}
            # open-vocabulary classes: the synonyms their text embeddings were made from
            | ({"synonyms": config.taxonomy.texts[i].split(",")} if config.taxonomy.texts else {})
            for i, (name, thing) in enumerate(zip(config.taxonomy.class_names, config.taxonomy.is_thing))
        ],
        "taxonomy": config.taxonomy.name,
        "no_object_index": config.taxonomy.num_classes,
        "prompts": {
            "max_prompts": request.num_prompts,
            "kinds": {"click": POINT, "box": BOX, "padding": PADDING},
            "coordinates": "x0,y0,x1,y1 of the image stretched to the input size: x*W/w, y*H/h "
            "(w,h the image's size, W,H the input's), as the official model normalizes by the unpadded image",
            "click_half_size": CLICK_HALF_SIZE,
            "click": "(x,y) -> (x,y,x,y) -+ click_half_size pixels of the resized (letterboxed) image, "
            "stretched likewise: -+3*W/w_resized, -+3*H/h_resized",
        },
        "thresholds": {
            "object_mask": thresholds.object_mask_threshold,
            "overlap": thresholds.overlap_threshold,
            "mask_logit": 0.0,
        },
        "precision": {"compute": request.precision, "quantization": None},
        "versions": {
            "rapsam": rapsam.__version__,
            "rapsam_source": source_fingerprint(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            **dict(converter_versions),
        },
        "parity": None,
    }


@functools.cache
def source_fingerprint() -> str:
    """A hash of the rapsam package's Python sources: which code wrote an artifact, where the version number,
    bumped by releases only, does not say (a converter change between two commits changes the artifact)."""
    root = Path(rapsam.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def converted_files(manifest: Mapping[str, Any]) -> ConvertedFiles:
    """What a converter wrote, as its manifest records it: for opening a converted folder again."""
    entries = manifest["entry_points"]
    return ConvertedFiles(
        entry_files={e: s["file"] for e, s in entries.items()},
        entry_methods={e: s["method"] for e, s in entries.items()},
        info=manifest["target"],
    )


def prompt_slots(manifest: Mapping[str, Any]) -> int | None:
    """K of the artifact's `prompt` entry point (its `kinds` input), or None when it has none."""
    inputs = manifest["entry_points"].get("prompt", {}).get("inputs", [])
    return next((t["shape"][1] for t in inputs if t["name"] == "kinds"), None)


def precision_label(manifest: Mapping[str, Any]) -> str:
    """The artifact's quantization scheme ("int8-static", ...), or its compute precision when it has none."""
    return (manifest["precision"].get("quantization") or {}).get("scheme") or manifest["precision"]["compute"]


class ManifestError(ValueError):
    pass


# field -> type, for the top level and the sections every consumer relies on
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "model": dict,
    "target": dict,
    "input_size": list,
    "normalization": dict,
    "entry_points": dict,
    "classes": list,
    "no_object_index": int,
    "prompts": dict,
    "thresholds": dict,
    "precision": dict,
    "versions": dict,
    "parity": (dict, type(None)),
}
_TENSOR_FIELDS = {"name": str, "shape": list, "dtype": str, "meaning": str}
_CLASS_FIELDS = {"id": int, "name": str, "is_thing": bool, "color": list}


def read_manifest(folder: str | Path, *, error: type[Exception] = ManifestError) -> dict[str, Any]:
    """The validated manifest of a folder written by rapsam-convert; `error` names the folder when there is none."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise error(f"{folder} has no manifest.json: give a folder written by rapsam-convert")
    manifest = read_json_object(path, what="a manifest", error=error)
    validate_manifest(manifest)
    return manifest


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Raise ManifestError naming the first field that is missing or of the wrong type."""
    _check_fields(manifest, _REQUIRED, "manifest")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(f"manifest schema_version {manifest['schema_version']}, this toolkit reads {SCHEMA_VERSION}")
    for name in ("name", "backbone", "weights"):
        _check_fields(manifest["model"], {name: str}, "model")
    if not manifest["entry_points"]:
        raise ManifestError("manifest.entry_points is empty")
    for entry, section in manifest["entry_points"].items():
        _check_fields(section, {"file": str, "inputs": list, "outputs": list}, f"entry_points.{entry}")
        for i, tensor in enumerate(section["inputs"] + section["outputs"]):
            _check_fields(tensor, _TENSOR_FIELDS, f"entry_points.{entry}.tensor[{i}]")
    for i, cls in enumerate(manifest["classes"]):
        _check_fields(cls, _CLASS_FIELDS, f"classes[{i}]")
    if manifest["no_object_index"] != len(manifest["classes"]):
        raise ManifestError("manifest.no_object_index must equal the number of classes")


def _check_fields(section: Mapping[str, Any], fields: Mapping[str, Any], where: str) -> None:
    if not isinstance(section, Mapping):
        raise ManifestError(f"manifest.{where} is not an object")
    for name, kind in fields.items():
        if name not in section:
            raise ManifestError(f"manifest.{where}.{name} is missing")
        if not isinstance(section[name], kind) or (kind is int and isinstance(section[name], bool)):
            raise ManifestError(f"manifest.{where}.{name} has type {type(section[name]).__name__}")


def dumps(manifest: Mapping[str, Any]) -> str:
    """Stable text: sorted keys, so the same conversion writes the same bytes."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"
