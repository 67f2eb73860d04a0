"""Switches a converter flips on a built model: which op sequence some modules trace to, with the same values
(a deformable conv's sampler, the mask pooling's product), chosen for what a runtime lowers well."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from torch import nn


def set_on_modules(model: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...], attribute: str, value: str,
                   valid: Sequence[str]) -> list[Any]:
    """Every `kind` module of `model` gets `attribute` = `value` from now on; returns the values they had."""
    if value not in valid:
        raise ValueError(f"unknown {attribute} {value!r}; valid: {', '.join(valid)}")
    modules = [m for m in model.modules() if isinstance(m, kind)]
    previous = [getattr(m, attribute) for m in modules]
    for module in modules:
        setattr(module, attribute, value)
    return previous


@contextlib.contextmanager
def switched(model: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...], attribute: str, value: str,
             valid: Sequence[str]) -> Iterator[None]:
    """`set_on_modules` inside the block only."""
    previous = set_on_modules(model, kind, attribute, value, valid)
    try:
        yield
    finally:
        for module, old in zip([m for m in model.modules() if isinstance(m, kind)], previous):
            setattr(module, attribute, old)
