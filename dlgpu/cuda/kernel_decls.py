"""What the kernel sources declare for the launchers: X-macro lists, enums and integer defines.

A tiled family lists its tile configurations once, in its .cu, as an X-macro
(``#define GEMM_SIMT_CONFIGS(X) X(128, 128, 256) X(128, 64, 128) ...``) that the
preprocessor expands into the family's named kernels; the GEMM layouts
(``GEMM_LAYOUTS``) and the tensor-core precisions (``enum class Precision`` in
ptx.cuh) are listed the same way.  The launchers' registries read those lists
here instead of writing them a second time.  Plain text parsing of the sources
that :func:`dlgpu.kernel_files.kernels_dir` finds, cached per file; comments are
ignored.
"""

from __future__ import annotations

import functools
import re

from dlgpu.kernel_files import kernels_dir

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_INTEGER_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(-?\d+)[ \t]*$", re.M)


@functools.lru_cache(maxsize=None)
def _source(name: str) -> str:
    """kernels/<name> without comments, continuation lines joined."""
    text = _COMMENT.sub(" ", (kernels_dir() / name).read_text(encoding="utf-8"))
    return text.replace("\\\n", " ")


def x_macro(name: str, macro: str) -> tuple[tuple[str, ...], ...]:
    """The entries of X-macro ``macro`` in kernels/<name>, each as its argument tokens.

    ``#define GEMM_TC_CONFIGS(X) X(128, 128, 256, 2, 4) X(64, 64, 128, 2, 2)`` gives
    ``(("128", "128", "256", "2", "4"), ("64", "64", "128", "2", "2"))``; a trailing
    ``__VA_ARGS__`` (the pass-through of ``#define GEMM_LAYOUTS(X, ...)``) is left out.
    """
    match = re.search(rf"^[ \t]*#[ \t]*define[ \t]+{macro}\((\w+)[^)]*\)(.*)$", _source(name), re.M)
    if match is None:
        raise LookupError(f"dlgpu: kernels/{name} defines no X-macro {macro}")
    parameter, body = match.groups()
    entries = []
    for arguments in re.findall(rf"\b{parameter}\(([^()]*)\)", body):
        tokens = tuple(" ".join(token.split()) for token in arguments.split(","))
        entries.append(tokens[:-1] if tokens[-1] == "__VA_ARGS__" else tokens)
    if not entries:
        raise LookupError(f"dlgpu: X-macro {macro} in kernels/{name} has no entries")
    return tuple(entries)


def enumerators(name: str, enum: str) -> tuple[str, ...]:
    """The enumerator names of ``enum [class] <enum> { ... }`` in kernels/<name>, in order."""
    match = re.search(rf"\benum\s+(?:class\s+)?{enum}\b[^{{;]*\{{([^}}]*)\}}", _source(name))
    if match is None:
        raise LookupError(f"dlgpu: kernels/{name} declares no enum {enum}")
    return tuple(item.split("=")[0].strip() for item in match.group(1).split(",") if item.strip())


def integer_defines(name: str) -> dict[str, int]:
    """Every ``#define NAME <integer>`` of kernels/<name>."""
    return {define: int(value) for define, value in _INTEGER_DEFINE.findall(_source(name))}
