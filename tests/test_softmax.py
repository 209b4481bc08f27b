"""The softmax stem (kernels/softmax.cu): softmax cross-entropy and its gradient.

Everything about it, executor by executor: the float64 reference by hand, for
huge logits and against finite differences; every check and bad input of dlgpu/cases/softmax.py
on the CPU backend, on the CPU harness and on a GPU; the CPU backend in float32
and float64 with both label dtypes; the kernels on the harness (every forward
variant, warp1 .. warp32 and a block per row, plain and sanitized); the kernels
on a GPU at odd shapes, logits of 1e4, NaN rows and labels out of range; bad
input; and properties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import strategies as st

import dlgpu
import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.cases import softmax as cases
from dlgpu.cases.case import STORAGE_DTYPES
from dlgpu.cuda import kernel_decls
from dlgpu.cuda import softmax as cuda_softmax
from dlgpu.errors import ArgumentError
from dlgpu.testing import assert_close, check_gradients, harness, random_array, same_bits, to_numpy
from dlgpu.testing.kernel_cases import KernelCase
from dlgpu.testing.properties import INVALID_OK, assert_same_specials, common, property_test, with_specials
from dlgpu.testing.suites import case_tests, kernel_tests

DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------------------
# the reference
# ---------------------------------------------------------------------------


def test_softmax_cross_entropy_by_hand():
    loss, probs = R.softmax_cross_entropy(np.array([[0.0, 0.0]]), np.array([0]))
    assert loss.shape == () and loss.dtype == np.float64
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-15)
    np.testing.assert_array_equal(probs, [[0.5, 0.5]])
    # Two rows: the mean of log(1 + e^-1) and of log(1 + e^2) for the unlikely label.
    loss, _ = R.softmax_cross_entropy(np.array([[1.0, 0.0], [0.0, -2.0]]), np.array([0, 1], dtype=np.int32))
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(2.0))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-14)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, -1e4], [1e4, -1e4], [-1e4, -1e4]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, probs = R.softmax_cross_entropy(logits, np.array([0, 1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(probs))
    # Row 0 costs 0, row 1 costs 2e4, row 2 (a tie) log 2.
    assert float(loss) == pytest.approx((0.0 + 2e4 + math.log(2.0)) / 3, rel=1e-14)
    np.testing.assert_array_equal(probs, [[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])


def test_softmax_cross_entropy_backward_matches_finite_differences(rng):
    logits = rng.standard_normal((5, 7)) * 3
    labels = rng.integers(0, 7, size=5)
    _, probs = R.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-15)
    grad = R.softmax_cross_entropy_backward(probs, labels)
    check_gradients(lambda: R.softmax_cross_entropy(logits, labels)[0], {"logits": logits}, {"logits": grad}, 1.0)


def test_softmax_cross_entropy_refuses_labels_out_of_range():
    with pytest.raises(ArgumentError, match="labels"):
        R.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))


# ---------------------------------------------------------------------------
# every check and bad input of dlgpu/cases/softmax.py
# ---------------------------------------------------------------------------


test_every_check_matches_the_reference, test_bad_input_is_refused_before_any_launch = case_tests(cases)


# ---------------------------------------------------------------------------
# the CPU backend
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_softmax_cross_entropy_on_the_cpu(rng, dtype, label_dtype):
    for rows, classes, scale in [(1, 1, 1.0), (7, 10, 1.0), (67, 13, 1e4), (3, 1000, 30.0)]:
        logits = random_array(rng, (rows, classes), dtype, scale=scale)
        labels = rng.integers(0, classes, rows).astype(label_dtype)
        loss, probs = F.softmax_cross_entropy(logits, labels)
        loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
        assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == dtype
        assert probs.dtype == dtype
        assert_close(loss, loss_ref, dtype=dtype, elementwise=True)
        assert_close(probs, probs_ref, dtype=dtype, elementwise=True)

        grad = F.softmax_cross_entropy_backward(probs, labels)
        assert grad.dtype == dtype
        assert_close(grad, R.softmax_cross_entropy_backward(probs, labels), dtype=dtype, elementwise=True)
        assert same_bits(F.softmax_cross_entropy(logits, labels)[0], loss)


def test_softmax_cross_entropy_loss_sums_in_float64():
    # 4096 rows of loss ln(2) + tiny: a float32 running sum would drift by ~1e-4 relative.
    rows = 1 << 12
    logits = np.zeros((rows, 2), dtype=np.float32)
    logits[:, 1] = np.float32(1e-3)
    labels = np.zeros(rows, dtype=np.int32)
    loss, _ = F.softmax_cross_entropy(logits, labels)
    loss_ref, _ = R.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-7, atol=0)


# ---------------------------------------------------------------------------
# the kernels on the CPU harness
# ---------------------------------------------------------------------------


# One class count per forward variant: warp1 .. warp32, then a block per row.
SOFTMAX_CLASSES = (5, 40, 100, 200, 300, 700, 1031)


def check_softmax_forward(label_dtype):
    def check(executor, rng):
        for classes in SOFTMAX_CLASSES:
            rows = 5
            logits = random_array(rng, (rows, classes), scale=3.0)
            labels = rng.integers(0, classes, rows).astype(label_dtype)
            loss, probs = cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor)
            expected_loss, expected_probs = R.softmax_cross_entropy(logits, labels)
            assert loss.shape == () and loss.dtype == np.float32
            assert_close(probs, expected_probs)
            assert_close(loss, expected_loss)
        if executor.mode != "plain":
            return  # the sanitizers have seen every kernel; stability is a numerics question
        logits = random_array(rng, (3, 33), scale=1e4)
        labels = np.array([0, 32, 7], label_dtype)
        loss, probs = cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor)
        expected_loss, expected_probs = R.softmax_cross_entropy(logits, labels)
        assert_close(probs, expected_probs)
        assert_close(loss, expected_loss)

    return check


def check_softmax_backward(executor, rng):
    shapes = ((1, 1), (9, 7), (13, 8), (3, 301)) if executor.mode == "plain" else ((9, 7), (13, 8))
    for label_dtype in (np.int32, np.int64):
        for rows, classes in shapes:  # 8 classes: the float4 path
            probs = R.softmax_cross_entropy(random_array(rng, (rows, classes)), np.zeros(rows, np.int64))[1]
            probs = probs.astype(np.float32)
            labels = rng.integers(0, classes, rows).astype(label_dtype)
            grad = cuda_softmax.softmax_cross_entropy_backward(probs, labels, executor=executor)
            assert_close(grad, R.softmax_cross_entropy_backward(probs, labels), elementwise=True)


def check_softmax_16bit(executor, rng):
    """bfloat16 and float16: probabilities and gradients in that dtype, the loss in float32.  Sanitized: a
    warp kernel, the block kernel and the vector backward; plain: every warp width and label type too."""
    classes_list = SOFTMAX_CLASSES if executor.mode == "plain" else (40, 1031)
    label_dtypes = (np.int32, np.int64) if executor.mode == "plain" else (np.int64,)
    for dtype in STORAGE_DTYPES:
        for label_dtype in label_dtypes:
            for classes in classes_list:
                logits = random_array(rng, (5, classes), dtype, scale=3.0)
                labels = rng.integers(0, classes, 5).astype(label_dtype)
                loss, probs = cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor)
                expected_loss, expected_probs = R.softmax_cross_entropy(logits, labels)
                assert loss.dtype == np.float32 and probs.dtype == dtype
                assert_close(probs, expected_probs)
                assert_close(loss, expected_loss, dtype=dtype)
            for rows, classes in ((9, 7), (13, 16)):  # 16 classes: two 8-half vectors per row
                probs = R.softmax_cross_entropy(random_array(rng, (rows, classes)), np.zeros(rows, np.int64))[1]
                probs = probs.astype(dtype)
                labels = rng.integers(0, classes, rows).astype(label_dtype)
                grad = cuda_softmax.softmax_cross_entropy_backward(probs, labels, executor=executor)
                assert grad.dtype == dtype
                assert_close(grad, R.softmax_cross_entropy_backward(probs, labels))


def check_softmax_mean(executor, rng):
    """The mean kernel alone, over more rows than the forward cases reach: two full batches of loads per
    thread (MEAN_BATCH x MEAN_BLOCK rows each), then a remainder of single loads.  A trend along the rows
    makes a load from the wrong row visible in the mean."""
    from dlgpu.cuda.launch import Launch

    batch = kernel_decls.integer_defines("softmax.cu")["MEAN_BATCH"]
    rows = 2 * batch * cuda_softmax.MEAN_BLOCK + 777
    row_loss = (rng.random(rows) + np.linspace(0.0, 50.0, rows) ** 2).astype(np.float32)
    loss = np.full(1, np.nan, np.float32)
    executor.launch(Launch("softmax", "softmax_xent_mean_f32", (1, 1, 1), (cuda_softmax.MEAN_BLOCK, 1, 1),
                           (row_loss, loss, np.int64(rows))))
    assert_close(loss, np.array([row_loss.astype(np.float64).mean()]), elementwise=True)


def softmax_kernels(suffix: str, label: str) -> tuple[str, ...]:
    """Every kernel of one storage and label type."""
    return (*(f"softmax_xent_forward_warp{v}_{suffix}_{label}" for v in cuda_softmax.WARP_VALUES),
            f"softmax_xent_forward_block_{suffix}_{label}", f"softmax_xent_backward_{suffix}_{label}")


KERNEL_CASES = (
    *(
        KernelCase(f"softmax_forward_{suffix}", "softmax",
                   (*(f"softmax_xent_forward_warp{v}_f32_{suffix}" for v in cuda_softmax.WARP_VALUES),
                    f"softmax_xent_forward_block_f32_{suffix}", "softmax_xent_mean_f32"),
                   check_softmax_forward(dtype))
        for suffix, dtype in (("i32", np.int32), ("i64", np.int64))
    ),
    KernelCase("softmax_backward", "softmax", ("softmax_xent_backward_f32_i32", "softmax_xent_backward_f32_i64"),
               check_softmax_backward),
    # The 16-bit instances are the float ones' templates: sanitized, one warp width, the block and the
    # backward kernel of each 16-bit type; every instance plain.
    KernelCase("softmax_16bit", "softmax",
               tuple(f"softmax_xent_{kernel}_{suffix}_i64" for suffix in ("bf16", "fp16")
                     for kernel in ("forward_warp2", "forward_block", "backward")),
               check_softmax_16bit),
    KernelCase("softmax_16bit_every_instance", "softmax",
               tuple(kernel for suffix in ("bf16", "fp16") for label in ("i32", "i64")
                     for kernel in softmax_kernels(suffix, label)),
               check_softmax_16bit, modes=("plain",)),
    # Index arithmetic of one thread's loads: ASan sees a read past the rows; the block sum is the cases' above.
    KernelCase("softmax_mean", "softmax", ("softmax_xent_mean_f32",), check_softmax_mean, modes=("plain", "asan")),
)


test_kernels_match_the_reference, test_every_kernel_has_harness_coverage = kernel_tests("softmax", KERNEL_CASES)


# ---------------------------------------------------------------------------
# the kernels on a GPU
# ---------------------------------------------------------------------------


SOFTMAX_SHAPES = [(1, 1), (1, 7), (3, 31), (5, 32), (7, 33), (64, 1000), (13, 1024), (5, 1025), (3, 4099),
                  (2, 10007), (65537, 10)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
@pytest.mark.parametrize("label_dtype", (np.int32, np.int64))
def test_softmax_cross_entropy_on_the_gpu(cp, rng, poison, shape, label_dtype):
    from dlgpu.cuda.softmax import softmax_cross_entropy, softmax_cross_entropy_backward

    logits = (rng.standard_normal(shape) * 4).astype(np.float32)
    labels = rng.integers(0, shape[1], shape[0]).astype(label_dtype)
    loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
    d_logits, d_labels = cp.asarray(logits), cp.asarray(labels)

    loss, probs = softmax_cross_entropy(d_logits, d_labels, executor=poison)
    assert loss.shape == () and loss.dtype == np.float32
    assert_close(loss, loss_ref)
    assert_close(probs, probs_ref)
    grad = softmax_cross_entropy_backward(probs, d_labels, executor=poison)
    assert_close(grad, R.softmax_cross_entropy_backward(cp.asnumpy(probs), labels))

    public_loss, public_probs = F.softmax_cross_entropy(d_logits, d_labels)
    assert_close(public_loss, loss_ref)
    assert_close(F.softmax_cross_entropy_backward(public_probs, d_labels),
                 R.softmax_cross_entropy_backward(cp.asnumpy(public_probs), labels))


@pytest.mark.gpu
@pytest.mark.parametrize("classes", (10, 1000, 5000))
def test_softmax_cross_entropy_is_stable_at_1e4(cp, rng, classes):
    logits = (rng.standard_normal((17, classes)) * 1e4).astype(np.float32)
    labels = rng.integers(0, classes, 17).astype(np.int32)
    loss, probs = F.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
    assert np.isfinite(float(loss))
    assert_close(loss, loss_ref)
    assert_close(probs, probs_ref)


@pytest.mark.gpu
@pytest.mark.parametrize("classes", (10, 5000))
def test_softmax_cross_entropy_nan_row(cp, rng, classes):
    logits = rng.standard_normal((4, classes)).astype(np.float32)
    logits[2, 3] = np.nan
    labels = np.zeros(4, dtype=np.int64)
    loss, probs = F.softmax_cross_entropy(cp.asarray(logits), cp.asarray(labels))
    loss_ref, probs_ref = R.softmax_cross_entropy(logits, labels)
    assert np.isnan(float(loss)) and np.isnan(float(loss_ref))
    np.testing.assert_array_equal(np.isnan(cp.asnumpy(probs)), np.isnan(probs_ref))


@pytest.mark.gpu
@pytest.mark.parametrize("classes", (10, 5000))
def test_softmax_kernels_guard_out_of_range_labels(cp, rng, poison, classes):
    """A bad label gives NaN for its row, never a wild read, and is reported in the device error flag."""
    from dlgpu.cuda.softmax import softmax_cross_entropy, softmax_cross_entropy_backward

    logits = cp.asarray(rng.standard_normal((4, classes)).astype(np.float32))
    labels = cp.asarray(np.array([0, classes, -1, 2**40], dtype=np.int64))
    loss, probs = softmax_cross_entropy(logits, labels, executor=poison)
    assert np.isnan(float(loss))
    assert np.isfinite(cp.asnumpy(probs)).all()
    with pytest.raises(ArgumentError, match=rf"^softmax_cross_entropy: label ({classes}|-1|{2**40}) is outside"):
        dlgpu.check_errors()
    grad = cp.asnumpy(softmax_cross_entropy_backward(probs, labels, executor=poison))
    assert np.isfinite(grad[0]).all() and np.isnan(grad[1:]).all()
    with pytest.raises(ArgumentError, match=r"^softmax_cross_entropy_backward: label"):
        dlgpu.check_errors()


@pytest.mark.gpu
@pytest.mark.usefixtures("host_compiler")  # the harness half needs a C++ compiler: a skip where none is
def test_harness_agrees_with_the_gpu_through_the_launchers():
    """The same launcher calls on the GPU and on the harness (same grids): outputs must agree."""
    def calls(executor):
        logits = executor.xp.asarray(random_array(np.random.default_rng(7), (37, 300)))
        labels = executor.xp.asarray(np.arange(37, dtype=np.int64) % 300)
        return cuda_softmax.softmax_cross_entropy(logits, labels, executor=executor)

    assert len(harness.cross_check(calls)) == 2


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------


@st.composite
def softmax_case(draw, backend):
    rng, dtype, _ = draw(common(backend))
    n, classes = draw(st.integers(1, 33)), draw(st.integers(1, 70))
    scale = draw(st.sampled_from([1.0, 30.0, 1e4]))
    logits = random_array(rng, (n, classes), dtype, scale=scale)
    label_dtype = draw(st.sampled_from([np.int32, np.int64]))
    labels = rng.integers(0, classes, size=n).astype(label_dtype)
    return dtype, logits, labels


@property_test()
def test_softmax_cross_entropy_matches_reference(backend, data):
    dtype, logits, labels = data.draw(softmax_case(backend))
    loss, probs = F.softmax_cross_entropy(backend.put(logits), backend.put(labels))
    ref_loss, ref_probs = R.softmax_cross_entropy(logits, labels)
    assert to_numpy(loss).shape == () and to_numpy(loss).dtype == dtype
    assert_close(loss, ref_loss, dtype=dtype)
    assert_close(probs, ref_probs, dtype=dtype)


@property_test()
def test_softmax_cross_entropy_backward_matches_reference(backend, data):
    dtype, logits, labels = data.draw(softmax_case(backend))
    _, probs = R.softmax_cross_entropy(logits, labels)
    probs = probs.astype(dtype)
    got = F.softmax_cross_entropy_backward(backend.put(probs), backend.put(labels))
    assert_close(got, R.softmax_cross_entropy_backward(probs, labels), dtype=dtype, elementwise=True)


@INVALID_OK
@property_test()
def test_softmax_cross_entropy_specials_match_reference(backend, data):
    dtype, logits, labels = data.draw(softmax_case(backend))
    logits = with_specials(np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))), logits.shape, dtype,
                           data.draw(st.integers(1, 3)))
    loss, probs = F.softmax_cross_entropy(backend.put(logits), backend.put(labels))
    ref_loss, ref_probs = R.softmax_cross_entropy(logits, labels)
    assert_same_specials(loss, ref_loss, dtype=dtype)
    assert_same_specials(probs, ref_probs, dtype=dtype)
