"""Functions that several modules share, written in the op sequences that export well."""

from __future__ import annotations

import torch


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """`F.normalize(x, dim=-1)` with the same ops and values, but dividing by the broadcast norm where
    F.normalize first expands it to x's shape: exported, that expand is a full-size copy that ExecuTorch runs
    outside XNNPACK."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
