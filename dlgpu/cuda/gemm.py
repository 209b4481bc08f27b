"""Launchers for the matrix-product kernels (kernels/gemm.cu, kernels/gemm_tc.cu).

One entry point, :func:`gemm`: ``c = epilogue(op(a) @ op(b))`` for C-contiguous 2-D arrays, op =
transpose when ``transpose_a`` / ``transpose_b``, with an optional fused epilogue (``bias`` per
output column, then ReLU) and an optional mask on A (``mask_a``: A is multiplied by (mask_a > 0),
mask_a stored like a; the ReLU backward fused into the product).  The backend functions
(:func:`matmul`, :func:`linear`, :func:`matmul_backward`, :func:`linear_backward`) are thin layers
over it: backward products are ordinary products in another layout, never a materialized transpose.

Operands are float32, or 16-bit (float16; bfloat16 as ``ml_dtypes.bfloat16`` on NumPy, or uint16
arrays of bf16 bits with ``precision="bf16"``: see :mod:`dlgpu.cuda.gemm_cast`).  16-bit operands run on
tensor cores at their own precision and give C in their dtype by default (``out_dtype=np.float32``
for fp32); float32 operands give float32 C.

Variants live in :data:`VARIANTS`, the one list that tests and benchmarks read; each tiled
variant's tile configurations, the layouts it has kernels for and the tensor-core precisions
are read from the kernel sources (:mod:`dlgpu.cuda.kernel_decls`), where they are listed once:

- ``naive``: one thread per output, any layout and alignment; exact fp32.
- ``simt``: tiled exact fp32 on CUDA cores; needs 16-byte aligned operands
  whose leading dimensions are multiples of 4 (else the launcher takes naive).
- ``tc``: tensor cores through mma.sync (precisions tf32, bf16, fp16, fp32 accumulation), operands
  read by cp.async in the storage of the precision (fp32 for tf32, 16 bits for bf16 / fp16).  An
  operand stored otherwise, masked, or with rows that are not a multiple of 16 bytes first goes
  through one producer pass (kernels/gemm_cast.cu) that writes the copy the kernel reads.
- ``wgmma``: Hopper's warpgroup tensor cores (kernels/gemm_wgmma.cu: TMA, mbarriers, clusters; sm_90a
  only), launched by :mod:`dlgpu.cuda.gemm_wgmma`; bf16 and fp16 in every layout, tf32 in layout nt.

:func:`default_variant` picks the variant of a call (wgmma where the device is compute capability 9.0
and wgmma has the layout, else tc, for the tensor-core precisions; simt for "ieee") and :func:`choose`
the tile configuration of the mma.sync and CUDA-core variants; plain Python, tested on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlgpu.cuda import bias_grad as _bias_grad
from dlgpu.cuda import gemm_cast as _cast
from dlgpu.cuda import kernel_decls
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import INT32_MAX, MAX_GRID_Y, Launch, compute_capability, multiprocessor_count, require_float32
from dlgpu.errors import ArgumentError, DtypeError, LayoutError, ShapeError

# The kernels' `flags` (tests/test_kernel_decls.py ties every value mirrored from a kernel source).
FLAG_BIAS = 1  # kernels/common.cuh: EPILOGUE_BIAS (GEMM and convolution alike)
FLAG_RELU = 2  # EPILOGUE_RELU
FLAG_MASK_A = 4  # kernels/gemm_tile.cuh: GEMM_MASK_A (naive kernel only; the tiled kernels name it)
FLAG_STORE_HALF = 8  # kernels/gemm_tile.cuh: GEMM_STORE_HALF (C stored in the operands' 16-bit type)

NAIVE_BLOCK = 16  # gemm_naive_f32: 16 x 16 threads


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
    "tc": Variant("tc", "gemm_tc", TC_PRECISIONS,
                  "mma.sync tensor cores fed by cp.async and ldmatrix from the precision's storage type"),
    "wgmma": Variant("wgmma", "gemm_wgmma", ("bf16", "fp16", "tf32"),
                     "wgmma + TMA + mbarrier pipeline, producer/consumer warpgroups, persistent; sm_90a"),
}
# wgmma exists on compute capability 9.0 alone (sm_90a: not on Blackwell); the default there.
WGMMA_COMPUTE_CAPABILITY = 90


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
# kernels/gemm_tc.cu's X(BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS): each configuration's stages.
TC_STAGES = {f"{bm}x{bn}": int(stages) for bm, bn, _, _, _, stages, _ in kernel_decls.x_macro("gemm_tc.cu",
                                                                                            "GEMM_TC_CONFIGS")}
# kernels/gemm_wgmma.cu's X(BM, BN, THREADS, STAGES, CLUSTER), largest first (dlgpu/cuda/gemm_wgmma.py plans them).
WGMMA_CONFIGS = tile_configs("gemm_wgmma.cu", "GEMM_WGMMA_CONFIGS")
# Each variant's tile configurations (naive has none).
CONFIGS: dict[str, tuple[TileConfig, ...]] = {"naive": (), "simt": SIMT_CONFIGS, "tc": TC_CONFIGS,
                                              "wgmma": WGMMA_CONFIGS}

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
    if variant == "tc":  # every plain layout, in the storage type of the build's precision
        return [f"gemm_tc_{config.name}_{layout}" for config in TC_CONFIGS for layout in LAYOUTS]
    if variant == "wgmma":  # one build holds every precision; tf32 in layout nt only
        return [f"gemm_wgmma_{config.name}_{layout}_{precision}"
                for config in WGMMA_CONFIGS for precision in VARIANTS["wgmma"].precisions
                for layout in (LAYOUTS if precision != "tf32" else ("nt",))]
    return [f"gemm_simt_{config.name}_{suffix}_f32" for config in SIMT_CONFIGS for suffix in KERNEL_SUFFIXES.values()]


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
    """The data pointer of a NumPy or CuPy array (NumPy's by ctypes: ``.data`` of an ml_dtypes array raises)."""
    return int(array.ctypes.data) if isinstance(array, np.ndarray) else int(array.data.ptr)


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


def wgmma_takes(precision: str, transpose_a: bool, transpose_b: bool) -> bool:
    """Has the wgmma variant a kernel for this precision and layout (tf32: K-major a and b, layout nt)?"""
    return precision in VARIANTS["wgmma"].precisions and (precision != "tf32" or (not transpose_a and transpose_b))


def default_variant(precision: str, *, transpose_a: bool, transpose_b: bool, capability: int | None) -> str:
    """The variant of a call that names none: simt for "ieee"; for the tensor-core precisions wgmma on a
    compute capability 9.0 device where it has the layout, else mma.sync (tc).  ``capability`` None (the
    CPU harness unless told otherwise) keeps mma.sync, which runs on every arch."""
    if precision == "ieee":
        return "simt"
    if capability == WGMMA_COMPUTE_CAPABILITY and wgmma_takes(precision, transpose_a, transpose_b):
        return "wgmma"
    return "tc"


def choose(m: int, n: int, k: int, *, transpose_a: bool, transpose_b: bool, precision: str, masked: bool,
           aligned: bool, sms: int, variant: str | None = None, config: str | None = None) -> Plan:
    """The variant, configuration and launch geometry for an (m, n, k) product.

    ``aligned``: every operand passes :func:`tile_ready`.  ``variant`` forces one
    (tests and benchmarks), ``config`` a tile configuration by name.  simt cannot take
    an unaligned call or a mask in a layout without a mask kernel: it falls back to
    naive, which takes everything and is exact.  tc takes every call (its launcher
    stages what the kernels cannot read directly: :func:`gemm`).
    """
    if variant is not None and variant not in VARIANTS:
        raise ArgumentError(f"gemm: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if variant is None:
        variant = "simt" if precision == "ieee" else "tc"
    if variant != "naive" and precision not in VARIANTS[variant].precisions:
        raise ArgumentError(f"gemm: variant {variant!r} computes {VARIANTS[variant].precisions}, not {precision!r}")
    if variant == "wgmma":
        raise ArgumentError("gemm: the wgmma variant plans its own launches (dlgpu.cuda.gemm_wgmma.plan)")
    suffix = KERNEL_SUFFIXES.get((transpose_a, transpose_b, masked))
    if variant == "simt" and (not aligned or suffix is None):
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
        kernel = f"gemm_tc_{config.name}_{layout_name(transpose_a, transpose_b)}"
        shared = tc_shared_bytes(config, transpose_a, transpose_b, precision)
    grid = (math.ceil(n / config.block_n), math.ceil(m / config.block_m), 1)
    defines = (("GEMM_TC_PRECISION", precision),) if variant == "tc" else ()
    return Plan(variant, config, kernel, grid, (config.threads, 1, 1), shared, defines)


# kernels/tc_tile.cuh: k-contiguous tile rows of TC_TILE_ROW_BYTES (16 floats, 32 halves), swizzled; m/n-contiguous
# tiles of that many bytes of k in rows, tf32 rows padded by TC_PAD_MN floats.
_TC_TILE = kernel_decls.integer_defines("tc_tile.cuh")
TC_TILE_ROW_BYTES = _TC_TILE["TC_TILE_ROW_BYTES"]
TC_PAD_MN = _TC_TILE["TC_PAD_MN"]


def tc_tile_bytes(extent: int, k_contiguous: bool, precision: str) -> int:
    """One operand tile of tc_tile.cuh (TcTile): ``extent`` rows of m (or n) by one tile of k."""
    element = _cast.ELEMENT_BYTES[_cast.PRECISION_STORAGE[precision]]
    k_tile = TC_TILE_ROW_BYTES // element
    if k_contiguous:
        return extent * TC_TILE_ROW_BYTES
    padding = TC_PAD_MN if precision == "tf32" else 0
    return k_tile * (extent + padding) * element


def tc_shared_bytes(config: TileConfig, transpose_a: bool, transpose_b: bool, precision: str) -> int:
    """Dynamic shared memory of a tc kernel: its stages x (A tile + B tile)."""
    stage = tc_tile_bytes(config.block_m, not transpose_a, precision) + tc_tile_bytes(config.block_n, transpose_b,
                                                                                       precision)
    return TC_STAGES[config.name] * stage


# ---------------------------------------------------------------- the launcher


def _matrix(op: str, name: str, array):
    if array.ndim != 2:
        raise ShapeError(f"{op}: {name} must be 2-D, got shape {tuple(array.shape)}")
    if any(int(d) > INT32_MAX for d in array.shape):
        raise ShapeError(f"{op}: {name} has a dimension over 2^31 - 1: {tuple(array.shape)}")
    return int(array.shape[0]), int(array.shape[1])


def operand_precision(op: str, precision: str | None, *arrays) -> str:
    """The precision a product of ``arrays`` computes at: float32 operands at ``precision`` (None: "ieee");
    16-bit operands at their own, which ``precision`` may name (and must, for uint16 bits)."""
    halves = [np.dtype(x.dtype).name for x in arrays if np.dtype(x.dtype) != np.float32]
    if not halves:
        return "ieee" if precision is None else precision
    implied = {"float16": "fp16", "bfloat16": "bf16"}
    named = {implied[h] for h in halves if h in implied}
    if any(h not in implied and h != "uint16" for h in halves):
        raise DtypeError(f"{op}: operands must be float32, float16, bfloat16 or uint16 (bf16 / fp16 bits), "
                         f"got {sorted(set(halves))}")
    wanted = named | ({precision} if precision not in (None, "ieee") else set())
    if len(wanted) != 1 or wanted <= {"tf32"}:
        raise DtypeError(f"{op}: 16-bit operands ({sorted(set(halves))}) compute at their own precision, bf16 or fp16 "
                         f"(uint16 holds either: say which), not {precision!r}")
    return wanted.pop()


TENSOR_CORE_VARIANTS = ("tc", "wgmma")


def _on_wgmma(executor, a, b, transpose_a, transpose_b, precision, bias, relu, mask_a, out, config):
    """The product on dlgpu.cuda.gemm_wgmma: operands brought to the precision's storage first (a masked
    or fp32-stored operand at bf16 / fp16 through the producer pass); tf32 in layout nt only."""
    from dlgpu.cuda import gemm_wgmma  # which imports this module: bound at call time

    if precision not in VARIANTS["wgmma"].precisions:
        raise ArgumentError(f"gemm: variant 'wgmma' computes {VARIANTS['wgmma'].precisions}, not {precision!r}")
    if not wgmma_takes(precision, transpose_a, transpose_b):
        raise ArgumentError("gemm: wgmma reads tf32 operands K-major only: transpose_a=False, transpose_b=True")
    # TMA pads the edges itself: no row padding.
    arrays = [_tc_operand(executor, a, precision, mask_a, pad_rows=False)[0],
              _tc_operand(executor, b, precision, pad_rows=False)[0], out]
    # One 16-bit dtype for all: ml_dtypes' bfloat16 beside the producer pass's uint16 bits (or a uint16
    # caller's bfloat16 out) are the same bits, viewed alike.
    halves = {np.dtype(x.dtype) for x in arrays if np.dtype(x.dtype).itemsize == 2}
    if len(halves) > 1:
        arrays = [x.view(np.uint16) if np.dtype(x.dtype).itemsize == 2 else x for x in arrays]
    a_w, b_w, out_w = arrays
    gemm_wgmma.gemm(a_w, b_w, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision, bias=bias,
                    relu=relu, out=out_w, out_dtype=out_w.dtype, config=config, executor=executor)
    return out


def _tc_operand(executor, array, precision: str, mask=None, *, pad_rows=True):
    """(what a tensor-core kernel reads, its leading dimension): ``array`` itself when it is stored as the
    precision reads it and unmasked (and, with ``pad_rows``, 16-byte aligned with 16-byte rows, as cp.async
    wants); else its copy by the producer pass (kernels/gemm_cast.cu), rows padded to 16 bytes with pad_rows."""
    storage = _cast.PRECISION_STORAGE[precision]
    element = _cast.ELEMENT_BYTES[storage]
    source = _cast.storage_of(array, precision)
    if source not in ("f32", storage):
        raise DtypeError(f"gemm: a {source} operand cannot be multiplied at {precision}")
    cols = int(array.shape[-1])
    aligned = not pad_rows or (address(array) % 16 == 0 and cols * element % 16 == 0)
    if source == storage and mask is None and aligned:
        return array, cols
    copy, _ = _cast.cast(array, storage, src_storage=source, mask=mask,
                         row_multiple=16 // element if pad_rows else 1, executor=executor)
    return copy, int(copy.shape[-1])


def gemm(a, b, *, transpose_a=False, transpose_b=False, precision="ieee", bias=None, relu=False, mask_a=None,
         out=None, out_dtype=None, variant=None, config=None, executor=None):
    """c (M, N) = relu?(op(a) @ op(b) + bias), with A masked by (mask_a > 0) when given.

    a: (M, K), or (K, M) with transpose_a; b: (K, N), or (N, K) with transpose_b; bias: (N,) or None;
    mask_a: a's shape and dtype, or None; out: (M, N) or None.  All C-contiguous.  Operands float32
    (any precision), or 16-bit (see the module docstring; tc only).  c is float32, or the 16-bit
    operands' dtype: ``out_dtype`` (or ``out``'s dtype) chooses; float32 operands give float32.
    ``variant`` / ``config`` force a registered variant and a tile configuration by name (see
    :func:`choose`).
    """
    executor = resolve_executor(executor)
    op = "gemm"
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
    for name, array in (("a", a), ("b", b), ("mask_a", mask_a), ("bias", bias)):
        if array is not None and not array.flags.c_contiguous:
            raise LayoutError(f"{op}: {name} must be C-contiguous")
    precision = operand_precision(op, precision, a, b, *(() if mask_a is None else (mask_a,)))
    half_operands = [x for x in (a, b) if np.dtype(x.dtype) != np.float32]
    if out_dtype is None:
        out_dtype = out.dtype if out is not None else (half_operands[0].dtype if half_operands else np.float32)
    out_dtype = np.dtype(out_dtype)
    if out_dtype != np.float32 and (precision not in ("bf16", "fp16") or
                                    out_dtype != _cast.storage_dtype(precision, half_operands[0] if half_operands
                                                                     else None)):
        raise DtypeError(f"{op}: C is float32, or 16-bit of the operands' own type; got {out_dtype.name} "
                         f"at {precision}")
    if out is None:
        out = executor.xp.empty((m, n), dtype=out_dtype)
    elif tuple(out.shape) != (m, n) or np.dtype(out.dtype) != out_dtype or not out.flags.c_contiguous:
        raise ShapeError(f"{op}: out must be a C-contiguous {out_dtype.name} array of shape {(m, n)}")

    if variant is None:
        variant = default_variant(precision, transpose_a=transpose_a, transpose_b=transpose_b,
                                  capability=compute_capability(executor))
    if half_operands and variant not in TENSOR_CORE_VARIANTS:
        raise ArgumentError(f"{op}: 16-bit operands run on the tensor-core variants {TENSOR_CORE_VARIANTS} only, "
                            f"not {variant!r}")
    if variant == "wgmma":
        return _on_wgmma(executor, a, b, transpose_a, transpose_b, precision, bias, relu, mask_a, out, config)
    aligned = all(tile_ready(x) for x in (a, b) + (() if mask_a is None else (mask_a,)))
    plan = choose(m, n, k, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision,
                  masked=mask_a is not None, aligned=aligned, sms=multiprocessor_count(executor),
                  variant=variant, config=config)
    assert plan.grid[1] <= MAX_GRID_Y, f"{op}: M = {m} needs {plan.grid[1]} block rows, over {MAX_GRID_Y}"
    flags = (FLAG_BIAS if bias is not None else 0) | (FLAG_RELU if relu else 0)
    sizes = (np.int32(m), np.int32(n), np.int32(k))
    if plan.variant == "tc":
        a_k, lda = _tc_operand(executor, a, precision, mask_a)
        b_k, ldb = _tc_operand(executor, b, precision)
        bias_arg = _cast.to_float32(executor.xp, bias, precision) if bias is not None else out
        flags |= FLAG_STORE_HALF if out_dtype != np.float32 else 0
        args = (a_k, b_k, bias_arg, out, *sizes, np.int32(lda), np.int32(ldb), np.int32(flags))
        # The shared ring passes 48 KB (3-4 stages of 128x256 or 128x128 tiles): the launch raises the kernel's limit.
        executor.launch(Launch(VARIANTS["tc"].family, plan.kernel, plan.grid, plan.block, args, plan.shared_mem,
                               plan.defines, shared_opt_in=True))
        return out

    require_float32(op, a=a, b=b, out=out, **({} if bias is None else {"bias": bias}),
                    **({} if mask_a is None else {"mask_a": mask_a}))
    # Pointers a kernel never reads (flags say so) still have to be valid arrays for the seam.
    bias_arg = bias if bias is not None else out
    mask_arg = mask_a if mask_a is not None else a
    if plan.variant == "naive":
        flags |= FLAG_MASK_A if mask_a is not None else 0
        a_row, a_col = (1, m) if transpose_a else (k, 1)
        b_row, b_col = (1, k) if transpose_b else (n, 1)
        strides = tuple(np.int64(s) for s in (a_row, a_col, b_row, b_col))
        args = (a, b, bias_arg, mask_arg, out, *sizes, *strides, np.int32(flags))
    else:
        args = (a, b, bias_arg, mask_arg, out, *sizes, np.int32(flags))
    executor.launch(Launch(VARIANTS[plan.variant].family, plan.kernel, plan.grid, plan.block, args, plan.shared_mem,
                           plan.defines))
    return out


# ---------------------------------------------------------------- the backend's products


def matmul(a, b, transpose_a, transpose_b, precision, out, *, variant=None, config=None, executor=None):
    """op(a) @ op(b): (M, N), float32 or the 16-bit operands' dtype (float32 where ``out`` is)."""
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
    where G is grad_y masked by (y > 0).  simt and naive mask in the kernels' loads and never write G
    out; on tensor cores (tc, wgmma) the producer pass writes the masked G once, in the precision's
    storage, for both products to read (kernels/gemm_cast.cu).
    """
    executor = resolve_executor(executor)
    mask = y if activation == "relu" else None
    kw = dict(precision=precision, variant=variant, config=config, executor=executor)
    grad_out = grad_y
    if mask is not None and (variant in TENSOR_CORE_VARIANTS or (variant is None and precision != "ieee")):
        grad_out, _ = _cast.cast(grad_y, _cast.PRECISION_STORAGE[precision], src_storage=precision, mask=mask,
                                 executor=executor)
        mask_kw = {}
    else:
        mask_kw = {"mask_a": mask}
    out_dtype = {"out_dtype": np.float32} if np.dtype(grad_y.dtype) == np.float32 else {}
    grad_x = gemm(grad_out, weight, **kw, **mask_kw, **out_dtype)
    grad_w = gemm(grad_out, x, transpose_a=True, **kw, **mask_kw, **out_dtype)
    grad_b = _bias_grad.bias_grad(grad_y, mask, executor=executor)
    return grad_x, grad_w, grad_b


class GemmOps:
    """The CUDA backend's products, on float32 and 16-bit storage alike (see dlgpu.backend.Backend)."""

    matmul = staticmethod(matmul)
    matmul_backward = staticmethod(matmul_backward)
    linear = staticmethod(linear)
    linear_backward = staticmethod(linear_backward)
