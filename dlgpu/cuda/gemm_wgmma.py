"""Launcher for kernels/gemm_wgmma.cu: the matrix product on Hopper's warpgroup tensor cores (sm_90a).

:func:`gemm` computes ``c = epilogue(op(a) @ op(b))`` from operands in their 16-bit storage,
read by TMA straight into swizzled shared tiles and multiplied by wgmma with fp32 accumulation:

- float16 arrays: fp16;
- bfloat16 arrays (``ml_dtypes.bfloat16`` on NumPy), or uint16 arrays holding the bit patterns
  with ``precision="bf16"`` (CuPy has no bfloat16 dtype; a torch bf16 tensor viewed as int16/uint16);
  uint16 with ``precision="fp16"`` holds fp16 bits;
- float32 arrays with ``precision="tf32"``: read as tf32 (wgmma ignores the low 13 mantissa
  bits), and only with ``transpose_b=True`` and ``transpose_a=False`` (wgmma reads tf32 operands
  K-major: a stored (M, K), b stored (N, K)).

c is float32, or with ``out_dtype`` the operands' 16-bit dtype.  The fused epilogue adds ``bias``
(N,) per column and applies ReLU.  Any M, N, K >= 1; an operand whose rows are not a multiple of
16 bytes (TMA's rule) is copied once into a padded array.

The variant is :data:`VARIANT`, registered in dlgpu.cuda.gemm's VARIANTS, with its tile
configurations in :data:`CONFIGS`; it runs on compute capability 9.0 (wgmma exists on sm_90a alone:
not on Blackwell) and on the CPU harness.  :func:`available` says whether an executor can run it.
dlgpu.cuda.gemm.gemm, which every product of the CUDA backend calls (the backward products and
linear's masked backward included), sends bf16 / fp16 products and tf32 products in layout nt here on
such a device (``variant="wgmma"`` forces it), casting fp32 or masked operands to 16-bit storage
first; the mma.sync variant (``tc``) stays the path for the other layouts and every other GPU.

How a call is cut up (:func:`plan`): the widest tile runs in clusters of two CTAs along M that share
each B tile by TMA multicast (:data:`CLUSTER`); a persistent grid of clusters walks the tiles; when
the tiles are too few to fill the device and K is long, each tile's k-tiles are split over several
blocks (split-K, :func:`choose_splits`), whose fp32 partial sums meet in a workspace and are added in
a fixed order by the last to finish.  C leaves through TMA stores from shared memory, into ``out``
itself when its rows are 16-byte multiples, else into a padded array copied into ``out`` afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlgpu.cuda import gemm as _gemm
from dlgpu.cuda import kernel_decls
from dlgpu.cuda import tma
from dlgpu.cuda.executor import resolve_executor
from dlgpu.cuda.launch import INT32_MAX, Launch, compute_capability, multiprocessor_count
from dlgpu.errors import ArgumentError, BackendUnavailableError, DtypeError, LayoutError, ShapeError

FAMILY = "gemm_wgmma"
# Registered in dlgpu.cuda.gemm's VARIANTS, which dlgpu.cuda.gemm.gemm routes to this module.
VARIANT = _gemm.VARIANTS["wgmma"]
# Largest first, from kernels/gemm_wgmma.cu's GEMM_WGMMA_CONFIGS X(BM, BN, THREADS, STAGES, CLUSTER): 128
# rows (two consumer warpgroups of 64), BN columns, the ring's stages, and the CTAs of a cluster.
CONFIGS = _gemm.CONFIGS["wgmma"]
_X = kernel_decls.x_macro("gemm_wgmma.cu", "GEMM_WGMMA_CONFIGS")
STAGES = {f"{bm}x{bn}": int(stages) for bm, bn, _, stages, _ in _X}
CLUSTER = {f"{bm}x{bn}": int(cluster) for bm, bn, _, _, cluster in _X}
_DEFINES = kernel_decls.integer_defines("wgmma_tile.cuh")
FLAG_STORE_HALF = _gemm.FLAG_STORE_HALF  # kernels/gemm_tile.cuh: GEMM_STORE_HALF
STORE_ROWS = _DEFINES["WGMMA_STORE_ROWS"]  # a TMA store box: 16 rows of 128 bytes
STORE_BOXES = _DEFINES["WGMMA_STORE_BOXES"]  # staging boxes per consumer warp
STORE_MAP = 2  # C's tensor map follows A's and B's
WARPS_PER_TILE = _DEFINES["WGMMA_WARPS_PER_TILE"]  # consumer warps: one split-K counter each
TILE_ROW_BYTES = 128  # every shared tile row: one 128-byte swizzled row of k (or of m / n)
COMPUTE_CAPABILITY = _gemm.WGMMA_COMPUTE_CAPABILITY
# Split-K: a split keeps at least this many k-tiles (the pipeline's fill and drain, and the partial
# sums' round trip, amortized), and a tile is split at most this many ways.
MIN_SPLIT_K_TILES = 4
MAX_SPLITS = 16
_TMA_DTYPE = {"bf16": "bf16", "fp16": "fp16", "tf32": "f32"}


def kernel_names() -> list[str]:
    """Every kernel of kernels/gemm_wgmma.cu, by name (tf32: layout nt only)."""
    return _gemm.kernel_names(VARIANT.name)


def shared_bytes(config: _gemm.TileConfig, stages: int | None = None) -> int:
    """Dynamic shared memory: the ring's stages (A 128 rows + B BN rows of 128 bytes), the consumer
    warps' staging boxes for TMA stores, the ring's barriers, and 1 KB to put the tiles on a
    1024-byte boundary (kernels/wgmma_tile.cuh: WgmmaTiles).  ``stages``: another family's ring on the
    same layout (conv2d_wgmma); this family's stage count by default."""
    stages = STAGES[config.name] if stages is None else stages
    staging = WARPS_PER_TILE * STORE_BOXES * STORE_ROWS * TILE_ROW_BYTES
    return stages * (config.block_m + config.block_n) * TILE_ROW_BYTES + staging + 2 * stages * 8 + 1024


def available(executor) -> bool:
    """Whether ``executor`` runs wgmma: the CPU harness (unless told it plans for another device), or CuPy
    on a compute capability 9.0 device."""
    capability = compute_capability(executor)
    return capability is None or capability == COMPUTE_CAPABILITY


UNAVAILABLE = "wgmma needs a compute capability 9.0 GPU (sm_90a)"


def require(executor, op: str) -> None:
    """Refuse, naming ``op``, an executor that cannot run wgmma (:func:`available`); every wgmma launcher
    (this module's and dlgpu.cuda.conv2d_wgmma's) asks before it plans."""
    if not available(executor):
        raise BackendUnavailableError(f"{op}: {UNAVAILABLE}")


def storage_precision(a, b, precision: str | None) -> str:
    """The precision the operands' dtype (and ``precision``) call for: "bf16", "fp16" or "tf32"."""
    names = {np.dtype(a.dtype).name, np.dtype(b.dtype).name}
    if len(names) != 1:
        raise DtypeError(f"gemm_wgmma: a and b must share a dtype, got {sorted(names)}")
    name = names.pop()
    implied = {"float16": ("fp16",), "bfloat16": ("bf16",), "uint16": ("bf16", "fp16"), "float32": ("tf32",)}
    if name not in implied:
        raise DtypeError(f"gemm_wgmma: operands must be float16, bfloat16, uint16 bits or float32, got {name}")
    if precision is None and len(implied[name]) == 1:
        return implied[name][0]
    if precision not in implied[name]:
        raise DtypeError(f"gemm_wgmma: {name} operands compute at {' or '.join(implied[name])}, "
                         f"not {precision!r}" + (" (uint16 holds bf16 or fp16 bits: say which)" if name == "uint16"
                                                  else ""))
    return precision


def choose(m: int, n: int, sms: int, config: str | None = None) -> _gemm.TileConfig:
    """The tile: 128 x 256 when there are at least as many of those tiles as SMs, else 128 x 128."""
    chosen = _gemm.config_by_name(CONFIGS, config, op="gemm_wgmma")
    if chosen is not None:
        return chosen
    wide = CONFIGS[0]
    if n > CONFIGS[1].block_n and math.ceil(m / wide.block_m) * math.ceil(n / wide.block_n) >= sms:
        return wide
    return CONFIGS[1]


def choose_splits(units: int, cluster: int, k_tiles: int, sms: int) -> int:
    """How many ways to split each tile's k-tiles: 1 when ``units`` (tiles, or cluster tiles of
    ``cluster`` CTAs) fill the device, else as many as fill it without a split shorter than
    MIN_SPLIT_K_TILES; every split non-empty (the kernel relies on it)."""
    blocks = units * cluster
    splits = max(1, min(sms // blocks, k_tiles // MIN_SPLIT_K_TILES, MAX_SPLITS)) if blocks < sms else 1
    per_split = -(-k_tiles // splits)
    return -(-k_tiles // per_split)


def _tma_ready(xp, array, element_bytes: int, copy: bool = True):
    """``array`` itself when TMA can reach it (16-byte aligned base and row pitch), else a padded copy
    (or, ``copy=False``, for an output, a padded array of the same dtype with nothing copied).

    Returns (storage, pitch in bytes); the matrix is storage[:, :cols].
    """
    rows, cols = array.shape
    if (cols * element_bytes) % 16 == 0 and _gemm.address(array) % 16 == 0:
        return array, cols * element_bytes
    padded = -(-cols * element_bytes // 16) * 16 // element_bytes
    storage = (xp.zeros if copy else xp.empty)((rows, padded), dtype=array.dtype)
    if copy:
        storage[:, :cols] = array
    return storage, padded * element_bytes


def _as_float32(xp, array, precision: str):
    """A small array (bias) as float32: decoded from 16-bit bits when it is uint16."""
    if np.dtype(array.dtype).name == "uint16":
        if precision == "bf16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.view(np.float16).astype(np.float32)
    return xp.ascontiguousarray(array.astype(np.float32))


def _matrix(name: str, array):
    if array.ndim != 2:
        raise ShapeError(f"gemm_wgmma: {name} must be 2-D, got shape {tuple(array.shape)}")
    if not array.flags.c_contiguous:
        raise LayoutError(f"gemm_wgmma: {name} must be C-contiguous")
    if any(int(d) > INT32_MAX for d in array.shape):
        raise ShapeError(f"gemm_wgmma: {name} has a dimension over 2^31 - 1: {tuple(array.shape)}")
    return int(array.shape[0]), int(array.shape[1])


def gemm(a, b, *, transpose_a=False, transpose_b=False, precision=None, bias=None, relu=False, out=None,
         out_dtype=None, config=None, splits=None, executor=None):
    """c (M, N) = relu?(op(a) @ op(b) + bias) on wgmma; see the module docstring for dtypes.

    a: (M, K), or (K, M) with transpose_a; b: (K, N), or (N, K) with transpose_b; bias: (N,)
    float32 or the operands' dtype; out: (M, N) of ``out_dtype`` (float32 by default, or the
    operands' dtype when it is 16-bit).  ``config`` forces a tile configuration by name, ``splits``
    a split-K factor (tests and benchmarks; :func:`choose_splits` otherwise).
    """
    executor = resolve_executor(executor)
    planned = plan(a, b, transpose_a=transpose_a, transpose_b=transpose_b, precision=precision, bias=bias,
                   relu=relu, out=out, out_dtype=out_dtype, config=config, splits=splits, executor=executor)
    executor.launch(planned.launch)
    return planned.finish()


@dataclass(frozen=True)
class Planned:
    """A checked call: its :class:`Launch`, and ``finish()``, which returns C once the launch has run.

    The TMA stores write ``store`` (``out``, or a padded array when out's rows are not 16-byte
    multiples), through tensor map STORE_MAP; on the CPU harness they write the copy of it that
    travels inside the tensor-map buffer (dlgpu/cuda/tma.py).  ``finish`` brings C into ``out``.
    """

    launch: Launch
    out: object
    store: object
    maps: object
    pairs: tuple
    store_map: int = STORE_MAP  # which of ``pairs`` the TMA stores write (another family's layout of maps)

    def finish(self):
        tma.copy_back(self.maps, self.pairs, self.store_map)
        if self.store is not self.out:
            self.out[...] = self.store[:, :self.out.shape[1]]
        return self.out


def plan(a, b, *, transpose_a, transpose_b, precision, bias, relu, out, out_dtype, config, executor, splits=None):
    """The checked arguments of :func:`gemm` as a :class:`Planned` launch (tensor maps made)."""
    xp = executor.xp
    require(executor, "gemm_wgmma")
    precision = storage_precision(a, b, precision)
    rows_a, cols_a = _matrix("a", a)
    rows_b, cols_b = _matrix("b", b)
    m, k = (cols_a, rows_a) if transpose_a else (rows_a, cols_a)
    k_b, n = (cols_b, rows_b) if transpose_b else (rows_b, cols_b)
    if k != k_b:
        raise ShapeError(f"gemm_wgmma: inner dimensions differ: op(a) is {(m, k)}, op(b) is {(k_b, n)}")
    if precision == "tf32" and (transpose_a or not transpose_b):
        raise ArgumentError("gemm_wgmma: tf32 operands must be K-major: transpose_a=False, transpose_b=True")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ShapeError(f"gemm_wgmma: bias has shape {tuple(bias.shape)}, expected ({n},)")
    out_dtype = np.dtype(np.float32 if out_dtype is None else out_dtype)
    if out_dtype not in (np.dtype(np.float32), np.dtype(a.dtype)) or (precision == "tf32" and out_dtype != np.float32):
        raise DtypeError(f"gemm_wgmma: out_dtype must be float32 or the operands' 16-bit dtype, got {out_dtype}")
    if out is None:
        out = xp.empty((m, n), dtype=out_dtype)
    elif tuple(out.shape) != (m, n) or np.dtype(out.dtype) != out_dtype or not out.flags.c_contiguous:
        raise ShapeError(f"gemm_wgmma: out must be a C-contiguous {out_dtype} array of shape {(m, n)}")

    sms = multiprocessor_count(executor)
    tile = choose(m, n, sms, config)
    cluster = CLUSTER[tile.name]
    element = tma.ELEMENT_BYTES[_TMA_DTYPE[precision]]
    box_k = TILE_ROW_BYTES // element
    pairs = []
    operands = ((a, transpose_a, tile.block_m), (b, not transpose_b, tile.block_n // cluster))
    for array, mn_major, rows_per_box in operands:
        storage, pitch = _tma_ready(xp, array, element)
        rows, cols = array.shape
        # K-major: boxes of `rows_per_box` rows of 128 bytes of k (B: each CTA of a cluster loads its share);
        # MN-major: boxes of 128 bytes (64 of m or n) x k.
        box_rows, box_cols = (box_k, TILE_ROW_BYTES // element) if mn_major else (rows_per_box, box_k)
        pairs.append((storage, tma.TileMap(_TMA_DTYPE[precision], rows, cols, pitch, box_rows, box_cols, 128)))
    # C by TMA stores, in boxes of 16 rows x 128 bytes.
    store, pitch = _tma_ready(xp, out, out_dtype.itemsize, copy=False)
    out_element = "f32" if out_dtype == np.float32 else _TMA_DTYPE[precision]
    pairs.append((store, tma.TileMap(out_element, m, n, pitch, STORE_ROWS, TILE_ROW_BYTES // out_dtype.itemsize, 128)))
    maps = tma.tensor_maps(executor, pairs)

    flags = (_gemm.FLAG_BIAS if bias is not None else 0) | (_gemm.FLAG_RELU if relu else 0)
    flags |= FLAG_STORE_HALF if out_dtype != np.float32 else 0
    bias_arg = _as_float32(xp, bias, precision) if bias is not None else xp.zeros(1, np.float32)

    tiles_m, tiles_n = math.ceil(m / tile.block_m), math.ceil(n / tile.block_n)
    units = math.ceil(tiles_m / cluster) * tiles_n
    k_tiles = math.ceil(k / box_k)
    if splits is None:
        splits = choose_splits(units, cluster, k_tiles, sms)
    elif not 1 <= splits <= k_tiles or (splits - 1) * math.ceil(k_tiles / splits) >= k_tiles:
        raise ArgumentError(f"gemm_wgmma: splits={splits} leaves a split of the {k_tiles} k-tiles empty")
    # Split-K's partial sums (one BM x BN slice per tile and split) and each consumer warp's arrival count.
    workspace = xp.empty(tiles_m * tiles_n * splits * tile.block_m * tile.block_n if splits > 1 else 1, np.float32)
    counters = xp.zeros(tiles_m * tiles_n * WARPS_PER_TILE if splits > 1 else 1, np.int32)
    # A persistent grid: at most one CTA per SM, in whole clusters.
    clusters = max(1, min(units * splits, sms // cluster))
    kernel = f"gemm_wgmma_{tile.name}_{_gemm.layout_name(transpose_a, transpose_b)}_{precision}"
    args = (maps, bias_arg, workspace, counters, np.int32(m), np.int32(n), np.int32(k), np.int32(flags),
            np.int32(splits))
    # The stage ring is far past 48 KB: the launch raises the kernel's shared memory limit.
    launch = Launch(FAMILY, kernel, (clusters * cluster, 1, 1), (tile.threads, 1, 1), args, shared_bytes(tile),
                    shared_opt_in=True, cluster=(cluster, 1, 1))
    return Planned(launch, out, store, maps, tuple(pairs))
