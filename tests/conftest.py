"""Shared test setup: the `gpu` marker skips cleanly where no CUDA GPU is usable, tests that run
kernels on the CPU harness are marked `harness`, and the executors the stem tests run on."""

from __future__ import annotations

import functools
import os
import zlib

import numpy as np
import pytest


@functools.lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """None when CuPy is installed and sees a GPU; otherwise why not (asked once per session)."""
    from dlgpu.device import gpu_unavailable_reason as reason

    return reason()


def pytest_collection_modifyitems(config, items):
    for item in items:  # a test that needs the host compiler runs kernels on the harness
        if "host_compiler" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.harness)
    reason = gpu_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name, so each test sees fixed but distinct data.

    The seed is also a user property of the test, so a failure's report (and the GPU run's
    record, benchmarks/results_plugin.py) names it for a replay elsewhere.
    """
    seed = zlib.crc32(request.node.nodeid.encode())
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def host_compiler() -> str:
    """The CPU harness needs a C++ compiler: a skip on a machine without one, a failure in CI."""
    from dlgpu.errors import BackendUnavailableError
    from dlgpu.testing import harness

    try:
        return harness.find_compiler()
    except BackendUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have a C++ compiler for the kernel harness: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(params=["cpu", pytest.param("harness", marks=pytest.mark.harness),
                        pytest.param("cuda", marks=pytest.mark.gpu)])
def target(request):
    """Where a stem's checks run: the CPU backend, the CUDA launchers on the harness, the CUDA backend."""
    from dlgpu.cases import case

    if request.param == "harness":
        request.getfixturevalue("host_compiler")
        return case.harness_target("plain", multiprocessor_count=1)
    return case.cpu_target() if request.param == "cpu" else case.cuda_target()


@pytest.fixture(scope="module")
def plain(host_compiler):
    """The CPU harness, unsanitized, with one SM (so grid-stride loops take several trips)."""
    from dlgpu.testing.harness import HarnessExecutor

    return HarnessExecutor("plain", multiprocessor_count=1)


@pytest.fixture
def harness_conv2d(monkeypatch, host_compiler):
    """dlgpu.functional's convolutions on the CUDA backend (NumPy arrays, torch CPU tensors through them),
    its kernels on the harness; returns the executor, which records every launch."""
    import dlgpu.cuda
    from dlgpu.cases.case import bind
    from dlgpu.testing.harness import HarnessExecutor, RecordingExecutor

    recorder = RecordingExecutor(HarnessExecutor("plain", multiprocessor_count=1))
    backend = bind(dlgpu.cuda.BACKEND, "harness-plain", executor=recorder)
    for where in ("dlgpu.ops.conv2d.select", "dlgpu.ops.validate.select"):  # the op's choice, and out='s check
        monkeypatch.setattr(where, lambda op, **arrays: backend)
    return recorder


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture()
def poison(cp):
    """The CuPy executor with NaN-poisoned outputs and a record of the kernels launched."""
    from dlgpu.testing.gpu import PoisonExecutor

    return PoisonExecutor(cp)


@pytest.fixture
def launches(monkeypatch):
    """Every backend function replaced by a spy; the record of what a call reached."""
    from dlgpu.testing.bad_input import spy_on_backends

    return spy_on_backends(monkeypatch)


@pytest.fixture(autouse=True)
def _kernel_errors_are_checked_by_the_test_that_made_them():
    """A kernel's report of a bad index waits in the host flag for the next dlgpu.check_errors: a
    test that provokes one must check it, or the report would surface in whichever test checks next."""
    yield
    from dlgpu.cuda import error_flag

    host = error_flag._flags.get(error_flag.HOST)
    if host is not None and host[0] != 0:
        left = error_flag.error_of(host.copy())
        host.fill(0)
        pytest.fail(f"this test left a kernel-reported error unchecked (call dlgpu.check_errors): {left}")
