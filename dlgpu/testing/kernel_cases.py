"""Kernels on the CPU harness, stem by stem, and the check that no kernel goes untested.

A :class:`KernelCase` calls a stem's launchers with a harness executor and
declares the kernels it must launch; :func:`run_kernel_case` runs it plain or
under AddressSanitizer / ThreadSanitizer and fails if a declared kernel never
ran.  :func:`assert_every_kernel_declared` fails when a kernel of the stem's
families (kernels/<stem>*.cu) is declared by no case, or a declared one does
not exist: a new kernel needs harness coverage in its stem's tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from dlgpu.kernel_files import stem_families
from dlgpu.testing.harness import MODES, HarnessExecutor, family_kernels


@dataclass(frozen=True)
class KernelCase:
    """Launcher calls that must launch every one of ``kernels`` (of ``family``), in each of ``modes``.

    A case whose kernels are instances of code that another case runs sanitized (the same template
    at another storage type or width) may be ``modes=("plain",)``: each sanitized launch costs a
    process, and the sanitizers would see the same accesses again.
    """

    name: str
    family: str
    kernels: tuple[str, ...]
    check: Callable[[HarnessExecutor, np.random.Generator], None]
    modes: tuple[str, ...] = MODES


def run_kernel_case(case: KernelCase, mode: str, rng: np.random.Generator) -> None:
    """Run ``case`` on a one-SM harness in ``mode``; fail if it left a declared kernel unlaunched."""
    executor = HarnessExecutor(mode, multiprocessor_count=1)
    case.check(executor, rng)
    missing = {(case.family, k) for k in case.kernels} - executor.launched
    assert not missing, f"case {case.name} declares kernels it never launched: {sorted(missing)}"


def nan_like(array) -> np.ndarray:
    """An output buffer of ``array``'s shape and floating dtype, poisoned."""
    return np.full(array.shape, np.nan, array.dtype)


def assert_every_kernel_declared(stem: str, cases) -> None:
    """Every kernel of the stem's families is declared by some case, and every declared kernel exists."""
    declared = {(case.family, kernel) for case in cases for kernel in case.kernels}
    present = set()
    for family in stem_families(stem):
        # Preprocessed: the X-macro tile lists expand into the exported wrappers.
        present |= {(family, kernel) for kernel in family_kernels(family)}
    assert present, f"kernels/ has no family of the stem {stem}"
    assert not present - declared, f"kernels without harness coverage: {sorted(present - declared)}"
    assert not declared - present, f"declared kernels that kernels/ does not have: {sorted(declared - present)}"
