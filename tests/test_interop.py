"""Strided inputs, foreign arrays and streams.

Non-contiguous inputs (the policy in dlgpu.functional's docstring): every op
gives the same answer on a transposed, sliced, reversed or broadcast view as
on a contiguous copy, never reads the view as if it were contiguous, and
never writes into it; matmul takes a transposed view without a copy.

Foreign arrays: a DLPack producer on the CPU is wrapped with np.from_dlpack
(no copy, strides kept; a torch or JAX bfloat16 array through its int16 bits), and
``out=`` of a foreign framework is written in
place and handed back.  Streams: how ``stream=`` arguments are read; the GPU
cases (two streams, ordering after a producer) are marked gpu.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlgpu.cpu
import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu import interop
from dlgpu.errors import ArgumentError, DeviceError
from dlgpu.testing import assert_close, random_array


def views(rng, shape, dtype=np.float32):
    """(name, view) pairs: each view has ``shape`` but not a C-contiguous layout."""
    n = len(shape)
    base_t = random_array(rng, shape[::-1], dtype)
    wide = random_array(rng, (*shape[:-1], 2 * shape[-1] + 1), dtype)
    result = [
        ("transposed", base_t.transpose(tuple(range(n))[::-1])),
        ("sliced", wide[..., 1::2]),
        ("reversed", random_array(rng, shape, dtype)[..., ::-1]),
    ]
    if n == 4:  # channels-last: NHWC memory seen as NCHW
        nhwc = random_array(rng, (shape[0], shape[2], shape[3], shape[1]), dtype)
        result.append(("channels-last", nhwc.transpose(0, 3, 1, 2)))
    raw = np.empty(int(np.prod(shape)) * np.dtype(dtype).itemsize + 1, np.uint8)
    unaligned = raw[1:].view(dtype).reshape(shape)
    unaligned[...] = random_array(rng, shape, dtype)
    result.append(("unaligned", unaligned))
    return [(name, v) for name, v in result if not v.flags.c_contiguous or not v.flags.aligned]


def run_both(call, *arrays):
    """call(*views) == call(*contiguous copies), and the views are left untouched."""
    before = [None if a is None else a.copy() for a in arrays]
    got = call(*arrays)
    want = call(*[None if a is None else np.ascontiguousarray(a) for a in arrays])
    for a, b in zip(arrays, before):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert g.flags.c_contiguous
        np.testing.assert_array_equal(g, w)
    return got


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_and_its_backward_on_views(rng, dtype):
    for name_a, a in views(rng, (13, 7), dtype):
        for name_b, b in views(rng, (7, 5), dtype):
            (c,) = run_both(lambda a, b: F.matmul(a, b), a, b)
            assert_close(c, R.matmul(a, b), dtype=dtype)
            grad_c = random_array(rng, (13, 5), dtype)
            grads = run_both(lambda g, a, b: F.matmul_backward(g, a, b), grad_c, a, b)
            for g, w in zip(grads, R.matmul_backward(grad_c, a, b)):
                assert_close(g, w, dtype=dtype)


def test_matmul_takes_a_transposed_view_without_a_copy(rng, monkeypatch):
    seen = []
    real = dlgpu.cpu.BACKEND.matmul

    def spy(a, b, transpose_a, transpose_b, precision, out):
        seen.append((a, b, transpose_a, transpose_b))
        return real(a, b, transpose_a, transpose_b, precision, out)

    monkeypatch.setattr(dlgpu.cpu.BACKEND, "matmul", spy)
    a, b = random_array(rng, (9, 4)), random_array(rng, (6, 9))
    c = F.matmul(a.T, b.T, transpose_b=False)
    (a_seen, b_seen, ta, tb) = seen[0]
    assert a_seen.flags.c_contiguous and np.shares_memory(a_seen, a) and ta is True
    assert b_seen.flags.c_contiguous and np.shares_memory(b_seen, b) and tb is True
    assert_close(c, R.matmul(a.T, b.T), dtype=np.float32)
    # transpose flag and view together: op(a.T) with transpose_a=True is a itself
    seen.clear()
    b2 = random_array(rng, (4, 3))
    c2 = F.matmul(a.T, b2, transpose_a=True)
    assert seen[0][0] is a or np.shares_memory(seen[0][0], a)
    assert seen[0][2] is False and seen[0][3] is False
    assert_close(c2, R.matmul(a, b2), dtype=np.float32)


def test_a_sliced_matmul_operand_is_copied_not_misread(rng, monkeypatch):
    seen = []
    real = dlgpu.cpu.BACKEND.matmul
    monkeypatch.setattr(dlgpu.cpu.BACKEND, "matmul", lambda a, *rest: seen.append(a) or real(a, *rest))
    wide = random_array(rng, (8, 10))
    F.matmul(wide[:, ::2], random_array(rng, (5, 3)))
    assert seen[0].flags.c_contiguous and not np.shares_memory(seen[0], wide)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_linear_and_its_backward_on_views(rng, activation):
    for name, x in views(rng, (6, 9)):
        for wname, w in views(rng, (4, 9))[:2]:
            b = random_array(rng, (8,))[::2]
            (y,) = run_both(lambda x, w, b: F.linear(x, w, b, activation=activation), x, w, b)
            assert_close(y, R.linear(x, w, b, activation=activation), dtype=np.float32)
            grad_y = random_array(rng, (6, 4)).T.copy().T  # an F-ordered gradient
            grads = run_both(lambda g, x, w, y: F.linear_backward(g, x, w, y=y, activation=activation),
                             grad_y, x, w, y)
            for g, ref in zip(grads, R.linear_backward(grad_y, x, w, y=y, activation=activation)):
                assert_close(g, ref, dtype=np.float32)


def test_conv2d_and_its_backward_on_views(rng):
    hyper = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    for name, x in views(rng, (2, 3, 9, 8)):
        weights = views(rng, (4, 3, 3, 2))
        for wname, w in weights[::2]:
            (y,) = run_both(lambda x, w: F.conv2d(x, w, **hyper), x, w)
            assert_close(y, R.conv2d(x, w, **hyper), dtype=np.float32)
            grad_y = random_array(rng, y.shape[::-1]).T  # fully reversed strides
            grads = run_both(lambda g, x, w: F.conv2d_backward(g, x, w, **hyper), grad_y, x, w)
            for g, ref in zip(grads, R.conv2d_backward(grad_y, x, w, **hyper)):
                assert_close(g, ref, dtype=np.float32)


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activations_on_views_compute_in_their_own_copy(rng, name):
    for vname, x in views(rng, (3, 5, 4)):
        (y,) = run_both(getattr(F, name), x)
        assert not np.shares_memory(y, x)
        assert_close(y, getattr(R, name)(x), dtype=np.float32, elementwise=True)
        out = np.full(x.shape, np.nan, np.float32)
        assert getattr(F, name)(x, out=out) is out
        assert_close(out, getattr(R, name)(x), dtype=np.float32, elementwise=True)
        y_fwd = getattr(R, name)(x).astype(np.float32)
        for gname, grad_y in views(rng, (3, 5, 4))[:2]:
            (g,) = run_both(getattr(F, f"{name}_backward"), grad_y, y_fwd.T.copy().T)
            assert_close(g, getattr(R, f"{name}_backward")(grad_y, y_fwd), dtype=np.float32, elementwise=True)


def test_max_pool2d_and_its_backward_on_views(rng):
    for name, x in views(rng, (2, 3, 9, 10)):
        y, argmax = run_both(lambda x: F.max_pool2d(x, 3, stride=2, padding=1), x)
        ref_y, ref_argmax = R.max_pool2d(x, 3, stride=2, padding=1)
        np.testing.assert_array_equal(y, ref_y.astype(np.float32))
        np.testing.assert_array_equal(argmax, ref_argmax)
        grad_y = random_array(rng, y.shape[::-1]).T
        argmax_view = np.asfortranarray(argmax)
        (g,) = run_both(lambda g, a: F.max_pool2d_backward(g, a, x.shape, 3, 2, 1), grad_y, argmax_view)
        assert_close(g, R.max_pool2d_backward(grad_y, argmax, x.shape, 3, 2, 1), dtype=np.float32)


def test_softmax_cross_entropy_on_views(rng):
    labels_wide = rng.integers(0, 11, size=14).astype(np.int32)
    labels = labels_wide[::2]
    for name, logits in views(rng, (7, 11)):
        loss, probs = run_both(F.softmax_cross_entropy, logits, labels)
        ref_loss, ref_probs = R.softmax_cross_entropy(logits, labels)
        assert_close(loss, ref_loss, dtype=np.float32)
        assert_close(probs, ref_probs, dtype=np.float32)
        (g,) = run_both(F.softmax_cross_entropy_backward, np.asfortranarray(probs), labels)
        assert_close(g, R.softmax_cross_entropy_backward(probs, labels), dtype=np.float32, elementwise=True)


def test_sgd_step_copies_a_strided_grad_but_updates_param_in_place(rng):
    for name, grad in views(rng, (4, 6)):
        param, velocity = random_array(rng, (4, 6)), random_array(rng, (4, 6))
        ref_param, ref_velocity = param.copy(), velocity.copy()
        R.sgd_step(ref_param, grad, ref_velocity, lr=0.1, momentum=0.9, weight_decay=0.01)
        grad_before = grad.copy()
        F.sgd_step(param, grad, velocity, lr=0.1, momentum=0.9, weight_decay=0.01)
        np.testing.assert_array_equal(grad, grad_before)
        assert_close(param, ref_param, dtype=np.float32, elementwise=True)
        assert_close(velocity, ref_velocity, dtype=np.float32, elementwise=True)


def test_broadcast_views_with_zero_strides_are_materialized(rng):
    row = random_array(rng, (1, 7))
    x = np.broadcast_to(row, (5, 7))
    assert x.strides[0] == 0
    y = F.relu(x)
    np.testing.assert_array_equal(y, np.maximum(np.repeat(row, 5, axis=0), 0))
    c = F.matmul(x, random_array(rng, (7, 2)))
    np.testing.assert_allclose(c, np.broadcast_to(c[0], c.shape), rtol=1e-5, atol=1e-8)  # every row the same


def test_size_one_dimensions_may_carry_any_stride(rng):
    base = random_array(rng, (3, 4))
    odd = np.lib.stride_tricks.as_strided(base, (3, 1, 4), (16, 12345 * 4, 4))  # a DLPack producer may do this
    assert odd.flags.c_contiguous  # NumPy (like the kernels) ignores the stride of a size-1 dimension
    np.testing.assert_array_equal(F.relu(odd), np.maximum(base, 0).reshape(3, 1, 4))
    via_dlpack = interop.to_native("t", "x", HostTensor(odd))
    want = np.tanh(base.astype(np.float64)).reshape(3, 1, 4)
    assert_close(F.tanh(via_dlpack), want, dtype=np.float32, elementwise=True)


# ---------------------------------------------------------------------------
# foreign arrays on the CPU (DLPack)
# ---------------------------------------------------------------------------


class HostTensor:
    """A minimal foreign DLPack producer on the CPU (what a torch CPU tensor offers)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_host_dlpack_producers_are_wrapped_without_a_copy(rng):
    a = random_array(rng, (7, 5))
    wrapped = interop.to_native("t", "a", HostTensor(a))
    assert isinstance(wrapped, np.ndarray) and np.shares_memory(wrapped, a)
    t = interop.to_native("t", "a", HostTensor(a.T))  # strides are kept, not flattened
    assert t.shape == (5, 7) and t.strides == a.T.strides
    c = F.matmul(HostTensor(a.T), HostTensor(a))
    assert isinstance(c, np.ndarray)
    assert_close(c, R.matmul(a.T, a), dtype=np.float32)


def test_foreign_out_is_written_in_place_and_handed_back(rng):
    x = random_array(rng, (4, 6))
    target = HostTensor(np.full((4, 6), np.nan, np.float32))
    result = F.relu(HostTensor(x), out=target)
    assert result is target
    np.testing.assert_array_equal(target.array, np.maximum(x, 0))
    param = HostTensor(random_array(rng, (3,)))
    before = param.array.copy()
    F.sgd_step(param, HostTensor(np.ones(3, np.float32)), None, lr=0.5)
    np.testing.assert_allclose(param.array, before - 0.5)


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_16bit_tensors_are_shared_and_answered_in_their_dtype(rng, dtype_name):
    """A torch bfloat16 tensor (which DLPack alone cannot bring into NumPy) and a float16 one go in
    without a copy, strided or not; results come back as torch tensors of the same dtype; a 16-bit
    param is updated in place."""
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    storage = np.dtype(interop.BFLOAT16 if dtype == torch.bfloat16 else np.float16)
    a = torch.from_numpy(random_array(rng, (6, 5))).to(dtype)
    b = torch.from_numpy(random_array(rng, (6, 4))).to(dtype)
    native = interop.to_native("t", "a", a)
    assert native.dtype == storage and np.shares_memory(native, a.view(torch.int16).numpy())
    c = F.matmul(a.T, b)  # a strided view
    assert isinstance(c, torch.Tensor) and c.dtype == dtype and c.shape == (5, 4)
    wide = a.float().numpy().astype(np.float64), b.float().numpy().astype(np.float64)
    assert_close(c.float().numpy(), wide[0].T @ wide[1], dtype=storage)
    out = torch.full((6, 5), float("nan"), dtype=dtype)
    assert F.relu(a, out=out) is out
    assert torch.equal(out, torch.relu(a))
    param = a.clone()
    F.sgd_step(param, torch.ones_like(param), None, lr=0.5)
    assert torch.equal(param, (a.float() - 0.5).to(dtype))


def test_jax_bfloat16_arrays_go_through_their_bits_and_come_back_as_jax_bfloat16(rng):
    """A JAX bfloat16 array (refused by NumPy's DLPack import) crosses as int16 bits into an op on the CPU
    backend; results come back as JAX bfloat16 arrays, equal to the reference of the stored values."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    a = jnp.asarray(random_array(rng, (6, 5))).astype(jnp.bfloat16)
    b = jnp.asarray(random_array(rng, (5, 4))).astype(jnp.bfloat16)
    native = interop.to_native("t", "a", a)
    assert native.dtype == interop.BFLOAT16
    np.testing.assert_array_equal(native.view(np.uint16), np.asarray(a).view(np.uint16))  # the same bits
    stored_a, stored_b = np.asarray(a).astype(np.float64), np.asarray(b).astype(np.float64)
    y = F.relu(a)
    assert isinstance(y, jax.Array) and y.dtype == jnp.bfloat16 and y.shape == (6, 5)
    np.testing.assert_array_equal(np.asarray(y).astype(np.float64), R.relu(stored_a))  # exact: a max with 0
    c = F.matmul(a, b)
    assert isinstance(c, jax.Array) and c.dtype == jnp.bfloat16 and c.shape == (6, 4)
    assert_close(np.asarray(c), stored_a @ stored_b, dtype=interop.BFLOAT16)
    t = jnp.asarray(random_array(rng, (6, 5))).astype(jnp.bfloat16)
    loss = F.mse_loss(a, t)  # bfloat16 inputs, a float32 loss: back as a JAX float32 array
    assert isinstance(loss, jax.Array) and loss.dtype == jnp.float32
    assert_close(np.asarray(loss), R.mse_loss(stored_a, np.asarray(t).astype(np.float64)), dtype=interop.BFLOAT16)


def test_a_producer_that_cannot_export_is_refused_with_its_reason():
    class Stubborn(HostTensor):
        def __dlpack__(self, **kwargs):
            raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")

    with pytest.raises(DeviceError, match=r"relu: x .* could not be shared without a copy: Can't export.*detach"):
        F.relu(Stubborn(np.ones(3, np.float32)))


def test_public_ops_document_the_stream_keyword():
    import inspect

    for name in F.__all__:
        parameter = inspect.signature(getattr(F, name)).parameters["stream"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
        assert "Layout" in getattr(F, name).__doc__, f"{name}'s docstring says nothing about layouts"


# ---------------------------------------------------------------------------
# stream arguments
# ---------------------------------------------------------------------------


def test_stream_handles_are_read_from_every_kind_of_stream_object():
    class TorchLike:
        cuda_stream = 0x7F00

    class CupyLike:
        ptr = 0x7F10

    class Protocol:
        def __cuda_stream__(self):
            return (0, 0x7F20)

    assert interop.stream_handle("op", 0) == 0
    assert interop.stream_handle("op", np.uint64(5)) == 5
    assert interop.stream_handle("op", TorchLike()) == 0x7F00
    assert interop.stream_handle("op", CupyLike()) == 0x7F10
    assert interop.stream_handle("op", Protocol()) == 0x7F20
    for bad in ("default", 1.5, True, -1, object()):
        with pytest.raises(ArgumentError, match="op: stream"):
            interop.stream_handle("op", bad)


def test_native_calls_without_a_stream_skip_interop(monkeypatch, rng):
    monkeypatch.setattr(interop, "call", lambda *a, **k: pytest.fail("interop.call on a plain NumPy call"))
    x = random_array(rng, (3, 4))
    np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
    F.sgd_step(x, x.copy(), None, lr=0.1)


# ---------------------------------------------------------------------------
# GPU: CuPy arrays, foreign GPU arrays, streams
# ---------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_strided_views_match_contiguous(rng):
    import cupy

    a = cupy.asarray(random_array(rng, (65, 33)))
    b = cupy.asarray(random_array(rng, (65, 17)))
    c = F.matmul(a.T, b)  # flag flip, no copy
    assert_close(c, R.matmul(cupy.asnumpy(a).T, cupy.asnumpy(b)), dtype=np.float32)
    x = cupy.asarray(random_array(rng, (4, 64)))[:, ::3]
    assert_close(F.relu(x), np.maximum(cupy.asnumpy(x), 0), dtype=np.float32, elementwise=True)


@pytest.mark.gpu
def test_gpu_cuda_array_interface_and_dlpack_producers(rng):
    import cupy

    x = cupy.asarray(random_array(rng, (8, 9)))

    class CaiOnly:  # what a Numba device array offers
        def __init__(self, array):
            self.__cuda_array_interface__ = array.__cuda_array_interface__

    class DlpackOnly:
        def __init__(self, array):
            self._a = array

        def __dlpack__(self, **kwargs):
            return self._a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self._a.__dlpack_device__()

    for wrapped in (CaiOnly(x), DlpackOnly(x), CaiOnly(x.T), DlpackOnly(x[:, ::2])):
        native = interop.to_native("t", "x", wrapped)
        assert isinstance(native, cupy.ndarray) and native.data.ptr >= x.data.ptr  # a view, no copy
        y = F.tanh(wrapped)
        assert_close(y, np.tanh(cupy.asnumpy(native).astype(np.float64)), dtype=np.float32, elementwise=True)


@pytest.mark.gpu
def test_gpu_ops_on_two_streams_do_not_interfere(rng):
    import cupy

    s1, s2 = cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)
    a = [cupy.asarray(random_array(rng, (512, 512))) for _ in range(2)]
    cupy.cuda.Device().synchronize()
    results = []
    for _ in range(4):
        results.append((F.relu(a[0], stream=s1), F.sigmoid(a[1], stream=s2)))
    s1.synchronize()
    s2.synchronize()
    for r1, r2 in results:
        assert_close(r1, np.maximum(cupy.asnumpy(a[0]), 0), dtype=np.float32, elementwise=True)
        assert_close(r2, R.sigmoid(cupy.asnumpy(a[1])), dtype=np.float32, elementwise=True)


@pytest.mark.gpu
@pytest.mark.slow  # long pending work on purpose; not under the sanitizers
def test_gpu_op_on_a_stream_runs_after_the_producers_pending_work(rng):
    import cupy

    producer = cupy.cuda.Stream(non_blocking=True)
    base = cupy.asarray(random_array(rng, (2048, 2048)))
    cupy.cuda.Device().synchronize()
    with producer:
        product = base @ base  # pending on the producer stream
        y = F.relu(product, stream=producer)  # same stream: ordered after it
    producer.synchronize()
    assert_close(y, np.maximum(cupy.asnumpy(base @ base), 0), dtype=np.float32, elementwise=True)
    # a raw handle works too
    z = F.relu(product, stream=producer.ptr)
    producer.synchronize()
    assert_close(z, cupy.asnumpy(y), dtype=np.float32, elementwise=True)


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------


def _thread_work(rng, xp=np):
    """Inputs and expected outputs for a mix of ops (conv2d keeps per-thread workspaces on the CPU)."""
    x, w = random_array(rng, (2, 16, 10, 10)), random_array(rng, (8, 16, 3, 3))
    a, b = random_array(rng, (33, 65)), random_array(rng, (65, 17))
    logits, labels = random_array(rng, (9, 13)), rng.integers(0, 13, 9).astype(np.int32)
    expected = (R.conv2d(x, w, padding=1), R.matmul(a, b), R.softmax_cross_entropy(logits, labels)[1])
    inputs = tuple(xp.asarray(v) for v in (x, w, a, b, logits, labels))
    return inputs, expected


def _run_threads(jobs, worker):
    import threading

    errors = []

    def guarded(job):
        try:
            worker(job)
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[0]


def test_two_threads_calling_ops_concurrently_get_their_own_answers(rng):
    jobs = [_thread_work(rng) for _ in range(2)]

    def worker(job):
        (x, w, a, b, logits, labels), (conv_ref, mm_ref, probs_ref) = job
        for _ in range(5):
            assert_close(F.conv2d(x, w, padding=1), conv_ref, dtype=np.float32)
            assert_close(F.matmul(a, b), mm_ref, dtype=np.float32)
            assert_close(F.softmax_cross_entropy(logits, labels)[1], probs_ref, dtype=np.float32)

    _run_threads(jobs, worker)


@pytest.mark.gpu
def test_gpu_two_threads_on_their_own_streams(rng):
    import cupy

    jobs = [_thread_work(rng, cupy) for _ in range(2)]

    def worker(job):
        (x, w, a, b, logits, labels), (_, mm_ref, probs_ref) = job
        stream = cupy.cuda.Stream(non_blocking=True)
        for _ in range(10):
            c = F.matmul(a, b, stream=stream)
            probs = F.softmax_cross_entropy(logits, labels, stream=stream)[1]
        stream.synchronize()
        assert_close(c, mm_ref, dtype=np.float32)
        assert_close(probs, probs_ref, dtype=np.float32)

    _run_threads(jobs, worker)
