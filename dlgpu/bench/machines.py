"""Where benchmarks run: the array module, its timer, the cache to defeat, and what the device is.

:func:`cuda_machine` reads the current GPU (name, compute capability, SMs, L2,
memory, CUDA versions); :func:`cpu_machine` the host (CPU model, cores, its
largest cache).  ``quick`` sets fewer repetitions (and, on the CPU, smaller
rotation budgets).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlgpu.bench.timing import CudaEventTimer, WallClockTimer
from dlgpu.kernel_files import kernels_dir


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
    # Warm up on every rotated input set, not only the first `warmup`: a launcher's per-pointer caches (the
    # TMA maps, cuBLAS's and cuDNN's plans) then miss before the timing, not inside it.  On for the GPU.
    warm_every_set: bool = False

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


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """py-cpuinfo's description of the host CPU (name, caches, flags), read once: it takes a fraction of a second."""
    import cpuinfo

    return cpuinfo.get_cpu_info()


def _sysfs_cache_bytes() -> int:
    """The largest cache Linux lists for cpu0, 0 where there is no sysfs."""
    largest = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for size_file in base.glob("index*/size"):
        text = size_file.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            largest = max(largest, int(digits) * scale)
    return largest


def _cpu_cache_bytes() -> int:
    """The largest CPU cache, which the rotated inputs must exceed; 32 MiB when nothing can be read.

    py-cpuinfo reads it on every OS, but on Linux it takes the L3 from
    /proc/cpuinfo's "cache size", which some CPUs and VMs fill with the L2
    (1 MiB on an EPYC whose L3 is 32 MiB): the larger of it and sysfs is kept.
    """
    info = cpu_info()
    listed = [int(info.get(key) or 0) for key in ("l2_cache_size", "l3_cache_size")]
    return max(_sysfs_cache_bytes(), *listed) or (32 << 20)


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
        warmup=5 if quick else 10, reps=30 if quick else 100, warm_every_set=True,
    )


def _cpu_name() -> str:
    return cpu_info().get("brand_raw") or platform.processor() or platform.machine()


def _commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of a source checkout: $DLGPU_COMMIT when given (a copy without .git), else git.

    benchmarks/make_record.py has its own copy: it runs without dlgpu installed.
    """
    given = os.environ.get("DLGPU_COMMIT", "").strip() or None
    repo = kernels_dir().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    head = git("rev-parse", "HEAD") if (repo / ".git").exists() else None
    status = git("status", "--porcelain", "--untracked-files=no") if head else None
    return given or head, None if status is None else bool(status)


def run_metadata(machine: Machine) -> dict[str, Any]:
    """What a result was measured with, as pytest-benchmark records it: when, which code, which machine."""
    import dlgpu

    commit, dirty = _commit()
    info = cpu_info()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dlgpu": dlgpu.__version__,
        "commit": commit,
        "dirty": dirty,
        "kernels_sha256": dlgpu.kernels_sha256(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": {
            "name": _cpu_name(),
            "arch": info.get("arch_string_raw") or platform.machine(),
            "count": os.cpu_count(),
            "hz_advertised": info.get("hz_advertised_friendly"),
            "l2_cache_bytes": info.get("l2_cache_size"),
            "l3_cache_bytes": info.get("l3_cache_size"),
            "largest_cache_bytes": _cpu_cache_bytes(),
        },
        "device": machine.device,
    }


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
