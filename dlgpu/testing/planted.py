"""Planted bugs for the wgmma families' tests: copies of a kernel's code, each with one bug, in one build.

The tests of kernels/gemm_wgmma.cu and kernels/conv2d_wgmma.cu build one module holding a copy of the kernel's
code per bug, each in a namespace of its own.  The ring's steps (StageRing) live in kernels/wgmma_tile.cuh, which
the module includes once, unchanged; so each namespace also gets its own copy of the ring's section, which
shadows the header's, and a bug may be planted in either copy.
"""

from __future__ import annotations

from pathlib import Path

RING_START = "// ---------------------------------------------------------------- the ring\n"
SECTION_MARK = "// ----------------------------------------------------------------"


def ring_section(kernels_dir: Path) -> str:
    """kernels/wgmma_tile.cuh's section on the ring, from its marker to the next section's."""
    text = (Path(kernels_dir) / "wgmma_tile.cuh").read_text()
    assert text.count(RING_START) == 1, f"no ring section in {kernels_dir}/wgmma_tile.cuh"
    section = text[text.index(RING_START):]
    return section[:section.index(SECTION_MARK, len(RING_START))]


def plant(pieces: list[str], text: str, replacement: str) -> list[str]:
    """``pieces`` with ``text`` replaced; it must occur exactly once in all of them together."""
    assert sum(p.count(text) for p in pieces) == 1, f"planted bug: {text!r} is not in the kernel's code exactly once"
    return [p.replace(text, replacement) for p in pieces]
