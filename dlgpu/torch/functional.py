"""The ``torch.nn.functional`` forms: PyTorch's signatures over ``torch.ops.dlgpu``.

Each function takes the arguments its ``torch.nn.functional`` namesake takes,
in the same order, and runs the dlgpu op (differentiable, traceable by
``torch.compile``).  Keywords whose value dlgpu cannot honour (``padding_mode``,
``ceil_mode=True``, class ``weight``, ``label_smoothing``, ``inplace=True``,
...) raise an ArgumentError naming the keyword, never a TypeError and never a
silently different result; their default values are accepted.  dlgpu's own
additions are keyword-only: ``activation="relu"`` (fused into linear and
conv2d) and ``precision`` (see :mod:`dlgpu.precision`).
"""

from __future__ import annotations

import torch

from dlgpu.ops import conv2d as conv2d_checks
from dlgpu.ops import validate
from dlgpu.errors import ArgumentError
from dlgpu.torch import ops  # noqa: F401  (registers torch.ops.dlgpu)

__all__ = [
    "matmul",
    "linear",
    "conv2d",
    "relu",
    "tanh",
    "sigmoid",
    "max_pool2d",
    "cross_entropy",
    "softmax_cross_entropy",
    "mse_loss",
]

_ops = torch.ops.dlgpu


def refuse(op: str, keyword: str, value, supported, hint: str, *, ok: bool | None = None) -> None:
    """ArgumentError unless ``value == supported`` (or ``ok``, where equality is not the test).

    The one place the unsupported-keyword message is made: the op, the keyword,
    the value given, why, and the value dlgpu takes.
    """
    if not (value == supported if ok is None else ok):
        raise ArgumentError(f"{op}: {keyword}={value!r} is not supported by dlgpu ({hint}); only {supported!r} is")


def pair(op: str, name: str, value, minimum: int) -> list:
    """An int or a pair as the two-element list the ops' schemas take, checked as dlgpu.functional checks it."""
    return list(validate.pair(op, name, value, minimum=minimum))


def conv_padding(op: str, padding, kernel_size, dilation, stride) -> list:
    """Explicit (h, w) padding for an int, a pair, "valid" or "same": dlgpu.functional's rule
    (:func:`dlgpu.ops.conv2d.resolve_padding`), as the list the ops' schemas take."""
    return list(conv2d_checks.resolve_padding(op, padding, tuple(kernel_size), stride, dilation))


def matmul(a, b, *, transpose_a=False, transpose_b=False, precision=None):
    """op(a) @ op(b) for 2-D tensors, op(x) = x.T where the flag says so (no transpose is materialized)."""
    return _ops.matmul(a, b, transpose_a, transpose_b, precision)


def linear(input, weight, bias=None, *, activation=None, precision=None):
    """act(input @ weight.T + bias) for input (*, in_features), like ``torch.nn.functional.linear``.

    Leading dimensions are flattened into one batch dimension (a view for a
    contiguous input) and restored on the result.
    """
    if input.dim() == 2 or input.dim() == 0:  # 0-D reaches the op, which refuses it with its ShapeError
        return _ops.linear(input, weight, bias, activation, precision)
    y = _ops.linear(input.reshape(-1, input.shape[-1]), weight, bias, activation, precision)
    return y.reshape(*input.shape[:-1], y.shape[-1])


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, precision=None):
    """act(conv2d(input, weight) + bias), cross-correlation like ``torch.nn.functional.conv2d`` (NCHW, OIHW),
    grouped and depthwise included."""
    padding = conv_padding("conv2d", padding, weight.shape[2:], dilation, stride)
    groups = conv2d_checks.groups_argument("conv2d", groups)  # the schema's int; the op checks the channels
    return _ops.conv2d(
        input, weight, bias, pair("conv2d", "stride", stride, 1), padding, pair("conv2d", "dilation", dilation, 1),
        groups, activation, precision,
    )


def relu(input, inplace=False):
    refuse("relu", "inplace", inplace, False, "the result is a new tensor")
    return _ops.relu(input)


def tanh(input):
    return _ops.tanh(input)


def sigmoid(input):
    return _ops.sigmoid(input)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max pooling like ``torch.nn.functional.max_pool2d`` (stride defaults to kernel_size; padding <= kernel/2)."""
    refuse("max_pool2d", "dilation", dilation, 1, "dilated windows are not implemented",
           ok=pair("max_pool2d", "dilation", dilation, 1) == [1, 1])
    refuse("max_pool2d", "ceil_mode", ceil_mode, False, "the output size is always rounded down")
    refuse("max_pool2d", "return_indices", return_indices, False, "dlgpu's argmax is int32 h*W+w, not torch's")
    kernel = pair("max_pool2d", "kernel_size", kernel_size, 1)
    # PyTorch's default stride is None or an empty list: the kernel size.
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else stride
    padding = pair("max_pool2d", "padding", padding, 0)
    y, _argmax = _ops.max_pool2d(input, kernel, pair("max_pool2d", "stride", stride, 1), padding)
    return y


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels: logits (N, C), labels (N,)."""
    loss, _probs = _ops.softmax_cross_entropy(logits, labels)
    return loss


def cross_entropy(
    input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
    label_smoothing=0.0,
):
    """``torch.nn.functional.cross_entropy`` for (N, C) logits and integer class targets, mean reduction.

    ``ignore_index`` keeps PyTorch's default, which only matters for a target
    equal to it: dlgpu refuses such a label (outside [0, C)) instead of
    skipping it.
    """
    check_cross_entropy_options(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
    return softmax_cross_entropy(input, target)


def check_cross_entropy_options(weight, size_average, ignore_index, reduce, reduction, label_smoothing) -> None:
    op = "cross_entropy"
    if weight is not None:
        raise ArgumentError(f"{op}: weight (class weights) is not supported by dlgpu; only None is")
    refuse(op, "size_average", size_average, None, "deprecated in PyTorch; use reduction")
    refuse(op, "reduce", reduce, None, "deprecated in PyTorch; use reduction")
    refuse(op, "ignore_index", ignore_index, -100, "labels are never skipped; -100 is PyTorch's default")
    refuse(op, "reduction", reduction, "mean", "the loss is the batch mean")
    refuse(op, "label_smoothing", float(label_smoothing), 0.0, "targets are one-hot")


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """``torch.nn.functional.mse_loss`` (the mean, or the sum, of (input - target)^2 over every element)
    computed by dlgpu's squared error, 0.5 * sum((y - t)^2) / N, and rescaled to PyTorch's definition."""
    op = "mse_loss"
    if weight is not None:
        raise ArgumentError(f"{op}: weight (per-element weights) is not supported by dlgpu; only None is")
    refuse(op, "size_average", size_average, None, "deprecated in PyTorch; use reduction")
    refuse(op, "reduce", reduce, None, "deprecated in PyTorch; use reduction")
    refuse(op, "reduction", reduction, "mean", "'mean' and 'sum' are", ok=reduction in ("mean", "sum"))
    if input.dim() == 0 and target.dim() == 0:  # one example of one output: dlgpu's op wants a batch dimension
        input, target = input.reshape(1), target.reshape(1)
    half_mean = _ops.mse_loss(input, target)  # sum / (2 * rows)
    scale = 2.0 * input.shape[0] / (input.numel() if reduction == "mean" else 1)
    return half_mean * scale
