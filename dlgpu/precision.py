"""How products and convolutions compute, and what 16-bit storage means.

Precisions.  "ieee" is exact fp32 arithmetic; "tf32" rounds fp32 operands to
TF32 on tensor cores; "bf16" and "fp16" cast fp32 operands to 16 bits.  All of
them accumulate in fp32.  The process-wide default is "ieee", as PyTorch's is
when TF32 is off.

Storage.  float16 (NumPy's and CuPy's own) and bfloat16 (``ml_dtypes.bfloat16``
on NumPy and, from CuPy 14, on CuPy; torch and JAX bf16 arrive through DLPack)
are storage dtypes of every op: arithmetic happens in fp32 and each output is
rounded once to the inputs' dtype.  A product or convolution of 16-bit arrays
reads its operands as they are stored, so its precision is the storage's own
("bf16" for bfloat16, "fp16" for float16): ``precision=None`` means that,
whatever the process default, and naming the other 16-bit format is refused
(it would round every operand a second time).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from dlgpu.errors import ArgumentError

PRECISIONS = ("ieee", "tf32", "bf16", "fp16")

FLOAT16 = np.dtype(np.float16)
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
# The 16-bit storage dtypes, each with the tensor-core precision that reads it as stored.
STORAGE_PRECISIONS: dict[np.dtype, str] = {BFLOAT16: "bf16", FLOAT16: "fp16"}
HALF_DTYPES: tuple[np.dtype, ...] = tuple(STORAGE_PRECISIONS)

_default = "ieee"


def get_default_precision() -> str:
    return _default


def set_default_precision(precision: str) -> None:
    """Set the precision used when an op on float32 arrays is called with ``precision=None``."""
    global _default
    _default = resolve_precision(precision, op="set_default_precision")


def is_half(dtype) -> bool:
    """float16 or bfloat16: a 16-bit storage dtype."""
    return np.dtype(dtype) in STORAGE_PRECISIONS


def is_floating(dtype) -> bool:
    """A floating dtype dlgpu can name: NumPy's own (kind "f") or bfloat16 (kind "V" to NumPy)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype == BFLOAT16


def loss_dtype(dtype) -> np.dtype:
    """The dtype of a loss of ``dtype`` inputs: float32 for 16-bit storage (a mean of many terms kept at
    float32, as PyTorch's autocast keeps its losses), else ``dtype`` itself."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if is_half(dtype) else dtype


def storage_precision(dtype) -> str | None:
    """The precision a product reads 16-bit ``dtype`` operands at ("bf16", "fp16"); None for others."""
    return STORAGE_PRECISIONS.get(np.dtype(dtype))


def resolve_precision(precision: str | None, *, op: str, dtype=None) -> str:
    """The precision an op computes at: ``precision`` checked, or the default for operands of ``dtype``."""
    if precision is not None and precision not in PRECISIONS:
        raise ArgumentError(f"{op}: precision must be one of {PRECISIONS} or None, got {precision!r}")
    stored = storage_precision(dtype) if dtype is not None else None
    if stored is None:
        return _default if precision is None else precision
    if precision is not None and precision != stored:
        raise ArgumentError(
            f"{op}: {np.dtype(dtype).name} operands compute at precision {stored!r} (16-bit operands read as "
            f"stored, fp32 accumulation); precision={precision!r} is not available for them "
            "(cast the arrays with .astype to compute otherwise)"
        )
    return stored
