"""Launchers for the convolution kernels (kernels/conv2d.cu, kernels/conv2d_tc.cu).

Three passes, each a function here:

- :func:`forward`: y (N, K, P, Q) = act(conv(x, weight) + bias), x (N, C, H, W) NCHW, weight
  (K, C, R, S) OIHW, bias (K,) or None, act None or ReLU (fused into the epilogue).
- :func:`dgrad`: grad_x (N, C, H, W) from grad_y (N, K, P, Q) and weight; with ``mask`` (the
  forward output y of a fused ReLU) grad_y is multiplied by (y > 0) as it is loaded.
- :func:`wgrad`: grad_w (K, C, R, S) from grad_y and x, the same mask; deterministic.

The backend functions :func:`conv2d` and :func:`conv2d_backward` sit on top; the bias
gradient comes from kernels/bias_grad.cu with the same mask.  The launchers here take float32,
C-contiguous arrays; the backend functions send 16-bit arrays, and float32 channels_last ones at a
tensor-core precision, to the NHWC kernels instead (:mod:`dlgpu.cuda.conv2d_nhwc`, which reads them
as stored).  stride, padding, dilation are (h, w) pairs.

Variants live in :data:`VARIANTS`, the one registry that tests and benchmarks read; each
names the passes it implements and the precisions it computes per pass.  The tile
configurations are read from the kernel sources' lists (:mod:`dlgpu.cuda.kernel_decls`):

- ``naive``: one thread per output element, every pass, exact fp32; the GPU-side oracle.
- ``simt``: implicit GEMM on CUDA cores, every pass, exact fp32.
- ``tc``: implicit GEMM on tensor cores, every pass, through mma.sync: tf32, bf16, fp16
  operands, fp32 accumulation.  Besides these NCHW kernels (fp32 arrays), it has NHWC
  (channels_last) kernels fed by cp.async from operands in the precision's storage:
  :mod:`dlgpu.cuda.conv2d_nhwc` launches them.

"ieee" runs simt, the other precisions tc; naive only when asked for by name.
:func:`choose_forward`, :func:`choose_dgrad` and :func:`choose_wgrad` pick the variant and
configuration; plain Python, tested on the CPU.  Every tile configuration sums each output
in the same order, so the choice (which depends on the SM count) never changes the bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlgpu import memory_format
from dlgpu.cuda import bias_grad as _bias_grad
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.gemm import FLAG_BIAS, FLAG_RELU, TC_PRECISIONS, TileConfig, config_by_name, tile_configs
from dlgpu.cuda.launch import (
    INT32_MAX,
    MAX_GRID_Y,
    Launch,
    fast_divisors,
    grid_stride_blocks,
    multiprocessor_count,
    output,
    require_float32,
)
from dlgpu.errors import ArgumentError, ShapeError
from dlgpu.precision import is_half
from dlgpu.window import output_size

# The forward's flags are the GEMM's (kernels/common.cuh's EPILOGUE_BIAS, EPILOGUE_RELU).
FLAG_MASK = 4  # kernels/conv2d_common.cuh: CONV_MASK

PASSES = ("forward", "dgrad", "wgrad")
NAIVE_BLOCK = 256


@dataclass(frozen=True)
class Variant:
    """A registered convolution variant: its family and, per pass it implements, its precisions."""

    name: str
    family: str
    passes: dict
    summary: str


VARIANTS: dict[str, Variant] = {
    "naive": Variant("naive", "conv2d", {p: ("ieee",) for p in PASSES},
                     "one thread per output element, any shape; the GPU oracle"),
    "simt": Variant("simt", "conv2d", {p: ("ieee",) for p in PASSES},
                    "implicit GEMM on CUDA cores, exact fp32; wgrad split over pixels, fixed-order combine"),
    "tc": Variant("tc", "conv2d_tc", {p: TC_PRECISIONS for p in PASSES},
                  "implicit GEMM on tensor cores (mma.sync), fp32 accumulation"),
}


# Widest first: _pick_config takes the widest that still fills the device.
SIMT_CONFIGS = tile_configs("conv2d.cu", "CONV_SIMT_CONFIGS")
TC_CONFIGS = tile_configs("conv2d_tc.cu", "CONV_TC_CONFIGS")
# The tc variant's NHWC kernels (dlgpu/cuda/conv2d_nhwc.py launches them).
NHWC_CONFIGS = tile_configs("conv2d_tc.cu", "CONV_TC_NHWC_CONFIGS")
CONFIGS: dict[str, tuple[TileConfig, ...]] = {"naive": (), "simt": SIMT_CONFIGS, "tc": TC_CONFIGS}


def configs_for(variant: str, pass_: str) -> tuple[TileConfig, ...]:
    """The tile configurations a variant offers for a pass (the simt wgrad kernel has one fixed tile)."""
    return () if (variant, pass_) == ("simt", "wgrad") else CONFIGS[variant]


_PASS_STEMS = {"forward": "fwd", "dgrad": "dgrad", "wgrad": "wgrad"}
# The second pass of a split wgrad reduction, shared by the simt and tc variants.
WGRAD_FINISH = "conv2d_wgrad_finish_f32"


def kernel_name(pass_: str, variant: str, config: TileConfig | None = None, *, one_by_one: bool = False,
                layout: str = "nchw") -> str:
    """conv2d_<fwd|dgrad|wgrad>_<variant>[_<config>][_1x1]_f32 (NCHW, fp32), or
    conv2d_<fwd|dgrad|wgrad>_tc_<config>_nhwc (NHWC, the storage of the build's precision), as the kernel
    sources' lists expand."""
    parts = ["conv2d", _PASS_STEMS[pass_], variant, *([config.name] if config else [])]
    if layout == "nhwc":
        return "_".join(parts) + "_nhwc"
    return "_".join(parts) + ("_1x1" if one_by_one else "") + "_f32"


def kernel_names(variant: str) -> list[str]:
    """Every kernel a variant can launch, by name (tests compare them with the kernels the sources define)."""
    names = []
    for pass_ in VARIANTS[variant].passes:
        for config in configs_for(variant, pass_) or (None,):
            names.append(kernel_name(pass_, variant, config))
            if pass_ == "forward" and config is not None:
                names.append(kernel_name(pass_, variant, config, one_by_one=True))
        if variant == "tc":
            names += [kernel_name(pass_, variant, config, layout="nhwc") for config in NHWC_CONFIGS]
    return names


TC_BK = 16  # kernels/conv2d_tc.cu: CONV_TC_BK, taps per tile
TC_PAD = 4  # CONV_TC_PAD
TC_TAP_BYTES = 16  # CONV_TC_TAP_BYTES

WGRAD_TILE = 64  # kernels/conv2d.cu: WGRAD_TILE
WGRAD_STEP = 8  # WGRAD_STEP: pixels per reduction step
WGRAD_THREADS = 256  # WGRAD_THREADS
# wgrad's split count aims at this many blocks: a constant, not the SM count, so that the
# summation order (hence the bits) is the same on every device.
WGRAD_TARGET_BLOCKS = 1024
# Fewest pixels a split sums, so that the partial buffer stays small next to grad_y.
WGRAD_MIN_PIXELS = 512


@dataclass(frozen=True)
class Geometry:
    """Every size of one convolution, as the kernels take them."""

    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    P: int
    Q: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def pixels(self) -> int:  # M of the implicit GEMM
        return self.N * self.P * self.Q

    @property
    def taps(self) -> int:  # the reduction of the forward GEMM
        return self.C * self.R * self.S

    @property
    def one_by_one(self) -> bool:
        """A 1x1 filter at stride 1 without padding: the forward's A operand is x itself."""
        return (self.R, self.S, self.stride, self.padding) == (1, 1, (1, 1), (0, 0))

    def flops(self) -> int:
        return 2 * self.pixels * self.K * self.taps

    def args(self) -> tuple:
        """CONV_GEOMETRY_PARAMS (kernels/conv2d_common.cuh), in order."""
        ints = (self.N, self.C, self.H, self.W, self.K, self.R, self.S, self.P, self.Q, *self.stride,
                *self.padding, *self.dilation)
        divisors = (self.P * self.Q, self.Q, self.R * self.S, self.S)
        return (*(np.int32(v) for v in ints), *fast_divisors(*divisors))


def geometry(op: str, x_shape, w_shape, stride, padding, dilation) -> Geometry:
    """The Geometry of x_shape (N, C, H, W) convolved with w_shape (K, C, R, S); checks 32-bit limits."""
    N, C, H, W = (int(d) for d in x_shape)
    K, C_w, R, S = (int(d) for d in w_shape)
    if C != C_w:
        raise ShapeError(f"{op}: x has {C} channels but weight {tuple(w_shape)} expects {C_w}")
    P = output_size(H, R, stride[0], padding[0], dilation[0])
    Q = output_size(W, S, stride[1], padding[1], dilation[1])
    if P < 1 or Q < 1:
        raise ShapeError(f"{op}: filter {R}x{S} (dilation {dilation}) does not fit input {H}x{W} padded by {padding}")
    g = Geometry(N, C, H, W, K, R, S, P, Q, tuple(stride), tuple(padding), tuple(dilation))
    # The kernels keep offsets inside one image / filter / output plane set in 32 bits.
    for name, value in (("C*H*W", C * H * W), ("K*P*Q", K * P * Q), ("K*C*R*S", K * C * R * S),
                        ("N*P*Q", g.pixels), ("N*C*H*W", N * C * H * W), ("N*K*P*Q", N * K * P * Q)):
        if value > INT32_MAX:
            raise ShapeError(f"{op}: {name} = {value} is over 2^31 - 1, which the kernels' 32-bit offsets allow")
    return g


# ---------------------------------------------------------------- choices


@dataclass(frozen=True)
class Plan:
    """What :func:`choose` decided for one pass: variant, configuration, kernel and launch shape."""

    variant: str
    config: TileConfig | None
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int = 0
    defines: tuple[tuple[str, str], ...] = ()
    splits: int = 1  # wgrad: blocks along the pixel reduction
    pixels_per_split: int = 0


def _resolve(pass_: str, precision: str, variant: str | None) -> str:
    if variant is not None:
        if variant not in VARIANTS:
            raise ArgumentError(f"conv2d: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if pass_ not in VARIANTS[variant].passes:
            raise ArgumentError(f"conv2d: variant {variant!r} has no {pass_} kernel; "
                                f"it has {sorted(VARIANTS[variant].passes)}")
        if variant != "naive" and precision not in VARIANTS[variant].passes[pass_]:
            raise ArgumentError(f"conv2d: variant {variant!r} computes {pass_} at {VARIANTS[variant].passes[pass_]}, "
                                f"not {precision!r}")
        return variant
    for name in ("tc", "simt"):
        if precision in VARIANTS[name].passes.get(pass_, ()):
            return name
    # No kernel at this precision: the fastest exact one (more accurate than asked).
    return "simt" if pass_ in VARIANTS["simt"].passes else "naive"


def _pick_config(configs, rows: int, cols: int, sms: int) -> TileConfig:
    """The widest tile (fewest re-reads of A) that still gives every SM a block.

    ``configs`` run widest first.  Tiles at least twice as wide as ``cols`` are skipped (most of
    a 128-wide tile idle on K = 6); when no tile fills the device, the narrowest left.
    """
    fitting = [c for c in configs if c.block_n < 2 * cols or c is configs[-1]]
    for config in fitting:
        if math.ceil(rows / config.block_m) * math.ceil(cols / config.block_n) >= sms:
            return config
    return fitting[-1]


def tc_shared_bytes(config: TileConfig) -> int:
    """kernels/conv2d_tc.cu: two stages of A (BM x (16 + 4)) and B (BN x (16 + 4)) fp32 tiles, and two
    slots of the A tap table (16 entries of 16 bytes)."""
    return 4 * 2 * (config.block_m + config.block_n) * (TC_BK + TC_PAD) + 2 * TC_BK * TC_TAP_BYTES


TC_TAP_SPAN = 0xFFFF  # kernels/conv2d_common.cuh: ForwardOps::ATap holds a tap's (dh, dw) in 16 bits each


def tc_taps_fit(g: Geometry) -> bool:
    """Whether the NCHW tensor-core forward's tap table holds ``g`` exactly: its (dh, dw) saturate at
    TC_TAP_SPAN, which only a tap that is outside every window can reach unless the padded side is longer."""
    return all(span <= TC_TAP_SPAN or size + pad <= TC_TAP_SPAN
               for span, size, pad in (((g.R - 1) * g.dilation[0], g.H, g.padding[0]),
                                       ((g.S - 1) * g.dilation[1], g.W, g.padding[1])))


def choose_forward(g: Geometry, precision: str, *, sms: int, variant=None, config=None) -> Plan:
    forced = variant
    variant = _resolve("forward", precision, variant)
    if variant == "tc" and not g.one_by_one and not tc_taps_fit(g):
        if forced == "tc":
            raise ShapeError(f"conv2d: the tensor-core forward holds taps (dh, dw) up to {TC_TAP_SPAN}; this filter "
                             f"spans {(g.R - 1) * g.dilation[0]} x {(g.S - 1) * g.dilation[1]} on a "
                             f"{g.H} x {g.W} input: use variant='simt'")
        variant = "simt"
    if variant == "naive":
        total = g.N * g.K * g.P * g.Q
        blocks = min(math.ceil(total / NAIVE_BLOCK), 8 * sms)
        return Plan("naive", None, kernel_name("forward", "naive"), (blocks, 1, 1), (NAIVE_BLOCK, 1, 1))
    configs = CONFIGS[variant]
    chosen = config_by_name(configs, config, op="conv2d") or _pick_config(configs, g.pixels, g.K, sms)
    grid = (math.ceil(g.pixels / chosen.block_m), math.ceil(g.K / chosen.block_n), 1)
    kernel = kernel_name("forward", variant, chosen, one_by_one=g.one_by_one)
    return _tiled_plan(variant, chosen, kernel, grid, precision)


def _tiled_plan(variant: str, config: TileConfig, kernel: str, grid, precision: str) -> Plan:
    if variant == "simt":
        return Plan("simt", config, kernel, grid, (config.threads, 1, 1))
    defines = (("CONV_TC_PRECISION", precision),)
    return Plan("tc", config, kernel, grid, (config.threads, 1, 1), tc_shared_bytes(config), defines)


def choose_dgrad(g: Geometry, precision: str, *, sms: int, variant=None, config=None) -> Plan:
    variant = _resolve("dgrad", precision, variant)
    if variant == "naive":
        total = g.N * g.C * g.H * g.W
        blocks = min(math.ceil(total / NAIVE_BLOCK), 8 * sms)
        return Plan("naive", None, kernel_name("dgrad", "naive"), (blocks, 1, 1), (NAIVE_BLOCK, 1, 1))
    # The product's columns are the input channels C.
    configs = CONFIGS[variant]
    chosen = config_by_name(configs, config, op="conv2d") or _pick_config(configs, g.N * g.H * g.W, g.C, sms)
    grid = (math.ceil(g.N * g.H * g.W / chosen.block_m), math.ceil(g.C / chosen.block_n), 1)
    return _tiled_plan(variant, chosen, kernel_name("dgrad", variant, chosen), grid, precision)


def wgrad_splits(g: Geometry, tile_rows: int = WGRAD_TILE, tile_cols: int = WGRAD_TILE) -> tuple[int, int]:
    """(splits, pixels_per_split) of a wgrad reduction whose blocks cover tile_rows channels x
    tile_cols taps: from the shape only, so the summation order is the same on every device."""
    tiles = math.ceil(g.taps / tile_cols) * math.ceil(g.K / tile_rows)
    splits = max(1, min(math.ceil(WGRAD_TARGET_BLOCKS / tiles), math.ceil(g.pixels / WGRAD_MIN_PIXELS), MAX_GRID_Y))
    per_split = math.ceil(math.ceil(g.pixels / splits) / WGRAD_STEP) * WGRAD_STEP
    return math.ceil(g.pixels / per_split), per_split


def choose_wgrad(g: Geometry, precision: str, *, sms: int, variant=None, config=None,
                 splits: int | None = None) -> Plan:
    variant = _resolve("wgrad", precision, variant)
    if variant == "naive":
        total = g.K * g.taps
        blocks = min(math.ceil(total / NAIVE_BLOCK), 8 * sms)
        return Plan("naive", None, kernel_name("wgrad", "naive"), (blocks, 1, 1), (NAIVE_BLOCK, 1, 1))
    if variant == "simt":
        chosen, rows, cols = None, WGRAD_TILE, WGRAD_TILE
    else:
        # Not by SM count: the tile sets the default split count, which must not depend on the device.
        chosen = config_by_name(TC_CONFIGS, config, op="conv2d") or (
            TC_CONFIGS[-1] if g.K <= TC_CONFIGS[-1].block_m else TC_CONFIGS[0])
        rows, cols = chosen.block_m, chosen.block_n
    if splits is None:
        splits, per_split = wgrad_splits(g, rows, cols)
    else:
        if splits < 1:
            raise ArgumentError(f"conv2d: wgrad splits must be >= 1, got {splits}")
        splits = min(splits, MAX_GRID_Y)
        per_split = math.ceil(math.ceil(g.pixels / splits) / WGRAD_STEP) * WGRAD_STEP
        splits = math.ceil(g.pixels / per_split)
    if variant == "simt":
        grid = (math.ceil(g.taps / WGRAD_TILE), math.ceil(g.K / WGRAD_TILE), splits)
        return Plan("simt", None, kernel_name("wgrad", "simt"), grid, (WGRAD_THREADS, 1, 1), splits=splits,
                    pixels_per_split=per_split)
    grid = (math.ceil(g.K / rows), math.ceil(g.taps / cols), splits)
    return Plan("tc", chosen, kernel_name("wgrad", "tc", chosen), grid, (chosen.threads, 1, 1),
                tc_shared_bytes(chosen), (("CONV_TC_PRECISION", precision),), splits, per_split)


# ---------------------------------------------------------------- launchers


def forward(x, weight, bias=None, *, stride=(1, 1), padding=(0, 0), dilation=(1, 1), relu=False,
            precision="ieee", out=None, variant=None, config=None, executor=None):
    """y (N, K, P, Q) float32 = relu?(conv(x, weight) + bias): one launch, epilogue fused.

    x (N, C, H, W), weight (K, C, R, S), bias (K,) or None.  ``variant`` / ``config`` force a
    registered variant and tile configuration by name.
    """
    executor = resolve_executor(executor)
    op = "conv2d"
    require_float32(op, x=x, weight=weight, bias=bias)
    g = geometry(op, x.shape, weight.shape, stride, padding, dilation)
    if bias is not None and tuple(bias.shape) != (g.K,):
        raise ShapeError(f"{op}: bias has shape {tuple(bias.shape)}, expected ({g.K},)")
    y = output(op, executor, out, (g.N, g.K, g.P, g.Q))
    plan = choose_forward(g, precision, sms=multiprocessor_count(executor), variant=variant, config=config)
    assert plan.grid[1] <= MAX_GRID_Y, f"{op}: K = {g.K} needs {plan.grid[1]} channel blocks, over {MAX_GRID_Y}"
    flags = (FLAG_BIAS if bias is not None else 0) | (FLAG_RELU if relu else 0)
    args = (x, weight, bias if bias is not None else y, y, *g.args(), np.int32(flags))
    executor.launch(Launch(VARIANTS[plan.variant].family, plan.kernel, plan.grid, plan.block, args,
                           plan.shared_mem, plan.defines))
    return y


def dgrad(grad_y, weight, x_shape, *, mask=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
          precision="ieee", out=None, variant=None, config=None, executor=None):
    """grad_x (N, C, H, W) float32 from grad_y (N, K, P, Q), masked by (mask > 0) when mask (y) is given."""
    executor = resolve_executor(executor)
    op = "conv2d_backward"
    require_float32(op, grad_y=grad_y, weight=weight, y=mask)
    g = geometry(op, x_shape, weight.shape, stride, padding, dilation)
    _check_grad_y(op, g, grad_y, mask)
    grad_x = output(op, executor, out, (g.N, g.C, g.H, g.W))
    plan = choose_dgrad(g, precision, sms=multiprocessor_count(executor), variant=variant, config=config)
    assert plan.grid[1] <= MAX_GRID_Y, f"{op}: C = {g.C} needs {plan.grid[1]} channel blocks, over {MAX_GRID_Y}"
    flags = FLAG_MASK if mask is not None else 0
    args = (grad_y, mask if mask is not None else grad_y, weight, grad_x, *g.args(), np.int32(flags))
    if plan.variant != "naive":
        args += fast_divisors(g.H * g.W, g.W)
    executor.launch(Launch(VARIANTS[plan.variant].family, plan.kernel, plan.grid, plan.block, args,
                           plan.shared_mem, plan.defines))
    return grad_x


def wgrad(grad_y, x, w_shape, *, mask=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), precision="ieee",
          out=None, variant=None, config=None, splits=None, executor=None):
    """grad_w (K, C, R, S) float32 from grad_y (N, K, P, Q) and x, masked like :func:`dgrad`.

    ``splits`` forces the number of pixel splits of the simt / tc kernels (tests); the default
    depends on the shape only, so the bits do not depend on the device.
    """
    executor = resolve_executor(executor)
    op = "conv2d_backward"
    require_float32(op, grad_y=grad_y, x=x, y=mask)
    g = geometry(op, x.shape, w_shape, stride, padding, dilation)
    _check_grad_y(op, g, grad_y, mask)
    grad_w = output(op, executor, out, (g.K, g.C, g.R, g.S))
    plan = choose_wgrad(g, precision, sms=multiprocessor_count(executor), variant=variant, config=config, splits=splits)
    flags = np.int32(FLAG_MASK if mask is not None else 0)
    mask_arg = mask if mask is not None else grad_y
    if plan.variant == "naive":
        args = (grad_y, mask_arg, x, grad_w, *g.args(), flags)
        executor.launch(Launch("conv2d", plan.kernel, plan.grid, plan.block, args))
        return grad_w
    count = g.K * g.taps
    partial = grad_w if plan.splits == 1 else executor.xp.empty((plan.splits, count), dtype=np.float32)
    args = (grad_y, mask_arg, x, partial, *g.args(), flags, np.int32(plan.pixels_per_split))
    executor.launch(Launch(VARIANTS[plan.variant].family, plan.kernel, plan.grid, plan.block, args,
                           plan.shared_mem, plan.defines))
    if plan.splits > 1:
        blocks = grid_stride_blocks(count, NAIVE_BLOCK, executor)
        executor.launch(Launch("conv2d", WGRAD_FINISH, (blocks, 1, 1), (NAIVE_BLOCK, 1, 1),
                               (partial, grad_w, np.int32(plan.splits), np.int64(count))))
    return grad_w


def _check_grad_y(op: str, g: Geometry, grad_y, mask) -> None:
    expected = (g.N, g.K, g.P, g.Q)
    if tuple(grad_y.shape) != expected:
        raise ShapeError(f"{op}: grad_y has shape {tuple(grad_y.shape)}, expected {expected}")
    if mask is not None and tuple(mask.shape) != expected:
        raise ShapeError(f"{op}: y has shape {tuple(mask.shape)}, expected {expected}")


# ---------------------------------------------------------------- the backend's functions


def takes_channels_last(precision: str) -> bool:
    """Whether a call at ``precision`` reads channels_last arrays in place: the NHWC kernels compute at the
    tensor-core precisions only (dlgpu.backend.Backend.takes_channels_last)."""
    return precision in TC_PRECISIONS


def _on_nhwc(precision: str, variant: str | None, *arrays) -> bool:
    """Whether a backend call runs on the NHWC kernels (dlgpu.cuda.conv2d_nhwc): 16-bit operands always (the
    NCHW kernels read float32), float32 ones at a tensor-core precision when an array is channels_last."""
    if is_half(arrays[0].dtype):
        if variant not in (None, "tc"):
            raise ArgumentError(f"conv2d: 16-bit operands run on variant 'tc' only, not {variant!r}")
        return True
    return (variant in (None, "tc") and takes_channels_last(precision)
            and any(memory_format.is_channels_last(a) for a in arrays if a is not None))


def _nhwc():
    # conv2d_nhwc reads this module's geometry and registry when it is imported: imported on first use.
    from dlgpu.cuda import conv2d_nhwc

    return conv2d_nhwc


def conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out, *, variant=None, config=None,
           executor=None):
    """act(conv(x, weight) + bias) in one launch (dlgpu.cuda's conv2d): float32 NCHW arrays on the variant's
    NCHW kernels; 16-bit or channels_last ones on the NHWC kernels (:mod:`dlgpu.cuda.conv2d_nhwc`, whose tile
    configurations ``config`` then names)."""
    if _on_nhwc(precision, variant, x, weight, out):
        return _nhwc().conv2d(x, weight, bias, stride, padding, dilation, activation, precision, out,
                              config=config, executor=executor)
    return forward(x, weight, bias, stride=stride, padding=padding, dilation=dilation, relu=activation == "relu",
                   precision=precision, out=out, variant=variant, config=config, executor=executor)


def conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision, *, variant=None,
                    executor=None):
    """(grad_x, grad_w, grad_b); with activation="relu" every kernel loads grad_y masked by (y > 0).

    ``variant`` forces one variant for the passes it implements; the others take their default.  16-bit or
    channels_last arrays run on the NHWC kernels, as :func:`conv2d` says.
    """
    if _on_nhwc(precision, variant, x, weight, grad_y, y):
        return _nhwc().conv2d_backward(grad_y, x, weight, y, stride, padding, dilation, activation, precision,
                                       executor=executor)
    mask = y if activation == "relu" else None
    if activation == "relu" and y is None:
        raise ArgumentError("conv2d_backward: activation='relu' needs y, the forward output, for the mask")
    geo = dict(stride=stride, padding=padding, dilation=dilation, precision=precision, executor=executor)

    def pick(pass_):
        return variant if variant is not None and pass_ in VARIANTS[variant].passes else None

    grad_x = dgrad(grad_y, weight, x.shape, mask=mask, variant=pick("dgrad"), **geo)
    grad_w = wgrad(grad_y, x, weight.shape, mask=mask, variant=pick("wgrad"), **geo)
    grad_b = _bias_grad.bias_grad(grad_y, mask, executor=executor)
    return grad_x, grad_w, grad_b


class Conv2dOps:
    """The CUDA backend's convolutions, on float32 and 16-bit storage, NCHW and channels_last (see
    dlgpu.backend.Backend)."""

    conv2d = staticmethod(conv2d)
    conv2d_backward = staticmethod(conv2d_backward)
