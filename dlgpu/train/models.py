"""The networks ``dlgpu train`` fits: two for the 8x8 digits, and the review's Figure 1.

- ``lenet``: LeCun's convolutional pattern scaled to 8x8 images,
  conv 3x3 -> act -> max-pool 2 -> conv 3x3 -> act -> max-pool 2 -> linear -> act -> linear.
  Each 3x3 convolution pads by 1 so it keeps the image size; each pooling
  halves it: 8x8 -> 4x4 -> 2x2.
- ``mlp``: a multilayer perceptron, two hidden layers between the pixels and
  the ten class scores.
- ``figure1``: the network of the review's Figure 1 (LeCun, Bengio and Hinton,
  Nature 2015): two inputs, two hidden units, one output unit, trained with the
  squared error to separate two classes of points in the plane
  (:func:`dlgpu.train.data.figure1_curves`).  Its output unit is a sigmoid read
  as class 1 above 0.5.

Each network has a loss (:data:`LOSSES`) and a data set (:data:`DATA`).

With ``activation="relu"`` every hidden layer is a fused Linear/Conv2d + ReLU
(one op forward, one backward); with ``"tanh"`` each is followed by a Tanh
layer.  Weights come from the ``rng`` given (He for ReLU layers, Glorot
otherwise), so a seed fixes the network.

>>> import numpy as np
>>> model = lenet(rng=np.random.default_rng(0))
>>> model(np.zeros((2, 1, 8, 8), dtype=np.float32)).shape
(2, 10)
>>> [name for name in model.state_dict()][:2]
['0.weight', '0.bias']
"""

from __future__ import annotations

import numpy as np

from dlgpu import nn
from dlgpu.errors import ArgumentError

__all__ = ["ACTIVATIONS", "DATA", "LOSSES", "MODELS", "build", "figure1", "lenet", "mlp"]

MODELS = ("lenet", "mlp", "figure1")
ACTIVATIONS = ("relu", "tanh")
# What each network is trained with, and on: the softmax cross-entropy over ten class scores for the
# digits; Figure 1's squared error against the class (0 or 1) for its single output unit.
LOSSES = {"lenet": "cross_entropy", "mlp": "cross_entropy", "figure1": "squared_error"}
DATA = {"lenet": "digits", "mlp": "digits", "figure1": "figure1"}


def _check_activation(op: str, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ArgumentError(f"{op}: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")


def _hidden(layer_class, *args, activation: str, rng, dtype) -> list[nn.Module]:
    """A hidden layer and its activation: fused for ReLU, a separate Tanh layer for tanh."""
    if activation == "relu":
        return [layer_class(*args, activation="relu", rng=rng, dtype=dtype)]
    return [layer_class(*args, rng=rng, dtype=dtype), nn.Tanh()]


def lenet(
    activation: str = "relu",
    *,
    rng: np.random.Generator | None = None,
    dtype=np.float32,
    channels: tuple[int, int] = (16, 32),
    hidden: int = 64,
    classes: int = 10,
    image_size: int = 8,
) -> nn.Sequential:
    """conv(1 -> c1) -> pool -> conv(c1 -> c2) -> pool -> linear(c2 * (size/4)^2 -> hidden) -> linear(-> classes).

    Input (N, 1, image_size, image_size); output (N, classes) logits.
    """
    _check_activation("lenet", activation)
    if image_size < 4:
        raise ArgumentError(f"lenet: image_size must be at least 4 (two 2x2 poolings), got {image_size}")
    rng = np.random.default_rng() if rng is None else rng
    c1, c2 = channels
    pooled = image_size // 4
    layers = [
        *_hidden(nn.Conv2d, 1, c1, 3, 1, 1, activation=activation, rng=rng, dtype=dtype),
        nn.MaxPool2d(2),
        *_hidden(nn.Conv2d, c1, c2, 3, 1, 1, activation=activation, rng=rng, dtype=dtype),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *_hidden(nn.Linear, c2 * pooled * pooled, hidden, activation=activation, rng=rng, dtype=dtype),
        nn.Linear(hidden, classes, rng=rng, dtype=dtype),
    ]
    return nn.Sequential(*layers)


def mlp(
    activation: str = "relu",
    *,
    rng: np.random.Generator | None = None,
    dtype=np.float32,
    hidden: tuple[int, int] = (128, 64),
    in_features: int = 64,
    classes: int = 10,
) -> nn.Sequential:
    """Flatten -> linear(in -> h1) -> act -> linear(h1 -> h2) -> act -> linear(h2 -> classes).

    Input (N, ...) with in_features values per example; output (N, classes) logits.
    """
    _check_activation("mlp", activation)
    rng = np.random.default_rng() if rng is None else rng
    h1, h2 = hidden
    layers = [
        nn.Flatten(),
        *_hidden(nn.Linear, in_features, h1, activation=activation, rng=rng, dtype=dtype),
        *_hidden(nn.Linear, h1, h2, activation=activation, rng=rng, dtype=dtype),
        nn.Linear(h2, classes, rng=rng, dtype=dtype),
    ]
    return nn.Sequential(*layers)


def figure1(activation: str = "tanh", *, rng: np.random.Generator | None = None, dtype=np.float32) -> nn.Sequential:
    """Figure 1's net: linear(2 -> 2) -> act -> linear(2 -> 1) -> sigmoid.

    Input (N, 2) points; output (N, 1) in (0, 1), the network's belief that a
    point is of class 1.  ``hidden(model, x)`` gives the hidden layer's values,
    the distorted plane the figure draws.
    """
    _check_activation("figure1", activation)
    rng = np.random.default_rng() if rng is None else rng
    return nn.Sequential(
        *_hidden(nn.Linear, 2, 2, activation=activation, rng=rng, dtype=dtype),
        nn.Linear(2, 1, rng=rng, dtype=dtype),
        nn.Sigmoid(),
    )


def hidden(model: nn.Sequential, x):
    """The hidden layer's values of a :func:`figure1` network: every layer before the output unit's."""
    for layer in model.layers[:-2]:
        x = layer(x)
    return x


def build(name: str, activation: str = "relu", *, rng: np.random.Generator | None = None) -> nn.Sequential:
    """The network called ``name`` (one of :data:`MODELS`), float32."""
    builders = {"lenet": lenet, "mlp": mlp, "figure1": figure1}
    if name not in builders:
        raise ArgumentError(f"build: model must be one of {', '.join(MODELS)}, got {name!r}")
    return builders[name](activation, rng=rng)
