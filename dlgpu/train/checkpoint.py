"""Saving a trained network with what it is (model and activation), and loading it back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlgpu.errors import ArgumentError
from dlgpu.train.fit import DEFAULTS, defaults

_META_PREFIX = "meta."


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
    from dlgpu.train import models

    state, meta = read_saved(path)
    for key, given in (("model", model_name), ("activation", activation)):
        saved = meta.get(key)
        if given is not None and saved is not None and given != saved:
            raise ArgumentError(f"dlgpu train: --{key} {given} disagrees with {str(path)!r}, saved with {key} {saved}")
    model_name = model_name or meta.get("model") or DEFAULTS["model"]
    activation = activation or meta.get("activation") or defaults(model_name)["activation"]
    model = models.build(model_name, activation, rng=np.random.default_rng(0))
    model.load_state_dict(state)
    return model, model_name, activation
