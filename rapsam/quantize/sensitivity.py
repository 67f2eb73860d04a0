"""Which layers int8 hurts most: quantize one layer at a time (simulated, in PyTorch), measure the masks.

A layer here is a module that owns a weight matrix or kernel (convolutions, linears, the attention's input
projection): what every toolchain's int8 scheme quantizes. Each one in turn gets int8 weights (per output
channel, symmetric, as XNNPACK / LiteRT / ONNX Runtime store them) and int8 inputs (per tensor, affine, ranges
observed on the calibration images), everything else stays fp32; the score is the pooled mask IoU of the
panoptic and prompt masks against the fp32 model on the same images (`rapsam.convert.parity.mask_iou`).

The simulation is toolchain-independent on purpose: it ranks layers once for every target, in seconds on the
demo model, and `--auto-keep N` hands the N lowest-scoring names to the target's `keep_float`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rapsam.convert.parity import mask_iou
from rapsam.models.rapsam import RapSAM
from rapsam.quantize.base import Calibration, QuantizationError

WEIGHT_NAMES = ("weight", "in_proj_weight")  # the matrices/kernels an int8 scheme stores as int8
IMAGE_ENTRIES = ("segment", "encode")  # calibration feeds that hold images
DEFAULT_SAMPLES = 8
PROGRESS_EVERY = 10


@dataclass(frozen=True)
class LayerSensitivity:
    module: str  # the model's module name, a valid keep_float pattern
    kind: str  # its class
    mask_iou: float  # pooled mask IoU against fp32 with only this layer in int8 (1 = unchanged)

    def to_dict(self) -> dict[str, object]:
        return {"module": self.module, "kind": self.kind, "mask_iou": round(self.mask_iou, 6)}


def candidate_layers(model: RapSAM) -> list[str]:
    """Modules that own a weight of rank >= 2, in model order; embeddings are tables read by index, not
    multiplied, and stay float in every scheme."""
    return [name for name, module in model.named_modules()
            if name and not isinstance(module, nn.Embedding) and _weight_names(module)]


def _weight_names(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters(recurse=False) if name in WEIGHT_NAMES and p.ndim >= 2]


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """int8 symmetric per output channel (dim 0), range -127..127, back to float."""
    flat = weight.reshape(len(weight), -1)
    scale = (flat.abs().amax(1).clamp_min(1e-12) / 127).reshape(-1, *[1] * (weight.ndim - 1))
    return (weight / scale).round().clamp(-127, 127) * scale


def fake_quantize_activation(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """uint8 affine per tensor over [low, high] widened to hold 0 (so zero padding stays exact), back to float."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-12) / 255
    zero_point = round(-low / scale)
    return ((x / scale).round() + zero_point).clamp(0, 255).sub(zero_point) * scale


def layer_sensitivity(
    model: RapSAM,
    calibration: Calibration,
    *,
    samples: int = DEFAULT_SAMPLES,
    progress: Callable[[str], None] = lambda _: None,
) -> list[LayerSensitivity]:
    """Every candidate layer scored on the first `samples` calibration images, most sensitive first.

    Prompts come from the calibration's `prompt` feeds when it has them (sampled on the images' masks), else
    panoptic masks alone are scored.
    """
    images, prompts = _inputs(calibration, samples)
    model = model.eval()
    layers = candidate_layers(model)
    with torch.no_grad():  # all images as one batch: one forward per layer
        ranges, in_encoder, reference = _observe(model, images, prompts, layers)
        features = model.encode(images)
        scores = []
        for index, name in enumerate(layers, start=1):
            module = model.get_submodule(name)
            if name not in ranges:  # never called on these inputs (an unused branch): int8 cannot change it
                scores.append(LayerSensitivity(name, type(module).__name__, 1.0))
                continue
            with _int8(module, ranges[name]):
                got = _masks(model, images, prompts, None if name in in_encoder else features)
            ious = [mask_iou(e[i:i + 1], g[i:i + 1]) for e, g in zip(reference, got) for i in range(len(images))]
            scores.append(LayerSensitivity(name, type(module).__name__, float(np.mean(ious))))
            if index % PROGRESS_EVERY == 0 or index == len(layers):
                progress(f"[sensitivity] {index}/{len(layers)} layers")
    return sorted(scores, key=lambda s: (s.mask_iou, s.module))


def rank_layers(
    model: RapSAM,
    source: str | Path | None,
    calibration: Calibration | None,
    *,
    input_size: tuple[int, int],
    num_prompts: int,
    progress: Callable[[str], None] = lambda _: None,
) -> list[LayerSensitivity]:
    """`layer_sensitivity` on the calibration when it holds images and prompts, else on images of `source`
    (the calibration data; the synthetic scenes when None), and the top of the ranking printed."""
    if calibration is None or not calibration.feeds.get("prompt") or not any(
            calibration.feeds.get(e) for e in IMAGE_ENTRIES):
        from rapsam.quantize.calibration import load_calibration

        calibration = load_calibration(source or "synthetic", model, input_size=input_size, num_prompts=num_prompts,
                                       entry_points=("segment", "prompt"), count=DEFAULT_SAMPLES, progress=progress)
    ranking = layer_sensitivity(model, calibration, progress=progress)
    progress(table(ranking))
    return ranking


def most_sensitive(ranking: Sequence[LayerSensitivity], count: int) -> list[str]:
    """The `count` lowest-scoring layers that int8 changes at all (a score of 1 is nothing to protect)."""
    return [s.module for s in ranking if s.mask_iou < 1.0][:count]


def table(ranking: Sequence[LayerSensitivity], rows: int = 10) -> str:
    lines = [f"{'layer (int8 alone)':<56} {'kind':<20} mask IoU vs fp32"]
    lines += [f"{s.module:<56} {s.kind:<20} {s.mask_iou:.4f}" for s in ranking[:rows]]
    return "\n".join(lines)


def _inputs(calibration: Calibration, samples: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The first `samples` images as one batch, and their prompts (boxes, kinds) where the calibration has them."""
    entry = next((e for e in IMAGE_ENTRIES if calibration.feeds.get(e)), None)
    if entry is None:
        raise QuantizationError(f"sensitivity needs calibration images: calibration {calibration.source!r} has "
                                f"feeds of {', '.join(calibration.feeds) or 'nothing'}; include encode or segment")
    feeds = calibration.feeds[entry][:samples]
    images = torch.from_numpy(np.concatenate([feed["image"] for feed in feeds]))
    prompt_feeds = (calibration.feeds.get("prompt") or [])[:len(feeds)]
    if len(prompt_feeds) < len(feeds):
        return images, None
    return images, tuple(torch.from_numpy(np.concatenate([feed[name] for feed in prompt_feeds]))
                         for name in ("boxes", "kinds"))


def _masks(model: RapSAM, images: torch.Tensor, prompts: tuple[torch.Tensor, ...] | None,
           features: torch.Tensor | None = None) -> list[np.ndarray]:
    """Mask logits of the panoptic queries and, with prompts, of the prompts: (N, M, h, w) each."""
    features = model.encode(images) if features is None else features
    masks = [model.panoptic_logits(features)[0].numpy()]
    if prompts is not None:
        masks.append(model.prompt_logits(features, *prompts)[0].numpy())
    return masks


def _observe(model: RapSAM, images: torch.Tensor, prompts: tuple[torch.Tensor, ...] | None,
             layers: Sequence[str]) -> tuple[dict[str, list[tuple[float, float]]], set[str], list[np.ndarray]]:
    """Per layer, the (min, max) of each data input over all images; the layers `encode` calls; and the fp32
    masks."""
    ranges: dict[str, list[tuple[float, float]]] = {}
    called: set[str] = set()

    def observer(name: str):
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            called.add(name)
            seen = ranges.setdefault(name, [])
            for i, x in enumerate(_data_inputs(module, args)):
                low, high = float(x.min()), float(x.max())
                if i < len(seen):
                    seen[i] = (min(low, seen[i][0]), max(high, seen[i][1]))
                else:
                    seen.append((low, high))
        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(observer(name)) for name in layers]
    try:
        model.encode(images)
        in_encoder = set(called)
        reference = _masks(model, images, prompts)
    finally:
        for handle in handles:
            handle.remove()
    return ranges, in_encoder, reference


def _data_inputs(module: nn.Module, args: tuple[object, ...]) -> list[torch.Tensor]:
    """The activations an int8 kernel of `module` reads: query, key and value of an attention (not its bias of
    masked logits), the first input of the others."""
    count = 3 if hasattr(module, "in_proj_weight") else 1
    return [a for a in args[:count] if isinstance(a, torch.Tensor) and a.is_floating_point()]


@contextlib.contextmanager
def _int8(module: nn.Module, ranges: Sequence[tuple[float, float]]) -> Iterator[None]:
    """`module` with int8 weights and inputs until the block ends."""
    originals = {name: getattr(module, name).data for name in _weight_names(module)}

    def quantize_inputs(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
        data = _data_inputs(module, args)
        quantized = {id(x): fake_quantize_activation(x, *r) for x, r in zip(data, ranges)}
        return tuple(quantized.get(id(a), a) for a in args)

    handle = module.register_forward_pre_hook(quantize_inputs)
    try:
        for name, weight in originals.items():
            getattr(module, name).data = fake_quantize_weight(weight)
        yield
    finally:
        handle.remove()
        for name, weight in originals.items():
            getattr(module, name).data = weight


def ranking_summary(ranking: Sequence[LayerSensitivity], rows: int = 10) -> list[Mapping[str, object]]:
    """The manifest's record: the most sensitive layers and their scores."""
    return [s.to_dict() for s in ranking[:rows]]
