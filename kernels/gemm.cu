// kernels/gemm.cu -- the fp32 matrix product on CUDA cores: C = epilogue(op(A) @ op(B)).
//
// C is M x N row-major.  op(A) is M x K: A stored (M, K) row-major, or (K, M) when transposed
// ("T" in a layout name); op(B) is K x N: B stored (K, N), or (N, K) when transposed.  Layouts are
// named AB: nn, nt, tn, tt.  `flags`: EPILOGUE_BIAS adds bias[n] (per output column), EPILOGUE_RELU
// then clamps at 0 (common.cuh).  `bias` must be a valid pointer even without EPILOGUE_BIAS (never read).
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
//       Configurations: GEMM_SIMT_CONFIGS below; layouts: GEMM_LAYOUTS (gemm_tile.cuh).  Grid
//       (ceil(N/BN), ceil(M/BM)), blocks mapped to tiles in bands of 8 tile rows (block_tile).
//       Needs every operand's leading dimension % 4 == 0 and 16-byte aligned pointers (the
//       launcher checks; else it takes the naive kernel).  Any M, N, K >= 1.
//       `_mask` (layouts nn, tn only: linear_backward's grad_x = G W and grad_w = G^T X): A is
//       multiplied by (Y > 0) as it is loaded, Y = mask_y stored like A.
//
// Predicted rate of simt (NOT YET RUN ON A GPU), H100 SXM (132 SMs at ~1.75 GHz under load: 59 TFLOP/s of
// FFMA; an SM sub-partition issues one warp instruction per clock and retires one FFMA warp instruction per
// clock, so every other instruction of the loop takes an FFMA's slot), from the sm_90a build (NVRTC 13.5;
// `dlgpu compile --sass --arch sm_90a gemm`), main loop per warp per k-tile of 8:
//   128x128     nn 128 registers, nt 126: 2 blocks (16 warps) per SM, 25 KB shared each, no local memory.  nn:
//               644 instructions, 512 FFMA (79.5 %), 32 LDS.128, 4 LDG, 1 LDGSTS, 4 STS, 1 BAR; nt 635 (80.6 %).
//               At 85-92 % issue efficiency (4 warps per scheduler) 40-43 TFLOP/s; 4096^3 and 8192^3 make 3.9
//               and 15.5 waves of 264 blocks (~97 %).  L2 -> SM: 8 KB per 262 kFLOP, ~1.3 TB/s: no limit.
//   64x64       127 registers, 64 threads (2 warps): 683 instructions per 512 FFMA.  The small products get it
//               because no larger tile gives each SM a block: 256x512x784 and 128x512x784 make 32 and 16 blocks,
//               256x64x576 makes 4 -- 4-32 of 132 SMs, one warp per busy scheduler at ~0.6-0.9 instructions
//               per clock: 98 k-tiles x 683 ~ 67 k instructions a warp, 43-64 us (49 k, 31-47 us, at K = 576).
// => 4096^3 / 8192^3 (ieee) 0.65-0.9x cuBLAS SGEMM (taken as 48-55 TFLOP/s there); linear bias+relu at 4096^3
// 0.67-0.95x (its baseline adds a bias pass and a ReLU pass over the 64 MB output, ~3 %); the small products
// 0.08-0.26x (cuBLAS ~4-10 us), linear 256x512x784 0.15-0.45x (its baseline adds two short launches).  A
// split over K or a smaller tile for few-block shapes is what the small rows would need.
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

// The tile configurations, largest first: X(BM, BN, THREADS), warps of 32 x 64 outputs, so
// THREADS = 32 * (BM / 32) * (BN / 64).  dlgpu/cuda/gemm.py reads this list.
#define GEMM_SIMT_CONFIGS(X) \
    X(128, 128, 256)         \
    X(128, 64, 128)          \
    X(64, 64, 64)

// Thread (warp w, lane l) owns rows  wm + {0..3} and wm + 16 + {0..3},
//                              cols  wn + {0..3} and wn + 32 + {0..3},
// with the warp's lanes laid out 4 (m) x 8 (n): per k a warp reads 4 distinct float4 of A
// (broadcast to 8 lanes each) and 8 consecutive float4 of B, one pass through the banks.
template <int BM, int BN, int THREADS, bool kTransA, bool kTransB, bool kMaskA>
__device__ __forceinline__ void simt_gemm(const float* a, const float* b, const float* bias, const float* mask_y,
                                          float* c, int M, int N, int K, int flags)
{
    constexpr int WARPS_N = BN / 64, BK = SIMT_BK;
    static_assert(BM % 32 == 0 && BN % 64 == 0 && THREADS == 32 * (BM / 32) * WARPS_N, "warp tiles of 32 x 64");
    constexpr int SA = BM + SIMT_PAD, SB = BN + SIMT_PAD;
    // Both tiles k-major ([k][m], [k][n]): the inner loop reads four consecutive m (or n) as one LDS.128.
    __shared__ alignas(16) float a_tiles[SIMT_STAGES][BK * SA];
    __shared__ alignas(16) float b_tiles[SIMT_STAGES][BK * SB];

    // A stored (M, K) is k-contiguous and transposed on the way in; stored (K, M) it is copied.
    using LoaderA = TileLoader<kTransA ? BK : BM, kTransA ? BM : BK, SA, THREADS, !kTransA, kMaskA>;
    using LoaderB = TileLoader<kTransB ? BN : BK, kTransB ? BK : BN, SB, THREADS, kTransB, false>;
    LoaderA load_a(a, mask_y, kTransA ? K : M, kTransA ? M : K);
    LoaderB load_b(b, b, kTransB ? N : K, kTransB ? K : N);

    int m0, n0;
    block_tile<BM, BN>(m0, n0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = (warp / WARPS_N) * 32 + (lane / 8) * 4;
    const int wn = (warp % WARPS_N) * 64 + (lane % 8) * 4;

    float acc[8][8];
    zero(acc);
    k_tile_pipeline<SIMT_STAGES, LoaderA::kAsync || LoaderB::kAsync, true>(
        (K + BK - 1) / BK,
        [&](int tile, int stage) {
            const int k0 = tile * BK;
            load_a.issue(kTransA ? k0 : m0, kTransA ? m0 : k0, a_tiles[stage]);
            load_b.issue(kTransB ? n0 : k0, kTransB ? k0 : n0, b_tiles[stage]);
        },
        [&](int stage) {
            load_a.store(a_tiles[stage]);
            load_b.store(b_tiles[stage]);
        },
        [&](int stage) { fma_tile<BK, SA, SB, 16, 32>(acc, a_tiles[stage] + wm, b_tiles[stage] + wn); });

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
            store_run(c + (long long)m * N + n, v, n, N, vector_c);
        }
    }
}

// ---------------------------------------------------------------- named instances
// Every configuration in every layout (GEMM_LAYOUTS): gemm_simt_128x128_nn_f32, ...
#define GEMM_SIMT_KERNEL(layout, kTransA, kTransB, kMaskA, BM, BN, THREADS)                                 \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                  \
        gemm_simt_##BM##x##BN##_##layout##_f32(const float* a, const float* b, const float* bias,           \
                                               const float* mask_y, float* c, int M, int N, int K, int flags) \
    {                                                                                                      \
        simt_gemm<BM, BN, THREADS, kTransA, kTransB, kMaskA>(a, b, bias, mask_y, c, M, N, K, flags);          \
    }
#define GEMM_SIMT_LAYOUTS(BM, BN, THREADS) GEMM_LAYOUTS(GEMM_SIMT_KERNEL, BM, BN, THREADS)
GEMM_SIMT_CONFIGS(GEMM_SIMT_LAYOUTS)
