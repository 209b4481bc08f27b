"""dlgpu's ops as PyTorch operators: ``torch.ops.dlgpu.<name>``, registered with ``torch.library``.

    matmul(a, b, transpose_a, transpose_b, precision)               -> c
    matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision) -> (grad_a, grad_b)
    linear(x, weight, bias?, activation?, precision?)               -> y
    linear_backward(grad_y, x, weight, y?, activation?, precision?) -> (grad_x, grad_weight, grad_bias)
    conv2d(x, weight, bias?, stride, padding, dilation, groups, activation?, precision?) -> y
    conv2d_backward(grad_y, x, weight, y?, stride, padding, dilation, groups, activation?, precision?)
                                                                     -> (grad_x, grad_weight, grad_bias)
    relu(x), tanh(x), sigmoid(x)                                     -> y
    relu_backward(grad_y, y), tanh_backward(grad_y, y), sigmoid_backward(grad_y, y) -> grad_x
    max_pool2d(x, kernel_size, stride, padding)                      -> (y, argmax int32)
    max_pool2d_backward(grad_y, argmax, x, kernel_size, stride, padding) -> grad_x (x: the pooled input)
    softmax_cross_entropy(logits, labels)                            -> (mean loss, probs)
    softmax_cross_entropy_backward(probs, labels)                    -> grad_logits
    mse_loss(y, t)                                                   -> 0.5 * sum((y - t)^2) / N
    mse_loss_backward(y, t)                                          -> (y - t) / N

Every argument is positional and required (``None`` where optional), as in
``dlgpu.functional``'s ops of the same names; stride, padding, dilation and
kernel_size are (h, w) pairs.  ``precision=None`` means the process default
(``dlgpu.precision``).  Users call the wrappers in :mod:`dlgpu.torch`, which
take PyTorch's signatures.

What each registration gives:

- the real kernel: the ``dlgpu.functional`` op on the tensors themselves.
  CPU tensors run on the CPU backend (shared with NumPy through DLPack), CUDA
  tensors on the CUDA backend (shared with CuPy through DLPack, launched on
  ``torch.cuda.current_stream()``); nothing is copied on the way in or out.
- a fake kernel: the output shapes from the same shape rules the real op
  checks, so FakeTensors, ``torch.compile`` and ``torch.export`` trace through
  without running anything, and a bad shape is refused at trace time with
  the real op's message.  The convolutions' fakes also give the real op's
  memory formats: channels_last tensors reach the kernels uncopied where the
  device's backend reads them (dlgpu.ops.conv2d.channels_last_call), and
  y, grad_x and grad_weight then come back channels_last as their operands
  are; autograd saves x, weight and y as they are.
- autograd: each forward op's backward is the matching ``*_backward`` op, so a
  compiled graph's backward calls dlgpu's kernels too.  Double backward (a
  gradient of a gradient) is supported where its formula is a few more
  products: matmul, linear and relu.  The other backward ops refuse it with a
  BackendUnavailableError that says so, instead of returning a wrong (zero)
  second derivative.
- autocast: inside ``torch.autocast("cpu" or "cuda", dtype=torch.bfloat16 or
  torch.float16)``, matmul, linear and conv2d cast their floating inputs
  (float64 excepted, as in PyTorch) to the autocast dtype and run on 16-bit
  storage: fp32 accumulation, the output in that dtype; softmax cross-entropy
  casts its logits to float32 (the loss in fp32), as PyTorch's own autocast
  lists do; other ops run on what they are given.  The casts are autograd
  ops, so fp32 leaves get fp32 gradients.  ``AUTOCAST_CASTS_STORAGE = False``
  is the older mode: fp32 storage, with matmul, linear and conv2d called with
  ``precision=None`` run at ``"bf16"`` or ``"fp16"`` (operands rounded to 16
  bits, the output fp32; an explicit precision wins).
"""

from typing import Optional, Sequence

import torch
from torch import Tensor

import dlgpu.functional as F
from dlgpu.ops import conv2d as conv2d_checks
from dlgpu.ops import gemm as gemm_checks
from dlgpu.ops import pool as pool_checks
from dlgpu.ops import validate
from dlgpu.errors import BackendUnavailableError, ShapeError
from dlgpu.precision import BFLOAT16, FLOAT16, resolve_precision

__all__ = ["AUTOCAST_CASTS_STORAGE", "OPS"]

# True: autocast casts the floating inputs to 16 bits, as torch.library.register_autocast does.
# False: autocast selects the 16-bit compute precision on fp32 tensors (fp32 storage).
AUTOCAST_CASTS_STORAGE = True

# The 16-bit compute precision that each autocast dtype selects.
_AUTOCAST_PRECISION = {torch.bfloat16: "bf16", torch.float16: "fp16"}
# The NumPy storage dtype of each 16-bit torch dtype (how dlgpu.precision names them).
_STORAGE_DTYPES = {torch.bfloat16: BFLOAT16, torch.float16: FLOAT16}


def _plain(tensor):
    """The tensor without autograd history (DLPack refuses tensors that require grad); None stays None."""
    return None if tensor is None else tensor.detach()


def _op(name: str):
    return getattr(torch.ops.dlgpu, name).default


def _save_nothing(ctx, inputs, output):
    """setup_context of a refusing formula: it never reads what the forward saw."""


def _refuse_double_backward(name: str):
    """An autograd formula for a backward op whose own derivative dlgpu does not compute."""

    def backward(ctx, *grads):
        raise BackendUnavailableError(
            f"dlgpu::{name}: double backward (differentiating through a gradient, create_graph=True) "
            "is not implemented for this op; dlgpu supports it for matmul, linear and relu"
        )

    return backward


# ---------------------------------------------------------------------------
# matrix products
# ---------------------------------------------------------------------------


@torch.library.custom_op("dlgpu::matmul", mutates_args=())
def matmul(a: Tensor, b: Tensor, transpose_a: bool, transpose_b: bool, precision: Optional[str]) -> Tensor:
    return F.matmul(_plain(a), _plain(b), transpose_a=transpose_a, transpose_b=transpose_b, precision=precision)


@matmul.register_fake
def _(a, b, transpose_a, transpose_b, precision):
    m, n, _ = gemm_checks.matmul_dims("matmul", a, b, transpose_a, transpose_b)
    return a.new_empty((m, n))


@torch.library.custom_op("dlgpu::matmul_backward", mutates_args=())
def matmul_backward(
    grad_c: Tensor, a: Tensor, b: Tensor, transpose_a: bool, transpose_b: bool, precision: Optional[str]
) -> tuple[Tensor, Tensor]:
    return F.matmul_backward(
        _plain(grad_c), _plain(a), _plain(b), transpose_a=transpose_a, transpose_b=transpose_b, precision=precision
    )


@matmul_backward.register_fake
def _(grad_c, a, b, transpose_a, transpose_b, precision):
    gemm_checks.matmul_dims("matmul_backward", a, b, transpose_a, transpose_b)
    return a.new_empty(a.shape), b.new_empty(b.shape)


def _matmul_setup(ctx, inputs, output):
    a, b, ctx.transpose_a, ctx.transpose_b, ctx.precision = inputs
    ctx.save_for_backward(a, b)


def _matmul_grad(ctx, grad_c):
    a, b = ctx.saved_tensors
    grad_a, grad_b = _op("matmul_backward")(grad_c, a, b, ctx.transpose_a, ctx.transpose_b, ctx.precision)
    return grad_a, grad_b, None, None, None


def _matmul_backward_setup(ctx, inputs, output):
    grad_c, a, b, ctx.transpose_a, ctx.transpose_b, ctx.precision = inputs
    ctx.save_for_backward(grad_c, a, b)


def _matmul_backward_grad(ctx, grad_grad_a, grad_grad_b):
    # grad_a pairs grad_c with b, and <v, grad_a> = <grad_c, op(v) @ op(b)> for any v shaped like a
    # (likewise for b): so each second derivative is one more product or product gradient.
    grad_c, a, b = ctx.saved_tensors
    flags = (ctx.transpose_a, ctx.transpose_b, ctx.precision)
    d_grad_c = d_a = d_b = None
    if grad_grad_a is not None:
        d_grad_c = _op("matmul")(grad_grad_a, b, *flags)
        d_b = _op("matmul_backward")(grad_c, grad_grad_a, b, *flags)[1]
    if grad_grad_b is not None:
        term = _op("matmul")(a, grad_grad_b, *flags)
        d_grad_c = term if d_grad_c is None else d_grad_c + term
        d_a = _op("matmul_backward")(grad_c, a, grad_grad_b, *flags)[0]
    return d_grad_c, d_a, d_b, None, None, None


matmul.register_autograd(_matmul_grad, setup_context=_matmul_setup)
matmul_backward.register_autograd(_matmul_backward_grad, setup_context=_matmul_backward_setup)


@torch.library.custom_op("dlgpu::linear", mutates_args=())
def linear(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], activation: Optional[str], precision: Optional[str]
) -> Tensor:
    return F.linear(_plain(x), _plain(weight), _plain(bias), activation=activation, precision=precision)


@linear.register_fake
def _(x, weight, bias, activation, precision):
    validate.check_activation("linear", activation)
    return x.new_empty(gemm_checks.linear_shapes("linear", x, weight, bias))


@torch.library.custom_op("dlgpu::linear_backward", mutates_args=())
def linear_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, y: Optional[Tensor], activation: Optional[str],
    precision: Optional[str],
) -> tuple[Tensor, Tensor, Tensor]:
    return F.linear_backward(
        _plain(grad_y), _plain(x), _plain(weight), y=_plain(y), activation=activation, precision=precision
    )


@linear_backward.register_fake
def _(grad_y, x, weight, y, activation, precision):
    gemm_checks.linear_shapes("linear_backward", x, weight, None)
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[:1])


def _linear_setup(ctx, inputs, output):
    x, weight, bias, ctx.activation, ctx.precision = inputs
    ctx.has_bias = bias is not None
    # The fused ReLU's backward masks with the OUTPUT; without it y is not needed.
    ctx.save_for_backward(x, weight, output if ctx.activation == "relu" else None)


def _linear_grad(ctx, grad_y):
    x, weight, y = ctx.saved_tensors
    grad_x, grad_w, grad_b = _op("linear_backward")(grad_y, x, weight, y, ctx.activation, ctx.precision)
    return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None


def _linear_backward_setup(ctx, inputs, output):
    grad_y, x, weight, y, ctx.activation, ctx.precision = inputs
    ctx.save_for_backward(grad_y, x, weight, y)


def _linear_backward_grad(ctx, grad_grad_x, grad_grad_w, grad_grad_b):
    # With g = grad_y masked by the ReLU (y > 0): grad_x = g @ W, grad_w = g.T @ x, grad_b = sum(g).
    # Each is linear in g, x or W, and the mask is constant almost everywhere (no gradient to y).
    grad_y, x, weight, y = ctx.saved_tensors
    relu = ctx.activation == "relu"
    masked = _op("relu_backward")(grad_y, y) if relu else grad_y
    d_grad_y = d_x = d_w = None
    if grad_grad_x is not None:
        d_grad_y = _op("linear")(grad_grad_x, weight, None, None, ctx.precision)
        d_w = _op("matmul")(masked, grad_grad_x, True, False, ctx.precision)
    if grad_grad_w is not None:
        term = _op("linear")(x, grad_grad_w, grad_grad_b, None, ctx.precision)
        d_grad_y = term if d_grad_y is None else d_grad_y + term
        d_x = _op("matmul")(masked, grad_grad_w, False, False, ctx.precision)
    elif grad_grad_b is not None:
        term = grad_grad_b.expand(grad_y.shape)
        d_grad_y = term if d_grad_y is None else d_grad_y + term
    if relu and d_grad_y is not None:
        d_grad_y = _op("relu_backward")(d_grad_y, y)
    return d_grad_y, d_x, d_w, None, None, None


linear.register_autograd(_linear_grad, setup_context=_linear_setup)
linear_backward.register_autograd(_linear_backward_grad, setup_context=_linear_backward_setup)


# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------


@torch.library.custom_op("dlgpu::conv2d", mutates_args=())
def conv2d(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], groups: int, activation: Optional[str], precision: Optional[str],
) -> Tensor:
    return F.conv2d(
        _plain(x), _plain(weight), _plain(bias), stride, padding, dilation, groups,
        activation=activation, precision=precision,
    )


def _channels_last_call(op: str, precision, groups, x, *tensors) -> bool:
    """Whether the real op runs on channels_last storage (dlgpu.ops.conv2d.channels_last_call), asked of the
    backend that ``x``'s device selects: the fake kernels answer in the memory formats the real ones do."""
    if x.device.type == "cuda":
        from dlgpu.cuda import BACKEND
    else:
        from dlgpu.cpu import BACKEND
    resolved = resolve_precision(precision, op=op, dtype=_STORAGE_DTYPES.get(x.dtype))
    return conv2d_checks.channels_last_call(BACKEND, resolved, groups, x, *tensors)


def _empty(like, shape, channels_last: bool):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=layout)


@conv2d.register_fake
def _(x, weight, bias, stride, padding, dilation, groups, activation, precision):
    validate.check_activation("conv2d", activation)
    *_, shape = conv2d_checks.geometry("conv2d", x, weight, bias, stride, padding, dilation, groups)
    return _empty(x, shape, _channels_last_call("conv2d", precision, groups, x, weight))


@torch.library.custom_op("dlgpu::conv2d_backward", mutates_args=())
def conv2d_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, y: Optional[Tensor], stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int], groups: int, activation: Optional[str], precision: Optional[str],
) -> tuple[Tensor, Tensor, Tensor]:
    return F.conv2d_backward(
        _plain(grad_y), _plain(x), _plain(weight), y=_plain(y), stride=stride, padding=padding, dilation=dilation,
        groups=groups, activation=activation, precision=precision,
    )


@conv2d_backward.register_fake
def _(grad_y, x, weight, y, stride, padding, dilation, groups, activation, precision):
    conv2d_checks.geometry("conv2d_backward", x, weight, None, stride, padding, dilation, groups)
    # On channels_last storage each gradient takes its operand's format; an operand in neither format (a
    # slice) is copied to channels_last first, so only a C-contiguous one gives an NCHW gradient.
    stored = _channels_last_call("conv2d_backward", precision, groups, x, weight, grad_y, y)
    return (_empty(x, x.shape, stored and not x.is_contiguous()),
            _empty(weight, weight.shape, stored and not weight.is_contiguous()), weight.new_empty(weight.shape[:1]))


def _conv2d_setup(ctx, inputs, output):
    x, weight, bias, *ctx.hyper = inputs  # stride, padding, dilation, groups, activation, precision
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, output if ctx.hyper[4] == "relu" else None)


def _conv2d_grad(ctx, grad_y):
    x, weight, y = ctx.saved_tensors
    grad_x, grad_w, grad_b = _op("conv2d_backward")(grad_y, x, weight, y, *ctx.hyper)
    return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None, None, None, None, None


conv2d.register_autograd(_conv2d_grad, setup_context=_conv2d_setup)
conv2d_backward.register_autograd(_refuse_double_backward("conv2d_backward"), setup_context=_save_nothing)


# ---------------------------------------------------------------------------
# activations: each backward works from the forward's OUTPUT y
# ---------------------------------------------------------------------------


def _activation(name: str):
    """Register dlgpu::<name> and dlgpu::<name>_backward; return the forward op."""

    def forward(x: Tensor) -> Tensor:
        return getattr(F, name)(_plain(x))

    def backward(grad_y: Tensor, y: Tensor) -> Tensor:
        return getattr(F, f"{name}_backward")(_plain(grad_y), _plain(y))

    forward_op = torch.library.custom_op(f"dlgpu::{name}", forward, mutates_args=())
    backward_op = torch.library.custom_op(f"dlgpu::{name}_backward", backward, mutates_args=())
    forward_op.register_fake(lambda x: x.new_empty(x.shape))
    backward_op.register_fake(lambda grad_y, y: grad_y.new_empty(grad_y.shape))

    def setup(ctx, inputs, output):
        ctx.save_for_backward(output)

    def grad(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return backward_op(grad_y, y)

    forward_op.register_autograd(grad, setup_context=setup)
    return forward_op, backward_op


def _relu_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _relu_backward_grad(ctx, grad_grad_x):
    # grad_x = grad_y * (y > 0): linear in grad_y; the mask has no gradient almost everywhere.
    (y,) = ctx.saved_tensors
    return _op("relu_backward")(grad_grad_x, y), None


relu, relu_backward = _activation("relu")
tanh, tanh_backward = _activation("tanh")
sigmoid, sigmoid_backward = _activation("sigmoid")
relu_backward.register_autograd(_relu_backward_grad, setup_context=_relu_backward_setup)
tanh_backward.register_autograd(_refuse_double_backward("tanh_backward"), setup_context=_save_nothing)
sigmoid_backward.register_autograd(_refuse_double_backward("sigmoid_backward"), setup_context=_save_nothing)


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------


@torch.library.custom_op("dlgpu::max_pool2d", mutates_args=())
def max_pool2d(
    x: Tensor, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> tuple[Tensor, Tensor]:
    return F.max_pool2d(_plain(x), kernel_size, stride=stride, padding=padding)


@max_pool2d.register_fake
def _(x, kernel_size, stride, padding):
    *_, shape = pool_checks.geometry("max_pool2d", x, kernel_size, stride, padding)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int32)


@torch.library.custom_op("dlgpu::max_pool2d_backward", mutates_args=())
def max_pool2d_backward(
    grad_y: Tensor, argmax: Tensor, x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
    padding: Sequence[int],
) -> Tensor:
    # Only x's shape is read.  Taking x itself (as PyTorch's max_pool2d_with_indices_backward takes its
    # input) keeps this op in x's autograd graph, so a double backward reaches its refusal below.
    return F.max_pool2d_backward(_plain(grad_y), argmax, tuple(x.shape), kernel_size, stride, padding)


@max_pool2d_backward.register_fake
def _(grad_y, argmax, x, kernel_size, stride, padding):
    # The window's own checks; the shapes may be symbolic here, so the real op compares them.
    pool_checks.window("max_pool2d_backward", x.shape, kernel_size, stride, padding)
    return grad_y.new_empty(x.shape)


def _max_pool2d_setup(ctx, inputs, output):
    x, *ctx.window = inputs  # kernel_size, stride, padding
    ctx.save_for_backward(x, output[1])
    ctx.mark_non_differentiable(output[1])


def _max_pool2d_grad(ctx, grad_y, _grad_argmax):
    x, argmax = ctx.saved_tensors
    return _op("max_pool2d_backward")(grad_y, argmax, x, *ctx.window), None, None, None


max_pool2d.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup)
max_pool2d_backward.register_autograd(_refuse_double_backward("max_pool2d_backward"), setup_context=_save_nothing)


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------


@torch.library.custom_op("dlgpu::softmax_cross_entropy", mutates_args=())
def softmax_cross_entropy(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    return F.softmax_cross_entropy(_plain(logits), labels)


@softmax_cross_entropy.register_fake
def _(logits, labels):
    validate.check_ndim("softmax_cross_entropy", "logits", logits, 2, "(N, classes)")
    validate.check_ndim("softmax_cross_entropy", "labels", labels, 1, "(N,)")
    loss_dtype = torch.float32 if logits.dtype in _AUTOCAST_PRECISION else logits.dtype  # 16-bit: an fp32 loss
    return logits.new_empty((), dtype=loss_dtype), logits.new_empty(logits.shape)


@torch.library.custom_op("dlgpu::softmax_cross_entropy_backward", mutates_args=())
def softmax_cross_entropy_backward(probs: Tensor, labels: Tensor) -> Tensor:
    return F.softmax_cross_entropy_backward(_plain(probs), labels)


@softmax_cross_entropy_backward.register_fake
def _(probs, labels):
    return probs.new_empty(probs.shape)


def _softmax_cross_entropy_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1], inputs[1])


def _softmax_cross_entropy_grad(ctx, grad_loss, grad_probs):
    probs, labels = ctx.saved_tensors
    grad_logits = _op("softmax_cross_entropy_backward")(probs, labels) * grad_loss
    if grad_probs is not None:
        # probs is returned for the backward pass, but a caller may build on it too: the softmax
        # Jacobian-vector product, probs * (v - <v, probs>) per row, a few elementwise torch ops.
        grad_logits = grad_logits + probs * (grad_probs - (grad_probs * probs).sum(dim=1, keepdim=True))
    return grad_logits, None


softmax_cross_entropy.register_autograd(_softmax_cross_entropy_grad, setup_context=_softmax_cross_entropy_setup)
softmax_cross_entropy_backward.register_autograd(
    _refuse_double_backward("softmax_cross_entropy_backward"), setup_context=_save_nothing
)


@torch.library.custom_op("dlgpu::mse_loss", mutates_args=())
def mse_loss(y: Tensor, t: Tensor) -> Tensor:
    return F.mse_loss(_plain(y), _plain(t))


@mse_loss.register_fake
def _(y, t):
    if y.dim() < 1 or y.shape != t.shape:
        raise ShapeError(f"mse_loss: y {tuple(y.shape)} and t {tuple(t.shape)} must be one shape (N, ...)")
    return y.new_empty((), dtype=torch.float32 if y.dtype in _AUTOCAST_PRECISION else y.dtype)  # 16-bit: fp32


@torch.library.custom_op("dlgpu::mse_loss_backward", mutates_args=())
def mse_loss_backward(y: Tensor, t: Tensor) -> Tensor:
    return F.mse_loss_backward(_plain(y), _plain(t))


@mse_loss_backward.register_fake
def _(y, t):
    return y.new_empty(y.shape)


def _mse_loss_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _mse_loss_grad(ctx, grad_loss):
    y, t = ctx.saved_tensors
    grad_y = _op("mse_loss_backward")(y, t) * grad_loss
    return grad_y, -grad_y  # the loss depends on y - t only


mse_loss.register_autograd(_mse_loss_grad, setup_context=_mse_loss_setup)
mse_loss_backward.register_autograd(_refuse_double_backward("mse_loss_backward"), setup_context=_save_nothing)


# ---------------------------------------------------------------------------
# autocast
# ---------------------------------------------------------------------------

# Forward ops autocast touches: "lower" ones run at the autocast dtype, "float32" ones in fp32
# (the loss, as in PyTorch's own autocast lists).  Backward ops follow their forward.
_AUTOCAST_ROLES = {"matmul": "lower", "linear": "lower", "conv2d": "lower", "softmax_cross_entropy": "float32",
                   "mse_loss": "float32"}

_library = torch.library.Library("dlgpu", "FRAGMENT")


def _autocast_kernel(name: str, device_type: str):
    op = _op(name)
    role = _AUTOCAST_ROLES[name]
    arguments = [argument.name for argument in op._schema.arguments]
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    # The same re-dispatch torch.library.register_autocast performs: this kernel runs once, above autograd
    # (so setup_context saves what it chose), then the op runs with this autocast key masked.
    masked = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def kernel(_keyset, *args, **kwargs):
        args = [*args, *(kwargs[argument] for argument in arguments[len(args) :])]
        dtype = torch.get_autocast_dtype(device_type)
        if AUTOCAST_CASTS_STORAGE:
            target = dtype if role == "lower" else torch.float32
            args = [a.to(target) if isinstance(a, Tensor) and a.is_floating_point() and a.dtype != torch.float64
                    else a for a in args]
        elif role == "lower" and args[-1] is None:  # precision, always the last argument
            args[-1] = _AUTOCAST_PRECISION.get(dtype)
        with torch._C._ExcludeDispatchKeyGuard(masked):
            return op(*args)

    return key, kernel


def _register_autocast() -> None:
    for name in _AUTOCAST_ROLES:
        for device_type in ("cpu", "cuda"):
            key, kernel = _autocast_kernel(name, device_type)
            _library.impl(name, kernel, key, with_keyset=True)


_register_autocast()

# Every op of dlgpu.functional but sgd_step, which updates parameters in place: an optimizer's job.
OPS = tuple(name for name in F.__all__ if name != "sgd_step")
