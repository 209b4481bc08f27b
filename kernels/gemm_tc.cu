// kernels/gemm_tc.cu -- the matrix product on tensor cores (mma.sync, sm_80+), fp32 in and out.
//
// Same contract as kernels/gemm.cu: C (M x N, row-major) = epilogue(op(A) @ op(B)), layouts
// nn/nt/tn/tt, `flags` GEMM_BIAS / GEMM_RELU (gemm_tile.cuh), any M, N, K >= 1, every operand's
// leading dimension % 4 == 0 and 16-byte aligned (the launcher checks; else it takes the naive
// kernel).  The operands are fp32 in global memory; the precision is a build define:
//
//   GEMM_TC_PRECISION=0  tf32: mma.m16n8k8, operands rounded by cvt.rna.tf32.f32
//   GEMM_TC_PRECISION=1  bf16: mma.m16n8k16, operands rounded to bf16 (cvt.rn)
//   GEMM_TC_PRECISION=2  fp16: mma.m16n8k16, operands rounded to fp16 (cvt.rn)
// always accumulating in fp32.  For a given build, kernel and shape the bits are the same on
// every run (each output's k order is fixed).
//
//   gemm_tc_<BM>x<BN>_<layout>[_mask]_f32(a, b, bias, mask_y, c, M, N, K, flags)
//       128x128: 8 warps (2 x 4), warp tile 64 x 32;  64x64: 4 warps (2 x 2), warp tile 32 x 32.
//       Block tile BM x BN x 16 (floats), 3-stage pipeline of 16-byte cp.async copies; dynamic
//       shared memory 3 x (A tile + B tile) (dlgpu/cuda/gemm.py: tc_shared_bytes).  Grid
//       (ceil(N/BN), ceil(M/BM)).  `_mask` (nn, tn): A multiplied by (Y > 0) on its way in.
//
// Why fp32 tiles in shared memory, rounded to the mma's operand type only when a fragment is read
// from shared memory: the copies stay plain 16-byte cp.async in any layout (no cast pass over the
// operands, no register staging), a mask can be applied to the fp32 value before any rounding,
// and one loader serves all three precisions.  The price is twice the shared memory of 16-bit
// tiles, and 16-bit fragments assembled from 32-bit loads instead of ldmatrix.
//
// Shared-memory layout: each tile is stored as the operand is stored in global memory (no
// transpose).  k-contiguous tiles have row stride 16 + 4 floats (= 4 mod 32 banks), the others
// BM (or BN) + 8 (= 8 mod 32): either way the 32 lanes of a tf32 fragment read (g, t) or (t, g)
// with g = lane / 4, t = lane % 4 hit 32 different banks.
//
// dlgpu-build: GEMM_TC_PRECISION=0
// dlgpu-build: GEMM_TC_PRECISION=1
// dlgpu-build: GEMM_TC_PRECISION=2
// dlgpu-sass: gemm_tc_* HMMA LDGSTS !LDL !STL

#include "common.cuh"
#include "gemm_tile.cuh"
#include "ptx.cuh"

#ifndef GEMM_TC_PRECISION
#error "gemm_tc.cu is built with -DGEMM_TC_PRECISION=0 (tf32), 1 (bf16) or 2 (fp16)"
#endif

#define TC_BK 16
#define TC_STAGES 3
#define TC_PAD_K 4
#define TC_PAD_MN 8

// The operand rounding and the mma of the build's precision.
__device__ __forceinline__ unsigned pack_pair(float lo, float hi)
{
#if GEMM_TC_PRECISION == 1
    return ptx::pack_bf16x2(lo, hi);
#else
    return ptx::pack_fp16x2(lo, hi);
#endif
}

__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
#if GEMM_TC_PRECISION == 0
    ptx::mma_m16n8k8_tf32(d, a, b, d);
#elif GEMM_TC_PRECISION == 1
    ptx::mma_m16n8k16_bf16(d, a, b, d);
#else
    ptx::mma_m16n8k16_fp16(d, a, b, d);
#endif
}

// ---------------------------------------------------------------- the kernel body
// Warp (wm, wn) owns rows [wm * MT * 16, +MT * 16) and columns [wn * NT * 8, +NT * 8) of the block
// tile: MT x NT mma tiles of 16 x 8, four fp32 accumulators per lane each.
template <int WARPS_M, int WARPS_N, int MT, int NT, bool kTransA, bool kTransB, bool kMaskA>
__device__ __forceinline__ void tc_gemm(const float* a, const float* b, const float* bias, const float* mask_y,
                                        float* c, int M, int N, int K, int flags)
{
    constexpr int BM = WARPS_M * MT * 16, BN = WARPS_N * NT * 8, BK = TC_BK;
    constexpr int THREADS = WARPS_M * WARPS_N * 32;
    constexpr int KSTEP = GEMM_TC_PRECISION == 0 ? 8 : 16;
    // A stored (M, K): tile rows m, stride BK + pad; stored (K, M): tile rows k, stride BM + pad.
    constexpr int SA = kTransA ? BM + TC_PAD_MN : BK + TC_PAD_K;
    constexpr int A_TILE = kTransA ? BK * SA : BM * SA;
    // B stored (K, N): tile rows k, stride BN + pad; stored (N, K): tile rows n, stride BK + pad.
    constexpr int SB = kTransB ? BK + TC_PAD_K : BN + TC_PAD_MN;
    constexpr int B_TILE = kTransB ? BN * SB : BK * SB;

    extern __shared__ float4 tc_shared[];
    float* const a_tiles = reinterpret_cast<float*>(tc_shared);
    float* const b_tiles = a_tiles + TC_STAGES * A_TILE;

    TileLoader<kTransA ? BK : BM, kTransA ? BM : BK, SA, THREADS, false, kMaskA> load_a(
        a, mask_y, kTransA ? K : M, kTransA ? M : K);
    TileLoader<kTransB ? BN : BK, kTransB ? BK : BN, SB, THREADS, false, false> load_b(
        b, b, kTransB ? N : K, kTransB ? K : N);

    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm0 = (warp / WARPS_N) * MT * 16, wn0 = (warp % WARPS_N) * NT * 8;
    const int g = lane / 4, t = lane % 4;
    const int tiles = (K + BK - 1) / BK;

    auto issue = [&](int tile, int stage) {
        const int k0 = tile * BK;
        load_a.issue(kTransA ? k0 : m0, kTransA ? m0 : k0, a_tiles + stage * A_TILE);
        load_b.issue(kTransB ? n0 : k0, kTransB ? k0 : n0, b_tiles + stage * B_TILE);
    };
    auto store = [&](int stage) {
        load_a.store(a_tiles + stage * A_TILE);
        load_b.store(b_tiles + stage * B_TILE);
    };

    // ---- prologue: tiles 0 .. STAGES-2 in flight, one cp.async group each
    DLGPU_UNROLL
    for (int s = 0; s < TC_STAGES - 1; ++s) {
        if (s < tiles) {
            issue(s, s);
            store(s);
        }
        ptx::cp_async_commit();
    }

    float acc[MT][NT][4];
    DLGPU_UNROLL
    for (int i = 0; i < MT; ++i)
        DLGPU_UNROLL
        for (int j = 0; j < NT; ++j)
            DLGPU_UNROLL
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // ---- main loop: wait for tile t, start tile t + STAGES - 1, multiply tile t
    for (int t_k = 0; t_k < tiles; ++t_k) {
        ptx::cp_async_wait<TC_STAGES - 2>();
        __syncthreads();
        const int next = t_k + TC_STAGES - 1;
        if (next < tiles) issue(next, next % TC_STAGES);
        ptx::cp_async_commit();

        const float* as = a_tiles + (t_k % TC_STAGES) * A_TILE;
        const float* bs = b_tiles + (t_k % TC_STAGES) * B_TILE;
        auto a_at = [&](int m, int k) { return kTransA ? as[k * SA + m] : as[m * SA + k]; };
        auto b_at = [&](int k, int n) { return kTransB ? bs[n * SB + k] : bs[k * SB + n]; };

        DLGPU_UNROLL
        for (int ks = 0; ks < BK; ks += KSTEP) {
            // Fragments in the PTX ISA's layouts (kernels/ptx.cuh's header lists them).
            unsigned af[MT][4], bf[NT][2];
            DLGPU_UNROLL
            for (int i = 0; i < MT; ++i) {
                const int row = wm0 + i * 16 + g;
                DLGPU_UNROLL
                for (int r = 0; r < 4; ++r) {
#if GEMM_TC_PRECISION == 0
                    af[i][r] = ptx::f32_to_tf32(a_at(row + 8 * (r % 2), ks + t + 4 * (r / 2)));
#else
                    const int k = ks + 2 * t + 8 * (r / 2);
                    af[i][r] = pack_pair(a_at(row + 8 * (r % 2), k), a_at(row + 8 * (r % 2), k + 1));
#endif
                }
            }
            DLGPU_UNROLL
            for (int j = 0; j < NT; ++j) {
                const int col = wn0 + j * 8 + g;
                DLGPU_UNROLL
                for (int r = 0; r < 2; ++r) {
#if GEMM_TC_PRECISION == 0
                    bf[j][r] = ptx::f32_to_tf32(b_at(ks + t + 4 * r, col));
#else
                    const int k = ks + 2 * t + 8 * r;
                    bf[j][r] = pack_pair(b_at(k, col), b_at(k + 1, col));
#endif
                }
            }
            DLGPU_UNROLL
            for (int i = 0; i < MT; ++i)
                DLGPU_UNROLL
                for (int j = 0; j < NT; ++j) mma(acc[i][j], af[i], bf[j]);
        }
        if (next < tiles) store(next % TC_STAGES);
    }
    ptx::cp_async_wait_all();

    // ---- epilogue: accumulator e of tile (i, j) is row g + 8 * (e / 2), column 2t + e % 2
    const bool vector_c = (N % 2 == 0) && (address_of(c) % 8 == 0);
    DLGPU_UNROLL
    for (int i = 0; i < MT; ++i) {
        DLGPU_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int m = m0 + wm0 + i * 16 + g + 8 * half;
            if (m >= M) continue;
            float* row = c + (long long)m * N;
            DLGPU_UNROLL
            for (int j = 0; j < NT; ++j) {
                const int n = n0 + wn0 + j * 8 + 2 * t;
                const float v0 = n < N ? epilogue(acc[i][j][2 * half], n, bias, flags) : 0.0f;
                const float v1 = n + 1 < N ? epilogue(acc[i][j][2 * half + 1], n + 1, bias, flags) : 0.0f;
                if (vector_c && n + 2 <= N) {
                    *reinterpret_cast<float2*>(row + n) = make_float2(v0, v1);
                } else {
                    if (n < N) row[n] = v0;
                    if (n + 1 < N) row[n + 1] = v1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- named instances
// 128x128: warps 2 x 4, MT 4, NT 4;  64x64: warps 2 x 2, MT 2, NT 4.
#define TC_PARAMS \
    const float *a, const float *b, const float *bias, const float *mask_y, float *c, int M, int N, int K, int flags
#define TC_ARGS a, b, bias, mask_y, c, M, N, K, flags

extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_nn_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, false, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_nt_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, false, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_tn_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, true, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_tt_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, true, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_nn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, false, false, true>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_tn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, true, false, true>(TC_ARGS);
}

extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_nn_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, false, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_nt_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, false, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_tn_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, true, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_tt_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, true, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_nn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, false, false, true>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_tn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, true, false, true>(TC_ARGS);
}
