// kernels/conv2d_wgmma.cu -- the convolution forward on Hopper's warpgroup tensor cores (wgmma, sm_90a), NHWC.
//
// x (N, H, W, C), w (K, R, S, C), y (N, P, Q, K), all as stored (channels_last), 16-bit operands (bf16 or fp16),
// fp32 accumulation; y = epilogue(conv(x, w)) in fp32 or, with CONV_STORE_HALF, the operands' 16-bit type;
// `flags` EPILOGUE_BIAS, EPILOGUE_RELU (common.cuh), CONV_STORE_HALF (conv2d_common.cuh).  The implicit GEMM:
// M = N*P*Q output pixels, N = K output channels, reduction RSC = R*S*C taps in w's own order (r, s, c).
// The launcher is dlgpu/cuda/conv2d_wgmma.py; kernels/conv2d_tc.cu's NHWC kernels (mma.sync) are the fallback.
//
//   conv2d_fwd_wgmma_128x<BN>_<precision>(maps, x, bias, geometry, flags)
//       CONV_WGMMA_CONFIGS below: BN 128 (6 stages) or 64 (8 stages, for K = 64); precision bf16, fp16.
//       `maps`: two TMA tensor maps of 128 bytes (dlgpu/cuda/tma.py): w viewed as the K x RSC matrix (boxes
//       of BN rows x 64 taps, 128-byte swizzle), and y viewed as the M x K matrix (boxes of 16 rows x 128
//       bytes, for the stores); x by pointer; bias fp32 (K,); CONV_GEOMETRY_PARAMS (conv2d_common.cuh).
//       C a multiple of 8 (16-byte chunks of channels: the launcher falls back to mma.sync otherwise), any
//       N, H, W, K, R, S, stride, padding, dilation within 32-bit indices.  384 threads, one block per
//       SM; a persistent grid walking tiles of 128 pixels x BN channels in grouped raster order.
//
// The pipeline is gemm_wgmma.cu's (its header has the ring, the descriptors and the epilogue; the
// shared parts are wgmma_tile.cuh), with A gathered instead of loaded by TMA:
//   B (the weights): thread 0 of the producer warpgroup loads each k-tile's BN x 64 box by TMA, with
//       mbarrier.arrive.expect_tx of its bytes on the stage's `full` barrier; taps past RSC and rows past K
//       are TMA's zero fill.
//   A (the activations): all 128 producer threads gather it with cp.async, 16 bytes (8 channels of one
//       pixel at one tap) each, into the 128-byte-swizzled layout the K-major descriptor reads (chunk c of
//       row r at chunk c ^ (r % 8)), then cp.async.mbarrier.arrive.noinc on `full`: that arrival comes
//       once the thread's copies have landed.  `full` expects 128 + 1 arrivals and B's bytes.  A chunk
//       whose tap falls in the padding, past the last pixel or past RSC is zero-filled (src-size 0).
//       Thread t copies chunk t % 8 of rows t / 8 + 16 i (i < 8): 8 consecutive lanes read one pixel's
//       128 contiguous bytes, so a warp's instruction reads 4 whole lines.  Each row's pixel is decoded
//       once per tile (fast_div); per k-tile a thread steps its chunk's (r, s, c) by 64 taps (a loop, as
//       C may be below 64) and tests 8 rows against the image: no division in the loop.
//   The k-tiles run over the flat reduction (r, s, c) in 64-tap steps, as the weight matrix is stored;
//   since C % 8 == 0 no 16-byte chunk straddles two taps, so any C works without padding the channels
//   (and without the weights of a padded tail multiplying zeros), and only the last k-tile is partial.
//   Consumers: after `full` completes, fence.proxy.async (the cp.async writes are generic-proxy writes;
//   wgmma reads through the async proxy), then 4 wgmma m64nBNk16 per k-tile on K-major descriptors of
//   A (their 64 rows) and B, as gemm_wgmma.cu's layout nt.  Epilogue: wgmma_tile.cuh's store_tma (bias,
//   ReLU, conversion, TMA stores that clip at M and K).
// No setmaxnreg: with BN <= 128 a consumer holds at most 64 accumulators and everything fits the 168
// registers per thread that 384 threads get; moving registers between warpgroups would buy nothing.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs, 2048 dense bf16 FMA per clock per SM, ~1.75 GHz
// sustained: ~945 TFLOP/s), from the sm_90a build (NVRTC 13.5) of the bf16 kernels, per k-tile of 64 taps per SM:
//   registers   166 (128x128) and 119 (128x64) per thread, within the 168 that 384 threads get; no spills, no
//               local memory.  Shared memory 230,496 / 230,528 bytes: one block per SM.
//   tensor      2 warpgroups x 4 HGMMA.64xBNx16: 512 clocks at BN 128, 256 at BN 64.
//   issue       the producer's k-tile loop is 188 SASS instructions per warp (8 LDGSTS, ARRIVES.LDGSTSBAR, the
//               64-bit address and bounds of each chunk, the tap step), the consumers' 92 (4 HGMMA); a
//               scheduler hosts one producer and two consumer warps: ~370 issue slots per k-tile, 73 % of
//               512 at BN 128, but ~130 % of 256 at BN 64: the 128x64 tile is issue-bound (~0.7 of peak).
//   L2 -> SM    16 KB of A (cp.async.cg: every tap from L2, the 3x3 reuse of an input pixel is not caught
//               in L1) and BN x 128 bytes of B per k-tile: at BN 128 32 KB per 2.1 MFLOP, 64 FLOP per byte;
//               at the 5.5-7 TB/s H100's L2 is reported to deliver, 350-450 TFLOP/s: the likely limit (BN
//               64: 43 FLOP per byte, 240-300 TFLOP/s).
//   shared      wgmma reads 2 x (8 KB of A + 16 KB of B) and the copies write 32 KB: 80 KB per 512 clocks,
//               156 B/clock against the 128 B/clock port: at most ~0.8 of peak, not the first limit.
//   waves       a persistent grid of min(tiles, 132) blocks.  ResNet-50 3x3 at batch 32: 56x56x64 784 tiles
//               of 128x64 (5.9 waves, 99 %); 28x28x128 196 tiles of 128x128 (1.5 waves, 74 %); 7x7x512 52
//               tiles (39 % of the SMs; 196 tiles, 74 %, at batch 128).
// => bf16 forward on ResNet-50's 3x3 layers (channels_last, bias + ReLU): 250-350 TFLOP/s at C = K = 64,
// 260-450 TFLOP/s at 128 and up, less where the waves are short: 0.45-0.75x cuDNN (assumed 550-650 TFLOP/s),
// short of issue 19's 0.9x.  Next steps, in order: B multicast over a 2-CTA cluster and a 128x256 tile (halves
// B's L2 traffic per FLOP), A through L1 (cp.async.ca) or im2col-mode TMA, 32-bit chunk addresses (the
// producer's loop), split-K or 64-row tiles for the short layers.  The GPU run confirms or refutes all of this.
//
// dlgpu-sass: conv2d_fwd_wgmma_* arch=sm_90a HGMMA UTMALDG UTMASTG LDGSTS SYNCS !LDL !STL

#include "common.cuh"
#include "conv2d_common.cuh"
#include "ptx.cuh"
#include "ptx_sm90.cuh"
#include "wgmma_tile.cuh"

#define CONV_WGMMA_PRODUCER_THREADS 128  // the producer warpgroup: every thread gathers A
#define CONV_WGMMA_CHUNKS 8              // 16-byte chunks in a 128-byte row of k

// The tile configurations, widest first: X(BM, BN, THREADS, STAGES).  dlgpu/cuda/conv2d_wgmma.py reads this list.
#define CONV_WGMMA_CONFIGS(X)    \
    X(128, 128, 384, 6)          \
    X(128, 64, 384, 8)

// Where one thread's chunk of the k-tile stands in the flat reduction (r, s, c): tap (r, s) and channel c.
// `dh`, `dw` are the tap's offsets into the image (r * dil_h, s * dil_w).
struct ChunkTap {
    int r, s, c, dh, dw;
    // Steps c by `taps` channels and carries into s and r.
    __device__ __forceinline__ void advance(int taps, const ConvGeometry& g)
    {
        c += taps;
        while (c >= g.C) {
            c -= g.C;
            dw += g.dil_w;
            if (++s == g.S) {
                s = 0;
                dw = 0;
                ++r;
                dh += g.dil_h;
            }
        }
    }
};

// ---------------------------------------------------------------- the kernel
template <ptx::Precision P, int BN, int STAGES>
__device__ __forceinline__ void wgmma_conv_forward(const unsigned char* maps, const unsigned short* x,
                                                   const float* bias, const ConvGeometry& g, int flags)
{
#if WGMMA_AVAILABLE
    using T = WgmmaTiles<P, BN, STAGES>;
    static_assert(P != ptx::Precision::tf32, "16-bit operands: a 16-byte chunk is 8 channels");
    constexpr int kRowsPerThread = WGMMA_BM * CONV_WGMMA_CHUNKS / CONV_WGMMA_PRODUCER_THREADS;
    constexpr int kRowStep = CONV_WGMMA_PRODUCER_THREADS / CONV_WGMMA_CHUNKS;
    extern __shared__ __align__(1024) unsigned char wgmma_shared[];
    // The swizzle patterns repeat every 1024 bytes of shared address: tiles start on such a boundary.
    unsigned char* const smem = wgmma_shared + (1024 - ptx::shared_window_address(wgmma_shared) % 1024) % 1024;
    unsigned char* const a_tiles = smem;
    unsigned char* const b_tiles = smem + STAGES * T::kABytes;
    unsigned char* const staging = b_tiles + STAGES * T::kBBytes;
    unsigned long long* const full = reinterpret_cast<unsigned long long*>(staging + T::kStagingBytes);
    unsigned long long* const empty = full + STAGES;
    const unsigned char* const map_w = maps;
    const unsigned char* const map_y = maps + 128;

    const int M = g.N * g.P * g.Q, RSC = g.R * g.S * g.C;
    const WgmmaSchedule<BN, 1> schedule(M, g.K, RSC, T::kBK, 1);
    const int warpgroup = threadIdx.x / 128;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            // Every producer thread's cp.async arrival, and thread 0's arrive.expect_tx for B.
            ptx::mbarrier_init(&full[s], CONV_WGMMA_PRODUCER_THREADS + 1);
            ptx::mbarrier_init(&empty[s], WGMMA_CONSUMERS);
        }
        ptx::fence_mbarrier_init();
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---- producer: B by TMA (thread 0), A gathered by all 128 threads
        const int t = threadIdx.x, chunk = t % CONV_WGMMA_CHUNKS, first = t / CONV_WGMMA_CHUNKS;
        // Rows first + kRowStep i all have first % 8 as their row in the swizzle pattern.
        const int swizzled = ((chunk ^ (first % 8)) * 16) + first * 128;
        if (t == 0) ptx::prefetch_tensor_map(map_w);
        int stage = 0;
        unsigned phase = 0;
        for (int u = blockIdx.x; u < schedule.units; u += gridDim.x) {
            int tile_m, tile_n, split, begin, end;
            schedule.unit(u, 0, tile_m, tile_n, split, begin, end);
            const int m0 = tile_m * WGMMA_BM, n0 = tile_n * BN;
            // Each row's pixel, once per tile: the element offset of its receptive field's corner, and the
            // corner itself (h0 = H past the last pixel: every tap of that row is out of the image).
            long long corner[kRowsPerThread];
            int h0[kRowsPerThread], w0[kRowsPerThread];
            DLGPU_UNROLL
            for (int i = 0; i < kRowsPerThread; ++i) {
                const int m = m0 + first + i * kRowStep;
                if (m < M) {
                    const int n = fast_div(m, g.pq_mul, g.pq_shift);
                    const int pq = m - n * g.P * g.Q;
                    const int p = fast_div(pq, g.q_mul, g.q_shift);
                    h0[i] = p * g.stride_h - g.pad_h;
                    w0[i] = (pq - p * g.Q) * g.stride_w - g.pad_w;
                    corner[i] = (((long long)n * g.H + h0[i]) * g.W + w0[i]) * g.C;
                } else {
                    h0[i] = g.H;
                    w0[i] = 0;
                    corner[i] = 0;
                }
            }
            ChunkTap tap{0, 0, 0, 0, 0};
            tap.advance(chunk * 8, g);  // this thread's chunk of the first k-tile
            for (int kt = begin; kt < end; ++kt) {
                ptx::mbarrier_wait(&empty[stage], phase ^ 1);
                if (t == 0) {
                    ptx::mbarrier_arrive_expect_tx(&full[stage], T::kBBytes);
                    ptx::tma_load_2d(b_tiles + stage * T::kBBytes, map_w, kt * T::kBK, n0, &full[stage]);
                }
                unsigned char* const a = a_tiles + stage * T::kABytes + swizzled;
                const bool in_filter = tap.r < g.R;  // false past RSC: the last k-tile's tail
                const long long offset = ((long long)tap.dh * g.W + tap.dw) * g.C + tap.c;
                DLGPU_UNROLL
                for (int i = 0; i < kRowsPerThread; ++i) {
                    const bool ok = in_filter && (unsigned)(h0[i] + tap.dh) < (unsigned)g.H &&
                                    (unsigned)(w0[i] + tap.dw) < (unsigned)g.W;
                    ptx::cp_async_16(a + i * kRowStep * 128, ok ? x + (corner[i] + offset) : x, ok ? 16u : 0u);
                }
                ptx::cp_async_mbarrier_arrive_noinc(&full[stage]);
                tap.advance(T::kBK, g);
                if (++stage == STAGES) {
                    stage = 0;
                    phase ^= 1;
                }
            }
        }
        return;
    }

    // ---- consumers: warpgroup w = 1, 2 computes rows [64 (w - 1), +64) of each tile
    const int consumer = warpgroup - 1;
    const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
    const bool releases = threadIdx.x % 128 == 0;  // one arrival per warpgroup on `empty`
    const unsigned a_base = ptx::shared_window_address(a_tiles), b_base = ptx::shared_window_address(b_tiles);
    unsigned char* const my_staging = staging + (consumer * 4 + warp) * WGMMA_STORE_BOXES * T::kBoxBytes;
    int stage = 0;
    unsigned phase = 0;
    for (int u = blockIdx.x; u < schedule.units; u += gridDim.x) {
        int tile_m, tile_n, split, begin, end;
        schedule.unit(u, 0, tile_m, tile_n, split, begin, end);
        float acc[BN / 2];
        int previous = 0;
        for (int kt = begin; kt < end; ++kt) {
            ptx::mbarrier_wait(&full[stage], phase);
            ptx::fence_proxy_async_shared();  // the producers' cp.async writes, visible to wgmma's reads
            const unsigned a_stage = a_base + stage * T::kABytes, b_stage = b_base + stage * T::kBBytes;
            ptx::wgmma_fence();
            ptx::wgmma_fence_operand(acc);
            DLGPU_UNROLL
            for (int j = 0; j < T::kBK / T::kStep; ++j) {
                const unsigned long long desc_a =
                    ptx::wgmma_descriptor(a_stage + consumer * 64 * 128 + 32 * j, 16, 1024, 128);
                const unsigned long long desc_b = ptx::wgmma_descriptor(b_stage + 32 * j, 16, 1024, 128);
                ptx::wgmma<BN, P, 0, 0>(acc, desc_a, desc_b, kt != begin || j != 0);
            }
            ptx::wgmma_commit();
            ptx::wgmma_wait<1>();
            ptx::wgmma_fence_operand(acc);
            if (kt > begin && releases) ptx::mbarrier_arrive(&empty[previous]);
            previous = stage;
            if (++stage == STAGES) {
                stage = 0;
                phase ^= 1;
            }
        }
        ptx::wgmma_wait<0>();
        ptx::wgmma_fence_operand(acc);
        if (releases) ptx::mbarrier_arrive(&empty[previous]);

        // ---- epilogue: while the producers already fill the next tile's stages
        const int row0 = tile_m * WGMMA_BM + consumer * 64 + warp * 16, col0 = tile_n * BN;
        if (flags & CONV_STORE_HALF)
            store_tma<P, BN, unsigned short>(acc, my_staging, map_y, bias, flags, row0, col0, g.K);
        else
            store_tma<P, BN, float>(acc, my_staging, map_y, bias, flags, row0, col0, g.K);
    }
    // The TMA stores have written y before the block ends (and read the staging boxes before they go).
    if (lane == 0) ptx::bulk_wait<0>();
#else
    __trap();
#endif
}

// ---------------------------------------------------------------- named instances
// conv2d_fwd_wgmma_128x128_bf16, conv2d_fwd_wgmma_128x128_fp16, ...
#define CONV_WGMMA_KERNEL(precision, BM, BN, THREADS, STAGES)                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) conv2d_fwd_wgmma_##BM##x##BN##_##precision(        \
        const unsigned char* maps, const unsigned short* x, const float* bias, CONV_GEOMETRY_PARAMS, int flags) \
    {                                                                                                           \
        static_assert(BM == WGMMA_BM && THREADS == WGMMA_THREADS, "128 rows, a producer and two consumers");   \
        const ConvGeometry geo = CONV_GEOMETRY;                                                                 \
        wgmma_conv_forward<ptx::Precision::precision, BN, STAGES>(maps, x, bias, geo, flags);                  \
    }
#define CONV_WGMMA_KERNELS(...)                 \
    CONV_WGMMA_KERNEL(bf16, __VA_ARGS__)        \
    CONV_WGMMA_KERNEL(fp16, __VA_ARGS__)
CONV_WGMMA_CONFIGS(CONV_WGMMA_KERNELS)
