"""What a stem declares about each of its ops: checks against the reference, and benchmarks.

A :class:`Check` draws fresh inputs, runs one op on a :class:`Target` (a
backend and the arrays it takes), and returns every output beside its
float64 reference; the tolerance comes from the one table in
:mod:`dlgpu.testing`, keyed by the target's dtype, the precision and
whether the op is elementwise.  A check may name a 16-bit storage dtype
(``Check.dtype``): it then runs on every target in that dtype, which is how
16-bit storage is an axis of each stem's checks (on a subset of its shapes).  Tests, ``dlgpu check`` and the harness run
the same checks.

A :class:`Benchmark` names an op at one shape, how to make its inputs, the
call to time, the bytes and flops it must move and compute, its baselines,
and (:class:`Prediction`) what its kernel was predicted to reach on a GPU
before one ran it.  ``dlgpu bench`` and benchmarks/bench_<stem>.py time the
same ones; a GPU row carries the prediction and the verdict.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from dlgpu.backend import OPS, QUERIES, Backend
from dlgpu.precision import HALF_DTYPES, storage_precision
from dlgpu.testing import rel_error, tolerance

# The 16-bit storage dtypes every stem's checks also run in (on a subset of their shapes).
STORAGE_DTYPES = HALF_DTYPES


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One output of a checked call and the float64 value it must match."""

    name: str
    value: Any  # the backend's array (NumPy or CuPy)
    reference: np.ndarray
    elementwise: bool  # exact up to one rounding (tolerance "float32-elementwise"), or an accumulation


@dataclass(frozen=True)
class Target:
    """Where a check runs: a backend, the array module it takes, and the dtype of the inputs."""

    name: str  # "cpu", "cuda", "harness": test ids and dlgpu check's title
    backend: Backend
    xp: Any
    dtype: np.dtype

    def array(self, host: np.ndarray):
        return self.xp.asarray(host)

    def poisoned(self, shape):
        """An output buffer full of NaN: an element a kernel forgets to write fails the comparison."""
        return self.xp.full(shape, np.nan, dtype=self.dtype)

    def unsupported(self, dtype) -> str | None:
        """Why this target cannot hold arrays of ``dtype``, or None (CuPy 13 has no bfloat16 arrays)."""
        try:
            self.xp.empty(1, dtype=np.dtype(dtype))
        except (TypeError, ValueError, NotImplementedError) as exc:
            version = getattr(self.xp, "__version__", "")
            return f"{self.name}: {self.xp.__name__} {version} has no {np.dtype(dtype).name} arrays ({exc})"
        return None

    @property
    def precision(self) -> str:
        """What products and convolutions compute at here: the storage's own for 16-bit arrays, else ieee."""
        return storage_precision(self.dtype) or "ieee"


@dataclass(frozen=True)
class Check:
    """One op at one configuration, against dlgpu.reference."""

    op: str  # the public op (a name of dlgpu.functional, hence of the Backend protocol)
    label: str  # the shapes and settings, for tables and test ids
    run: Callable[[np.random.Generator, Target], list[Output]]
    precision: str = "ieee"
    dtype: np.dtype | None = None  # a 16-bit storage dtype the check runs in on any target; None: the target's

    def __post_init__(self):
        assert self.op in OPS, f"{self.op} is not an op of dlgpu.backend.Backend"

    def on(self, target: Target) -> Target:
        """``target`` in the check's storage dtype."""
        return target if self.dtype is None else replace(target, dtype=np.dtype(self.dtype))

    def measure(self, rng: np.random.Generator, target: Target) -> list[tuple[str, float, float]]:
        """(output, relative error, bound) for every output of one run; NaN or inf never passes."""
        target = self.on(target)
        return [(o.name, rel_error(o.value, o.reference), tolerance(target.dtype, self.precision, o.elementwise))
                for o in self.run(rng, target)]

    def assert_passes(self, rng: np.random.Generator, target: Target) -> None:
        for name, error, bound in self.measure(rng, target):
            assert error <= bound, f"{self.id} on {target.name}: {name} is off by {error:.2e} > {bound:.0e}"

    @property
    def id(self) -> str:
        return f"{self.op}[{self.label}" + ("" if self.dtype is None else f" {np.dtype(self.dtype).name}") + "]"


def cpu_target(dtype=np.float32) -> Target:
    """The CPU backend on NumPy arrays of ``dtype``."""
    import dlgpu.cpu

    return Target("cpu", dlgpu.cpu.BACKEND, np, np.dtype(dtype))


def cuda_target() -> Target:
    """The CUDA backend on CuPy arrays (needs CuPy and a GPU)."""
    import cupy

    import dlgpu.cuda

    return Target("cuda", dlgpu.cuda.BACKEND, cupy, np.dtype(np.float32))


def harness_target(mode: str = "plain", **executor_options) -> Target:
    """The CUDA backend's launchers on NumPy arrays, their kernels run by the CPU harness."""
    import dlgpu.cuda
    from dlgpu.testing.harness import HarnessExecutor

    executor = HarnessExecutor(mode, **executor_options)
    backend = bind(dlgpu.cuda.BACKEND, f"harness-{mode}", executor=executor)
    return Target(f"harness-{mode}", backend, np, np.dtype(np.float32))


def bind(backend: Backend, name: str, **keywords) -> Backend:
    """``backend`` with ``keywords`` passed to every op that takes them (``executor=``, ``variant=``).

    The CUDA launchers take an executor and, for products and convolutions, a
    variant; this gives the checks a backend that runs them on the CPU harness
    or forces a registered variant, with the protocol's signatures unchanged.
    """
    members = {"name": name, "float_dtypes": backend.float_dtypes, **{q: getattr(backend, q) for q in QUERIES}}
    for op in OPS:
        function = getattr(backend, op)
        accepted = {k: v for k, v in keywords.items() if k in inspect.signature(function).parameters}
        members[op] = functools.partial(function, **accepted) if accepted else function
    return type("BoundBackend", (), {k: staticmethod(v) if callable(v) else v for k, v in members.items()})()


# ---------------------------------------------------------------------------
# benchmarks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """What a benchmark was predicted to reach on a GPU before any GPU ran it.

    ``low``..``high`` of one measure of its GPU rows: ``"ratio"`` (the baseline's time over dlgpu's, against the
    baseline named by ``baseline``: "cupy" for cuBLAS through CuPy, "torch" for cuDNN / PyTorch) or
    ``"pct_of_ceiling"`` (the share of the measured copy bandwidth or matrix-product rate).  ``why`` names where
    the reasoning is written (a kernel's header: SASS counts, registers, occupancy, bytes moved); ``device`` the
    GPU it was made for.  A GPU record then says, row by row, whether the run confirmed it.
    """

    measure: str
    low: float
    high: float
    why: str
    baseline: str | None = None  # for "ratio": the baseline row it is about
    device: str = "H100 SXM"

    MEASURES = ("ratio", "pct_of_ceiling")

    def __post_init__(self):
        assert self.measure in self.MEASURES, f"a prediction measures one of {self.MEASURES}, not {self.measure!r}"
        assert 0 <= self.low <= self.high, f"a prediction's range must be low <= high, got {self.low}..{self.high}"
        assert (self.measure == "ratio") == (self.baseline is not None), "a predicted ratio names its baseline"

    def verdict(self, row: dict) -> str | None:
        """"below", "within" or "above" the range for one GPU row; None where the row cannot say (no
        measurement, or a ratio against another baseline)."""
        if self.measure == "ratio" and row.get("baseline") != self.baseline:
            return None
        value = row.get(self.measure)
        if value is None:
            return None
        return "below" if value < self.low else "above" if value > self.high else "within"

    def describe(self) -> str:
        """The range as tables print it: ``0.80-0.95x cupy`` or ``85-95% of ceiling``."""
        if self.measure == "ratio":
            return f"{self.low:.2f}-{self.high:.2f}x {self.baseline}"
        return f"{self.low:.0f}-{self.high:.0f}% of ceiling"

    def as_dict(self) -> dict:
        return {"measure": self.measure, "low": self.low, "high": self.high, "baseline": self.baseline,
                "device": self.device, "why": self.why, "text": self.describe()}


@dataclass(frozen=True)
class Benchmark:
    """One benchmarked op at one shape.

    make_inputs(xp, shape, seed) -> dict of arrays (one rotation set)
    run(inputs)                   -> the dlgpu call
    xp_baseline(xp, inputs)       -> the same computation in CuPy / NumPy (None: no such baseline)
    torch_baseline(torch, inputs) -> the same in PyTorch on the GPU (None: none)
    reference(inputs)             -> dlgpu.reference's version (CPU baseline; None: none)
    bytes_moved(shape), flops(shape): the minimum traffic and arithmetic
    """

    family: str  # the kernel stem (kernels/<family>.cu)
    op: str
    shapes: dict[str, tuple[int, ...]]  # "gpu", "cpu", "cpu_quick"
    make_inputs: Callable[[Any, tuple, int], dict]
    run: Callable[[dict], Any]
    bytes_moved: Callable[[tuple], int]
    xp_baseline: Callable[[Any, dict], Any] | None = None
    torch_baseline: Callable[[Any, dict], Any] | None = None
    reference: Callable[[dict], Any] | None = None
    flops: Callable[[tuple], int] | None = None
    bound: str = "memory"  # which ceiling limits it: "memory" or "compute"
    variant: str = "default"
    dtype: str = "float32"
    precision: str = "ieee"
    shape_label: Callable[[tuple], str] | None = None
    note: str = ""
    unavailable: Callable[[str], str | None] | None = None  # backend name -> why it cannot run, or None
    predicted: Prediction | None = None  # the GPU rate predicted before a GPU ran it

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


def gpu_only(why: str) -> Callable[[str], str | None]:
    """``Benchmark.unavailable`` for a benchmark that runs on the CUDA backend only."""
    return lambda backend: None if backend == "cuda" else why


def wgmma_only(why: str) -> Callable[[str], str | None]:
    """``Benchmark.unavailable`` for a row on the wgmma kernels: the CUDA backend (else ``why``) on a compute
    capability 9.0 GPU."""

    def unavailable(backend: str) -> str | None:
        if backend != "cuda":
            return why
        from dlgpu.cuda import gemm_wgmma
        from dlgpu.cuda.executor import default_executor

        return None if gemm_wgmma.available(default_executor()) else gemm_wgmma.UNAVAILABLE

    return unavailable


def randn(xp, shape, seed: int, dtype=np.float32):
    """Normal random numbers, never zeros (zeros can run faster than real data)."""
    if xp is np:
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
    return xp.random.RandomState(seed).standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)


def in_storage(make_inputs: Callable[[Any, tuple, int], dict], dtype) -> Callable[[Any, tuple, int], dict]:
    """``make_inputs`` with every floating input rounded once to a 16-bit storage ``dtype``."""

    def make(xp, shape, seed):
        return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in make_inputs(xp, shape, seed).items()}

    return make


def storage_unavailable(dtype) -> Callable[[str], str | None]:
    """``Benchmark.unavailable`` for a 16-bit storage row: GPU only (on the CPU it would time NumPy's
    conversions, not a kernel, and slow ``dlgpu bench --quick``), and bfloat16 only where CuPy has it."""

    def why(backend: str) -> str | None:
        if backend != "cuda":
            return "16-bit storage rows run on the GPU"
        import cupy

        try:
            cupy.empty(1, dtype=np.dtype(dtype))
        except (TypeError, ValueError, NotImplementedError):
            return f"CuPy {cupy.__version__} has no {np.dtype(dtype).name} arrays (CuPy 14 has bfloat16)"
        return None

    return why


def f32(elements: int) -> int:
    """Bytes of that many float32."""
    return 4 * int(elements)


def prod(shape) -> int:
    return int(np.prod(shape))


def torch_view(torch, array):
    """A PyTorch tensor sharing the CuPy (or NumPy) array's memory (DLPack): no copy; bfloat16 through its bits,
    as dlgpu.interop answers torch callers."""
    from dlgpu import interop

    return interop.answer_in_kind(array, "torch", {})
