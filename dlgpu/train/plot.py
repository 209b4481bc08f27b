"""The training curves as a PNG (``dlgpu train --plot``), and for Figure 1's net what its hidden layer does."""

from __future__ import annotations

import numpy as np

from dlgpu.errors import BackendUnavailableError, install_hint
from dlgpu.train.loop import EpochStats


def import_pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"dlgpu train: --plot needs matplotlib, which is not installed; {install_hint('examples')}"
        ) from exc
    return plt


def write_plot(history: list[EpochStats], path, *, title: str = "") -> None:
    """Training loss (left) and training/test accuracy (right) per epoch, as a PNG."""
    plt = import_pyplot()
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


_GRID_LINES = 21  # lines of the input grid per direction, as in the figure
_GRID_POINTS = 200  # points along each line, so the bent lines are drawn smooth


def write_figure1_plot(model, data, history: list[EpochStats], path, *, title: str = "") -> None:
    """Figure 1 of the review for a trained :func:`dlgpu.train.models.figure1` net, as a PNG.

    Left: the input plane, a regular grid, both classes and the net's
    decision boundary.  Middle: the same grid and points as the hidden layer
    sees them (bent by the first linear layer and its activation), where one
    straight line -- the output unit's -- separates the classes.  Right: the
    training loss per epoch (when there were epochs).
    """
    from dlgpu.train.models import hidden

    plt = import_pyplot()
    model.to("cpu").eval()
    x = np.concatenate([data[0], data[2]])
    labels = np.concatenate([data[1], data[3]])
    lo, hi = x.min(axis=0) - 0.25, x.max(axis=0) + 0.25
    ticks = [np.linspace(lo[k], hi[k], _GRID_LINES) for k in (0, 1)]
    along = [np.linspace(lo[k], hi[k], _GRID_POINTS) for k in (0, 1)]
    # each grid line as an (_GRID_POINTS, 2) polyline: first those of constant x1, then of constant x2
    lines = [np.stack([np.full(_GRID_POINTS, t), along[1]], axis=1) for t in ticks[0]]
    lines += [np.stack([along[0], np.full(_GRID_POINTS, t)], axis=1) for t in ticks[1]]
    lines = np.asarray(lines, dtype=np.float32)
    bent = np.asarray(hidden(model, lines.reshape(-1, 2))).reshape(lines.shape)
    h = np.asarray(hidden(model, x))

    fig, axes = plt.subplots(1, 3 if history else 2, figsize=(15 if history else 10, 5))
    styles = ((0, "tab:blue", "o", "class 0"), (1, "tab:red", "^", "class 1"))
    for ax, grid, points, name in ((axes[0], lines, x, "input x"), (axes[1], bent, h, "hidden h")):
        for line in grid:
            ax.plot(line[:, 0], line[:, 1], color="0.8", linewidth=0.6, zorder=0)
        for label, color, marker, text in styles:
            chosen = points[labels == label]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=14, color=color, marker=marker, label=text, zorder=2)
        ax.set_xlabel(f"{name}1")
        ax.set_ylabel(f"{name}2")
    # the decision boundary, output = 0.5: a contour in the input plane, a straight line in the hidden one
    g1, g2 = np.meshgrid(along[0], along[1])
    out = np.asarray(model(np.stack([g1.ravel(), g2.ravel()], axis=1).astype(np.float32))).reshape(g1.shape)
    axes[0].contour(g1, g2, out, levels=[0.5], colors="k", linewidths=1.5)
    axes[0].set_title("input space")
    weight, bias = (np.asarray(p.data, dtype=np.float64) for p in (model.layers[-2].weight, model.layers[-2].bias))
    (w1, w2), b = weight[0], bias[0]
    h_lo, h_hi = bent[..., 0].min(), bent[..., 0].max()
    if abs(w2) > 1e-12:  # w1*h1 + w2*h2 + b = 0
        h1 = np.linspace(h_lo, h_hi, 2)
        axes[1].plot(h1, -(w1 * h1 + b) / w2, color="k", linewidth=1.5)
        axes[1].set_ylim(bent[..., 1].min() - 0.1, bent[..., 1].max() + 0.1)
    axes[1].set_title("hidden layer: the grid bent, one line separates")
    axes[0].legend(loc="lower right")
    if history:
        axes[2].plot([e.epoch for e in history], [e.loss for e in history], marker=".")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("mean training loss")
        axes[2].set_yscale("log")
        axes[2].grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
