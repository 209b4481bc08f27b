"""PyTorch on dlgpu kernels: ``torch.ops.dlgpu`` operators, ``torch.nn`` drop-ins and ``convert(model)``.

>>> import torch, dlgpu.torch as dt
>>> layer = dt.Linear(4, 3, activation="relu")
>>> layer(torch.randn(2, 4)).shape
torch.Size([2, 3])
>>> model = dt.convert(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()))
>>> [type(m).__module__ for m in model]
['dlgpu.torch.modules', 'dlgpu.torch.modules']

Three layers, from the bottom:

- :mod:`dlgpu.torch.ops` registers every op and its backward with
  ``torch.library`` under ``torch.ops.dlgpu``: real kernels (CPU tensors on
  the CPU backend, CUDA tensors on the CUDA backend on the caller's stream,
  both shared through DLPack without a copy), fake kernels for shape
  propagation, autograd formulas that call the backward ops, and autocast
  rules.  So models of these layers run under ``torch.compile(fullgraph=True)``
  without graph breaks, export with ``torch.export``, and pass
  ``torch.library.opcheck``.
- :mod:`dlgpu.torch.functional`: ``linear``, ``conv2d``, ``relu``, ``tanh``,
  ``sigmoid``, ``max_pool2d``, ``cross_entropy``, ``mse_loss`` (and ``matmul``,
  ``softmax_cross_entropy``) with ``torch.nn.functional``'s signatures.
- :mod:`dlgpu.torch.modules`: ``Linear``, ``Conv2d``, ``ReLU``, ``Tanh``,
  ``Sigmoid``, ``MaxPool2d``, ``CrossEntropyLoss``, ``MSELoss``, subclasses of their
  ``torch.nn`` namesakes (PyTorch's parameters, initialization and
  ``state_dict``), and :func:`convert`, which swaps them into a model.

What dlgpu does not do is refused with a DlgpuError rather than emulated or
silently changed: float64 on the GPU, padding modes, pooling
dilation, ``ceil_mode`` and returned indices, class weights, label
smoothing, in-place ReLU, and double backward outside matmul, linear and
ReLU.  bfloat16 and float16 tensors run through every op (fp32 arithmetic,
outputs in their dtype, a float32 loss).  Inside ``torch.autocast`` (CPU or
CUDA, bfloat16 or float16) the products and convolutions run on 16-bit
copies of their inputs and the loss on float32 logits (see
:mod:`dlgpu.torch.ops`).

On CUDA tensors no op waits for the GPU, so a class label (or argmax) out of
range is found by the kernels, not at the call: the loss is NaN and
``dlgpu.check_errors()`` raises the error -- call it where the loop waits for
the GPU anyway (after ``loss.item()``), or set ``DLGPU_DEBUG=1`` to check at
each call (:mod:`dlgpu.device_errors`).  CPU tensors are checked at the call.

Importing this package imports torch; ``import dlgpu`` never does.
"""

from __future__ import annotations

# Before torch: dlgpu.cpu asks for passive OpenMP workers, which only takes effect if no OpenMP runtime
# has started yet; torch's spinning workers would otherwise slow the CPU backend many times over.
import dlgpu.cpu  # noqa: F401, I001
from dlgpu.torch import ops
from dlgpu.torch.conversion import convert
from dlgpu.torch import functional
from dlgpu.torch.functional import *  # noqa: F403  (matmul, linear, conv2d, ...: functional.__all__)
from dlgpu.torch.modules import Conv2d, CrossEntropyLoss, Linear, MaxPool2d, MSELoss, ReLU, Sigmoid, Tanh

__all__ = ["ops", "convert", *functional.__all__,
           "Linear", "Conv2d", "ReLU", "Tanh", "Sigmoid", "MaxPool2d", "CrossEntropyLoss", "MSELoss"]
