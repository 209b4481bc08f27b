"""Sliding-window arithmetic, shared by convolution and pooling on every backend.

A window of ``kernel`` taps, ``dilation`` apart, slides over an axis of
``size`` elements padded by ``padding`` on both sides, ``stride`` at a time.
It spans ``dilation * (kernel - 1) + 1`` elements and fits
``(size + 2 * padding - span) // stride + 1`` times (PyTorch's formula; zero or
less when the window is wider than the padded axis).  Written once here: the
public ops' checks, the reference, both backends and the benchmarks all read it.
"""

from __future__ import annotations


def span(kernel: int, dilation: int = 1) -> int:
    """Elements a window of ``kernel`` taps, ``dilation`` apart, covers."""
    return dilation * (kernel - 1) + 1


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Positions of the window along one axis (< 1 when it does not fit the padded axis)."""
    return (size + 2 * padding - span(kernel, dilation)) // stride + 1
