"""``dlgpu train``: the command line over :func:`dlgpu.train.fit`."""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from dlgpu.device import gpu_available
from dlgpu.errors import ArgumentError, BackendUnavailableError, DlgpuError
from dlgpu.train.checkpoint import load_model, save_model
from dlgpu.train.fit import DEFAULTS, PRECISIONS, EpochStats, fit, initial_model
from dlgpu.train.plot import import_pyplot, write_plot
from dlgpu.train.steps import StaticStep

NO_GPU_MESSAGE = "no GPU found: training on the CPU backend"


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dlgpu.train.models import ACTIVATIONS, MODELS

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
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default=d["precision"],
                        help="storage of weights, activations and gradients: bf16 or fp16 with float32 master "
                        f"weights (fp16 with dynamic loss scaling) (default: {d['precision']})")
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
    from dlgpu.train.data import load_digits

    if args.epochs < 0:
        raise ArgumentError(f"dlgpu train: --epochs must be >= 0, got {args.epochs}")
    if args.batch_size < 1:
        raise ArgumentError(f"dlgpu train: --batch-size must be >= 1, got {args.batch_size}")
    if args.plot and args.epochs > 0:
        import_pyplot()  # fail before training, not after
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
        f"{args.epochs} epochs of {steps} steps of {args.batch_size}"
        + ("" if args.precision == "fp32" else f", {args.precision} storage with float32 master weights"),
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
                precision=args.precision,
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
