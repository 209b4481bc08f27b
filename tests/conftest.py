"""Shared test setup: the `gpu` marker skips cleanly where no CUDA GPU is usable."""

from __future__ import annotations

import functools
import os
import zlib

import numpy as np
import pytest


@functools.lru_cache(maxsize=1)
def gpu_unavailable_reason() -> str | None:
    """None when CuPy is installed and sees a GPU; otherwise why not."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # the driver or runtime is missing: CuPy raises its own error types
        return f"no CUDA device ({type(exc).__name__}: {exc})"
    return None if count > 0 else "no CUDA device"


def pytest_collection_modifyitems(config, items):
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
