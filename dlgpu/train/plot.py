"""The training curves as a PNG (``dlgpu train --plot``)."""

from __future__ import annotations

from dlgpu.errors import BackendUnavailableError
from dlgpu.train.fit import EpochStats


def import_pyplot():
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
