"""Device selection and timers: host clock on the CPU, CUDA events on the GPU (device work is asynchronous,
so a host clock around a launch measures the launch, not the work)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch


class BenchError(RuntimeError):
    """A benchmark that cannot run as asked: the message is one line that names the fix."""


def resolve_device(name: str, *, cuda: Any = torch.cuda) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; "cuda" without one is an error."""
    if name == "auto":
        return "cuda" if cuda.is_available() else "cpu"
    if name == "cuda" and not cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
        raise BenchError(f"--device cuda, but torch {torch.__version__} (built {built}) sees no GPU; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise BenchError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    return name


class Timer(Protocol):
    def measure(self, fn: Callable[[], Any]) -> float:
        """Milliseconds one call of `fn` takes, its device work included."""
        ...


class HostTimer:
    def measure(self, fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000


class CudaEventTimer:
    """Events recorded on the stream around the call; waiting on the end event makes each sample one
    complete call (launches and kernels), as a caller waiting for its result sees it."""

    def __init__(self, cuda: Any = torch.cuda) -> None:
        self.cuda = cuda

    def measure(self, fn: Callable[[], Any]) -> float:
        start = self.cuda.Event(enable_timing=True)
        end = self.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))


def timer_for(device: str) -> Timer:
    return CudaEventTimer() if device == "cuda" else HostTimer()


def synchronize(device: str, *, cuda: Any = torch.cuda) -> None:
    """Wait for queued device work (before reading a host clock around GPU work)."""
    if device == "cuda":
        cuda.synchronize()


def capture_cuda_graph(fn: Callable[[], Any], *, warmup: int = 3, cuda: Any = torch.cuda) -> Callable[[], Any]:
    """Record the kernels of one call of `fn` in a CUDA graph; the returned callable replays them with one
    launch and returns the outputs of the capture (overwritten in place by each replay).

    The warm-up runs on a side stream, as capture requires: cuDNN and cuBLAS choose their algorithms and
    allocate workspaces there, which a capture may not do."""
    side = cuda.Stream()
    side.wait_stream(cuda.current_stream())
    with cuda.stream(side):
        for _ in range(warmup):
            fn()
    cuda.current_stream().wait_stream(side)
    graph = cuda.CUDAGraph()
    with cuda.graph(graph):
        outputs = fn()

    def replay() -> Any:
        graph.replay()
        return outputs

    return replay


def time_calls(fn: Callable[[], Any], *, warmup: int, runs: int, timer: Timer) -> list[float]:
    """`warmup` untimed calls, then `runs` timed ones: their latencies in milliseconds."""
    if runs < 1:
        raise BenchError(f"--runs must be at least 1, got {runs}")
    for _ in range(warmup):
        timer.measure(fn)
    return [timer.measure(fn) for _ in range(runs)]
