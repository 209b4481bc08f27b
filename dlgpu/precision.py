"""The process-wide default precision of matrix products and convolutions.

"ieee" is exact fp32 arithmetic; "tf32" rounds fp32 operands to TF32 on
tensor cores; "bf16" and "fp16" cast operands to 16 bits.  All of them
accumulate in fp32.  The default is "ieee", as PyTorch's is when TF32 is off.
"""

from __future__ import annotations

from dlgpu.errors import ArgumentError

PRECISIONS = ("ieee", "tf32", "bf16", "fp16")

_default = "ieee"


def get_default_precision() -> str:
    return _default


def set_default_precision(precision: str) -> None:
    """Set the precision used when an op is called with ``precision=None``."""
    global _default
    _default = resolve_precision(precision, op="set_default_precision")


def resolve_precision(precision: str | None, *, op: str) -> str:
    if precision is None:
        return _default
    if precision not in PRECISIONS:
        raise ArgumentError(f"{op}: precision must be one of {PRECISIONS} or None, got {precision!r}")
    return precision
