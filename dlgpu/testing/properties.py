"""Property-based testing with Hypothesis: the profiles, the backends, and the comparisons every stem uses.

Each tests/test_<stem>.py draws shapes, hyper-parameters, dtype, precision and a data
seed for its ops; the data itself comes from that seed (standard normal), so examples
stay cheap.  The CPU backend runs in CI; the same properties run on the CUDA backend
(float32, its only dtype) under the ``gpu`` marker.

Example counts come from a Hypothesis profile chosen by the environment variable
``DLGPU_HYPOTHESIS_PROFILE``:

* ``ci`` (default): 30 examples per op, derandomized (the same examples every run);
* ``gpu``: 200 examples per op, or ``$DLGPU_HYPOTHESIS_EXAMPLES`` (the GPU run script sizes
  it from the time its test step has);
* ``thorough``: 1000 examples per op, by hand.

deadline=None everywhere: the first example of an op may compile a kernel.  Imported
by tests only (it imports pytest and hypothesis).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from dlgpu.testing import assert_close, random_array, to_numpy, tolerance

PROFILE_ENV = "DLGPU_HYPOTHESIS_PROFILE"
GPU_EXAMPLES = int(os.environ.get("DLGPU_HYPOTHESIS_EXAMPLES", "200"))
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
settings.register_profile("ci", max_examples=30, derandomize=True, **_COMMON)
settings.register_profile("gpu", max_examples=GPU_EXAMPLES, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
PROFILE = os.environ.get(PROFILE_ENV, "ci")
if PROFILE not in ("ci", "gpu", "thorough"):
    raise ValueError(f"{PROFILE_ENV}={PROFILE!r}: expected ci, gpu or thorough")
OP_SETTINGS = settings(settings.get_profile(PROFILE))


class Device:
    """Moves NumPy data to the backend under test and results back."""

    def __init__(self, name: str):
        self.name = name
        self.dtypes = (np.float32, np.float64) if name == "cpu" else (np.float32,)

    def put(self, array):
        if array is None or self.name == "cpu":
            return array
        import cupy

        return cupy.asarray(array)


# The GPU variants are also `slow`: hundreds of examples each, kept out of the sanitizer passes.
GPU = [pytest.mark.gpu, pytest.mark.slow]


def backends():
    return pytest.mark.parametrize(
        "backend", [Device("cpu"), pytest.param(Device("gpu"), marks=GPU)], ids=["cpu", "gpu"]
    )


@st.composite
def common(draw, backend: Device, *, precision: bool = False):
    """(rng, dtype, precision) for one example."""
    dtype = draw(st.sampled_from(backend.dtypes))
    prec = "ieee"
    if precision and dtype == np.float32:
        prec = draw(st.sampled_from(["ieee", "tf32", "bf16", "fp16"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed), np.dtype(dtype), prec


dims = st.integers(1, 40)


shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)


def assert_product_close(out, ref, magnitude, *, dtype, precision):
    """A product or convolution against the reference.

    In IEEE arithmetic: dlgpu.testing's ||out - ref|| / ||ref|| bound.  With
    rounded operands (tf32/bf16/fp16) a tiny output that is the difference of
    large terms (one element, a short sum that cancels) has no small relative
    error to offer, so the same bound is taken relative to ``magnitude``, the
    op on the operands' absolute values -- the sum of |terms| that rounding
    error is proportional to.
    """
    if precision == "ieee":
        assert_close(out, ref, dtype=dtype)
        return
    err = np.linalg.norm((to_numpy(out).astype(np.float64) - ref).ravel())
    bound = tolerance(dtype, precision) * np.linalg.norm(np.asarray(magnitude, np.float64).ravel())
    assert np.all(np.isfinite(to_numpy(out))) and err <= bound, f"{precision}: error {err:.3e} > {bound:.3e}"


# NumPy warns when arithmetic meets NaN or inf (in the reference and in the CPU backend's NumPy calls);
# here that is the point.
INVALID_OK = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def with_specials(rng, shape, dtype, count):
    """Standard-normal data with ``count`` entries replaced by NaN, +inf or -inf."""
    x = random_array(rng, shape, dtype)
    flat = x.reshape(-1)
    where = rng.choice(flat.size, size=min(count, flat.size), replace=False)
    flat[where] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype), size=where.size)
    return x


def assert_same_specials(out, ref, *, dtype, elementwise=False):
    """NaN where the reference has NaN, the same infinities, and the finite rest within tolerance."""
    got = to_numpy(out).astype(np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    for name, mask in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        differ = mask(got) != mask(ref)
        assert not differ.any(), (
            f"{name} differs at {int(differ.sum())} of {got.size} positions, e.g. index "
            f"{np.unravel_index(int(np.argmax(differ)), got.shape)}: got {got[differ][0]}, reference {ref[differ][0]}"
        )
    finite = np.isfinite(ref)
    if finite.any():
        assert_close(got[finite], ref[finite], dtype=dtype, elementwise=elementwise)


def property_test():
    """The decorators every property test wears: on each backend (:func:`backends`), under the profile's
    settings, with Hypothesis's ``data`` to draw from."""
    from hypothesis import given

    def decorate(fn):
        return backends()(OP_SETTINGS(given(data=st.data())(fn)))

    return decorate
