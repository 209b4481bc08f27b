"""What every public op checks before any work (dlgpu/ops/validate.py), across the stems.

Each stem's tests run its own bad inputs (declared in dlgpu/cases/<stem>.py) through
dlgpu.testing.bad_input.assert_refused; here: that together they cover every op on
both backends with distinct names, and the behaviour no single op owns -- aliasing
and in-place outputs, no side effects of a refused call, GPU arrays without CuPy.
(Index ranges, which the CUDA backend leaves to its kernels: tests/test_device_errors.py.)
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import dlgpu.functional as F
from dlgpu import cases
from dlgpu.backend import OPS
from dlgpu.errors import BackendUnavailableError, DtypeError, LayoutError, ShapeError
from dlgpu.testing.bad_input import FakeCupy, FakeDlpack, a2, b2, rand

BAD_INPUTS = cases.bad_inputs()


def test_the_bad_inputs_are_many_distinct_and_cover_every_op():
    ids = [case.test_id(backend) for case in BAD_INPUTS for backend in case.backends]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids), "two bad inputs share a name"
    assert {"cpu", "gpu"} <= {backend for case in BAD_INPUTS for backend in case.backends}
    called = "\n".join(repr(case.call.__code__.co_names) for case in BAD_INPUTS)
    for op in OPS:
        assert f"'{op}'" in called, f"no bad input calls {op}"


def test_out_overlapping_part_of_input_is_refused():
    buffer = rand(10)
    with pytest.raises(LayoutError, match="overlaps input x"):
        F.relu(buffer[:8], out=buffer[2:])


def test_in_place_elementwise_is_allowed():
    x = rand(3, 5)
    expected = np.maximum(x, 0)
    result = F.relu(x, out=x)
    assert result is x
    np.testing.assert_array_equal(x, expected)


def test_refused_calls_have_no_side_effects_and_the_process_keeps_working():
    param, grad = rand(4), rand(5)
    before = param.copy()
    with pytest.raises(ShapeError):
        F.sgd_step(param, grad, None, lr=0.1)
    np.testing.assert_array_equal(param, before)
    out = F.matmul(a2, b2)
    np.testing.assert_allclose(out, a2 @ b2, rtol=1e-5, atol=1e-5)


def test_gpu_arrays_without_cupy_are_refused_with_a_hint(monkeypatch, launches):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match=r"relu: x \(.*FakeDlpack\) is on a GPU; .*needs CuPy"):
        F.relu(FakeDlpack(2, 0))
    with pytest.raises(BackendUnavailableError, match=r"matmul: a \(cupy.FakeCupy\) is on a GPU"):
        F.matmul(FakeCupy(a2), FakeCupy(b2), stream=0)
    assert launches == []


def test_refused_in_place_ops_leave_their_buffers_untouched(launches):
    param, velocity = rand(4, 3), rand(4, 3)
    before = param.copy(), velocity.copy()
    with pytest.raises(LayoutError):
        F.sgd_step(param, rand(4, 3), rand(4, 6)[:, ::2], lr=0.1, momentum=0.9)
    with pytest.raises(ShapeError):
        F.sgd_step(param, rand(4, 2), velocity, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(param, before[0])
    np.testing.assert_array_equal(velocity, before[1])
    out = np.full((5, 7), 7.0, np.float32)
    with pytest.raises(DtypeError):
        F.relu(rand(5, 7, dtype=np.float64), out=out)
    assert np.all(out == 7.0) and launches == []
