"""The public activations and their backward passes: relu, tanh, sigmoid.

Each op validates its whole call, then calls the backend its arrays select
(kernels/elementwise.cu through
dlgpu.cuda.elementwise, or numba through dlgpu.cpu.elementwise).  Backward
passes take the forward OUTPUT ``y``.
"""

from __future__ import annotations

from dlgpu.errors import ShapeError
from dlgpu.backend import select
from dlgpu.ops.validate import check_float, check_out, contiguous, public, zeros_result

_LAYOUT = "Layout: a strided input is copied once (the result is computed in that copy); ``out`` must be C-contiguous."

__all__ = ["relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward"]


def _forward(op: str, x, out):
    backend = select(op, x=x)
    dtype = check_float(op, backend, x=x)
    if x.size == 0:  # nothing to compute (PyTorch allows empty tensors): an empty result, no launch
        check_out(op, out, backend=backend, shape=x.shape, dtype=dtype, inputs={"x": x}, in_place_ok=("x",))
        return backend, x, (out if out is not None else zeros_result(x, x.shape, dtype))
    (copy,) = contiguous(op, x=x)
    if copy is not x and out is None:
        out = copy  # the copy is ours: compute in place in it
    x = copy
    check_out(op, out, backend=backend, shape=x.shape, dtype=dtype, inputs={"x": x}, in_place_ok=("x",))
    return backend, x, out


def _backward(op: str, grad_y, y, out):
    backend = select(op, grad_y=grad_y, y=y)
    dtype = check_float(op, backend, grad_y=grad_y, y=y)
    if tuple(grad_y.shape) != tuple(y.shape):
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)} but y has {tuple(y.shape)}")
    if y.size == 0:
        check_out(op, out, backend=backend, shape=y.shape, dtype=dtype, inputs={"grad_y": grad_y, "y": y},
                  in_place_ok=("grad_y", "y"))
        return backend, grad_y, y, (out if out is not None else zeros_result(y, y.shape, dtype))
    copy, y = contiguous(op, grad_y=grad_y, y=y)
    if copy is not grad_y and out is None:
        out = copy  # the copy is ours: compute in place in it
    grad_y = copy
    check_out(op, out, backend=backend, shape=y.shape, dtype=dtype, inputs={"grad_y": grad_y, "y": y},
              in_place_ok=("grad_y", "y"))
    return backend, grad_y, y, out


def _activation(name: str, method, formula: str):
    """The public forward op ``name``: ``formula``, elementwise, computed by ``method(backend)``."""

    def op(x, *, out=None):
        backend, x, out = _forward(name, x, out)
        return out if x.size == 0 else method(backend)(x, out)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{formula}, elementwise; ``out=x`` works in place.\n\n{_LAYOUT}"
    return public(op)


def _activation_backward(name: str, method, formula: str):
    """The public backward op ``name``: ``formula`` from the forward output y, computed by ``method(backend)``."""

    def op(grad_y, y, *, out=None):
        backend, grad_y, y, out = _backward(name, grad_y, y, out)
        return out if y.size == 0 else method(backend)(grad_y, y, out)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{formula}, from the forward output y; ``out`` may be grad_y or y (in place).\n\n{_LAYOUT}"
    return public(op)


relu = _activation("relu", lambda backend: backend.relu, "max(x, 0)")
tanh = _activation("tanh", lambda backend: backend.tanh, "tanh(x)")
sigmoid = _activation("sigmoid", lambda backend: backend.sigmoid, "1 / (1 + exp(-x))")
relu_backward = _activation_backward("relu_backward", lambda backend: backend.relu_backward, "grad_y * (y > 0)")
tanh_backward = _activation_backward("tanh_backward", lambda backend: backend.tanh_backward, "grad_y * (1 - y**2)")
sigmoid_backward = _activation_backward("sigmoid_backward", lambda backend: backend.sigmoid_backward,
                                        "grad_y * y * (1 - y)")
