"""Argument types shared by the ``dlgpu`` subcommands, so that a bad value stops the command at parse time.

Each is an argparse ``type=``: it converts the string or raises
``argparse.ArgumentTypeError``, which argparse reports as
``dlgpu SUB: error: argument --x: ...`` with exit status 2, before any data
is loaded, any kernel compiled or any benchmark run.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

__all__ = ["count", "non_negative_float", "output_file", "positive_count", "positive_float", "seed"]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def count(text: str) -> int:
    """An integer >= 0 (0 allowed: ``--epochs 0`` only evaluates)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_count(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: NumPy's generators take integers >= 0 only."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed must be >= 0 (NumPy's generators take none below 0), got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (momentum, weight decay)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def output_file(text: str) -> str:
    """A file the command will write: its folder must exist and be writable, and it must not be a folder."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(folder)!r} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"the folder {str(folder)!r} is not writable")
    return text
