from __future__ import annotations

import os

import pytest
import torch

import rapsam
from rapsam.models.rapsam import RapSAM

# The suite runs file by file on every core (pytest-xdist, `-n auto --dist loadfile` in pyproject): most of its
# time is single-threaded converter toolchains. Torch's own pool is split between the workers so that they
# do not oversubscribe the cores.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    # A worker holds a model and a converter toolchain (GBs for the full-size variants): four at most.
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files that hold slow tests first (order kept otherwise): one of them started last would keep a worker
    busy for minutes after the others ran out of files."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def tiny_model() -> RapSAM:
    return rapsam.build_model("rapsam_tiny")


@pytest.fixture(autouse=True)
def _single_thread_determinism() -> None:
    torch.manual_seed(0)
