"""Where benchmarks run: the array module, its timer, the cache to defeat, and what the device is.

:func:`cuda_machine` reads the current GPU (name, compute capability, SMs, L2,
memory, CUDA versions); :func:`cpu_machine` the host (CPU model, cores, its
largest cache).  ``quick`` sets fewer repetitions (and, on the CPU, smaller
rotation budgets).
"""

from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlgpu.bench.timing import CudaEventTimer, WallClockTimer


@dataclass
class Machine:
    """Where a benchmark runs: the array module, its timer, its cache size, its device."""

    name: str                      # "cuda" or "cpu"
    xp: Any                        # cupy or numpy
    timer: Any                     # CudaEventTimer, WallClockTimer, or a fake in tests
    cache_bytes: int               # the cache the rotated inputs must exceed (GPU: L2)
    device: dict[str, Any]
    max_rotation_bytes: int
    warmup: int
    reps: int

    def synchronize(self) -> None:
        if self.name == "cuda":
            self.xp.cuda.get_current_stream().synchronize()

    def release(self) -> None:
        """Give cached device memory back between cases."""
        if self.name == "cuda":
            self.xp.get_default_memory_pool().free_all_blocks()
            torch = import_optional("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()


def import_optional(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return None


def _cpu_cache_bytes() -> int:
    """The largest CPU cache, from sysfs; 32 MiB when it cannot be read."""
    largest = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for size_file in base.glob("index*/size"):
        text = size_file.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            largest = max(largest, int(digits) * scale)
    return largest or (32 << 20)


def cuda_machine(quick: bool) -> Machine:
    import cupy

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    l2 = int(dev.attributes.get("L2CacheSize", props.get("l2CacheSize", 50 << 20)))
    free, total = cupy.cuda.runtime.memGetInfo()
    device = {
        "backend": "cuda",
        "name": name,
        "compute_capability": dev.compute_capability,
        "multiprocessors": int(dev.attributes.get("MultiProcessorCount", 0)),
        "l2_bytes": l2,
        "memory_bytes": int(total),
        "cuda_runtime": _cuda_version(cupy.cuda.runtime.runtimeGetVersion()),
        "cuda_driver": _cuda_version(cupy.cuda.runtime.driverGetVersion()),
        "cupy": cupy.__version__,
    }
    torch = import_optional("torch")
    if torch is not None:
        device["torch"] = torch.__version__
    return Machine(
        name="cuda", xp=cupy, timer=CudaEventTimer(cupy), cache_bytes=l2, device=device,
        max_rotation_bytes=min(8 << 30, int(free) // 4),
        warmup=5 if quick else 10, reps=30 if quick else 100,
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_machine(quick: bool) -> Machine:
    device = {
        "backend": "cpu",
        "name": _cpu_name(),
        "cpus": os.cpu_count(),
        "cache_bytes": _cpu_cache_bytes(),
        "numpy": np.__version__,
    }
    return Machine(
        name="cpu", xp=np, timer=WallClockTimer(budget_s=0.25 if quick else 1.0, min_reps=3),
        cache_bytes=device["cache_bytes"], device=device,
        max_rotation_bytes=(64 << 20) if quick else (512 << 20),
        warmup=1, reps=5 if quick else 20,
    )


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"
