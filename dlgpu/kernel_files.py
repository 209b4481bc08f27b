"""Where the CUDA sources live, and one hash that names exactly this set of them.

In a wheel the sources are package data under ``dlgpu/kernels``; in a source
checkout (editable install, or PYTHONPATH) they are the repository's
top-level ``kernels/`` folder.  Everything that reads a .cu file finds it
through :func:`kernels_dir`, and every tool that needs a source's headers
(NVRTC's cache key, the CPU harness's build key) asks :func:`included_headers`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Sequence

_KERNEL_SUFFIXES = (".cu", ".cuh")
_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


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


def included_headers(source: Path, include_dirs: Sequence[Path]) -> dict[str, Path | None]:
    """Every header ``source`` reaches through ``#include "..."``, recursively.

    Each name is looked up next to the including file, then in ``include_dirs``
    in order (NVRTC's ``--include-path``, g++'s ``-I``).  Found headers are keyed
    by their resolved path; a name found nowhere is kept as it was written, with
    None (the compiler will say so).  Angle-bracket includes are the toolkit's
    and are not followed.
    """
    found: dict[str, Path | None] = {}
    pending = [Path(source)]
    while pending:
        current = pending.pop()
        for name in _INCLUDE.findall(current.read_text(encoding="utf-8", errors="replace")):
            for folder in (current.parent, *include_dirs):
                candidate = (Path(folder) / name).resolve()
                if candidate.is_file():
                    break
            else:
                found.setdefault(name, None)
                continue
            if str(candidate) not in found:
                found[str(candidate)] = candidate
                pending.append(candidate)
    return found


def families() -> list[str]:
    """Every kernel family: the stems of the .cu files."""
    return [path.stem for path in kernel_sources() if path.suffix == ".cu"]


def stem_of(family: str) -> str:
    """The stem a family belongs to: the shortest family name it extends (``gemm_tc`` -> ``gemm``).

    A stem names the family's launcher (dlgpu/cuda/<stem>.py), its cases and its
    tests (tests/test_<stem>.py); a tensor-core or other variant file of a stem
    (kernels/<stem>_<what>.cu) belongs to it.
    """
    owners = [other for other in families() if family == other or family.startswith(other + "_")]
    return min(owners, key=len) if owners else family


def stem_families(stem: str) -> list[str]:
    """The families that belong to ``stem`` (the stem's own first)."""
    return sorted((f for f in families() if stem_of(f) == stem), key=lambda f: (f != stem, f))
