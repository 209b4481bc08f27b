"""The CPU execution harness itself: its CUDA model on small test kernels, and planted bugs.

The kernels here are test-local .cu text (never in kernels/): indexing, shared-memory
reductions, warp collectives, atomics, half conversions, the PTX wrappers of
kernels/ptx.cuh against NumPy, and one planted bug per claim -- an out-of-bounds store
(asan), a removed barrier and a hand-over through a relaxed atomic without fences (tsan), a missing
cp.async wait (plain: wrong result).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dlgpu.cuda import compiler
from dlgpu.cuda.launch import Launch
from dlgpu.errors import ArgumentError, CompileError, LayoutError
from dlgpu.testing import harness
from dlgpu.testing.harness import HarnessError, HarnessExecutor

BASICS = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>  // its own header: NVRTC 13.0's cuda_fp16.h does not pull it in (first GPU run)
extern "C" __global__ void write_indices(int* out)
{
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int* o = out + 6 * (bid * blockDim.x * blockDim.y * blockDim.z + tid);
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
}

extern "C" __global__ void vadd(const float* a, const float* b, float* c, long long n)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

// Tree sums: dynamic shared memory (any power-of-two block) and static (256 threads).
extern "C" __global__ void sum_dynamic(const float* x, float* out, int n)
{
    extern __shared__ float partial[];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

extern "C" __global__ void sum_static(const float* x, float* out, int* positives, int n)
{
    __shared__ float partial[256];
    const int i = blockIdx.x * 256 + threadIdx.x;
    const float v = i < n ? x[i] : 0.0f;
    partial[threadIdx.x] = v;
    const int count = __syncthreads_count(v > 0.0f);
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) { out[blockIdx.x] = partial[0]; positives[blockIdx.x] = count; }
}

extern "C" __global__ void warp_ops(const float* x, float* out, unsigned* votes)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const float v = x[i];
    float sum = v;
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    out[6 * i + 0] = sum;
    out[6 * i + 1] = __shfl_down_sync(0xffffffffu, v, 3);
    out[6 * i + 2] = __shfl_up_sync(0xffffffffu, v, 2);
    out[6 * i + 3] = __shfl_sync(0xffffffffu, v, 7);
    out[6 * i + 4] = __shfl_down_sync(0xffffffffu, v, 2, 8);
    out[6 * i + 5] = __shfl_xor_sync(0xffffffffu, v, 5);
    votes[3 * i + 0] = __ballot_sync(0xffffffffu, v > 0.0f);
    votes[3 * i + 1] = __any_sync(0xffffffffu, v > 2.0f);
    votes[3 * i + 2] = __all_sync(0xffffffffu, v > -10.0f);
}

extern "C" __global__ void atomics(const float* x, float* total, int* count, int* largest, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomicAdd(total, x[i]);
    atomicAdd(count, 1);
    atomicMax(largest, (int)(x[i] * 1000.0f));
}

extern "C" __global__ void convert(const float* x, unsigned short* h, unsigned short* b, float* h_back,
                                   float* b_back, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    h[i] = __half_as_ushort(__float2half_rn(x[i]));
    b[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
    h_back[i] = __half2float(__ushort_as_half(h[i]));
    b_back[i] = __bfloat162float(__ushort_as_bfloat16(b[i]));
}

extern "C" __global__ void scale_in_place(float* x, const float* y, float factor, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = x[i] * factor + y[i];
}
"""

PTX = r"""
#include "ptx.cuh"
// One warp: D (16x8) = A (16x8, row-major) * B (8x8, row-major k x n) + C, tf32.  A goes
// through cvt.rna (f32_to_tf32), B as raw fp32 bits (the tensor core truncates them).
extern "C" __global__ void mma_tf32(const float* A, const float* B, const float* C, float* D)
{
    const int g = threadIdx.x >> 2, t = threadIdx.x & 3;
    unsigned a[4] = {ptx::f32_to_tf32(A[g * 8 + t]), ptx::f32_to_tf32(A[(g + 8) * 8 + t]),
                     ptx::f32_to_tf32(A[g * 8 + t + 4]), ptx::f32_to_tf32(A[(g + 8) * 8 + t + 4])};
    unsigned b[2] = {__float_as_uint(B[t * 8 + g]), __float_as_uint(B[(t + 4) * 8 + g])};
    float c[4];
    for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
    ptx::mma_m16n8k8_tf32(c, a, b, c);
    for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = c[i];
}

// One warp: D (16x8) = A (16x16) * B (16x8) + C with 16-bit operands (bits given), loaded
// the usual way: A by ldmatrix.x4 from row-major shared memory, B by ldmatrix.x2.trans.
extern "C" __global__ void mma_16bit(const unsigned short* A, const unsigned short* B, const float* C, float* D,
                                     int bf16)
{
    __shared__ __align__(16) unsigned short As[16 * 16];
    __shared__ __align__(16) unsigned short Bs[16 * 8];
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    for (int i = lane; i < 256; i += 32) As[i] = A[i];
    for (int i = lane; i < 128; i += 32) Bs[i] = B[i];
    __syncthreads();
    unsigned a[4], b[2];
    ptx::ldmatrix_x4(a, &As[(lane % 16) * 16 + (lane / 16) * 8]);
    ptx::ldmatrix_x2_trans(b, &Bs[(lane % 16) * 8]);
    float c[4];
    for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
    if (bf16) ptx::mma_m16n8k16_bf16(c, a, b, c);
    else ptx::mma_m16n8k16_fp16(c, a, b, c);
    for (int i = 0; i < 4; ++i) D[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = c[i];
}

// M: 32 rows of 8 b16; lane l gives row l.  out[lane * 4 + i] = register i.
extern "C" __global__ void ldmatrix_dump(const unsigned short* M, unsigned* out, int count, int trans)
{
    __shared__ __align__(16) unsigned short Ms[32 * 8];
    for (int i = threadIdx.x; i < 256; i += 32) Ms[i] = M[i];
    __syncthreads();
    unsigned r[4] = {0, 0, 0, 0};
    const unsigned short* row = &Ms[threadIdx.x * 8];
    if (count == 1) { unsigned q[1]; if (trans) ptx::ldmatrix_x1_trans(q, row); else ptx::ldmatrix_x1(q, row); r[0] = q[0]; }
    if (count == 2) { unsigned q[2]; if (trans) ptx::ldmatrix_x2_trans(q, row); else ptx::ldmatrix_x2(q, row); r[0] = q[0]; r[1] = q[1]; }
    if (count == 4) { if (trans) ptx::ldmatrix_x4_trans(r, row); else ptx::ldmatrix_x4(r, row); }
    for (int i = 0; i < 4; ++i) out[threadIdx.x * 4 + i] = r[i];
}

// 32 threads stage n <= 128 floats through shared memory with cp.async (zero-filling past
// n), then read them back reversed.  wait = 0: cp.async.wait_group 0; wait = -1: none (a bug).
extern "C" __global__ void staged_copy(const float* src, float* dst, float* staged, int n, int wait)
{
    extern __shared__ __align__(16) float tile[];
    const int t = threadIdx.x;
    const int valid = n - 4 * t;
    const unsigned bytes = valid >= 4 ? 16u : (valid > 0 ? 4u * valid : 0u);
    ptx::cp_async_16(&tile[4 * t], src + (bytes ? 4 * t : 0), bytes);
    ptx::cp_async_commit();
    if (wait == 0) ptx::cp_async_wait<0>();
    __syncthreads();
    for (int i = t; i < n; i += 32) dst[i] = tile[n - 1 - i];
    for (int i = t; i < 128; i += 32) staged[i] = tile[i];
}

// Two commit groups: first half, then second half of 64 floats; cp.async.wait_group `wait`.
extern "C" __global__ void two_groups(const float* src, float* dst, int wait)
{
    extern __shared__ __align__(16) float tile[];
    const int t = threadIdx.x;  // 8 threads, 16 bytes each per group
    ptx::cp_async_16(&tile[4 * t], src + 4 * t);
    ptx::cp_async_commit();
    ptx::cp_async_16(&tile[32 + 4 * t], src + 32 + 4 * t);
    ptx::cp_async_commit();
    if (wait == 1) ptx::cp_async_wait<1>();
    else ptx::cp_async_wait_all();
    __syncthreads();
    for (int i = t; i < 64; i += 8) dst[i] = tile[i];
}
"""

BUGS = r"""
// Planted bugs: each kernel is wrong in exactly one way that one mode must catch.
extern "C" __global__ void oob_store(float* y, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;  // off by one: writes y[n]
}

extern "C" __global__ void oob_static_shared(const float* x, float* y)
{
    __shared__ float tile[32];
    tile[threadIdx.x] = x[threadIdx.x];  // launched with 33 threads
    __syncthreads();
    y[threadIdx.x] = tile[threadIdx.x % 32];
}

extern "C" __global__ void oob_dynamic_shared(const float* x, float* y)
{
    extern __shared__ float buffer[];
    buffer[threadIdx.x + 1] = x[threadIdx.x];  // the last thread writes one past the end
    __syncthreads();
    y[threadIdx.x] = buffer[threadIdx.x];
}

extern "C" __global__ void reverse_missing_barrier(const float* x, float* y)
{
    __shared__ float tile[64];
    tile[threadIdx.x] = x[threadIdx.x];
    y[threadIdx.x] = tile[63 - threadIdx.x];  // the __syncthreads() between them is missing
}

extern "C" __global__ void reverse_with_barrier(const float* x, float* y)
{
    __shared__ float tile[64];
    tile[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    y[threadIdx.x] = tile[63 - threadIdx.x];
}

extern "C" __global__ void misaligned_float4(const float* x, float* y)
{
    const float4 v = *reinterpret_cast<const float4*>(x + 1);  // 4 bytes past a 16-byte boundary
    y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

extern "C" __global__ void shuffle_after_return(const float* x, float* y)
{
    if (threadIdx.x >= 16) return;
    y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
}

// The last block to count itself in sums every block's partial (CUDA's threadFenceReduction): the partials
// reach it through the writers' fence before their atomicAdd and its own fence after it, not through the
// (relaxed) atomic.  fences: bit 0 the writers', bit 1 the reader's.
extern "C" __global__ void last_block_sums(const float* x, float* partial, unsigned* count, float* y, int fences)
{
    partial[blockIdx.x] = 2.0f * x[blockIdx.x];
    if (fences & 1) __threadfence();
    if (atomicAdd(count, 1u) != gridDim.x - 1) return;
    if (fences & 2) __threadfence();
    float sum = 0.0f;
    for (unsigned b = 0; b < gridDim.x; ++b) sum += partial[b];
    *y = sum;
}

extern "C" __global__ void takes_int(float* y, int n)
{
    if (threadIdx.x < n) y[threadIdx.x] = 1.0f;
}
"""


# every test here runs kernels on the CPU harness (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.fixture(scope="module")
def sources() -> Path:
    """The test kernels, written to a stable folder so the compiled objects stay cached.

    kernels/ptx.cuh is copied beside them, so that NVRTC (GPU runs) finds it as g++ does.
    """
    folder = compiler.default_cache_dir() / "harness-test-sources"
    folder.mkdir(parents=True, exist_ok=True)
    ptx_header = (compiler.kernels_root() / "ptx.cuh").read_text()
    for file_name, text in (("h_basics.cu", BASICS), ("h_ptx.cu", PTX), ("h_bugs.cu", BUGS), ("ptx.cuh", ptx_header)):
        path = folder / file_name
        if not path.exists() or path.read_text() != text:
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)
    return folder


def run(sources, mode, family, kernel, grid, block, *args, shared_mem=0):
    executor = HarnessExecutor(mode, kernels_dir=sources)
    executor.launch(Launch(family, kernel, grid, block, tuple(args), shared_mem))
    assert executor.launched == {(family, kernel)}


ALL_MODES = pytest.mark.parametrize("mode", harness.MODES)


# ---------------------------------------------------------------- mechanics


def test_kernel_names_skip_comments_and_read_launch_bounds():
    text = """
    // extern "C" __global__ void in_a_comment(int* x)
    /* extern "C" __global__ void in_a_block(int* x) */
    extern "C" __global__ void first(int* x) {}
    extern "C" __global__ void __launch_bounds__(256) second(float* y, int n) {}
    extern "C"   __global__   __launch_bounds__(128, 2) void third(float* y) {}
    __global__ void not_exported(int* x) {}
    """
    assert harness.kernel_names(text) == ["first", "second", "third"]
    assert harness.launch_bounds(text) == {"first": "0", "second": "256", "third": "128"}


def test_shared_declarations_are_rewritten_in_place_keeping_lines():
    text = ("a\nextern __shared__ __align__(16) unsigned char raw[];\nb\n  extern __shared__ T tile[ ];\n"
            "__shared__ alignas(16) float a_tiles[STAGES][BK *\n SA];  // __shared__ float in_a_comment[3];\n"
            "alignas(8) __shared__ unsigned short half_tile[16 * 16]; __shared__ float total;\n")
    rewritten = harness.rewrite_shared(text)
    assert rewritten.count("\n") == text.count("\n")
    assert "unsigned char* const raw = reinterpret_cast<unsigned char*>(::dlgpu_host::dynamic_shared());" in rewritten
    assert "T* const tile = reinterpret_cast<T*>" in rewritten
    assert ("auto& a_tiles = ::dlgpu_host::static_shared<float [STAGES][BK * SA], (size_t)(16)>(dlgpu_shared_a_tiles);"
            in rewritten)
    assert "// __shared__ float in_a_comment[3];" in rewritten  # comments untouched
    assert "static_shared<unsigned short [16 * 16], (size_t)(8)>" in rewritten
    assert "static_shared<float, (size_t)(0)>(dlgpu_shared_total)" in rewritten
    assert rewritten.count("__shared__") == 1  # only the comment's
    # In a macro (a kernel list's X-macro) the declaration's continued lines stay continued.
    macro = "#define KERNEL(N) \\\n    __shared__ float t[N \\\n        + 1]; \\\n    t[0] = 1.0f;\n"
    expanded = harness.rewrite_shared(macro)
    assert expanded.count("\n") == macro.count("\n") and expanded.count("\\\n") == macro.count("\\\n")
    assert "static_shared<float [N + 1], (size_t)(0)>(dlgpu_shared_t);" in expanded


def test_objects_are_cached_by_content(sources, tmp_path):
    first = harness.build("h_bugs", (), "plain", sources, tmp_path)
    stamp = first.path.stat().st_mtime_ns
    harness._builds.clear()  # forget the in-memory entry: the disk entry must be reused
    again = harness.build("h_bugs", (), "plain", sources, tmp_path)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    other = harness.build("h_bugs", {"UNUSED_KNOB": 3}, "plain", sources, tmp_path)
    assert other.path != first.path  # defines are part of the key


def test_wrong_arguments_are_refused_before_running(sources):
    y = np.zeros(8, np.float32)
    with pytest.raises(HarnessError, match=r"parameters are \(p,i4\) but the launch passes \(p,i8\)"):
        run(sources, "plain", "h_bugs", "takes_int", (1, 1, 1), (8, 1, 1), y, np.int64(8))
    with pytest.raises(ArgumentError, match="NumPy scalars"):
        run(sources, "plain", "h_bugs", "takes_int", (1, 1, 1), (8, 1, 1), y, 8)
    with pytest.raises(LayoutError, match="not C-contiguous"):
        run(sources, "plain", "h_bugs", "takes_int", (1, 1, 1), (8, 1, 1), np.zeros(16, np.float32)[::2], np.int32(8))
    with pytest.raises(ArgumentError, match="no kernel 'nope'"):
        run(sources, "plain", "h_bugs", "nope", (1, 1, 1), (8, 1, 1), y, np.int32(8))
    with pytest.raises(ArgumentError, match="mode must be one of"):
        HarnessExecutor("valgrind")
    with pytest.raises(HarnessError, match="invalid launch geometry"):
        run(sources, "plain", "h_bugs", "takes_int", (1, 1, 1), (1025, 1, 1), y, np.int32(8))


# ---------------------------------------------------------------- the CUDA model, all modes


@ALL_MODES
def test_indices_of_a_3d_grid_of_3d_blocks(sources, mode):
    grid, block = (3, 2, 2), (5, 3, 2)
    out = np.full((12, 30, 6), -1, np.int32)
    run(sources, mode, "h_basics", "write_indices", grid, block, out)
    for bid, (bz, by, bx) in enumerate(np.ndindex(2, 2, 3)):
        for tid, (tz, ty, tx) in enumerate(np.ndindex(2, 3, 5)):
            assert list(out[bid, tid]) == [tx, ty, tz, bx, by, bz]


@ALL_MODES
def test_vector_add_odd_size_and_in_place_aliasing(sources, mode, rng):
    n = 1001
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    c = np.full(n, np.nan, np.float32)
    run(sources, mode, "h_basics", "vadd", (8, 1, 1), (128, 1, 1), a, b, c, np.int64(n))
    np.testing.assert_array_equal(c, a + b)
    # x is both read and written, and y is a view into the same array: the child copy
    # must keep them one buffer.
    base = rng.standard_normal(2 * n).astype(np.float32)
    x, y = base[:n], base[n:]
    expected = x * np.float32(3) + y
    run(sources, mode, "h_basics", "scale_in_place", (8, 1, 1), (128, 1, 1), x, y, np.float32(3), np.int32(n))
    np.testing.assert_array_equal(x, expected)


@ALL_MODES
def test_shared_memory_tree_sums(sources, mode, rng):
    n = 700
    x = rng.standard_normal(n).astype(np.float32)
    out = np.full(3, np.nan, np.float32)
    run(sources, mode, "h_basics", "sum_dynamic", (3, 1, 1), (256, 1, 1), x, out, np.int32(n), shared_mem=256 * 4)
    padded = np.zeros(768, np.float64)
    padded[:n] = x
    np.testing.assert_allclose(out, padded.reshape(3, 256).sum(1), rtol=1e-5)
    out[:] = np.nan
    positives = np.full(3, -1, np.int32)
    run(sources, mode, "h_basics", "sum_static", (3, 1, 1), (256, 1, 1), x, out, positives, np.int32(n))
    np.testing.assert_allclose(out, padded.reshape(3, 256).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(positives, (padded.reshape(3, 256) > 0).sum(1))


@ALL_MODES
def test_warp_shuffles_and_votes(sources, mode, rng):
    x = rng.uniform(-3, 3, 128).astype(np.float32)
    out = np.full((128, 6), np.nan, np.float32)
    votes = np.zeros((128, 3), np.uint32)
    run(sources, mode, "h_basics", "warp_ops", (2, 1, 1), (64, 1, 1), x, out, votes)
    lane = np.arange(128) % 32
    base = np.arange(128) - lane
    warps = x.reshape(4, 32)
    np.testing.assert_allclose(out[:, 0], np.repeat(warps.astype(np.float64).sum(1), 32), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 1], x[base + np.where(lane + 3 < 32, lane + 3, lane)])
    np.testing.assert_array_equal(out[:, 2], x[base + np.where(lane >= 2, lane - 2, lane)])
    np.testing.assert_array_equal(out[:, 3], x[base + 7])
    np.testing.assert_array_equal(out[:, 4], x[base + np.where(lane % 8 + 2 < 8, lane + 2, lane)])
    np.testing.assert_array_equal(out[:, 5], x[base + (lane ^ 5)])
    ballots = [sum(1 << k for k in range(32) if w[k] > 0) for w in warps]
    np.testing.assert_array_equal(votes[:, 0], np.repeat(ballots, 32))
    np.testing.assert_array_equal(votes[:, 1], np.repeat((warps > 2).any(1), 32))
    np.testing.assert_array_equal(votes[:, 2], 1)


@ALL_MODES
def test_atomics(sources, mode, rng):
    n = 300
    x = rng.uniform(0, 1, n).astype(np.float32)
    total, count, largest = np.zeros(1, np.float32), np.zeros(1, np.int32), np.full(1, -1, np.int32)
    run(sources, mode, "h_basics", "atomics", (3, 1, 1), (128, 1, 1), x, total, count, largest, np.int32(n))
    assert count[0] == n
    assert largest[0] == (x * np.float32(1000)).astype(np.int32).max()
    np.testing.assert_allclose(total[0], x.astype(np.float64).sum(), rtol=1e-5)


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even, NaN kept quiet (NumPy, independently)."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), ((bits >> 16) | 0x40).astype(np.uint16), rounded)


def test_half_and_bfloat16_round_to_nearest_even(sources, rng):
    edges = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8,
                      1e-10, np.inf, -np.inf, np.nan, 1.0009765625, 1.00048828125, 1.00146484375, 3.3895314e38],
                     np.float32)
    random_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([edges, random_bits, rng.standard_normal(1000).astype(np.float32)])
    n = x.size
    h, b = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    h_back, b_back = np.zeros(n, np.float32), np.zeros(n, np.float32)
    blocks = (n + 255) // 256
    run(sources, "plain", "h_basics", "convert", (blocks, 1, 1), (256, 1, 1), x, h, b, h_back, b_back, np.int32(n))
    with np.errstate(over="ignore"):
        expected_half = x.astype(np.float16)
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(h[finite], expected_half.view(np.uint16)[finite])
    assert np.isnan(h_back[~finite]).all()
    np.testing.assert_array_equal(h_back[finite], expected_half[finite].astype(np.float32))
    np.testing.assert_array_equal(b, _bf16_bits(x))
    np.testing.assert_array_equal(b_back.view(np.uint32), b.astype(np.uint32) << 16)


def test_bfloat16_names_need_their_own_header(tmp_path):
    """Planted: a source using the bfloat16 intrinsics with only <cuda_fp16.h> fails to build, as under
    NVRTC 13.0 (the first GPU run: test_harness's BASICS compiled here and failed there)."""
    body = """
extern "C" __global__ void k(unsigned short* out) { out[threadIdx.x] = __bfloat16_as_ushort(__float2bfloat16_rn(1.5f)); }
"""
    (tmp_path / "h_fp16_only.cu").write_text("#include <cuda_fp16.h>\n" + body)
    (tmp_path / "h_both.cu").write_text("#include <cuda_fp16.h>\n#include <cuda_bf16.h>\n" + body)
    with pytest.raises(CompileError, match="__float2bfloat16_rn"):
        harness.build("h_fp16_only", kernels_dir=tmp_path, cache_dir=tmp_path / "cache")
    out = np.zeros(32, np.uint16)
    executor = HarnessExecutor("plain", kernels_dir=tmp_path, cache_dir=tmp_path / "cache")
    executor.launch(Launch("h_both", "k", (1, 1, 1), (32, 1, 1), (out,)))
    assert (out == 0x3FC0).all()  # 1.5 in bfloat16


# ---------------------------------------------------------------- PTX wrappers


def _tf32_round_away(x):
    bits = x.astype(np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def _tf32_truncate(x):
    return (x.astype(np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


@ALL_MODES
def test_mma_tf32_fragments_and_operand_rounding(sources, mode, rng):
    A = rng.standard_normal((16, 8)).astype(np.float32)
    B = rng.standard_normal((8, 8)).astype(np.float32)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    D = np.full((16, 8), np.nan, np.float32)
    run(sources, mode, "h_ptx", "mma_tf32", (1, 1, 1), (32, 1, 1), A, B, C, D)
    expected = _tf32_round_away(A).astype(np.float64) @ _tf32_truncate(B).astype(np.float64) + C
    np.testing.assert_allclose(D, expected, rtol=1e-5, atol=1e-5)
    unrounded = A.astype(np.float64) @ B.astype(np.float64) + C
    assert np.abs(D - unrounded).max() > 1e-4  # the rounding of the operands is really there


@ALL_MODES
@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_mma_16bit_with_ldmatrix_loads(sources, mode, kind, rng):
    A = rng.standard_normal((16, 16)).astype(np.float32)
    B = rng.standard_normal((16, 8)).astype(np.float32)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    if kind == "bf16":
        A_bits, B_bits = _bf16_bits(A), _bf16_bits(B)
        to_float = lambda bits: (bits.astype(np.uint32) << 16).view(np.float32)  # noqa: E731
    else:
        A_bits, B_bits = A.astype(np.float16).view(np.uint16), B.astype(np.float16).view(np.uint16)
        to_float = lambda bits: bits.view(np.float16).astype(np.float32)  # noqa: E731
    D = np.full((16, 8), np.nan, np.float32)
    run(sources, mode, "h_ptx", "mma_16bit", (1, 1, 1), (32, 1, 1), A_bits, B_bits, C, D, np.int32(kind == "bf16"))
    expected = to_float(A_bits).astype(np.float64) @ to_float(B_bits).astype(np.float64) + C
    np.testing.assert_allclose(D, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("count", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_distribution(sources, count, trans):
    M = np.arange(256, dtype=np.uint16).reshape(32, 8)
    out = np.zeros((32, 4), np.uint32)
    run(sources, "plain", "h_ptx", "ldmatrix_dump", (1, 1, 1), (32, 1, 1), M, out, np.int32(count), np.int32(trans))
    for lane in range(32):
        for i in range(4):
            if i >= count:
                assert out[lane, i] == 0
                continue
            matrix = M[8 * i: 8 * i + 8]  # rows given by lanes 8i..8i+7
            g, t = lane // 4, lane % 4
            pair = (matrix[2 * t, g], matrix[2 * t + 1, g]) if trans else (matrix[g, 2 * t], matrix[g, 2 * t + 1])
            assert out[lane, i] == int(pair[0]) | (int(pair[1]) << 16), (lane, i)


@ALL_MODES
@pytest.mark.parametrize("n", [128, 37, 1])
def test_cp_async_copies_and_zero_fills(sources, mode, n, rng):
    src = rng.standard_normal(n).astype(np.float32)
    dst, staged = np.full(n, np.nan, np.float32), np.full(128, np.nan, np.float32)
    run(sources, mode, "h_ptx", "staged_copy", (1, 1, 1), (32, 1, 1), src, dst, staged, np.int32(n), np.int32(0),
        shared_mem=128 * 4)
    np.testing.assert_array_equal(dst, src[::-1])
    np.testing.assert_array_equal(staged[:n], src)
    assert (staged[n:] == 0).all()  # the zero-fill form past the source


def test_planted_missing_cp_async_wait_gives_wrong_results(sources, rng):
    src = rng.standard_normal(128).astype(np.float32)
    dst, staged = np.full(128, 0.0, np.float32), np.full(128, 0.0, np.float32)
    run(sources, "plain", "h_ptx", "staged_copy", (1, 1, 1), (32, 1, 1), src, dst, staged, np.int32(128),
        np.int32(-1), shared_mem=128 * 4)
    assert np.isnan(dst).all()  # the copies never landed: the poisoned shared memory shows


@ALL_MODES
def test_wait_group_leaves_the_newest_groups_in_flight(sources, mode, rng):
    src = rng.standard_normal(64).astype(np.float32)
    dst = np.zeros(64, np.float32)
    run(sources, mode, "h_ptx", "two_groups", (1, 1, 1), (8, 1, 1), src, dst, np.int32(1), shared_mem=64 * 4)
    np.testing.assert_array_equal(dst[:32], src[:32])
    assert np.isnan(dst[32:]).all()  # the second group may still be in flight after wait_group 1
    run(sources, mode, "h_ptx", "two_groups", (1, 1, 1), (8, 1, 1), src, dst, np.int32(0), shared_mem=64 * 4)
    np.testing.assert_array_equal(dst, src)


def test_ptx_wrappers_compile_for_the_device(sources):
    """The device side of ptx.cuh is real PTX: NVRTC builds the PTX test kernels for sm_80 and sm_90a."""
    for arch in ("sm_80", "sm_90a"):
        module = compiler.compile_family("h_ptx", arch=arch, kernels_dir=sources)
        assert module.image


# ---------------------------------------------------------------- planted bugs


def test_asan_catches_an_out_of_bounds_global_store(sources):
    y = np.zeros(100, np.float32)
    with pytest.raises(HarnessError, match="heap-buffer-overflow"):
        run(sources, "asan", "h_bugs", "oob_store", (4, 1, 1), (32, 1, 1), y, np.int32(100))


def test_asan_catches_out_of_bounds_shared_memory(sources):
    x, y = np.ones(33, np.float32), np.zeros(33, np.float32)
    # Each block's static arrays and dynamic buffer are allocations of exactly their size.
    with pytest.raises(HarnessError, match="heap-buffer-overflow"):
        run(sources, "asan", "h_bugs", "oob_static_shared", (1, 1, 1), (33, 1, 1), x, y)
    x, y = np.ones(16, np.float32), np.zeros(16, np.float32)
    with pytest.raises(HarnessError, match="heap-buffer-overflow"):
        run(sources, "asan", "h_bugs", "oob_dynamic_shared", (1, 1, 1), (16, 1, 1), x, y, shared_mem=16 * 4)


def test_asan_mode_catches_a_misaligned_vector_load(sources):
    x, y = np.ones(16, np.float32), np.zeros(1, np.float32)
    with pytest.raises(HarnessError, match="misaligned"):
        run(sources, "asan", "h_bugs", "misaligned_float4", (1, 1, 1), (1, 1, 1), x, y)


def test_tsan_catches_a_removed_barrier(sources, rng):
    x = rng.standard_normal(64).astype(np.float32)
    y = np.zeros(64, np.float32)
    with pytest.raises(HarnessError, match="data race"):
        run(sources, "tsan", "h_bugs", "reverse_missing_barrier", (1, 1, 1), (64, 1, 1), x, y)
    run(sources, "tsan", "h_bugs", "reverse_with_barrier", (1, 1, 1), (64, 1, 1), x, y)
    np.testing.assert_array_equal(y, x[::-1])


@pytest.mark.parametrize("fences", (0, 1, 2))
def test_tsan_catches_a_hand_over_through_an_atomic_without_fences(sources, rng, fences):
    """Atomics are relaxed on the device: without the writer's or the reader's __threadfence, the last
    block may read stale partials.  ThreadSanitizer must say so; with both fences the sum is right."""
    x = rng.standard_normal(16).astype(np.float32)
    partial, count, y = np.zeros(16, np.float32), np.zeros(1, np.uint32), np.zeros(1, np.float32)
    with pytest.raises(HarnessError, match="data race"):
        run(sources, "tsan", "h_bugs", "last_block_sums", (16, 1, 1), (1, 1, 1), x, partial, count, y,
            np.int32(fences))
    count[0] = 0
    run(sources, "tsan", "h_bugs", "last_block_sums", (16, 1, 1), (1, 1, 1), x, partial, count, y, np.int32(3))
    np.testing.assert_allclose(y[0], 2 * x.astype(np.float64).sum(), rtol=1e-5)


def test_mma_in_a_partial_warp_fails(sources):
    A, B, C = np.ones((16, 8), np.float32), np.ones((8, 8), np.float32), np.ones((16, 8), np.float32)
    with pytest.raises(HarnessError, match="partial warp"):
        run(sources, "plain", "h_ptx", "mma_tf32", (1, 1, 1), (16, 1, 1), A, B, C, np.zeros((16, 8), np.float32))


def test_a_collective_naming_returned_lanes_fails(sources):
    x, y = np.ones(32, np.float32), np.zeros(32, np.float32)
    with pytest.raises(HarnessError, match="have returned|returned while"):
        run(sources, "plain", "h_bugs", "shuffle_after_return", (1, 1, 1), (32, 1, 1), x, y)


# ---------------------------------------------------------------- the harness against the GPU

# (family, kernel, grid, block, make_args(rng), shared_mem): the warp-collective and PTX
# paths whose host model most needs the device's word -- fragment layouts above all.
GPU_CROSS_CHECKS = (
    ("h_ptx", "mma_tf32", 32, lambda rng: [rng.standard_normal(s).astype(np.float32) for s in ((16, 8), (8, 8), (16, 8))]
     + [np.zeros((16, 8), np.float32)], 0),
    *(("h_ptx", "mma_16bit", 32, lambda rng, bf16=bf16: [
        (_bf16_bits if bf16 else lambda a: a.astype(np.float16).view(np.uint16))(rng.standard_normal(s).astype(np.float32))
        for s in ((16, 16), (16, 8))] + [rng.standard_normal((16, 8)).astype(np.float32), np.zeros((16, 8), np.float32),
                                          np.int32(bf16)], 0) for bf16 in (0, 1)),
    *(("h_ptx", "ldmatrix_dump", 32, lambda rng, c=count, t=trans: [
        rng.integers(0, 2**16, (32, 8)).astype(np.uint16), np.zeros((32, 4), np.uint32), np.int32(c), np.int32(t)], 0)
      for count in (1, 2, 4) for trans in (0, 1)),
    ("h_ptx", "staged_copy", 32, lambda rng: [rng.standard_normal(37).astype(np.float32), np.zeros(37, np.float32),
                                              np.zeros(128, np.float32), np.int32(37), np.int32(0)], 512),
    ("h_basics", "warp_ops", 64, lambda rng: [rng.uniform(-3, 3, 64).astype(np.float32), np.zeros((64, 6), np.float32),
                                              np.zeros((64, 3), np.uint32)], 0),
)


@pytest.mark.gpu
@pytest.mark.parametrize("family, kernel, threads, make_args, shared_mem", GPU_CROSS_CHECKS,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(GPU_CROSS_CHECKS)])
def test_harness_agrees_with_the_gpu(sources, family, kernel, threads, make_args, shared_mem, rng):
    """Same kernel, same inputs, both executors: every array argument must match afterwards."""
    import cupy

    from dlgpu.cuda.executor import CupyExecutor

    args = make_args(rng)
    host_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    device_args = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    launch = lambda values: Launch(family, kernel, (1, 1, 1), (threads, 1, 1), tuple(values), shared_mem)  # noqa: E731
    HarnessExecutor("plain", kernels_dir=sources).launch(launch(host_args))
    CupyExecutor(kernels_dir=sources).launch(launch(device_args))
    cupy.cuda.get_current_stream().synchronize()
    for position, (host, device) in enumerate(zip(host_args, device_args)):
        if isinstance(host, np.ndarray):
            device = device.get()
            if host.dtype.kind == "f":  # accumulation order inside the tensor core is the device's own
                np.testing.assert_allclose(host, device, rtol=1e-5, atol=1e-5, err_msg=f"argument {position}")
            else:
                np.testing.assert_array_equal(host, device, err_msg=f"argument {position}")
