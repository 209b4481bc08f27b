"""PyTorch on dlgpu kernels: ``torch.autograd.Function`` wrappers and ``torch.nn.Module`` drop-ins.

CPU tensors run on the CPU backend (shared with NumPy through DLPack, no
copy), CUDA tensors on the CUDA backend (shared with CuPy through DLPack, on
``torch.cuda.current_stream()``); results come back as torch tensors.  Each
Function saves what its backward needs and calls the matching
``dlgpu.functional`` backward op, so ``loss.backward()`` runs on dlgpu too.

>>> import torch, dlgpu.torch as dt
>>> layer = dt.Linear(4, 3, activation="relu")
>>> layer(torch.randn(2, 4)).shape
torch.Size([2, 3])

The modules keep PyTorch's parameter names and shapes (``weight``, ``bias``)
and initialization, so ``load_state_dict`` moves weights between
``torch.nn.Linear``/``Conv2d`` and these.  What dlgpu does not do is refused
with a DlgpuError rather than emulated: float64 on the GPU, groups, padding
modes, class weights or label smoothing.

Importing this module imports torch; ``import dlgpu`` never does.
"""

from __future__ import annotations

import math

import torch

import dlgpu.functional as F

__all__ = [
    "linear",
    "conv2d",
    "relu",
    "tanh",
    "sigmoid",
    "max_pool2d",
    "softmax_cross_entropy",
    "Linear",
    "Conv2d",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "MaxPool2d",
    "CrossEntropyLoss",
]


def _plain(tensor):
    """The tensor without autograd history (DLPack refuses tensors that require grad); None stays None."""
    return None if tensor is None else tensor.detach()


# ---------------------------------------------------------------------------
# autograd Functions
# ---------------------------------------------------------------------------


class LinearFunction(torch.autograd.Function):
    """y = act(x @ weight.T + bias) forward and backward on dlgpu."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        y = F.linear(_plain(x), _plain(weight), _plain(bias), activation=activation)
        ctx.save_for_backward(x, weight, y)
        ctx.activation, ctx.has_bias = activation, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        relu = ctx.activation == "relu"
        grad_x, grad_w, grad_b = F.linear_backward(
            _plain(grad_y), _plain(x), _plain(weight), y=_plain(y) if relu else None, activation=ctx.activation
        )
        return grad_x, grad_w, grad_b if ctx.has_bias else None, None


class Conv2dFunction(torch.autograd.Function):
    """y = act(conv2d(x, weight) + bias) forward and backward on dlgpu (NCHW, OIHW)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, activation):
        y = F.conv2d(
            _plain(x), _plain(weight), _plain(bias),
            stride=stride, padding=padding, dilation=dilation, activation=activation,
        )
        ctx.save_for_backward(x, weight, y)
        ctx.hyper = dict(stride=stride, padding=padding, dilation=dilation, activation=activation)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        relu = ctx.hyper["activation"] == "relu"
        grad_x, grad_w, grad_b = F.conv2d_backward(
            _plain(grad_y), _plain(x), _plain(weight), y=_plain(y) if relu else None, **ctx.hyper
        )
        return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None, None, None


def _activation_function(name: str) -> type:
    forward_op, backward_op = getattr(F, name), getattr(F, f"{name}_backward")

    def forward(ctx, x):
        y = forward_op(_plain(x))
        ctx.save_for_backward(y)  # the backward passes work from the OUTPUT
        return y

    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return backward_op(_plain(grad_y), _plain(y))

    doc = f"{name} forward and backward on dlgpu (backward from the saved output)."
    return type(
        f"{name.capitalize()}Function",
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": doc, "__module__": __name__},
    )


ReLUFunction = _activation_function("relu")
TanhFunction = _activation_function("tanh")
SigmoidFunction = _activation_function("sigmoid")


class MaxPool2dFunction(torch.autograd.Function):
    """Max pooling forward (keeping dlgpu's int32 argmax) and its scatter-add backward."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        y, argmax = F.max_pool2d(_plain(x), kernel_size, stride=stride, padding=padding)
        ctx.save_for_backward(argmax)
        ctx.input_shape = tuple(x.shape)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (argmax,) = ctx.saved_tensors
        return F.max_pool2d_backward(_plain(grad_y), argmax, ctx.input_shape), None, None, None


class SoftmaxCrossEntropyFunction(torch.autograd.Function):
    """Mean cross-entropy of softmax(logits) against integer labels; differentiable in the logits."""

    @staticmethod
    def forward(ctx, logits, labels):
        loss, probs = F.softmax_cross_entropy(_plain(logits), _plain(labels))
        ctx.save_for_backward(probs, labels)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        probs, labels = ctx.saved_tensors
        grad = F.softmax_cross_entropy_backward(probs, _plain(labels))
        return grad * grad_loss, None


# ---------------------------------------------------------------------------
# functional forms
# ---------------------------------------------------------------------------


def linear(x, weight, bias=None, activation=None):
    """act(x @ weight.T + bias) with autograd; x (B, in), weight (out, in)."""
    return LinearFunction.apply(x, weight, bias, activation)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, activation=None):
    """act(conv2d(x, weight) + bias) with autograd; cross-correlation like torch.nn.functional.conv2d."""
    return Conv2dFunction.apply(x, weight, bias, stride, padding, dilation, activation)


def relu(x):
    return ReLUFunction.apply(x)


def tanh(x):
    return TanhFunction.apply(x)


def sigmoid(x):
    return SigmoidFunction.apply(x)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling with autograd (stride defaults to kernel_size, padding at most half the kernel)."""
    return MaxPool2dFunction.apply(x, kernel_size, stride, padding)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy, like torch.nn.functional.cross_entropy(logits, labels) for (N, C) logits."""
    return SoftmaxCrossEntropyFunction.apply(logits, labels)


# ---------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------


def _init_like_torch(weight, bias, fan_in: int) -> None:
    """PyTorch's default for Linear and Conv2d: Kaiming-uniform weights (a=sqrt(5)), bias U(+-1/sqrt(fan_in))."""
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        torch.nn.init.uniform_(bias, -bound, bound)


class Linear(torch.nn.Module):
    """Drop-in for ``torch.nn.Linear`` on dlgpu, with an optional fused ReLU (``activation="relu"``)."""

    def __init__(self, in_features, out_features, bias=True, activation=None, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = torch.nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        with torch.no_grad():
            _init_like_torch(self.weight, self.bias, in_features)

    def forward(self, x):
        return linear(x, self.weight, self.bias, self.activation)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, activation={self.activation!r}"
        )


class Conv2d(torch.nn.Module):
    """Drop-in for ``torch.nn.Conv2d`` (no groups, zero padding) on dlgpu, with an optional fused ReLU."""

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
        activation=None, device=None, dtype=None,
    ):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        kernel = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel
        self.stride, self.padding, self.dilation, self.activation = stride, padding, dilation, activation
        self.weight = torch.nn.Parameter(torch.empty(out_channels, in_channels, *kernel, **factory))
        self.bias = torch.nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        with torch.no_grad():
            _init_like_torch(self.weight, self.bias, in_channels * kernel[0] * kernel[1])

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.activation)

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
            f"activation={self.activation!r}"
        )


class ReLU(torch.nn.Module):
    """Drop-in for ``torch.nn.ReLU`` (not in place)."""

    def forward(self, x):
        return relu(x)


class Tanh(torch.nn.Module):
    def forward(self, x):
        return tanh(x)


class Sigmoid(torch.nn.Module):
    def forward(self, x):
        return sigmoid(x)


class MaxPool2d(torch.nn.Module):
    """Drop-in for ``torch.nn.MaxPool2d`` (no dilation, ceil_mode or returned indices)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class CrossEntropyLoss(torch.nn.Module):
    """Drop-in for ``torch.nn.CrossEntropyLoss()`` on (N, C) logits and integer labels, mean reduction."""

    def forward(self, logits, labels):
        return softmax_cross_entropy(logits, labels)
