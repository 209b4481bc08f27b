// kernels/conv2d.cu -- 2-D convolution (cross-correlation, like PyTorch) in exact fp32: forward,
// backward data (dgrad) and backward weights (wgrad).
//
// x (N, C, H, W) NCHW, w (K, C, R, S) OIHW, y (N, K, P, Q); P = (H + 2ph - dh(R-1) - 1)/sh + 1.
// Every kernel takes CONV_GEOMETRY_PARAMS (conv2d_common.cuh) and `flags`: EPILOGUE_BIAS,
// EPILOGUE_RELU (forward epilogue, common.cuh), CONV_MASK (backward: grad_y masked by y > 0 as it
// is loaded).  Pointers a kernel does not read under its flags (bias, y) must still be valid.
// Every summation runs in a fixed order: same inputs and launch, same bits.  The launcher (dlgpu/cuda/conv2d.py) asserts
// C*H*W, K*P*Q and K*C*R*S < 2^31 (32-bit offsets inside one image or filter).
//
// ---- naive: one thread per output element, any shape; the GPU-side oracle
//   conv2d_fwd_naive_f32(x, w, bias, y, geometry, flags)
//       grid-stride over the N*K*P*Q outputs; y = epilogue(sum over c, r, s), c outer.
//   conv2d_dgrad_naive_f32(grad_y, y, w, grad_x, geometry, flags)
//       grid-stride over the N*C*H*W inputs; each gathers the (k, r, s) taps whose stride
//       arithmetic lands on it (h + ph - r*dh divisible by sh), k outer: no atomics.
//   conv2d_wgrad_naive_f32(grad_y, y, x, grad_w, geometry, flags)
//       grid-stride over the K*C*R*S filter elements; each sums over n, p, q in that order.
//
// ---- simt: implicit GEMM on CUDA cores, never an im2col buffer
//   One main loop (simt_implicit_gemm) and an operand policy per kernel: block tile BM rows x BN
//   columns x 8 reduction steps, thread tile TM x TN as 4 x 4 quadrants (float4 shared loads), two
//   shared stages filled through registers so that the next tile's loads are in flight during the
//   math.  Configurations: CONV_SIMT_CONFIGS below (128x128: 256 threads of 8x8, 128x64: 128 of
//   8x8, 128x32: 128 of 8x4); grid (ceil(M/BM), ceil(COLS/BN)).  Output stores are float4 along
//   the rows when the output plane (P*Q or H*W) % 4 == 0 and the output is 16-byte aligned.
//   conv2d_fwd_simt_<BM>x<BN>_f32(x, w, bias, y, geometry, flags)
//       y = A (M = N*P*Q pixels, C*R*S taps) x B (taps, K): A gathered from x on the fly
//       (InputGather: one (n, p, q) division per thread, a fast (c, r, s) division per element,
//       zeros in the padding), B = w as stored (row k of w is column k of B).
//   conv2d_fwd_simt_<BM>x<BN>_1x1_f32: the same for 1x1 filters with stride 1 and no padding
//       (A is x itself, read in place: no tap decomposition, no bounds tests but the last pixel).
//   conv2d_dgrad_simt_<BM>x<BN>_f32(grad_y, y, w, grad_x, geometry, flags, hw_mul, hw_shift,
//                                   w_mul, w_shift)
//       grad_x = A (N*H*W input pixels, K*R*S) x B (K*R*S, C): A(m, (k, r, s)) = grad_y at the
//       output pixel that tap (r, s) of (h, w) reaches when the stride divides exactly (else 0;
//       no atomics: every input pixel is one row), masked by y > 0 under CONV_MASK; B = w.
//       (hw_mul, hw_shift), (w_mul, w_shift): fast divisors for H*W and W.
//   conv2d_wgrad_simt_f32(grad_y, y, x, partial, geometry, flags, pixels_per_split)
//       grad_w as the product G^T (K, M) x A (M, C*R*S), G = grad_y viewed (M, K) masked by
//       CONV_MASK.  Block tile 64 output channels x 64 taps, 256 threads of 4 x 4, reduction
//       steps of 8 pixels.  Grid (ceil(CRS/64), ceil(K/64), splits): block z sums pixels
//       [z*pixels_per_split, +pixels_per_split) into partial[z] (K x C*R*S); pixels_per_split is
//       a multiple of 8.  With one split, partial is grad_w itself.
//   conv2d_wgrad_finish_f32(partial, grad_w, splits, count)
//       grad_w[i] = sum over z = 0, 1, ... of partial[z*count + i]: the fixed-order second pass
//       that makes the split reduction deterministic (no float atomics).
//
// Predicted rate of simt (NOT YET RUN ON A GPU), H100 SXM (132 SMs at ~1.75 GHz: 59 TFLOP/s of FFMA; one warp
// instruction issued per clock per sub-partition, so every non-FFMA instruction of the loop takes an FFMA's
// slot), from the sm_90a build (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a conv2d`), against cuDNN through
// PyTorch at ieee (TF32 off), which is taken to reach 35-45 TFLOP/s on the ResNet-50 3x3 and 1x1 layers and
// 25-40 on conv1 and the 7x7 ones.  Main loop per warp per k-tile of 8 (static counts; the dgrad loops include
// the strided path's divisions, which stride 1 skips, so their dynamic share of FFMA is higher):
//   fwd 128x128   127 registers, 2 blocks (16 warps) per SM: 710 instructions per 512 FFMA (72 %)
//   fwd 128x64    127 registers, 4 blocks (16 warps): 811 per 512 (63 %); the 1x1 form 702 (73 %)
//   fwd 128x32    79 registers, 6 blocks (24 warps): 534 per 256 (48 %)
//   dgrad         128x128 1328 per 512, 128x64 2045 per 512, 128x32 1746 per 256 (8-16 MUFU.RCP: the stride
//                 test); at stride 1 roughly 750-900, 850-1100 and 650-900 run
//   wgrad         61 registers, 4 blocks of 256 (32 warps): 301 per 128 FFMA (43 %), 15-25 TFLOP/s; then
//                 conv2d_wgrad_finish_f32 reads the 13-19 MB of partial sums once (~5-10 us)
// The tiles the launcher picks (132 SMs) and what they cost, by layer:
//   conv1         fwd 128x64, 3136 blocks (5.9 waves), 147 taps in 19 k-tiles: 22-32 TFLOP/s.  dgrad 128x32 on
//                 C = 3 (3 of 32 columns) and stride 2 (3 of 4 terms of its K*R*S = 3136 reduction are zeros):
//                 ~40x the useful FFMA, ~30-40 ms.  wgrad 1026 blocks, 147 of 192 tap columns.
//   3x3-64        fwd and dgrad 128x64, 784 blocks (1.5 waves of 528); wgrad 1026 blocks (1.9 waves)
//   3x3-128       fwd and dgrad 128x128, 196 blocks: 64 SMs run two, 68 one (~75-80 % of the device)
//   1x1-256       fwd 128x64 1x1 (784 blocks, 32 k-tiles; x's 103 MB read in ~35 us under ~120 us of math);
//                 dgrad 128x128, 1568 blocks but 8 k-tiles each (prologue and epilogue ~25 %); wgrad 784 blocks
//   512 b32       fwd and dgrad 128x32, 208 blocks of 4 warps (1-2 per SM), 576 k-tiles; wgrad 1152 (2.2 waves)
//   512 b128      fwd and dgrad 128x128, 196 blocks, 576 k-tiles; wgrad 1152 blocks
//   lenet c1, c3  microsecond kernels: 6 and 16 of a 32-wide tile's columns, 4 and 19 k-tiles; dgrad 1 and 6
//                 of 32 columns (1568 / 392 blocks); wgrad 6-16 of 64 rows.  Launch-scale on both sides.
// => against cuDNN (ratio, ieee):
//   forward       conv1 0.5-1.0, 3x3-64 0.5-0.85, 3x3-128 0.45-0.75, 1x1-256 0.5-0.9, 512 b32 0.3-0.8,
//                 512 b128 0.5-0.8, lenet c1 0.3-1.2, c3 0.4-1.5
//   bias+relu     the baseline adds a bias pass and a ReLU pass (4 bytes x 4 per output): conv1 0.8-1.6,
//                 3x3-64 0.55-0.95, 3x3-128 0.5-0.85, 1x1-256 0.7-1.2, 512 b32 0.35-0.85, 512 b128 0.5-0.8,
//                 lenet 0.5-2.0
//   dgrad         conv1 0.005-0.05, 3x3-64 and 3x3-128 0.4-0.7, 1x1-256 0.45-0.8, 512 b32 0.2-0.5, 512 b128
//                 0.4-0.7, lenet c1 0.08-0.3, c3 0.08-0.35
//   wgrad         conv1 0.4-1.0, 3x3 and 1x1 layers 0.3-0.7, lenet 0.2-1.0
// The ranges are wide where the baseline is the unknown (cuDNN's FP32 algorithms on H100, the lenet layers'
// launch costs); the SASS side is the narrower half.  conv1's dgrad wants its own plan (C = 3, stride 2).
//
// dlgpu-sass: conv2d_fwd_simt_* FFMA LDS.128 !LDL !STL
// dlgpu-sass: conv2d_dgrad_simt_* FFMA LDS.128 !LDL !STL
// dlgpu-sass: conv2d_wgrad_simt_f32 FFMA LDS.128 !LDL !STL

#include "common.cuh"
#include "conv2d_common.cuh"

// ---------------------------------------------------------------- naive

extern "C" __global__ void conv2d_fwd_naive_f32(const float* x, const float* w, const float* bias, float* y,
                                                CONV_GEOMETRY_PARAMS, int flags)
{
    const long long total = (long long)N * K * P * Q;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int q = (int)(i % Q), p = (int)(i / Q % P), k = (int)(i / ((long long)P * Q) % K);
        const long long n = i / ((long long)K * P * Q);
        float acc = 0.0f;
        for (int c = 0; c < C; ++c) {
            const float* plane = x + (n * C + c) * H * W;
            const float* taps = w + ((long long)k * C + c) * R * S;
            for (int r = 0; r < R; ++r) {
                const int h = p * stride_h - pad_h + r * dil_h;
                if (h < 0 || h >= H) continue;
                for (int s = 0; s < S; ++s) {
                    const int col = q * stride_w - pad_w + s * dil_w;
                    if (col < 0 || col >= W) continue;
                    acc = fmaf(plane[h * W + col], taps[r * S + s], acc);
                }
            }
        }
        y[i] = epilogue(acc, k, bias, flags);
    }
}

extern "C" __global__ void conv2d_dgrad_naive_f32(const float* grad_y, const float* y, const float* w, float* grad_x,
                                                  CONV_GEOMETRY_PARAMS, int flags)
{
    const long long total = (long long)N * C * H * W;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int col = (int)(i % W), h = (int)(i / W % H), c = (int)(i / ((long long)H * W) % C);
        const long long n = i / ((long long)C * H * W);
        float acc = 0.0f;
        for (int k = 0; k < K; ++k) {
            const long long plane = (n * K + k) * P * Q;
            const float* taps = w + ((long long)k * C + c) * R * S;
            for (int r = 0; r < R; ++r) {
                // Output row p reads input row p*sh - ph + r*dh; this input row is read by tap r
                // only when that equation has an integer solution p in [0, P).
                const int ph = h + pad_h - r * dil_h;
                if (ph < 0 || ph % stride_h != 0) continue;
                const int p = ph / stride_h;
                if (p >= P) continue;
                for (int s = 0; s < S; ++s) {
                    const int qw = col + pad_w - s * dil_w;
                    if (qw < 0 || qw % stride_w != 0) continue;
                    const int q = qw / stride_w;
                    if (q >= Q) continue;
                    const long long at = plane + (long long)p * Q + q;
                    float g = grad_y[at];
                    if (flags & CONV_MASK) g = relu_mask(g, y[at]);
                    acc = fmaf(g, taps[r * S + s], acc);
                }
            }
        }
        grad_x[i] = acc;
    }
}

extern "C" __global__ void conv2d_wgrad_naive_f32(const float* grad_y, const float* y, const float* x, float* grad_w,
                                                  CONV_GEOMETRY_PARAMS, int flags)
{
    const long long total = (long long)K * C * R * S;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int s = (int)(i % S), r = (int)(i / S % R), c = (int)(i / ((long long)R * S) % C);
        const int k = (int)(i / ((long long)C * R * S));
        float acc = 0.0f;
        for (int n = 0; n < N; ++n) {
            const float* plane = x + ((long long)n * C + c) * H * W;
            const long long out_plane = ((long long)n * K + k) * P * Q;
            for (int p = 0; p < P; ++p) {
                const int h = p * stride_h - pad_h + r * dil_h;
                if (h < 0 || h >= H) continue;
                for (int q = 0; q < Q; ++q) {
                    const int col = q * stride_w - pad_w + s * dil_w;
                    if (col < 0 || col >= W) continue;
                    const long long at = out_plane + (long long)p * Q + q;
                    float g = grad_y[at];
                    if (flags & CONV_MASK) g = relu_mask(g, y[at]);
                    acc = fmaf(g, plane[h * W + col], acc);
                }
            }
        }
        grad_w[i] = acc;
    }
}

// ---------------------------------------------------------------- simt implicit GEMM
// The main loop for any problem of conv2d_common.cuh (GemmShape + an operand policy).

#define SIMT_BK 8
// Shared rows padded by one float4: rows stay 16-byte aligned, and the B tile's transposing
// stores (8 taps x 4 columns per warp) fall in distinct banks.
#define SIMT_PAD 4

// The tile configurations, widest first: X(BM, BN, THREADS, TM, TN), thread tiles TM x TN, so
// THREADS = (BM / TM) * (BN / TN).  dlgpu/cuda/conv2d.py reads this list.
#define CONV_SIMT_CONFIGS(X)     \
    X(128, 128, 256, 8, 8)       \
    X(128, 64, 128, 8, 8)        \
    X(128, 32, 128, 8, 4)

// Thread (tm, tn), tm = t % (BM/TM) fastest, owns rows {tm*4 + i} (and + BM/2 when TM = 8) and
// columns {tn*4 + j} (and + BN/2 when TN = 8): a warp's lanes cover consecutive row quads, so
// their float4 stores of one column are one contiguous run of the output plane.
template <int BM, int BN, int THREADS, int TM, int TN, class Ops>
__device__ __forceinline__ void simt_implicit_gemm(const Ops& ops, const GemmShape shape, float* out, const float* bias,
                                                   int flags)
{
    constexpr int BK = SIMT_BK;
    static_assert(THREADS == (BM / TM) * (BN / TN), "thread tiles cover the block tile");
    constexpr int SA = BM + SIMT_PAD, SB = BN + SIMT_PAD;
    static_assert(THREADS % BM == 0 && THREADS % BK == 0, "loader layout");
    constexpr int A_STEP = THREADS / BM;  // taps between one thread's A elements
    constexpr int A_PER = BK / A_STEP;    // A elements per thread per tile
    static_assert(TM == 4 || TM == 8, "TM");
    static_assert(TN == 4 || TN == 8, "TN");

    __shared__ alignas(16) float a_tiles[2][BK * SA];  // [tap][row]
    __shared__ alignas(16) float b_tiles[2][BK * SB];  // [tap][column]

    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int t = threadIdx.x;

    // ---- loader state, fixed for the whole reduction
    const int a_row = t % BM, a_tap = t / BM;
    const typename Ops::Row row = ops.row(m0 + a_row);
    float a_held[A_PER];
    GatherB<BK, BN, THREADS> gather_b;

    const int tm = t % (BM / TM), tn = t / (BM / TM);
    float acc[TM][TN];
    zero(acc);

    // ---- two stages filled through registers: tile t + 1's loads are in flight while tile t is multiplied
    k_tile_pipeline<2, false, false>(
        shape.tiles<BK>(),
        [&](int tile, int) {
            const int k0 = shape.RED_BEGIN + tile * BK;
            DLGPU_UNROLL
            for (int i = 0; i < A_PER; ++i) {
                const int kk = k0 + a_tap + i * A_STEP;
                a_held[i] = kk < shape.RED ? ops.a(row, kk) : 0.0f;
            }
            gather_b.issue(ops, shape, k0, n0);
        },
        [&](int stage) {
            DLGPU_UNROLL
            for (int i = 0; i < A_PER; ++i) a_tiles[stage][(a_tap + i * A_STEP) * SA + a_row] = a_held[i];
            gather_b.template store<SB, 1>(b_tiles[stage]);
        },
        [&](int stage) {
            fma_tile<BK, SA, SB, BM / 2, BN / 2>(acc, a_tiles[stage] + tm * 4, b_tiles[stage] + tn * 4);
        });

    // ---- epilogue: bias, ReLU; row quads are float4 runs of the output when PLANE % 4 == 0
    const bool vector_out = shape.PLANE % 4 == 0 && address_of(out) % 16 == 0;
    DLGPU_UNROLL
    for (int half = 0; half < TM / 4; ++half) {
        const int quad = m0 + tm * 4 + half * (BM / 2);
        if (quad >= shape.M) continue;
        if (vector_out) {
            // The quad starts at a multiple of 4, so all four rows are in image `img`.
            const int img = fast_div(quad, shape.plane_mul, shape.plane_shift);
            const int pix = quad - img * shape.PLANE;
            DLGPU_UNROLL
            for (int j = 0; j < TN; ++j) {
                const int col = n0 + tn * 4 + (j & 3) + (j >> 2) * (BN / 2);
                if (col >= shape.COLS) continue;
                float4 v;
                v.x = epilogue(acc[half * 4 + 0][j], col, bias, flags);
                v.y = epilogue(acc[half * 4 + 1][j], col, bias, flags);
                v.z = epilogue(acc[half * 4 + 2][j], col, bias, flags);
                v.w = epilogue(acc[half * 4 + 3][j], col, bias, flags);
                *reinterpret_cast<float4*>(out + ((long long)img * shape.COLS + col) * shape.PLANE + pix) = v;
            }
        } else {
            DLGPU_UNROLL
            for (int i = 0; i < 4; ++i) {
                const int m = quad + i;
                if (m >= shape.M) continue;
                const int img = fast_div(m, shape.plane_mul, shape.plane_shift);
                const int pix = m - img * shape.PLANE;
                DLGPU_UNROLL
                for (int j = 0; j < TN; ++j) {
                    const int col = n0 + tn * 4 + (j & 3) + (j >> 2) * (BN / 2);
                    if (col < shape.COLS)
                        out[((long long)img * shape.COLS + col) * shape.PLANE + pix] =
                            epilogue(acc[half * 4 + i][j], col, bias, flags);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- named simt instances
// Every configuration's forward, 1x1 forward and dgrad kernel (conv2d_common.cuh: CONV_PASS_KERNELS).
#define CONV_SIMT_KERNELS(...) CONV_PASS_KERNELS(simt, simt_implicit_gemm, __VA_ARGS__)
CONV_SIMT_CONFIGS(CONV_SIMT_KERNELS)

// ---------------------------------------------------------------- simt wgrad

#define WGRAD_TILE 64
#define WGRAD_STEP 8
#define WGRAD_THREADS 256

// Thread (tk, tc), tc = t % 16 fastest, owns output channels tk*4 + {0..3} and taps tc*4 + {0..3}.
// Loads: thread t takes pixel t % 8 of each step (one (n, p, q) division per step, shared by its
// grad_y and x loads) for channels / taps t / 8 and t / 8 + 32.
extern "C" __global__ void __launch_bounds__(WGRAD_THREADS) conv2d_wgrad_simt_f32(WGRAD_PARAMS)
{
    constexpr int T = WGRAD_TILE, BR = WGRAD_STEP, ST = WGRAD_TILE + 4;
    __shared__ alignas(16) float g_tiles[2][BR * ST];  // [pixel][output channel]
    __shared__ alignas(16) float a_tiles[2][BR * ST];  // [pixel][tap]

    const int M = N * P * Q, CRS = C * R * S, PQ = P * Q;
    const int tap0 = blockIdx.x * T, k0 = blockIdx.y * T;
    const int begin = blockIdx.z * pixels_per_split;
    const int end = M - begin < pixels_per_split ? M : begin + pixels_per_split;
    const int t = threadIdx.x;
    const int load_pixel = t % BR, load_column = t / BR;

    // The two taps this thread loads: (c, r, s) decoded once.
    int tap_plane[2], tap_dh[2], tap_dw[2];
    bool tap_ok[2];
    DLGPU_UNROLL
    for (int j = 0; j < 2; ++j) {
        const int kk = tap0 + load_column + j * (T / 2);
        tap_ok[j] = kk < CRS;
        const int c = fast_div(kk, rs_mul, rs_shift);
        const int rs = kk - c * R * S;
        const int r = fast_div(rs, s_mul, s_shift);
        tap_plane[j] = c * H * W;
        tap_dh[j] = r * dil_h - pad_h;
        tap_dw[j] = (rs - r * S) * dil_w - pad_w;
    }

    float g_held[2], a_held[2];
    auto load = [&](int m0) {
        const int m = m0 + load_pixel;
        const bool pixel_ok = m < end;
        const int n = fast_div(m, pq_mul, pq_shift);
        const int pq = m - n * PQ;
        const int p = fast_div(pq, q_mul, q_shift);
        const int q = pq - p * Q;
        DLGPU_UNROLL
        for (int j = 0; j < 2; ++j) {
            const int k = k0 + load_column + j * (T / 2);
            float g = 0.0f;
            if (pixel_ok && k < K) {
                const long long at = ((long long)n * K + k) * PQ + pq;
                g = grad_y[at];
                if (flags & CONV_MASK) g = relu_mask(g, y[at]);
            }
            g_held[j] = g;
            const int h = p * stride_h + tap_dh[j], col = q * stride_w + tap_dw[j];
            const bool inside = (unsigned)h < (unsigned)H && (unsigned)col < (unsigned)W;
            const long long at = (long long)n * C * H * W + tap_plane[j] + h * W + col;
            a_held[j] = pixel_ok && tap_ok[j] && inside ? x[at] : 0.0f;
        }
    };
    auto store = [&](int stage) {
        DLGPU_UNROLL
        for (int j = 0; j < 2; ++j) {
            g_tiles[stage][load_pixel * ST + load_column + j * (T / 2)] = g_held[j];
            a_tiles[stage][load_pixel * ST + load_column + j * (T / 2)] = a_held[j];
        }
    };

    const int tc = t % (T / 4), tk = t / (T / 4);
    float acc[4][4];
    zero(acc);
    k_tile_pipeline<2, false, true>(
        end > begin ? (end - begin + BR - 1) / BR : 0, [&](int step, int) { load(begin + step * BR); }, store,
        [&](int stage) { fma_tile<BR, ST, ST, 0, 0>(acc, g_tiles[stage] + tk * 4, a_tiles[stage] + tc * 4); });

    // ---- this split's partial sums (zeros when its pixel range is empty)
    float* out = partial + (long long)blockIdx.z * K * CRS;
    DLGPU_UNROLL
    for (int i = 0; i < 4; ++i) {
        const int k = k0 + tk * 4 + i;
        if (k >= K) continue;
        DLGPU_UNROLL
        for (int j = 0; j < 4; ++j) {
            const int kk = tap0 + tc * 4 + j;
            if (kk < CRS) out[(long long)k * CRS + kk] = acc[i][j];
        }
    }
}

extern "C" __global__ void conv2d_wgrad_finish_f32(const float* partial, float* grad_w, int splits, long long count)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count;
         i += (long long)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (int z = 0; z < splits; ++z) sum += partial[z * count + i];
        grad_w[i] = sum;
    }
}
