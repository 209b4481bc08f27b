"""Launchers for the NHWC (channels_last) tensor-core convolutions of kernels/conv2d_tc.cu.

Arrays as they are stored: x (N, H, W, C), weight (K, R, S, C) (each output channel's filter with its
channels innermost: how PyTorch stores a channels_last weight), y (N, P, Q, K).  The three passes:

- :func:`forward`: y = act(conv(x, weight) + bias), bias (K,) float32 or the operands' 16-bit type.
- :func:`dgrad`: grad_x (N, H, W, C) from grad_y (N, P, Q, K) and weight; with ``mask`` (the forward
  output y of a fused ReLU) grad_y is multiplied by (y > 0) first.
- :func:`wgrad`: grad_w (K, R, S, C) from grad_y and x, the same mask; split over pixels with a
  fixed-order combine (deterministic), the split count from the shape only.

These run on tensor cores only: operands float32 at tf32, bf16 or fp16 (the kernels read the storage of
the precision: fp32 operands at bf16 / fp16 are cast once by kernels/gemm_cast.cu), or 16-bit (float16;
bfloat16 or uint16 bits with ``precision="bf16"``, see :mod:`dlgpu.cuda.gemm_cast`) at their own.  Outputs
are float32, or the 16-bit operands' type (the default for 16-bit operands; ``out_dtype`` chooses).
Channel counts that are not a multiple of 16 bytes (C = 3 of a first layer) are padded with zeros by
that producer pass, which also applies the backward's ReLU mask; stride, padding and dilation are (h, w).

:func:`conv2d` and :func:`conv2d_backward` at the end are the backend's functions on (N, C, H, W) arrays in
either memory format (dlgpu.memory_format), which dlgpu.cuda.conv2d sends here.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import numpy as np

from dlgpu import memory_format
from dlgpu.cuda import bias_grad as _bias_grad
from dlgpu.cuda import gemm_cast as _cast
from dlgpu.cuda import kernel_decls
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.gemm import FLAG_BIAS, FLAG_RELU, address, config_by_name, operand_precision, tc_tile_bytes
from dlgpu.cuda.launch import Launch, fast_divisors, grid_stride_blocks, multiprocessor_count
from dlgpu.errors import ArgumentError, DtypeError, LayoutError, ShapeError

# The package attribute dlgpu.cuda.conv2d is the backend function; this is the launcher module.
_conv2d = importlib.import_module("dlgpu.cuda.conv2d")

FAMILY = "conv2d_tc"
FLAG_STORE_HALF = kernel_decls.integer_defines("conv2d_common.cuh")["CONV_STORE_HALF"]
# kernels/conv2d_tc.cu's CONV_TC_NHWC_CONFIGS, X(BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS), widest first.
CONFIGS = _conv2d.NHWC_CONFIGS
STAGES = {f"{bm}x{bn}": int(stages)
          for bm, bn, _, _, _, stages, _ in kernel_decls.x_macro("conv2d_tc.cu", "CONV_TC_NHWC_CONFIGS")}
# Which of a pass's tiles are stored k-contiguous (tc_tile.cuh's TcMainloop: kKContigA, kKContigB).
_K_CONTIGUOUS = {"forward": (True, True), "dgrad": (True, False), "wgrad": (False, False)}


def kernel_name(pass_: str, config) -> str:
    return _conv2d.kernel_name(pass_, "tc", config, layout="nhwc")


def shared_bytes(config, pass_: str, precision: str) -> int:
    """Dynamic shared memory of a pass's kernel: its stages x (A tile + B tile) (tc_tile.cuh)."""
    a_k, b_k = _K_CONTIGUOUS[pass_]
    stage = tc_tile_bytes(config.block_m, a_k, precision) + tc_tile_bytes(config.block_n, b_k, precision)
    return STAGES[config.name] * stage


def geometry(op: str, x_shape, w_shape, stride, padding, dilation) -> _conv2d.Geometry:
    """The Geometry of x (N, H, W, C) convolved with weight (K, R, S, C)."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ShapeError(f"{op}: NHWC x and weight must be 4-D, got {tuple(x_shape)} and {tuple(w_shape)}")
    n, h, w, c = x_shape
    k, r, s, c_w = w_shape
    return _conv2d.geometry(op, (n, c, h, w), (k, c_w, r, s), stride, padding, dilation)


def choose(pass_: str, g: _conv2d.Geometry, sms: int, config: str | None = None):
    """The tile configuration of a pass: the widest that fills the device (forward, dgrad); for wgrad one
    from the shape alone (it sets the split count, which must not depend on the device)."""
    chosen = config_by_name(CONFIGS, config, op="conv2d")
    if chosen is not None:
        return chosen
    if pass_ == "wgrad":
        return CONFIGS[-1] if g.K <= CONFIGS[-1].block_m else CONFIGS[0]
    rows, cols = (g.pixels, g.K) if pass_ == "forward" else (g.N * g.H * g.W, g.C)
    return _conv2d._pick_config(CONFIGS, rows, cols, sms)


def _precision(op: str, precision, *arrays) -> str:
    resolved = operand_precision(op, precision, *arrays)
    if resolved not in _cast.PRECISION_STORAGE:
        raise ArgumentError(f"{op}: the NHWC kernels run on tensor cores: precision tf32, bf16 or fp16, "
                            f"not {resolved!r}")
    return resolved


def _chunk(precision: str) -> int:
    """Elements per 16-byte chunk of the precision's storage: what channel counts must be a multiple of."""
    return 16 // _cast.ELEMENT_BYTES[_cast.PRECISION_STORAGE[precision]]


def _contiguous(op: str, **arrays) -> None:
    for name, array in arrays.items():
        if array is not None and not array.flags.c_contiguous:
            raise LayoutError(f"{op}: {name} must be C-contiguous (NHWC as stored)")


def _channels(executor, array, precision: str, mask=None):
    """``array`` (..., channels) as the kernels read it: in the precision's storage, masked by (mask > 0),
    channels padded with zeros to a multiple of 16 bytes.  Returns (array or its copy, padded channels)."""
    storage = _cast.PRECISION_STORAGE[precision]
    chunk = _chunk(precision)
    channels = int(array.shape[-1])
    if (_cast.storage_of(array, precision) == storage and mask is None and channels % chunk == 0
            and address(array) % 16 == 0):
        return array, channels
    flat_mask = None if mask is None else mask.reshape(-1, channels)
    copy, _ = _cast.cast(array.reshape(-1, channels), storage, src_storage=precision, mask=flat_mask,
                         row_multiple=chunk, zero_padding=True, executor=executor)
    padded = int(copy.shape[-1])
    return copy.reshape(*array.shape[:-1], padded), padded


def _out_dtype(op: str, out, out_dtype, precision: str, *operands):
    halves = [x for x in operands if np.dtype(x.dtype) != np.float32]
    if out_dtype is None:
        out_dtype = out.dtype if out is not None else (halves[0].dtype if halves else np.float32)
    out_dtype = np.dtype(out_dtype)
    if out_dtype != np.float32 and (precision == "tf32" or out_dtype != _cast.storage_dtype(
            precision, halves[0] if halves else None)):
        raise DtypeError(f"{op}: the output is float32, or 16-bit of the operands' own type; got {out_dtype.name} "
                         f"at {precision}")
    return out_dtype


def _output(op: str, executor, out, shape, dtype):
    if out is None:
        return executor.xp.empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape) or np.dtype(out.dtype) != dtype or not out.flags.c_contiguous:
        raise ShapeError(f"{op}: out must be a C-contiguous {dtype.name} array of shape {tuple(shape)}")
    return out


def _launch(executor, kernel, grid, config, args, pass_, precision):
    # The shared ring passes 48 KB on the larger tiles: the launch raises the kernel's limit.
    executor.launch(Launch(FAMILY, kernel, grid, (config.threads, 1, 1), args, shared_bytes(config, pass_, precision),
                           (("CONV_TC_PRECISION", precision),), shared_opt_in=True))


def forward(x, weight, bias=None, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), relu=False, precision=None,
            out=None, out_dtype=None, config=None, executor=None):
    """y (N, P, Q, K) = relu?(conv(x, weight) + bias): one launch (after the producer pass, when one is needed).

    On a compute capability 9.0 GPU, 16-bit operands the wgmma kernels take as they are
    (:func:`dlgpu.cuda.conv2d_wgmma.supports`) go there unless ``config`` names an mma.sync tile."""
    executor = resolve_executor(executor)
    op = "conv2d"
    _contiguous(op, x=x, weight=weight, bias=bias)
    precision = _precision(op, precision, x, weight)
    from dlgpu.cuda import conv2d_wgmma  # it builds on this module's helpers

    if config is None and conv2d_wgmma.chosen(executor, x, weight, precision):
        return conv2d_wgmma.forward(x, weight, bias, stride=stride, padding=padding, dilation=dilation, relu=relu,
                                    precision=precision, out=out, out_dtype=out_dtype, executor=executor)
    g = geometry(op, x.shape, weight.shape, stride, padding, dilation)
    if bias is not None and tuple(bias.shape) != (g.K,):
        raise ShapeError(f"{op}: bias has shape {tuple(bias.shape)}, expected ({g.K},)")
    dtype = _out_dtype(op, out, out_dtype, precision, x, weight)
    y = _output(op, executor, out, (g.N, g.P, g.Q, g.K), dtype)
    x_k, channels = _channels(executor, x, precision)
    w_k, _ = _channels(executor, weight, precision)
    chosen = choose("forward", g, multiprocessor_count(executor), config)
    grid = (math.ceil(g.pixels / chosen.block_m), math.ceil(g.K / chosen.block_n), 1)
    assert grid[1] <= _conv2d.MAX_GRID_Y, f"{op}: K = {g.K} needs {grid[1]} channel blocks"
    flags = ((FLAG_BIAS if bias is not None else 0) | (FLAG_RELU if relu else 0)
             | (FLAG_STORE_HALF if dtype != np.float32 else 0))
    bias_arg = _cast.to_float32(executor.xp, bias, precision) if bias is not None else y
    args = (x_k, w_k, bias_arg, y, *dataclasses.replace(g, C=channels).args(), np.int32(flags))
    _launch(executor, kernel_name("forward", chosen), grid, chosen, args, "forward", precision)
    return y


def dgrad(grad_y, weight, x_shape, *, mask=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), precision=None,
          out=None, out_dtype=None, config=None, executor=None):
    """grad_x (N, H, W, C) from grad_y (N, P, Q, K), masked by (mask > 0) when mask (y) is given.

    On a compute capability 9.0 device the wgmma kernels take what they can (stride 1, 16-bit operands as
    they are: :func:`dlgpu.cuda.conv2d_wgmma.supports`) unless ``config`` names an mma.sync tile."""
    executor = resolve_executor(executor)
    xp = executor.xp
    op = "conv2d_backward"
    _contiguous(op, grad_y=grad_y, weight=weight, y=mask)
    precision = _precision(op, precision, grad_y, weight, *(() if mask is None else (mask,)))
    from dlgpu.cuda import conv2d_wgmma  # it builds on this module's helpers

    if config is None and conv2d_wgmma.chosen(executor, grad_y, weight, precision, "dgrad", stride):
        return conv2d_wgmma.dgrad(grad_y, weight, x_shape, mask=mask, stride=stride, padding=padding,
                                  dilation=dilation, precision=precision, out=out, out_dtype=out_dtype,
                                  executor=executor)
    g = geometry(op, x_shape, weight.shape, stride, padding, dilation)
    _check_grad_y(op, g, grad_y, mask)
    dtype = _out_dtype(op, out, out_dtype, precision, grad_y, weight)
    grad_x = _output(op, executor, out, (g.N, g.H, g.W, g.C), dtype)
    g_k, k_padded = _channels(executor, grad_y, precision, mask)
    w_k, c_padded = _channels(executor, weight, precision)
    if k_padded != g.K:  # the filters are B's rows here: zero filters pad them to grad_y's channels
        padded = xp.zeros((k_padded, *w_k.shape[1:]), dtype=w_k.dtype)
        padded[:g.K] = w_k
        w_k = padded
    chosen = choose("dgrad", g, multiprocessor_count(executor), config)
    grid = (math.ceil(g.N * g.H * g.W / chosen.block_m), math.ceil(g.C / chosen.block_n), 1)
    assert grid[1] <= _conv2d.MAX_GRID_Y, f"{op}: C = {g.C} needs {grid[1]} channel blocks"
    target = grad_x if c_padded == g.C else xp.empty((g.N, g.H, g.W, c_padded), dtype=dtype)
    flags = FLAG_STORE_HALF if dtype != np.float32 else 0
    divisors = fast_divisors(g.H * g.W, g.W)
    args = (g_k, w_k, target, *dataclasses.replace(g, K=k_padded, C=c_padded).args(), np.int32(flags), *divisors)
    _launch(executor, kernel_name("dgrad", chosen), grid, chosen, args, "dgrad", precision)
    if target is not grad_x:
        grad_x[...] = target[..., :g.C]
    return grad_x


def wgrad(grad_y, x, w_shape, *, mask=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), precision=None,
          out=None, out_dtype=np.float32, config=None, splits=None, executor=None):
    """grad_w (K, R, S, C) from grad_y (N, P, Q, K) and x (N, H, W, C), masked like :func:`dgrad`.

    float32 by default whatever the operands (the gradient of fp32 master weights); ``splits`` forces the
    number of pixel splits (tests); the default depends on the shape only.
    """
    executor = resolve_executor(executor)
    xp = executor.xp
    op = "conv2d_backward"
    _contiguous(op, grad_y=grad_y, x=x, y=mask)
    precision = _precision(op, precision, grad_y, x, *(() if mask is None else (mask,)))
    if len(w_shape) != 4:
        raise ShapeError(f"{op}: w_shape must be (K, R, S, C), got {tuple(w_shape)}")
    g = geometry(op, x.shape, w_shape, stride, padding, dilation)
    _check_grad_y(op, g, grad_y, mask)
    dtype = _out_dtype(op, out, out_dtype, precision, grad_y, x)
    grad_w = _output(op, executor, out, (g.K, g.R, g.S, g.C), dtype)
    g_k, k_padded = _channels(executor, grad_y, precision, mask)
    x_k, c_padded = _channels(executor, x, precision)
    geo = dataclasses.replace(g, K=k_padded, C=c_padded)
    chosen = choose("wgrad", geo, multiprocessor_count(executor), config)
    if splits is None:
        splits, per_split = _conv2d.wgrad_splits(geo, chosen.block_m, chosen.block_n)
    else:
        if splits < 1:
            raise ArgumentError(f"{op}: wgrad splits must be >= 1, got {splits}")
        per_split = math.ceil(geo.pixels / min(splits, _conv2d.MAX_GRID_Y))
        splits = math.ceil(geo.pixels / per_split)
    count = geo.K * geo.taps
    direct = splits == 1 and geo == g and dtype == np.float32
    partial = grad_w if direct else xp.empty((splits, count), dtype=np.float32)
    grid = (math.ceil(geo.K / chosen.block_m), math.ceil(geo.taps / chosen.block_n), splits)
    args = (g_k, x_k, partial, *geo.args(), np.int32(0), np.int32(per_split))
    _launch(executor, kernel_name("wgrad", chosen), grid, chosen, args, "wgrad", precision)
    if direct:
        return grad_w
    total = partial.reshape(count) if splits == 1 else xp.empty(count, dtype=np.float32)
    if splits > 1:
        blocks = grid_stride_blocks(count, _conv2d.NAIVE_BLOCK, executor)
        executor.launch(Launch("conv2d", _conv2d.WGRAD_FINISH, (blocks, 1, 1), (_conv2d.NAIVE_BLOCK, 1, 1),
                               (partial, total, np.int32(splits), np.int64(count))))
    full = total.reshape(geo.K, g.R, g.S, geo.C)[:g.K, :, :, :g.C]
    if dtype == np.float32:
        grad_w[...] = full
    else:
        # The cast of float32 writes bf16 as uint16 bits (its dtype for bf16 when the source is not bfloat16):
        # viewed, not converted, as grad_w's dtype.
        rounded, _ = _cast.cast(xp.ascontiguousarray(full).reshape(g.K, -1), _cast.PRECISION_STORAGE[precision],
                                executor=executor)
        grad_w[...] = rounded.view(grad_w.dtype).reshape(grad_w.shape)
    return grad_w


def _check_grad_y(op: str, g: _conv2d.Geometry, grad_y, mask) -> None:
    expected = (g.N, g.P, g.Q, g.K)
    if tuple(grad_y.shape) != expected:
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)}, expected {expected} (NHWC)")
    if mask is not None and tuple(mask.shape) != expected:
        raise ShapeError(f"{op}: y has shape {tuple(mask.shape)}, expected {expected} (NHWC)")


# ---------------------------------------------------------------- the backend's functions, on (N, C, H, W) arrays
# dlgpu.cuda.conv2d sends here the calls it runs on these kernels: 16-bit operands in either memory format, and
# float32 operands at a tensor-core precision when one of them is channels_last (dlgpu.memory_format).  A
# channels_last array is read in place; an NCHW one is copied to NHWC once (2 + 2 bytes per 16-bit element,
# where converting to float32 and back cost 6 and made the kernels read 4-byte operands).


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out, *, config=None, executor=None):
    """act(conv(x, weight) + bias) for x (N, C, H, W) and weight (K, C, R, S) in either memory format.

    y is channels_last when x or weight is (as PyTorch's convolution answers), else NCHW C-contiguous; ``out``
    (NCHW or channels_last) receives it in its own format and sets its dtype (float32 for 16-bit operands).
    """
    executor = resolve_executor(executor)
    op = "conv2d"
    nhwc_out = memory_format.nhwc_view(out)
    if out is not None and nhwc_out is None and not out.flags.c_contiguous:
        raise LayoutError(f"{op}: out must be C-contiguous or channels_last")
    dtype = np.dtype(out.dtype) if out is not None else None
    y = forward(memory_format.to_nhwc(x), memory_format.to_nhwc(weight), bias, stride=stride, padding=padding,
                dilation=dilation, relu=activation == "relu", precision=precision, out=nhwc_out, out_dtype=dtype,
                config=config, executor=executor)
    if nhwc_out is not None:
        return out
    if out is None and (memory_format.is_channels_last(x) or memory_format.is_channels_last(weight)):
        return memory_format.as_nchw(y)
    result = out if out is not None else executor.xp.empty(memory_format.as_nchw(y).shape, dtype=y.dtype)
    result[...] = memory_format.as_nchw(y)
    return result


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision, *, config=None,
                    executor=None):
    """(grad_x, grad_w, grad_b) for (N, C, H, W) arrays in either memory format, each gradient in the format of
    its operand (grad_x like x, grad_w like weight) and in the operands' dtype.

    With activation "relu" grad_y is masked by (y > 0) once, by the producer pass, into the kernels' storage,
    in the layout grad_y and y share (NCHW when both are, before the one transposing copy); both passes read
    that copy, and the bias gradient reads grad_y with y.
    """
    executor = resolve_executor(executor)
    op = "conv2d_backward"
    if activation == "relu" and y is None:
        raise ArgumentError(f"{op}: activation='relu' needs y, the forward output, for the mask")
    mask = y if activation == "relu" else None
    precision = _precision(op, precision, grad_y, x, weight)
    channels = int(grad_y.shape[1])
    nchw = grad_y.flags.c_contiguous and (mask is None or mask.flags.c_contiguous)
    if nchw:
        grad_s, mask_s, rows = grad_y, mask, grad_y  # bias_grad sums (N, K, P, Q) over n, p, q
    else:
        grad_s, mask_s = memory_format.to_nhwc(grad_y), None if mask is None else memory_format.to_nhwc(mask)
        rows = grad_s.reshape(-1, channels)  # NHWC: one row of K per pixel
    grad_b = _bias_grad.bias_grad(rows, None if mask is None else mask_s.reshape(rows.shape), executor=executor)
    if mask is not None:
        masked, _ = _cast.cast(grad_s.reshape(-1, grad_s.shape[-1]), _cast.PRECISION_STORAGE[precision],
                               src_storage=precision, mask=mask_s.reshape(-1, grad_s.shape[-1]), executor=executor)
        grad_s = masked.reshape(grad_s.shape)
    grad_n = memory_format.to_nhwc(grad_s) if nchw else grad_s
    x_n, w_n = memory_format.to_nhwc(x), memory_format.to_nhwc(weight)
    geo = dict(stride=stride, padding=padding, dilation=dilation, precision=precision, config=config,
               out_dtype=np.dtype(x.dtype), executor=executor)
    grad_x = dgrad(grad_n, w_n, x_n.shape, **geo)
    grad_w = wgrad(grad_n, x_n, w_n.shape, **geo)
    return _like(grad_x, x, executor), _like(grad_w, weight, executor), grad_b


def _like(nhwc, operand, executor):
    """A gradient (NHWC storage) in ``operand``'s memory format: a view when that is channels_last, else one copy."""
    if memory_format.is_channels_last(operand):
        return memory_format.as_nchw(nhwc)
    return executor.xp.ascontiguousarray(memory_format.as_nchw(nhwc))
