"""No host synchronization in any op (dlgpu/device_errors.py, dlgpu/cuda/error_flag.py): bad indices are found by the
kernels and raised where the caller synchronizes anyway, or on the host at the call in debug mode.

On the CPU: the debug mode's switches; that the CUDA backend's public ops hand indices to the kernels without
reading them back (debug mode aside); the kernels on the CPU harness writing the error flag (value, bound,
position, the first report winning, under ThreadSanitizer too); check_errors, synchronize and the training
loop's epoch end raising it; and the flag's CuPy paths through a stand-in (no read while a graph is captured).
On a GPU: whole training steps, eager and replayed from a CUDA graph, under ``cupyx.allow_synchronize(False)``,
and a bad label in one raised at the next check.
"""

from __future__ import annotations

import sys
import threading
import types

import numpy as np
import pytest

import dlgpu
import dlgpu.cpu
import dlgpu.cuda
import dlgpu.functional as F
from dlgpu import nn, optim, train
from dlgpu.cases.case import harness_target
from dlgpu.cuda import error_flag
from dlgpu.cuda import pool as cuda_pool
from dlgpu.cuda import softmax as cuda_softmax
from dlgpu.cuda.kernel_decls import integer_defines
from dlgpu.errors import ArgumentError, DeviceError
from dlgpu.ops.validate import INDEX_CHECKS
from dlgpu.testing.bad_input import FakeCupy, logits, rand
from dlgpu.testing.harness import HarnessExecutor


@pytest.fixture(autouse=True)
def clean_flags():
    """Each test starts and ends with no error reported: one left behind would surface in a later test."""
    dlgpu.check_errors()
    yield
    dlgpu.check_errors()


def host_record() -> list[int]:
    """The CPU harness's flag as (code, index, bound, position), without clearing it."""
    flag = error_flag._flags.get(error_flag.HOST)
    return [0, 0, 0, 0] if flag is None else [int(v) for v in flag.view(np.int64)]


def code(name: str, family: str) -> int:
    return integer_defines(f"{family}.cu")[name]


# ---------------------------------------------------------------------------
# the debug mode
# ---------------------------------------------------------------------------


def test_debug_mode_follows_the_environment_unless_a_context_says_otherwise(monkeypatch):
    monkeypatch.delenv("DLGPU_DEBUG", raising=False)
    assert not dlgpu.debug_enabled()
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False), (" Off ", False)):
        monkeypatch.setenv("DLGPU_DEBUG", value)
        assert dlgpu.debug_enabled() is expected, value
    monkeypatch.setenv("DLGPU_DEBUG", "0")
    with dlgpu.debug():
        assert dlgpu.debug_enabled()
        with dlgpu.debug(False):
            assert not dlgpu.debug_enabled()
        assert dlgpu.debug_enabled()
    assert not dlgpu.debug_enabled()
    monkeypatch.setenv("DLGPU_DEBUG", "maybe")
    with pytest.raises(ArgumentError, match="DLGPU_DEBUG='maybe'"):
        dlgpu.debug_enabled()
    with dlgpu.debug(False):  # a context decides without asking the environment
        assert not dlgpu.debug_enabled()


def test_debug_mode_belongs_to_the_thread_that_entered_it(monkeypatch):
    monkeypatch.delenv("DLGPU_DEBUG", raising=False)
    seen = []
    with dlgpu.debug():
        worker = threading.Thread(target=lambda: seen.append(dlgpu.debug_enabled()))
        worker.start()
        worker.join()
        assert dlgpu.debug_enabled()
    assert seen == [False]


def test_the_cuda_backend_reads_indices_back_only_in_debug_mode_and_never_while_capturing(monkeypatch):
    capturing = {"now": False}
    stream = types.SimpleNamespace(is_capturing=lambda: capturing["now"])
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(get_current_stream=lambda: stream)))
    monkeypatch.delenv("DLGPU_DEBUG", raising=False)
    indices = FakeCupy(np.array([7, 99, 8]))
    assert dlgpu.cuda.BACKEND.index_range(indices) is None
    with dlgpu.debug():
        assert dlgpu.cuda.BACKEND.index_range(indices) == (7, 99)
        capturing["now"] = True
        assert dlgpu.cuda.BACKEND.index_range(indices) is None
    monkeypatch.setenv("DLGPU_DEBUG", "1")
    capturing["now"] = False
    assert dlgpu.cuda.BACKEND.index_range(indices) == (7, 99)
    assert dlgpu.cpu.BACKEND.index_range(np.array([3, -2, 5])) == (-2, 5)  # the CPU always reads


class Unreadable(FakeCupy):
    """Device indices that must not be read back: reducing them on the host fails the test."""

    def min(self):
        raise AssertionError("an op read indices back to the host")

    max = min


Unreadable.__module__ = "cupy"


def test_gpu_ops_hand_indices_to_the_kernels_without_reading_them(monkeypatch, launches):
    monkeypatch.delenv("DLGPU_DEBUG", raising=False)
    bad_labels = Unreadable(np.array([0, 1, 2, 99]))
    F.softmax_cross_entropy(FakeCupy(logits), bad_labels)
    F.softmax_cross_entropy_backward(FakeCupy(logits), bad_labels)
    F.max_pool2d_backward(FakeCupy(rand(1, 1, 2, 2)), Unreadable(np.full((1, 1, 2, 2), -1, np.int32)), (1, 1, 4, 4), 2)
    assert launches == [("dlgpu.cuda", "softmax_cross_entropy"), ("dlgpu.cuda", "softmax_cross_entropy_backward"),
                        ("dlgpu.cuda", "max_pool2d_backward")]


def test_debug_mode_refuses_a_bad_gpu_index_at_the_call(monkeypatch, launches):
    monkeypatch.delenv("DLGPU_DEBUG", raising=False)
    with dlgpu.debug(), pytest.raises(ArgumentError, match=r"^softmax_cross_entropy: label 99 is outside \[0, 10\)$"):
        F.softmax_cross_entropy(FakeCupy(logits), FakeCupy(np.array([0, 1, 2, 99])))
    monkeypatch.setenv("DLGPU_DEBUG", "1")
    with pytest.raises(ArgumentError, match=r"argmax holds -1, outside the input plane \[0, 16\)$"):
        F.max_pool2d_backward(FakeCupy(rand(1, 1, 2, 2)), FakeCupy(np.full((1, 1, 2, 2), -1, np.int32)), (1, 1, 4, 4), 2)
    assert launches == []


# ---------------------------------------------------------------------------
# the error flag's codes
# ---------------------------------------------------------------------------


def test_every_index_check_has_its_own_code_in_its_kernels():
    numbers = [code(check.code, check.family) for check in INDEX_CHECKS]
    assert {check.op for check in INDEX_CHECKS} == {
        "softmax_cross_entropy", "softmax_cross_entropy_backward", "max_pool2d_backward"}
    assert 0 not in numbers and len(set(numbers)) == len(numbers), numbers
    assert error_flag.WORDS == 4


def test_a_record_of_an_unknown_code_is_still_an_error():
    error = error_flag.error_of(np.array([999, 5, 4, 3], np.uint64))
    assert isinstance(error, ArgumentError) and "error code 999" in str(error)


# ---------------------------------------------------------------------------
# the kernels on the CPU harness write the flag
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def executor(host_compiler):
    return HarnessExecutor("plain", multiprocessor_count=1)


@pytest.mark.parametrize("classes", [10, 1031], ids=["warp-per-row", "block-per-row"])
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_a_bad_label_is_reported_with_its_value_bound_and_row(executor, rng, classes, label_dtype):
    rows = 6
    x = rng.standard_normal((rows, classes)).astype(np.float32)
    labels = np.array([0, 1, 2, -(2**31), 4, 5], label_dtype)
    loss, probs = cuda_softmax.softmax_cross_entropy(x, labels, executor=executor)
    assert np.isnan(loss) and np.isfinite(probs).all()
    assert host_record() == [code("DLGPU_ERROR_SOFTMAX_LABEL", "softmax"), -(2**31), classes, 3]
    with pytest.raises(ArgumentError) as raised:
        dlgpu.check_errors()
    assert str(raised.value).startswith(f"softmax_cross_entropy: label -2147483648 is outside [0, {classes}) (row 3;")
    assert host_record() == [0, 0, 0, 0]  # cleared by the check that raised it
    dlgpu.check_errors()

    labels[3] = 3
    labels[5] = classes
    grad = cuda_softmax.softmax_cross_entropy_backward(probs, labels, executor=executor)
    assert np.isnan(grad[5]).all() and np.isfinite(grad[:5]).all()
    assert host_record() == [code("DLGPU_ERROR_SOFTMAX_BACKWARD_LABEL", "softmax"), classes, classes, 5]
    with pytest.raises(ArgumentError, match=rf"^softmax_cross_entropy_backward: label {classes} is outside"):
        dlgpu.synchronize()


def test_the_first_report_since_the_last_check_wins(executor, rng):
    x = rng.standard_normal((8, 10)).astype(np.float32)
    cuda_softmax.softmax_cross_entropy(x, np.array([0, 11, 0, 0, 0, 0, 0, 0]), executor=executor)
    cuda_softmax.softmax_cross_entropy(x, np.array([0, 0, 0, 0, 0, 0, 12, 0]), executor=executor)
    assert host_record()[1:] == [11, 10, 1]
    with pytest.raises(ArgumentError, match="label 11"):
        dlgpu.check_errors()
    cuda_softmax.softmax_cross_entropy(x, np.array([0, 0, 0, 0, 0, 0, 12, 0]), executor=executor)
    assert host_record()[1:] == [12, 10, 6]
    with pytest.raises(ArgumentError, match="label 12"):
        dlgpu.check_errors()


@pytest.mark.parametrize("window", [None, ((2, 2), (2, 2), (0, 0))], ids=["plane-walk", "gather"])
def test_a_bad_argmax_is_reported_with_its_value_bound_and_element(executor, window):
    grad_y = np.ones((2, 3, 2, 2), np.float32)
    _, good = cuda_pool.max_pool2d(np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4), (2, 2), (2, 2), (0, 0),
                                   executor=executor)
    bad = good.copy()
    bad.reshape(-1)[17] = 16  # (n=1, c=1, p=0, q=1): one past the plane
    grad_x = cuda_pool.max_pool2d_backward(grad_y, bad, (2, 3, 4, 4), *(window or ()), executor=executor)
    assert host_record() == [code("DLGPU_ERROR_POOL_ARGMAX", "pool"), 16, 16, 17]
    assert grad_x.sum() == grad_y.sum() - 1  # the bad one routed nothing; the others their gradient
    with pytest.raises(ArgumentError, match=r"^max_pool2d_backward: argmax holds 16, outside the input plane "
                                            r"\[0, 16\) \(argmax element 17;"):
        dlgpu.check_errors()


def test_reports_from_many_threads_are_race_free_under_thread_sanitizer(host_compiler, rng):
    x = rng.standard_normal((64, 40)).astype(np.float32)
    labels = np.where(np.arange(64) % 3 == 0, 40, 1)  # 22 bad rows, a warp each, across 16 blocks
    cuda_softmax.softmax_cross_entropy(x, labels, executor=HarnessExecutor("tsan", multiprocessor_count=1))
    code_, value, bound, row = host_record()
    assert (code_, value, bound) == (code("DLGPU_ERROR_SOFTMAX_LABEL", "softmax"), 40, 40) and row % 3 == 0
    with pytest.raises(ArgumentError):
        dlgpu.check_errors()


# ---------------------------------------------------------------------------
# through the public ops, and at the training loop's synchronization
# ---------------------------------------------------------------------------


def test_the_public_ops_on_the_harness_report_later_or_refuse_at_once_in_debug_mode(host_compiler, monkeypatch):
    monkeypatch.delenv("DLGPU_DEBUG", raising=False)
    target = harness_target("plain", multiprocessor_count=1)
    labels = np.array([0, 1, 2, 10])
    loss, _ = target.backend.softmax_cross_entropy(logits, labels)
    assert np.isnan(loss) and host_record()[1:] == [10, 10, 3]
    with pytest.raises(ArgumentError, match=r"row 3; found by the kernel"):
        dlgpu.check_errors()
    monkeypatch.setattr("dlgpu.ops.softmax.select", lambda op, **arrays: target.backend)
    with dlgpu.debug(), pytest.raises(ArgumentError, match=r"^softmax_cross_entropy: label 10 is outside \[0, 10\)$"):
        F.softmax_cross_entropy(logits, labels)
    assert host_record() == [0, 0, 0, 0]  # refused before the launch


def test_training_raises_a_bad_label_at_the_end_of_its_epoch(host_compiler, monkeypatch):
    """dlgpu train's loop on the CPU backend, its loss on the kernels (the harness): the step
    queues on, and the epoch's synchronization raises what the kernel found."""
    monkeypatch.delenv("DLGPU_DEBUG", raising=False)
    target = harness_target("plain", multiprocessor_count=1)
    monkeypatch.setattr("dlgpu.ops.softmax.select", lambda op, **arrays: target.backend)
    data_rng = np.random.default_rng(3)
    x = data_rng.standard_normal((24, 5)).astype(np.float32)
    y = np.arange(24) % 4
    y[13] = 4  # one class too many for the model's 4 outputs
    model = nn.Sequential(nn.Linear(5, 4, rng=np.random.default_rng(0)))
    steps = []
    with pytest.raises(ArgumentError, match=r"^softmax_cross_entropy: label 4 is outside \[0, 4\) \(row \d+;"):
        train.fit(model, (x, y, x[:4], y[:4]), epochs=2, batch_size=8, lr=0.1, device="cpu",
                  on_step=lambda i, step: steps.append(i), on_epoch=lambda stats: steps.append("epoch"))
    assert steps == [0, 1, 2]  # every step of the first epoch ran; its end raised


# ---------------------------------------------------------------------------
# the flag on a GPU, through a CuPy stand-in
# ---------------------------------------------------------------------------


class StandInFlag:
    """A GPU flag that records how it was used."""

    def __init__(self, record):
        self.record = np.array(record, np.int64).view(np.uint64)
        self.reads = 0

    def get(self):
        self.reads += 1
        return self.record.copy()

    def fill(self, value):
        self.record[:] = value


@pytest.fixture
def stand_in_gpu(monkeypatch):
    """CuPy with one current device (0) whose current stream may be capturing; returns its state."""
    state = types.SimpleNamespace(device=0, capturing=False)
    stream = types.SimpleNamespace(is_capturing=lambda: state.capturing)
    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: state.device),
                                 get_current_stream=lambda: stream)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(error_flag, "_flags", {})
    state.executor = types.SimpleNamespace(xp=types.SimpleNamespace(cuda=cuda))
    return state


def test_a_gpu_flag_is_read_on_its_own_device_and_never_while_capturing(stand_in_gpu):
    flag = StandInFlag([code("DLGPU_ERROR_POOL_ARGMAX", "pool"), -5, 64, 9])
    error_flag._flags[0] = flag
    stand_in_gpu.capturing = True
    dlgpu.check_errors()
    stand_in_gpu.capturing, stand_in_gpu.device = False, 1
    dlgpu.check_errors()
    assert flag.reads == 0
    stand_in_gpu.device = 0
    with pytest.raises(ArgumentError, match=r"argmax holds -5, outside the input plane \[0, 64\) \(argmax element 9;"):
        dlgpu.check_errors()
    assert flag.reads == 1 and not flag.record.any()
    assert error_flag.flag(stand_in_gpu.executor) is flag  # one flag per device, made once


def test_a_gpu_flag_cannot_be_made_inside_a_graph_capture(stand_in_gpu):
    stand_in_gpu.capturing = True
    with pytest.raises(DeviceError, match="run the step once before capturing it"):
        error_flag.flag(stand_in_gpu.executor)
    assert error_flag._flags == {}


# ---------------------------------------------------------------------------
# on a GPU
# ---------------------------------------------------------------------------


def lenet_step(cp, batch: int = 32):
    """A LeNet training step on the digits, warmed up (kernels compiled and loaded, the error flag made)."""
    from dlgpu.train.data import load_digits

    x_train, y_train, _, _ = load_digits()
    model = train.initial_model("lenet", "relu", 0).to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    step = train.StaticStep(model, nn.SoftmaxCrossEntropy(), opt, (batch, 1, 8, 8), cp)
    images, labels = cp.asarray(x_train), cp.asarray(y_train)
    batches = [cp.arange(i * batch, (i + 1) * batch) for i in range(4)]
    return step, images, labels, batches


@pytest.mark.gpu
def test_a_training_step_never_synchronizes(cp):
    import cupyx

    step, images, labels, batches = lenet_step(cp)
    step.load(images, labels, batches[0])
    step()  # warm-up
    step.reset_totals()
    with cupyx.allow_synchronize(False):
        for indices in batches:
            step.load(images, labels, indices)
            step()
    dlgpu.synchronize()
    assert np.isfinite(float(step.loss_sum)) and 0 <= int(step.correct) <= 4 * 32


@pytest.mark.gpu
def test_a_captured_training_step_never_synchronizes(cp):
    import cupyx

    step, images, labels, batches = lenet_step(cp)
    stream = cp.cuda.Stream(non_blocking=True)
    graphed = train.GraphedStep(step, stream)
    with stream:
        step.load(images, labels, batches[0])
        graphed.warm_up()
        step.reset_totals()
        with cupyx.allow_synchronize(False):
            graphed.capture()
            for indices in batches:
                step.load(images, labels, indices)
                graphed()
        dlgpu.synchronize()
    assert np.isfinite(float(step.loss_sum))


@pytest.mark.gpu
def test_a_bad_label_in_a_training_step_raises_at_the_next_check(cp):
    import cupyx

    step, images, labels, batches = lenet_step(cp)
    step.load(images, labels, batches[0])
    step()  # warm-up
    dlgpu.synchronize()
    with cupyx.allow_synchronize(False):
        step.load(images, labels, batches[1])
        step.labels[5] = 10  # one past the classes, written on the device
        step()
    with pytest.raises(ArgumentError, match=r"^softmax_cross_entropy: label 10 is outside \[0, 10\) \(row 5;"):
        dlgpu.check_errors()
    dlgpu.check_errors()  # reported once
    with dlgpu.debug(), pytest.raises(ArgumentError, match=r"^softmax_cross_entropy: label 10 is outside \[0, 10\)$"):
        step()
    dlgpu.synchronize()  # the refused call launched nothing


@pytest.mark.gpu
def test_a_bad_argmax_on_the_gpu_raises_at_the_next_check(cp):
    grad_y = cp.ones((1, 2, 2, 2), dtype=cp.float32)
    argmax = cp.zeros((1, 2, 2, 2), dtype=cp.int32)
    argmax[0, 1, 1, 0] = -3
    F.max_pool2d_backward(grad_y, argmax, (1, 2, 4, 4), 2)
    with pytest.raises(ArgumentError, match=r"argmax holds -3, outside the input plane \[0, 16\) \(argmax element 6;"):
        dlgpu.synchronize()
