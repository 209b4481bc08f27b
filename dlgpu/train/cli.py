"""``dlgpu train``: the command line over :func:`dlgpu.train.fit`."""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from dlgpu import arguments
from dlgpu.device import gpu_available
from dlgpu.errors import BackendUnavailableError, DlgpuError
from dlgpu.train.checkpoint import load_model, save_model
from dlgpu.train.loop import DEFAULTS, MODEL_DEFAULTS, PRECISIONS, EpochStats, defaults, fit, initial_model
from dlgpu.train.plot import import_pyplot, write_figure1_plot, write_plot
from dlgpu.train.steps import StaticStep

NO_GPU_MESSAGE = "no GPU found: training on the CPU backend"


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dlgpu.train.models import ACTIVATIONS, MODELS

    d = DEFAULTS

    def default(key: str) -> str:
        """The default, and a network's own where it differs (figure1 trains with other settings)."""
        own = [f"{name}: {settings[key]}" for name, settings in MODEL_DEFAULTS.items() if key in settings]
        return f"(default: {d[key]}{'; ' if own else ''}{'; '.join(own)})"

    # The per-network settings default to None here and are resolved once the network is known.
    # Every number and output path is checked here, at parse time, before any data is loaded.
    add = parser.add_argument
    add("--model", choices=MODELS, help="network: lenet and mlp learn the 8x8 digits, figure1 is the review's "
        f"Figure 1 net on two classes of points (default: {d['model']}, or the one in --load)")
    add("--activation", choices=ACTIVATIONS, help=f"hidden activation {default('activation')}")
    add("--epochs", type=arguments.count, help=f"passes over the training set; 0 only evaluates {default('epochs')}")
    add("--batch-size", type=arguments.positive_count, help=f"examples per SGD step {default('batch_size')}")
    add("--lr", type=arguments.positive_float,
        help=f"initial learning rate, cosine-decayed over the epochs {default('lr')}")
    add("--momentum", type=arguments.non_negative_float, help=f"SGD momentum {default('momentum')}")
    add("--weight-decay", type=arguments.non_negative_float, help=f"L2 weight decay {default('weight_decay')}")
    add("--backend", choices=("cuda", "cpu"), help="default: cuda when a GPU is found, else cpu")
    add("--seed", type=arguments.seed, default=d["seed"],
        help=f"initial weights and batch order, >= 0 (default: {d['seed']}); the train/test split is always the same")
    add("--save", metavar="FILE.npz", type=arguments.output_file, help="write the trained weights")
    add("--load", metavar="FILE.npz", help="start from saved weights (with --epochs 0: evaluate them)")
    add("--plot", metavar="FILE.png", type=arguments.output_file, help="draw loss and accuracy per epoch, and for "
        "figure1 how the hidden layer bends the input plane (needs matplotlib)")
    add("--precision", choices=tuple(PRECISIONS), default=d["precision"],
        help="storage of weights, activations and gradients: bf16 or fp16 with float32 master weights "
        f"(fp16 with dynamic loss scaling) (default: {d['precision']})")
    add("--graph", action=argparse.BooleanOptionalAction, default=True,
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


_SETTINGS = ("activation", "epochs", "batch_size", "lr", "momentum", "weight_decay")


def _run(args: argparse.Namespace, console) -> int:
    from dlgpu.train.data import load
    from dlgpu.train.models import DATA, LOSSES

    if args.plot:
        import_pyplot()  # fail before training, not after
    device = args.backend
    if device is None:
        device = "cuda" if gpu_available() else "cpu"
        if device == "cpu":
            console.print(NO_GPU_MESSAGE, markup=False)
    elif device == "cuda" and not gpu_available():
        raise BackendUnavailableError("dlgpu train: --backend cuda, but no GPU found (CuPy missing or no CUDA device)")

    if args.load:
        model, model_name, activation = load_model(args.load, model_name=args.model, activation=args.activation)
    else:
        model_name = args.model or DEFAULTS["model"]
        activation = args.activation or defaults(model_name)["activation"]
        model = initial_model(model_name, activation, args.seed)
    # each setting left out takes the network's default
    settings = {key: getattr(args, key) for key in _SETTINGS if getattr(args, key) is not None}
    settings = {**defaults(model_name), **settings, "activation": activation}
    data = load(DATA[model_name])
    examples = "digits" if DATA[model_name] == "digits" else "points"
    parameters = sum(int(np.prod(p.shape)) for p in model.parameters())
    what = f"{model_name} ({activation}, {parameters:,} parameters)"
    epochs, batch_size = settings["epochs"], settings["batch_size"]
    steps = len(data[0]) // batch_size if batch_size <= len(data[0]) else 0
    console.print(
        f"training {what} on the {device} backend: {len(data[0])} training / {len(data[2])} test {examples}, "
        f"{epochs} epochs of {steps} steps of {batch_size}"
        + ("" if args.precision == "fp32" else f", {args.precision} storage with float32 master weights"),
        markup=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        with _Progress(console, epochs, steps, live_metrics=device == "cpu") as progress:
            result = fit(
                model,
                data,
                epochs=epochs,
                batch_size=batch_size,
                lr=settings["lr"],
                momentum=settings["momentum"],
                weight_decay=settings["weight_decay"],
                seed=args.seed,
                device=device,
                graph=args.graph,
                precision=args.precision,
                loss=LOSSES[model_name],
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
        title = f"dlgpu train: {what}, {device}"
        if model_name == "figure1":
            write_figure1_plot(result.model, data, result.history, args.plot, title=title)
            console.print(f"wrote {args.plot}", markup=False)
        elif result.history:
            write_plot(result.history, args.plot, title=title)
            console.print(f"wrote {args.plot}", markup=False)
        else:
            console.print("--plot: no epochs trained, nothing to draw", markup=False)
    return 0
