"""Loading the backbone authors' ImageNet checkpoints: never executes pickled code, strict by default."""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any, Self

import torch

from rapsam.models.backbones.base import Backbone

# Official releases wrap the weights in one of these keys (torchvision saves them bare).
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or whose keys do not match the module."""


class OpaqueObject:
    """Stands for an object whose class a checkpoint names but we never import: its name and state, as data."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        obj = super().__new__(cls)
        obj.args, obj.state, obj.items = args, None, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> OpaqueObject:
        # What a pickled `getattr(cls, name)` hands back gets called in turn: stay inert.
        return _opaque_class(f"{self.qualname}(...)")(*args)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<{self.qualname}, not imported>"


class _DataUnpickler(pickle.Unpickler):
    """Calls only what `weights_only` allows (tensor rebuilding, containers); any other class or function
    the file names becomes an inert OpaqueObject subclass, so nothing the file brings ever runs."""

    def find_class(self, module: str, name: str) -> Any:
        from torch._weights_only_unpickler import _get_allowed_globals

        qualname = f"{module}.{name}"
        allowed = _get_allowed_globals()
        if qualname in allowed:
            return allowed[qualname]
        return _opaque_class(qualname)


def _opaque_class(qualname: str) -> type[OpaqueObject]:
    return type(qualname.rsplit(".", 1)[-1], (OpaqueObject,), {"qualname": qualname})


_DATA_PICKLE = types.SimpleNamespace(
    Unpickler=_DataUnpickler, load=lambda f, **kwargs: _DataUnpickler(f, **kwargs).load(), __name__="rapsam_data_pickle"
)


def read_pth(path: str | Path) -> Any:
    """A `.pth` file's contents, read as data.

    `weights_only=True` first; files that also pickle training state (mmengine's message hub, numpy
    arrays, config objects) are read again with an unpickler that keeps such objects as OpaqueObjects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give the path of the downloaded .pth file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # an object of a class weights_only does not know: read it as data below
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}".splitlines()[0]) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_DATA_PICKLE)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}".splitlines()[0]) from exc


def unwrap_state_dict(blob: Any, *, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, out of the usual container keys."""
    if not isinstance(blob, dict):
        raise CheckpointError(f"checkpoint {source} holds a {type(blob).__name__}, not a state dict")
    for key in _WRAPPER_KEYS:
        if isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    tensors = {k: v for k, v in blob.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {source} holds no tensors")
    return tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.pth` file as data and unwrap the usual container keys."""
    return unwrap_state_dict(read_pth(path), source=str(path))


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
