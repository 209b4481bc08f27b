"""The tests every stem's file runs, written once: each tests/test_<stem>.py binds them to its own cases.

:func:`case_tests` runs a stem's checks (dlgpu/cases/<stem>.py) on every
executor of the ``target`` fixture and refuses its bad inputs on both backends;
:func:`kernel_tests` runs its harness kernel cases plain and sanitized and
checks that every kernel of the stem is declared by one.  Imported by tests only
(it imports pytest).
"""

from __future__ import annotations

import pytest

from dlgpu.testing.bad_input import assert_refused
from dlgpu.testing.harness import MODES
from dlgpu.testing.kernel_cases import assert_every_kernel_declared, run_kernel_case


def case_tests(cases):
    """(test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch) for ``cases``."""

    @pytest.mark.parametrize("check", cases.checks(), ids=lambda check: check.id)
    def test_every_check_matches_the_reference(check, target, rng):
        reason = None if check.dtype is None else target.unsupported(check.dtype)
        if reason is not None:
            pytest.skip(reason)
        check.assert_passes(rng, target)

    @pytest.mark.parametrize("backend, case", [pytest.param(backend, case, id=case.test_id(backend))
                                               for case in cases.bad_inputs() for backend in case.backends])
    def test_bad_input_is_refused_before_any_launch(launches, backend, case):
        assert_refused(case, backend, launches)

    return test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch


def kernel_tests(stem: str, kernel_cases):
    """(test_kernels_match_the_reference, test_every_kernel_has_harness_coverage) for a stem's kernel cases."""

    @pytest.mark.usefixtures("host_compiler")
    @pytest.mark.parametrize("case, mode", [pytest.param(case, mode, id=f"{case.name}-{mode}")
                                            for case in kernel_cases for mode in MODES if mode in case.modes])
    def test_kernels_match_the_reference(case, mode, rng):
        run_kernel_case(case, mode, rng)

    def test_every_kernel_has_harness_coverage():
        assert_every_kernel_declared(stem, kernel_cases)

    return test_kernels_match_the_reference, test_every_kernel_has_harness_coverage
