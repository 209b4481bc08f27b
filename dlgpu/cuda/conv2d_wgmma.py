"""Launcher for kernels/conv2d_wgmma.cu: the NHWC convolution forward and data gradient on Hopper's warpgroup
tensor cores (sm_90a).

:func:`forward` computes ``y = act(conv(x, weight) + bias)`` and :func:`dgrad` ``grad_x`` (masked by ``y > 0``
with ``mask``) as :mod:`dlgpu.cuda.conv2d_nhwc` does, with the arrays as stored (channels_last): x (N, H, W,
C), weight (K, R, S, C), y and grad_y (N, P, Q, K), bias (K,) float32 or the operands' 16-bit type.  The
operands must already be in their 16-bit storage (float16; bfloat16 or uint16 bits with
``precision="bf16"``), C-contiguous, 16-byte aligned, with C and K multiples of 8 (a 16-byte chunk of
channels); dgrad runs at stride 1 only: :func:`supports` says whether a call qualifies.  The output is
float32 or the operands' 16-bit type.

The forward's weights reach shared memory by TMA (the K x R*S*C matrix as stored; on the clustered tile, each
of a cluster's two CTAs loads half of the weight tile into both, by multicast), the activations (and
all of dgrad's operands) by cp.async gathers of the producer warpgroup with zero fill for padding taps, and
wgmma multiplies them with fp32 accumulation; the output leaves through TMA stores (into the output itself
when its rows are 16-byte multiples, else through a padded array).  The variant is :data:`VARIANT`; it runs
on compute capability 9.0 and on the CPU harness (:func:`available`, as :mod:`dlgpu.cuda.gemm_wgmma`).
:mod:`dlgpu.cuda.conv2d_nhwc` chooses it on such a device where :func:`supports` holds (:func:`chosen`), and
the mma.sync NHWC kernels everywhere else.  First run on an H100 on 2026-11-27 (benchmarks/results/).
"""

from __future__ import annotations

import math

import numpy as np

from dlgpu.cuda import conv2d as _conv2d
from dlgpu.cuda import conv2d_nhwc as _nhwc
from dlgpu.cuda import gemm_cast as _cast
from dlgpu.cuda import gemm_wgmma as _wgmma
from dlgpu.cuda import kernel_decls, tma
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.gemm import FLAG_BIAS, FLAG_RELU, TileConfig, address, config_by_name, tile_configs
from dlgpu.cuda.launch import Launch, compute_capability, fast_divisors, multiprocessor_count
from dlgpu.errors import ArgumentError, ShapeError

FAMILY = "conv2d_wgmma"
PRECISIONS = ("bf16", "fp16")
VARIANT = _conv2d.Variant("wgmma", FAMILY, {"forward": PRECISIONS, "dgrad": PRECISIONS},
                          "NHWC implicit GEMM on wgmma, operands gathered by cp.async (the forward's weights by "
                          "TMA); dgrad at stride 1; sm_90a")
# Widest first, from kernels/conv2d_wgmma.cu's CONV_WGMMA_CONFIGS X(BM, BN, THREADS, STAGES): both passes'.
CONFIGS = tile_configs("conv2d_wgmma.cu", "CONV_WGMMA_CONFIGS")
STAGES = {f"{bm}x{bn}": int(stages) for bm, bn, _, stages in kernel_decls.x_macro("conv2d_wgmma.cu",
                                                                                   "CONV_WGMMA_CONFIGS")}
# The forward's alone, from CONV_WGMMA_CLUSTER_CONFIGS X(BM, BN, THREADS, STAGES, CLUSTER): CLUSTER CTAs along M
# that share each weight tile by multicast, named <BM>x<BN>c<CLUSTER>.
_CLUSTERED = kernel_decls.x_macro("conv2d_wgmma.cu", "CONV_WGMMA_CLUSTER_CONFIGS")
CLUSTER_CONFIGS = tuple(TileConfig(f"{bm}x{bn}c{cluster}", int(bm), int(bn), int(threads))
                        for bm, bn, threads, _, cluster in _CLUSTERED)
STAGES.update({c.name: int(stages) for c, (_, _, _, stages, _) in zip(CLUSTER_CONFIGS, _CLUSTERED)})
CLUSTER = {**{c.name: 1 for c in CONFIGS}, **{c.name: int(n) for c, (*_, n) in zip(CLUSTER_CONFIGS, _CLUSTERED)}}
PASS_CONFIGS = {"forward": CONFIGS + CLUSTER_CONFIGS, "dgrad": CONFIGS}
CHANNEL_MULTIPLE = 8  # a 16-byte cp.async chunk: 8 channels of one pixel at one tap
STORE_MAP = {"forward": 1, "dgrad": 0}  # the output's tensor map: after the weights' (forward), or alone
available = _wgmma.available


def kernel_names() -> list[str]:
    """Every kernel of kernels/conv2d_wgmma.cu, by name."""
    return [kernel_name(pass_, config, precision) for pass_ in VARIANT.passes for config in PASS_CONFIGS[pass_]
            for precision in PRECISIONS]


def kernel_name(pass_: str, config, precision: str) -> str:
    return f"conv2d_{_conv2d._PASS_STEMS[pass_]}_wgmma_{config.name}_{precision}"


def shared_bytes(config) -> int:
    """Dynamic shared memory: as the wgmma GEMM's (stages of 128 + BN rows of 128 bytes, TMA-store staging,
    barriers, alignment), with this family's stage count."""
    return _wgmma.shared_bytes(config, STAGES[config.name])


def choose(g: _conv2d.Geometry, config: str | None = None, pass_: str = "forward"):
    """128 x 64 when the output's channels (K, or C for dgrad) fit it (a 128-wide tile would be half idle),
    else 128 x 128; the forward's in clusters of two (128x128c2) when there are two rows of tiles to pair.

    Why the cluster there (kernels/conv2d_wgmma.cu's header): per k-tile an SM takes 16 KB of A and 16 KB of
    weights from L2, the likely limit at 128 x 128; with the weights multicast it takes half of them, 24 KB in
    all, a quarter less.  Not at 128 x 64, which is issue-bound (and would save only 4 of 24 KB), nor for
    dgrad, whose weights are gathered, not loaded by TMA.  A single row of tiles would leave the second CTA
    of every cluster idle."""
    chosen = config_by_name(PASS_CONFIGS[pass_], config, op="conv2d_wgmma")
    if chosen is not None:
        return chosen
    if (g.K if pass_ == "forward" else g.C) <= CONFIGS[-1].block_n:
        return CONFIGS[-1]
    clustered = CLUSTER_CONFIGS[0]
    if pass_ == "forward" and math.ceil(g.pixels / clustered.block_m) >= CLUSTER[clustered.name]:
        return clustered
    return CONFIGS[0]


def supports(x, weight, precision: str, pass_: str = "forward", stride=(1, 1)) -> bool:
    """Whether the kernels take these operands (x, or grad_y for dgrad, and the weights) as they are: NHWC
    16-bit storage of ``precision``, C-contiguous, 16-byte aligned, channels a multiple of 8; dgrad at
    stride 1 (the gather of a strided dgrad would test each tap's divisibility per row)."""
    if precision not in PRECISIONS or (pass_ == "dgrad" and tuple(stride) != (1, 1)):
        return False
    return all(array.ndim == 4 and array.flags.c_contiguous and int(array.shape[-1]) % CHANNEL_MULTIPLE == 0
               and _cast.storage_of(array, precision) == _cast.PRECISION_STORAGE[precision]
               and address(array) % 16 == 0 for array in (x, weight))


def chosen(executor, x, weight, precision: str, pass_: str = "forward", stride=(1, 1)) -> bool:
    """Whether :mod:`dlgpu.cuda.conv2d_nhwc` runs a pass's operands here: on a compute capability 9.0 device
    (the CPU harness only when told to plan for one, as for the wgmma GEMM: dlgpu.cuda.gemm's
    default_variant) and where :func:`supports` holds."""
    return (compute_capability(executor) == _wgmma.COMPUTE_CAPABILITY
            and supports(x, weight, precision, pass_, stride))


def forward(x, weight, bias=None, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), relu=False, precision=None,
            out=None, out_dtype=None, config=None, executor=None):
    """y (N, P, Q, K) = relu?(conv(x, weight) + bias) in one launch; see the module docstring."""
    executor = resolve_executor(executor)
    planned, y = plan(x, weight, bias, stride=stride, padding=padding, dilation=dilation, relu=relu,
                      precision=precision, out=out, out_dtype=out_dtype, config=config, executor=executor)
    executor.launch(planned.launch)
    planned.finish()  # into y, whose (N*P*Q, K) view is planned.out
    return y


def plan(x, weight, bias=None, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), relu=False, precision=None,
         out=None, out_dtype=None, config=None, executor=None):
    """The checked arguments of :func:`forward`: (a :class:`dlgpu.cuda.gemm_wgmma.Planned` launch, whose
    ``out`` is y viewed as the (N*P*Q, K) matrix, and y (N, P, Q, K))."""
    executor = resolve_executor(executor)
    xp = executor.xp
    op = "conv2d"
    _wgmma.require(executor, "conv2d_wgmma")
    _nhwc._contiguous(op, x=x, weight=weight, bias=bias)
    precision = _nhwc._precision(op, precision, x, weight)
    if not supports(x, weight, precision):
        raise ArgumentError(f"{op}: the wgmma kernels take bf16 / fp16 NHWC operands in their storage, 16-byte "
                            f"aligned, with channels a multiple of {CHANNEL_MULTIPLE}; use conv2d_nhwc.forward")
    g = _nhwc.geometry(op, x.shape, weight.shape, stride, padding, dilation)
    if bias is not None and tuple(bias.shape) != (g.K,):
        raise ShapeError(f"{op}: bias has shape {tuple(bias.shape)}, expected ({g.K},)")
    dtype = _nhwc._out_dtype(op, out, out_dtype, precision, x, weight)
    y = _nhwc._output(op, executor, out, (g.N, g.P, g.Q, g.K), dtype)

    tile = choose(g, config)
    element = _cast.PRECISION_STORAGE[precision]
    rsc = g.R * g.S * g.C
    box_k = _wgmma.TILE_ROW_BYTES // tma.ELEMENT_BYTES[element]
    # The weights as the K x RSC matrix they are in memory, in boxes of BN filters x 64 taps.
    # Each CTA of a cluster loads its share of the BN filters.
    cluster = CLUSTER[tile.name]
    pairs = [(weight.reshape(g.K, rsc), tma.TileMap(element, g.K, rsc, rsc * 2, tile.block_n // cluster, box_k,
                                                    128))]
    # y as the M x K matrix, stored by TMA in boxes of 16 rows x 128 bytes.
    y2d = y.reshape(g.pixels, g.K)
    store, pitch = _wgmma._tma_ready(xp, y2d, dtype.itemsize, copy=False)
    out_element = "f32" if dtype == np.float32 else element
    pairs.append((store, tma.TileMap(out_element, g.pixels, g.K, pitch, _wgmma.STORE_ROWS,
                                     _wgmma.TILE_ROW_BYTES // dtype.itemsize, 128)))
    maps = tma.tensor_maps(executor, pairs)

    flags = ((FLAG_BIAS if bias is not None else 0) | (FLAG_RELU if relu else 0)
             | (_nhwc.FLAG_STORE_HALF if dtype != np.float32 else 0))
    bias_arg = _cast.to_float32(xp, bias, precision) if bias is not None else xp.zeros(1, np.float32)
    # Units: tiles, or with clusters pairs of vertically adjacent tiles (the last pair's upper tile may lie past
    # the pixels: that CTA loads zeros and stores nothing).  Persistent: at most one block per SM, whole clusters.
    units = math.ceil(math.ceil(g.pixels / tile.block_m) / cluster) * math.ceil(g.K / tile.block_n)
    blocks = max(1, min(units, multiprocessor_count(executor) // cluster)) * cluster
    kernel = kernel_name("forward", tile, precision)
    args = (maps, x, bias_arg, *g.args(), np.int32(flags))
    # The stage ring is far past 48 KB: the launch raises the kernel's shared memory limit.
    launch = Launch(FAMILY, kernel, (blocks, 1, 1), (tile.threads, 1, 1), args, shared_bytes(tile),
                    shared_opt_in=True, cluster=(cluster, 1, 1))
    return _wgmma.Planned(launch, y2d, store, maps, tuple(pairs), store_map=STORE_MAP["forward"]), y


def dgrad(grad_y, weight, x_shape, *, mask=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), precision=None,
          out=None, out_dtype=None, config=None, executor=None):
    """grad_x (N, H, W, C) from grad_y (N, P, Q, K), masked by (mask > 0) when mask (y) is given; stride 1."""
    executor = resolve_executor(executor)
    planned, grad_x = plan_dgrad(grad_y, weight, x_shape, mask=mask, stride=stride, padding=padding,
                                 dilation=dilation, precision=precision, out=out, out_dtype=out_dtype, config=config,
                                 executor=executor)
    executor.launch(planned.launch)
    planned.finish()
    return grad_x


def plan_dgrad(grad_y, weight, x_shape, *, mask=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
               precision=None, out=None, out_dtype=None, config=None, executor=None):
    """The checked arguments of :func:`dgrad`, as :func:`plan` for the forward (the mask applied to a copy of
    grad_y by kernels/gemm_cast.cu first, as the mma.sync path does)."""
    executor = resolve_executor(executor)
    xp = executor.xp
    op = "conv2d_backward"
    _wgmma.require(executor, "conv2d_wgmma")
    _nhwc._contiguous(op, grad_y=grad_y, weight=weight, y=mask)
    precision = _nhwc._precision(op, precision, grad_y, weight, *(() if mask is None else (mask,)))
    if not supports(grad_y, weight, precision, "dgrad", stride):
        raise ArgumentError(f"{op}: the wgmma dgrad takes bf16 / fp16 NHWC operands in their storage, 16-byte "
                            f"aligned, with channels a multiple of {CHANNEL_MULTIPLE}, at stride 1; use "
                            "conv2d_nhwc.dgrad")
    g = _nhwc.geometry(op, x_shape, weight.shape, stride, padding, dilation)
    _nhwc._check_grad_y(op, g, grad_y, mask)
    dtype = _nhwc._out_dtype(op, out, out_dtype, precision, grad_y, weight)
    grad_x = _nhwc._output(op, executor, out, (g.N, g.H, g.W, g.C), dtype)
    if mask is not None:
        grad_y, _ = _nhwc._channels(executor, grad_y, precision, mask)

    tile = choose(g, config, "dgrad")
    rows = g.N * g.H * g.W
    x2d = grad_x.reshape(rows, g.C)
    store, pitch = _wgmma._tma_ready(xp, x2d, dtype.itemsize, copy=False)
    out_element = "f32" if dtype == np.float32 else _cast.PRECISION_STORAGE[precision]
    pairs = ((store, tma.TileMap(out_element, rows, g.C, pitch, _wgmma.STORE_ROWS,
                                 _wgmma.TILE_ROW_BYTES // dtype.itemsize, 128)),)
    maps = tma.tensor_maps(executor, pairs)
    flags = _nhwc.FLAG_STORE_HALF if dtype != np.float32 else 0
    divisors = fast_divisors(g.H * g.W, g.W)
    tiles = math.ceil(rows / tile.block_m) * math.ceil(g.C / tile.block_n)
    blocks = max(1, min(tiles, multiprocessor_count(executor)))
    args = (maps, grad_y, weight, *g.args(), np.int32(flags), *divisors)
    launch = Launch(FAMILY, kernel_name("dgrad", tile, precision), (blocks, 1, 1), (tile.threads, 1, 1), args,
                    shared_bytes(tile), shared_opt_in=True)
    return _wgmma.Planned(launch, x2d, store, maps, pairs, store_map=STORE_MAP["dgrad"]), grad_x
