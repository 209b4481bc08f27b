"""The Backend protocol: both backends implement every op it names, with its parameters."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import dlgpu.cpu
import dlgpu.cuda
import dlgpu.functional as F
from dlgpu.backend import OPS, Backend
from dlgpu.precision import BFLOAT16

BACKENDS = [dlgpu.cpu.BACKEND, dlgpu.cuda.BACKEND]


def test_the_protocol_names_every_public_op_once():
    assert len(OPS) == len(set(OPS)) == 19
    assert sorted(F.__all__) == sorted(OPS)
    for name in OPS:
        assert callable(getattr(F, name)), name


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_each_backend_implements_every_op_with_the_protocols_parameters(backend):
    assert isinstance(backend, Backend)
    for name in OPS:
        wanted = list(inspect.signature(getattr(Backend, name)).parameters)[1:]  # without self
        got = inspect.signature(getattr(backend, name)).parameters.values()
        positional = [p.name for p in got if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert positional[: len(wanted)] == wanted, f"{backend.name}.{name}{positional} != {wanted}"
        extra = [p for p in got if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][len(wanted):]
        assert all(p.default is not inspect.Parameter.empty for p in extra), f"{backend.name}.{name}"


def test_the_backends_float_dtypes_and_names():
    # 16-bit storage on both (bfloat16 CuPy arrays need CuPy 14)
    assert dlgpu.cpu.BACKEND.float_dtypes == (np.float32, np.float64, BFLOAT16, np.dtype(np.float16))
    assert dlgpu.cuda.BACKEND.float_dtypes == (np.float32, BFLOAT16, np.dtype(np.float16))
    assert [b.name for b in BACKENDS] == ["dlgpu.cpu", "dlgpu.cuda"]


def test_launch_helpers_live_in_the_launch_seam_not_in_a_launcher():
    import dlgpu.cuda.elementwise
    import dlgpu.cuda.launch

    for name in ("multiprocessor_count", "grid_stride_blocks", "require_float32", "output"):
        assert hasattr(dlgpu.cuda.launch, name)
        assert getattr(dlgpu.cuda.elementwise, name, None) in (None, getattr(dlgpu.cuda.launch, name))
