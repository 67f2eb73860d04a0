"""Loading the backbone authors' ImageNet checkpoints: never executes pickled code, strict by default."""

from __future__ import annotations

from pathlib import Path

import torch

from rapsam.models.backbones.base import Backbone

# Official releases wrap the weights in one of these keys (torchvision saves them bare).
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys do not match the module."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.pth` file as data (`weights_only=True`) and unwrap the usual container keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give the path of the downloaded .pth file)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or pickled-code files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(blob, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(blob).__name__}, not a state dict")
    for key in _WRAPPER_KEYS:
        if isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    tensors = {k: v for k, v in blob.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {path} holds no tensors")
    return tensors


def load_official_weights(backbone: Backbone, path: str | Path, *, strict: bool = True) -> list[str]:
    """Load an official pretrained checkpoint into `backbone`; return the keys dropped on purpose.

    Keys go through `backbone.official_key_map`. With `strict`, any missing key (other than those under
    `backbone.official_absent_prefixes`, which keep their initialisation), unexpected key or shape
    mismatch raises a CheckpointError that lists them.
    """
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, tensor in read_state_dict(path).items():
        ours = backbone.official_key_map(key.removeprefix("module."))
        if ours is None:
            dropped.append(key)
        else:
            mapped[ours] = tensor
    absent = backbone.official_absent_prefixes
    initial = {k: v for k, v in backbone.state_dict().items() if absent and k.startswith(absent)}
    mapped = initial | mapped
    check_state_dict(backbone, mapped, source=str(path), strict=strict)
    backbone.load_state_dict(mapped, strict=strict)
    return dropped


def check_state_dict(
    module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str, strict: bool = True
) -> None:
    """Raise a CheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:10])}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + " | ".join(problems))
