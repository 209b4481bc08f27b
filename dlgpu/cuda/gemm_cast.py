"""Launcher for kernels/gemm_cast.cu, and the storage types the tensor-core kernels read.

A *storage* is how an operand's values sit in memory: ``"f32"`` (float32), ``"bf16"`` or ``"fp16"``
(the 16 bits of each value).  Arrays carry it in their dtype -- float32, float16, ``ml_dtypes.bfloat16``
on NumPy -- except uint16 arrays, which hold bf16 or fp16 bits (CuPy has no bfloat16; a torch bf16
tensor arrives viewed as 16-bit integers) and need the precision to say which.  The tensor-core
kernels read the storage of their precision (:data:`PRECISION_STORAGE`); :func:`cast` makes the copy
they need when an operand is stored otherwise, must be masked by a ReLU's output first, or has rows
that are not a multiple of 16 bytes (see kernels/gemm_tc.cu, "Why a producer pass").
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda import kernel_decls
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import INT32_MAX, MAX_GRID_Y, Launch, multiprocessor_count
from dlgpu.errors import DtypeError, ShapeError

FAMILY = "gemm_cast"
_DEFINES = kernel_decls.integer_defines("gemm_cast.cu")
FLAG_MASK = _DEFINES["CAST_MASK"]
RUN = _DEFINES["CAST_RUN"]  # elements per thread step
THREADS = _DEFINES["CAST_THREADS"]

# The storage a tensor-core precision reads (kernels/ptx.cuh: Operand<P>).
PRECISION_STORAGE = {"tf32": "f32", "bf16": "bf16", "fp16": "fp16"}
ELEMENT_BYTES = {"f32": 4, "bf16": 2, "fp16": 2}
# The copies kernels/gemm_cast.cu has, (from, to): conversions from fp32, masked or padded copies within a type,
# and the exact widening back to fp32.
KERNELS = {(src, dst): f"cast_{src}_{dst}" for src, dst in
           (("f32", "bf16"), ("f32", "fp16"), ("f32", "f32"), ("bf16", "bf16"), ("fp16", "fp16"),
            ("bf16", "f32"), ("fp16", "f32"))}


def storage_of(array, precision: str | None = None) -> str:
    """The storage of ``array``'s values: by dtype, and for uint16 bits by ``precision`` ("bf16" or "fp16")."""
    name = np.dtype(array.dtype).name
    if name == "float32":
        return "f32"
    if name == "float16":
        return "fp16"
    if name == "bfloat16":
        return "bf16"
    if name == "uint16":
        if precision not in ("bf16", "fp16"):
            raise DtypeError(f"uint16 arrays hold bf16 or fp16 bits: say which with precision='bf16' or 'fp16', "
                             f"not {precision!r}")
        return precision
    raise DtypeError(f"operands must be float32, float16, bfloat16 or uint16 (16-bit bits), got {name}")


def storage_dtype(storage: str, like=None):
    """The dtype of a new array in ``storage``: float32; for 16-bit storages uint16 bits when ``like`` holds
    bits (or, for bf16, is absent: CuPy has no bfloat16), else float16 or ``like``'s bfloat16."""
    if storage == "f32":
        return np.dtype(np.float32)
    like_name = None if like is None else np.dtype(like.dtype).name
    if like_name == "uint16" or (storage == "bf16" and like_name != "bfloat16"):
        return np.dtype(np.uint16)
    return np.dtype(np.float16) if storage == "fp16" else np.dtype(like.dtype)


def cast(src, to: str, *, src_storage: str | None = None, mask=None, row_multiple: int = 1, zero_padding=False,
         executor=None):
    """A copy of 2-D (or 1-D) ``src`` in storage ``to``, masked by (mask > 0) when ``mask`` is given.

    ``src_storage`` names uint16 bits (else the dtype says); ``mask`` has src's shape and storage.  With
    ``row_multiple`` the copy's rows are padded to a multiple of that many elements, zeros with
    ``zero_padding`` (else never written): returns ``(copy, cols)``, the matrix being ``copy[:, :cols]``.
    """
    executor = resolve_executor(executor)
    storage = storage_of(src, src_storage)
    if (storage, to) not in KERNELS:
        raise DtypeError(f"cast: no copy from {storage} to {to}; kernels/gemm_cast.cu has {sorted(KERNELS)}")
    if src.ndim not in (1, 2) or not src.flags.c_contiguous:
        raise ShapeError(f"cast: src must be a C-contiguous 1-D or 2-D array, got shape {tuple(src.shape)}")
    if mask is not None and (tuple(mask.shape) != tuple(src.shape) or storage_of(mask, src_storage) != storage
                             or not mask.flags.c_contiguous):
        raise ShapeError(f"cast: mask must be a C-contiguous {storage} array of src's shape {tuple(src.shape)}")
    rows, cols = (1, int(src.shape[0])) if src.ndim == 1 else (int(src.shape[0]), int(src.shape[1]))
    pitch = math.ceil(cols / row_multiple) * row_multiple
    shape = (pitch,) if src.ndim == 1 else (rows, pitch)
    allocate = executor.xp.zeros if zero_padding and pitch != cols else executor.xp.empty
    dst = allocate(shape, dtype=storage_dtype(to, src))
    # One contiguous run: a single row (whose pitch is never used) walks it with every block.
    if pitch == cols and rows * cols <= INT32_MAX:
        launch_rows, launch_cols, src_ld, dst_ld = 1, rows * cols, 0, 0
    else:
        launch_rows, launch_cols, src_ld, dst_ld = rows, cols, cols, pitch
    runs = math.ceil(launch_cols / RUN)
    grid_y = min(launch_rows, MAX_GRID_Y)
    grid_x = max(1, min(math.ceil(runs / THREADS), math.ceil(4 * multiprocessor_count(executor) / grid_y)))
    args = (src, mask if mask is not None else src, dst, np.int32(launch_rows), np.int32(launch_cols),
            np.int64(src_ld), np.int64(dst_ld), np.int32(FLAG_MASK if mask is not None else 0))
    executor.launch(Launch(FAMILY, KERNELS[storage, to], (grid_x, grid_y, 1), (THREADS, 1, 1), args))
    return dst, cols


def to_float32(xp, array, precision: str | None = None):
    """A small array (a bias) as float32 on the host side of a launch: decoded from its storage, exactly."""
    storage = storage_of(array, precision)
    if storage == "f32":
        return xp.ascontiguousarray(array)
    if storage == "bf16":
        return (xp.ascontiguousarray(array).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return xp.ascontiguousarray(array).view(np.float16).astype(np.float32)
