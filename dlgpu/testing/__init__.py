"""What tests, ``dlgpu check`` and benchmarks share: one tolerance table, odd shapes, finite differences.

Tolerances are relative Frobenius errors against the float64 reference
(DESIGN.md, Numerics).  NaN or inf in an output never passes.
"""

from __future__ import annotations

import numpy as np

from dlgpu.device import is_cupy

# ||out - ref|| / ||ref||, by arithmetic.  Elementwise fp32 ops are exact up to
# one rounding; products and convolutions accumulate K roundings.  The 16-bit
# precisions round every fp32 operand (tf32, fp16, bf16).
#
# 16-bit STORAGE (float16, bfloat16 arrays) is judged against the reference computed
# from the stored, already rounded inputs, so the only error is fp32 arithmetic plus
# the one rounding of each output to 16 bits: at most the unit roundoff u per element,
# hence at most u in the relative norm, elementwise or accumulating alike (fp32
# accumulation adds ~sqrt(K) * 2^-24, far below).  u = 2^-11 = 4.9e-4 for float16,
# 2^-8 = 3.9e-3 for bfloat16; the bound is 2u, which an output rounded twice (to 16
# bits, then again) would already exceed on random data.
TOLERANCES: dict[str, float] = {
    "float64": 1e-12,
    "float32-elementwise": 1e-5,
    "float32": 5e-5,
    "tf32": 2e-3,
    "fp16": 2e-3,
    "bf16": 1e-2,
    "float16-storage": 2 * 2.0**-11,
    "bfloat16-storage": 2 * 2.0**-8,
}


def tolerance(dtype, precision: str = "ieee", elementwise: bool = False) -> float:
    """The allowed relative error for an output of ``dtype`` computed at ``precision``.

    For 16-bit storage ``dtype`` is the inputs' (a float32 loss or out_dtype=float32
    output of 16-bit inputs is still judged by the storage's bound).
    """
    name = np.dtype(dtype).name
    if name == "float64":
        return TOLERANCES["float64"]
    if f"{name}-storage" in TOLERANCES:
        return TOLERANCES[f"{name}-storage"]
    if precision != "ieee":
        return TOLERANCES[precision]
    return TOLERANCES["float32-elementwise" if elementwise else "float32"]


def to_numpy(array) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array (0-d included)."""
    if is_cupy(array):
        return array.get()
    return np.asarray(array)


def rel_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64; inf when out holds NaN or inf, or shapes differ."""
    out = to_numpy(out).astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return float("inf")
    ref_norm = np.linalg.norm(ref.ravel())
    diff_norm = np.linalg.norm((out - ref).ravel())
    if ref_norm == 0.0:
        return float(diff_norm)
    return float(diff_norm / ref_norm)


def assert_close(out, ref, *, dtype=None, precision: str = "ieee", elementwise: bool = False) -> None:
    """Fail unless ``out`` is within the tolerance table's bound of ``ref``."""
    dtype = to_numpy(out).dtype if dtype is None else dtype
    bound = tolerance(dtype, precision, elementwise)
    err = rel_error(out, ref)
    assert err <= bound, (
        f"relative error {err:.3e} > {bound:.1e} ({np.dtype(dtype).name}, {precision}); "
        f"shape {to_numpy(out).shape}"
    )


def odd_sizes(largest: int = 67) -> list[int]:
    """Sizes every shape test draws from: 1, small primes, 2^k +- 1, never only tile multiples."""
    sizes = {1, 2, 3, 5, 7, 13, 31, 33, 63, 64, 65, largest}
    return sorted(s for s in sizes if s <= largest)


def random_array(rng: np.random.Generator, shape, dtype=np.float32, scale: float = 1.0) -> np.ndarray:
    """Fresh standard-normal data (never zeros) of ``shape`` and ``dtype``."""
    return (rng.standard_normal(shape) * scale).astype(dtype)


def bf16_bits(values) -> np.ndarray:
    """float32 values as bfloat16 bit patterns (uint16), rounded to nearest even: how 16-bit kernels take
    bf16 operands where NumPy has no bfloat16 dtype.  Finite inputs only."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def stored_values(array, precision: str) -> np.ndarray:
    """What an operand holds, in float64: uint16 arrays are read as bf16 (or fp16) bits per ``precision``."""
    array = to_numpy(array)
    if array.dtype == np.uint16:
        if precision == "bf16":
            return (array.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return array.view(np.float16).astype(np.float64)
    return array.astype(np.float64)


def same_bits(a, b) -> bool:
    """Equal shape, dtype and bytes: what a deterministic op must give twice."""
    a, b = to_numpy(a), to_numpy(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------
# finite differences: the reference's gradients, and the layers', are checked against them
# ---------------------------------------------------------------------------

FD_STEP = 1e-6
# Central differences in float64 with a 1e-6 step are good to ~1e-9 relative.
FD_TOLERANCE = 1e-7


def numeric_gradient(scalar_fn, x: np.ndarray, step: float = FD_STEP) -> np.ndarray:
    """d scalar_fn() / d x by central differences; scalar_fn reads x, which is nudged in place."""
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + step
        plus = scalar_fn()
        x[index] = original - step
        minus = scalar_fn()
        x[index] = original
        grad[index] = (plus - minus) / (2 * step)
    return grad


def check_gradients(forward, inputs: dict, analytic: dict, grad_out: np.ndarray) -> None:
    """Each analytic gradient must match the numeric gradient of sum(forward() * grad_out)."""

    def projected() -> float:
        return float(np.sum(forward() * grad_out))

    for name, grad in analytic.items():
        numeric = numeric_gradient(projected, inputs[name])
        assert grad.shape == inputs[name].shape, name
        assert grad.dtype == np.float64, name
        err = rel_error(grad, numeric)
        assert err < FD_TOLERANCE, f"grad of {name}: relative error {err:.2e}"


def assert_away_from_kink(values: np.ndarray) -> None:
    """ReLU's derivative jumps at 0: finite differences need every input well away from it."""
    assert np.min(np.abs(values)) > 1e3 * FD_STEP, "random data fell on the ReLU kink; change the seed"
