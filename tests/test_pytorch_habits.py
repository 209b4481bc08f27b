"""What a PyTorch user tries first: empty batches, leading dimensions, positional arguments, odd inputs.

Each habit is checked on the public ops with NumPy arrays (the CPU backend);
the empty-batch calls must also reach no backend function at all, since there
is nothing to launch.  Inputs that are not plain native arrays of a supported
dtype must be refused with a DlgpuError that says what to do, never an error
from inside numba or NumPy.
"""

from __future__ import annotations

import numpy as np
import numpy.ma as ma
import pytest

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.backend import OPS
from dlgpu.errors import DlgpuError, DtypeError, ShapeError
from dlgpu.testing import assert_close, random_array

# ---------------------------------------------------------------------------
# an empty batch (N = 0): empty results, or zeros where a result sums over the batch, and no launch
# ---------------------------------------------------------------------------


def _empty_calls(rng):
    """op -> (call, expected shapes, which results are zero-filled sums) for every op of the table."""
    f = np.float32
    x0, w = np.zeros((0, 3, 8, 8), f), random_array(rng, (4, 3, 3, 3))
    lin_x, lin_w = np.zeros((0, 5, 7), f), random_array(rng, (2, 7))
    logits, labels = np.zeros((0, 10), f), np.zeros(0, np.int64)
    pooled, argmax = np.zeros((0, 3, 4, 4), f), np.zeros((0, 3, 4, 4), np.int32)
    return {
        "matmul": (lambda: F.matmul(np.zeros((0, 4), f), random_array(rng, (4, 3))), [(0, 3)]),
        "matmul_backward": (lambda: F.matmul_backward(np.zeros((0, 3), f), np.zeros((0, 4), f),
                                                      random_array(rng, (4, 3))), [(0, 4), (4, 3)]),
        "linear": (lambda: F.linear(lin_x, lin_w, random_array(rng, (2,))), [(0, 5, 2)]),
        "linear_backward": (lambda: F.linear_backward(np.zeros((0, 5, 2), f), lin_x, lin_w), [(0, 5, 7), (2, 7), (2,)]),
        "conv2d": (lambda: F.conv2d(x0, w, None, 1, 1), [(0, 4, 8, 8)]),
        "conv2d_backward": (lambda: F.conv2d_backward(np.zeros((0, 4, 8, 8), f), x0, w, padding=1),
                            [(0, 3, 8, 8), (4, 3, 3, 3), (4,)]),
        "relu": (lambda: F.relu(np.zeros((0, 7), f)), [(0, 7)]),
        "tanh": (lambda: F.tanh(np.zeros((0, 7), f)), [(0, 7)]),
        "sigmoid": (lambda: F.sigmoid(np.zeros((0, 7), f)), [(0, 7)]),
        "relu_backward": (lambda: F.relu_backward(np.zeros((0, 7), f), np.zeros((0, 7), f)), [(0, 7)]),
        "tanh_backward": (lambda: F.tanh_backward(np.zeros((0, 7), f), np.zeros((0, 7), f)), [(0, 7)]),
        "sigmoid_backward": (lambda: F.sigmoid_backward(np.zeros((0, 7), f), np.zeros((0, 7), f)), [(0, 7)]),
        "max_pool2d": (lambda: F.max_pool2d(x0, 2), [(0, 3, 4, 4), (0, 3, 4, 4)]),
        "max_pool2d_backward": (lambda: F.max_pool2d_backward(pooled, argmax, (0, 3, 8, 8), 2), [(0, 3, 8, 8)]),
        "softmax_cross_entropy": (lambda: F.softmax_cross_entropy(logits, labels), [(), (0, 10)]),
        "softmax_cross_entropy_backward": (lambda: F.softmax_cross_entropy_backward(logits, labels), [(0, 10)]),
        "mse_loss": (lambda: F.mse_loss(np.zeros((0, 1), f), np.zeros((0, 1), f)), [()]),
        "mse_loss_backward": (lambda: F.mse_loss_backward(np.zeros((0, 1), f), np.zeros((0, 1), f)), [(0, 1)]),
        "sgd_step": (lambda: F.sgd_step(np.zeros(0, f), np.zeros(0, f), np.zeros(0, f), lr=0.1, momentum=0.9),
                     None),
    }


def test_every_op_is_covered_by_the_empty_batch_test(rng):
    assert sorted(_empty_calls(rng)) == sorted(OPS)


@pytest.mark.parametrize("op", OPS)
def test_an_empty_batch_gives_empty_results_without_a_launch(rng, launches, op):
    call, shapes = _empty_calls(rng)[op]
    result = call()
    assert launches == [], f"{op} reached {launches}"
    if shapes is None:  # sgd_step updates in place and returns nothing
        assert result is None
        return
    results = result if isinstance(result, tuple) else (result,)
    assert [r.shape for r in results] == shapes
    for r in results:
        assert isinstance(r, np.ndarray) and r.dtype in (np.float32, np.int32)
        if r.shape == ():  # the mean loss over no examples: NaN (test below)
            continue
        if r.size:  # a gradient summed over no examples (grad_w, grad_b, grad_b of matmul's b) is zero
            np.testing.assert_array_equal(r, 0)


def test_the_mean_loss_of_an_empty_batch_is_nan_as_in_pytorch():
    torch = pytest.importorskip("torch")
    loss, _ = F.softmax_cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    expected = torch.nn.functional.cross_entropy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert np.isnan(loss) and bool(expected.isnan())


def test_a_product_over_an_empty_inner_dimension_is_zeros():
    out = np.full((3, 2), np.nan, np.float32)
    assert F.matmul(np.zeros((3, 0), np.float32), np.zeros((0, 2), np.float32), out=out) is out
    np.testing.assert_array_equal(out, 0)


# ---------------------------------------------------------------------------
# linear on inputs with leading dimensions (as torch.nn.functional.linear)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("lead", [(), (3,), (2, 3), (2, 1, 4)], ids=lambda s: "x".join(map(str, s)) or "1-D")
def test_linear_takes_leading_dimensions(rng, lead):
    x, w, b = random_array(rng, (*lead, 7)), random_array(rng, (5, 7)), random_array(rng, (5,))
    y = F.linear(x, w, b, activation="relu")
    rows = x.reshape(-1, 7)
    assert y.shape == (*lead, 5)
    assert_close(y.reshape(-1, 5), R.linear(rows, w, b, activation="relu"))
    out = np.empty((*lead, 5), np.float32)
    assert F.linear(x, w, b, activation="relu", out=out) is out
    np.testing.assert_array_equal(out, y)

    grad_y = random_array(rng, y.shape)
    grad_x, grad_w, grad_b = F.linear_backward(grad_y, x, w, y=y, activation="relu")
    ref = R.linear_backward(grad_y.reshape(-1, 5), rows, w, y=y.reshape(-1, 5), activation="relu")
    assert grad_x.shape == x.shape and grad_w.shape == w.shape and grad_b.shape == (5,)
    for got, expected in zip((grad_x.reshape(-1, 7), grad_w, grad_b), ref):
        assert_close(got, expected)


def test_linear_on_a_strided_input_with_leading_dimensions(rng):
    x = random_array(rng, (7, 3, 4)).transpose(1, 2, 0)  # (3, 4, 7), not contiguous
    w = random_array(rng, (2, 7))
    assert_close(F.linear(x, w).reshape(-1, 2), R.linear(np.ascontiguousarray(x).reshape(-1, 7), w))


# ---------------------------------------------------------------------------
# positional arguments where PyTorch takes them
# ---------------------------------------------------------------------------


def test_conv2d_and_max_pool2d_take_pytorchs_positional_arguments(rng):
    x, w, b = random_array(rng, (2, 4, 9, 8)), random_array(rng, (6, 2, 3, 3)), random_array(rng, (6,))
    # bias, stride, padding, dilation, groups: torch.nn.functional.conv2d's order
    np.testing.assert_array_equal(F.conv2d(x, w, b, 2, 1, 1, 2),
                                  F.conv2d(x, w, b, stride=2, padding=1, dilation=1, groups=2))
    # kernel_size, stride, padding: torch.nn.functional.max_pool2d's order
    for got, expected in zip(F.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, stride=2, padding=1)):
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# inputs that are not plain native arrays of a supported dtype
# ---------------------------------------------------------------------------

ODD_INPUTS = {
    "object": (lambda: np.ones((2, 4), object), "dtype object"),
    "structured": (lambda: np.zeros((2, 4), dtype=[("a", "f4")]), "a floating dtype is required"),
    "bool": (lambda: np.ones((2, 4), bool), "dtype bool"),
    "int": (lambda: np.ones((2, 4), np.int32), "convert with .astype(np.float32)"),
    "complex": (lambda: np.ones((2, 4), np.complex64), "dtype complex64"),
    "string": (lambda: np.full((2, 4), "a"), "a floating dtype is required"),
    "datetime": (lambda: np.zeros((2, 4), "datetime64[s]"), "a floating dtype is required"),
    "matrix": (lambda: np.asmatrix(np.ones((2, 4), np.float32)), "np.asarray(x)"),
    "masked": (lambda: ma.masked_array(np.ones((2, 4), np.float32), mask=np.eye(2, 4)), "x.filled(value)"),
    "numpy-scalar": (lambda: np.float32(1.0), "a NumPy scalar"),
    "list": (lambda: [[1.0] * 4] * 2, "np.asarray(x)"),
    "big-endian": (lambda: np.ones((2, 4), ">f4"), "byte order"),
}

# One op of each kind of argument checking: a product, an elementwise op, a reduction with labels,
# and one whose result needs the input's shape.
CONSUMERS = {
    "linear": lambda a: F.linear(a, np.ones((3, 4), np.float32)),
    "relu": lambda a: F.relu(a),
    "softmax_cross_entropy": lambda a: F.softmax_cross_entropy(a, np.zeros(2, np.int64)),
    "sgd_step": lambda a: F.sgd_step(np.ones((2, 4), np.float32), a, None, lr=0.1),
}


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's own
@pytest.mark.parametrize("op", CONSUMERS)
@pytest.mark.parametrize("kind", ODD_INPUTS)
def test_odd_inputs_get_a_dlgpu_error_that_says_what_to_do(launches, kind, op):
    make, hint = ODD_INPUTS[kind]
    with pytest.raises(DlgpuError) as info:
        CONSUMERS[op](make())
    message = str(info.value)
    assert message.startswith(f"{op}: ") and hint in message, message
    assert launches == []


def test_odd_index_arrays_get_a_dlgpu_error():
    logits = np.ones((2, 3), np.float32)
    with pytest.raises(DtypeError, match="labels has dtype >i8, not in the machine's byte order"):
        F.softmax_cross_entropy(logits, np.zeros(2, ">i8"))
    with pytest.raises(DtypeError, match="labels must be int32 or int64 class indices, got float32"):
        F.softmax_cross_entropy(logits, np.zeros(2, np.float32))
    with pytest.raises(DtypeError, match="labels is a masked array"):
        F.softmax_cross_entropy(logits, ma.masked_array(np.zeros(2, np.int64)))


def test_a_memory_mapped_array_is_a_plain_array(tmp_path, rng):
    data = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(3, 4))
    data[...] = random_array(rng, (3, 4))
    np.testing.assert_array_equal(F.relu(data), np.maximum(np.asarray(data), 0))


def test_results_too_large_for_memory_are_refused_before_allocating(launches):
    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ShapeError, match=r"conv2d: the result .* would take .* TiB, more than the .* of memory"):
        F.conv2d(x, np.ones((1, 1, 1, 1), np.float32), padding=2**22)
    assert launches == []
