// kernels/conv2d_tc.cu -- the convolution's three passes as implicit GEMMs on tensor cores
// (mma.sync, sm_80+), fp32 in and out, fp32 accumulation.
//
// Same contract as conv2d_fwd_simt_* in kernels/conv2d.cu: y (N, K, P, Q) = epilogue(conv(x, w)),
// x NCHW, w OIHW, CONV_GEOMETRY_PARAMS and `flags` (CONV_BIAS, CONV_RELU) from
// conv2d_common.cuh, any shape.  The implicit matrices: A (M = N*P*Q pixels, C*R*S taps) gathered
// from x (InputGather, zeros in the padding), B (taps, K) = w as stored.  The operand precision is
// a build define, as in kernels/gemm_tc.cu:
//
//   CONV_TC_PRECISION=0  tf32: mma.m16n8k8, operands rounded by cvt.rna.tf32.f32
//   CONV_TC_PRECISION=1  bf16: mma.m16n8k16, operands rounded to bf16
//   CONV_TC_PRECISION=2  fp16: mma.m16n8k16, operands rounded to fp16
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
//       The problems of conv2d_common.cuh on one main loop (tc_implicit_gemm).  128x64: 4 warps
//       (2 x 2), warp tile 64 rows x 32 columns;  64x32: 2 warps (2 x 1), warp tile 32 x 32.  Block
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
// dlgpu-build: CONV_TC_PRECISION=0
// dlgpu-build: CONV_TC_PRECISION=1
// dlgpu-build: CONV_TC_PRECISION=2
// dlgpu-sass: conv2d_fwd_tc_* HMMA !LDL !STL
// dlgpu-sass: conv2d_dgrad_tc_* HMMA !LDL !STL
// dlgpu-sass: conv2d_wgrad_tc_* HMMA !LDL !STL

#include "common.cuh"
#include "conv2d_common.cuh"
#include "ptx.cuh"

#ifndef CONV_TC_PRECISION
#error "conv2d_tc.cu is built with -DCONV_TC_PRECISION=0 (tf32), 1 (bf16) or 2 (fp16)"
#endif

#define CONV_TC_BK 16
#define CONV_TC_PAD 4

// Warp (wm, wn) owns rows [wm * MT * 16, +MT * 16) and columns [wn * NT * 8, +NT * 8) of the block
// tile: MT x NT mma tiles of 16 x 8, four fp32 accumulators per lane each.  Any problem of
// conv2d_common.cuh (GemmShape + an operand policy).
template <int WARPS_M, int WARPS_N, int MT, int NT, class Ops>
__device__ __forceinline__ void tc_implicit_gemm(const Ops& ops, const GemmShape shape, float* out, const float* bias,
                                                 int flags)
{
    constexpr int BM = WARPS_M * MT * 16, BN = WARPS_N * NT * 8, BK = CONV_TC_BK;
    constexpr int THREADS = WARPS_M * WARPS_N * 32;
    constexpr int KSTEP = CONV_TC_PRECISION == 0 ? 8 : 16;
    constexpr int ST = BK + CONV_TC_PAD;
    static_assert(BM % THREADS == 0 && THREADS % BK == 0, "loader layout");
    constexpr int A_ROWS = BM / THREADS;  // rows per thread
    constexpr int B_STEP = THREADS / BK;  // columns between one thread's B elements
    constexpr int B_PER = BN / B_STEP;

    extern __shared__ float4 conv_tc_shared[];
    float* const a_tiles = reinterpret_cast<float*>(conv_tc_shared);  // [stage][row][tap]
    float* const b_tiles = a_tiles + 2 * BM * ST;                      // [stage][column][tap]

    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int t = threadIdx.x, warp = t / 32, lane = t % 32;
    const int g = lane / 4, tq = lane % 4;
    const int wm0 = (warp / WARPS_N) * MT * 16, wn0 = (warp % WARPS_N) * NT * 8;

    // ---- loader state: thread t gathers every tap of rows t, t + THREADS, ...
    typename Ops::Row rows[A_ROWS];
    DLGPU_UNROLL
    for (int i = 0; i < A_ROWS; ++i) rows[i] = ops.row(m0 + t + i * THREADS);
    const int b_tap = t % BK, b_col = t / BK;
    float a_held[A_ROWS][BK], b_held[B_PER];

    auto load = [&](int k0) {
        DLGPU_UNROLL
        for (int kk = 0; kk < BK; ++kk)
            DLGPU_UNROLL
            for (int i = 0; i < A_ROWS; ++i) a_held[i][kk] = k0 + kk < shape.RED ? ops.a(rows[i], k0 + kk) : 0.0f;
        DLGPU_UNROLL
        for (int j = 0; j < B_PER; ++j) {
            const int col = n0 + b_col + j * B_STEP, kk = k0 + b_tap;
            b_held[j] = col < shape.COLS && kk < shape.RED ? ops.b(kk, col) : 0.0f;
        }
    };
    auto store = [&](int stage) {
        float* as = a_tiles + stage * BM * ST;
        float* bs = b_tiles + stage * BN * ST;
        DLGPU_UNROLL
        for (int i = 0; i < A_ROWS; ++i)
            DLGPU_UNROLL
            for (int kk = 0; kk < BK; kk += 4)
                *reinterpret_cast<float4*>(as + (t + i * THREADS) * ST + kk) =
                    make_float4(a_held[i][kk], a_held[i][kk + 1], a_held[i][kk + 2], a_held[i][kk + 3]);
        DLGPU_UNROLL
        for (int j = 0; j < B_PER; ++j) bs[(b_col + j * B_STEP) * ST + b_tap] = b_held[j];
    };

    float acc[MT][NT][4];
    DLGPU_UNROLL
    for (int i = 0; i < MT; ++i)
        DLGPU_UNROLL
        for (int j = 0; j < NT; ++j)
            DLGPU_UNROLL
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // ---- prologue: tile 0 into stage 0
    const int tiles = (shape.RED - shape.RED_BEGIN + BK - 1) / BK;
    load(shape.RED_BEGIN);
    store(0);
    __syncthreads();

    // ---- main loop: gathers of tile + 1 in flight while tile is multiplied
    for (int tile = 0; tile < tiles; ++tile) {
        const bool more = tile + 1 < tiles;
        if (more) load(shape.RED_BEGIN + (tile + 1) * BK);
        const float* as = a_tiles + (tile & 1) * BM * ST;
        const float* bs = b_tiles + (tile & 1) * BN * ST;
        DLGPU_UNROLL
        for (int ks = 0; ks < BK; ks += KSTEP) {
            // Fragments in the PTX ISA's layouts (kernels/ptx.cuh's header lists them).
            unsigned af[MT][4], bf[NT][2];
            DLGPU_UNROLL
            for (int i = 0; i < MT; ++i) {
                const float* row = as + (wm0 + i * 16 + g) * ST;
                DLGPU_UNROLL
                for (int r = 0; r < 4; ++r) {
                    const float* at = row + 8 * (r % 2) * ST;
#if CONV_TC_PRECISION == 0
                    af[i][r] = ptx::f32_to_tf32(at[ks + tq + 4 * (r / 2)]);
#else
                    const int k = ks + 2 * tq + 8 * (r / 2);
                    af[i][r] = ptx::pack_half2<CONV_TC_PRECISION>(at[k], at[k + 1]);
#endif
                }
            }
            DLGPU_UNROLL
            for (int j = 0; j < NT; ++j) {
                const float* col = bs + (wn0 + j * 8 + g) * ST;
                DLGPU_UNROLL
                for (int r = 0; r < 2; ++r) {
#if CONV_TC_PRECISION == 0
                    bf[j][r] = ptx::f32_to_tf32(col[ks + tq + 4 * r]);
#else
                    const int k = ks + 2 * tq + 8 * r;
                    bf[j][r] = ptx::pack_half2<CONV_TC_PRECISION>(col[k], col[k + 1]);
#endif
                }
            }
            DLGPU_UNROLL
            for (int i = 0; i < MT; ++i)
                DLGPU_UNROLL
                for (int j = 0; j < NT; ++j) ptx::mma_accumulate<CONV_TC_PRECISION>(acc[i][j], af[i], bf[j]);
        }
        // The other stage's last readers finished before the previous iteration's barrier.
        if (more) store((tile + 1) & 1);
        __syncthreads();
    }

    // ---- epilogue: accumulator e of tile (i, j) is row g + 8 * (e / 2), column 2t + e % 2
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
                        pixel[(long long)col * shape.PLANE] = conv_epilogue(acc[i][j][2 * half + e], col, bias, flags);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- named instances
// 128x64: warps 2 x 2, MT 4, NT 4;  64x32: warps 2 x 1, MT 2, NT 4.
extern "C" __global__ void __launch_bounds__(128) conv2d_fwd_tc_128x64_f32(FWD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    tc_implicit_gemm<2, 2, 4, 4>(forward_ops<ForwardOps>(x, w, geo), forward_shape(geo), y, bias, flags);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_fwd_tc_128x64_1x1_f32(FWD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    tc_implicit_gemm<2, 2, 4, 4>(forward_ops<OneByOneOps>(x, w, geo), forward_shape(geo), y, bias, flags);
}
extern "C" __global__ void __launch_bounds__(128) conv2d_dgrad_tc_128x64_f32(DGRAD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    tc_implicit_gemm<2, 2, 4, 4>(dgrad_ops(grad_y, y, w, geo, flags, hw_mul, hw_shift, w_mul, w_shift),
        dgrad_shape(geo, hw_mul, hw_shift), grad_x, grad_x, 0);
}

extern "C" __global__ void __launch_bounds__(64) conv2d_fwd_tc_64x32_f32(FWD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    tc_implicit_gemm<2, 1, 2, 4>(forward_ops<ForwardOps>(x, w, geo), forward_shape(geo), y, bias, flags);
}
extern "C" __global__ void __launch_bounds__(64) conv2d_fwd_tc_64x32_1x1_f32(FWD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    tc_implicit_gemm<2, 1, 2, 4>(forward_ops<OneByOneOps>(x, w, geo), forward_shape(geo), y, bias, flags);
}
extern "C" __global__ void __launch_bounds__(64) conv2d_dgrad_tc_64x32_f32(DGRAD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    tc_implicit_gemm<2, 1, 2, 4>(dgrad_ops(grad_y, y, w, geo, flags, hw_mul, hw_shift, w_mul, w_shift),
        dgrad_shape(geo, hw_mul, hw_shift), grad_x, grad_x, 0);
}

extern "C" __global__ void __launch_bounds__(128) conv2d_wgrad_tc_128x64_f32(WGRAD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    float* const out = partial + (long long)blockIdx.z * K * C * R * S;
    tc_implicit_gemm<2, 2, 4, 4>(wgrad_ops(grad_y, y, x, geo, flags),
        wgrad_shape(geo, blockIdx.z * pixels_per_split, pixels_per_split), out, out, 0);
}

extern "C" __global__ void __launch_bounds__(64) conv2d_wgrad_tc_64x32_f32(WGRAD_PARAMS)
{
    const ConvGeometry geo = CONV_GEOMETRY;
    float* const out = partial + (long long)blockIdx.z * K * C * R * S;
    tc_implicit_gemm<2, 1, 2, 4>(wgrad_ops(grad_y, y, x, geo, flags),
        wgrad_shape(geo, blockIdx.z * pixels_per_split, pixels_per_split), out, out, 0);
}
