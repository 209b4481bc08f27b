// kernels/conv2d_tc.cu -- the convolution's three passes as implicit GEMMs on tensor cores (mma.sync, sm_80+),
// fp32 accumulation, in two layouts: NCHW with fp32 operands (the layout of dlgpu's other kernels), and NHWC
// (channels_last, what PyTorch's channels_last tensors are) with operands in the storage of the precision,
// fed like kernels/gemm_tc.cu.  The precision is a build define naming a ptx::Precision, as in gemm_tc.cu:
//
//   CONV_TC_PRECISION=tf32  mma.m16n8k8; NHWC operands fp32, rounded to tf32 once per tile
//   CONV_TC_PRECISION=bf16  mma.m16n8k16; NHWC operands bf16 (16 bits); NCHW operands rounded to bf16
//   CONV_TC_PRECISION=fp16  mma.m16n8k16; NHWC operands fp16;           NCHW operands rounded to fp16
// Each output's tap order is fixed: same inputs, build and shape, same bits.
//
// ---- NCHW, fp32 operands: the problems of conv2d_common.cuh on one register-fed main loop
// Same contract as conv2d_fwd_simt_* in kernels/conv2d.cu: y (N, K, P, Q) = epilogue(conv(x, w)), x NCHW,
// w OIHW, CONV_GEOMETRY_PARAMS (conv2d_common.cuh) and `flags` (EPILOGUE_BIAS, EPILOGUE_RELU; CONV_MASK for
// the backward passes), any shape.  The implicit matrices: A (M = N*P*Q pixels, C*R*S taps) gathered from x
// (InputGather, zeros in the padding), B (taps, K) = w as stored.
//
//   conv2d_fwd_tc_<BM>x<BN>_f32(x, w, bias, y, geometry, flags)
//   conv2d_fwd_tc_<BM>x<BN>_1x1_f32(...same...)            1x1 filters, stride 1, no padding
//   conv2d_dgrad_tc_<BM>x<BN>_f32(grad_y, y, w, grad_x, geometry, flags, hw_mul, hw_shift, w_mul,
//                                 w_shift)                  dgrad, as conv2d_dgrad_simt_* in conv2d.cu
//   conv2d_wgrad_tc_<BM>x<BN>_f32(grad_y, y, x, partial, geometry, flags, pixels_per_split)
//                                 wgrad split over pixels as conv2d_wgrad_simt_f32: rows are output
//                                 channels, columns taps; grid (ceil(K/BM), ceil(CRS/BN), splits);
//                                 conv2d.cu's conv2d_wgrad_finish_f32 combines the splits
//       tc_implicit_gemm below.  Configurations: CONV_TC_CONFIGS (128x64: 4 warps (2 x 2), warp tile 64 rows
//       x 32 columns; 64x32: 2 warps (2 x 1), warp tile 32 x 32).  Block tile BM x BN x 16 taps; two shared
//       stages filled through registers (the gathers of tile t + 1 are in flight during tile t's mma);
//       dynamic shared memory 2 x (BM + BN) x (16 + 4) floats and the tap table's 2 x 16 slots of 16 bytes
//       (dlgpu/cuda/conv2d.py: tc_shared_bytes).  Grid (ceil(M/BM), ceil(COLS/BN)): row blocks on x, which has
//       room for any batch.  Both tiles are stored k-contiguous (rows of 16 taps, padded to 20 floats = 20 mod
//       32 banks), so the fragment reads of lanes (g, t) at row g, column t hit 32 distinct banks; fp32 in
//       shared memory, rounded to the operand type as a fragment is read.  No division per gathered element:
//       what a reduction index means to every row of A (its offset, its (dh, dw) or stride remainders:
//       conv2d_common.cuh's Ops::ATap) is decoded once per tile for the whole block, by 16 threads, into a
//       two-slot table in shared memory; B's columns are decoded once and its reduction index stepped with a
//       carry (Ops::BCursor; the forward's B and the 1x1 forward's A and B are read by index, which divides
//       nothing).  The gathers still load 4 bytes at a time (a pixel's taps are not contiguous in NCHW): the
//       NHWC kernels below are the fast path.
//
// ---- NHWC, operands in the precision's storage: kernels/tc_tile.cuh's main loop, gathered by cp.async
// x (N, H, W, C), w (K, R, S, C) (OHWI: each output channel's filter with channels innermost), y (N, P, Q, K),
// all as stored in memory; the element type is the build's (fp32 for tf32, 16 bits for bf16 / fp16).  C and
// K multiples of 16 bytes of elements (8 halves, 4 floats) and 16-byte aligned arrays: the launcher pads the
// channels (zeros, by kernels/gemm_cast.cu) where they are not.  Each pass is a GEMM whose reduction runs over taps
// (r, s) outer and blocks of BK channels inner (BK = 64 bytes: 32 halves, 16 floats; a block past the last
// channel reads zeros), so every 16-byte chunk of a tile is 8 (or 4) consecutive channels of one pixel and one
// tap: one cp.async, zero-filled in the padding.  No division in the loop: each thread's rows (pixels) are
// decoded once, and the tap offset is one scalar per tile, stepped with the tile (TapStep); the dgrad's stride
// test and the wgrad's pixels are stepped from tile to tile too (Strided; carries from digit to digit).
//
//   conv2d_fwd_tc_<BM>x<BN>_nhwc(x, w, bias, y, geometry, flags)
//       y (N*P*Q x K, row-major) = epilogue(A x B): A row m = output pixel (n, p, q), its chunk at tap (r, s),
//       channels c.. = x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, c..] (zeros outside); B^T = w viewed K x
//       R*S*C.  `flags`: EPILOGUE_BIAS, EPILOGUE_RELU, CONV_STORE_HALF (y in the operands' 16-bit type).
//   conv2d_dgrad_tc_<BM>x<BN>_nhwc(grad_y, w, grad_x, geometry, flags, hw_mul, hw_shift, w_mul, w_shift)
//       grad_x (N*H*W x C) = A x B: A row m = input pixel (n, h, w), at tap (r, s) and output channels k..:
//       grad_y[n, p, q, k..] where p*sh = h + ph - r*dh and q*sw = w + pw - s*dw have solutions inside the
//       output (else zeros; checked once per row per tap, not per tile, from the quotients and remainders of
//       h + ph - r*dh and w + pw - s*dw by the strides, stepped from tap to tap); B (taps x output channels, C) =
//       w[k, r, s, c..].  The ReLU mask of a fused forward is applied to grad_y by the launcher's producer
//       pass.  `flags`: CONV_STORE_HALF.
//   conv2d_wgrad_tc_<BM>x<BN>_nhwc(grad_y, x, partial, geometry, flags, pixels_per_split)
//       partial[z] (K x R*S*C, fp32) = G^T x B over output pixels [z*pixels_per_split, +pixels_per_split):
//       G = grad_y viewed N*P*Q x K (read as stored: an m-contiguous tile), B row m = the input pixel each
//       column's tap (r, s, c..) meets from output pixel m (zeros outside; each thread's column is fixed, its
//       pixels decoded once and stepped BK pixels per tile).  Grid (ceil(K/BM), ceil(RSC/BN), splits); conv2d.cu's
//       conv2d_wgrad_finish_f32 combines the splits.
//       Configurations: CONV_TC_NHWC_CONFIGS, X(BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS): 128x128
//       (4 warps of 64 x 64, 4 stages, two blocks per SM), 128x64 (4 warps of 64 x 32), 64x64 (4 warps of
//       32 x 32); dynamic shared memory STAGES x (A + B tiles) (dlgpu/cuda/conv2d.py: nhwc_shared_bytes).
//       Grid (ceil(rows/BM), ceil(columns/BN)[, splits]).
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM, from the sm_90a bf16 build (NVRTC 13.5; per warp per k-tile
// of 32 channels of the main loop's SASS; the H100 figures as in gemm_tc.cu's header):
//   NCHW fwd 128x64     126 registers (4 blocks per SM), 397 instructions per 16 HMMA (a k-tile of 16 taps: 24
//                       scalar LDG, 16 LDS.64 of the tap table, 24 F2FP conversions, 2 stages; 621 while every
//                       gathered element divided twice): still issue-bound, ~0.15-0.45x cuDNN (issue 16's
//                       0.1-0.3x at 621, scaled); kept for fp32 NCHW arrays at the tensor-core precisions.
//   NCHW dgrad 128x64   168 registers (3 blocks per SM; 4 before: 16 masked y loads in flight beside grad_y's,
//                       without them it fits 128), 898 per 16 HMMA (3038 with two fast_div and, at any stride,
//                       two integer divisions per element; the 2 MUFU left are the table's, 16 threads per tile).
//   NCHW wgrad 128x64   168 registers (3 blocks, its launch bound), 874 per 16 HMMA (1444 with a fast_div per A
//                       element and four per B element).
//   NHWC fwd 128x128    228 registers, two blocks (8 warps) per SM, no spills, no local memory; 289 instructions
//                       per 64 HMMA.16816 (16 LDSM.x4, 8 LDGSTS, ~200 integer): issue 74 % of the mma.sync
//                       rate's slots; shared memory 32 KB cp.async + 64 KB ldmatrix per k-tile per SM, ~123
//                       B/clock, at the 128 B/clock port; L2 -> SM 32 KB per 512 HMMA (64 FLOP per byte):
//                       355-450 TFLOP/s at 5.5-7 TB/s, the likely limit.  128x64 (K = 64): 168 registers, 201
//                       per 32 HMMA.
//   NHWC dgrad 128x128  246 registers, 520 instructions per 64 HMMA (684 while the per-row, per-tap stride test
//                       divided: 8 I2F / MUFU.RCP / F2I per k-tile; now stepped, none), counting the per-tap
//                       section at every k-tile though it runs once per K / 32: issue-bound at ~75 % of the
//                       mma.sync rate or better.
//   NHWC wgrad 128x128  240 registers, 357 per 64 HMMA (430 with two fast_div per gathered pixel; now stepped):
//                       91 % of the issue slots at the full mma.sync rate.
// => forward on ResNet-50's 3x3 layers in channels_last, bf16/fp16: 250-400 TFLOP/s where C, K >= 128 (0.45-0.7x
// cuDNN), less at C = K = 64 (a 128x64 tile and 18 k-tiles: 4-stage prologue and epilogue weigh more), so issue
// 16's 0.6x is within reach on the larger layers only; dgrad ~0.4-0.6x, its divisions gone.  The GPU run
// confirms or refutes this.
// Other rows (ratios to cuDNN on the same storage; dlgpu/cases/conv2d.py holds each range):
//   NHWC tf32 forward   m16n8k8 tf32: half the FLOPs per HMMA for the same bytes per k-tile, as cuDNN's tf32 is
//                       half its bf16 rate: 0.4-0.7x on the 3x3 layers, 0.3-0.55x for 7x7x512 at batch 32 (52
//                       tiles, short waves).
//   NHWC bf16 wgrad     91 % of the issue slots at the mma.sync rate, itself ~2/3 of what wgmma gives cuDNN's
//                       kernels on Hopper: 0.35-0.65x.
//   conv1 (C = 3)       channels padded to 8 for the tensor cores (8/3 of the useful products), stride 2, a
//                       7x7 filter: 0.2-0.5x in NHWC (forward, dgrad; 16-bit and tf32); NCHW fp32 at tf32
//                       0.25-0.7x (cuDNN pads too).
//   NCHW fp32 arrays    at tf32: 1x1 (the 1x1 path never divided, 256 channels of reduction) 0.65-1.0x; LeNet's
//                       layers are microseconds on both sides, launch-bound: 0.4-1.5x.  At bf16 the same NCHW
//                       kernels (fp32 read and rounded in the loop) against cuDNN's bf16, about twice its tf32:
//                       0.15-0.35x on the 3x3 layers (0.1-0.3x 7x7x512 at batch 32), conv1 0.2-0.45x, 1x1
//                       0.35-0.7x.
//   16-bit NCHW arrays  the NHWC wgmma forward (kernels/conv2d_wgmma.cu: 0.45-0.9x) plus a transposing copy of x
//                       in and of y out, 25-40 % more time at 28x28x128 and 7x7x512: 0.35-0.7x.
//
// dlgpu-build: CONV_TC_PRECISION=tf32
// dlgpu-build: CONV_TC_PRECISION=bf16
// dlgpu-build: CONV_TC_PRECISION=fp16
// dlgpu-sass: conv2d_fwd_tc_*_f32 HMMA !LDL !STL
// dlgpu-sass: conv2d_dgrad_tc_*_f32 HMMA !LDL !STL
// dlgpu-sass: conv2d_wgrad_tc_*_f32 HMMA !LDL !STL
// dlgpu-sass: conv2d_fwd_tc_*_nhwc HMMA LDSM LDGSTS !LDL !STL
// dlgpu-sass: conv2d_dgrad_tc_*_nhwc HMMA LDSM LDGSTS !LDL !STL
// dlgpu-sass: conv2d_wgrad_tc_*_nhwc HMMA LDGSTS !LDL !STL

#include "common.cuh"
#include "conv2d_common.cuh"
#include "mainloop.cuh"
#include "ptx.cuh"
#include "tc_tile.cuh"

#ifndef CONV_TC_PRECISION
#error "conv2d_tc.cu is built with -DCONV_TC_PRECISION=tf32, bf16 or fp16 (a ptx::Precision)"
#endif
constexpr ptx::Precision TC_PRECISION = ptx::Precision::CONV_TC_PRECISION;

#define CONV_TC_BK 16
#define CONV_TC_PAD 4
#define CONV_TC_TAP_BYTES 16  // an Ops::ATap's slot in the A tap table (conv2d_common.cuh)

// The tile configurations, widest first: X(BM, BN, THREADS, WARPS_M, WARPS_N, WGRAD_MIN_BLOCKS), THREADS =
// 32 * WARPS_M * WARPS_N, warp tiles (BM / WARPS_M) x (BN / WARPS_N); the wgrad kernel's blocks per SM, which
// bounds its registers (left alone, ptxas gives the 64x32 one 128: 8 blocks, where 96 hold it without spills).
// dlgpu/cuda/conv2d.py reads this list.
#define CONV_TC_CONFIGS(X)      \
    X(128, 64, 128, 2, 2, 3)    \
    X(64, 32, 64, 2, 1, 10)

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
    unsigned char* const tap_table = reinterpret_cast<unsigned char*>(b_tiles + 2 * BN * ST);  // [2][BK] slots

    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int t = threadIdx.x, warp = t / 32, lane = t % 32;
    const int wm0 = (warp / WARPS_N) * MT * 16, wn0 = (warp % WARPS_N) * NT * 8;

    // ---- loader state: thread t gathers every tap of rows t, t + THREADS, ...  What a tap means to every row
    // (Ops::ATap: offsets, the tap's (dh, dw)) is decoded once per tile for the block, by threads 0 .. BK - 1,
    // into slot tile % 2 of a table in shared memory: while every thread reads tile t's entries, tile t + 1's
    // are written into the other slot, published by the barrier that closes the iteration.
    // (Ops::kTapTable false: A read by index, which divides nothing there.)
    const auto tap_slot = [&](int tile, int kk) {
        using ATap = typename Ops::ATap;
        static_assert(sizeof(ATap) <= CONV_TC_TAP_BYTES && CONV_TC_TAP_BYTES % alignof(ATap) == 0, "table slots");
        return reinterpret_cast<ATap*>(tap_table + ((tile % 2) * BK + kk) * CONV_TC_TAP_BYTES);
    };
    const auto decode_taps = [&](int tile) {
        if constexpr (Ops::kTapTable)
            if (t < BK) *tap_slot(tile, t) = ops.a_tap(shape.RED_BEGIN + tile * BK + t);
    };
    typename Ops::Row rows[A_ROWS];
    DLGPU_UNROLL
    for (int i = 0; i < A_ROWS; ++i) rows[i] = ops.row(m0 + t + i * THREADS);
    float a_held[A_ROWS][BK];
    auto gather_b = make_gather_b<BK, BN, THREADS>(ops, shape, n0);
    decode_taps(0);
    if constexpr (Ops::kTapTable) __syncthreads();

    float acc[MT][NT][4];
    zero(acc);

    // ---- two stages filled through registers: tile t + 1's gathers are in flight during tile t's mma
    k_tile_pipeline<2, false, false>(
        shape.tiles<BK>(),
        [&](int tile, int) {
            const int k0 = shape.RED_BEGIN + tile * BK;
            DLGPU_UNROLL
            for (int kk = 0; kk < BK; ++kk) {
                if constexpr (Ops::kTapTable) {
                    const auto tap = *tap_slot(tile, kk);
                    DLGPU_UNROLL
                    for (int i = 0; i < A_ROWS; ++i) a_held[i][kk] = ops.a_at(rows[i], tap, k0 + kk < shape.RED);
                } else {
                    DLGPU_UNROLL
                    for (int i = 0; i < A_ROWS; ++i)
                        a_held[i][kk] = k0 + kk < shape.RED ? ops.a(rows[i], k0 + kk) : 0.0f;
                }
            }
            gather_b.issue(ops, shape, k0, n0);
            decode_taps(tile + 1);
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
#define CONV_TC_WGRAD_KERNEL(BM, BN, THREADS, WARPS_M, WARPS_N, MIN_BLOCKS)                                   \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS)                                      \
        conv2d_wgrad_tc_##BM##x##BN##_f32(WGRAD_PARAMS)                                                    \
    {                                                                                                      \
        const ConvGeometry geo = CONV_GEOMETRY;                                                            \
        float* const out = partial + (long long)blockIdx.z * K * C * R * S;                                \
        tc_implicit_gemm<BM, BN, THREADS, WARPS_M, WARPS_N>(                                               \
            wgrad_ops(grad_y, y, x, geo, flags), wgrad_shape(geo, blockIdx.z * pixels_per_split, pixels_per_split), \
            out, out, 0);                                                                                  \
    }
#define CONV_TC_KERNELS(BM, BN, THREADS, WARPS_M, WARPS_N, WGRAD_MIN_BLOCKS)            \
    CONV_PASS_KERNELS(tc, tc_implicit_gemm, BM, BN, THREADS, WARPS_M, WARPS_N)          \
    CONV_TC_WGRAD_KERNEL(BM, BN, THREADS, WARPS_M, WARPS_N, WGRAD_MIN_BLOCKS)
CONV_TC_CONFIGS(CONV_TC_KERNELS)

// ================================================================ NHWC: operands in their storage, by cp.async
using TcElement = ptx::Operand<TC_PRECISION>::type;

// The tile configurations, widest first: X(BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS), as
// gemm_tc.cu's.  dlgpu/cuda/conv2d.py reads this list.
#define CONV_TC_NHWC_CONFIGS(X)      \
    X(128, 128, 128, 2, 2, 4, 2)     \
    X(128, 64, 128, 2, 2, 4, 2)      \
    X(64, 64, 128, 2, 2, 4, 2)

// Where a pass's reduction stands: tap (r, s) outer, the block of BK channels from c0 inner.  The issuing
// thread steps it after each tile: k_tile_pipeline issues the tiles once each, in order.
struct TapStep {
    int r, s, c0;
    __device__ __forceinline__ TapStep() : r(0), s(0), c0(0) {}
    template <int BK> __device__ __forceinline__ void next(int S, int channels)
    {
        c0 += BK;
        if (c0 >= channels) {
            c0 = 0;
            if (++s == S) {
                s = 0;
                ++r;
            }
        }
    }
};

template <int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, int STAGES, bool kKContigB>
using NhwcLoop = TcMainloop<TC_PRECISION, BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, true, kKContigB>;

// ---------------------------------------------------------------- forward
// A k-contiguous tile has 4 chunks per row: thread tid copies chunk tid % 4 of rows tid / 4 + i * THREADS / 4
// (tc_tile.cuh's chunk ownership), of A (pixels) and of B (output channels) alike.
template <int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, int STAGES>
__device__ __forceinline__ void nhwc_forward(const TcElement* x, const TcElement* w, const float* bias, void* y,
                                             const ConvGeometry& g, int flags)
{
    using Loop = NhwcLoop<BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, true>;
    constexpr int BK = Loop::Op::kBK, CH = Loop::Op::kChunk, STEP = THREADS / 4;
    constexpr int A_ROWS = BM / STEP, B_ROWS = BN / STEP;
    static_assert(BM % STEP == 0 && BN % STEP == 0, "every thread copies whole rows' chunks");
    extern __shared__ float4 nhwc_shared[];
    const Loop loop(reinterpret_cast<unsigned char*>(nhwc_shared));
    const int M = g.N * g.P * g.Q, m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int chunk = threadIdx.x % 4, first = threadIdx.x / 4;

    // ---- each A row (output pixel): the element offset of its receptive field's corner, and the corner
    long long corner[A_ROWS];
    int h0[A_ROWS], w0[A_ROWS];
    DLGPU_UNROLL
    for (int i = 0; i < A_ROWS; ++i) {
        nhwc_corner(g, m0 + first + i * STEP, M, h0[i], w0[i], corner[i]);
    }
    const long long filter = (long long)g.R * g.S * g.C;

    float acc[Loop::MT][Loop::NT][4];
    zero(acc);
    TapStep step;
    loop.run(acc, g.R * g.S * ((g.C + BK - 1) / BK), [&](int, unsigned char* a_tile, unsigned char* b_tile) {
        const int dh = step.r * g.dil_h, dw = step.s * g.dil_w, c = step.c0 + chunk * CH;
        const bool channel_ok = c < g.C;
        const long long tap = ((long long)dh * g.W + dw) * g.C + c;
        DLGPU_UNROLL
        for (int i = 0; i < A_ROWS; ++i) {
            const bool ok =
                channel_ok && (unsigned)(h0[i] + dh) < (unsigned)g.H && (unsigned)(w0[i] + dw) < (unsigned)g.W;
            ptx::cp_async_16(a_tile + Loop::TileA::offset(first + i * STEP, chunk), ok ? x + (corner[i] + tap) : x,
                             ok ? 16u : 0u);
        }
        const long long filter_tap = (long long)(step.r * g.S + step.s) * g.C + c;
        DLGPU_UNROLL
        for (int i = 0; i < B_ROWS; ++i) {
            const int k = n0 + first + i * STEP;
            const bool ok = channel_ok && k < g.K;
            ptx::cp_async_16(b_tile + Loop::TileB::offset(first + i * STEP, chunk),
                             ok ? w + ((long long)k * filter + filter_tap) : w, ok ? 16u : 0u);
        }
        step.template next<BK>(g.S, g.C);
    });
    loop.store_to(acc, y, (flags & CONV_STORE_HALF) != 0, g.K, m0, n0, M, g.K, bias, flags);
}

// ---------------------------------------------------------------- dgrad
// A (k-contiguous) as in the forward; B is stored n-contiguous (rows of output channels k, columns c): a row of
// BN / CH chunks, thread tid copying chunks tid + i * THREADS.
template <int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, int STAGES>
__device__ __forceinline__ void nhwc_dgrad(const TcElement* grad_y, const TcElement* w, void* grad_x,
                                           const ConvGeometry& g, int flags, unsigned hw_mul, unsigned hw_shift,
                                           unsigned w_mul, unsigned w_shift)
{
    using Loop = NhwcLoop<BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, false>;
    using TileB = typename Loop::TileB;
    constexpr int BK = Loop::Op::kBK, CH = Loop::Op::kChunk, STEP = THREADS / 4;
    constexpr int A_ROWS = BM / STEP, B_CHUNKS = TileB::kChunks / THREADS;
    static_assert(BM % STEP == 0 && TileB::kChunks % THREADS == 0, "every thread copies whole chunks");
    extern __shared__ float4 nhwc_shared[];
    const Loop loop(reinterpret_cast<unsigned char*>(nhwc_shared));
    const int M = g.N * g.H * g.W, m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int chunk = threadIdx.x % 4, first = threadIdx.x / 4;

    // ---- each A row (input pixel): its image in grad_y, and (h + ph - r*dh, w + pw - s*dw) divided by the
    // strides at the current tap (Strided), stepped from tap to tap; per tap, the offset it reads.  The
    // divisions run once per thread, before the loop.
    const Strided down = Strided::of(g.dil_h, g.stride_h), right = Strided::of(g.dil_w, g.stride_w);
    const Strided rewind = Strided::of((g.S - 1) * g.dil_w, g.stride_w);  // tap s = S - 1 back to s = 0
    long long image[A_ROWS], at[A_ROWS];
    Strided hr[A_ROWS], wr[A_ROWS];
    bool valid[A_ROWS];
    DLGPU_UNROLL
    for (int i = 0; i < A_ROWS; ++i) {
        const int m = m0 + first + i * STEP;
        const int n = fast_div(m, hw_mul, hw_shift);
        const int hw = m - n * g.H * g.W;
        const int h = fast_div(hw, w_mul, w_shift);
        image[i] = (long long)n * g.P * g.Q * g.K;
        // quot -1: no tap of a row past the last pixel is inside the output (quot only decreases)
        hr[i] = m < M ? Strided::of(h + g.pad_h, g.stride_h) : Strided{-1, 0};
        wr[i] = Strided::of(hw - h * g.W + g.pad_w, g.stride_w);
        at[i] = 0;
        valid[i] = false;
    }

    float acc[Loop::MT][Loop::NT][4];
    zero(acc);
    TapStep step;
    loop.run(acc, g.R * g.S * ((g.K + BK - 1) / BK), [&](int tile, unsigned char* a_tile, unsigned char* b_tile) {
        if (step.c0 == 0) {
            // A new tap: which output pixel each row meets.  After the first, the tap is (r, s + 1) or, with s
            // back at 0, (r + 1, 0): step the quotients and remainders the same way.
            DLGPU_UNROLL
            for (int i = 0; i < A_ROWS; ++i) {
                if (tile > 0) {
                    if (step.s == 0) {
                        hr[i].subtract(down, g.stride_h);
                        wr[i].add(rewind, g.stride_w);
                    } else {
                        wr[i].subtract(right, g.stride_w);
                    }
                }
                valid[i] = hr[i].rem == 0 && wr[i].rem == 0 && (unsigned)hr[i].quot < (unsigned)g.P &&
                           (unsigned)wr[i].quot < (unsigned)g.Q;
                at[i] = image[i] + ((long long)hr[i].quot * g.Q + wr[i].quot) * g.K;
            }
        }
        const int k = step.c0 + chunk * CH;
        DLGPU_UNROLL
        for (int i = 0; i < A_ROWS; ++i) {
            const bool ok = valid[i] && k < g.K;
            ptx::cp_async_16(a_tile + Loop::TileA::offset(first + i * STEP, chunk), ok ? grad_y + (at[i] + k) : grad_y,
                             ok ? 16u : 0u);
        }
        DLGPU_UNROLL
        for (int i = 0; i < B_CHUNKS; ++i) {
            const int index = threadIdx.x + i * THREADS;
            const int row = index / TileB::kChunksPerRow, col = index % TileB::kChunksPerRow;
            const int kk = step.c0 + row, c = n0 + col * CH;
            const bool ok = kk < g.K && c < g.C;
            const long long offset = (((long long)kk * g.R + step.r) * g.S + step.s) * g.C + c;
            ptx::cp_async_16(b_tile + TileB::offset(row, col), ok ? w + offset : w, ok ? 16u : 0u);
        }
        step.template next<BK>(g.S, g.K);
    });
    loop.store_to(acc, grad_x, (flags & CONV_STORE_HALF) != 0, g.C, m0, n0, M, g.C, nullptr, 0);
}

// ---------------------------------------------------------------- wgrad
// Rows are output channels k, columns taps (r, s, c), the reduction runs over output pixels.  A is grad_y as
// stored (pixels x K: an m-contiguous tile, MatrixLoader); B's tile is BK pixels x BN taps, n-contiguous, and
// since THREADS is a multiple of its chunks per row, each thread copies one fixed column chunk (one tap, CH
// channels) of several pixels.
template <int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, int STAGES>
__device__ __forceinline__ void nhwc_wgrad(const TcElement* grad_y, const TcElement* x, float* out,
                                           const ConvGeometry& g, int begin, int end)
{
    using Loop = TcMainloop<TC_PRECISION, BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, false, false>;
    using TileB = typename Loop::TileB;
    constexpr int BK = Loop::Op::kBK, CH = Loop::Op::kChunk;
    constexpr int PER_ROW = TileB::kChunksPerRow, ROW_STEP = THREADS / PER_ROW, B_ROWS = BK / ROW_STEP;
    static_assert(THREADS % PER_ROW == 0 && BK % ROW_STEP == 0, "each thread copies one column chunk");
    extern __shared__ float4 nhwc_shared[];
    const Loop loop(reinterpret_cast<unsigned char*>(nhwc_shared));
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int taps = g.R * g.S * g.C;
    const MatrixLoader<typename Loop::TileA, THREADS> load_a{grad_y, end, g.K, g.K};

    // ---- this thread's column chunk: tap (r, s) and channels c.., once
    const int column = n0 + (threadIdx.x % PER_ROW) * CH, first = threadIdx.x / PER_ROW;
    const bool column_ok = column < taps;
    const int rs = column / g.C, c = column - rs * g.C;
    const int r = fast_div(rs, g.s_mul, g.s_shift), s = rs - r * g.S;
    const int h_tap = r * g.dil_h - g.pad_h, w_tap = s * g.dil_w - g.pad_w;

    // ---- this thread's B rows, pixels m = begin + tile * BK + row: the input pixel (h, w) that the column's tap
    // meets from m, and its element offset in x, decoded once here and then stepped by BK pixels per tile
    // (BK = bn * P*Q + bp * Q + bq: at most one carry from q into p and one from p into n) instead of divided
    const int bn = fast_div(BK, g.pq_mul, g.pq_shift), b_pq = BK - bn * g.P * g.Q;
    const int bp = fast_div(b_pq, g.q_mul, g.q_shift), bq = b_pq - bp * g.Q;
    const int w_step = bq * g.stride_w, w_end = g.Q * g.stride_w + w_tap;  // w past the last q's: carry
    const int h_step = bp * g.stride_h, h_end = g.P * g.stride_h + h_tap;  // h past the last p's: carry
    const long long row_elements = (long long)g.W * g.C, image_elements = g.H * row_elements;
    const long long step_offset = bn * image_elements + h_step * row_elements + (long long)w_step * g.C;
    const long long q_carry = g.stride_h * row_elements - (long long)g.Q * g.stride_w * g.C;  // q -= Q, ++p
    const long long p_carry = image_elements - g.P * g.stride_h * row_elements;              // p -= P, ++n
    int hb[B_ROWS], wb[B_ROWS];
    long long offset[B_ROWS];
    DLGPU_UNROLL
    for (int i = 0; i < B_ROWS; ++i) {
        const int m = begin + first + i * ROW_STEP;
        const int n = fast_div(m, g.pq_mul, g.pq_shift), pq = m - n * g.P * g.Q;
        const int p = fast_div(pq, g.q_mul, g.q_shift);
        hb[i] = p * g.stride_h + h_tap;
        wb[i] = (pq - p * g.Q) * g.stride_w + w_tap;
        offset[i] = n * image_elements + hb[i] * row_elements + (long long)wb[i] * g.C + c;
    }

    float acc[Loop::MT][Loop::NT][4];
    zero(acc);
    loop.run(acc, (end - begin + BK - 1) / BK, [&](int tile, unsigned char* a_tile, unsigned char* b_tile) {
        const int pixel0 = begin + tile * BK;
        load_a.issue(a_tile, pixel0, m0);
        DLGPU_UNROLL
        for (int i = 0; i < B_ROWS; ++i) {
            const int row = first + i * ROW_STEP;
            const bool ok =
                column_ok && pixel0 + row < end && (unsigned)hb[i] < (unsigned)g.H && (unsigned)wb[i] < (unsigned)g.W;
            ptx::cp_async_16(b_tile + TileB::offset(row, threadIdx.x % PER_ROW), ok ? x + offset[i] : x,
                             ok ? 16u : 0u);
            // the next tile's pixel
            wb[i] += w_step;
            hb[i] += h_step;
            offset[i] += step_offset;
            if (wb[i] >= w_end) {
                wb[i] -= g.Q * g.stride_w;
                hb[i] += g.stride_h;
                offset[i] += q_carry;
            }
            if (hb[i] >= h_end) {
                hb[i] -= g.P * g.stride_h;
                offset[i] += p_carry;
            }
        }
    });
    loop.store_to(acc, out, false, taps, m0, n0, g.K, taps, nullptr, 0);
}

// ---------------------------------------------------------------- named instances
#define CONV_TC_NHWC_KERNELS(BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS)                                \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) conv2d_fwd_tc_##BM##x##BN##_nhwc(            \
        const TcElement* x, const TcElement* w, const float* bias, void* y, CONV_GEOMETRY_PARAMS, int flags)       \
    {                                                                                                             \
        const ConvGeometry geo = CONV_GEOMETRY;                                                                   \
        nhwc_forward<BM, BN, THREADS, WARPS_M, WARPS_N, STAGES>(x, w, bias, y, geo, flags);            \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) conv2d_dgrad_tc_##BM##x##BN##_nhwc(          \
        const TcElement* grad_y, const TcElement* w, void* grad_x, CONV_GEOMETRY_PARAMS, int flags, unsigned hw_mul, \
        unsigned hw_shift, unsigned w_mul, unsigned w_shift)                                                      \
    {                                                                                                             \
        const ConvGeometry geo = CONV_GEOMETRY;                                                                   \
        nhwc_dgrad<BM, BN, THREADS, WARPS_M, WARPS_N, STAGES>(grad_y, w, grad_x, geo, flags, hw_mul,   \
                                                                         hw_shift, w_mul, w_shift);               \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) conv2d_wgrad_tc_##BM##x##BN##_nhwc(          \
        const TcElement* grad_y, const TcElement* x, float* partial, CONV_GEOMETRY_PARAMS, int flags,              \
        int pixels_per_split)                                                                                     \
    {                                                                                                             \
        const ConvGeometry geo = CONV_GEOMETRY;                                                                   \
        const int pixels = N * P * Q, begin = blockIdx.z * pixels_per_split;                                      \
        const int end = pixels - begin < pixels_per_split ? pixels : begin + pixels_per_split;                    \
        nhwc_wgrad<BM, BN, THREADS, WARPS_M, WARPS_N, STAGES>(                                          \
            grad_y, x, partial + (long long)blockIdx.z * K * R * S * C, geo, begin, end);                         \
    }
CONV_TC_NHWC_CONFIGS(CONV_TC_NHWC_KERNELS)
