"""Fitting a network to the digits: epochs of SGD with a cosine learning rate, evaluation, the defaults.

Each epoch visits ``floor(N / batch)`` full batches of a fresh permutation of
the training set (drawn from a NumPy Generator seeded by ``seed``), so every
step has the same shapes.  On the CPU backend a seed fixes the result to the
last bit: the initial weights, the order of the batches and every op of the
CPU backend are deterministic.

Mixed precision (``precision="bf16"`` or ``"fp16"``): the model's parameters,
the images and every activation and gradient are stored in that 16-bit dtype
and computed in float32 by the ops; the optimizer keeps float32 master
weights (and velocities) and rounds them into the 16-bit parameters after
each step; the loss is float32.  float16, whose range is narrow, adds
dynamic loss scaling (:class:`dlgpu.optim.GradScaler`), which reads one value
per step on the host, so fp16 steps are not captured into a CUDA graph.
When training ends the model gets the float32 master weights back (what
``--save`` writes); each epoch's test accuracy is the 16-bit model's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
import warnings
from typing import Any, Callable

import numpy as np

from dlgpu import nn
from dlgpu.device_errors import check_errors
from dlgpu.errors import ArgumentError
from dlgpu.precision import BFLOAT16, FLOAT16
from dlgpu.train.steps import GraphedStep, StaticStep, array_module, classes_of

# --precision: the storage dtype of the model, its inputs, activations and gradients.
PRECISIONS = {"fp32": np.dtype(np.float32), "bf16": BFLOAT16, "fp16": FLOAT16}

# The settings the README quotes; every one is a command-line option.
DEFAULTS = {
    "model": "lenet",
    "activation": "relu",
    "epochs": 20,
    "batch_size": 32,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-3,
    "seed": 0,
    "precision": "fp32",
}
# Where a network's own defaults differ: Figure 1's tiny net on 160 points takes tanh (as in the
# figure), small batches and a larger step, and no weight decay (nine weights do not overfit).
MODEL_DEFAULTS = {
    "figure1": {"activation": "tanh", "epochs": 60, "batch_size": 10, "lr": 0.5, "weight_decay": 0.0},
}


def defaults(model_name: str) -> dict:
    """DEFAULTS with ``model_name``'s own settings over them."""
    return {**DEFAULTS, **MODEL_DEFAULTS.get(model_name, {}), "model": model_name}

_EVAL_BATCH = 512


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def predict(model, images, *, batch_size: int = _EVAL_BATCH):
    """Predicted class of each image (an int64 array on the images' device), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        chunks = [classes_of(model(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    xp = array_module("cuda" if type(images).__module__.startswith("cupy") else "cpu")
    return xp.concatenate(chunks)


def evaluate(model, images, labels) -> tuple[int, int]:
    """(correct, total) of ``model``'s predictions on ``images``; one host read at the end."""
    correct = int((predict(model, images) == labels).sum())
    return correct, int(len(labels))


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class EpochStats:
    epoch: int
    lr: float
    loss: float  # mean training loss over the epoch's steps
    train_accuracy: float  # over the examples the epoch trained on
    test_accuracy: float
    seconds: float  # the epoch's training steps, GPU work included (the epoch ends with a sync)
    steps: int


@dataclasses.dataclass
class TrainResult:
    model: Any
    device: str
    graph: bool  # whether the steps ran as a CUDA graph
    correct: int
    total: int
    history: list[EpochStats]

    @property
    def test_accuracy(self) -> float:
        return self.correct / self.total

    @property
    def seconds_per_epoch(self) -> float:
        """Median over epochs (robust to the first one's compilation and to a busy machine)."""
        return statistics.median(e.seconds for e in self.history) if self.history else math.nan

    @property
    def seconds_per_step(self) -> float:
        return statistics.median(e.seconds / e.steps for e in self.history) if self.history else math.nan


def _seeded_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(weights, batch order): two independent streams from one seed."""
    return tuple(np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))


class ClassSquaredError(nn.SquaredError):
    """Figure 1's squared error for one output unit, whose target is the class itself (0 or 1)."""

    def forward(self, outputs, labels):
        return super().forward(outputs, labels.reshape(-1, 1).astype(outputs.dtype))


def loss_function(name: str):
    """The loss module for ``name`` (dlgpu.train.models.LOSSES): both take (outputs, integer labels)."""
    if name == "cross_entropy":
        return nn.SoftmaxCrossEntropy()
    if name == "squared_error":
        return ClassSquaredError()
    raise ArgumentError(f"dlgpu train: loss must be 'cross_entropy' or 'squared_error', got {name!r}")


def initial_model(model_name: str, activation: str, seed: int):
    """The untrained network that ``dlgpu train --seed seed`` starts from, on the CPU."""
    from dlgpu.train import models

    return models.build(model_name, activation, rng=_seeded_generators(seed)[0])


def _cast_parameters(model, dtype) -> None:
    """Every parameter of ``model`` (and its gradient) stored in ``dtype``, rounded once."""
    for p in model.parameters():
        if p.dtype != dtype:
            p.data, p.grad = p.data.astype(dtype), p.grad.astype(dtype)


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ArgumentError(f"dlgpu train: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def fit(
    model,
    data,
    *,
    epochs: int = DEFAULTS["epochs"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    momentum: float = DEFAULTS["momentum"],
    weight_decay: float = DEFAULTS["weight_decay"],
    seed: int = DEFAULTS["seed"],
    device: str = "cpu",
    graph: bool = True,
    precision: str = DEFAULTS["precision"],
    loss: str = "cross_entropy",
    on_step: Callable[[int, StaticStep], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` (moved to ``device``) on ``data`` = (x_train, y_train, x_test, y_test).

    ``loss`` is "cross_entropy" (class scores) or "squared_error" (one output
    unit, Figure 1).  ``graph`` only matters on the GPU; ``precision`` is one of
    PRECISIONS (the module docstring says what bf16 and fp16 change).
    ``on_step(step_index, static_step)``
    is called after each step is queued and ``on_epoch(stats)`` after each
    epoch; both are for progress display.  Returns the trained model and its
    test accuracy, with one :class:`EpochStats` per epoch.
    """
    from dlgpu import optim

    epochs = _check_count("epochs", epochs, 0)
    batch_size = _check_count("batch size", batch_size, 1)
    x_train, y_train, x_test, y_test = data
    if batch_size > len(x_train):
        raise ArgumentError(f"dlgpu train: batch size {batch_size} exceeds the {len(x_train)} training examples")
    if precision not in PRECISIONS:
        raise ArgumentError(f"dlgpu train: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    xp = array_module(device)
    model.to(device)
    model.train()
    _cast_parameters(model, dtype)
    x_train, y_train, x_test, y_test = (xp.asarray(a) for a in (x_train, y_train, x_test, y_test))
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    shuffle_rng = _seeded_generators(seed)[1]
    loss_fn = loss_function(loss)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = optim.CosineLR(optimizer, total_steps=max(epochs, 1))
    scaler = optim.GradScaler() if precision == "fp16" else None
    step = StaticStep(model, loss_fn, optimizer, (batch_size, *x_train.shape[1:]), xp, dtype=dtype, scaler=scaler)
    steps_per_epoch = len(x_train) // batch_size

    stream = graphed = None
    if device == "cuda":
        import cupy

        stream = cupy.cuda.Stream(non_blocking=True)
        if graph and scaler is None:
            graphed = GraphedStep(step, stream)
    history: list[EpochStats] = []
    with stream if stream is not None else contextlib.nullcontext():
        for epoch in range(epochs):
            start = time.perf_counter()
            order = xp.asarray(shuffle_rng.permutation(len(x_train)))
            step.reset_totals()
            for i in range(steps_per_epoch):
                step.load(x_train, y_train, order[i * batch_size : (i + 1) * batch_size])
                if graphed is None:
                    step()
                elif graphed.graph is None and graphed.captured_lr is None:
                    graphed.warm_up()  # the run's first step, eager; later steps replay the graph
                    graphed.captured_lr = math.nan
                else:
                    if graphed.captured_lr != optimizer.lr:
                        try:
                            graphed.capture()
                        except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager
                            warnings.warn(
                                f"dlgpu train: CUDA graph capture failed ({type(exc).__name__}: {exc}); "
                                "training eagerly instead",
                                RuntimeWarning,
                                stacklevel=2,
                            )
                            graphed = None
                    (step if graphed is None else graphed)()
                if on_step is not None:
                    on_step(i, step)
            loss_sum, correct = float(step.loss_sum), int(step.correct)  # the epoch's one sync
            seconds = time.perf_counter() - start
            check_errors()  # a bad label the kernels found this epoch raises here, the GPU being idle anyway
            test_correct, test_total = evaluate(model, x_test, y_test)
            stats = EpochStats(
                epoch=epoch + 1,
                lr=optimizer.lr,
                loss=loss_sum / steps_per_epoch,
                train_accuracy=correct / (steps_per_epoch * batch_size),
                test_accuracy=test_correct / test_total,
                seconds=seconds,
                steps=steps_per_epoch,
            )
            history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            schedule.step()
        if dtype != np.float32:  # the trained weights: the float32 master copies (16-bit: 16-bit ones)
            for p, master in zip(model.parameters(), optimizer.masters):
                p.data = p.data.astype(np.float32) if master is None else master
                p.grad = p.grad.astype(np.float32)
            x_test = x_test.astype(np.float32)
        correct, total = evaluate(model, x_test, y_test)
    return TrainResult(model=model, device=device, graph=graphed is not None, correct=correct, total=total,
                       history=history)
