"""Launchers for the matrix-product kernels (kernels/gemm.cu, kernels/gemm_tc.cu).

One entry point, :func:`gemm`: ``c = epilogue(op(a) @ op(b))`` for float32
C-contiguous 2-D arrays, op = transpose when ``transpose_a`` / ``transpose_b``,
with an optional fused epilogue (``bias`` per output column, then ReLU) and an
optional mask on A's loads (``mask_a``: A is multiplied by (mask_a > 0) as it
is loaded, mask_a stored like a; the ReLU backward fused into the product).
The backend functions (:func:`matmul`, :func:`linear`, :func:`matmul_backward`,
:func:`linear_backward`) are thin layers over it: backward products are
ordinary products in another layout, never a materialized transpose.

Variants live in :data:`VARIANTS`, the one list that tests and benchmarks read; each tiled
variant's tile configurations, the layouts it has kernels for and the tensor-core precisions
are read from the kernel sources (:mod:`dlgpu.cuda.kernel_decls`), where they are listed once:

- ``naive``: one thread per output, any layout and alignment; exact fp32.
- ``simt``: tiled exact fp32 on CUDA cores; needs 16-byte aligned operands
  whose leading dimensions are multiples of 4 (else the launcher takes naive).
- ``tc``: tensor cores through mma.sync (precisions tf32, bf16, fp16, fp32
  accumulation); the same alignment rule.

:func:`choose` picks the variant and tile configuration for a call; it is
plain Python, tested on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlgpu.cuda import bias_grad as _bias_grad
from dlgpu.cuda import kernel_decls
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import Launch, multiprocessor_count, output, require_float32
from dlgpu.errors import ArgumentError, ShapeError

# The kernels' `flags` (tests/test_kernel_decls.py ties every value mirrored from a kernel source).
FLAG_BIAS = 1  # kernels/common.cuh: EPILOGUE_BIAS (GEMM and convolution alike)
FLAG_RELU = 2  # EPILOGUE_RELU
FLAG_MASK_A = 4  # kernels/gemm_tile.cuh: GEMM_MASK_A (naive kernel only; the tiled kernels name it)

NAIVE_BLOCK = 16  # gemm_naive_f32: 16 x 16 threads
MAX_GRID_Y = 65535
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Variant:
    """A registered GEMM variant: the family it lives in and the precisions it computes."""

    name: str
    family: str
    precisions: tuple[str, ...]
    summary: str


# The tensor-core operand precisions: kernels/ptx.cuh's enum class Precision, whose enumerator
# names are also the value of the tensor-core families' -D..._PRECISION build define.
TC_PRECISIONS: tuple[str, ...] = kernel_decls.enumerators("ptx.cuh", "Precision")

VARIANTS: dict[str, Variant] = {
    "naive": Variant("naive", "gemm", ("ieee",), "one thread per output, any layout/alignment; the GPU oracle"),
    "simt": Variant("simt", "gemm", ("ieee",), "tiled fp32 FFMA, 8x8 per thread, 3-stage cp.async pipeline"),
    "tc": Variant("tc", "gemm_tc", TC_PRECISIONS, "mma.sync tensor cores, fp32 accumulation"),
}


@dataclass(frozen=True)
class TileConfig:
    """A tiled kernel's configuration: its name in kernel names, block tile and threads."""

    name: str
    block_m: int
    block_n: int
    threads: int


def tile_configs(source: str, macro: str) -> tuple[TileConfig, ...]:
    """A family's tile configurations, in the order of its X-macro list X(BM, BN, THREADS, ...)."""
    return tuple(TileConfig(f"{bm}x{bn}", int(bm), int(bn), int(threads))
                 for bm, bn, threads, *_ in kernel_decls.x_macro(source, macro))


# Largest first: choose() takes the first that still fills the device.
SIMT_CONFIGS = tile_configs("gemm.cu", "GEMM_SIMT_CONFIGS")
TC_CONFIGS = tile_configs("gemm_tc.cu", "GEMM_TC_CONFIGS")
# Each variant's tile configurations (naive has none).
CONFIGS: dict[str, tuple[TileConfig, ...]] = {"naive": (), "simt": SIMT_CONFIGS, "tc": TC_CONFIGS}

# (transpose_a, transpose_b, masked) -> the kernel-name suffix of every tiled kernel that exists,
# from kernels/gemm_tile.cuh's GEMM_PLAIN_LAYOUTS and GEMM_MASK_LAYOUTS: the four layouts, and `_mask`
# for the two products of linear_backward (grad_x: nn, grad_w: tn).  A combination missing here
# runs on naive.
KERNEL_SUFFIXES: dict[tuple[bool, bool, bool], str] = {
    (trans_a == "true", trans_b == "true", masked == "true"): suffix
    for macro in ("GEMM_PLAIN_LAYOUTS", "GEMM_MASK_LAYOUTS")
    for suffix, trans_a, trans_b, masked in kernel_decls.x_macro("gemm_tile.cuh", macro)
}


def layout_name(transpose_a: bool, transpose_b: bool) -> str:
    return ("t" if transpose_a else "n") + ("t" if transpose_b else "n")


LAYOUTS = tuple(layout_name(ta, tb) for (ta, tb, masked) in KERNEL_SUFFIXES if not masked)
MASK_LAYOUTS = tuple(layout_name(ta, tb) for (ta, tb, masked) in KERNEL_SUFFIXES if masked)


def kernel_names(variant: str) -> list[str]:
    """Every kernel a variant can launch, by name (the harness coverage reads this)."""
    if variant == "naive":
        return ["gemm_naive_f32"]
    prefix = {"simt": "gemm_simt", "tc": "gemm_tc"}[variant]
    return [f"{prefix}_{config.name}_{suffix}_f32" for config in CONFIGS[variant]
            for suffix in KERNEL_SUFFIXES.values()]


@dataclass(frozen=True)
class Plan:
    """What :func:`choose` decided: variant, configuration (None for naive), kernel, grid, block."""

    variant: str
    config: TileConfig | None
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int = 0
    defines: tuple[tuple[str, str], ...] = ()


def address(array) -> int:
    """The data pointer of a NumPy or CuPy array."""
    data = getattr(array, "data", None)
    ptr = getattr(data, "ptr", None)
    return int(ptr) if ptr is not None else int(array.ctypes.data)


def tile_ready(array) -> bool:
    """Can a tiled kernel load this operand in 16-byte chunks (base and every row 16-byte aligned)?"""
    return address(array) % 16 == 0 and int(array.shape[-1]) % 4 == 0


def _pick_config(configs, m: int, n: int, sms: int) -> TileConfig:
    """The largest tile that gives at least one block per SM; the smallest when none does.

    Tiles much wider than the matrix are skipped (half of a 128-wide tile idle on N = 40).
    """
    smallest = configs[-1]
    fitting = [c for c in configs if c is smallest or (c.block_m <= 2 * m and c.block_n <= 2 * n)]
    for config in fitting:
        if math.ceil(m / config.block_m) * math.ceil(n / config.block_n) >= sms:
            return config
    return configs[-1]


def config_by_name(configs, name: str | None, *, op: str = "gemm") -> TileConfig | None:
    """The configuration called ``name`` (None: let the heuristic choose); shared with conv2d."""
    if name is None:
        return None
    for config in configs:
        if config.name == name:
            return config
    raise ArgumentError(f"{op}: config must be one of {[c.name for c in configs]}, got {name!r}")


def choose(m: int, n: int, k: int, *, transpose_a: bool, transpose_b: bool, precision: str, masked: bool,
           aligned: bool, sms: int, variant: str | None = None, config: str | None = None) -> Plan:
    """The variant, configuration and launch geometry for an (m, n, k) product.

    ``aligned``: every operand passes :func:`tile_ready`.  ``variant`` forces one
    (tests and benchmarks), ``config`` a tile configuration by name.  A tiled
    variant that cannot take the call (unaligned, or a mask in a layout without a
    mask kernel) falls back to naive, which takes everything and is exact.
    """
    if variant is not None and variant not in VARIANTS:
        raise ArgumentError(f"gemm: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if variant is None:
        variant = "simt" if precision == "ieee" else "tc"
    if variant != "naive" and precision not in VARIANTS[variant].precisions:
        raise ArgumentError(f"gemm: variant {variant!r} computes {VARIANTS[variant].precisions}, not {precision!r}")
    suffix = KERNEL_SUFFIXES.get((transpose_a, transpose_b, masked))
    if variant != "naive" and (not aligned or suffix is None):
        variant = "naive"
    if variant == "naive":
        grid = (math.ceil(n / NAIVE_BLOCK), math.ceil(m / NAIVE_BLOCK), 1)
        return Plan("naive", None, "gemm_naive_f32", grid, (NAIVE_BLOCK, NAIVE_BLOCK, 1))
    if variant == "simt":
        config = config_by_name(SIMT_CONFIGS, config) or _pick_config(SIMT_CONFIGS, m, n, sms)
        kernel = f"gemm_simt_{config.name}_{suffix}_f32"
        shared = 0
    else:
        config = config_by_name(TC_CONFIGS, config) or _pick_config(TC_CONFIGS, m, n, sms)
        kernel = f"gemm_tc_{config.name}_{suffix}_f32"
        shared = tc_shared_bytes(config, transpose_a, transpose_b, precision)
    grid = (math.ceil(n / config.block_n), math.ceil(m / config.block_m), 1)
    defines = (("GEMM_TC_PRECISION", precision),) if variant == "tc" else ()
    return Plan(variant, config, kernel, grid, (config.threads, 1, 1), shared, defines)


# kernels/gemm_tc.cu: TC_STAGES tiles in flight, TC_BK elements of k per tile (16 floats for
# tf32, 32 halves for bf16/fp16), tf32 rows padded by TC_PAD_K (k-contiguous) or TC_PAD_MN
# floats, 16-bit rows swizzled (no padding).
TC_STAGES = 3  # kernels/gemm_tc.cu: TC_STAGES
TC_BK = {"tf32": 16, "bf16": 32, "fp16": 32}  # TC_BK_TF32, TC_BK_HALF
TC_PAD_K = 4  # TC_PAD_K
TC_PAD_MN = 8  # TC_PAD_MN


def tc_shared_bytes(config: TileConfig, transpose_a: bool, transpose_b: bool, precision: str) -> int:
    """Dynamic shared memory of a tc kernel: TC_STAGES x (A tile + B tile)."""
    bk = TC_BK[precision]
    if precision != "tf32":
        return 2 * TC_STAGES * (config.block_m + config.block_n) * bk

    def tile(extent: int, k_contiguous: bool) -> int:
        # k-contiguous tiles: extent rows of bk + TC_PAD_K floats; otherwise bk rows of extent + TC_PAD_MN.
        return extent * (bk + TC_PAD_K) if k_contiguous else bk * (extent + TC_PAD_MN)

    return 4 * TC_STAGES * (tile(config.block_m, not transpose_a) + tile(config.block_n, transpose_b))


# ---------------------------------------------------------------- the launcher


def _matrix(op: str, name: str, array):
    if array.ndim != 2:
        raise ShapeError(f"{op}: {name} must be 2-D, got shape {tuple(array.shape)}")
    if any(int(d) > INT32_MAX for d in array.shape):
        raise ShapeError(f"{op}: {name} has a dimension over 2^31 - 1: {tuple(array.shape)}")
    return int(array.shape[0]), int(array.shape[1])


def gemm(a, b, *, transpose_a=False, transpose_b=False, precision="ieee", bias=None, relu=False, mask_a=None,
         out=None, variant=None, config=None, executor=None):
    """c (M, N) float32 = relu?(op(a) @ op(b) + bias), with A masked by (mask_a > 0) when given.

    a: (M, K), or (K, M) with transpose_a; b: (K, N), or (N, K) with transpose_b;
    bias: (N,) or None; mask_a: a's shape or None; out: (M, N) or None.  All
    float32, C-contiguous.  ``variant`` / ``config`` force a registered variant and a
    tile configuration by name (see :func:`choose`).
    """
    executor = resolve_executor(executor)
    op = "gemm"
    require_float32(op, a=a, b=b, bias=bias, mask_a=mask_a)
    rows_a, cols_a = _matrix(op, "a", a)
    rows_b, cols_b = _matrix(op, "b", b)
    m, k = (cols_a, rows_a) if transpose_a else (rows_a, cols_a)
    k_b, n = (cols_b, rows_b) if transpose_b else (rows_b, cols_b)
    if k != k_b:
        raise ShapeError(f"{op}: inner dimensions differ: op(a) is {(m, k)}, op(b) is {(k_b, n)}")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ShapeError(f"{op}: bias has shape {tuple(bias.shape)}, expected ({n},)")
    if mask_a is not None and tuple(mask_a.shape) != tuple(a.shape):
        raise ShapeError(f"{op}: mask_a has shape {tuple(mask_a.shape)}, a has {tuple(a.shape)}")
    out = output(op, executor, out, (m, n))

    aligned = all(tile_ready(x) for x in (a, b) + (() if mask_a is None else (mask_a,)))
    plan = choose(m, n, k, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision,
                  masked=mask_a is not None, aligned=aligned, sms=multiprocessor_count(executor),
                  variant=variant, config=config)
    assert plan.grid[1] <= MAX_GRID_Y, f"{op}: M = {m} needs {plan.grid[1]} block rows, over {MAX_GRID_Y}"
    flags = (FLAG_BIAS if bias is not None else 0) | (FLAG_RELU if relu else 0)
    # Pointers a kernel never reads (flags say so) still have to be valid arrays for the seam.
    bias_arg = bias if bias is not None else out
    mask_arg = mask_a if mask_a is not None else a
    sizes = (np.int32(m), np.int32(n), np.int32(k))
    if plan.variant == "naive":
        flags |= FLAG_MASK_A if mask_a is not None else 0
        a_row, a_col = (1, m) if transpose_a else (k, 1)
        b_row, b_col = (1, k) if transpose_b else (n, 1)
        strides = tuple(np.int64(s) for s in (a_row, a_col, b_row, b_col))
        args = (a, b, bias_arg, mask_arg, out, *sizes, *strides, np.int32(flags))
    else:
        args = (a, b, bias_arg, mask_arg, out, *sizes, np.int32(flags))
    family = VARIANTS[plan.variant].family
    # The tensor-core kernels' shared ring passes 48 KB (128x128 tf32): they raise the kernel's limit.
    executor.launch(Launch(family, plan.kernel, plan.grid, plan.block, args, plan.shared_mem, plan.defines,
                           shared_opt_in=plan.variant == "tc"))
    return out


# ---------------------------------------------------------------- the backend's products


def matmul(a, b, transpose_a, transpose_b, precision, out, *, variant=None, config=None, executor=None):
    """op(a) @ op(b): (M, N) float32."""
    return gemm(a, b, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision, out=out,
                variant=variant, config=config, executor=executor)


def matmul_backward(grad_c, a, b, transpose_a, transpose_b, precision, *, variant=None, config=None, executor=None):
    """(grad_a, grad_b) for c = op(a) @ op(b), each in its input's own layout, by two products."""
    kw = dict(precision=precision, variant=variant, config=config, executor=executor)
    return backward_products(grad_c, a, b, transpose_a, transpose_b, lambda x, y, **layout: gemm(x, y, **layout, **kw))


def backward_products(grad_c, a, b, transpose_a, transpose_b, product):
    """(grad_a, grad_b) by two calls ``product(x, y, transpose_a=..., transpose_b=...)``.

    With A = op(a), B = op(b): dA = G B^T, dB = A^T G.  When a is stored transposed,
    grad_a = dA^T = B G^T, which is again a product of stored arrays in some layout;
    likewise grad_b = G^T A when b is.  (Shared by every GEMM family's launcher.)
    """
    if transpose_a:
        grad_a = product(b, grad_c, transpose_a=transpose_b, transpose_b=True)
    else:
        grad_a = product(grad_c, b, transpose_a=False, transpose_b=not transpose_b)
    if transpose_b:
        grad_b = product(grad_c, a, transpose_a=True, transpose_b=transpose_a)
    else:
        grad_b = product(a, grad_c, transpose_a=not transpose_a, transpose_b=False)
    return grad_a, grad_b


def linear(x, weight, bias, activation, precision, out, *, variant=None, config=None, executor=None):
    """act(x @ weight.T + bias) in one launch: x (B, in), weight (out, in), bias (out,) or None."""
    return gemm(x, weight, transpose_b=True, precision=precision, bias=bias, relu=activation == "relu", out=out,
                variant=variant, config=config, executor=executor)


def linear_backward(grad_y, x, weight, y, activation, precision, *, variant=None, config=None, executor=None):
    """(grad_x, grad_w, grad_b); with activation="relu" every product loads grad_y masked by (y > 0).

    grad_x = G W (layout nn), grad_w = G^T X (layout tn), grad_b = column sums of G,
    where G is grad_y masked in the kernels' loads, never written out.
    """
    mask = y if activation == "relu" else None
    kw = dict(precision=precision, variant=variant, config=config, executor=executor, mask_a=mask)
    grad_x = gemm(grad_y, weight, **kw)
    grad_w = gemm(grad_y, x, transpose_a=True, **kw)
    grad_b = _bias_grad.bias_grad(grad_y, mask, executor=executor)
    return grad_x, grad_w, grad_b


class GemmOps:
    """The CUDA backend's products (see dlgpu.backend.Backend)."""

    matmul = staticmethod(matmul)
    matmul_backward = staticmethod(matmul_backward)
    linear = staticmethod(linear)
    linear_backward = staticmethod(linear_backward)
