"""``dlgpu train``: a network learns the 8x8 handwritten digits, on the GPU or the CPU.

    dlgpu train                                # LeNet, the defaults below, GPU if one is found
    dlgpu train --model mlp --activation tanh  # the review's Figure-1 network
    dlgpu train --save lenet.npz --plot curves.png
    dlgpu train --load lenet.npz --epochs 0    # evaluate saved weights

Each epoch visits ``floor(N / batch)`` full batches of a fresh permutation
of the training set (drawn from a NumPy Generator seeded by ``--seed``), so
every step has the same shapes; SGD with momentum and weight decay follows a
cosine learning rate over the epochs (constant within an epoch).  On the CPU
backend a seed fixes the result to the last bit: the initial weights, the
order of the batches and every op of the CPU backend are deterministic.

Every training step runs one function, :class:`StaticStep`, on fixed
buffers: the batch is copied into a static input and label array, and the
step adds its loss and its count of correct predictions into two device
accumulators, read once per epoch.  Nothing in the step reads a value back
to the host, which is what lets the GPU capture it whole.

On the GPU (``--graph``, the default) one eager step runs first, so that
every kernel is compiled and loaded and the momentum buffers exist; then the
whole step (forward, backward, SGD) is captured once with CuPy's stream
capture into a CUDA graph and replayed for every later batch: one launch per
step instead of one per kernel.  Its temporaries come from a private CuPy
memory pool kept alive with the graph, so the addresses baked into the graph
are never handed to anyone else.  The learning rate is a kernel argument
baked into the graph, so the step is captured again when the schedule changes
it (once per epoch).  If capture fails the run goes on eagerly, with a
warning.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlgpu.device import gpu_available
from dlgpu.errors import ArgumentError, BackendUnavailableError, DlgpuError

__all__ = [
    "DEFAULTS",
    "NO_GPU_MESSAGE",
    "EpochStats",
    "GraphedStep",
    "StaticStep",
    "TrainResult",
    "add_arguments",
    "evaluate",
    "fit",
    "initial_model",
    "load_model",
    "main",
    "predict",
    "save_model",
    "write_plot",
]

NO_GPU_MESSAGE = "no GPU found: training on the CPU backend"

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
_META_PREFIX = "meta."


# ---------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------


def _array_module(device: str):
    if device == "cuda":
        import cupy

        return cupy
    return np


# ---------------------------------------------------------------------------
# the training step on static buffers
# ---------------------------------------------------------------------------


class StaticStep:
    """One SGD step of ``model`` on fixed buffers, with its loss and hits summed on the device.

    ``x`` (batch, ...) and ``labels`` (batch,) are allocated once; ``load``
    copies a batch into them (``take`` with ``out=``, no new array).
    ``__call__`` runs zero_grad, forward, loss, backward and the optimizer
    step, then adds the batch's mean loss into ``loss_sum`` and its number of
    correct predictions into ``correct``.  Those are in-place updates of 0-d
    arrays, so the step never reads a value on the host: on the GPU it can be
    captured into a CUDA graph, and on the CPU it runs unchanged on NumPy.
    """

    def __init__(self, model, loss_fn, optimizer, batch_shape: tuple[int, ...], xp=np):
        self.model, self.loss_fn, self.optimizer, self.xp = model, loss_fn, optimizer, xp
        self.x = xp.zeros(batch_shape, dtype=np.float32)
        self.labels = xp.zeros(batch_shape[:1], dtype=np.int64)
        self.loss_sum = xp.zeros((), dtype=np.float64)
        self.correct = xp.zeros((), dtype=np.int64)

    def load(self, images, labels, indices) -> None:
        """x <- images[indices], labels <- labels[indices], into the existing buffers."""
        self.xp.take(images, indices, axis=0, out=self.x)
        self.xp.take(labels, indices, axis=0, out=self.labels)

    def reset_totals(self) -> None:
        self.loss_sum.fill(0)
        self.correct.fill(0)

    def __call__(self) -> None:
        self.optimizer.zero_grad()
        logits = self.model(self.x)
        loss = self.loss_fn(logits, self.labels)
        self.model.backward(self.loss_fn.backward())
        self.optimizer.step()
        self.loss_sum += loss
        self.correct += (logits.argmax(axis=1) == self.labels).sum()


class GraphedStep:
    """A :class:`StaticStep` captured once into a CUDA graph and replayed (GPU only).

    ``warm_up()`` runs the step eagerly (compiling and loading every kernel,
    allocating the momentum buffers) inside the private memory pool;
    ``capture()`` records one step on ``stream`` without running it;
    ``__call__`` launches the graph.  Everything the graph touches is either
    persistent (parameters, gradients, velocities, the step's buffers) or
    came from the private pool, which lives as long as this object.
    """

    def __init__(self, step: StaticStep, stream):
        import cupy

        self.step = step
        self.stream = stream
        self._cupy = cupy
        self.pool = cupy.cuda.MemoryPool()
        self.graph = None
        self.captured_lr: float | None = None

    @contextlib.contextmanager
    def _private_memory(self):
        with self._cupy.cuda.using_allocator(self.pool.malloc), self.stream:
            yield

    def warm_up(self) -> None:
        with self._private_memory():
            self.step()

    def capture(self) -> None:
        """Record one step into a new graph; raises (and leaves the stream usable) if capture fails."""
        self.graph = None
        with self._private_memory():
            self.stream.begin_capture()
            try:
                self.step()
            except BaseException:
                # An invalidated capture must still be ended before the stream is usable again.
                with contextlib.suppress(Exception):
                    self.stream.end_capture()
                raise
            self.graph = self.stream.end_capture()
        self.captured_lr = self.step.optimizer.lr

    def __call__(self) -> None:
        self.graph.launch(stream=self.stream)


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
    xp = _array_module("cuda" if type(images).__module__.startswith("cupy") else "cpu")
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
    from dlgpu import models

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
    xp = _array_module(device)
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


# ---------------------------------------------------------------------------
# saving, loading, plotting
# ---------------------------------------------------------------------------


def save_model(model, path, *, model_name: str, activation: str) -> None:
    """The state dict as .npz, plus the architecture (meta.model, meta.activation) to rebuild it."""
    arrays = dict(model.state_dict())
    arrays[_META_PREFIX + "model"] = np.array(model_name)
    arrays[_META_PREFIX + "activation"] = np.array(activation)
    with open(path, "wb") as f:  # np.savez would append .npz to a name without it
        np.savez(f, **arrays)


def read_saved(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(state dict, metadata) from a file written by :func:`save_model` (or any .npz of arrays)."""
    path = Path(path)
    if not path.is_file():
        raise ArgumentError(f"dlgpu train: --load {str(path)!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise ArgumentError(f"dlgpu train: --load {str(path)!r} is not a .npz file of arrays ({exc})") from exc
    meta = {name[len(_META_PREFIX) :]: str(value) for name, value in arrays.items() if name.startswith(_META_PREFIX)}
    state = {name: value for name, value in arrays.items() if not name.startswith(_META_PREFIX)}
    return state, meta


def load_model(path, *, model_name: str | None = None, activation: str | None = None):
    """(model, model_name, activation): the network saved in ``path``, on the CPU.

    The architecture comes from the file's metadata; ``model_name`` and
    ``activation``, when given, must agree with it (or name it, for a file
    without metadata).
    """
    from dlgpu import models

    state, meta = read_saved(path)
    for key, given in (("model", model_name), ("activation", activation)):
        saved = meta.get(key)
        if given is not None and saved is not None and given != saved:
            raise ArgumentError(f"dlgpu train: --{key} {given} disagrees with {str(path)!r}, saved with {key} {saved}")
    model_name = model_name or meta.get("model") or DEFAULTS["model"]
    activation = activation or meta.get("activation") or DEFAULTS["activation"]
    model = models.build(model_name, activation, rng=np.random.default_rng(0))
    model.load_state_dict(state)
    return model, model_name, activation


def _import_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BackendUnavailableError(
            "dlgpu train: --plot needs matplotlib, which is not installed; "
            "pip install 'dlgpu[examples]' (or pip install matplotlib)"
        ) from exc
    return plt


def write_plot(history: list[EpochStats], path, *, title: str = "") -> None:
    """Training loss (left) and training/test accuracy (right) per epoch, as a PNG."""
    plt = _import_pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [e.epoch for e in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [e.loss for e in history], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("mean training loss")
    ax_loss.set_yscale("log")
    ax_acc.plot(epochs, [100 * e.train_accuracy for e in history], marker="o", label="train")
    ax_acc.plot(epochs, [100 * e.test_accuracy for e in history], marker="s", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dlgpu.models import ACTIVATIONS, MODELS

    d = DEFAULTS
    parser.add_argument("--model", choices=MODELS, help=f"network (default: {d['model']}, or the one in --load)")
    parser.add_argument("--activation", choices=ACTIVATIONS, help=f"hidden activation (default: {d['activation']})")
    parser.add_argument("--epochs", type=int, default=d["epochs"], help="passes over the training set; "
                        f"0 only evaluates (default: {d['epochs']})")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"(default: {d['batch_size']})")
    parser.add_argument("--lr", type=float, default=d["lr"], help=f"initial learning rate, cosine-decayed over the "
                        f"epochs (default: {d['lr']})")
    parser.add_argument("--momentum", type=float, default=d["momentum"], help=f"(default: {d['momentum']})")
    parser.add_argument("--weight-decay", type=float, default=d["weight_decay"],
                        help=f"(default: {d['weight_decay']})")
    parser.add_argument("--backend", choices=("cuda", "cpu"), help="default: cuda when a GPU is found, else cpu")
    parser.add_argument("--seed", type=int, default=d["seed"], help="initial weights and batch order "
                        f"(default: {d['seed']}); the train/test split is always the same")
    parser.add_argument("--save", metavar="FILE.npz", help="write the trained weights")
    parser.add_argument("--load", metavar="FILE.npz", help="start from saved weights (with --epochs 0: evaluate them)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw loss and accuracy per epoch (needs matplotlib)")
    parser.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True,
                        help="on the GPU, replay each training step as one CUDA graph (default: on)")


class _Progress:
    """A rich progress bar per epoch, and one printed line when the epoch ends."""

    def __init__(self, console, epochs: int, steps: int, live_metrics: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console, self.epochs, self.steps, self.live = console, epochs, steps, live_metrics
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # a log gets the epoch lines only
        )
        self.task = None
        self.epoch = 1

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_step(self, i: int, step: StaticStep) -> None:
        if self.task is None:
            self.task = self.progress.add_task(f"epoch {self.epoch}/{self.epochs}", total=self.steps, metrics="")
        metrics = ""
        if self.live:  # on the CPU the running totals are host memory: free to read
            seen = (i + 1) * step.x.shape[0]
            metrics = f"loss {float(step.loss_sum) / (i + 1):.4f}  acc {100 * int(step.correct) / seen:5.1f}%"
        self.progress.update(self.task, completed=i + 1, metrics=metrics)

    def on_epoch(self, stats: EpochStats) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.epoch = stats.epoch + 1
        self.console.print(
            f"epoch {stats.epoch:>3}/{self.epochs}  lr {stats.lr:.4f}  loss {stats.loss:.4f}  "
            f"train {100 * stats.train_accuracy:6.2f}%  test {100 * stats.test_accuracy:6.2f}%  "
            f"{stats.seconds:.3f} s",
            markup=False,
            highlight=False,
        )


def main(args: argparse.Namespace) -> int:
    """Run ``dlgpu train``: 0 on success, 1 when it cannot run here (a missing package, no GPU), 2 on bad arguments."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    try:
        return _run(args, console)
    except BackendUnavailableError as exc:
        console.print(str(exc), markup=False)
        return 1
    except DlgpuError as exc:
        console.print(str(exc), markup=False)
        return 2


def _run(args: argparse.Namespace, console) -> int:
    from dlgpu.data import load_digits

    if args.epochs < 0:
        raise ArgumentError(f"dlgpu train: --epochs must be >= 0, got {args.epochs}")
    if args.batch_size < 1:
        raise ArgumentError(f"dlgpu train: --batch-size must be >= 1, got {args.batch_size}")
    if args.plot and args.epochs > 0:
        _import_pyplot()  # fail before training, not after
    device = args.backend
    if device is None:
        device = "cuda" if gpu_available() else "cpu"
        if device == "cpu":
            console.print(NO_GPU_MESSAGE, markup=False)
    elif device == "cuda" and not gpu_available():
        raise BackendUnavailableError("dlgpu train: --backend cuda, but no GPU found (CuPy missing or no CUDA device)")

    data = load_digits()
    if args.load:
        model, model_name, activation = load_model(args.load, model_name=args.model, activation=args.activation)
    else:
        model_name = args.model or DEFAULTS["model"]
        activation = args.activation or DEFAULTS["activation"]
        model = initial_model(model_name, activation, args.seed)
    parameters = sum(int(np.prod(p.shape)) for p in model.parameters())
    what = f"{model_name} ({activation}, {parameters:,} parameters)"
    steps = len(data[0]) // args.batch_size if args.batch_size <= len(data[0]) else 0
    console.print(
        f"training {what} on the {device} backend: {len(data[0])} training / {len(data[2])} test digits, "
        f"{args.epochs} epochs of {steps} steps of {args.batch_size}",
        markup=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        with _Progress(console, args.epochs, steps, live_metrics=device == "cpu") as progress:
            result = fit(
                model,
                data,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                momentum=args.momentum,
                weight_decay=args.weight_decay,
                seed=args.seed,
                device=device,
                graph=args.graph,
                on_step=progress.on_step,
                on_epoch=progress.on_epoch,
            )
    for warning in caught:
        console.print(f"warning: {warning.message}", markup=False)

    console.print(
        f"test accuracy {100 * result.test_accuracy:.2f}% ({result.correct}/{result.total})", markup=False
    )
    if result.history:
        mode = ("CUDA graph" if result.graph else "eager") if device == "cuda" else "CPU"
        console.print(
            f"time per epoch {result.seconds_per_epoch:.3f} s, per step {1e3 * result.seconds_per_step:.3f} ms "
            f"(median over {len(result.history)} epochs, {mode})",
            markup=False,
        )
    if args.save:
        save_model(result.model, args.save, model_name=model_name, activation=activation)
        console.print(f"wrote {args.save}", markup=False)
    if args.plot:
        if result.history:
            write_plot(result.history, args.plot, title=f"dlgpu train: {what}, {device}")
            console.print(f"wrote {args.plot}", markup=False)
        else:
            console.print("--plot: no epochs trained, nothing to draw", markup=False)
    return 0
