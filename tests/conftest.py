from __future__ import annotations

import pytest
import torch

import rapsam
from rapsam.models.rapsam import RapSAM


@pytest.fixture(scope="session")
def tiny_model() -> RapSAM:
    return rapsam.build_model("rapsam_tiny")


@pytest.fixture(autouse=True)
def _single_thread_determinism() -> None:
    torch.manual_seed(0)
