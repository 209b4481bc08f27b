"""dlgpu.torch and PyTorch interop: gradcheck in float64, float32 against PyTorch's own ops,
drop-in modules that exchange state with torch.nn, and torch tensors through dlgpu.functional.

CPU tensors run here (CPU backend, through DLPack); the CUDA-tensor tests are
marked gpu and also need a CUDA build of torch.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402
from torch.autograd import gradcheck  # noqa: E402

import dlgpu.functional as F  # noqa: E402
import dlgpu.torch as dt  # noqa: E402
from dlgpu.errors import ArgumentError, DeviceError, DtypeError, LayoutError  # noqa: E402
from dlgpu.testing import assert_close  # noqa: E402


@pytest.fixture
def gen(request):
    import zlib

    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def randn(gen, *shape, dtype=torch.float64, grad=True, scale=1.0):
    t = torch.randn(*shape, generator=gen, dtype=dtype) * scale
    return t.requires_grad_(grad)


def close(ours, theirs, dtype=np.float32, elementwise=False):
    """dlgpu's float32 result against PyTorch's (computed in float64) within dlgpu.testing's bound."""
    assert isinstance(ours, torch.Tensor)
    assert_close(ours.detach().numpy(), theirs.detach().double().numpy(), dtype=dtype, elementwise=elementwise)


# ---------------------------------------------------------------------------
# gradcheck, float64 (the CPU backend computes in float64)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_gradcheck(gen, activation, with_bias):
    x, w = randn(gen, 5, 7), randn(gen, 3, 7)
    b = randn(gen, 3) if with_bias else None
    assert gradcheck(lambda x, w, b: dt.linear(x, w, b, activation=activation), (x, w, b))


@pytest.mark.parametrize(
    "hyper",
    [
        dict(stride=1, padding=0, dilation=1),
        dict(stride=2, padding=1, dilation=1),
        dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
    ],
    ids=["plain", "strided-padded", "mixed-pairs"],
)
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv2d_gradcheck(gen, hyper, activation):
    x, w, b = randn(gen, 2, 3, 7, 6), randn(gen, 4, 3, 3, 2), randn(gen, 4)
    # fast mode: the Jacobians compared along random directions, a few dozen calls instead of hundreds
    assert gradcheck(lambda x, w, b: dt.conv2d(x, w, b, activation=activation, **hyper), (x, w, b), fast_mode=True)


@pytest.mark.parametrize("groups, filters", [(2, 6), (4, 4)], ids=["two-groups", "depthwise"])
def test_grouped_conv2d_gradcheck(gen, groups, filters):
    x, w, b = randn(gen, 2, 4, 6, 5), randn(gen, filters, 4 // groups, 3, 3), randn(gen, filters)
    assert gradcheck(lambda x, w, b: dt.conv2d(x, w, b, 1, 1, 1, groups, activation="relu"), (x, w, b),
                     fast_mode=True)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(), (5,), (4, 3), (2, 3, 2)], ids=lambda s: "x".join(map(str, s)) or "0-d")
def test_mse_loss_is_pytorchs_and_gradchecks(gen, reduction, shape):
    y, t = (torch.randn(shape, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(2))
    torch.testing.assert_close(dt.mse_loss(y, t, reduction=reduction), TF.mse_loss(y, t, reduction=reduction),
                               rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda y, t: dt.mse_loss(y, t, reduction=reduction), (y, t))
    assert gradcheck(lambda y, t: dt.MSELoss(reduction=reduction)(y, t), (y, t), fast_mode=True)


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activation_gradcheck(gen, name):
    assert gradcheck(getattr(dt, name), (randn(gen, 3, 4, 5),), fast_mode=True)


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_max_pool2d_gradcheck(gen, kernel, stride, padding):
    x = randn(gen, 2, 3, 7, 8)
    assert gradcheck(lambda x: dt.max_pool2d(x, kernel, stride, padding), (x,), fast_mode=True)


def test_softmax_cross_entropy_gradcheck(gen):
    logits, labels = randn(gen, 6, 9, scale=3.0), torch.randint(0, 9, (6,), generator=gen)
    assert gradcheck(lambda z: dt.softmax_cross_entropy(z, labels), (logits,), fast_mode=True)


# ---------------------------------------------------------------------------
# float32 against PyTorch's own ops
# ---------------------------------------------------------------------------


def _forward_backward(fn, *inputs):
    """fn(*inputs) and the gradients of a random projection of it with respect to the inputs."""
    out = fn(*inputs)
    weights = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * weights).sum(), [t for t in inputs if t is not None])
    return out, grads


def _compare_with_torch(ours_fn, torch_fn, inputs32):
    ours, our_grads = _forward_backward(ours_fn, *inputs32)
    inputs64 = [None if t is None else t.detach().double().requires_grad_() for t in inputs32]
    theirs, their_grads = _forward_backward(torch_fn, *inputs64)
    assert ours.dtype == torch.float32
    close(ours, theirs)
    for g, h in zip(our_grads, their_grads):
        assert g.dtype == torch.float32
        close(g, h)


def test_linear_matches_torch_float32(gen):
    x, w, b = (randn(gen, *s, dtype=torch.float32) for s in [(33, 65), (17, 65), (17,)])
    _compare_with_torch(
        lambda x, w, b: dt.linear(x, w, b, activation="relu"), lambda x, w, b: TF.relu(TF.linear(x, w, b)), [x, w, b]
    )


def test_conv2d_matches_torch_float32(gen):
    x, w, b = (randn(gen, *s, dtype=torch.float32) for s in [(3, 5, 13, 11), (7, 5, 3, 3), (7,)])
    hyper = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    _compare_with_torch(lambda x, w, b: dt.conv2d(x, w, b, **hyper), lambda x, w, b: TF.conv2d(x, w, b, **hyper),
                        [x, w, b])


def test_max_pool2d_matches_torch_float32(gen):
    x = randn(gen, 2, 3, 9, 10, dtype=torch.float32)
    _compare_with_torch(lambda x: dt.max_pool2d(x, 3, 2, 1), lambda x: TF.max_pool2d(x, 3, 2, 1), [x])


def test_activations_match_torch_float32(gen):
    x = randn(gen, 4, 33, dtype=torch.float32, scale=3.0)
    for ours, theirs in ((dt.relu, torch.relu), (dt.tanh, torch.tanh), (dt.sigmoid, torch.sigmoid)):
        _compare_with_torch(ours, theirs, [x])


def test_softmax_cross_entropy_matches_torch_float32(gen):
    logits = randn(gen, 16, 10, dtype=torch.float32, scale=30.0)
    labels = torch.randint(0, 10, (16,), generator=gen, dtype=torch.int32)
    loss = dt.softmax_cross_entropy(logits, labels)
    (grad,) = torch.autograd.grad(loss, [logits])
    logits64 = logits.detach().double().requires_grad_()
    ref = TF.cross_entropy(logits64, labels.long())
    (ref_grad,) = torch.autograd.grad(ref, [logits64])
    assert loss.shape == () and loss.dtype == torch.float32
    close(loss, ref)
    close(grad, ref_grad)


# ---------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------


def test_linear_and_conv2d_exchange_state_with_torch_nn(gen):
    torch.manual_seed(3)
    for ours, theirs, x in (
        (dt.Linear(6, 4), torch.nn.Linear(6, 4), randn(gen, 5, 6, dtype=torch.float32)),
        (dt.Conv2d(3, 5, (3, 2), stride=2, padding=1), torch.nn.Conv2d(3, 5, (3, 2), stride=2, padding=1),
         randn(gen, 2, 3, 9, 8, dtype=torch.float32)),
    ):
        assert ours.weight.shape == theirs.weight.shape and ours.bias.shape == theirs.bias.shape
        ours.load_state_dict(theirs.state_dict())
        close(ours(x), theirs.double()(x.double()))


def test_default_initialization_has_torch_bounds():
    torch.manual_seed(0)
    layer = dt.Linear(100, 50)
    bound = 1.0 / 10.0  # 1/sqrt(fan_in); Kaiming-uniform with a=sqrt(5) has the same bound for the weight
    largest_w, largest_b = layer.weight.detach().abs().max().item(), layer.bias.detach().abs().max().item()
    assert 0.9 * bound < largest_w <= bound
    assert largest_b <= bound
    assert dt.Linear(3, 2, bias=False).bias is None


def _models():
    torch.manual_seed(7)
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10),
    )
    ours = torch.nn.Sequential(
        dt.Conv2d(1, 4, 3, padding=1), dt.ReLU(), dt.MaxPool2d(2), torch.nn.Flatten(), dt.Linear(4 * 4 * 4, 10),
    )
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def test_a_small_cnn_trains_like_torch(gen):
    ours, theirs = _models()
    x = torch.randn(8, 1, 8, 8, generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    our_opt = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    their_opt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(3):
        for model, opt, loss_fn in ((ours, our_opt, dt.CrossEntropyLoss()), (theirs, their_opt, TF.cross_entropy)):
            opt.zero_grad()
            loss = loss_fn(model(x), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    ours_losses, their_losses = losses[0::2], losses[1::2]
    np.testing.assert_allclose(ours_losses, their_losses, rtol=1e-4)
    assert ours_losses[-1] < ours_losses[0]
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        close(p, q.double())


def test_modules_accept_non_contiguous_and_channels_last_tensors(gen):
    conv = dt.Conv2d(3, 4, 3)
    x = randn(gen, 2, 3, 8, 8, dtype=torch.float32, grad=False)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_()
    assert not x_cl.is_contiguous()
    y = conv(x_cl)
    y.sum().backward()  # the incoming gradient is an expanded (stride-0) tensor
    close(y, TF.conv2d(x.double(), conv.weight.double(), conv.bias.double()))
    x64 = x.double().requires_grad_()
    TF.conv2d(x64, conv.weight.detach().double(), conv.bias.detach().double()).sum().backward()
    close(x_cl.grad, x64.grad)
    w_t = randn(gen, 5, 4, dtype=torch.float32).t()  # a transposed (4, 5) view of 20 floats
    lin = dt.linear(randn(gen, 3, 5, dtype=torch.float32), w_t)
    assert lin.shape == (3, 4)


def is_channels_last(t) -> bool:
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_tensors_reach_the_kernels_uncopied_and_keep_their_format(harness_conv2d, gen):
    """bf16 channels_last tensors on the CUDA backend's launchers (the harness runs the kernels, CPU tensors
    shared through DLPack): the forward kernel reads x and the weight at their own addresses, y comes back
    channels_last, and autograd hands each leaf a gradient in its own format."""
    x = randn(gen, 2, 16, 7, 6, dtype=torch.float32, grad=False).to(torch.bfloat16)
    w = randn(gen, 8, 16, 3, 3, dtype=torch.float32, grad=False).to(torch.bfloat16)
    b = randn(gen, 8, dtype=torch.float32, grad=False).to(torch.bfloat16)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_()
    w_cl = w.to(memory_format=torch.channels_last).requires_grad_()
    b.requires_grad_()
    y = dt.conv2d(x_cl, w_cl, b, padding=1, activation="relu")
    [forward] = harness_conv2d.launches
    assert forward.args[0].ctypes.data == x_cl.data_ptr() and forward.args[1].ctypes.data == w_cl.data_ptr()
    assert is_channels_last(y) and y.dtype == torch.bfloat16
    grad_y = randn(gen, *y.shape, dtype=torch.float32, grad=False).to(torch.bfloat16)
    y.backward(grad_y.to(memory_format=torch.channels_last))
    assert is_channels_last(x_cl.grad) and is_channels_last(w_cl.grad)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y64 = TF.relu(TF.conv2d(x64, w64, b64, padding=1))
    y64.backward(grad_y.double() * (y.detach().double() > 0))  # the mask of the stored (rounded) y
    for ours, theirs in ((y, y64), (x_cl.grad, x64.grad), (w_cl.grad, w64.grad), (b.grad, b64.grad)):
        assert_close(ours.detach().float().numpy(), theirs.detach().numpy(), dtype=np.float32, precision="bf16")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_fake_kernels_answer_in_the_memory_formats_the_real_ones_do(device):
    """The fake kernels (torch.compile's shapes and strides) follow dlgpu.ops.conv2d's rule: channels_last
    answers where the device's backend reads channels_last at the call's precision, with groups 1."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        def tensor(*shape, dtype=torch.bfloat16, channels_last=True):
            t = torch.empty(*shape, dtype=dtype, device=device)
            return t.to(memory_format=torch.channels_last) if channels_last else t

        x, w, w_nchw = tensor(2, 8, 6, 6), tensor(4, 8, 3, 3), tensor(4, 8, 3, 3, channels_last=False)
        conv = torch.ops.dlgpu.conv2d
        on_gpu = device == "cuda"
        assert is_channels_last(conv(x, w, None, [1, 1], [1, 1], [1, 1], 1, None, None)) == on_gpu
        assert is_channels_last(conv(x.float(), w.float(), None, [1, 1], [1, 1], [1, 1], 1, None, "tf32")) == on_gpu
        assert conv(x.float(), w.float(), None, [1, 1], [1, 1], [1, 1], 1, None, "ieee").is_contiguous()
        assert conv(x, tensor(4, 4, 3, 3), None, [1, 1], [1, 1], [1, 1], 2, None, None).is_contiguous()
        grad_y = tensor(2, 4, 6, 6)
        grad_x, grad_w, _ = torch.ops.dlgpu.conv2d_backward(grad_y, x, w_nchw, None, [1, 1], [1, 1], [1, 1], 1,
                                                            None, None)
        assert is_channels_last(grad_x) == on_gpu and grad_w.is_contiguous()


# ---------------------------------------------------------------------------
# torch tensors straight into dlgpu.functional
# ---------------------------------------------------------------------------


def test_torch_in_torch_out_without_copies(gen):
    a = torch.randn(5, 7, generator=gen)
    b = torch.randn(7, 3, generator=gen)
    c = F.matmul(a, b)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32
    close(c, a.double() @ b.double())
    out = torch.full((5, 3), float("nan"))
    assert F.matmul(a, b, out=out) is out  # written in place through the DLPack view
    close(out, a.double() @ b.double())
    y, argmax = F.max_pool2d(torch.randn(1, 2, 4, 4, generator=gen), 2)
    assert isinstance(argmax, torch.Tensor) and argmax.dtype == torch.int32
    loss, probs = F.softmax_cross_entropy(torch.randn(3, 4, generator=gen), torch.tensor([0, 3, 1]))
    assert isinstance(loss, torch.Tensor) and loss.shape == ()


def test_transposed_torch_views_are_read_by_their_strides(gen):
    a = torch.randn(7, 5, generator=gen)
    b = torch.randn(3, 7, generator=gen)
    close(F.matmul(a.t(), b.t()), a.double().t() @ b.double().t())
    x = torch.randn(4, 6, generator=gen)
    close(F.relu(x[:, ::2]), torch.relu(x[:, ::2].double()), elementwise=True)
    assert F.relu(x[:, 1::2]).is_contiguous()


def test_sgd_step_updates_torch_parameters_in_place(gen):
    p = torch.randn(4, 3, generator=gen)
    g, v = torch.randn(4, 3, generator=gen), torch.zeros(4, 3)
    expected = p - 0.1 * g
    F.sgd_step(p, g, v, lr=0.1, momentum=0.9)
    close(p, expected.double(), elementwise=True)
    close(v, g.double(), elementwise=True)


def test_mixing_torch_cpu_tensors_and_numpy_answers_in_torch(gen):
    x = torch.randn(3, 4, generator=gen)
    w = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    y = F.linear(x, w)
    assert isinstance(y, torch.Tensor)
    close(y, x.double() @ torch.from_numpy(w).double().t())


def test_torch_bad_inputs_are_refused(gen):
    x = torch.randn(3, 4, generator=gen, requires_grad=True)
    with pytest.raises(DeviceError, match=r"relu: x \(torch.Tensor\) could not be shared.*detach"):
        F.relu(x)
    with pytest.raises(DtypeError, match="a floating dtype is required"):
        F.relu(torch.arange(3))
    with pytest.raises(DtypeError, match="must share one dtype"):
        F.matmul(torch.randn(2, 2), torch.randn(2, 2, dtype=torch.float64))
    with pytest.raises(ArgumentError, match="streams order GPU work only"):
        F.relu(torch.randn(3), stream=0)
    with pytest.raises(LayoutError, match="param is not C-contiguous"):
        F.sgd_step(torch.randn(4, 6)[:, ::2], torch.randn(4, 3), None, lr=0.1)
    with pytest.raises(LayoutError, match="out is not C-contiguous"):
        F.relu(torch.randn(3, 4), out=torch.empty(4, 3).t())
    assert torch.equal(F.relu(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))  # still working
    for dtype in (torch.float16, torch.bfloat16):  # 16-bit storage: answered in the same dtype
        assert torch.equal(F.relu(torch.tensor([-1.0, 2.5], dtype=dtype)), torch.tensor([0.0, 2.5], dtype=dtype))


# ---------------------------------------------------------------------------
# CUDA tensors (GPU run, with a CUDA build of torch)
# ---------------------------------------------------------------------------


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    return torch.device("cuda")


@pytest.mark.gpu
def test_cuda_tensors_run_on_the_gpu_and_come_back_as_cuda_tensors(gen):
    dev = _cuda()
    x = torch.randn(64, 33, generator=gen).to(dev)
    y = F.relu(x)
    assert isinstance(y, torch.Tensor) and y.device == x.device
    torch.testing.assert_close(y, torch.relu(x))
    xt = torch.randn(33, 64, generator=gen).to(dev).t()  # a strided view
    torch.testing.assert_close(F.tanh(xt), torch.tanh(xt), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_modules_backward_matches_torch(gen):
    dev = _cuda()
    layer = dt.Linear(65, 17, activation="relu").to(dev)
    x = torch.randn(33, 65, generator=gen).to(dev).requires_grad_()
    y = layer(x)
    y.square().sum().backward()
    x64 = x.detach().double().requires_grad_()
    ref = TF.relu(TF.linear(x64, layer.weight.double(), layer.bias.double()))
    ref.square().sum().backward()
    assert_close(y.detach().cpu().numpy(), ref.detach().cpu().numpy(), dtype=np.float32)
    assert_close(x.grad.cpu().numpy(), x64.grad.cpu().numpy(), dtype=np.float32)
    pool = dt.MaxPool2d(3, 2, 1)
    img = torch.randn(2, 3, 17, 16, generator=gen).to(dev)
    torch.testing.assert_close(pool(img), TF.max_pool2d(img, 3, 2, 1))


@pytest.mark.gpu
@pytest.mark.slow  # long pending work on purpose; not under the sanitizers
def test_cuda_op_runs_after_the_producers_pending_work_on_a_torch_stream(gen):
    dev = _cuda()
    side = torch.cuda.Stream()
    base = torch.randn(2048, 2048, generator=gen).to(dev)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        produced = base @ base  # long pending work on the side stream
        ours = F.relu(produced)  # runs on torch.cuda.current_stream() == side
    side.synchronize()
    torch.testing.assert_close(ours, torch.relu(base @ base))


def test_the_module_docstring_example_runs():
    import doctest

    result = doctest.testmod(dt, verbose=False)
    assert result.attempted >= 2 and result.failed == 0
