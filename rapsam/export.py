"""The export contract's entry points as tensor-in, tuple-out modules, and `torch.export` of each.

  encode(image [1,3,H,W] float32 RGB 0..255)           -> features [1,d,H/4,W/4]
  panoptic(features)                                   -> mask_logits [1,N,H/4,W/4], class_logits [1,N,C+1],
                                                          queries [1,N,d]
  prompt(features, boxes [1,K,4] float32, kinds [1,K] int32)
                                                       -> mask_logits [1,K,H/4,W/4], iou [1,K]
      (boxes x0,y0,x1,y1 on the image stretched to the input size: see rapsam.inference.prompts_to_boxes)
  segment(image)                                       -> panoptic's outputs, in one call
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from rapsam.inference import check_input_size
from rapsam.models.rapsam import RapSAM


class Encode(nn.Module):
    def __init__(self, model: RapSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model.encode(image),)


class Panoptic(nn.Module):
    def __init__(self, model: RapSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.panoptic_logits(features)


class Prompt(nn.Module):
    def __init__(self, model: RapSAM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, features: torch.Tensor, boxes: torch.Tensor, kinds: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.prompt_logits(features, boxes, kinds)


class Segment(nn.Module):
    def __init__(self, model: RapSAM) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.segment_logits(image)


@dataclass(frozen=True)
class EntryPoint:
    name: str
    wrapper: type[nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


ENTRY_POINTS = {
    e.name: e
    for e in (
        EntryPoint("encode", Encode, ("image",), ("features",)),
        EntryPoint("panoptic", Panoptic, ("features",), ("mask_logits", "class_logits", "queries")),
        EntryPoint("prompt", Prompt, ("features", "boxes", "kinds"), ("mask_logits", "iou")),
        EntryPoint("segment", Segment, ("image",), ("mask_logits", "class_logits", "queries")),
    )
}


def get_entry_point(name: str) -> EntryPoint:
    if name not in ENTRY_POINTS:
        raise KeyError(f"unknown entry point {name!r}; valid: {', '.join(ENTRY_POINTS)}")
    return ENTRY_POINTS[name]


def example_inputs(
    model: RapSAM, entry: str, *, input_size: tuple[int, int], num_prompts: int = 4, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Inputs of the right static shapes and dtypes (random but plausible values) for `entry`."""
    height, width = check_input_size(input_size)
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, height, width, generator=generator) * 255
    if entry in ("encode", "segment"):
        return (image,)
    features = torch.randn(1, model.config.hidden_dim, height // 4, width // 4, generator=generator)
    if entry == "panoptic":
        return (features,)
    corner = torch.rand(1, num_prompts, 2, generator=generator) * torch.tensor([width / 2, height / 2])
    size = 8 + torch.rand(1, num_prompts, 2, generator=generator) * torch.tensor([width / 2, height / 2])
    boxes = torch.cat([corner, corner + size], dim=-1)
    kinds = torch.arange(num_prompts, dtype=torch.int32).remainder(2).view(1, num_prompts)
    return features, boxes, kinds


class HalfPrecision(nn.Module):
    """Runs an entry point in fp16 behind the contract's fp32 inputs and outputs (integer inputs pass)."""

    def __init__(self, entry: nn.Module) -> None:
        super().__init__()
        self.entry = copy.deepcopy(entry).half()

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cast = [x.half() if x.is_floating_point() else x for x in inputs]
        return tuple(y.float() for y in self.entry(*cast))


def export_entry_point(
    model: RapSAM, entry: str, *, input_size: tuple[int, int], num_prompts: int = 4, half: bool = False
) -> torch.export.ExportedProgram:
    """`torch.export` of one entry point at a static input size (the model must be in eval mode).

    `half` computes in fp16 inside the graph, for targets whose fp16 is the graph's own dtype.
    """
    wrapper: nn.Module = get_entry_point(entry).wrapper(model).eval()
    if half:
        wrapper = HalfPrecision(wrapper).eval()
    inputs = example_inputs(model, entry, input_size=input_size, num_prompts=num_prompts)
    return torch.export.export(wrapper, inputs, strict=False)
