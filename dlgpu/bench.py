"""Benchmarks: one timing helper, the measured ceilings, a registry of cases, ``dlgpu bench``.

Timing (DESIGN.md, Benchmarks):
- On a GPU, :class:`CudaEventTimer` records a pair of CUDA events around every
  repetition after a warm-up, synchronizes once at the end, and reports the
  median with the 10th and 90th percentiles.  Inputs are rotated across enough
  copies that together they exceed the L2 several times over (the L2 size is
  read from the device), so a repetition never finds its inputs in cache.
- Without a GPU, :class:`WallClockTimer` times the CPU backend with
  ``time.perf_counter`` (median of repeats, within a time budget per case).

Ceilings, measured once per run on the same device: a large device-to-device
copy (bytes read + written per second), a large SGEMM through cuBLAS (CuPy),
and a BF16 product (CuPy if it has bfloat16, else PyTorch, else fp16 through
CuPy, named so).  Each row reports its GB/s or TFLOP/s as a percentage of the
ceiling that bounds it.

Cases (:data:`CASES`) name an op, the dlgpu call (through ``dlgpu.functional``
on CuPy or NumPy arrays), the baselines (the same computation written with
CuPy/NumPy; PyTorch where it is installed for softmax cross-entropy and max
pooling; ``dlgpu.reference`` on the CPU), and the bytes and flops the op must
move and compute.  A benchmark never asserts a speed.

Rows: op, variant, shape, dtype, precision, ms, baseline, baseline_ms,
ratio (baseline_ms / ms: above 1 means dlgpu is faster), gbps, tflops,
pct_of_ceiling.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dlgpu.device import gpu_probe

FAMILIES = ("elementwise", "softmax", "pool", "gemm", "conv2d")

NO_GPU_MESSAGE = "no GPU found: benchmarking the CPU backend against the reference"


# ---------------------------------------------------------------------------
# Statistics and timers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Summary of one measurement: milliseconds per repetition."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    reps: int


def summarize(samples_ms: Sequence[float]) -> Timing:
    """Median and 10th/90th percentiles of per-repetition times."""
    if len(samples_ms) == 0:
        raise ValueError("summarize: no samples")
    arr = np.asarray(samples_ms, dtype=np.float64)
    p10, med, p90 = np.percentile(arr, [10.0, 50.0, 90.0])
    return Timing(float(med), float(p10), float(p90), int(arr.size))


class WallClockTimer:
    """Host wall-clock timing for the CPU backend.

    ``fn(i)`` runs repetition ``i``; the timer stops early once ``budget_s``
    seconds of timed repetitions have passed and at least ``min_reps`` ran, so
    a slow reference cannot stall the whole run.
    """

    def __init__(self, *, budget_s: float = 1.0, min_reps: int = 3, clock: Callable[[], float] = time.perf_counter):
        self.budget_s = budget_s
        self.min_reps = min_reps
        self.clock = clock

    def measure(self, fn: Callable[[int], Any], *, warmup: int, reps: int) -> list[float]:
        for i in range(warmup):
            fn(i)
        samples: list[float] = []
        spent = 0.0
        for i in range(reps):
            t0 = self.clock()
            fn(warmup + i)
            t1 = self.clock()
            samples.append((t1 - t0) * 1e3)
            spent += t1 - t0
            if spent >= self.budget_s and len(samples) >= self.min_reps:
                break
        return samples


# A one-thread kernel that keeps the GPU busy for a given number of clock cycles.
_SPIN_SOURCE = r"""
extern "C" __global__ void dlgpu_bench_spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
"""


class CudaEventTimer:
    """Device time of each repetition, from a pair of CUDA events around it.

    All events are recorded on the current stream and read after one final
    synchronization.  Small kernels finish faster than Python can launch the
    next one, and then the events would time the host.  So before the timed
    repetitions the timer queues a spin kernel long enough (from the warm-up's
    wall-clock time) for the host to enqueue every repetition behind it: the
    GPU then runs them back to back and the events see device time only.
    """

    def __init__(self, cupy_module=None, *, spin: bool = True, clock: Callable[[], float] = time.perf_counter):
        if cupy_module is None:
            import cupy as cupy_module
        self.cp = cupy_module
        self.clock = clock
        self._spin_kernel = None
        self._spin_ok = spin
        self._clock_khz = None

    def _spin(self, seconds: float) -> bool:
        """Queue a kernel that spins for about ``seconds``; False when that is not possible."""
        if not self._spin_ok:
            return False
        cp = self.cp
        try:
            if self._spin_kernel is None:
                self._spin_kernel = cp.RawKernel(_SPIN_SOURCE, "dlgpu_bench_spin")
                # kHz; CUDA 13 dropped clockRate from the device properties but keeps the attribute
                self._clock_khz = int(cp.cuda.Device().attributes.get("ClockRate", 0))
            cycles = int(min(seconds, 0.5) * (self._clock_khz or 2_000_000) * 1e3)
            self._spin_kernel((1,), (1,), (np.int64(cycles),))
        except Exception:  # noqa: BLE001 - no compiler at hand: time without the spin
            self._spin_ok = False
            return False
        return True

    def measure(self, fn: Callable[[int], Any], *, warmup: int, reps: int) -> list[float]:
        cp = self.cp
        stream = cp.cuda.get_current_stream()
        if warmup > 0:
            fn(0)                       # the first call may compile or allocate: not timed at all
            stream.synchronize()
        t0 = self.clock()
        for i in range(1, warmup):
            fn(i)
        stream.synchronize()
        per_call = (self.clock() - t0) / max(1, warmup - 1)
        events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(reps)]
        self._spin(1.5 * per_call * reps + 1e-3)
        for i, (start, stop) in enumerate(events):
            start.record()
            fn(warmup + i)
            stop.record()
        events[-1][1].synchronize()
        return [float(cp.cuda.get_elapsed_time(start, stop)) for start, stop in events]


def rotation_count(set_bytes: int, cache_bytes: int, *, factor: float = 4.0, max_sets: int = 64,
                   max_total_bytes: int | None = None) -> int:
    """How many copies of the inputs to rotate through so together they exceed the cache.

    The copies together hold at least ``factor`` times ``cache_bytes``: by the
    time a copy comes round again, everything it left in the cache has been
    evicted.  Bounded by ``max_sets`` and by ``max_total_bytes`` of memory.
    """
    if set_bytes <= 0:
        raise ValueError(f"rotation_count: set_bytes must be positive, got {set_bytes}")
    n = max(1, math.ceil(factor * cache_bytes / set_bytes))
    n = min(n, max_sets)
    if max_total_bytes is not None:
        n = min(n, max(1, max_total_bytes // set_bytes))
    return n


# ---------------------------------------------------------------------------
# Backends: where cases run and how they are timed
# ---------------------------------------------------------------------------


@dataclass
class Backend:
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
            torch = _import_optional("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()


def _import_optional(name: str):
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


def cuda_backend(quick: bool) -> Backend:
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
    torch = _import_optional("torch")
    if torch is not None:
        device["torch"] = torch.__version__
    return Backend(
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


def cpu_backend(quick: bool) -> Backend:
    device = {
        "backend": "cpu",
        "name": _cpu_name(),
        "cpus": os.cpu_count(),
        "cache_bytes": _cpu_cache_bytes(),
        "numpy": np.__version__,
    }
    return Backend(
        name="cpu", xp=np, timer=WallClockTimer(budget_s=0.25 if quick else 1.0, min_reps=3),
        cache_bytes=device["cache_bytes"], device=device,
        max_rotation_bytes=(64 << 20) if quick else (512 << 20),
        warmup=1, reps=5 if quick else 20,
    )


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


# ---------------------------------------------------------------------------
# Ceilings
# ---------------------------------------------------------------------------


def _randn(xp, shape, seed: int, dtype=np.float32):
    """Normal random numbers, never zeros (zeros can run faster than real data)."""
    if xp is np:
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
    return xp.random.RandomState(seed).standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)


def measure_ceilings(backend: Backend, quick: bool) -> dict[str, dict[str, Any]]:
    """The device's measured limits: copy bandwidth and matrix-product rates."""
    xp = backend.xp
    ceilings: dict[str, dict[str, Any]] = {}

    def timed(fn, warmup=3, reps=10) -> Timing:
        return summarize(backend.timer.measure(fn, warmup=warmup, reps=reps))

    # A copy much larger than any cache: bytes read plus bytes written.
    nbytes = (1 << 30 if not quick else 512 << 20) if backend.name == "cuda" else (64 << 20)
    src = _randn(xp, (nbytes // 4,), 1)
    dst = xp.empty_like(src)
    if backend.name == "cuda":
        how = f"cudaMemcpyAsync device-to-device, {nbytes >> 20} MiB"

        def copy(_i):
            dst.data.copy_from_device_async(src.data, nbytes)
    else:
        how = f"numpy.copyto, {nbytes >> 20} MiB"

        def copy(_i):
            np.copyto(dst, src)
    t = timed(copy)
    ceilings["copy"] = {"gbps": 2 * nbytes / (t.median_ms * 1e-3) / 1e9, "ms": t.median_ms,
                        "bytes": 2 * nbytes, "how": how + ", bytes read + written"}
    del src, dst

    n = (8192 if not quick else 4096) if backend.name == "cuda" else (1024 if quick else 2048)
    a = _randn(xp, (n, n), 2)
    b = _randn(xp, (n, n), 3)
    t = timed(lambda _i: xp.matmul(a, b), warmup=2, reps=5 if quick else 10)
    lib = "cuBLAS through cupy.matmul" if backend.name == "cuda" else "numpy.matmul (BLAS)"
    ceilings["sgemm"] = {"tflops": 2 * n**3 / (t.median_ms * 1e-3) / 1e12, "ms": t.median_ms,
                         "shape": f"{n}x{n}x{n}", "how": f"float32 {lib}"}
    del a, b
    if backend.name == "cuda":
        ceilings["bf16_gemm"] = _half_gemm_ceiling(backend, n, quick, timed)
    backend.release()
    return ceilings


def _half_gemm_ceiling(backend: Backend, n: int, quick: bool, timed) -> dict[str, Any]:
    """BF16 product through CuPy if it can, else PyTorch, else fp16 through CuPy (named so)."""
    cp = backend.xp
    reps = 5 if quick else 10
    attempts = []
    ml_dtypes = _import_optional("ml_dtypes")
    if ml_dtypes is not None:
        def cupy_bf16():
            a = cp.asarray(np.random.default_rng(2).standard_normal((n, n), dtype=np.float32).astype(ml_dtypes.bfloat16))
            b = cp.asarray(np.random.default_rng(3).standard_normal((n, n), dtype=np.float32).astype(ml_dtypes.bfloat16))
            return (lambda _i: cp.matmul(a, b)), "bf16", "bfloat16 cuBLAS through cupy.matmul"
        attempts.append(cupy_bf16)
    torch = _import_optional("torch")
    if torch is not None:
        def torch_bf16():
            a = torch.from_dlpack(_randn(cp, (n, n), 2)).to(torch.bfloat16)
            b = torch.from_dlpack(_randn(cp, (n, n), 3)).to(torch.bfloat16)
            return (lambda _i: torch.matmul(a, b)), "bf16", "bfloat16 cuBLAS through torch.matmul"
        attempts.append(torch_bf16)

    def cupy_fp16():
        a = _randn(cp, (n, n), 2, np.float16)
        b = _randn(cp, (n, n), 3, np.float16)
        return (lambda _i: cp.matmul(a, b)), "fp16", "float16 cuBLAS through cupy.matmul (no bfloat16 available)"
    attempts.append(cupy_fp16)

    # Measure every way that works and keep the fastest: a library that accepts bfloat16
    # but lacks a tensor-core path for it must not set a low ceiling.
    measured, errors = [], []
    for attempt in attempts:
        if measured and attempt is cupy_fp16:
            break                         # fp16 only stands in when no bf16 product ran
        try:
            fn, dtype, how = attempt()
            t = timed(fn, warmup=2, reps=reps)
        except Exception as exc:  # noqa: BLE001 - try the next way
            errors.append(f"{attempt.__name__}: {type(exc).__name__}: {exc}")
            continue
        measured.append({"tflops": 2 * n**3 / (t.median_ms * 1e-3) / 1e12, "ms": t.median_ms,
                         "shape": f"{n}x{n}x{n}", "dtype": dtype, "how": how})
    if not measured:
        return {"tflops": None, "how": "unavailable", "errors": errors}
    best = max(measured, key=lambda m: m["tflops"])
    others = [f"{m['how']}: {m['tflops']:.1f} TFLOP/s" for m in measured if m is not best]
    return {**best, **({"also_measured": others} if others else {})}


# ---------------------------------------------------------------------------
# The registry of cases
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One benchmarked op at one shape.

    make_inputs(xp, shape, seed) -> dict of arrays (one rotation set)
    run(inputs)                   -> the dlgpu call
    xp_baseline(xp, inputs)       -> the same computation in CuPy / NumPy (None: no such baseline)
    torch_baseline(torch, inputs) -> the same in PyTorch on the GPU (None: none)
    reference(inputs)             -> dlgpu.reference's version (CPU baseline; None: none)
    bytes_moved(shape), flops(shape): the minimum traffic and arithmetic
    """

    family: str
    op: str
    shapes: dict[str, tuple[int, ...]]   # "gpu", "cpu", "cpu_quick"
    make_inputs: Callable[[Any, tuple, int], dict]
    run: Callable[[dict], Any]
    bytes_moved: Callable[[tuple], int]
    xp_baseline: Callable[[Any, dict], Any] | None = None
    torch_baseline: Callable[[Any, dict], Any] | None = None
    reference: Callable[[dict], Any] | None = None
    flops: Callable[[tuple], int] | None = None
    bound: str = "memory"                # which ceiling limits it: "memory" or "compute"
    variant: str = "default"
    dtype: str = "float32"
    precision: str = "ieee"
    shape_label: Callable[[tuple], str] | None = None
    note: str = ""
    unavailable: Callable[[str], str | None] | None = None   # backend name -> why it cannot run, or None

    @property
    def name(self) -> str:
        return f"{self.family}/{self.op}" + ("" if self.variant == "default" else f"[{self.variant}]")

    @property
    def id(self) -> str:
        """A test id: the op, with the variant when there is more than the default one."""
        return self.op if self.variant == "default" else f"{self.op}-{self.variant}"

    def shape_for(self, backend_name: str, quick: bool) -> tuple[int, ...]:
        if backend_name == "cuda":
            return self.shapes["gpu"]
        return self.shapes["cpu_quick" if quick else "cpu"]

    def label(self, shape: tuple) -> str:
        return self.shape_label(shape) if self.shape_label else "x".join(str(s) for s in shape)


def _functional():
    return importlib.import_module("dlgpu.functional")


def _reference():
    return importlib.import_module("dlgpu.reference")


def _torch_view(torch, array):
    """A PyTorch tensor sharing the CuPy array's memory (DLPack): no copy."""
    return torch.from_dlpack(array)


def _f32(elements: int) -> int:
    return 4 * elements  # bytes of that many float32


def _prod(shape) -> int:
    return int(np.prod(shape))


# -- elementwise ------------------------------------------------------------

def _relu_inputs(xp, shape, seed):
    return {"x": _randn(xp, shape, seed)}


def _relu_backward_inputs(xp, shape, seed):
    return {"grad_y": _randn(xp, shape, seed), "y": xp.maximum(_randn(xp, shape, seed + 1), 0)}


def _sgd_inputs(xp, shape, seed):
    return {"param": _randn(xp, shape, seed), "grad": _randn(xp, shape, seed + 1),
            "velocity": _randn(xp, shape, seed + 2)}


_SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}


def _sgd_xp(xp, d):
    g = d["grad"] + _SGD["weight_decay"] * d["param"]
    d["velocity"] *= _SGD["momentum"]
    d["velocity"] += g
    d["param"] -= _SGD["lr"] * d["velocity"]


def _bias_grad_dlgpu(d):
    """The standalone bias gradient: the sum of grad_y over every axis but the channel one
    (masked by y > 0 when the inputs carry the fused ReLU's output y)."""
    fn = _resolve_bias_grad(d["grad_y"])
    if fn is None:
        raise NotImplementedError("no bias-gradient entry point")
    return fn(d["grad_y"]) if "y" not in d else fn(d["grad_y"], d["y"])


# Where a standalone bias gradient may live: the public API first, then the CUDA launcher.
_BIAS_GRAD_ENTRY_POINTS = (
    ("dlgpu.functional", "bias_grad", None),
    ("dlgpu.cuda.bias_grad", "bias_grad", "cuda"),
)


def _resolve_bias_grad(array=None, backend_name: str | None = None):
    """The bias-gradient function usable on this backend, or None when there is none."""
    if backend_name is None:
        backend_name = "cpu" if isinstance(array, np.ndarray) else "cuda"
    for module_name, attr, only_on in _BIAS_GRAD_ENTRY_POINTS:
        if only_on is not None and only_on != backend_name:
            continue
        module = _import_optional(module_name)
        if module is not None and hasattr(module, attr):
            return getattr(module, attr)
    return None


def _bias_grad_unavailable(backend_name: str) -> str | None:
    if _resolve_bias_grad(backend_name=backend_name) is None:
        where = " or ".join(f"{m}.{a}" for m, a, only in _BIAS_GRAD_ENTRY_POINTS if only in (None, backend_name))
        return f"no standalone bias gradient on the {backend_name} backend ({where})"
    return None


def _bias_grad_inputs(xp, shape, seed):
    return {"grad_y": _randn(xp, shape, seed)}


def _bias_grad_relu_inputs(xp, shape, seed):
    return {"grad_y": _randn(xp, shape, seed), "y": xp.maximum(_randn(xp, shape, seed + 1), 0)}


def _bias_grad_xp(xp, d):
    if "y" in d:
        return xp.where(d["y"] > 0, d["grad_y"], np.float32(0)).sum(axis=(0, 2, 3))
    return d["grad_y"].sum(axis=(0, 2, 3))


# -- softmax cross-entropy --------------------------------------------------

def _softmax_inputs(xp, shape, seed):
    n, c = shape
    labels = np.random.default_rng(seed).integers(0, c, size=n).astype(np.int32)
    logits = _randn(xp, shape, seed) * 4
    out = {"logits": logits, "labels": xp.asarray(labels)}
    return out


def _softmax_backward_inputs(xp, shape, seed):
    d = _softmax_inputs(xp, shape, seed)
    e = xp.exp(d["logits"] - d["logits"].max(axis=1, keepdims=True))
    d["probs"] = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    del d["logits"]
    return d


def _softmax_xp(xp, d):
    logits, labels = d["logits"], d["labels"]
    m = logits.max(axis=1, keepdims=True)
    e = xp.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    probs = e / s
    picked = logits[xp.arange(logits.shape[0]), labels]
    loss = (xp.log(s[:, 0]) + m[:, 0] - picked).mean()
    return loss, probs


def _softmax_torch(torch, d):
    # What torch.nn.functional.cross_entropy runs (log_softmax, then nll_loss),
    # plus the probabilities that dlgpu returns alongside the loss.
    logits = _torch_view(torch, d["logits"])
    if "_labels_i64" not in d:
        d["_labels_i64"] = _torch_view(torch, d["labels"]).long()
    labels = d["_labels_i64"]
    logp = torch.log_softmax(logits, dim=1)
    loss = torch.nn.functional.nll_loss(logp, labels)
    return loss, logp.exp()


def _softmax_backward_xp(xp, d):
    probs, labels = d["probs"], d["labels"]
    n = probs.shape[0]
    g = probs / np.float32(n)
    g[xp.arange(n), labels] -= np.float32(1.0 / n)
    return g


def _softmax_backward_torch(torch, d):
    # The kernels PyTorch's autograd runs for cross_entropy's backward:
    # nll_loss_backward then _log_softmax_backward_data, from the saved log-probabilities.
    aten = torch.ops.aten
    if "_logp" not in d:
        probs = _torch_view(torch, d["probs"])
        d["_logp"] = probs.log()
        d["_labels_i64"] = _torch_view(torch, d["labels"]).long()
        _, d["_total_weight"] = aten.nll_loss_forward(d["_logp"], d["_labels_i64"], None, 1, -100)
        d["_grad_loss"] = torch.ones((), device=probs.device, dtype=probs.dtype)
    grad_logp = aten.nll_loss_backward(d["_grad_loss"], d["_logp"], d["_labels_i64"], None, 1, -100,
                                       d["_total_weight"])
    return aten._log_softmax_backward_data(grad_logp, d["_logp"], 1, d["_logp"].dtype)


def _softmax_bytes(shape):
    n, c = shape
    return _f32(2 * n * c) + 4 * n


# -- max pooling --------------------------------------------------------------

_POOL = {"kernel": 3, "stride": 2, "padding": 1}


def _pool_out(size):
    return (size + 2 * _POOL["padding"] - _POOL["kernel"]) // _POOL["stride"] + 1


def _pool_inputs(xp, shape, seed):
    return {"x": _randn(xp, shape, seed)}


def _pool_xp(xp, d):
    """Max over the nine shifted strided views of the -inf padded input (no argmax)."""
    x = d["x"]
    n, c, h, w = x.shape
    k, s, p = _POOL["kernel"], _POOL["stride"], _POOL["padding"]
    ho, wo = _pool_out(h), _pool_out(w)
    padded = xp.full((n, c, h + 2 * p, w + 2 * p), -np.inf, dtype=x.dtype)
    padded[:, :, p:p + h, p:p + w] = x
    y = None
    for kh in range(k):
        for kw in range(k):
            view = padded[:, :, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s]
            y = view.copy() if y is None else xp.maximum(y, view)
    return y


def _pool_torch(torch, d):
    x = _torch_view(torch, d["x"])
    return torch.nn.functional.max_pool2d(x, _POOL["kernel"], _POOL["stride"], _POOL["padding"],
                                          return_indices=True)


def _pool_backward_inputs(xp, shape, seed):
    n, c, h, w = shape
    x = _randn(xp, shape, seed)
    ho, wo = _pool_out(h), _pool_out(w)
    grad_y = _randn(xp, (n, c, ho, wo), seed + 1)
    d = {"x": x, "grad_y": grad_y}
    try:
        _, argmax = _functional().max_pool2d(x, _POOL["kernel"], stride=_POOL["stride"], padding=_POOL["padding"])
        d["argmax"] = argmax
    except Exception:  # noqa: BLE001 - the dlgpu call reports its own failure when timed
        d["argmax"] = None
    return d


def _pool_backward_dlgpu(d):
    if d["argmax"] is None:
        raise RuntimeError("max_pool2d forward failed, so there is no argmax to scatter")
    return _functional().max_pool2d_backward(d["grad_y"], d["argmax"], tuple(d["x"].shape))


def _pool_backward_xp(xp, d):
    if d["argmax"] is None:
        raise RuntimeError("max_pool2d forward failed, so there is no argmax to scatter")
    n, c, h, w = d["x"].shape
    grad_x = xp.zeros((n * c, h * w), dtype=d["grad_y"].dtype)
    planes = xp.arange(n * c)[:, None]
    idx = d["argmax"].reshape(n * c, -1)
    xp.add.at(grad_x, (xp.broadcast_to(planes, idx.shape), idx), d["grad_y"].reshape(n * c, -1))
    return grad_x.reshape(n, c, h, w)


def _pool_backward_torch(torch, d):
    if "_indices" not in d:
        x = _torch_view(torch, d["x"])
        _, d["_indices"] = torch.nn.functional.max_pool2d(x, _POOL["kernel"], _POOL["stride"], _POOL["padding"],
                                                          return_indices=True)
    grad_y = _torch_view(torch, d["grad_y"])
    k, s, p = _POOL["kernel"], _POOL["stride"], _POOL["padding"]
    return torch.ops.aten.max_pool2d_with_indices_backward(
        grad_y, _torch_view(torch, d["x"]), [k, k], [s, s], [p, p], [1, 1], False, d["_indices"])


def _pool_fwd_bytes(shape):
    n, c, h, w = shape
    out = n * c * _pool_out(h) * _pool_out(w)
    return _f32(_prod(shape)) + 8 * out          # read x; write y and the int32 argmax


def _pool_bwd_bytes(shape):
    n, c, h, w = shape
    out = n * c * _pool_out(h) * _pool_out(w)
    return 8 * out + _f32(_prod(shape))          # read grad_y and argmax; write grad_x


def _pool_label(shape):
    k, s, p = _POOL["kernel"], _POOL["stride"], _POOL["padding"]
    return "x".join(str(v) for v in shape) + f" k{k} s{s} p{p}"


# -- gemm: our kernels (dlgpu.cuda.gemm, a variant forced) against cuBLAS through CuPy -----------

# cuBLAS's enums (cublas_api.h, library_types.h), for cublasGemmEx through cupy.cuda.cublas.
_CUBLAS_OP_N, _CUBLAS_OP_T = 0, 1
_CUDA_R_32F, _CUDA_R_16F, _CUDA_R_16BF = 0, 2, 14
_CUBLAS_COMPUTE_32F, _CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 77
_CUBLAS_GEMM_DEFAULT = -1
# Per precision: the cuBLAS operand type and compute type of the same arithmetic as ours.
_CUBLAS_MODES = {
    "ieee": (_CUDA_R_32F, _CUBLAS_COMPUTE_32F),           # SGEMM, TF32 off
    "tf32": (_CUDA_R_32F, _CUBLAS_COMPUTE_32F_FAST_TF32),
    "bf16": (_CUDA_R_16BF, _CUBLAS_COMPUTE_32F),          # 16-bit operands, fp32 accumulate and output
    "fp16": (_CUDA_R_16F, _CUBLAS_COMPUTE_32F),
}
GEMM_NOT_ON_CPU = "GPU-only: dlgpu's GEMM kernels against cuBLAS (the CPU backend's product is NumPy's)"


def _gemm_module():
    return importlib.import_module("dlgpu.cuda.gemm")


def _cublas_gemm(a, b, out, precision: str, transpose_b: bool = False):
    """out (M, N) fp32 = a (M, K) @ op(b) by cublasGemmEx in ``precision``; row-major arrays.

    Row-major C = A op(B) is column-major C^T = op(B)^T A^T: B's buffer goes first.
    """
    from cupy.cuda import cublas, device, stream

    data_type, compute_type = _CUBLAS_MODES[precision]
    m, k = a.shape
    n = out.shape[1]
    handle = device.get_cublas_handle()
    cublas.setStream(handle, stream.get_current_stream().ptr)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    cublas.gemmEx(handle, _CUBLAS_OP_T if transpose_b else _CUBLAS_OP_N, _CUBLAS_OP_N, n, m, k, one.ctypes.data,
                  b.data.ptr, data_type, k if transpose_b else n, a.data.ptr, data_type, k, zero.ctypes.data,
                  out.data.ptr, _CUDA_R_32F, n, compute_type, _CUBLAS_GEMM_DEFAULT)
    return out


def _to_16bit(xp, array, precision: str):
    """The operand cuBLAS reads in a 16-bit mode: fp16, or bf16 bits (round to nearest even) as uint16."""
    if precision == "fp16":
        return array.astype(xp.float16)
    bits = array.view(xp.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(xp.uint16)


def _gemm_inputs(precision: str):
    def make(xp, shape, seed):
        m, n, k = shape
        d = {"a": _randn(xp, (m, k), seed), "b": _randn(xp, (k, n), seed + 1)}
        d["out"] = xp.empty((m, n), dtype=np.float32)
        if precision in ("bf16", "fp16"):  # cast once here: cuBLAS is timed on 16-bit operands
            d["a16"], d["b16"] = _to_16bit(xp, d["a"], precision), _to_16bit(xp, d["b"], precision)
        return d

    return make


def _gemm_baseline(precision: str):
    def run(xp, d):
        if precision in ("bf16", "fp16"):
            return _cublas_gemm(d["a16"], d["b16"], d["out"], precision)
        return _cublas_gemm(d["a"], d["b"], d["out"], precision)

    return run


def _gemm_bytes(shape) -> int:
    m, n, k = shape
    return _f32(m * k + k * n + m * n)


def _gemm_flops(shape) -> int:
    m, n, k = shape
    return 2 * m * n * k


def _gemm_label(shape) -> str:
    m, n, k = shape
    return f"{m}x{n}x{k}"


def _gemm_case(shape, variant: str, precision: str = "ieee") -> Case:
    return Case(
        family="gemm", op="matmul", variant=f"{variant}-{precision}" if variant == "tc" else variant,
        # M x N x K; the CPU shapes only size the (skipped) CPU rows' inputs.
        shapes={"gpu": shape, "cpu": (512, 512, 512), "cpu_quick": (512, 512, 512)},
        make_inputs=_gemm_inputs(precision),
        run=lambda d: _gemm_module().gemm(d["a"], d["b"], precision=precision, variant=variant, out=d["out"]),
        xp_baseline=_gemm_baseline(precision),
        bytes_moved=_gemm_bytes, flops=_gemm_flops, bound="compute", precision=precision,
        shape_label=_gemm_label, unavailable=lambda backend: None if backend == "cuda" else GEMM_NOT_ON_CPU,
        note="baseline: cublasGemmEx through CuPy in the same precision (16-bit operands cast beforehand)",
    )


def _linear_inputs(xp, shape, seed):
    batch, features_out, features_in = shape
    return {"x": _randn(xp, (batch, features_in), seed), "w": _randn(xp, (features_out, features_in), seed + 1),
            "bias": _randn(xp, (features_out,), seed + 2), "out": xp.empty((batch, features_out), dtype=np.float32)}


def _linear_baseline(xp, d):
    """cuBLAS SGEMM (x @ w.T), then CuPy's bias add and ReLU: three launches."""
    y = _cublas_gemm(d["x"], d["w"], d["out"], "ieee", transpose_b=True)
    y += d["bias"]
    return xp.maximum(y, 0, out=y)


def _linear_case(shape) -> Case:
    return Case(
        family="gemm", op="linear", variant="bias+relu",
        # (batch, out_features, in_features): M x N x K of the product.
        shapes={"gpu": shape, "cpu": (512, 512, 512), "cpu_quick": (512, 512, 512)},
        make_inputs=_linear_inputs,
        run=lambda d: _functional().linear(d["x"], d["w"], d["bias"], activation="relu", out=d["out"]),
        xp_baseline=_linear_baseline,
        bytes_moved=lambda s: _f32(s[0] * s[2] + s[1] * s[2] + s[1] + s[0] * s[1]),
        flops=_gemm_flops, bound="compute", shape_label=_gemm_label,
        unavailable=lambda backend: None if backend == "cuda" else GEMM_NOT_ON_CPU,
        note="dlgpu: one launch (bias and ReLU in the epilogue); baseline: cuBLAS SGEMM + CuPy bias add + ReLU",
    )


GEMM_CASES: tuple[Case, ...] = (
    *(_gemm_case((n, n, n), "simt") for n in (4096, 8192)),
    *(_gemm_case((n, n, n), "tc", p) for p in ("tf32", "bf16", "fp16") for n in (4096, 8192)),
    _linear_case((4096, 4096, 4096)),
    _linear_case((256, 512, 784)),
    # Small networks' shapes: launch count and occupancy matter more than FLOPs.
    _gemm_case((256, 64, 576), "simt"),
    _gemm_case((128, 512, 784), "simt"),
)

# -- conv2d: our kernels (dlgpu.cuda.conv2d, the default variant for the precision) against cuDNN -----------

# The layers: (name, x (N, C, H, W), w (K, C, R, S), stride, padding).
CONV2D_LAYERS = (
    ("resnet50-conv1", (32, 3, 224, 224), (64, 3, 7, 7), 2, 3),
    ("resnet50-3x3-64", (32, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("resnet50-3x3-128", (32, 128, 28, 28), (128, 128, 3, 3), 1, 1),
    ("resnet50-1x1-256", (32, 256, 56, 56), (64, 256, 1, 1), 1, 0),
    ("resnet50-3x3-512-b32", (32, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ("resnet50-3x3-512-b128", (128, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ("lenet-c1", (256, 1, 28, 28), (6, 1, 5, 5), 1, 0),
    ("lenet-c3", (256, 6, 14, 14), (16, 6, 5, 5), 1, 0),
)
CONV2D_NOT_ON_CPU = "GPU-only: dlgpu's convolution kernels against cuDNN (the CPU backend's is NumPy/numba)"


def _conv2d_module():
    return importlib.import_module("dlgpu.cuda.conv2d")


def _conv2d_geometry(shape):
    """shape = (N, C, H, W, K, R, S, stride, padding) -> (x shape, w shape, y shape, stride, padding)."""
    n, c, h, w, k, r, s, stride, padding = shape
    p = (h + 2 * padding - r) // stride + 1
    q = (w + 2 * padding - s) // stride + 1
    return (n, c, h, w), (k, c, r, s), (n, k, p, q), stride, padding


def _conv2d_inputs(xp, shape, seed):
    x_shape, w_shape, y_shape, _, _ = _conv2d_geometry(shape)
    return {"x": _randn(xp, x_shape, seed), "w": _randn(xp, w_shape, seed + 1), "b": _randn(xp, w_shape[:1], seed + 2),
            "grad_y": _randn(xp, y_shape, seed + 3), "out": xp.empty(y_shape, dtype=np.float32)}


def _conv2d_dlgpu(pass_: str, precision: str):
    def run(d):
        _, w_shape, _, stride, padding = _conv2d_geometry(d["shape"])
        geo = {"stride": (stride, stride), "padding": (padding, padding), "dilation": (1, 1), "precision": precision}
        conv = _conv2d_module()
        if pass_ == "forward":
            return conv.forward(d["x"], d["w"], out=d["out"], **geo)
        if pass_ == "bias+relu":
            return _functional().conv2d(d["x"], d["w"], d["b"], stride=stride, padding=padding, activation="relu",
                                        precision=precision)
        if pass_ == "dgrad":
            return conv.dgrad(d["grad_y"], d["w"], d["x"].shape, **geo)
        return conv.wgrad(d["grad_y"], d["x"], w_shape, **geo)

    return run


_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _conv2d_torch(pass_: str, precision: str):
    """cuDNN through PyTorch in the same precision: TF32 off for "ieee", on for "tf32", 16-bit tensors
    (cast once, before timing) for bf16/fp16.  bias+relu: convolution, then a separate bias add and ReLU."""

    def run(torch, d):
        _, w_shape, _, stride, padding = _conv2d_geometry(d["shape"])
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        if "_t" not in d:
            dtype = getattr(torch, _TORCH_DTYPES.get(precision, "float32"))
            d["_t"] = {name: _torch_view(torch, d[name]).to(dtype) for name in ("x", "w", "b", "grad_y")}
        t = d["_t"]
        if pass_ == "forward":
            return torch.nn.functional.conv2d(t["x"], t["w"], stride=stride, padding=padding)
        if pass_ == "bias+relu":
            y = torch.nn.functional.conv2d(t["x"], t["w"], stride=stride, padding=padding)
            y += t["b"][:, None, None]
            return y.relu_()
        if pass_ == "dgrad":
            return torch.nn.grad.conv2d_input(t["x"].shape, t["w"], t["grad_y"], stride=stride, padding=padding)
        return torch.nn.grad.conv2d_weight(t["x"], w_shape, t["grad_y"], stride=stride, padding=padding)

    return run


def _conv2d_cupy(precision: str):
    """Where PyTorch is absent: the forward through CuPy's cuDNN wrapper (fp32 tensors; TF32 by tensor_core)."""

    def run(xp, d):
        from cupyx import cudnn

        _, _, _, stride, padding = _conv2d_geometry(d["shape"])
        cudnn.convolution_forward(d["x"], d["w"], None, d["out"], (padding, padding), (stride, stride), (1, 1), 1,
                                  auto_tune=False, tensor_core="always" if precision == "tf32" else "never")
        return d["out"]

    return run


def _conv2d_flops(shape) -> int:
    _, w_shape, y_shape, _, _ = _conv2d_geometry(shape)
    return 2 * _prod(y_shape) * _prod(w_shape[1:])


def _conv2d_bytes(shape) -> int:
    x_shape, w_shape, y_shape, _, _ = _conv2d_geometry(shape)
    return _f32(_prod(x_shape) + _prod(w_shape) + _prod(y_shape))


def _conv2d_label(shape) -> str:
    n, c, h, w, k, r, s, stride, padding = shape
    return f"{n}x{c}x{h}x{w} k{k} {r}x{s}/{stride} p{padding}"


def _conv2d_case(layer, pass_: str, precision: str = "ieee") -> Case:
    name, x_shape, w_shape, stride, padding = layer
    shape = (*x_shape, w_shape[0], *w_shape[2:], stride, padding)

    def make(xp, shape_, seed):
        return {**_conv2d_inputs(xp, shape_, seed), "shape": shape_}

    op = {"forward": "conv2d", "bias+relu": "conv2d", "dgrad": "conv2d_dgrad", "wgrad": "conv2d_wgrad"}[pass_]
    variant = f"{name}-{precision}" + ("-bias+relu" if pass_ == "bias+relu" else "")
    return Case(
        family="conv2d", op=op, variant=variant,
        shapes={"gpu": shape, "cpu": shape, "cpu_quick": shape},
        make_inputs=make,
        run=_conv2d_dlgpu(pass_, precision),
        torch_baseline=_conv2d_torch(pass_, precision),
        xp_baseline=_conv2d_cupy(precision) if pass_ == "forward" and precision in ("ieee", "tf32") else None,
        bytes_moved=_conv2d_bytes, flops=_conv2d_flops, bound="compute", precision=precision,
        shape_label=_conv2d_label, unavailable=lambda backend: None if backend == "cuda" else CONV2D_NOT_ON_CPU,
        note="baseline: cuDNN through PyTorch (CuPy's cuDNN for the forward without PyTorch), same precision"
             + ("; dlgpu one launch, baseline convolution + bias add + ReLU" if pass_ == "bias+relu" else ""),
    )


CONV2D_CASES: tuple[Case, ...] = (
    *(_conv2d_case(layer, "forward", p) for p in ("ieee", "tf32", "bf16") for layer in CONV2D_LAYERS),
    *(_conv2d_case(layer, "bias+relu") for layer in CONV2D_LAYERS),
    *(_conv2d_case(layer, pass_) for pass_ in ("dgrad", "wgrad") for layer in CONV2D_LAYERS),
)

_N_ELEM = (1 << 26,)
_N_ELEM_CPU = (1 << 22,)
_N_ELEM_CPU_QUICK = (1 << 20,)

CASES: tuple[Case, ...] = (
    Case(
        family="elementwise", op="relu_forward",
        shapes={"gpu": _N_ELEM, "cpu": _N_ELEM_CPU, "cpu_quick": _N_ELEM_CPU_QUICK},
        make_inputs=_relu_inputs,
        run=lambda d: _functional().relu(d["x"]),
        xp_baseline=lambda xp, d: xp.maximum(d["x"], 0),
        reference=lambda d: _reference().relu(d["x"]),
        bytes_moved=lambda s: _f32(2 * _prod(s)),
    ),
    Case(
        family="elementwise", op="relu_backward",
        shapes={"gpu": _N_ELEM, "cpu": _N_ELEM_CPU, "cpu_quick": _N_ELEM_CPU_QUICK},
        make_inputs=_relu_backward_inputs,
        run=lambda d: _functional().relu_backward(d["grad_y"], d["y"]),
        xp_baseline=lambda xp, d: xp.where(d["y"] > 0, d["grad_y"], np.float32(0)),
        reference=lambda d: _reference().relu_backward(d["grad_y"], d["y"]),
        bytes_moved=lambda s: _f32(3 * _prod(s)),
    ),
    Case(
        family="elementwise", op="sgd_step", variant="momentum+wd",
        shapes={"gpu": _N_ELEM, "cpu": _N_ELEM_CPU, "cpu_quick": _N_ELEM_CPU_QUICK},
        make_inputs=_sgd_inputs,
        run=lambda d: _functional().sgd_step(d["param"], d["grad"], d["velocity"], **_SGD),
        xp_baseline=_sgd_xp,
        reference=lambda d: _reference().sgd_step(d["param"], d["grad"], d["velocity"], **_SGD),
        bytes_moved=lambda s: _f32(5 * _prod(s)),   # read param, grad, velocity; write param, velocity
        note=f"lr={_SGD['lr']} momentum={_SGD['momentum']} weight_decay={_SGD['weight_decay']}",
    ),
    Case(
        family="elementwise", op="bias_grad", variant="NCHW",
        shapes={"gpu": (64, 256, 64, 64), "cpu": (16, 64, 64, 64), "cpu_quick": (4, 64, 64, 64)},
        make_inputs=_bias_grad_inputs,
        run=_bias_grad_dlgpu,
        xp_baseline=_bias_grad_xp,
        bytes_moved=lambda s: _f32(_prod(s) + s[1]),
        unavailable=_bias_grad_unavailable,
    ),
    Case(
        family="elementwise", op="bias_grad", variant="NCHW+relu-mask",
        shapes={"gpu": (64, 256, 64, 64), "cpu": (16, 64, 64, 64), "cpu_quick": (4, 64, 64, 64)},
        make_inputs=_bias_grad_relu_inputs,
        run=_bias_grad_dlgpu,
        xp_baseline=_bias_grad_xp,
        bytes_moved=lambda s: _f32(2 * _prod(s) + s[1]),   # read grad_y and y; write (C,)
        unavailable=_bias_grad_unavailable,
    ),
    Case(
        family="softmax", op="softmax_cross_entropy",
        shapes={"gpu": (65536, 1000), "cpu": (16384, 1000), "cpu_quick": (2048, 1000)},
        make_inputs=_softmax_inputs,
        run=lambda d: _functional().softmax_cross_entropy(d["logits"], d["labels"]),
        xp_baseline=_softmax_xp,
        torch_baseline=_softmax_torch,
        reference=lambda d: _reference().softmax_cross_entropy(d["logits"], d["labels"]),
        bytes_moved=_softmax_bytes,      # read logits (+labels), write probs
    ),
    Case(
        family="softmax", op="softmax_cross_entropy_backward",
        shapes={"gpu": (65536, 1000), "cpu": (16384, 1000), "cpu_quick": (2048, 1000)},
        make_inputs=_softmax_backward_inputs,
        run=lambda d: _functional().softmax_cross_entropy_backward(d["probs"], d["labels"]),
        xp_baseline=_softmax_backward_xp,
        torch_baseline=_softmax_backward_torch,
        reference=lambda d: _reference().softmax_cross_entropy_backward(d["probs"], d["labels"]),
        bytes_moved=_softmax_bytes,      # read probs (+labels), write grad_logits
    ),
    Case(
        family="pool", op="max_pool2d",
        shapes={"gpu": (64, 64, 56, 56), "cpu": (16, 64, 56, 56), "cpu_quick": (4, 64, 56, 56)},
        make_inputs=_pool_inputs,
        run=lambda d: _functional().max_pool2d(d["x"], _POOL["kernel"], stride=_POOL["stride"],
                                               padding=_POOL["padding"]),
        xp_baseline=_pool_xp,
        torch_baseline=_pool_torch,
        reference=lambda d: _reference().max_pool2d(d["x"], _POOL["kernel"], stride=_POOL["stride"],
                                                    padding=_POOL["padding"]),
        bytes_moved=_pool_fwd_bytes,
        shape_label=_pool_label,
    ),
    Case(
        family="pool", op="max_pool2d_backward",
        shapes={"gpu": (64, 64, 56, 56), "cpu": (16, 64, 56, 56), "cpu_quick": (4, 64, 56, 56)},
        make_inputs=_pool_backward_inputs,
        run=_pool_backward_dlgpu,
        xp_baseline=_pool_backward_xp,
        torch_baseline=_pool_backward_torch,
        reference=lambda d: _reference().max_pool2d_backward(d["grad_y"], d["argmax"], tuple(d["x"].shape)),
        bytes_moved=_pool_bwd_bytes,
        shape_label=_pool_label,
    ),
    *GEMM_CASES,
    *CONV2D_CASES,
)


def cases_for(families: Sequence[str] | None = None) -> list[Case]:
    """The registered cases of the named families (all when None or empty)."""
    if not families:
        return list(CASES)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        from dlgpu.errors import ArgumentError

        raise ArgumentError(f"bench: unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                            f"known: {', '.join(FAMILIES)}")
    return [c for c in CASES if c.family in families]


# ---------------------------------------------------------------------------
# Running cases into rows
# ---------------------------------------------------------------------------


@dataclass
class Baseline:
    name: str
    fn: Callable[[dict], Any]


def baselines_for(case: Case, backend: Backend) -> list[Baseline]:
    """The baselines a case is compared with on this backend, the preferred one first.

    GPU: PyTorch where the case has a PyTorch version and torch sees the GPU,
    else the CuPy expression.  CPU: dlgpu.reference, and the NumPy expression
    where the case has one.
    """
    xp = backend.xp
    out: list[Baseline] = []
    if backend.name == "cuda":
        torch = _import_optional("torch") if case.torch_baseline is not None else None
        if torch is not None and torch.cuda.is_available():
            out.append(Baseline("torch", lambda d, t=torch: case.torch_baseline(t, d)))
        elif case.xp_baseline is not None:
            out.append(Baseline("cupy", lambda d: case.xp_baseline(xp, d)))
    else:
        if case.reference is not None:
            out.append(Baseline("reference", case.reference))
        if case.xp_baseline is not None:
            out.append(Baseline("numpy", lambda d: case.xp_baseline(np, d)))
    return out


def _set_bytes(inputs: dict) -> int:
    return sum(int(v.nbytes) for v in inputs.values() if hasattr(v, "nbytes"))


def _rate_fields(case: Case, shape: tuple, ms: float | None, ceilings: dict) -> dict[str, Any]:
    if ms is None or ms <= 0:
        return {"gbps": None, "tflops": None, "pct_of_ceiling": None}
    seconds = ms * 1e-3
    nbytes = case.bytes_moved(shape)
    gbps = nbytes / seconds / 1e9
    tflops = case.flops(shape) / seconds / 1e12 if case.flops else None
    pct = None
    if case.bound == "memory":
        ceiling = (ceilings.get("copy") or {}).get("gbps")
        if ceiling:
            pct = 100.0 * gbps / ceiling
    elif tflops is not None:
        key = "bf16_gemm" if case.precision in ("bf16", "fp16") else "sgemm"
        ceiling = (ceilings.get(key) or {}).get("tflops")
        if ceiling:
            pct = 100.0 * tflops / ceiling
    return {"gbps": gbps, "tflops": tflops, "pct_of_ceiling": pct}


def _base_row(case: Case, backend: Backend, shape: tuple) -> dict[str, Any]:
    row = {
        "family": case.family, "op": case.op, "variant": case.variant, "shape": case.label(shape),
        "dtype": case.dtype, "precision": case.precision, "backend": backend.name,
        "bytes": case.bytes_moved(shape), "flops": case.flops(shape) if case.flops else None,
    }
    if case.note:
        row["note"] = case.note
    return row


_EMPTY_RESULT = {"ms": None, "baseline": None, "baseline_ms": None, "ratio": None,
                 "gbps": None, "tflops": None, "pct_of_ceiling": None}


def prepare_inputs(case: Case, backend: Backend, shape: tuple) -> list[dict]:
    """The rotation: enough input sets, each made from its own seed, to exceed the backend's cache."""
    first = case.make_inputs(backend.xp, shape, 0)
    n_sets = rotation_count(_set_bytes(first), backend.cache_bytes, max_total_bytes=backend.max_rotation_bytes)
    sets = [first] + [case.make_inputs(backend.xp, shape, 1000 * k) for k in range(1, n_sets)]
    backend.synchronize()
    return sets


def time_case(case: Case, backend: Backend, shape: tuple, sets: list[dict], ceilings: dict) -> list[dict[str, Any]]:
    """Time the dlgpu call and each baseline over the rotated ``sets``; one row per baseline."""
    n_sets = len(sets)

    def timed(fn) -> Timing:
        return summarize(backend.timer.measure(lambda i: fn(sets[i % n_sets]), warmup=backend.warmup,
                                               reps=backend.reps))

    row = {**_base_row(case, backend, shape), "rotation_sets": n_sets}
    try:
        t = timed(case.run)
        row.update(ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms, reps=t.reps)
    except Exception as exc:  # noqa: BLE001 - one failing op must not hide the others
        row.update(ms=None, error=f"dlgpu: {type(exc).__name__}: {exc}")
    row.update(_rate_fields(case, shape, row.get("ms"), ceilings))

    rows = []
    for baseline in baselines_for(case, backend) or [None]:
        r = dict(row)
        r.update(baseline=None, baseline_ms=None, ratio=None)
        if baseline is not None:
            r["baseline"] = baseline.name
            try:
                bt = timed(baseline.fn)
                r["baseline_ms"] = bt.median_ms
                if r.get("ms"):
                    r["ratio"] = bt.median_ms / r["ms"]
            except Exception as exc:  # noqa: BLE001
                r["baseline_error"] = f"{type(exc).__name__}: {exc}"
        rows.append(r)
    return rows


def run_case(case: Case, backend: Backend, quick: bool, ceilings: dict) -> list[dict[str, Any]]:
    """Make the inputs, time the dlgpu call and each baseline; one row per baseline (at least one)."""
    shape = case.shape_for(backend.name, quick)
    why_not = case.unavailable(backend.name) if case.unavailable else None
    if why_not:
        return [{**_base_row(case, backend, shape), **_EMPTY_RESULT, "skipped": why_not}]
    try:
        sets = prepare_inputs(case, backend, shape)
    except Exception as exc:  # noqa: BLE001
        return [{**_base_row(case, backend, shape), **_EMPTY_RESULT,
                 "error": f"inputs: {type(exc).__name__}: {exc}"}]
    try:
        return time_case(case, backend, shape, sets, ceilings)
    finally:
        del sets
        backend.release()


def run_benchmarks(cases: Sequence[Case], backend: Backend, quick: bool, *, ceilings: dict | None = None,
                   progress: Callable[[Case], None] | None = None) -> dict[str, Any]:
    """Measure ceilings (unless given) and every case; the whole result as one JSON-ready dict."""
    if ceilings is None:
        ceilings = measure_ceilings(backend, quick)
    rows: list[dict[str, Any]] = []
    for case in cases:
        rows.extend(run_case(case, backend, quick, ceilings))
        if progress is not None:
            progress(case)
    return {
        "schema": 1,
        "backend": backend.name,
        "quick": quick,
        "device": backend.device,
        "ceilings": ceilings,
        "rows": rows,
        # one line per failed dlgpu call (a case has one row per baseline, all sharing that call)
        "errors": list(dict.fromkeys(f"{r['op']}: {r['error']}" for r in rows if r.get("error"))),
    }


# ---------------------------------------------------------------------------
# pytest-benchmark (benchmarks/bench_<stem>.py)
# ---------------------------------------------------------------------------

_CEILINGS_BY_BACKEND: dict[tuple[str, bool], dict] = {}


def pytest_benchmark_case(benchmark, case: Case, backend_name: str, *, quick: bool = True) -> dict[str, Any]:
    """Benchmark one case under pytest-benchmark; returns the row it put in ``extra_info``.

    pytest-benchmark times with the host clock.  A GPU call returns as soon as
    its kernel is queued, so ``benchmark(fn)`` alone would time the launch, not
    the kernel.  We use ``benchmark.pedantic`` on a call that synchronizes the
    stream (a host-side view: kernel + launch + about 10 us of synchronization),
    and put the device time from CUDA events -- the number the speed targets
    are judged by, measured exactly as ``dlgpu bench`` does -- into
    ``extra_info`` together with GB/s, the baseline's time and the ratio.
    """
    import pytest

    if backend_name == "cuda":
        has_gpu, why = gpu_probe()
        if not has_gpu:
            pytest.skip(f"gpu benchmark: {why}")
        backend = cuda_backend(quick)
    else:
        backend = cpu_backend(quick)
    why_not = case.unavailable(backend.name) if case.unavailable else None
    if why_not:
        pytest.skip(why_not)
    key = (backend.name, quick)
    if key not in _CEILINGS_BY_BACKEND:
        _CEILINGS_BY_BACKEND[key] = measure_ceilings(backend, quick)
    ceilings = _CEILINGS_BY_BACKEND[key]
    shape = case.shape_for(backend.name, quick)
    sets = prepare_inputs(case, backend, shape)
    try:
        rows = time_case(case, backend, shape, sets, ceilings)
        if rows[0].get("error"):
            pytest.fail(f"{case.name}: {rows[0]['error']}")
        counter = iter(range(1 << 62))

        def synchronized_call():
            case.run(sets[next(counter) % len(sets)])
            backend.synchronize()

        benchmark.pedantic(synchronized_call, rounds=20 if backend.name == "cuda" else 5, warmup_rounds=2)
    finally:
        del sets
        backend.release()
    row = rows[0]
    benchmark.extra_info.update({
        "timing": "cuda-events" if backend.name == "cuda" else "wall-clock",
        "device": backend.device.get("name"),
        "shape": row["shape"], "dtype": row["dtype"], "precision": row["precision"],
        "ms": row["ms"], "p10_ms": row.get("p10_ms"), "p90_ms": row.get("p90_ms"),
        "gbps": row["gbps"], "tflops": row["tflops"], "pct_of_ceiling": row["pct_of_ceiling"],
        "copy_ceiling_gbps": (ceilings.get("copy") or {}).get("gbps"),
        "baselines": {r["baseline"]: {"ms": r["baseline_ms"], "ratio": r["ratio"]}
                      for r in rows if r.get("baseline")},
        "baseline": row["baseline"], "baseline_ms": row["baseline_ms"], "ratio": row["ratio"],
    })
    return row


# ---------------------------------------------------------------------------
# Output: table, JSON, plot
# ---------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The printed table's cells, one list per row (tested without rich)."""
    out = []
    for r in result["rows"]:
        rate = f"{r['tflops']:.2f} TFLOP/s" if r.get("tflops") else (
            f"{r['gbps']:.1f} GB/s" if r.get("gbps") else "-")
        out.append([
            r["op"], r["variant"], r["shape"], f"{r['dtype']}/{r['precision']}",
            "error" if r.get("error") else ("skipped" if r.get("skipped") else _fmt(r.get("ms"), ".3f")),
            r.get("baseline") or "-", _fmt(r.get("baseline_ms"), ".3f"),
            _fmt(r.get("ratio"), ".2f") + ("x" if r.get("ratio") is not None else ""),
            rate, _fmt(r.get("pct_of_ceiling"), ".0f") + ("%" if r.get("pct_of_ceiling") is not None else ""),
        ])
    return out


TABLE_HEADER = ["op", "variant", "shape", "dtype", "dlgpu ms", "baseline", "baseline ms", "ratio", "rate",
                "% ceiling"]


def ceiling_lines(ceilings: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for key, c in ceilings.items():
        if c.get("gbps") is not None:
            lines.append(f"{key}: {c['gbps']:.1f} GB/s ({c['how']})")
        elif c.get("tflops") is not None:
            lines.append(f"{key}: {c['tflops']:.2f} TFLOP/s, {c.get('shape', '')} ({c['how']})")
        else:
            lines.append(f"{key}: unavailable")
    return lines


def print_result(result: dict[str, Any], console) -> None:
    from rich.table import Table

    dev = result["device"]
    title = f"dlgpu bench on {dev.get('name')} ({result['backend']}{', quick' if result['quick'] else ''})"
    table = Table(title=title)
    for col in TABLE_HEADER:
        table.add_column(col, justify="left" if col in ("op", "variant", "shape", "dtype", "baseline") else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    console.print(table)
    console.print("ratio = baseline ms / dlgpu ms (above 1: dlgpu is faster)")
    console.print("measured ceilings: " + "; ".join(ceiling_lines(result["ceilings"])))
    # one line per op and reason, not one per row: the CPU run skips dozens of GPU-only rows
    skipped = Counter((r["op"], r["skipped"]) for r in result["rows"] if r.get("skipped"))
    for (op, why), count in skipped.items():
        console.print(f"skipped {count} {op} row{'s' if count > 1 else ''}: {why}", markup=False)
    for r in result["rows"]:
        if r.get("baseline_error"):
            console.print(f"baseline {r['baseline']} of {r['op']} failed: {r['baseline_error']}", markup=False)
    for err in result["errors"]:
        console.print(f"error {err}", markup=False)


def write_plot(result: dict[str, Any], path: str) -> str | None:
    """Draw dlgpu and baseline times per case; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        return f"--plot needs matplotlib, which is not importable here ({type(exc).__name__}); no PNG written"
    rows = [r for r in result["rows"] if r.get("ms")]
    labels = [f"{r['op']}\n{r['shape']}\nvs {r.get('baseline') or '-'}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4.5))
    ax.bar(x - 0.2, [r["ms"] for r in rows], 0.4, label="dlgpu")
    ax.bar(x + 0.2, [r.get("baseline_ms") or 0 for r in rows], 0.4, label="baseline")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("ms (median)")
    ax.set_title(f"dlgpu bench: {result['device'].get('name')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


# ---------------------------------------------------------------------------
# Command line: ``dlgpu bench`` (dlgpu.cli calls add_arguments and main)
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("families", nargs="*", metavar="FAMILY",
                        help=f"kernel families to benchmark (default: all of {', '.join(FAMILIES)})")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (GPU: same sizes; CPU: smaller sizes) for a fast pass")
    parser.add_argument("--json", metavar="FILE", help="write the ceilings and rows as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the times as a PNG (needs matplotlib)")
    parser.add_argument("--cpu", action="store_true", help="benchmark the CPU backend even when a GPU is present")


def main(args: argparse.Namespace) -> int:
    """Run ``dlgpu bench``; 0 when every case ran, 1 when any dlgpu call failed, 2 on bad arguments."""
    from rich.console import Console
    from rich.progress import Progress

    from dlgpu.errors import DlgpuError

    # A log file or pipe (the GPU run) gets a table wide enough to stay on one line per row.
    console = Console() if sys.stdout.isatty() else Console(width=170)
    try:
        cases = cases_for(args.families)
    except DlgpuError as exc:
        console.print(str(exc), markup=False)
        return 2
    quick = bool(args.quick)
    has_gpu, why = (False, "--cpu given") if getattr(args, "cpu", False) else gpu_probe()
    if has_gpu:
        backend = cuda_backend(quick)
        console.print(f"benchmarking the CUDA backend on {backend.device['name']}", markup=False)
    else:
        print(NO_GPU_MESSAGE, flush=True)
        console.print(f"({why})", markup=False)
        backend = cpu_backend(quick)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ceilings", total=len(cases) + 1)
        ceilings = measure_ceilings(backend, quick)
        progress.advance(task)

        def step(case: Case) -> None:
            progress.update(task, advance=1, description=case.name)

        result = run_benchmarks(cases, backend, quick, ceilings=ceilings, progress=step)
    print_result(result, console)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
        console.print(f"wrote {args.json}", markup=False)
    if args.plot:
        why_not = write_plot(result, args.plot)
        console.print(why_not or f"wrote {args.plot}", markup=False)
    return 1 if result["errors"] else 0


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="dlgpu bench", description="Benchmark dlgpu's kernels.")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
