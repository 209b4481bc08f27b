"""dlgpu.nn and dlgpu.optim: whole-network gradients against finite differences, SGD by hand, state dicts."""

from __future__ import annotations

import doctest
import math
import sys

import numpy as np
import pytest

import dlgpu.nn
import dlgpu.optim
from dlgpu import nn
from dlgpu.errors import ArgumentError, BackendUnavailableError, DlgpuError, DtypeError, ShapeError
from dlgpu.optim import SGD, CosineLR, GradScaler, StepLR
from dlgpu.precision import BFLOAT16, HALF_DTYPES
from dlgpu.testing import assert_close, numeric_gradient, rel_error, same_bits

# ---------------------------------------------------------------------------
# tiny networks, float64 on the CPU backend
# ---------------------------------------------------------------------------


def tiny_lenet(rng, dtype=np.float64):
    """conv 3x3 relu -> pool -> conv 3x3 relu -> pool -> flatten -> linear relu -> linear, for 1x14x14 input."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, activation="relu", rng=rng, dtype=dtype),  # 14x14
        nn.MaxPool2d(2),  # 7x7
        nn.Conv2d(3, 4, 3, activation="relu", rng=rng, dtype=dtype),  # 5x5
        nn.MaxPool2d(2),  # 2x2: the odd last row and column are dropped
        nn.Flatten(),
        nn.Linear(16, 8, activation="relu", rng=rng, dtype=dtype),
        nn.Linear(8, 3, rng=rng, dtype=dtype),
    )


def tiny_mlp(rng, variant, dtype=np.float64):
    if variant == "relu":
        # Both ways of writing a ReLU: fused into Linear, and a separate layer.
        return nn.Sequential(
            nn.Linear(6, 8, activation="relu", rng=rng, dtype=dtype),
            nn.Linear(8, 7, rng=rng, dtype=dtype),
            nn.ReLU(),
            nn.Linear(7, 3, rng=rng, dtype=dtype),
        )
    return nn.Sequential(
        nn.Linear(6, 8, rng=rng, dtype=dtype),
        nn.Tanh(),
        nn.Linear(8, 7, rng=rng, dtype=dtype),
        nn.Sigmoid(),
        nn.Linear(7, 3, rng=rng, dtype=dtype),
    )


def loss_of(model, x, labels) -> float:
    return float(nn.SoftmaxCrossEntropy()(model(x), labels))


def check_network_gradients(model, x, labels):
    loss_fn = nn.SoftmaxCrossEntropy()
    model.zero_grad()
    loss_fn(model(x), labels)
    grad_x = model.backward(loss_fn.backward())

    # Central differences of a float64 loss are good to ~1e-9 here; a wrong
    # gradient (a missed mask, a transposed weight) is off by O(1).
    for name, p in model.named_parameters():
        numeric = numeric_gradient(lambda: loss_of(model, x, labels), p.data)
        assert np.linalg.norm(numeric) > 1e-6, f"{name}: gradient is zero, so the check would prove nothing"
        err = rel_error(p.grad, numeric)
        assert err < 1e-6, f"{name}: relative error {err:.2e} against finite differences"
    numeric_x = numeric_gradient(lambda: loss_of(model, x, labels), x)
    assert rel_error(grad_x, numeric_x) < 1e-6


def test_lenet_gradients_match_finite_differences(rng):
    model = tiny_lenet(rng)
    x = rng.standard_normal((2, 1, 14, 14))
    labels = np.array([0, 2], dtype=np.int64)
    check_network_gradients(model, x, labels)


@pytest.mark.parametrize("variant", ["relu", "tanh"])
def test_mlp_gradients_match_finite_differences(rng, variant):
    model = tiny_mlp(rng, variant)
    x = rng.standard_normal((5, 6))
    labels = np.array([0, 1, 2, 1, 0], dtype=np.int32)
    check_network_gradients(model, x, labels)


def test_strided_dilated_conv_and_overlapping_pool_gradients(rng):
    model = nn.Sequential(
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), rng=rng, dtype=np.float64),
        nn.Tanh(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(3 * 2 * 3, 2, bias=False, rng=rng, dtype=np.float64),
    )
    x = rng.standard_normal((2, 2, 7, 7))
    assert model[0](x).shape == (2, 3, 4, 5)
    check_network_gradients(model, x, np.array([1, 0]))


# ---------------------------------------------------------------------------
# gradient bookkeeping
# ---------------------------------------------------------------------------


def test_backward_accumulates_and_zero_grad_clears(rng):
    model = tiny_mlp(rng, "relu")
    loss_fn = nn.SoftmaxCrossEntropy()
    x, labels = rng.standard_normal((4, 6)), np.array([0, 1, 2, 0])
    loss_fn(model(x), labels)
    grad_logits = loss_fn.backward()
    model.backward(grad_logits)
    once = [p.grad.copy() for p in model.parameters()]
    assert all(np.any(g != 0) for g in once)
    model.backward(grad_logits)
    for p, g in zip(model.parameters(), once):
        np.testing.assert_allclose(p.grad, 2 * g, rtol=1e-12)
    grad_buffers = [p.grad for p in model.parameters()]
    model.zero_grad()
    for p, buffer in zip(model.parameters(), grad_buffers):
        assert p.grad is buffer, "zero_grad must clear in place, not reallocate"
        assert not np.any(p.grad)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(3, 2),
        nn.Conv2d(1, 1, 1),
        nn.ReLU(),
        nn.Tanh(),
        nn.Sigmoid(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Sequential(nn.Linear(3, 2)),
    ],
    ids=lambda m: type(m).__name__,
)
def test_backward_before_forward_is_a_clear_error(layer):
    with pytest.raises(ArgumentError, match="call forward first"):
        layer.backward(np.ones((1, 2), dtype=np.float32))


def test_loss_backward_before_forward_is_a_clear_error():
    with pytest.raises(ArgumentError, match="SoftmaxCrossEntropy.backward"):
        nn.SoftmaxCrossEntropy().backward()


def test_eval_mode_keeps_nothing_and_train_mode_restores_backward(rng):
    model = tiny_mlp(rng, "tanh", dtype=np.float32)
    x = rng.standard_normal((3, 6), dtype=np.float32)
    y_train = model(x)
    model.eval()
    assert not any(m.training for m in model.modules())
    np.testing.assert_array_equal(model(x), y_train)
    with pytest.raises(ArgumentError, match="eval-mode"):
        model.backward(np.ones_like(y_train))
    model.train()
    model(x)
    assert model.backward(np.ones_like(y_train)).shape == x.shape


# ---------------------------------------------------------------------------
# construction: initialization, names, repr, bad arguments
# ---------------------------------------------------------------------------


def test_he_initialization_for_relu_layers(rng):
    layer = nn.Linear(1000, 400, activation="relu", rng=rng)
    assert layer.weight.dtype == np.float32 and layer.weight.shape == (400, 1000)
    assert layer.weight.data.std() == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    assert not np.any(layer.bias.data)
    conv = nn.Conv2d(16, 64, 5, activation="relu", rng=rng)
    assert conv.weight.data.std() == pytest.approx(math.sqrt(2 / (16 * 25)), rel=0.02)


def test_glorot_initialization_otherwise(rng):
    layer = nn.Linear(600, 300, rng=rng, dtype=np.float64)
    limit = math.sqrt(6 / 900)
    assert layer.weight.dtype == np.float64
    assert np.abs(layer.weight.data).max() <= limit
    assert np.abs(layer.weight.data).max() > 0.99 * limit
    assert layer.weight.data.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)
    conv = nn.Conv2d(8, 16, 3, rng=rng)
    assert np.abs(conv.weight.data).max() <= math.sqrt(6 / ((8 + 16) * 9))


def test_initialization_follows_the_generator():
    a = nn.Linear(5, 4, rng=np.random.default_rng(7))
    b = nn.Linear(5, 4, rng=np.random.default_rng(7))
    c = nn.Linear(5, 4, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)


def test_parameter_order_names_and_repr(rng):
    model = tiny_lenet(rng, dtype=np.float32)
    names = [name for name, _ in model.named_parameters()]
    assert names == [f"{i}.{p}" for i in (0, 2, 5, 6) for p in ("weight", "bias")]
    assert [p for _, p in model.named_parameters()] == model.parameters()
    assert list(model.state_dict()) == names
    text = repr(model)
    assert text.startswith("Sequential(\n  (0): Conv2d(1, 3, kernel_size=(3, 3)")
    assert "(1): MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))" in text
    assert "(6): Linear(in_features=8, out_features=3, activation=None, bias=True, dtype=float32)" in text
    assert "Parameter(shape=(3, 1, 3, 3), dtype=float32, device='cpu')" == repr(model[0].weight)


def test_nested_modules_get_dotted_names(rng):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(2, 3, rng=rng), nn.Tanh())
            self.head = nn.Linear(3, 1, bias=False, rng=rng)

    assert list(Net().state_dict()) == ["features.0.weight", "features.0.bias", "head.weight"]


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: nn.Linear(0, 3), ArgumentError),
        (lambda: nn.Linear(3, 2.5), ArgumentError),
        (lambda: nn.Linear(3, 2, activation="tanh"), ArgumentError),
        (lambda: nn.Linear(3, 2, dtype=np.int32), DtypeError),
        (lambda: nn.Linear(3, 2, rng=42), ArgumentError),
        (lambda: nn.Conv2d(1, 2, (3, 3, 3)), ArgumentError),
        (lambda: nn.Conv2d(1, 2, 3, stride=0), ArgumentError),
        (lambda: nn.Conv2d(1, 2, 3, padding=-1), ArgumentError),
        (lambda: nn.MaxPool2d(0), ArgumentError),
        (lambda: nn.Sequential(nn.ReLU(), "relu"), ArgumentError),
    ],
)
def test_bad_constructor_arguments_are_refused(make, error):
    with pytest.raises(error):
        make()


def test_forward_errors_come_from_the_op(rng):
    with pytest.raises(ShapeError, match="linear"):
        nn.Linear(3, 2, rng=rng)(np.ones((4, 5), dtype=np.float32))
    with pytest.raises(DtypeError):
        nn.Linear(3, 2, rng=rng)(np.ones((4, 3), dtype=np.float64))


# ---------------------------------------------------------------------------
# state dicts and devices
# ---------------------------------------------------------------------------


def test_state_dict_round_trip_gives_identical_outputs(rng):
    model = tiny_lenet(rng, dtype=np.float32)
    x = rng.standard_normal((3, 1, 14, 14), dtype=np.float32)
    before = model(x).copy()
    state = model.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())
    for p in model.parameters():
        p.data += 1.0
    assert not np.array_equal(model(x), before)
    buffers = [p.data for p in model.parameters()]
    model.load_state_dict(state)
    np.testing.assert_array_equal(model(x), before)
    assert all(p.data is b for p, b in zip(model.parameters(), buffers)), "load must write in place"
    other = tiny_lenet(np.random.default_rng(123), dtype=np.float32)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(x), before)


def test_state_dict_is_a_copy(rng):
    model = nn.Linear(3, 2, rng=rng)
    state = model.state_dict()
    state["weight"][...] = 0
    assert np.any(model.weight.data)


def test_load_state_dict_refuses_wrong_shape_naming_the_key(rng):
    model = tiny_mlp(rng, "relu")
    state = model.state_dict()
    original = [p.data.copy() for p in model.parameters()]
    state["0.bias"] = np.zeros(8)  # fine
    state["1.weight"] = np.zeros((7, 9))
    with pytest.raises(ShapeError, match=r"'1\.weight' has shape \(7, 9\)"):
        model.load_state_dict(state)
    for p, before in zip(model.parameters(), original):
        np.testing.assert_array_equal(p.data, before)  # nothing was written


def test_load_state_dict_refuses_missing_unexpected_and_wrong_dtype(rng):
    model = tiny_mlp(rng, "relu")
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "3.bias"}
    with pytest.raises(ArgumentError, match=r"missing key\(s\) '3\.bias'"):
        model.load_state_dict(missing)
    with pytest.raises(ArgumentError, match=r"unexpected key\(s\) 'extra'"):
        model.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(DtypeError, match=r"'0\.weight' has dtype float32"):
        model.load_state_dict({**state, "0.weight": state["0.weight"].astype(np.float32)})
    with pytest.raises(ArgumentError):
        model.load_state_dict([("0.weight", state["0.weight"])])


def _cuda_usable() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, or CuPy without a driver/device
        return False


def test_to_cpu_is_a_no_op_and_bad_device_is_refused(rng):
    model = tiny_mlp(rng, "relu")
    data = [p.data for p in model.parameters()]
    assert model.to("cpu") is model
    assert all(p.data is d for p, d in zip(model.parameters(), data))
    with pytest.raises(ArgumentError, match="'cpu' or 'cuda'"):
        model.to("gpu")


@pytest.mark.skipif(_cuda_usable(), reason="checks the error raised where CuPy or a GPU is missing")
def test_to_cuda_without_a_gpu_raises_backend_unavailable(rng):
    model = tiny_mlp(rng, "relu")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        model.to("cuda")
    assert all(p.device == "cpu" for p in model.parameters())
    assert issubclass(BackendUnavailableError, DlgpuError)


class _FakeCupyArray(np.ndarray):
    """A NumPy array that dlgpu.nn takes for a CuPy one (by its module name), to test the moves on the CPU."""

    __module__ = "cupy"

    def get(self):
        return np.asarray(self)


def _fake_cupy():
    import types

    fake = types.ModuleType("cupy")
    fake.asarray = lambda a: np.array(a).view(_FakeCupyArray)
    fake.zeros_like = lambda a: np.zeros_like(np.asarray(a)).view(_FakeCupyArray)
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    return fake


def test_moves_between_devices_carry_data_grads_and_velocities(rng, monkeypatch):
    import dlgpu.backend

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    # the ops refuse ndarray subclasses; this one stands in for CuPy and runs on the CPU backend
    monkeypatch.setattr(dlgpu.backend, "_PLAIN_NDARRAYS", (*dlgpu.backend._PLAIN_NDARRAYS, _FakeCupyArray))
    model = tiny_mlp(rng, "relu")
    state = model.state_dict()
    for p in model.parameters():
        p.grad[...] = 1.0
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.step()  # velocities are allocated on the CPU
    model(rng.standard_normal((2, 6)))

    model.to("cuda")
    assert all(type(p.data) is _FakeCupyArray and type(p.grad) is _FakeCupyArray for p in model.parameters())
    assert all(p.device == "cuda" for p in model.parameters())
    assert all(np.all(np.asarray(p.grad) == 1.0) for p in model.parameters())
    with pytest.raises(ArgumentError, match="call forward first"):
        model.backward(np.ones((2, 3)))  # the saved activations lived on the old device

    opt.step()  # moves each velocity to the parameter's device, keeping its values
    assert all(type(v) is _FakeCupyArray for v in opt.velocities)
    np.testing.assert_allclose(np.asarray(opt.velocities[0]), 1.9)

    buffers = [p.data for p in model.parameters()]
    model.load_state_dict(state)  # NumPy arrays in, written onto the device in place
    assert all(p.data is b for p, b in zip(model.parameters(), buffers))
    saved = model.state_dict()
    assert all(type(v) is np.ndarray for v in saved.values())
    for name, value in saved.items():
        np.testing.assert_array_equal(value, state[name])

    model.to("cpu")
    assert all(type(p.data) is np.ndarray and type(p.grad) is np.ndarray for p in model.parameters())


@pytest.mark.gpu
def test_to_cuda_and_back_keeps_values_and_matches_the_cpu(rng):
    import cupy

    model = tiny_lenet(rng, dtype=np.float32)
    state = model.state_dict()
    x = rng.standard_normal((2, 1, 14, 14), dtype=np.float32)
    labels = np.array([1, 2])
    loss_fn = nn.SoftmaxCrossEntropy()
    cpu_loss = float(loss_fn(model(x), labels))
    model.backward(loss_fn.backward())
    cpu_grads = [p.grad.copy() for p in model.parameters()]

    model.zero_grad()
    model.to("cuda")
    assert all(isinstance(p.data, cupy.ndarray) and isinstance(p.grad, cupy.ndarray) for p in model.parameters())
    gpu_loss = float(loss_fn(model(cupy.asarray(x)), cupy.asarray(labels)))
    model.backward(loss_fn.backward())
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-4)
    for p, g in zip(model.parameters(), cpu_grads):
        assert rel_error(p.grad, g) < 1e-4
    for name, value in model.to("cpu").state_dict().items():
        np.testing.assert_array_equal(value, state[name])


# ---------------------------------------------------------------------------
# optimizer and schedules
# ---------------------------------------------------------------------------


def test_sgd_two_steps_with_momentum_and_weight_decay_by_hand():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    assert opt.velocities == [None]  # allocated on first use
    p.grad[:] = [0.5, 0.25]
    opt.step()
    # g1 = grad + 0.01*p0 = [0.51, 0.23]; v1 = g1; p1 = p0 - 0.1*v1
    np.testing.assert_allclose(p.data, [0.949, -2.023], rtol=1e-14)
    np.testing.assert_allclose(opt.velocities[0], [0.51, 0.23], rtol=1e-14)
    opt.step()
    # g2 = grad + 0.01*p1 = [0.50949, 0.22977]; v2 = 0.9*v1 + g2 = [0.96849, 0.43677]; p2 = p1 - 0.1*v2
    np.testing.assert_allclose(p.data, [0.852151, -2.066677], rtol=1e-14)
    np.testing.assert_allclose(opt.velocities[0], [0.96849, 0.43677], rtol=1e-14)


def test_sgd_without_momentum_keeps_no_velocity_and_lr_is_settable():
    p = nn.Parameter(np.array([1.0, 2.0], dtype=np.float32))
    p.grad[:] = [1.0, -1.0]
    opt = SGD([p], lr=0.5)
    opt.step()
    opt.lr = 0.25
    opt.step()
    assert opt.velocities == [None]
    np.testing.assert_array_equal(p.data, np.array([0.25, 2.75], dtype=np.float32))
    opt.zero_grad()
    assert not np.any(p.grad)
    with pytest.raises(ArgumentError, match="lr"):
        opt.lr = -1.0
    with pytest.raises(ArgumentError, match="lr"):
        opt.lr = float("nan")


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: np.dtype(d).name)
def test_sgd_keeps_float32_master_weights_for_16_bit_parameters(rng, dtype):
    """Three steps on the float32 master copy (the float64 rule from the rounded start, to float32
    accuracy); the 16-bit parameter is the master rounded, bit for bit; master_weights=False updates
    the 16-bit parameter alone."""
    start = rng.standard_normal(37).astype(dtype)
    grads = [rng.standard_normal(37).astype(dtype) for _ in range(3)]
    p, alone = nn.Parameter(start.copy()), nn.Parameter(start.copy())
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    opt_alone = SGD([alone], lr=0.1, momentum=0.9, weight_decay=0.01, master_weights=False)
    w, v = start.astype(np.float64), np.zeros(37)
    for g in grads:
        p.grad[...], alone.grad[...] = g, g
        opt.step()
        opt_alone.step()
        v = 0.9 * v + g.astype(np.float64) + 0.01 * w
        w = w - 0.1 * v
    master, velocity = opt.masters[0], opt.velocities[0]
    assert master.dtype == np.float32 and velocity.dtype == np.float32 and p.dtype == dtype
    assert_close(master, w, dtype=np.float32, elementwise=True)
    assert same_bits(p.data, master.astype(dtype))
    assert opt_alone.masters == [None] and opt_alone.velocities[0].dtype == dtype and alone.dtype == dtype
    assert_close(alone.data, w, dtype=dtype)


def test_grad_scaler_skips_nonfinite_steps_backs_off_and_grows():
    p = nn.Parameter(np.array([1.0, 2.0], dtype=np.float16))
    opt = SGD([p], lr=0.5)
    scaler = GradScaler(init_scale=1024.0, growth_interval=2)
    # scale() multiplies in float32 and rounds once: 1024 * 100 overflows float16 to inf.
    scaled = scaler.scale(np.array([0.25, 100.0], dtype=np.float16))
    assert scaled.dtype == np.float16 and scaled[0] == 256.0 and np.isinf(scaled[1])
    p.grad[...] = [np.inf, 512.0]
    assert not scaler.step(opt)  # skipped: p untouched, the scale halved
    scaler.update()
    np.testing.assert_array_equal(p.data, np.array([1.0, 2.0], dtype=np.float16))
    assert scaler.get_scale() == 512.0 and scaler.skipped_steps == 1
    for expected_scale in (512.0, 1024.0):  # two good steps in a row double it
        p.grad[...] = [512.0, 256.0]  # gradients [1, 0.5] times the scale 512
        assert scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 1024.0
    # Two unscaled steps of lr 0.5 on gradients [1, 0.5]; the second saw [512, 256] / 512 as well.
    np.testing.assert_array_equal(opt.masters[0], np.array([0.0, 1.5], dtype=np.float32))
    with pytest.raises(ArgumentError, match="step"):
        scaler.update()  # no step since the last update


@pytest.mark.parametrize(
    "make",
    [
        lambda p: SGD([], lr=0.1),
        lambda p: SGD([p.data], lr=0.1),
        lambda p: SGD([p], lr=0.1, momentum=-0.5),
        lambda p: StepLR(SGD([p], lr=0.1), step_size=0),
        lambda p: CosineLR(SGD([p], lr=0.1), total_steps=10, min_lr=0.5),
        lambda p: StepLR("sgd", step_size=2),
        lambda p: nn.Parameter([1.0, 2.0]),
        lambda p: GradScaler(init_scale=0.0),
        lambda p: GradScaler(backoff_factor=1.0),
        lambda p: GradScaler(growth_interval=0),
    ],
)
def test_bad_optimizer_arguments_are_refused(make):
    with pytest.raises(ArgumentError):
        make(nn.Parameter(np.zeros(2)))


def test_step_lr_values():
    opt = SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    schedule = StepLR(opt, step_size=2, gamma=0.5)
    values = [schedule.step() for _ in range(6)]
    assert values == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert opt.lr == 0.125


def test_cosine_lr_values():
    opt = SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    schedule = CosineLR(opt, total_steps=4, min_lr=0.1)
    values = [schedule.step() for _ in range(6)]
    c = math.cos(math.pi / 4)
    expected = [0.1 + 0.9 * (1 + c) / 2, 0.55, 0.1 + 0.9 * (1 - c) / 2, 0.1, 0.1, 0.1]
    assert values == pytest.approx(expected, rel=1e-14)
    assert opt.lr == pytest.approx(0.1)


def test_mlp_learns_a_separable_problem():
    # Four blobs at the corners of a square, labelled XOR-wise: separable, but
    # not by a line, so the hidden layer has to learn something.
    rng = np.random.default_rng(2015)
    corners = np.array([[2, 2], [-2, -2], [2, -2], [-2, 2]], dtype=np.float64)
    blob = np.repeat(np.arange(4), 30)
    labels = blob // 2
    x = (corners[blob] + rng.normal(0.0, 0.6, size=(120, 2))).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 16, activation="relu", rng=rng), nn.Linear(16, 2, rng=rng))
    loss_fn = nn.SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    schedule = CosineLR(opt, total_steps=50, min_lr=0.01)

    def accuracy():
        return float(np.mean(np.argmax(model(x), axis=1) == labels))

    start_accuracy = accuracy()
    losses = []
    for _ in range(50):
        opt.zero_grad()
        losses.append(float(loss_fn(model(x), labels)))
        model.backward(loss_fn.backward())
        opt.step()
        schedule.step()
    assert start_accuracy < 0.75, "the problem should not be solved before training"
    assert losses[-1] < 0.1 * losses[0]
    assert accuracy() > 0.9


# ---------------------------------------------------------------------------
# docstring examples
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("module", [dlgpu.nn, dlgpu.optim], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, raise_on_error=False, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
