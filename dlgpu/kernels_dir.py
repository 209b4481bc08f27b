"""Where the CUDA sources live, and one hash that names exactly this set of them.

In a wheel the sources are package data under ``dlgpu/kernels``; in a source
checkout (editable install, or PYTHONPATH) they are the repository's
top-level ``kernels/`` folder.  Everything that reads a .cu file finds it
through :func:`kernels_dir`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_KERNEL_SUFFIXES = (".cu", ".cuh")


def kernels_dir() -> Path:
    """The folder holding the kernel sources, installed or in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if candidate.is_dir() and any(candidate.glob("*.cu*")):
            return candidate
    raise FileNotFoundError(
        f"dlgpu: no kernel sources found in {here / 'kernels'} or {here.parent / 'kernels'}; "
        "the installation is incomplete"
    )


def kernel_sources() -> list[Path]:
    """Every .cu and .cuh file, sorted by name."""
    return sorted(p for p in kernels_dir().iterdir() if p.suffix in _KERNEL_SUFFIXES)


def kernels_sha256() -> str:
    """SHA-256 over the names and bytes of every kernel source, in name order.

    GPU run records carry this value: a record whose hash equals the current
    one was produced by exactly these kernels.
    """
    digest = hashlib.sha256()
    for path in kernel_sources():
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
