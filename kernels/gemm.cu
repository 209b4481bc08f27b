// kernels/gemm.cu -- the fp32 matrix product on CUDA cores: C = epilogue(op(A) @ op(B)).
//
// C is M x N row-major.  op(A) is M x K: A stored (M, K) row-major, or (K, M) when transposed
// ("T" in a layout name); op(B) is K x N: B stored (K, N), or (N, K) when transposed.  Layouts are
// named AB: nn, nt, tn, tt.  `flags` (gemm_tile.cuh): GEMM_BIAS adds bias[n] (per output column),
// GEMM_RELU then clamps at 0.  `bias` must be a valid pointer even without GEMM_BIAS (never read).
// Every kernel is exact fp32 ("ieee") with a fixed summation order: same inputs, same bits.
//
//   gemm_naive_f32(a, b, bias, mask_y, c, M, N, K, a_row, a_col, b_row, b_col, flags)
//       One thread per C element, any layout through element strides (A(m, k) = a[m*a_row + k*a_col],
//       B(k, n) = b[k*b_row + n*b_col]), any alignment.  GEMM_MASK_A: A(m, k) is replaced by
//       relu_mask(A(m, k), Y(m, k)), Y = mask_y stored like A.  Block 16 x 16, grid
//       (ceil(N/16), ceil(M/16)).  The obviously-right variant: the GPU-side oracle, and the path
//       for operands the tiled kernels cannot take (a leading dimension or pointer that is not
//       16-byte aligned).
//
//   gemm_simt_<BM>x<BN>_<layout>[_mask]_f32(a, b, bias, mask_y, c, M, N, K, flags)
//       Tiled: block tile BM x BN x 8, warp tile 32 x 64, thread tile 8 x 8 (two 4 x 4 quadrants,
//       so its shared loads are float4 and conflict-free), 3-stage shared-memory pipeline.
//       Configurations 128x128 (256 threads), 128x64 (128), 64x64 (64); grid (ceil(N/BN),
//       ceil(M/BM)), blocks mapped to tiles in bands of 8 tile rows (gemm_tile.cuh: block_tile).
//       Needs every operand's leading dimension % 4 == 0 and 16-byte aligned pointers (the
//       launcher checks; else it takes the naive kernel).  Any M, N, K >= 1.
//       `_mask` (layouts nn, tn only: linear_backward's grad_x = G W and grad_w = G^T X): A is
//       multiplied by (Y > 0) as it is loaded, Y = mask_y stored like A.
//
// dlgpu-sass: gemm_simt_* FFMA LDS.128 !LDL !STL
// (global loads: k-contiguous or masked operands come through registers, LDG.E.128; the others
// by cp.async, LDGSTS)
// dlgpu-sass: gemm_simt_*_nn_f32 LDG.E.128 LDGSTS
// dlgpu-sass: gemm_simt_*_nt_f32 LDG.E.128
// dlgpu-sass: gemm_simt_*_tn_f32 LDGSTS
// dlgpu-sass: gemm_simt_*_tt_f32 LDG.E.128 LDGSTS
// dlgpu-sass: gemm_simt_*_mask_f32 LDG.E.128

#include "common.cuh"
#include "gemm_tile.cuh"

// ---------------------------------------------------------------- naive

extern "C" __global__ void gemm_naive_f32(const float* a, const float* b, const float* bias, const float* mask_y,
                                          float* c, int M, int N, int K, long long a_row, long long a_col,
                                          long long b_row, long long b_col, int flags)
{
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    const int m = blockIdx.y * blockDim.y + threadIdx.y;
    if (m >= M || n >= N) return;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) {
        const long long a_at = m * a_row + k * a_col;
        float av = a[a_at];
        if (flags & GEMM_MASK_A) av = relu_mask(av, mask_y[a_at]);
        acc = fmaf(av, b[k * b_row + n * b_col], acc);
    }
    c[(long long)m * N + n] = epilogue(acc, n, bias, flags);
}

// ---------------------------------------------------------------- simt

#define SIMT_BK 8
#define SIMT_STAGES 3
// Rows of the k-major tiles are padded by one float4: the transposing stores of a warp (16 rows
// of m, two k-chunks) then fall in distinct banks, and rows stay 16-byte aligned.
#define SIMT_PAD 4

// Thread (warp w, lane l) owns rows  wm + {0..3} and wm + 16 + {0..3},
//                              cols  wn + {0..3} and wn + 32 + {0..3},
// with the warp's lanes laid out 4 (m) x 8 (n): per k a warp reads 4 distinct float4 of A
// (broadcast to 8 lanes each) and 8 consecutive float4 of B, one pass through the banks.
template <int WARPS_M, int WARPS_N, bool kTransA, bool kTransB, bool kMaskA>
__device__ __forceinline__ void simt_gemm(const float* a, const float* b, const float* bias, const float* mask_y,
                                          float* c, int M, int N, int K, int flags)
{
    constexpr int BM = WARPS_M * 32, BN = WARPS_N * 64, BK = SIMT_BK;
    constexpr int THREADS = WARPS_M * WARPS_N * 32;
    constexpr int SA = BM + SIMT_PAD, SB = BN + SIMT_PAD;
    // Both tiles k-major ([k][m], [k][n]): the inner loop reads four consecutive m (or n) as one LDS.128.
    __shared__ alignas(16) float a_tiles[SIMT_STAGES][BK * SA];
    __shared__ alignas(16) float b_tiles[SIMT_STAGES][BK * SB];

    // A stored (M, K) is k-contiguous and transposed on the way in; stored (K, M) it is copied.
    TileLoader<kTransA ? BK : BM, kTransA ? BM : BK, SA, THREADS, !kTransA, kMaskA> load_a(
        a, mask_y, kTransA ? K : M, kTransA ? M : K);
    TileLoader<kTransB ? BN : BK, kTransB ? BK : BN, SB, THREADS, kTransB, false> load_b(
        b, b, kTransB ? N : K, kTransB ? K : N);

    int tile_m, tile_n;
    block_tile(tile_m, tile_n);
    const int m0 = tile_m * BM, n0 = tile_n * BN;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = (warp / WARPS_N) * 32 + (lane / 8) * 4;
    const int wn = (warp % WARPS_N) * 64 + (lane % 8) * 4;
    const int tiles = (K + BK - 1) / BK;

    auto issue = [&](int tile, int stage) {
        const int k0 = tile * BK;
        load_a.issue(kTransA ? k0 : m0, kTransA ? m0 : k0, a_tiles[stage]);
        load_b.issue(kTransB ? n0 : k0, kTransB ? k0 : n0, b_tiles[stage]);
    };
    auto store = [&](int stage) {
        load_a.store(a_tiles[stage]);
        load_b.store(b_tiles[stage]);
    };

    // ---- prologue: tiles 0 .. STAGES-2 in flight (one cp.async group each, even when empty)
    DLGPU_UNROLL
    for (int s = 0; s < SIMT_STAGES - 1; ++s) {
        if (s < tiles) {
            issue(s, s);
            store(s);
        }
        ptx::cp_async_commit();
    }

    float acc[8][8];
    DLGPU_UNROLL
    for (int i = 0; i < 8; ++i)
        DLGPU_UNROLL
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

    // ---- main loop: wait for tile t, start tile t + STAGES - 1, multiply tile t
    for (int t = 0; t < tiles; ++t) {
        ptx::cp_async_wait<SIMT_STAGES - 2>();
        // Tile t is visible to all; every thread is done with tile t - 1, whose stage is refilled next.
        __syncthreads();
        const int next = t + SIMT_STAGES - 1;
        if (next < tiles) issue(next, next % SIMT_STAGES);
        ptx::cp_async_commit();

        const float* as = a_tiles[t % SIMT_STAGES];
        const float* bs = b_tiles[t % SIMT_STAGES];
        DLGPU_UNROLL
        for (int kk = 0; kk < BK; ++kk) {
            const float4 a_lo = *reinterpret_cast<const float4*>(as + kk * SA + wm);
            const float4 a_hi = *reinterpret_cast<const float4*>(as + kk * SA + wm + 16);
            const float4 b_lo = *reinterpret_cast<const float4*>(bs + kk * SB + wn);
            const float4 b_hi = *reinterpret_cast<const float4*>(bs + kk * SB + wn + 32);
            const float av[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
            const float bv[8] = {b_lo.x, b_lo.y, b_lo.z, b_lo.w, b_hi.x, b_hi.y, b_hi.z, b_hi.w};
            DLGPU_UNROLL
            for (int i = 0; i < 8; ++i)
                DLGPU_UNROLL
                for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        // Registers -> the stage read one iteration ago (the barrier above freed it).
        if (next < tiles) store(next % SIMT_STAGES);
    }
    ptx::cp_async_wait_all();

    // ---- epilogue: bias, ReLU, float4 stores where the row allows
    const bool vector_c = (N % 4 == 0) && (address_of(c) % 16 == 0);
    DLGPU_UNROLL
    for (int i = 0; i < 8; ++i) {
        const int m = m0 + wm + (i & 3) + (i >> 2) * 16;
        if (m >= M) continue;
        DLGPU_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int n = n0 + wn + half * 32;
            float v[4];
            DLGPU_UNROLL
            for (int j = 0; j < 4; ++j) v[j] = n + j < N ? epilogue(acc[i][half * 4 + j], n + j, bias, flags) : 0.0f;
            float* row = c + (long long)m * N;
            if (vector_c && n + 4 <= N) {
                *reinterpret_cast<float4*>(row + n) = make_float4(v[0], v[1], v[2], v[3]);
            } else {
                DLGPU_UNROLL
                for (int j = 0; j < 4; ++j)
                    if (n + j < N) row[n + j] = v[j];
            }
        }
    }
}

// ---------------------------------------------------------------- named instances
// Written out by name so that readers and the harness find every kernel.  128x128: warps 4 x 2;
// 128x64: 4 x 1; 64x64: 2 x 1.
#define SIMT_PARAMS \
    const float *a, const float *b, const float *bias, const float *mask_y, float *c, int M, int N, int K, int flags
#define SIMT_ARGS a, b, bias, mask_y, c, M, N, K, flags


extern "C" __global__ void __launch_bounds__(256) gemm_simt_128x128_nn_f32(SIMT_PARAMS)
{
    simt_gemm<4, 2, false, false, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_simt_128x128_nt_f32(SIMT_PARAMS)
{
    simt_gemm<4, 2, false, true, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_simt_128x128_tn_f32(SIMT_PARAMS)
{
    simt_gemm<4, 2, true, false, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_simt_128x128_tt_f32(SIMT_PARAMS)
{
    simt_gemm<4, 2, true, true, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_simt_128x128_nn_mask_f32(SIMT_PARAMS)
{
    simt_gemm<4, 2, false, false, true>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_simt_128x128_tn_mask_f32(SIMT_PARAMS)
{
    simt_gemm<4, 2, true, false, true>(SIMT_ARGS);
}

extern "C" __global__ void __launch_bounds__(128) gemm_simt_128x64_nn_f32(SIMT_PARAMS)
{
    simt_gemm<4, 1, false, false, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_simt_128x64_nt_f32(SIMT_PARAMS)
{
    simt_gemm<4, 1, false, true, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_simt_128x64_tn_f32(SIMT_PARAMS)
{
    simt_gemm<4, 1, true, false, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_simt_128x64_tt_f32(SIMT_PARAMS)
{
    simt_gemm<4, 1, true, true, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_simt_128x64_nn_mask_f32(SIMT_PARAMS)
{
    simt_gemm<4, 1, false, false, true>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_simt_128x64_tn_mask_f32(SIMT_PARAMS)
{
    simt_gemm<4, 1, true, false, true>(SIMT_ARGS);
}

extern "C" __global__ void __launch_bounds__(64) gemm_simt_64x64_nn_f32(SIMT_PARAMS)
{
    simt_gemm<2, 1, false, false, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(64) gemm_simt_64x64_nt_f32(SIMT_PARAMS)
{
    simt_gemm<2, 1, false, true, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(64) gemm_simt_64x64_tn_f32(SIMT_PARAMS)
{
    simt_gemm<2, 1, true, false, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(64) gemm_simt_64x64_tt_f32(SIMT_PARAMS)
{
    simt_gemm<2, 1, true, true, false>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(64) gemm_simt_64x64_nn_mask_f32(SIMT_PARAMS)
{
    simt_gemm<2, 1, false, false, true>(SIMT_ARGS);
}
extern "C" __global__ void __launch_bounds__(64) gemm_simt_64x64_tn_mask_f32(SIMT_PARAMS)
{
    simt_gemm<2, 1, true, false, true>(SIMT_ARGS);
}
