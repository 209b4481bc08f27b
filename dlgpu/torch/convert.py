"""``convert(model)``: a PyTorch model with its supported layers running on dlgpu."""

from __future__ import annotations

import copy

import torch

from dlgpu.errors import ArgumentError
from dlgpu.torch import modules as M

__all__ = ["convert"]


def _linear(layer):
    return M.Linear(layer.in_features, layer.out_features, layer.bias is not None, device="meta")


def _conv2d(layer):
    return M.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
        layer.groups, layer.bias is not None, layer.padding_mode, device="meta",
    )


def _max_pool2d(layer):
    return M.MaxPool2d(
        layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.return_indices, layer.ceil_mode
    )


def _cross_entropy(layer):
    return M.CrossEntropyLoss(
        layer.weight, None, layer.ignore_index, None, layer.reduction, layer.label_smoothing
    )


# Exact types: a subclass may change forward (MultiheadAttention's out_proj is a Linear subclass read by
# its owner, never called), so only the classes themselves are swapped.  An in-place ReLU becomes an
# out-of-place one: the same values and gradients, one more buffer.
_CONVERTERS = {
    torch.nn.Linear: _linear,
    torch.nn.Conv2d: _conv2d,
    torch.nn.ReLU: lambda layer: M.ReLU(),
    torch.nn.Tanh: lambda layer: M.Tanh(),
    torch.nn.Sigmoid: lambda layer: M.Sigmoid(),
    torch.nn.MaxPool2d: _max_pool2d,
    torch.nn.CrossEntropyLoss: _cross_entropy,
    torch.nn.MSELoss: lambda layer: M.MSELoss(reduction=layer.reduction),
}


def _swapped(layer):
    """The dlgpu layer for ``layer`` holding ``layer``'s own parameters, or None where there is none."""
    converter = _CONVERTERS.get(type(layer))
    if converter is None:
        return None
    try:
        new = converter(layer)
    except ArgumentError:  # a configuration dlgpu lacks (padding_mode, ceil_mode, class weights, ...)
        return None
    for name, parameter in layer.named_parameters(recurse=False):
        setattr(new, name, parameter)  # the same Parameter objects: an optimizer built before still updates them
    for name, buffer in layer.named_buffers(recurse=False):
        setattr(new, name, buffer)
    return new.train(layer.training)


def convert(model: torch.nn.Module, *, inplace: bool = False) -> torch.nn.Module:
    """``model`` with every supported ``torch.nn`` layer swapped for dlgpu's; the rest left as it is.

    Swapped: Linear, Conv2d (zero padding, any groups, "same" only where it is
    symmetric), ReLU, Tanh, Sigmoid, MaxPool2d (no dilation, ceil_mode or
    returned indices), CrossEntropyLoss (no class weights or label
    smoothing, mean reduction) and MSELoss (mean or sum) -- exactly these
    classes, not their subclasses; an in-place ReLU becomes an out-of-place one
    (the same values and gradients).  Layers in configurations dlgpu lacks stay
    PyTorch's, as does every other class: ``print(model)`` shows which is which.

    The swapped layers keep the original Parameter objects, so names, shapes,
    values, device, dtype and ``state_dict`` keys are unchanged.  Forward and
    backward hooks on a swapped layer are not carried over.  By default the
    model is deep-copied first; ``inplace=True`` converts ``model`` itself
    (parameters, and so an existing optimizer, stay shared).  Returns the
    converted model (a new object where ``model`` itself is a swapped layer).
    """
    if not isinstance(model, torch.nn.Module):
        raise ArgumentError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    swapped = _swapped(model)
    if swapped is not None:
        return swapped
    for name, child in list(model.named_children()):
        new = convert(child, inplace=True)
        if new is not child:
            setattr(model, name, new)
    return model
