// kernels/conv2d_wgmma.cu -- the convolution forward and data gradient on Hopper's warpgroup tensor cores (wgmma,
// sm_90a), NHWC.
//
// x (N, H, W, C), w (K, R, S, C), y (N, P, Q, K), all as stored (channels_last), 16-bit operands (bf16 or fp16),
// fp32 accumulation; y = epilogue(conv(x, w)) in fp32 or, with CONV_STORE_HALF, the operands' 16-bit type;
// `flags` EPILOGUE_BIAS, EPILOGUE_RELU (common.cuh), CONV_STORE_HALF (conv2d_common.cuh).  The implicit GEMM:
// M = N*P*Q output pixels, N = K output channels, reduction RSC = R*S*C taps in w's own order (r, s, c).
// The launcher is dlgpu/cuda/conv2d_wgmma.py; kernels/conv2d_tc.cu's NHWC kernels (mma.sync) are the fallback.
//
//   conv2d_fwd_wgmma_128x<BN>[c2]_<precision>(maps, x, bias, geometry, flags)
//       CONV_WGMMA_CONFIGS below: BN 128 (6 stages) or 64 (8 stages, for K = 64); and CONV_WGMMA_CLUSTER_CONFIGS:
//       128x128c2, BN 128 in clusters of 2 CTAs sharing each weight tile (below); precision bf16, fp16.
//       `maps`: two TMA tensor maps of 128 bytes (dlgpu/cuda/tma.py): w viewed as the K x RSC matrix (boxes
//       of BN / CLUSTER rows x 64 taps, 128-byte swizzle), and y viewed as the M x K matrix (boxes of 16 rows x 128
//       bytes, for the stores); x by pointer; bias fp32 (K,); CONV_GEOMETRY_PARAMS (conv2d_common.cuh).
//       C a multiple of 8 (16-byte chunks of channels: the launcher falls back to mma.sync otherwise), any
//       N, H, W, K, R, S, stride, padding, dilation within 32-bit indices.  384 threads, one block per
//       SM; a persistent grid (of whole clusters) walking tiles (cluster tiles: CLUSTER tiles stacked along
//       M) of 128 pixels x BN channels in grouped raster order (WgmmaSchedule, wgmma_tile.cuh).
//   conv2d_dgrad_wgmma_128x<BN>_<precision>(maps, grad_y, w, geometry, flags, hw_mul, hw_shift, w_mul, w_shift)
//       grad_x (N, H, W, C) = the data gradient of grad_y (N, P, Q, K) through w, at STRIDE 1 only (any padding
//       and dilation; the launcher falls back to mma.sync otherwise); C and K multiples of 8; `maps`: grad_x's
//       TMA tensor map (the N*H*W x C matrix, store boxes); `flags`: CONV_STORE_HALF; (hw_mul, hw_shift),
//       (w_mul, w_shift): fast divisors of H*W and W.  A fused ReLU's mask is applied to grad_y by the
//       launcher (kernels/gemm_cast.cu), as for the mma.sync kernels.  DgradGather below.
//
// The pipeline is gemm_wgmma.cu's (its header has the ring, the descriptors and the epilogue; the
// shared parts are wgmma_tile.cuh), with A gathered instead of loaded by TMA:
//   B (the weights): thread 0 of the producer warpgroup loads each k-tile's BN x 64 box by TMA, with
//       mbarrier.arrive.expect_tx of its bytes on the stage's `full` barrier; taps past RSC and rows past K
//       are TMA's zero fill.  In a cluster (128x128c2) the two CTAs compute vertically adjacent tiles of
//       pixels with the same filters, as gemm_wgmma.cu's BN-256 clusters do: each CTA's thread 0 loads half
//       of the filters (64 rows) by multicast into the stage of both, each `full` expects the whole box, each
//       consumer warpgroup releases the stage in both CTAs (StageRing: `empty` counts 2 x 2 arrivals), and
//       barrier.cluster follows the barriers' init and precedes exit.  With an odd number of tile rows, the
//       last cluster tile's upper CTA gathers zeros (every row past the pixels) and stores nothing.
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
//   registers   161 (128x128) and 119 (128x64) per thread, within the 168 that 384 threads get; no spills, no
//               local memory.  Shared memory 230,496 / 230,528 bytes: one block per SM.
//   tensor      2 warpgroups x 4 HGMMA.64xBNx16: 512 clocks at BN 128, 256 at BN 64.
//   issue       the producer's k-tile loop is 188 SASS instructions per warp (8 LDGSTS, ARRIVES.LDGSTSBAR, the
//               64-bit address and bounds of each chunk, the tap step), the consumers' 93 (4 HGMMA); a
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
// short of issue 19's 0.9x.
// The clustered forward, 128x128c2 (the launcher's choice for the forward where K > 64 and the pixels fill two
// rows of tiles; today's build, NVRTC 13.5: 163 registers against 161 for 128x128, same shared memory):
//   L2 -> SM    each SM reads 16 KB of A and half of B's 16 KB per k-tile (the other half arrives by the peer's
//               multicast, one L2 read for both SMs): 24 KB per 2.1 MFLOP, 85 FLOP per byte instead of 64; at
//               5.5-7 TB/s, 470-600 TFLOP/s where 128x128 had 350-450.
//   issue       the producer's k-tile loop 191 SASS instructions (the multicast's share), the consumers' 110
//               (93 on 128x128: the second `empty` arrival, mapa + arrive.release.cluster, whose MEMBAR.ALL.GPU
//               the releasing thread waits on): ~410 issue slots per 512 tensor clocks, 80 %.
//   shared      unchanged (multicast does not change what lands in each CTA): ~0.8 of peak, now the next limit.
//   waves       clusters of 2 CTAs on pairs of SMs: 28x28x128 at batch 32 98 cluster tiles on 66 clusters
//               (1.5 waves, 74 %, as before); an odd row count idles one CTA per column of tiles.
// => 128 channels and up: 260-550 TFLOP/s, less where the waves are short: 0.45-0.9x cuDNN, the top only if L2
// was the limit (then 350-550 at full waves), which only the GPU run can show.  Next steps, in order: a 128x256
// clustered tile (B's L2 bytes per FLOP halved again; needs setmaxnreg with a producer warpgroup that gathers),
// A through L1 (cp.async.ca) or im2col-mode TMA, 32-bit chunk addresses (the producer's loop), split-K or 64-row
// tiles for the short layers.
// dgrad (same build): 155 (128x128) and 111 (128x64) registers; its producer gathers B too, 326 SASS instructions
// per warp per k-tile at BN 128 (16 LDGSTS) and 258 at BN 64 (12): with the consumers' 96, ~520 issue slots per
// 512 tensor clocks at BN 128 (issue-bound at ~0.85-1.0 of peak before L2 binds at the forward's 350-450
// TFLOP/s), ~450 per 256 at BN 64 (~0.55 of peak).  ResNet-50's stride-1 3x3 layers: 250-400 TFLOP/s where C >=
// 128.  B by a 3-D TMA map (w's rows of one tap are RSC apart) would take half the producer's work away.  The
// GPU run confirms or refutes all of this.
//
// dlgpu-sass: conv2d_fwd_wgmma_* arch=sm_90a HGMMA UTMALDG UTMASTG LDGSTS SYNCS !LDL !STL
// dlgpu-sass: conv2d_dgrad_wgmma_* arch=sm_90a HGMMA UTMASTG LDGSTS SYNCS !LDL !STL
// dlgpu-sass: conv2d_fwd_wgmma_*c2_* arch=sm_90a UTMALDG.MULTICAST UCGABAR_ARV UCGABAR_WAIT

#include "common.cuh"
#include "conv2d_common.cuh"
#include "ptx.cuh"
#include "ptx_sm90.cuh"
#include "wgmma_tile.cuh"

#define CONV_WGMMA_PRODUCER_THREADS 128  // the producer warpgroup: every thread gathers
#define CONV_WGMMA_CHUNKS 8              // 16-byte chunks in a 128-byte row of k

// The tile configurations, widest first: X(BM, BN, THREADS, STAGES), the forward's and dgrad's; and the forward's
// alone in clusters of CLUSTER CTAs along M sharing each weight tile by multicast: X(BM, BN, THREADS, STAGES,
// CLUSTER), named <BM>x<BN>c<CLUSTER>.  dlgpu/cuda/conv2d_wgmma.py reads these lists.
#define CONV_WGMMA_CONFIGS(X)    \
    X(128, 128, 384, 6)          \
    X(128, 64, 384, 8)
#define CONV_WGMMA_CLUSTER_CONFIGS(X) \
    X(128, 128, 384, 6, 2)

// Where a chunk of the k-tile stands in the reduction (r, s, c): tap (r, s) and channel c of `channels` per
// tap.  `dh`, `dw` are the tap's offsets (r * dil_h, s * dil_w).
struct ChunkTap {
    int r, s, c, dh, dw;
    // Steps c by `taps` and carries into s and r.
    __device__ __forceinline__ void advance(int taps, int channels, const ConvGeometry& g)
    {
        c += taps;
        while (c >= channels) {
            c -= channels;
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

// The row of a 128-byte swizzled tile that thread `t` writes chunk `chunk` of, at rows first + step i: the
// pattern's row is first % 8 for all of them (step is a multiple of 8).
__device__ __forceinline__ int swizzled_chunk(int chunk, int first)
{
    return ((chunk ^ (first % 8)) * 16) + first * 128;
}

// ---------------------------------------------------------------- the forward's operands
// A: output pixels x taps (r, s, c) in w's flat order, gathered from x; B: w as the K x RSC matrix, by TMA.
// Thread t copies chunk t % 8 of A's rows t / 8 + 16 i (i < 8).  In a cluster of CLUSTER CTAs (the same BN
// filters, vertically adjacent tiles of pixels), each CTA's thread 0 loads BN / CLUSTER of the filters into
// every CTA's stage; each CTA's `full` still expects the whole B tile's bytes.
template <int BN, int CLUSTER> struct ForwardGather {
    static constexpr int kCluster = CLUSTER;
    static constexpr bool kBNMajor = false;                            // B's rows are k: K-major
    static constexpr int kArrivals = CONV_WGMMA_PRODUCER_THREADS + 1;  // and thread 0's expect_tx for B
    static constexpr int kRows = WGMMA_BM * CONV_WGMMA_CHUNKS / CONV_WGMMA_PRODUCER_THREADS;
    static constexpr int kStep = CONV_WGMMA_PRODUCER_THREADS / CONV_WGMMA_CHUNKS;
    const unsigned short* x;
    const unsigned char* map_w;
    const ConvGeometry& g;
    int M, n0, rank;  // rank: this CTA's in its cluster (its share of B)
    // This thread's rows in the current tile: the element offset of each pixel's receptive field corner,
    // and the corner (h0 = H past the last pixel: every tap of that row is out of the image).
    long long corner[kRows];
    int h0[kRows], w0[kRows];
    ChunkTap tap;

    __device__ __forceinline__ ForwardGather(const unsigned short* x_, const unsigned char* map,
                                             const ConvGeometry& geo)
        : x(x_), map_w(map), g(geo), M(geo.N * geo.P * geo.Q), n0(0), rank(0)
    {
    }
    __device__ __forceinline__ int rows() const { return M; }
    __device__ __forceinline__ int cols() const { return g.K; }
    __device__ __forceinline__ int reduction() const { return g.R * g.S * g.C; }  // k-tiles: ceil(RSC / 64)
    __device__ __forceinline__ void prefetch() const { ptx::prefetch_tensor_map(map_w); }

    // A tile of pixels from m0 and filters from n0_, for the CTA of cluster rank rank_ (which share of B it loads).
    __device__ __forceinline__ void begin_tile(int m0, int n0_, int rank_)
    {
        const int t = threadIdx.x, first = t / CONV_WGMMA_CHUNKS;
        n0 = n0_;
        rank = rank_;
        DLGPU_UNROLL
        for (int i = 0; i < kRows; ++i) {
            nhwc_corner(g, m0 + first + i * kStep, M, h0[i], w0[i], corner[i]);
        }
        tap = ChunkTap{0, 0, 0, 0, 0};
        tap.advance(t % CONV_WGMMA_CHUNKS * 8, g.C, g);  // this thread's chunk of the first k-tile
    }

    // k-tile kt into a stage: B by TMA (thread 0), A's chunks by cp.async; every thread's arrival on `full`.
    __device__ __forceinline__ void fill(int kt, unsigned char* a, unsigned char* b, unsigned long long* full)
    {
        const int t = threadIdx.x;
        if (t == 0) {
            ptx::mbarrier_arrive_expect_tx(full, BN * 128);
            constexpr int kShare = BN / CLUSTER;  // filters per CTA: rows of 128 bytes
            if constexpr (CLUSTER == 1)
                ptx::tma_load_2d(b, map_w, kt * 64, n0, full);
            else
                ptx::tma_load_2d_multicast(b + rank * kShare * 128, map_w, kt * 64, n0 + rank * kShare, full,
                                           (1u << CLUSTER) - 1);
        }
        unsigned char* const to = a + swizzled_chunk(t % CONV_WGMMA_CHUNKS, t / CONV_WGMMA_CHUNKS);
        const bool in_filter = tap.r < g.R;  // false past RSC: the last k-tile's tail
        const long long offset = ((long long)tap.dh * g.W + tap.dw) * g.C + tap.c;
        DLGPU_UNROLL
        for (int i = 0; i < kRows; ++i) {
            const bool ok = in_filter && (unsigned)(h0[i] + tap.dh) < (unsigned)g.H &&
                            (unsigned)(w0[i] + tap.dw) < (unsigned)g.W;
            ptx::cp_async_16(to + i * kStep * 128, ok ? x + (corner[i] + offset) : x, ok ? 16u : 0u);
        }
        ptx::cp_async_mbarrier_arrive_noinc(full);
        tap.advance(64, g.C, g);
    }
};

// ---------------------------------------------------------------- the data gradient's operands
// grad_x (N*H*W x C) = A x B at stride 1: A row m = input pixel (n, h, w), at tap (r, s) and output
// channels k.. the element grad_y[n, h + pad_h - r dil_h, w + pad_w - s dil_w, k..] (zeros outside);
// B row (r, s, k), columns c = w[k, r, s, c..].  The reduction runs over taps outer and blocks of 64
// output channels inner (a k-tile never straddles two taps, so each B row is one filter's channels;
// channels past K read zeros on both sides).  B is gathered too (its rows are RSC apart in memory, so
// TMA would need a 3-D map), into the N-major layout: boxes of 64 rows of k x 64 columns of c.
// Thread t copies chunk t % 8 of A's rows t / 8 + 16 i, and chunk t % (BN / 8) of B's rows
// t / (BN / 8) + (1024 / BN) i.
template <int BN> struct DgradGather {
    static constexpr int kCluster = 1;  // B is gathered, not loaded by TMA: nothing to multicast
    static constexpr bool kBNMajor = true;
    static constexpr int kArrivals = CONV_WGMMA_PRODUCER_THREADS;
    static constexpr int kRows = WGMMA_BM * CONV_WGMMA_CHUNKS / CONV_WGMMA_PRODUCER_THREADS;
    static constexpr int kStep = CONV_WGMMA_PRODUCER_THREADS / CONV_WGMMA_CHUNKS;
    static constexpr int kChunksB = BN / 8, kStepB = CONV_WGMMA_PRODUCER_THREADS / kChunksB, kRowsB = 64 / kStepB;
    static_assert(kStepB % 8 == 0, "B rows of one thread share their row of the swizzle pattern");
    const unsigned short* grad_y;
    const unsigned short* w;
    const ConvGeometry& g;
    int M, k_blocks, n0;
    unsigned hw_mul, hw_shift, w_mul, w_shift;
    long long corner[kRows];  // grad_y's element offset of (n, h + pad_h, w + pad_w) for each row
    int h1[kRows], w1[kRows]; // h + pad_h, w + pad_w (-1 past the last pixel: no tap reaches the output)
    ChunkTap tap;             // the k-tile's tap and block of output channels (the same for every thread)

    __device__ __forceinline__ DgradGather(const unsigned short* grad_y_, const unsigned short* w_,
                                           const ConvGeometry& geo, unsigned hw_mul_, unsigned hw_shift_,
                                           unsigned w_mul_, unsigned w_shift_)
        : grad_y(grad_y_), w(w_), g(geo), M(geo.N * geo.H * geo.W), k_blocks((geo.K + 63) / 64), n0(0),
          hw_mul(hw_mul_), hw_shift(hw_shift_), w_mul(w_mul_), w_shift(w_shift_)
    {
    }
    __device__ __forceinline__ int rows() const { return M; }
    __device__ __forceinline__ int cols() const { return g.C; }
    __device__ __forceinline__ int reduction() const { return g.R * g.S * k_blocks * 64; }
    __device__ __forceinline__ void prefetch() const {}

    __device__ __forceinline__ void begin_tile(int m0, int n0_, int)
    {
        const int first = threadIdx.x / CONV_WGMMA_CHUNKS;
        n0 = n0_;
        DLGPU_UNROLL
        for (int i = 0; i < kRows; ++i) {
            const int m = m0 + first + i * kStep;
            if (m < M) {
                const int n = fast_div(m, hw_mul, hw_shift);
                const int hw = m - n * g.H * g.W;
                const int h = fast_div(hw, w_mul, w_shift);
                h1[i] = h + g.pad_h;
                w1[i] = hw - h * g.W + g.pad_w;
                corner[i] = (((long long)n * g.P + h1[i]) * g.Q + w1[i]) * g.K;
            } else {
                h1[i] = -1;
                w1[i] = 0;
                corner[i] = 0;
            }
        }
        tap = ChunkTap{0, 0, 0, 0, 0};
    }

    __device__ __forceinline__ void fill(int, unsigned char* a, unsigned char* b, unsigned long long* full)
    {
        const int t = threadIdx.x;
        // A: grad_y at output pixel (h1 - dh, w1 - dw), channels tap.c + 8 (t % 8)..
        const int k = tap.c + t % CONV_WGMMA_CHUNKS * 8;
        const long long offset = k - ((long long)tap.dh * g.Q + tap.dw) * g.K;
        unsigned char* const to_a = a + swizzled_chunk(t % CONV_WGMMA_CHUNKS, t / CONV_WGMMA_CHUNKS);
        DLGPU_UNROLL
        for (int i = 0; i < kRows; ++i) {
            const bool ok = k < g.K && (unsigned)(h1[i] - tap.dh) < (unsigned)g.P &&
                            (unsigned)(w1[i] - tap.dw) < (unsigned)g.Q;
            ptx::cp_async_16(to_a + i * kStep * 128, ok ? grad_y + (corner[i] + offset) : grad_y, ok ? 16u : 0u);
        }
        // B: w[tap.c + row, r, s, n0 + 8 (t % kChunksB)..], row t / kChunksB + kStepB i of the k-tile; the box of
        // 64 columns, then the chunk within its 128-byte row.
        const int chunk = t % kChunksB, first = t / kChunksB, c = n0 + chunk * 8;
        const long long rsc = (long long)g.R * g.S * g.C;
        const unsigned short* const from = w + (long long)(tap.c + first) * rsc + (tap.r * g.S + tap.s) * g.C + c;
        unsigned char* const to_b = b + (chunk / 8) * 64 * 128 + swizzled_chunk(chunk % 8, first);
        DLGPU_UNROLL
        for (int i = 0; i < kRowsB; ++i) {
            const bool ok = c < g.C && tap.c + first + i * kStepB < g.K;
            ptx::cp_async_16(to_b + i * kStepB * 128, ok ? from + i * kStepB * rsc : w, ok ? 16u : 0u);
        }
        ptx::cp_async_mbarrier_arrive_noinc(full);
        tap.advance(64, k_blocks * 64, g);
    }
};

// ---------------------------------------------------------------- the pipeline
// The producer warpgroup fills the ring through `Gather`; the consumers multiply each stage (A K-major; B
// K-major, or N-major with Gather::kBNMajor) and store their tile's rows with the epilogue.  With
// Gather::kCluster > 1 the cluster's CTAs walk the units together (WgmmaSchedule), as gemm_wgmma.cu's do.
template <ptx::Precision P, int BN, int STAGES, class Gather>
__device__ __forceinline__ void wgmma_conv(Gather& gather, const unsigned char* map_out, const float* bias, int flags)
{
#if WGMMA_AVAILABLE
    using T = WgmmaTiles<P, BN, STAGES>;
    constexpr int CLUSTER = Gather::kCluster;
    static_assert(P != ptx::Precision::tf32, "16-bit operands: a 16-byte chunk is 8 channels");
    static_assert(CLUSTER == 1 || CLUSTER == 2, "clusters of one or two CTAs");
    extern __shared__ __align__(1024) unsigned char wgmma_shared[];
    const auto [a_tiles, b_tiles, staging, full, empty] = T::carve(wgmma_shared);

    const int N = gather.cols();
    const WgmmaSchedule<BN, CLUSTER> schedule(gather.rows(), N, gather.reduction(), T::kBK, 1);
    const int warpgroup = threadIdx.x / 128;

    StageRing<STAGES, CLUSTER> ring(full, empty);
    if (threadIdx.x == 0) ring.init(Gather::kArrivals);
    // Every CTA's barriers are initialized before any CTA's copies or arrivals reach them.
    if constexpr (CLUSTER > 1) {
        ptx::cluster_arrive();
        ptx::cluster_wait();
    } else {
        __syncthreads();
    }
    // Cluster c (blockIdx.x / CLUSTER) walks units c, c + clusters, ...
    const int rank = CLUSTER == 1 ? 0 : (int)ptx::cluster_ctarank();

    if (warpgroup == 0) {
        // ---- producer: all 128 threads gather (and thread 0 issues the TMA loads)
        if (threadIdx.x == 0) gather.prefetch();
        for (int u = blockIdx.x / CLUSTER; u < schedule.units; u += gridDim.x / CLUSTER) {
            int tile_m, tile_n, split, begin, end;
            schedule.unit(u, rank, tile_m, tile_n, split, begin, end);
            gather.begin_tile(tile_m * WGMMA_BM, tile_n * BN, rank);
            for (int kt = begin; kt < end; ++kt) {
                const int stage = ring.stage;
                ring.wait_empty();
                gather.fill(kt, a_tiles + stage * T::kABytes, b_tiles + stage * T::kBBytes, &full[stage]);
                ring.advance();
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
    for (int u = blockIdx.x / CLUSTER; u < schedule.units; u += gridDim.x / CLUSTER) {
        int tile_m, tile_n, split, begin, end;
        schedule.unit(u, rank, tile_m, tile_n, split, begin, end);
        float acc[BN / 2];
        for (int kt = begin; kt < end; ++kt) {
            ring.wait_full();
            ptx::fence_proxy_async_shared();  // the producers' cp.async writes, visible to wgmma's reads
            const unsigned a_stage = a_base + ring.stage * T::kABytes, b_stage = b_base + ring.stage * T::kBBytes;
            ptx::wgmma_fence();
            ptx::wgmma_fence_operand(acc);
            DLGPU_UNROLL
            for (int j = 0; j < T::kBK / T::kStep; ++j) {
                const unsigned long long desc_a =
                    ptx::wgmma_descriptor(a_stage + consumer * 64 * 128 + 32 * j, 16, 1024, 128);
                // N-major B: boxes of 64 rows of k x 128 bytes of n, one box (the leading byte offset) per 64 n.
                const unsigned long long desc_b =
                    Gather::kBNMajor ? ptx::wgmma_descriptor(b_stage + j * T::kStep * 128, T::kBK * 128, 1024, 128)
                                     : ptx::wgmma_descriptor(b_stage + 32 * j, 16, 1024, 128);
                ptx::wgmma<BN, P, 0, Gather::kBNMajor ? 1 : 0>(acc, desc_a, desc_b, kt != begin || j != 0);
            }
            ring.end_k_tile(acc, kt > begin, releases);
        }
        ring.end_unit(acc, releases);

        // ---- epilogue: while the producers already fill the next tile's stages
        if (CLUSTER > 1 && tile_m >= schedule.tiles_m) continue;  // an upper CTA past the last row of tiles
        const int row0 = tile_m * WGMMA_BM + consumer * 64 + warp * 16, col0 = tile_n * BN;
        if (flags & CONV_STORE_HALF)
            store_tma<P, BN, unsigned short>(acc, my_staging, map_out, bias, flags, row0, col0, N);
        else
            store_tma<P, BN, float>(acc, my_staging, map_out, bias, flags, row0, col0, N);
    }
    // The TMA stores have written the output before the block ends (and read the staging boxes before they go).
    if (lane == 0) ptx::bulk_wait<0>();
    // No CTA may leave while another's consumers can still arrive on its barriers.
    if constexpr (CLUSTER > 1) {
        ptx::cluster_arrive();
        ptx::cluster_wait();
    }
#else
    __trap();
#endif
}

// ---------------------------------------------------------------- named instances
// conv2d_fwd_wgmma_128x128_bf16, conv2d_dgrad_wgmma_128x128_bf16, ..., conv2d_fwd_wgmma_128x128c2_bf16: maps holds
// w's map and y's (forward) or grad_x's alone (dgrad).
#define CONV_WGMMA_FORWARD(precision, name, BM, BN, THREADS, STAGES, CLUSTER)                                    \
    extern "C" __global__ void WGMMA_CLUSTER_DIMS(CLUSTER) __launch_bounds__(THREADS, 1)                         \
        conv2d_fwd_wgmma_##name##_##precision(const unsigned char* maps, const unsigned short* x, const float* bias, \
                                              CONV_GEOMETRY_PARAMS, int flags)                                   \
    {                                                                                                            \
        static_assert(BM == WGMMA_BM && THREADS == WGMMA_THREADS, "128 rows, a producer and two consumers");    \
        const ConvGeometry geo = CONV_GEOMETRY;                                                                  \
        ForwardGather<BN, CLUSTER> gather(x, maps, geo);                                                         \
        wgmma_conv<ptx::Precision::precision, BN, STAGES>(gather, maps + 128, bias, flags);                      \
    }
#define CONV_WGMMA_KERNEL(precision, BM, BN, THREADS, STAGES)                                                    \
    CONV_WGMMA_FORWARD(precision, BM##x##BN, BM, BN, THREADS, STAGES, 1)                                          \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) conv2d_dgrad_wgmma_##BM##x##BN##_##precision(      \
        const unsigned char* maps, const unsigned short* grad_y, const unsigned short* w, CONV_GEOMETRY_PARAMS, \
        int flags, unsigned hw_mul, unsigned hw_shift, unsigned w_mul, unsigned w_shift)                        \
    {                                                                                                           \
        const ConvGeometry geo = CONV_GEOMETRY;                                                                 \
        DgradGather<BN> gather(grad_y, w, geo, hw_mul, hw_shift, w_mul, w_shift);                               \
        wgmma_conv<ptx::Precision::precision, BN, STAGES>(gather, maps, nullptr, flags);                        \
    }
#define CONV_WGMMA_CLUSTER_KERNEL(precision, BM, BN, THREADS, STAGES, CLUSTER) \
    CONV_WGMMA_FORWARD(precision, BM##x##BN##c##CLUSTER, BM, BN, THREADS, STAGES, CLUSTER)
#define CONV_WGMMA_KERNELS(...)                 \
    CONV_WGMMA_KERNEL(bf16, __VA_ARGS__)        \
    CONV_WGMMA_KERNEL(fp16, __VA_ARGS__)
#define CONV_WGMMA_CLUSTER_KERNELS(...)         \
    CONV_WGMMA_CLUSTER_KERNEL(bf16, __VA_ARGS__) \
    CONV_WGMMA_CLUSTER_KERNEL(fp16, __VA_ARGS__)
CONV_WGMMA_CONFIGS(CONV_WGMMA_KERNELS)
CONV_WGMMA_CLUSTER_CONFIGS(CONV_WGMMA_CLUSTER_KERNELS)
