"""The layers: Linear, Conv2d, activations, max pooling and Flatten.

Each forward pass calls one public op of dlgpu.functional, so a layer runs
on whichever backend its arrays select, and keeps exactly what that op's
backward needs: the input for products (the weight gradient needs it), the
output for activations (their derivatives are written in terms of it), the
argmax for pooling.  Linear and Conv2d with ``activation="relu"`` use the
fused op and keep its output for the ReLU mask.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

import dlgpu.functional as F
from dlgpu.errors import ArgumentError, DtypeError
from dlgpu.nn.module import Module, Parameter
from dlgpu.ops.conv2d import check_groups, groups_argument, resolve_padding
from dlgpu.precision import is_floating

ACTIVATIONS = (None, "relu")


# ---------------------------------------------------------------------------
# constructor checks and initialization
# ---------------------------------------------------------------------------


def _positive_int(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArgumentError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


def _pair(op: str, name: str, value, *, minimum: int) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in pair
    ):
        raise ArgumentError(f"{op}: {name} must be an int >= {minimum} or a pair (h, w) of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _float_dtype(op: str, dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise DtypeError(f"{op}: dtype {dtype!r} is not a NumPy dtype") from exc
    if not is_floating(dtype):
        raise DtypeError(f"{op}: dtype must be floating (float32, float64, bfloat16 or float16), got {dtype.name}")
    return dtype


def _check_activation(op: str, activation) -> None:
    if activation not in ACTIVATIONS:
        raise ArgumentError(
            f"{op}: activation must be None or 'relu' (the fused one), got {activation!r}; "
            "for tanh or sigmoid put a Tanh or Sigmoid layer after it"
        )


def _generator(op: str, rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise ArgumentError(f"{op}: rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def init_weight(shape, fan_in: int, fan_out: int, activation, rng: np.random.Generator, dtype) -> np.ndarray:
    """He normal (std sqrt(2/fan_in)) before a ReLU, Glorot uniform (limit sqrt(6/(fan_in+fan_out))) otherwise.

    He keeps the activations' variance from halving at each ReLU; Glorot
    balances forward and backward variance for tanh/sigmoid/linear outputs.
    """
    if activation == "relu":
        weight = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    else:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weight = rng.uniform(-limit, limit, size=shape)
    return weight.astype(dtype)


# ---------------------------------------------------------------------------
# layers with parameters
# ---------------------------------------------------------------------------


class Linear(Module):
    """y = act(x @ weight.T + bias): x (B, in_features) -> y (B, out_features).

    weight is (out_features, in_features) as in PyTorch; bias starts at zero.
    """

    def __init__(self, in_features, out_features, activation=None, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        op = "Linear"
        self.in_features = _positive_int(op, "in_features", in_features)
        self.out_features = _positive_int(op, "out_features", out_features)
        _check_activation(op, activation)
        self.activation = activation
        dtype = _float_dtype(op, dtype)
        rng = _generator(op, rng)
        shape = (self.out_features, self.in_features)
        self.weight = Parameter(init_weight(shape, self.in_features, self.out_features, activation, rng, dtype))
        self.bias = Parameter(np.zeros(self.out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = F.linear(x, self.weight.data, bias, activation=self.activation)
        self._save(x=x, y=y if self.activation == "relu" else None)
        return y

    def backward(self, grad_y):
        saved = self._saved()
        grad_x, grad_w, grad_b = F.linear_backward(
            grad_y, saved["x"], self.weight.data, y=saved["y"], activation=self.activation
        )
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation!r}, bias={self.bias is not None}, dtype={self.weight.dtype.name}"
        )


class Conv2d(Module):
    """y = act(conv(x, weight) + bias): x (N, in_channels, H, W) -> y (N, out_channels, P, Q).

    weight is OIHW, (out_channels, in_channels / groups, kh, kw); cross-correlation as in
    PyTorch; padding may be "same" or "valid"; bias starts at zero.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        activation=None,
        bias=True,
        rng=None,
        dtype=np.float32,
        groups=1,
    ):
        super().__init__()
        op = "Conv2d"
        self.in_channels = _positive_int(op, "in_channels", in_channels)
        self.out_channels = _positive_int(op, "out_channels", out_channels)
        self.kernel_size = _pair(op, "kernel_size", kernel_size, minimum=1)
        self.stride = _pair(op, "stride", stride, minimum=1)
        self.dilation = _pair(op, "dilation", dilation, minimum=1)
        self.padding = resolve_padding(op, padding, self.kernel_size, self.stride, self.dilation)
        kh, kw = self.kernel_size
        self.groups = groups_argument(op, groups)
        check_groups(op, self.groups, self.in_channels, (self.out_channels, self.in_channels // self.groups))
        _check_activation(op, activation)
        self.activation = activation
        dtype = _float_dtype(op, dtype)
        rng = _generator(op, rng)
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        fan_in, fan_out = shape[1] * kh * kw, shape[0] // self.groups * kh * kw
        self.weight = Parameter(init_weight(shape, fan_in, fan_out, activation, rng, dtype))
        self.bias = Parameter(np.zeros(self.out_channels, dtype=dtype)) if bias else None

    def _geometry(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = F.conv2d(x, self.weight.data, bias, activation=self.activation, **self._geometry())
        self._save(x=x, y=y if self.activation == "relu" else None)
        return y

    def backward(self, grad_y):
        saved = self._saved()
        grad_x, grad_w, grad_b = F.conv2d_backward(
            grad_y, saved["x"], self.weight.data, y=saved["y"], activation=self.activation, **self._geometry()
        )
        self.weight.grad += grad_w
        if self.bias is not None:
            self.bias.grad += grad_b
        return grad_x

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, activation={self.activation!r}, "
            f"bias={self.bias is not None}, dtype={self.weight.dtype.name}"
        )


# ---------------------------------------------------------------------------
# activations: each keeps its output, from which its derivative is computed
# ---------------------------------------------------------------------------


class _Activation(Module):
    """An elementwise activation whose derivative comes from its output: keeps y for backward."""

    _op = ""  # the dlgpu.functional op; its backward is f"{_op}_backward"

    def forward(self, x):
        y = getattr(F, self._op)(x)
        self._save(y=y)
        return y

    def backward(self, grad_y):
        return getattr(F, f"{self._op}_backward")(grad_y, self._saved()["y"])


class ReLU(_Activation):
    """max(x, 0), elementwise."""

    _op = "relu"


class Tanh(_Activation):
    """tanh(x), elementwise."""

    _op = "tanh"


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), elementwise."""

    _op = "sigmoid"


# ---------------------------------------------------------------------------
# shape changers
# ---------------------------------------------------------------------------


class MaxPool2d(Module):
    """Max over kernel_size windows of NCHW input; stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        op = "MaxPool2d"
        self.kernel_size = _pair(op, "kernel_size", kernel_size, minimum=1)
        self.stride = self.kernel_size if stride is None else _pair(op, "stride", stride, minimum=1)
        self.padding = _pair(op, "padding", padding, minimum=0)

    def forward(self, x):
        y, argmax = F.max_pool2d(x, self.kernel_size, stride=self.stride, padding=self.padding)
        self._save(argmax=argmax, input_shape=tuple(x.shape))
        return y

    def backward(self, grad_y):
        saved = self._saved()
        return F.max_pool2d_backward(grad_y, saved["argmax"], saved["input_shape"], self.kernel_size, self.stride,
                                     self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...); backward restores the shape."""

    def forward(self, x):
        if x.ndim < 1:
            raise ArgumentError(f"Flatten: input must have a batch dimension, got shape {tuple(x.shape)}")
        self._save(input_shape=tuple(x.shape))
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_y):
        return grad_y.reshape(self._saved()["input_shape"])
