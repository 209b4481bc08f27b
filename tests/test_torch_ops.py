"""torch.ops.dlgpu as PyTorch operators: opcheck for every op, fake kernels, torch.compile and torch.export,
autocast, double backward, and the DlgpuErrors for PyTorch keywords dlgpu cannot honour.

CPU tensors here; the CUDA-tensor opcheck is marked gpu and also needs a CUDA build of torch.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402
from torch.autograd import gradgradcheck  # noqa: E402

import dlgpu.torch as dt  # noqa: E402
from dlgpu.errors import ArgumentError, BackendUnavailableError, DlgpuError, DtypeError, ShapeError  # noqa: E402
from dlgpu.testing import assert_close  # noqa: E402
from dlgpu.torch import ops  # noqa: E402


@pytest.fixture
def gen(request):
    import zlib

    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _sample_inputs(name: str, gen, device: str, dtype):
    """Arguments for torch.ops.dlgpu.<name>: odd sizes, every optional argument used somewhere."""

    def t(*shape, grad=True):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_(grad)

    def labels(n, classes):
        return torch.randint(0, classes, (n,), generator=gen).to(device)

    x, w, b = t(5, 7), t(3, 7), t(3)
    cx, cw, cb = t(2, 3, 7, 6), t(4, 3, 3, 2), t(4)
    hyper = ([2, 1], [1, 0], [1, 2])  # stride, padding, dilation: output (2, 4, 4, 4)
    argmax = torch.tensor([0, 1, 4, 5, 10, 11, 14, 15], dtype=torch.int32).reshape(1, 2, 2, 2).to(device)
    cases = {
        "matmul": (t(7, 5), t(3, 7), True, True, None),
        "matmul_backward": (t(5, 3), t(5, 7), t(7, 3), False, False, "ieee"),
        "linear": (x, w, b, "relu", None),
        "linear_backward": (t(5, 3), x, w, torch.relu(t(5, 3, grad=False)), "relu", None),
        "conv2d": (cx, cw, cb, *hyper, 1, "relu", None),
        # Backward ops whose own backward dlgpu refuses get inputs that need no gradient.
        "conv2d_backward": (t(2, 4, 4, 4, grad=False), cx.detach(), cw.detach(), None, *hyper, 1, None, None),
        "relu": (t(3, 4),),
        "relu_backward": (t(3, 4), torch.relu(t(3, 4, grad=False))),
        "tanh": (t(3, 4),),
        "tanh_backward": (t(3, 4, grad=False), torch.tanh(t(3, 4, grad=False))),
        "sigmoid": (t(3, 4),),
        "sigmoid_backward": (t(3, 4, grad=False), torch.sigmoid(t(3, 4, grad=False))),
        "max_pool2d": (t(2, 3, 7, 8), [3, 3], [2, 2], [1, 1]),
        "max_pool2d_backward": (t(1, 2, 2, 2, grad=False), argmax, t(1, 2, 4, 4, grad=False), [2, 2], [2, 2], [0, 0]),
        "softmax_cross_entropy": (t(6, 9), labels(6, 9)),
        "softmax_cross_entropy_backward": (torch.softmax(t(6, 9, grad=False), 1), labels(6, 9)),
        "mse_loss": (t(6, 3), t(6, 3)),
        "mse_loss_backward": (t(6, 3, grad=False), t(6, 3, grad=False)),
    }
    return cases[name]


# ---------------------------------------------------------------------------
# opcheck: schema, autograd registration, fake kernel, AOT dispatch with dynamic shapes
# ---------------------------------------------------------------------------


def test_every_op_of_dlgpu_functional_but_sgd_is_registered():
    import dlgpu.functional as F

    assert set(ops.OPS) == set(F.__all__) - {"sgd_step"}
    for name in ops.OPS:
        assert hasattr(torch.ops.dlgpu, name), name


@pytest.mark.parametrize("name", ops.OPS)
def test_opcheck_passes_on_cpu_tensors(gen, name):
    args = _sample_inputs(name, gen, "cpu", torch.float64)
    torch.library.opcheck(getattr(torch.ops.dlgpu, name), args)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ops.OPS)
def test_opcheck_passes_on_cuda_tensors(gen, name):
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    args = _sample_inputs(name, gen, "cuda", torch.float32)
    torch.library.opcheck(getattr(torch.ops.dlgpu, name), args)


# ---------------------------------------------------------------------------
# fake kernels: shapes without data
# ---------------------------------------------------------------------------


def _torch_lenet():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, stride=(1, 2), padding=1), torch.nn.Tanh(), torch.nn.MaxPool2d(2, padding=1),
        torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 2, 10), torch.nn.Sigmoid(),
    )


def test_a_model_on_the_meta_device_propagates_shapes_like_torch():
    torch.manual_seed(0)
    theirs = _torch_lenet()
    ours = dt.convert(theirs).to("meta")
    x = torch.empty(3, 1, 9, 8)
    y = ours(x.to("meta"))
    assert y.device.type == "meta" and y.shape == theirs(x).shape == (3, 10)


def test_fake_kernels_refuse_bad_shapes_with_the_real_ops_message():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, w = torch.empty(8, 5), torch.empty(3, 4)
        with pytest.raises(ShapeError, match=r"linear: x has 5 features but weight \(3, 4\) expects 4"):
            torch.ops.dlgpu.linear(x, w, None, None, None)
        image, filters = torch.empty(1, 2, 4, 4), torch.empty(3, 2, 5, 5)
        with pytest.raises(ArgumentError, match="conv2d: the kernel spans 5 along height"):
            torch.ops.dlgpu.conv2d(image, filters, None, [1, 1], [0, 0], [1, 1], 1, None, None)
        y, argmax = torch.ops.dlgpu.max_pool2d(torch.empty(2, 3, 7, 8), [3, 3], [2, 2], [1, 1])
        assert y.shape == argmax.shape == (2, 3, 4, 4) and argmax.dtype == torch.int32


# ---------------------------------------------------------------------------
# torch.compile and torch.export
# ---------------------------------------------------------------------------


def test_compiled_converted_lenet_has_one_graph_and_matches_eager(gen):
    torch.manual_seed(1)
    model = dt.convert(_torch_lenet())
    loss_fn = dt.CrossEntropyLoss()
    x = torch.randn(4, 1, 9, 8, generator=gen)
    labels = torch.randint(0, 10, (4,), generator=gen)

    def loss_and_grads(fn):
        model.zero_grad()
        loss = fn(x, labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager = loss_and_grads(lambda x, labels: loss_fn(model(x), labels))
    # fullgraph=True fails on any graph break; aot_eager traces forward and backward through the fake
    # kernels and runs the captured graphs (inductor would add minutes of C++ compilation here).
    compiled_fn = torch.compile(lambda x, labels: loss_fn(model(x), labels), fullgraph=True, backend="aot_eager")
    compiled = loss_and_grads(compiled_fn)
    torch.testing.assert_close(compiled[0], eager[0])
    for ours, reference in zip(compiled[1], eager[1]):
        torch.testing.assert_close(ours, reference)


def test_export_records_the_dlgpu_ops(gen):
    torch.manual_seed(2)
    model = dt.convert(_torch_lenet())
    x = torch.randn(2, 1, 9, 8, generator=gen)
    program = torch.export.export(model, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"dlgpu.conv2d.default", "dlgpu.relu.default", "dlgpu.tanh.default", "dlgpu.max_pool2d.default",
            "dlgpu.linear.default", "dlgpu.sigmoid.default"} <= targets
    torch.testing.assert_close(program.module()(x), model(x))


# ---------------------------------------------------------------------------
# autocast: 16-bit storage, or (the older switch) 16-bit compute precisions on fp32 tensors
# ---------------------------------------------------------------------------

AUTOCAST = [(torch.bfloat16, "bf16"), (torch.float16, "fp16")]


def _autocast_net(gen):
    """(leaves, net): a conv2d + ReLU + linear net on fp32 leaves; net(*tensors, precision=None)."""
    x = torch.randn(2, 3, 9, 9, generator=gen, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, generator=gen, requires_grad=True)
    lw = torch.randn(4, 5 * 7 * 7, generator=gen, requires_grad=True)

    def net(x, w, lw, precision=None):
        y = dt.conv2d(x, w, activation="relu", precision=precision).flatten(1)
        return dt.linear(y, lw, precision=precision)

    return (x, w, lw), net


def _forward_backward(net, leaves, **kwargs):
    out = net(*leaves, **kwargs)
    return out, torch.autograd.grad(out.float().square().sum(), leaves)


@pytest.mark.parametrize("dtype, precision", AUTOCAST, ids=["bf16", "fp16"])
def test_autocast_casts_to_16_bit_storage_forward_and_backward(gen, dtype, precision):
    """Under autocast the ops run on 16-bit copies of their inputs (the output in that dtype): the same
    bits as calling them on tensors cast by hand; fp32 leaves get fp32 gradients, the cast ones' widened."""
    leaves, net = _autocast_net(gen)
    with torch.autocast("cpu", dtype=dtype):
        cast = _forward_backward(net, leaves)
    by_hand = [leaf.detach().to(dtype).requires_grad_() for leaf in leaves]
    explicit = _forward_backward(net, by_hand)
    exact = _forward_backward(net, leaves)
    assert cast[0].dtype == dtype and all(g.dtype == torch.float32 for g in cast[1])
    for ours, expected, wide in zip((cast[0], *cast[1]), (explicit[0], *explicit[1]), (exact[0], *exact[1])):
        torch.testing.assert_close(ours.float(), expected.float(), rtol=0, atol=0)
        error = (ours.double() - wide.double()).norm() / wide.double().norm()
        assert 0 < error < 0.05  # rounded to 16 bits, and no further off than that
    assert ops.AUTOCAST_CASTS_STORAGE


@pytest.mark.parametrize("dtype, precision", AUTOCAST, ids=["bf16", "fp16"])
def test_autocast_can_select_the_16_bit_precision_on_fp32_storage(gen, dtype, precision, monkeypatch):
    """AUTOCAST_CASTS_STORAGE = False: fp32 tensors throughout, products at the 16-bit precision."""
    monkeypatch.setattr(ops, "AUTOCAST_CASTS_STORAGE", False)
    leaves, net = _autocast_net(gen)
    with torch.autocast("cpu", dtype=dtype):
        cast = _forward_backward(net, leaves)
        ieee = net(*leaves, precision="ieee")  # an explicit precision wins
    explicit = _forward_backward(net, leaves, precision=precision)
    exact = _forward_backward(net, leaves)
    assert cast[0].dtype == torch.float32
    torch.testing.assert_close(ieee, exact[0], rtol=0, atol=0)
    for ours, expected, wide in zip((cast[0], *cast[1]), (explicit[0], *explicit[1]), (exact[0], *exact[1])):
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)
        assert not torch.equal(ours, wide)  # the operands really were rounded


def test_autocast_runs_the_loss_in_float32_and_leaves_other_ops_alone(gen):
    a = torch.randn(6, 5, generator=gen)
    with torch.autocast("cpu", dtype=torch.float16):
        activation = dt.tanh(a)
        loss = dt.cross_entropy(a.to(torch.float16), torch.tensor([0, 1, 2, 3, 4, 0]))
        product = dt.matmul(a.double(), a.T.double())  # float64 is not cast, as in PyTorch
    torch.testing.assert_close(activation, dt.tanh(a), rtol=0, atol=0)
    assert loss.dtype == torch.float32
    expected = dt.cross_entropy(a.to(torch.float16).float(), torch.tensor([0, 1, 2, 3, 4, 0]))
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    assert product.dtype == torch.float64


def test_16_bit_tensors_run_through_the_ops_and_their_gradients(gen):
    """bfloat16 and float16 tensors outside autocast: outputs and gradients in their dtype (fp32 loss)."""
    for dtype in (torch.bfloat16, torch.float16):
        logits = torch.randn(4, 6, generator=gen).to(dtype).requires_grad_()
        hidden = dt.relu(logits)
        loss = dt.cross_entropy(hidden, torch.tensor([1, 0, 5, 2]))
        assert hidden.dtype == dtype and loss.dtype == torch.float32
        (grad,) = torch.autograd.grad(loss, logits)
        assert grad.dtype == dtype
        wide = logits.detach().float().requires_grad_()
        (expected,) = torch.autograd.grad(TF.cross_entropy(torch.relu(wide), torch.tensor([1, 0, 5, 2])), wide)
        assert (grad.float() - expected).norm() / expected.norm() < 1e-2


@pytest.mark.gpu
def test_cuda_autocast_and_compile_run_the_kernels(gen):
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    torch.manual_seed(4)
    model = dt.convert(_torch_lenet()).cuda()
    x = torch.randn(4, 1, 9, 8, generator=gen).cuda()
    features = model[:7](x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        cast = model[7](features)  # the Linear under autocast: bf16 storage
    layer = model[7]
    explicit = dt.linear(*(t.to(torch.bfloat16) for t in (features, layer.weight, layer.bias)))
    assert cast.dtype == torch.bfloat16
    torch.testing.assert_close(cast, explicit, rtol=0, atol=0)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))


# ---------------------------------------------------------------------------
# double backward
# ---------------------------------------------------------------------------


def _randn64(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("activation, with_bias", [("relu", True), (None, False)])
def test_linear_double_backward(gen, activation, with_bias):
    args = (_randn64(gen, 5, 7), _randn64(gen, 3, 7)) + ((_randn64(gen, 3),) if with_bias else ())
    assert gradgradcheck(lambda *a: dt.linear(*a, activation=activation), args, fast_mode=True)


def test_relu_double_backward(gen):
    assert gradgradcheck(dt.relu, (_randn64(gen, 4, 6),), fast_mode=True)


@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_double_backward(gen, transpose_a, transpose_b):
    a = _randn64(gen, 7, 5) if transpose_a else _randn64(gen, 5, 7)
    b = _randn64(gen, 3, 7) if transpose_b else _randn64(gen, 7, 3)
    fn = lambda a, b: dt.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)  # noqa: E731
    assert gradgradcheck(fn, (a, b), fast_mode=True)


def test_a_gradient_penalty_through_linear_and_relu_matches_torch(gen):
    x, w = _randn64(gen, 6, 5), _randn64(gen, 4, 5)
    lw = _randn64(gen, 2, 4)

    def penalty(linear, relu):
        y = linear(relu(linear(x, w)), lw)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), [w, lw])

    ours = penalty(lambda a, b: dt.linear(a, b), dt.relu)
    theirs = penalty(lambda a, b: TF.linear(a, b), torch.relu)
    for g, h in zip(ours, theirs):
        torch.testing.assert_close(g, h)


REFUSED = {
    "conv2d_backward": lambda x: dt.conv2d(x, torch.ones(2, 3, 2, 2, dtype=x.dtype)),
    "tanh_backward": dt.tanh,
    "sigmoid_backward": dt.sigmoid,
    "max_pool2d_backward": lambda x: dt.max_pool2d(x, 2),
    "softmax_cross_entropy_backward": lambda x: dt.cross_entropy(x.flatten(1), torch.tensor([0, 1])),
    "mse_loss_backward": lambda x: dt.mse_loss(x, torch.zeros_like(x)),
}


@pytest.mark.parametrize("name", REFUSED)
def test_double_backward_elsewhere_is_refused_with_a_dlgpu_error(gen, name):
    x = _randn64(gen, 2, 3, 4, 4)
    (grad,) = torch.autograd.grad(REFUSED[name](x).sum(), x, create_graph=True)  # first order works
    with pytest.raises(BackendUnavailableError, match=rf"dlgpu::{name}: double backward .* matmul, linear and relu"):
        grad.square().sum().backward()


def test_the_probabilities_output_is_differentiable(gen):
    logits = _randn64(gen, 4, 6)
    labels = torch.tensor([0, 5, 2, 2])
    loss, probs = torch.ops.dlgpu.softmax_cross_entropy(logits, labels)
    (ours,) = torch.autograd.grad(loss + probs[:, 1].sum(), logits)
    theirs_logits = logits.detach().requires_grad_()
    reference = TF.cross_entropy(theirs_logits, labels) + torch.softmax(theirs_logits, 1)[:, 1].sum()
    (theirs,) = torch.autograd.grad(reference, theirs_logits)
    torch.testing.assert_close(ours, theirs)


# ---------------------------------------------------------------------------
# PyTorch's signatures: what works, and DlgpuErrors for what dlgpu cannot do
# ---------------------------------------------------------------------------

UNSUPPORTED = [
    (lambda: dt.Conv2d(4, 4, 3, padding_mode="reflect"), "padding_mode='reflect'"),
    (lambda: dt.Conv2d(4, 4, 2, padding="same"), "padding='same' with a 2x2 kernel"),
    (lambda: dt.MaxPool2d(2, ceil_mode=True), "ceil_mode=True"),
    (lambda: dt.MaxPool2d(2, return_indices=True), "return_indices=True"),
    (lambda: dt.MaxPool2d(3, dilation=(1, 2)), "dilation=\\(1, 2\\)"),
    (lambda: dt.ReLU(inplace=True), "inplace=True"),
    (lambda: dt.CrossEntropyLoss(weight=torch.ones(3)), "weight"),
    (lambda: dt.CrossEntropyLoss(label_smoothing=0.1), "label_smoothing=0.1"),
    (lambda: dt.CrossEntropyLoss(reduction="sum"), "reduction='sum'"),
    (lambda: dt.CrossEntropyLoss(ignore_index=0), "ignore_index=0"),
    (lambda: dt.Linear(3, 2, activation="gelu"), "activation must be None or 'relu'"),
    (lambda: dt.conv2d(torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3), None, 1, 0, 1, 2.0), "groups must be"),
    (lambda: dt.max_pool2d(torch.randn(1, 1, 4, 4), 2, ceil_mode=True), "ceil_mode=True"),
    (lambda: dt.relu(torch.randn(3), inplace=True), "inplace=True"),
    (lambda: dt.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), label_smoothing=0.2), "label_smoothing"),
    (lambda: dt.MSELoss(reduction="none"), "reduction='none'"),
    (lambda: dt.mse_loss(torch.randn(2, 3), torch.randn(2, 3), weight=torch.ones(2, 3)), "weight"),
]


@pytest.mark.parametrize("make, message", UNSUPPORTED, ids=[m for _, m in UNSUPPORTED])
def test_unsupported_pytorch_keywords_raise_a_dlgpu_error(make, message):
    with pytest.raises(DlgpuError, match=message) as info:
        make()
    assert isinstance(info.value, ArgumentError)


def test_pytorch_signatures_and_defaults_work_positionally(gen):
    x, w, b = (torch.randn(*shape, generator=gen, dtype=torch.float64) for shape in [(2, 3, 8, 8), (4, 3, 3, 3), (4,)])
    for args in [(b, 2, 1, 1, 1), (b, 1, "same", 2), (None, 1, "valid")]:
        torch.testing.assert_close(dt.conv2d(x, w, *args), TF.conv2d(x, w, *args), rtol=1e-12, atol=1e-12)
    # grouped and depthwise: 2 groups of 2 channels, and 4 groups of 1 channel with 2 filters each
    x4 = torch.randn(2, 4, 7, 7, generator=gen, dtype=torch.float64)
    for w4, groups in [(torch.randn(6, 2, 3, 3, generator=gen, dtype=torch.float64), 2),
                       (torch.randn(8, 1, 3, 3, generator=gen, dtype=torch.float64), 4)]:
        torch.testing.assert_close(dt.conv2d(x4, w4, None, 1, 1, 1, groups), TF.conv2d(x4, w4, None, 1, 1, 1, groups),
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dt.max_pool2d(x, 3, 2, 1, 1, False, False), TF.max_pool2d(x, 3, 2, 1))
    layer = dt.Conv2d(3, 4, 3, 1, "same", 1, 1, True, "zeros", None, torch.float64)
    assert layer.padding == "same" and layer(x).shape == (2, 4, 8, 8)
    assert dt.CrossEntropyLoss(None, None, -100, None, "mean", 0.0)(x[:, :, 0, 0], torch.tensor([1, 2])).shape == ()


def test_linear_takes_leading_dimensions_like_torch(gen):
    w, b = torch.randn(5, 7, generator=gen), torch.randn(5, generator=gen)
    for shape in [(7,), (3, 7), (2, 3, 7)]:
        x = torch.randn(*shape, generator=gen)
        y = dt.linear(x, w, b)
        assert y.shape == (*shape[:-1], 5)
        assert_close(y.numpy(), TF.linear(x.double(), w.double(), b.double()).numpy(), dtype=np.float32)
