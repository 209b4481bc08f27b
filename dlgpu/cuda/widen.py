"""16-bit storage for the products and convolutions, by conversion: widen, compute, narrow.

The tensor-core GEMM and convolution kernels (kernels/gemm_tc.cu,
kernels/conv2d_tc.cu) read float32 operands and round them to the precision's
16-bit format tile by tile.  Until they read 16-bit operands from memory, a
call on bfloat16 or float16 arrays runs here as three steps:

1. every 16-bit operand is converted to a float32 copy (kernels/elementwise.cu's
   ``convert``; exact: a 16-bit value is a float32 value);
2. the float32 launcher runs at the storage's own precision ("bf16", "fp16"),
   whose kernels round those copies back to the very same 16-bit values, so
   the products are of the stored operands, accumulated in float32;
3. each output is converted to the inputs' dtype (rounded once), or stays
   float32 where the caller's ``out`` is float32 (``out_dtype=np.float32``).

The cost is traffic, not accuracy: each operand is read once more and written
once more as float32 (6 bytes per 16-bit element) and the kernels then read
4-byte operands; each 16-bit output is written once as float32 and converted.
Where the operands are large this roughly doubles a bandwidth-bound product's
time; the tensor-core rewrite that loads 16-bit tiles directly removes all of it.
"""

from __future__ import annotations

import numpy as np

from dlgpu.cuda import conv2d as _conv2d
from dlgpu.cuda import gemm as _gemm
from dlgpu.cuda.elementwise import convert
from dlgpu.cuda.executor import resolve_executor
from dlgpu.precision import is_half

_FLOAT32 = np.dtype(np.float32)


def _storage(*arrays):
    """The 16-bit dtype of the call's first array, or None when it is float32 (no conversion)."""
    dtype = np.dtype(arrays[0].dtype)
    return dtype if is_half(dtype) else None


def _wide(array, executor):
    return None if array is None else convert(array, _FLOAT32, executor=executor)


def _narrow(result, dtype, executor, out=None):
    """``result`` (float32) as ``dtype``, into ``out`` when given."""
    return convert(result, dtype, out=out, executor=executor)


def _forward(call, dtype, out, executor, *operands):
    """Run ``call(*wide operands, wide_out)`` and hand back the output in ``out``'s dtype, else ``dtype``."""
    wide_out = out if out is not None and np.dtype(out.dtype) == _FLOAT32 else None
    result = call(*(_wide(a, executor) for a in operands), wide_out)
    return result if wide_out is not None else _narrow(result, dtype, executor, out)


def matmul(a, b, transpose_a, transpose_b, precision, out, *, variant=None, config=None, executor=None):
    """op(a) @ op(b); 16-bit a, b through float32 copies (see the module docstring)."""
    dtype = _storage(a)
    kw = dict(variant=variant, config=config, executor=executor)
    if dtype is None:
        return _gemm.matmul(a, b, transpose_a, transpose_b, precision, out, **kw)
    executor = kw["executor"] = resolve_executor(executor)
    return _forward(lambda a32, b32, o: _gemm.matmul(a32, b32, transpose_a, transpose_b, precision, o, **kw),
                    dtype, out, executor, a, b)


def linear(x, weight, bias, activation, precision, out, *, variant=None, config=None, executor=None):
    """act(x @ weight.T + bias); 16-bit operands through float32 copies."""
    dtype = _storage(x)
    kw = dict(variant=variant, config=config, executor=executor)
    if dtype is None:
        return _gemm.linear(x, weight, bias, activation, precision, out, **kw)
    executor = kw["executor"] = resolve_executor(executor)
    return _forward(lambda x32, w32, b32, o: _gemm.linear(x32, w32, b32, activation, precision, o, **kw),
                    dtype, out, executor, x, weight, bias)


def _backward(call, dtype, executor, *operands):
    """``call(*wide operands)``'s gradients, each converted to ``dtype``."""
    grads = call(*(_wide(a, executor) for a in operands))
    return tuple(_narrow(g, dtype, executor) for g in grads)


def matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision, *, variant=None, config=None, executor=None):
    """(grad_a, grad_b) in the operands' dtype."""
    dtype = _storage(a)
    kw = dict(variant=variant, config=config, executor=executor)
    if dtype is None:
        return _gemm.matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision, **kw)
    executor = kw["executor"] = resolve_executor(executor)
    return _backward(lambda g, a32, b32: _gemm.matmul_backward(g, a32, b32, transpose_a, transpose_b, precision, **kw),
                     dtype, executor, grad_c, a, b)


def linear_backward(grad_y, x, weight, y, activation, precision, *, variant=None, config=None, executor=None):
    """(grad_x, grad_w, grad_b) in the operands' dtype."""
    dtype = _storage(x)
    kw = dict(variant=variant, config=config, executor=executor)
    if dtype is None:
        return _gemm.linear_backward(grad_y, x, weight, y, activation, precision, **kw)
    executor = kw["executor"] = resolve_executor(executor)
    return _backward(lambda g, x32, w32, y32: _gemm.linear_backward(g, x32, w32, y32, activation, precision, **kw),
                     dtype, executor, grad_y, x, weight, y)


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out, *, variant=None, config=None,
           executor=None):
    """act(conv(x, weight) + bias); 16-bit operands through float32 copies."""
    dtype = _storage(x)
    kw = dict(variant=variant, config=config, executor=executor)
    if dtype is None:
        return _conv2d.conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out, **kw)
    executor = kw["executor"] = resolve_executor(executor)
    return _forward(lambda x32, w32, b32, o: _conv2d.conv2d(x32, w32, b32, stride, padding, dilation, activation,
                                                            precision, o, **kw),
                    dtype, out, executor, x, weight, bias)


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision, *, variant=None,
                    executor=None):
    """(grad_x, grad_w, grad_b) in the operands' dtype."""
    dtype = _storage(x)
    kw = dict(variant=variant, executor=executor)
    if dtype is None:
        return _conv2d.conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision, **kw)
    executor = kw["executor"] = resolve_executor(executor)
    return _backward(lambda g, x32, w32, y32: _conv2d.conv2d_backward(g, x32, w32, y32, stride, padding, dilation,
                                                                      activation, precision, **kw),
                     dtype, executor, grad_y, x, weight, y)


class GemmOps:
    """The CUDA backend's products on float32 and 16-bit storage (see dlgpu.backend.Backend)."""

    matmul = staticmethod(matmul)
    matmul_backward = staticmethod(matmul_backward)
    linear = staticmethod(linear)
    linear_backward = staticmethod(linear_backward)


class Conv2dOps:
    """The CUDA backend's convolutions on float32 and 16-bit storage (see dlgpu.backend.Backend)."""

    conv2d = staticmethod(conv2d)
    conv2d_backward = staticmethod(conv2d_backward)
