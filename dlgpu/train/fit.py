"""Fitting a network to the digits: epochs of SGD with a cosine learning rate, evaluation, the defaults.

Each epoch visits ``floor(N / batch)`` full batches of a fresh permutation of
the training set (drawn from a NumPy Generator seeded by ``seed``), so every
step has the same shapes.  On the CPU backend a seed fixes the result to the
last bit: the initial weights, the order of the batches and every op of the
CPU backend are deterministic.
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

from dlgpu.device_errors import check_errors
from dlgpu.errors import ArgumentError
from dlgpu.train.steps import GraphedStep, StaticStep, array_module

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
}

_EVAL_BATCH = 512


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def predict(model, images, *, batch_size: int = _EVAL_BATCH):
    """Predicted class of each image (an int64 array on the images' device), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        chunks = [model(images[i : i + batch_size]).argmax(axis=1) for i in range(0, len(images), batch_size)]
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


def initial_model(model_name: str, activation: str, seed: int):
    """The untrained network that ``dlgpu train --seed seed`` starts from, on the CPU."""
    from dlgpu.train import models

    return models.build(model_name, activation, rng=_seeded_generators(seed)[0])


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
    on_step: Callable[[int, StaticStep], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` (moved to ``device``) on ``data`` = (x_train, y_train, x_test, y_test).

    ``graph`` only matters on the GPU.  ``on_step(step_index, static_step)``
    is called after each step is queued and ``on_epoch(stats)`` after each
    epoch; both are for progress display.  Returns the trained model and its
    test accuracy, with one :class:`EpochStats` per epoch.
    """
    from dlgpu import nn, optim

    epochs = _check_count("epochs", epochs, 0)
    batch_size = _check_count("batch size", batch_size, 1)
    x_train, y_train, x_test, y_test = data
    if batch_size > len(x_train):
        raise ArgumentError(f"dlgpu train: batch size {batch_size} exceeds the {len(x_train)} training examples")
    xp = array_module(device)
    model.to(device)
    model.train()
    x_train, y_train, x_test, y_test = (xp.asarray(a) for a in (x_train, y_train, x_test, y_test))
    shuffle_rng = _seeded_generators(seed)[1]
    loss_fn = nn.SoftmaxCrossEntropy()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = optim.CosineLR(optimizer, total_steps=max(epochs, 1))
    step = StaticStep(model, loss_fn, optimizer, (batch_size, *x_train.shape[1:]), xp)
    steps_per_epoch = len(x_train) // batch_size

    stream = graphed = None
    if device == "cuda":
        import cupy

        stream = cupy.cuda.Stream(non_blocking=True)
        if graph:
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
        correct, total = evaluate(model, x_test, y_test)
    return TrainResult(model=model, device=device, graph=graphed is not None, correct=correct, total=total,
                       history=history)
