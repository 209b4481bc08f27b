"""Timing: one summary of repeated measurements, two timers, and the L2 rotation.

- On a GPU, :class:`CudaEventTimer` records a pair of CUDA events around every
  repetition after a warm-up, synchronizes once at the end, and reports the
  median with the 10th and 90th percentiles.  :func:`rotation_count` says how
  many copies of the inputs to rotate through so that together they exceed the
  L2 several times over (the L2 size is read from the device): a repetition
  never finds its inputs in cache.
- Without a GPU, :class:`WallClockTimer` times the CPU backend with
  ``time.perf_counter`` (median of repeats, within a time budget per case).

Why not ``cupyx.profiler.benchmark`` or pytest-benchmark's timer: both time
back-to-back calls on the same inputs (the L2 stays warm), and neither hides
the host's launch cost of small kernels, which the spin kernel below does.
pytest-benchmark still runs benchmarks/bench_<stem>.py (machine info,
history, comparison); :mod:`dlgpu.bench.pytest_adapter` puts these device
times into its rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


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
