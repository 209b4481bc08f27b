"""The data ``dlgpu train`` learns: scikit-learn's bundled 8x8 digits, and Figure 1's two classes of points.

1,797 grey-scale images of the digits 0-9, 8x8 pixels of 17 levels (0-16),
shipped inside scikit-learn, so nothing is downloaded.  scikit-learn is an
optional dependency (the ``[examples]`` extra); without it ``load_digits``
says how to install it.

>>> from dlgpu.train.data import load_digits
>>> x_train, y_train, x_test, y_test = load_digits()
>>> x_train.shape, x_train.dtype.name, y_train.dtype.name, x_test.shape
((1437, 1, 8, 8), 'float32', 'int64', (360, 1, 8, 8))
>>> float(x_train.min()), float(x_train.max())
(0.0, 1.0)
"""

from __future__ import annotations

import numbers

import numpy as np

from dlgpu.errors import ArgumentError, BackendUnavailableError, install_hint

__all__ = ["DIGITS_CLASSES", "figure1_curves", "load", "load_digits"]

DIGITS_CLASSES = 10
_DIGITS_LEVELS = 16.0  # pixel values run 0..16


def _sklearn():
    """scikit-learn's load_digits and train_test_split, or a clear error naming the extra to install."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise BackendUnavailableError(
            "load_digits: the digits data set comes with scikit-learn, which is not installed; "
            + install_hint("examples")
        ) from exc
    return sklearn_load_digits, train_test_split


def load_digits(*, test_fraction: float = 0.2, seed: int = 0):
    """(x_train, y_train, x_test, y_test) from scikit-learn's 8x8 digits.

    Images are float32 NCHW (N, 1, 8, 8) scaled to [0, 1]; labels int64 in
    [0, 10).  The split is scikit-learn's stratified one (each class split in
    the same proportion) and fixed by ``seed``: the same seed gives the same
    split on every machine.  With the default fraction, 1,437 training and 360
    test images (scikit-learn rounds the test set up).
    """
    op = "load_digits"
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) or not 0 < test_fraction < 1:
        raise ArgumentError(f"{op}: test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentError(f"{op}: seed must be a non-negative int, got {seed!r}")
    sklearn_load_digits, train_test_split = _sklearn()
    digits = sklearn_load_digits()
    images = (np.asarray(digits.images, dtype=np.float64) / _DIGITS_LEVELS).astype(np.float32)
    images = images.reshape(-1, 1, 8, 8)
    labels = np.asarray(digits.target, dtype=np.int64)
    # scikit-learn's stratified split (each class split in the same proportion), indices kept ascending
    train, test = (np.sort(part) for part in train_test_split(
        np.arange(len(labels)), test_size=float(test_fraction), stratify=labels, random_state=seed))
    return (
        np.ascontiguousarray(images[train]),
        labels[train],
        np.ascontiguousarray(images[test]),
        labels[test],
    )


def figure1_curves(*, n_train: int = 160, n_test: int = 40, seed: int = 0):
    """(x_train, y_train, x_test, y_test): two classes of points in the plane, as in the review's Figure 1.

    Class 0 lies on the parabola x2 = x1^2 - 0.5 and class 1 on the same
    parabola 0.5 higher, for x1 drawn uniformly from [-1, 1]; the classes
    alternate, so each set holds both equally.  No straight line separates
    them (class 1's point (0, 0) lies inside the triangle of class 0's
    (0, -0.5), (-1, 0.5) and (1, 0.5)), but a net with two hidden units can:
    its hidden layer bends the plane until one line does.  Points are float32
    (N, 2); labels int64 in {0, 1}.  The test points are drawn apart from the
    training points, from the same ``seed``.
    """
    op = "figure1_curves"
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
            raise ArgumentError(f"{op}: {name} must be an int >= 2, got {value!r}")
    rng = np.random.default_rng(seed)

    def points(n: int):
        x1 = rng.uniform(-1.0, 1.0, size=n)
        labels = np.arange(n, dtype=np.int64) % 2
        x2 = x1**2 - 0.5 + 0.5 * labels
        return np.stack([x1, x2], axis=1).astype(np.float32), labels

    return (*points(n_train), *points(n_test))


def load(name: str, *, seed: int = 0):
    """The data set ``name`` of :data:`dlgpu.train.models.DATA`: "digits" or "figure1"."""
    if name == "digits":
        return load_digits(seed=seed)
    if name == "figure1":
        return figure1_curves(seed=seed)
    raise ArgumentError(f"load: data set must be 'digits' or 'figure1', got {name!r}")
