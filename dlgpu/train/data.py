"""The handwritten digits that ``dlgpu train`` learns: scikit-learn's bundled 8x8 set.

1,797 grey-scale images of the digits 0-9, 8x8 pixels of 17 levels (0-16),
shipped inside scikit-learn, so nothing is downloaded.  scikit-learn is an
optional dependency (the ``[examples]`` extra); without it ``load_digits``
says how to install it.

>>> from dlgpu.train.data import load_digits
>>> x_train, y_train, x_test, y_test = load_digits()
>>> x_train.shape, x_train.dtype.name, y_train.dtype.name, x_test.shape
((1438, 1, 8, 8), 'float32', 'int64', (359, 1, 8, 8))
>>> float(x_train.min()), float(x_train.max())
(0.0, 1.0)
"""

from __future__ import annotations

import numbers

import numpy as np

from dlgpu.errors import ArgumentError, BackendUnavailableError

__all__ = ["DIGITS_CLASSES", "load_digits", "stratified_split"]

DIGITS_CLASSES = 10
_DIGITS_LEVELS = 16.0  # pixel values run 0..16


def _sklearn_digits():
    """scikit-learn's load_digits function, or a clear error naming the extra to install."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        raise BackendUnavailableError(
            "load_digits: the digits data set comes with scikit-learn, which is not installed; "
            "pip install 'dlgpu[examples]' (or pip install scikit-learn)"
        ) from exc
    return sklearn_load_digits


def stratified_split(labels: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """(train_indices, test_indices): each class split in the same proportion, indices ascending.

    Each class's indices are permuted by ``rng`` and the first
    round(test_fraction * count) go to the test set, so every class is
    represented in both sets as it is in the whole.
    """
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(*, test_fraction: float = 0.2, seed: int = 0):
    """(x_train, y_train, x_test, y_test) from scikit-learn's 8x8 digits.

    Images are float32 NCHW (N, 1, 8, 8) scaled to [0, 1]; labels int64 in
    [0, 10).  The split is stratified by class and fixed by ``seed``: the same
    seed gives the same split on every machine.  With the default fraction,
    1,438 training and 359 test images.
    """
    op = "load_digits"
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise ArgumentError(f"{op}: test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentError(f"{op}: seed must be a non-negative int, got {seed!r}")
    digits = _sklearn_digits()()
    images = (np.asarray(digits.images, dtype=np.float64) / _DIGITS_LEVELS).astype(np.float32)
    images = images.reshape(-1, 1, 8, 8)
    labels = np.asarray(digits.target, dtype=np.int64)
    train, test = stratified_split(labels, float(test_fraction), np.random.default_rng(seed))
    return (
        np.ascontiguousarray(images[train]),
        labels[train],
        np.ascontiguousarray(images[test]),
        labels[test],
    )
