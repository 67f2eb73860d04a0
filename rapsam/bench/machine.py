"""What a benchmark ran on: the machine, its arithmetic ceiling, and the versions of everything that ran."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import rapsam

# Packages whose versions a results file records when they are installed.
_RUNTIME_PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "executorch", "ai-edge-litert", "coremltools", "numpy")


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (Linux); empty elsewhere."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_flop_floor(cores: int, ghz: float, flags: set[str], vendor: str = "") -> float:
    """Peak fp32 GFLOP/s: cores x clock x two FMA units x lanes x 2 FLOPs per FMA. Lanes: 8 for AVX2, 16 for
    AVX-512 on Intel; AMD's Zen 4 runs AVX-512 through 256-bit units, so AMD counts 8 either way. An upper
    bound no network reaches: what it is for is the ratio to it."""
    if "avx512f" in flags and vendor == "GenuineIntel":
        lanes = 16
    elif {"avx2", "fma"} <= flags:
        lanes = 8
    else:
        lanes = 4
    return cores * ghz * 2 * lanes * 2


def cpu_info() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ghz = float(info.get("cpu MHz", 0.0) or 0.0) / 1000
    return {
        "cpu_model": info.get("model name", platform.processor() or platform.machine()),
        "cpu_cores": cores,
        "cpu_ghz": round(ghz, 3),
        "cpu_simd": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "neon", "asimd"}),
        "cpu_flop_floor_gflops": round(cpu_flop_floor(cores, ghz, flags, info.get("vendor_id", "")), 1) if ghz else None,
    }


def gpu_info() -> list[dict[str, Any]]:
    """Each CUDA device torch sees, with the driver version nvidia-smi reports (if it is on PATH)."""
    import torch

    if not torch.cuda.is_available():
        return []
    driver = None
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, check=False)
        driver = query.stdout.strip().splitlines()[0] if query.returncode == 0 and query.stdout.strip() else None
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({
            "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda, "driver": driver,
        })
    return gpus


def machine_info() -> dict[str, Any]:
    return {
        "kind": "desktop",
        "os": platform.platform(),
        "hostname": platform.node(),
        **cpu_info(),
        "gpus": gpu_info(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"rapsam": rapsam.__version__, "python": sys.version.split()[0]}
    for package in _RUNTIME_PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec (getrusage's
    ru_maxrss carries the parent's peak into a worker process); elsewhere ru_maxrss (bytes on macOS)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
