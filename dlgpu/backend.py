"""The op table: the typed interface between the public ops and the two backends that run them.

:class:`Backend` names every op and its backend signature, stem by stem, once;
:data:`OPS` is derived from it, and ``dlgpu.functional``, ``dlgpu.reference``
and the tests read that.  Each stem's public ops (``dlgpu/ops/<stem>.py``)
validate a call and call the Backend that :func:`select` picks from its
arrays: ``dlgpu.cpu.BACKEND`` (NumPy/numba) for NumPy arrays,
``dlgpu.cuda.BACKEND`` (our kernels) for CuPy arrays.

Backend methods take positional arguments already normalized: C-contiguous
arrays of one supported floating dtype (float32, float16, bfloat16, and
float64 on the CPU), (h, w) pairs, a resolved precision; the convolutions'
4-D arrays may also be channels_last where the backend says it takes them
(:meth:`Backend.takes_channels_last`).  16-bit arrays are
computed in float32 and give outputs of their own dtype (dlgpu.precision).
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import numpy as np

from dlgpu import interop
from dlgpu.device import is_cupy
from dlgpu.errors import DeviceError, DtypeError


@runtime_checkable
class Backend(Protocol):
    """One way of running every op: its name, its dtypes, its index read-back, and the ops by stem."""

    name: str  # "dlgpu.cpu" or "dlgpu.cuda", as error messages name it
    float_dtypes: tuple[type, ...]

    def index_range(self, indices) -> tuple[int, int] | None:
        """(min, max) of an index array for the host's range check before the op; None where the
        backend does not read indices back (the CUDA backend outside debug mode, and while a CUDA
        graph is captured): its kernels check them then, and report a bad one later (dlgpu.device_errors)."""

    def memory_bytes(self) -> int | None:
        """The memory this backend allocates from (host RAM, the GPU's), in bytes; None when unknown.
        An op whose results alone would not fit is refused before it allocates anything."""

    def takes_channels_last(self, precision: str) -> bool:
        """Whether conv2d and conv2d_backward at ``precision`` (groups 1) take channels_last arrays
        (dlgpu.memory_format) as they are stored, and answer in their format; if not, dlgpu.ops.conv2d
        copies them to NCHW first."""

    # ---- gemm (dlgpu/ops/gemm.py): C-contiguous operands of one dtype, a resolved precision

    def matmul(self, a, b, transpose_a: bool, transpose_b: bool, precision: str, out):
        """op(a) @ op(b) into ``out`` (or a new array)."""

    def matmul_backward(self, grad_c, a, b, transpose_a: bool, transpose_b: bool, precision: str):
        """(grad_a, grad_b), each shaped like its operand."""

    def linear(self, x, weight, bias, activation: str | None, precision: str, out):
        """act(x @ weight.T + bias) into ``out`` (or a new array); bias may be None."""

    def linear_backward(self, grad_y, x, weight, y, activation: str | None, precision: str):
        """(grad_x, grad_w, grad_b); with activation "relu", y masks grad_y."""

    # ---- conv2d (dlgpu/ops/conv2d.py): (N, C, H, W) / (K, C, R, S) arrays, NCHW / OIHW in memory or, where
    # takes_channels_last(precision), channels_last; (h, w) pairs, a resolved precision

    def conv2d(self, x, weight, bias, stride, padding, dilation, activation: str | None, precision: str, out):
        """act(conv(x, weight) + bias) into ``out`` (or a new (N, K, P, Q) array); bias may be None.  A new y is
        channels_last when x or weight is, else C-contiguous."""

    def conv2d_backward(self, grad_y, x, weight, y, stride, padding, dilation, activation: str | None,
                        precision: str):
        """(grad_x, grad_w, grad_b); with activation "relu", y masks grad_y.  grad_x and grad_w take the memory
        format of x and weight."""

    # ---- elementwise (dlgpu/ops/elementwise.py): C-contiguous arrays of one shape; out may be an input

    def relu(self, x, out):
        """max(x, 0) into ``out`` (or a new array)."""

    def tanh(self, x, out):
        """tanh(x) into ``out`` (or a new array)."""

    def sigmoid(self, x, out):
        """1 / (1 + exp(-x)) into ``out`` (or a new array)."""

    def relu_backward(self, grad_y, y, out):
        """grad_y * (y > 0) into ``out`` (or a new array)."""

    def tanh_backward(self, grad_y, y, out):
        """grad_y * (1 - y**2) into ``out`` (or a new array)."""

    def sigmoid_backward(self, grad_y, y, out):
        """grad_y * y * (1 - y) into ``out`` (or a new array)."""

    # ---- pool (dlgpu/ops/pool.py): NCHW arrays, (h, w) pairs already checked to fit

    def max_pool2d(self, x, kernel, stride, padding):
        """(y, argmax), both (N, C, P, Q); argmax int32."""

    def max_pool2d_backward(self, grad_y, argmax, input_shape: tuple[int, int, int, int], kernel, stride, padding):
        """grad_x of ``input_shape``: grad_y added at argmax, overlapping windows summed; an argmax outside
        its own window (kernel, stride, padding, which gave grad_y's shape) adds nothing."""

    # ---- softmax (dlgpu/ops/softmax.py): (N, C) rows, int32/int64 labels in [0, C) (checked as index_range says)

    def softmax_cross_entropy(self, logits, labels):
        """(loss, probs): the mean loss as a 0-d array, and softmax(logits)."""

    def softmax_cross_entropy_backward(self, probs, labels):
        """grad_logits = (probs - onehot(labels)) / N."""

    # ---- mse (dlgpu/ops/mse.py): y and t C-contiguous of one shape (N, ...), N >= 1

    def mse_loss(self, y, t):
        """The mean over the N rows of 0.5 * sum((y - t)^2) over each row, as a 0-d array."""

    def mse_loss_backward(self, y, t):
        """dloss/dy = (y - t) / N."""

    # ---- sgd (dlgpu/ops/sgd.py): disjoint C-contiguous arrays of one shape; velocity may be None when
    # momentum is 0, and is then left alone; master None, or float32 master weights of a 16-bit param
    # (velocity then float32 too)

    def sgd_step(self, param, grad, velocity, lr: float, momentum: float, weight_decay: float, master,
                 grad_scale: float) -> None:
        """param (and velocity, with momentum) updated in place; with master, master is stepped and param
        set to it rounded.  grad is divided by grad_scale first."""


# What a backend answers about itself rather than computes.
QUERIES: tuple[str, ...] = ("index_range", "memory_bytes", "takes_channels_last")

# Every op a backend runs, in the order Backend declares them.
OPS: tuple[str, ...] = tuple(
    name for name, value in vars(Backend).items()
    if inspect.isfunction(value) and not name.startswith("_") and name not in QUERIES
)


# ndarray subclasses that are plain memory with ndarray's semantics; every other subclass
# (np.matrix's `*`, a masked array's mask, units, ...) means something the kernels would ignore.
_PLAIN_NDARRAYS = (np.ndarray, np.memmap)


def _refuse_subclass(op: str, name: str, array) -> None:
    kind = f"{type(array).__module__}.{type(array).__name__}"
    if isinstance(array, np.ma.MaskedArray):
        raise DtypeError(
            f"{op}: {name} is a masked array ({kind}); dlgpu would ignore its mask. "
            "Pass plain data: x.filled(value) or x.compressed()"
        )
    raise DtypeError(
        f"{op}: {name} is a {kind}, a subclass of numpy.ndarray whose behaviour dlgpu does not keep; "
        "pass a plain array: np.asarray(x)"
    )


def _array_kind(op: str, name: str, array) -> str:
    """'numpy' or 'cupy'; anything else is refused with a hint."""
    if isinstance(array, np.ndarray):
        if type(array) not in _PLAIN_NDARRAYS:
            _refuse_subclass(op, name, array)
        return "numpy"
    if is_cupy(array):
        return "cupy"
    if interop.is_foreign(array):  # public ops wrap these first (dlgpu.interop); internal callers must too
        raise DeviceError(
            f"{op}: {name} is a {type(array).__module__}.{type(array).__name__}; "
            "wrap it with dlgpu.interop.to_native (cupy.from_dlpack / np.from_dlpack, no copy)"
        )
    if isinstance(array, np.generic):
        raise DtypeError(f"{op}: {name} is a NumPy scalar ({type(array).__name__}); pass an array: np.asarray(x)")
    raise DtypeError(
        f"{op}: {name} must be a NumPy or CuPy array (or one with DLPack or "
        f"__cuda_array_interface__), got {type(array).__name__}; convert it with np.asarray(x)"
    )


def select(op: str, **arrays) -> Backend:
    """The backend the (non-None) arrays select: the CPU for NumPy, CUDA for CuPy; all must agree."""
    kinds = {name: _array_kind(op, name, a) for name, a in arrays.items() if a is not None}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{name} is {kind}" for name, kind in kinds.items())
        raise DeviceError(f"{op}: arrays must all be NumPy or all CuPy ({listing}); dlgpu never copies between them")
    if "cupy" in kinds.values():
        devices = {name: arrays[name].device.id for name in kinds}
        if len(set(devices.values())) > 1:
            listing = ", ".join(f"{name} on GPU {dev}" for name, dev in devices.items())
            raise DeviceError(f"{op}: arrays are on different GPUs ({listing})")
        from dlgpu.cuda import BACKEND
    else:
        from dlgpu.cpu import BACKEND
    return BACKEND
