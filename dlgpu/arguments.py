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


def _bounded(parse, low: float, inclusive: bool, doc: str, message: str = "must be {op} {low}, got {text}"):
    """An argparse type: ``parse`` the text, then refuse values below ``low`` (or at it, unless inclusive)."""
    op = ">=" if inclusive else ">"

    def check(text: str):
        value = parse(text)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(message.format(op=op, low=low, text=text))
        return value

    check.__doc__ = doc
    return check


count = _bounded(_int, 0, True, "An integer >= 0 (0 allowed: ``--epochs 0`` only evaluates).")
positive_count = _bounded(_int, 1, True, "An integer >= 1.")
seed = _bounded(_int, 0, True, "A random seed: NumPy's generators take integers >= 0 only.",
                "a seed must be >= 0 (NumPy's generators take none below 0), got {text}")
positive_float = _bounded(_finite, 0, False, "A finite number > 0 (a learning rate).")
non_negative_float = _bounded(_finite, 0, True, "A finite number >= 0 (momentum, weight decay).")


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
