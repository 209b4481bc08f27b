"""The op table: each kernel stem's checks and benchmarks, declared once in dlgpu/cases/<stem>.py.

Every stem module offers ``checks(quick)`` (:class:`~dlgpu.cases.case.Check`:
an op against dlgpu.reference on odd shapes) and ``BENCHMARKS``
(:class:`~dlgpu.cases.case.Benchmark`: an op at a speed-target shape with its
bytes or flops and its baselines); a stem with several tile configurations may
offer ``SWEEP`` too, its target rows once per configuration (``dlgpu bench --sweep``).  ``dlgpu check``, ``dlgpu bench``,
benchmarks/bench_<stem>.py and tests/test_<stem>.py loop over these.
"""

from __future__ import annotations

from types import ModuleType

from dlgpu.cases import bias_grad, conv2d, elementwise, gemm, mse, pool, sgd, softmax
from dlgpu.cases.case import Benchmark, Check
from dlgpu.errors import ArgumentError

# Stem name -> its case module, in the order tables list them (cheap, memory-bound ops first).
STEMS: dict[str, ModuleType] = {
    module.FAMILY: module for module in (elementwise, sgd, bias_grad, softmax, mse, pool, gemm, conv2d)
}


def _stems(names) -> list[ModuleType]:
    if not names:
        return list(STEMS.values())
    unknown = [name for name in names if name not in STEMS]
    if unknown:
        raise ArgumentError(f"unknown stem{'' if len(unknown) == 1 else 's'} {unknown}; known: {', '.join(STEMS)}")
    return [STEMS[name] for name in names]


def checks(quick: bool = True, stems=None) -> list[Check]:
    """Every check of the named stems (all when None or empty)."""
    return [check for module in _stems(stems) for check in module.checks(quick)]


def benchmarks(stems=None) -> list[Benchmark]:
    """Every benchmark of the named stems (all when None or empty)."""
    return [benchmark for module in _stems(stems) for benchmark in module.BENCHMARKS]


def sweeps(stems=None) -> list[Benchmark]:
    """Every sweep row (a target row forced onto one tile configuration) of the named stems."""
    return [benchmark for module in _stems(stems) for benchmark in getattr(module, "SWEEP", ())]


def bad_inputs(stems=None):
    """Every bad input of the named stems (all when None or empty)."""
    return [case for module in _stems(stems) for case in module.bad_inputs()]
