"""Parameters and multiply-accumulates (MACs), counted two ways.

- `all`: every MAC `torch.utils.flop_counter` sees (its FLOPs / 2): convs, linears, and the einsum/bmm
  products of masks, mask pooling and attention. grid_sample and element-wise ops count 0.
- `paper`: what the paper's table counts. mmdet's `get_flops` traces the model with mmengine's
  fvcore-style counter, to which mmcv's deformable conv is an opaque custom op: it counts everything
  above except the deformable convs. See the README for how this reproduces table 3.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from rapsam.models.deform_conv import ModulatedDeformConv2d
from rapsam.models.rapsam import RapSAM

# Component of each top-level attribute of RapSAM.
COMPONENTS = {"backbone": "backbone", "neck": "neck", "panoptic_head": "head"}


@dataclass(frozen=True)
class ComponentCost:
    name: str
    params: int
    macs_all: int
    macs_paper: int


def _all_macs(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() // 2


@torch.no_grad()
def model_cost(model: RapSAM, input_size: tuple[int, int]) -> list[ComponentCost]:
    """Backbone, neck, head and total cost of one panoptic forward (`segment`) at `input_size` (H, W).

    The head row counts the decoder and the object adapter; the prompt path does not run here.
    """
    image = torch.rand(1, 3, *input_size) * 255
    deformable = 0

    def count_deformable(module: ModulatedDeformConv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal deformable
        deformable += output.numel() * module.weight[0].numel()

    # torch's module tracker trips over parameters that want grads under no_grad.
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        normalized = (image - model.pixel_mean) / model.pixel_std
        backbone_out = model.backbone(normalized)
        handles = [m.register_forward_hook(count_deformable) for m in model.modules()
                   if isinstance(m, ModulatedDeformConv2d)]
        try:
            features = model.neck(backbone_out)  # the one pass whose deformable convs are counted
        finally:
            for handle in handles:
                handle.remove()
        all_macs = {
            "backbone": _all_macs(model.backbone, normalized),
            "neck": _all_macs(model.neck, backbone_out),
            "head": _all_macs(model.panoptic_head.panoptic, features),
        }
    finally:
        for p in trainable:
            p.requires_grad_(True)
    paper = {**all_macs, "neck": all_macs["neck"] - deformable}

    params: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        params[COMPONENTS[name.split(".")[0]]] += p.numel()
    rows = [ComponentCost(group, params[group], all_macs[group], paper[group]) for group in COMPONENTS.values()]
    rows.append(ComponentCost("total", sum(params.values()), sum(all_macs.values()), sum(paper.values())))
    return rows


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table 3: params (M), GFLOPs as printed at 1333x800, and FPS on one A100 where
    the paper gives it."""

    variant: str
    params_m: float
    gmacs: float
    a100_fps: float | None = None


PAPER_ROWS = (
    PaperRow("rapsam_r18", 22.8, 60.5, a100_fps=40.0),
    PaperRow("rapsam_r50", 47.2, 123.0),
    PaperRow("rapsam_edgenext_s", 14.3, 44.0, a100_fps=31.5),
    PaperRow("rapsam_topformer_b", 15.0, 40.1),
)


PAPER_INPUT_SIZE = (800, 1333)  # (H, W) of the paper's speed and GFLOPs figures, batch 1


def padded_size(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """The official preprocessor pads the batch to a multiple of 32 (1333x800 runs as 1344x800)."""
    return (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
