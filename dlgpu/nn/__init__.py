"""Layers with a forward and a backward pass, as in the review's Figure 1.

Each module's ``forward(x)`` keeps what its backward needs;
``backward(grad_y)`` returns the gradient with respect to its input and adds
(+=) its parameters' gradients into ``Parameter.grad``.  No tape, no graph:
``Sequential`` runs its layers' backward passes in reverse.  Every layer calls
the public ops of ``dlgpu.functional``, so a network runs on the backend its
arrays select: NumPy on the CPU, CuPy on the GPU (``model.to("cuda")``).

>>> import numpy as np
>>> from dlgpu import nn, optim
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Linear(4, 16, activation="relu", rng=rng), nn.Linear(16, 3, rng=rng))
>>> loss_fn, opt = nn.SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> x, labels = rng.standard_normal((8, 4), dtype=np.float32), rng.integers(0, 3, size=8)
>>> for step in range(30):
...     opt.zero_grad()
...     loss = loss_fn(model(x), labels)
...     grad_x = model.backward(loss_fn.backward())
...     opt.step()
>>> bool(loss < 0.1), grad_x.shape, list(model.state_dict())
(True, (8, 4), ['0.weight', '0.bias', '1.weight', '1.bias'])
"""

from dlgpu.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from dlgpu.nn.loss import SoftmaxCrossEntropy, SquaredError
from dlgpu.nn.module import Module, Parameter, Sequential

__all__ = [
    "Conv2d",
    "Flatten",
    "Linear",
    "MaxPool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SoftmaxCrossEntropy",
    "SquaredError",
    "Tanh",
]
