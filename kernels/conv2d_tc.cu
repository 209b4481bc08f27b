// kernels/conv2d_tc.cu -- the convolution's three passes as implicit GEMMs on tensor cores
// (mma.sync, sm_80+), fp32 in and out, fp32 accumulation.
//
// Same contract as conv2d_fwd_simt_* in kernels/conv2d.cu: y (N, K, P, Q) = epilogue(conv(x, w)),
// x NCHW, w OIHW, CONV_GEOMETRY_PARAMS (conv2d_common.cuh) and `flags` (EPILOGUE_BIAS,
// EPILOGUE_RELU; CONV_MASK for the backward passes), any shape.  The implicit matrices: A (M =
// N*P*Q pixels, C*R*S taps) gathered from x (InputGather, zeros in the padding), B (taps, K) = w as
// stored.  The operand precision is a build define naming a ptx::Precision, as in kernels/gemm_tc.cu:
//
//   CONV_TC_PRECISION=tf32  mma.m16n8k8, operands rounded by cvt.rna.tf32.f32
//   CONV_TC_PRECISION=bf16  mma.m16n8k16, operands rounded to bf16
//   CONV_TC_PRECISION=fp16  mma.m16n8k16, operands rounded to fp16
// Each output's tap order is fixed: same inputs, build and shape, same bits.
//
//   conv2d_fwd_tc_<BM>x<BN>_f32(x, w, bias, y, geometry, flags)
//   conv2d_fwd_tc_<BM>x<BN>_1x1_f32(...same...)            1x1 filters, stride 1, no padding
//   conv2d_dgrad_tc_<BM>x<BN>_f32(grad_y, y, w, grad_x, geometry, flags, hw_mul, hw_shift, w_mul,
//                                 w_shift)                  dgrad, as conv2d_dgrad_simt_* in conv2d.cu
//   conv2d_wgrad_tc_<BM>x<BN>_f32(grad_y, y, x, partial, geometry, flags, pixels_per_split)
//                                 wgrad split over pixels as conv2d_wgrad_simt_f32: rows are output
//                                 channels, columns taps; grid (ceil(K/BM), ceil(CRS/BN), splits);
//                                 conv2d.cu's conv2d_wgrad_finish_f32 combines the splits
//       The problems of conv2d_common.cuh on one main loop (tc_implicit_gemm).  Configurations:
//       CONV_TC_CONFIGS below (128x64: 4 warps (2 x 2), warp tile 64 rows x 32 columns; 64x32:
//       2 warps (2 x 1), warp tile 32 x 32).  Block
//       tile BM x BN x 16 taps; two shared stages filled through registers (the gathers of tile
//       t + 1 are in flight during tile t's mma); dynamic shared memory 2 x (BM + BN) x (16 + 4)
//       floats (dlgpu/cuda/conv2d.py: tc_shared_bytes).  Grid (ceil(M/BM), ceil(COLS/BN)): row
//       blocks on x, which has room for any batch.
//
// Both tiles are stored k-contiguous (pixel or channel rows of 16 taps, padded to 20 floats = 20
// mod 32 banks), so the fragment reads of lanes (g, t) = (lane / 4, lane % 4) at row g, column t
// hit 32 distinct banks; fp32 in shared memory, rounded to the operand type as a fragment is
// read (one tile format for all three precisions, as in gemm_tc.cu).
//
// dlgpu-build: CONV_TC_PRECISION=tf32
// dlgpu-build: CONV_TC_PRECISION=bf16
// dlgpu-build: CONV_TC_PRECISION=fp16
// dlgpu-sass: conv2d_fwd_tc_* HMMA !LDL !STL
// dlgpu-sass: conv2d_dgrad_tc_* HMMA !LDL !STL
// dlgpu-sass: conv2d_wgrad_tc_* HMMA !LDL !STL

#include "common.cuh"
#include "conv2d_common.cuh"
#include "mainloop.cuh"
#include "ptx.cuh"

#ifndef CONV_TC_PRECISION
#error "conv2d_tc.cu is built with -DCONV_TC_PRECISION=tf32, bf16 or fp16 (a ptx::Precision)"
#endif
constexpr ptx::Precision TC_PRECISION = ptx::Precision::CONV_TC_PRECISION;

#define CONV_TC_BK 16
#define CONV_TC_PAD 4

// The tile configurations, widest first: X(BM, BN, THREADS, WARPS_M, WARPS_N), THREADS = 32 *
// WARPS_M * WARPS_N, warp tiles (BM / WARPS_M) x (BN / WARPS_N).  dlgpu/cuda/conv2d.py reads this list.
#define CONV_TC_CONFIGS(X)   \
    X(128, 64, 128, 2, 2)    \
    X(64, 32, 64, 2, 1)

// Warp (wm, wn) owns rows [wm * MT * 16, +MT * 16) and columns [wn * NT * 8, +NT * 8) of the block
// tile: MT x NT mma tiles of 16 x 8, four fp32 accumulators per lane each.  Any problem of
// conv2d_common.cuh (GemmShape + an operand policy).
template <int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, class Ops>
__device__ __forceinline__ void tc_implicit_gemm(const Ops& ops, const GemmShape shape, float* out, const float* bias,
                                                 int flags)
{
    constexpr ptx::Precision P = TC_PRECISION;
    constexpr int MT = BM / (16 * WARPS_M), NT = BN / (8 * WARPS_N), BK = CONV_TC_BK;
    static_assert(THREADS == 32 * WARPS_M * WARPS_N && MT * 16 * WARPS_M == BM && NT * 8 * WARPS_N == BN,
                  "warps tile the block");
    constexpr int ST = BK + CONV_TC_PAD;
    static_assert(BM % THREADS == 0 && THREADS % BK == 0, "loader layout");
    constexpr int A_ROWS = BM / THREADS;  // rows per thread

    extern __shared__ float4 conv_tc_shared[];
    float* const a_tiles = reinterpret_cast<float*>(conv_tc_shared);  // [stage][row][tap]
    float* const b_tiles = a_tiles + 2 * BM * ST;                      // [stage][column][tap]

    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int t = threadIdx.x, warp = t / 32, lane = t % 32;
    const int wm0 = (warp / WARPS_N) * MT * 16, wn0 = (warp % WARPS_N) * NT * 8;

    // ---- loader state: thread t gathers every tap of rows t, t + THREADS, ...
    typename Ops::Row rows[A_ROWS];
    DLGPU_UNROLL
    for (int i = 0; i < A_ROWS; ++i) rows[i] = ops.row(m0 + t + i * THREADS);
    float a_held[A_ROWS][BK];
    GatherB<BK, BN, THREADS> gather_b;

    float acc[MT][NT][4];
    zero(acc);

    // ---- two stages filled through registers: tile t + 1's gathers are in flight during tile t's mma
    k_tile_pipeline<2, false, false>(
        shape.tiles<BK>(),
        [&](int tile, int) {
            const int k0 = shape.RED_BEGIN + tile * BK;
            DLGPU_UNROLL
            for (int kk = 0; kk < BK; ++kk)
                DLGPU_UNROLL
                for (int i = 0; i < A_ROWS; ++i) a_held[i][kk] = k0 + kk < shape.RED ? ops.a(rows[i], k0 + kk) : 0.0f;
            gather_b.issue(ops, shape, k0, n0);
        },
        [&](int stage) {
            float* as = a_tiles + stage * BM * ST;
            float* bs = b_tiles + stage * BN * ST;
            DLGPU_UNROLL
            for (int i = 0; i < A_ROWS; ++i)
                DLGPU_UNROLL
                for (int kk = 0; kk < BK; kk += 4)
                    *reinterpret_cast<float4*>(as + (t + i * THREADS) * ST + kk) =
                        make_float4(a_held[i][kk], a_held[i][kk + 1], a_held[i][kk + 2], a_held[i][kk + 3]);
            gather_b.template store<1, ST>(bs);
        },
        [&](int stage) {
            const float* as = a_tiles + stage * BM * ST;
            const float* bs = b_tiles + stage * BN * ST;
            DLGPU_UNROLL
            for (int ks = 0; ks < BK; ks += ptx::mma_k<P>) {
                // Fragments in the PTX ISA's layouts (kernels/ptx.cuh), rounded from the fp32 tiles.
                unsigned af[MT][4], bf[NT][2];
                DLGPU_UNROLL
                for (int i = 0; i < MT; ++i)
                    ptx::a_fragment<P>(af[i], [&](int r, int k) { return as[(wm0 + i * 16 + r) * ST + ks + k]; },
                                       lane);
                DLGPU_UNROLL
                for (int j = 0; j < NT; ++j)
                    ptx::b_fragment<P>(bf[j], [&](int k, int c) { return bs[(wn0 + j * 8 + c) * ST + ks + k]; },
                                       lane);
                mma_tile<P>(acc, af, bf);
            }
        });

    // ---- epilogue: accumulator e of tile (i, j) is row g + 8 * (e / 2), column 2t + e % 2
    const int g = lane / 4, tq = lane % 4;
    DLGPU_UNROLL
    for (int i = 0; i < MT; ++i) {
        DLGPU_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int m = m0 + wm0 + i * 16 + g + 8 * half;
            if (m >= shape.M) continue;
            const int img = fast_div(m, shape.plane_mul, shape.plane_shift);
            float* pixel = out + (long long)img * shape.COLS * shape.PLANE + (m - img * shape.PLANE);
            DLGPU_UNROLL
            for (int j = 0; j < NT; ++j) {
                DLGPU_UNROLL
                for (int e = 0; e < 2; ++e) {
                    const int col = n0 + wn0 + j * 8 + 2 * tq + e;
                    if (col < shape.COLS)
                        pixel[(long long)col * shape.PLANE] = epilogue(acc[i][j][2 * half + e], col, bias, flags);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- named instances
// Every configuration's forward, 1x1 forward and dgrad kernel (conv2d_common.cuh: CONV_PASS_KERNELS)
// and its wgrad kernel: rows are output channels, one split of the pixel reduction per blockIdx.z.
#define CONV_TC_WGRAD_KERNEL(BM, BN, THREADS, ...)                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS) conv2d_wgrad_tc_##BM##x##BN##_f32(WGRAD_PARAMS)    \
    {                                                                                                      \
        const ConvGeometry geo = CONV_GEOMETRY;                                                            \
        float* const out = partial + (long long)blockIdx.z * K * C * R * S;                                \
        tc_implicit_gemm<BM, BN, THREADS, __VA_ARGS__>(                                                     \
            wgrad_ops(grad_y, y, x, geo, flags), wgrad_shape(geo, blockIdx.z * pixels_per_split, pixels_per_split), \
            out, out, 0);                                                                                  \
    }
#define CONV_TC_KERNELS(...)                                   \
    CONV_PASS_KERNELS(tc, tc_implicit_gemm, __VA_ARGS__)       \
    CONV_TC_WGRAD_KERNEL(__VA_ARGS__)
CONV_TC_CONFIGS(CONV_TC_KERNELS)
