"""``torch.nn`` drop-ins that run on dlgpu.

Each class subclasses its ``torch.nn`` namesake and replaces only
``forward``: the constructor arguments, parameter names and shapes, default
initialization, ``state_dict`` and ``repr`` are PyTorch's own, so weights move
between the two with ``load_state_dict`` and :func:`dlgpu.torch.convert` can
swap a layer in place.  Constructor arguments dlgpu cannot honour (
``padding_mode``, ``dilation`` or ``ceil_mode`` in pooling, class weights,
``inplace=True``, ...) raise an ArgumentError at construction.  Linear and
Conv2d take one addition, keyword-only: ``activation="relu"`` fuses the ReLU
into the layer (one op forward, one backward).
"""

from __future__ import annotations

import torch

from dlgpu.ops import validate
from dlgpu.torch import functional as DF

__all__ = ["Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "MaxPool2d", "CrossEntropyLoss", "MSELoss"]


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` on dlgpu; ``activation="relu"`` fuses a ReLU."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, activation=None):
        validate.check_activation("Linear", activation)
        super().__init__(in_features, out_features, bias, device, dtype)
        self.activation = activation

    def forward(self, input):
        return DF.linear(input, self.weight, self.bias, activation=self.activation)

    def extra_repr(self):
        return f"{super().extra_repr()}, activation={self.activation!r}"


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on dlgpu (zero padding; grouped and depthwise too); ``activation="relu"`` fuses a ReLU."""

    def __init__(
        self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
        padding_mode="zeros", device=None, dtype=None, *, activation=None,
    ):
        DF.refuse("Conv2d", "padding_mode", padding_mode, "zeros", "the padding is zeros")
        validate.check_activation("Conv2d", activation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device, dtype,
        )
        DF.conv_padding("Conv2d", self.padding, self.kernel_size, self.dilation, self.stride)  # "same" must be even
        self.activation = activation

    def forward(self, input):
        return DF.conv2d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
            activation=self.activation,
        )

    def extra_repr(self):
        return f"{super().extra_repr()}, activation={self.activation!r}"


class ReLU(torch.nn.ReLU):
    """``torch.nn.ReLU`` on dlgpu (out of place)."""

    def __init__(self, inplace=False):
        DF.refuse("ReLU", "inplace", inplace, False, "the result is a new tensor")
        super().__init__(inplace)

    def forward(self, input):
        return DF.relu(input)


class Tanh(torch.nn.Tanh):
    def forward(self, input):
        return DF.tanh(input)


class Sigmoid(torch.nn.Sigmoid):
    def forward(self, input):
        return DF.sigmoid(input)


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on dlgpu (no dilation, ceil_mode or returned indices; padding <= kernel/2)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        DF.refuse("MaxPool2d", "dilation", dilation, 1, "dilated windows are not implemented",
                  ok=DF.pair("MaxPool2d", "dilation", dilation, 1) == [1, 1])
        DF.refuse("MaxPool2d", "return_indices", return_indices, False, "dlgpu's argmax is int32 h*W+w")
        DF.refuse("MaxPool2d", "ceil_mode", ceil_mode, False, "the output size is always rounded down")

    def forward(self, input):
        return DF.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` on dlgpu: (N, C) logits, integer targets, mean reduction."""

    def __init__(
        self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean", label_smoothing=0.0
    ):
        DF.check_cross_entropy_options(weight, size_average, ignore_index, reduce, reduction, label_smoothing)
        super().__init__(weight, size_average, ignore_index, reduce, reduction, label_smoothing)

    def forward(self, input, target):
        return DF.cross_entropy(
            input, target, self.weight, None, self.ignore_index, None, self.reduction, self.label_smoothing
        )


class MSELoss(torch.nn.MSELoss):
    """``torch.nn.MSELoss`` on dlgpu's squared error: reduction "mean" or "sum", PyTorch's values."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        DF.refuse("MSELoss", "reduction", reduction, "mean", "'mean' and 'sum' are", ok=reduction in ("mean", "sum"))
        DF.refuse("MSELoss", "size_average", size_average, None, "deprecated in PyTorch; use reduction")
        DF.refuse("MSELoss", "reduce", reduce, None, "deprecated in PyTorch; use reduction")
        super().__init__(size_average, reduce, reduction)

    def forward(self, input, target):
        return DF.mse_loss(input, target, reduction=self.reduction)
