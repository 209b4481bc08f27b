// kernels/gemm_wgmma.cu -- the matrix product on Hopper's warpgroup tensor cores (wgmma, TMA, mbarriers; sm_90a).
//
// Same contract as kernels/gemm.cu -- C (M x N, row-major) = epilogue(op(A) @ op(B)), `flags` EPILOGUE_BIAS /
// EPILOGUE_RELU (common.cuh), any M, N, K >= 1 -- but the operands are 16-bit (bf16, fp16) or fp32 read as
// tf32, straight from global memory by TMA, accumulated in fp32; C is fp32, or with GEMM_STORE_HALF the
// operands' 16-bit type.  The launcher is dlgpu/cuda/gemm_wgmma.py.
//
//   gemm_wgmma_128x<BN>_<layout>_<precision>(maps, bias, c, M, N, K, flags)
//       GEMM_WGMMA_CONFIGS below: BN 256 (4 stages) or 128 (6 stages); layouts nn, nt, tn, tt
//       (GEMM_PLAIN_LAYOUTS) for bf16 and fp16, nt only for tf32
//       (wgmma reads tf32 operands K-major: A stored M x K, B stored N x K).  `maps`: two TMA tensor maps
//       of 128 bytes (dlgpu/cuda/tma.py), A's then B's, each over the matrix as stored, boxes of 128-byte
//       rows with the 128-byte swizzle.  bias: fp32 (N,).  c: fp32 or 16-bit, row-major, M x N.
//       384 threads: warpgroup 0 the producer, 1 and 2 the consumers.  A persistent grid of
//       min(tiles, SMs) blocks, one per SM (192 KB of shared memory); block b computes tiles b, b + grid,
//       ... in grouped raster order (gemm_tile.cuh).  Dynamic shared memory STAGES x (A + B) + barriers
//       + 1 KB to align: 197,696 bytes (BN 256) or 197,728 (BN 128), above 48 KB: the executor opts in.
//
// The pipeline.  Each stage of the ring holds a 128 x BK tile of A and a BN x BK tile of B, BK = 128 bytes of
// k (64 halves, 32 tf32), as TMA writes them: 128-byte rows, 128-byte swizzle, 1024-byte aligned.  Per stage,
// an mbarrier `full` (1 arrival: the producer's arrive.expect_tx of the stage's bytes, completed by the TMA
// transactions) and `empty` (2 arrivals: one per consumer warpgroup once its wgmmas reading the stage are
// done).  One producer thread walks the block's tiles and k-tiles: wait `empty` (parity phase ^ 1: a fresh
// barrier counts as released), arrive.expect_tx on `full`, issue the stage's TMA loads (boxes partly or
// wholly outside the matrix are zero-filled, which is how edges are handled: no predication anywhere).
// Consumer warpgroup w owns rows [64 w, 64 w + 64) of the tile and all BN columns: per k-tile it waits
// `full`, issues BK / KSTEP wgmma m64nBNk{16,8} (descriptors below), commits them as one group and waits
// until at most that group is in flight, so the previous stage's wgmmas are done and it releases that
// stage.  A tile's last stage is released after wgmma_wait<0>; then the warpgroup stores its 64 x BN
// accumulators (bias, ReLU, conversion) while the producer already fills the stages of the next tile.
// The ring's stage and phase run on across tiles.  setmaxnreg moves registers from the producer
// (40) to the consumers (232: 128 fp32 accumulators at BN 256): 40 + 2 x 232 = 504 <= 512 per thread-slot
// of the 64K-register file.
//
// Descriptors (PTX ISA, shared memory matrix layouts; 128-byte swizzle, so stride byte offset = 8 rows x 128
// bytes = 1024 between 8-row groups):
//   A K-major (stored M x K): rows of k; consumer w starts 64 rows in; k-slice j starts 32 j bytes into the row.
//   A M-major (stored K x M): two boxes of BK rows of k, each row 64 m (128 bytes); consumer w reads box w;
//       k-slice j is KSTEP rows further (KSTEP x 128 bytes).
//   B K-major (stored N x K): BN rows of k; k-slice j at 32 j bytes.
//   B N-major (stored K x N): BN / 64 boxes of BK rows of 64 n; leading byte offset = one box (BK x 128
//       bytes) between 64-wide groups of n; k-slice j KSTEP rows further.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM: 132 SMs, 2048 dense bf16 FMA per clock per SM (989 TFLOP/s at
// 1.83 GHz; ~945 at the ~1.75 GHz such loads sustain), from the sm_90a build of 128x256 nt bf16:
//   registers   168 per thread at launch (the cap for 384 threads, one block per SM), no spills, no local
//               memory; setmaxnreg 40 / 232 honoured (USETMAXREG in SASS, no ptxas warning).
//   tensor      per k-tile per SM: 2 warpgroups x 4 HGMMA.64x256x16 = 2.1 M FMA = 1024 clocks.
//   issue       85 SASS instructions per consumer warp per k-tile (4 of them HGMMA), 35 per producer
//               k-tile (2 UTMALDG for nt): 2 x 85 of 1024 issue slots per scheduler, 17 %: not a limit.
//   shared      per k-tile wgmma reads 2 x (8 KB of A + 32 KB of B) and TMA writes 48 KB: 125 B/clock of the
//               128 B/clock port, at the edge if both go through it.
//   L2 -> SM    48 KB per k-tile per SM, 47 B/clock/SM: about 11 TB/s for 132 SMs, beyond what H100's L2 is
//               reported to deliver without cluster multicast: the likely limit.
//   waves       4096^2: 512 tiles on 132 SMs (3.9 waves, 97 %); 8192^2: 2048 tiles (15.5 waves, 97 %).
//   epilogue    64 paired stores per thread per tile, ~1.5 K issue clocks against 65 K (K = 4096) or 131 K
//               (K = 8192) clocks of main loop: 2 % / 1 %, partly hidden by the producer's prefetch.
// => bf16/fp16 at 4096^3 and 8192^3: 570-680 TFLOP/s, 0.7-0.9x cuBLAS (~750-800); tf32 (same bytes and clocks
// per k-tile at half the FLOPs): 285-340 TFLOP/s, 0.65-0.85x cuBLAS TF32.  Short of issue 19's 1.0x: what
// remains is 2-CTA clusters with TMA multicast (halves B's L2 traffic), a TMA-store epilogue, and
// larger per-consumer tiles.  The GPU run confirms or refutes this.
//
// dlgpu-sass: gemm_wgmma_* arch=sm_90a HGMMA UTMALDG SYNCS !LDL !STL

#include "common.cuh"
#include "gemm_tile.cuh"
#include "ptx.cuh"
#include "ptx_sm90.cuh"

// wgmma and setmaxnreg exist on sm_90a alone; the harness models them.  Elsewhere the kernels trap (the
// launcher chooses them only on compute capability 9.0).
#if defined(DLGPU_HOST_HARNESS) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define WGMMA_GEMM_AVAILABLE 1
#else
#define WGMMA_GEMM_AVAILABLE 0
#endif

#define WGMMA_BM 128
#define WGMMA_THREADS 384
#define WGMMA_CONSUMERS 2
#define WGMMA_PRODUCER_REGISTERS 40
#define WGMMA_CONSUMER_REGISTERS 232

// The tile configurations, largest first: X(BM, BN, THREADS, STAGES).  dlgpu/cuda/gemm_wgmma.py reads this list.
#define GEMM_WGMMA_CONFIGS(X) \
    X(128, 256, 384, 4)       \
    X(128, 128, 384, 6)

// Sizes for precision P, BN columns and STAGES stages.
template <ptx::Precision P, int BN, int STAGES> struct WgmmaTiles {
    static constexpr int kElement = P == ptx::Precision::tf32 ? 4 : 2;
    static constexpr int kBK = 128 / kElement;     // k per stage: one 128-byte swizzled row
    static constexpr int kStep = 32 / kElement;    // k per wgmma: 16 halves or 8 tf32
    static constexpr int kABytes = WGMMA_BM * 128;  // 128 rows (or BK rows x 2 boxes) of 128 bytes
    static constexpr int kBBytes = BN * 128;
    static constexpr int kStageBytes = kABytes + kBBytes;
    static constexpr int kSharedBytes = STAGES * kStageBytes + 2 * STAGES * 8 + 1024;
    static_assert(kBK * kElement == 128 && BN % 64 == 0 && BN <= 256, "tiles of 128-byte rows");
};

// A consumer thread's 64 x BN accumulators to C through the fused epilogue.  Accumulator i is row
// 8 ((i / 2) % 2) and column 8 (i / 4) + i % 2 from the thread's (row0, col0) (ptx_sm90.cuh's fragment):
// pairs of adjacent columns, stored as one 8-byte (fp32) or 4-byte (16-bit) access when N is even (then
// every pair starts on an even column, so it is aligned and wholly inside when its first column is).
__device__ __forceinline__ void store_pair(float* at, float v0, float v1)
{
    *reinterpret_cast<float2*>(at) = make_float2(v0, v1);
}
__device__ __forceinline__ void store_one(float* at, float v) { *at = v; }
template <ptx::Precision P> __device__ __forceinline__ void store_pair(unsigned short* at, float v0, float v1)
{
    *reinterpret_cast<unsigned*>(at) = ptx::pack_half2<P>(v0, v1);
}
template <ptx::Precision P> __device__ __forceinline__ void store_one(unsigned short* at, float v)
{
    *at = (unsigned short)(ptx::pack_half2<P>(v, 0.0f) & 0xffffu);
}

template <ptx::Precision P, int BN, class Out>
__device__ __forceinline__ void store_accumulators(const float (&acc)[BN / 2], Out* c, const float* bias, int flags,
                                                   int row0, int col0, int M, int N)
{
    const bool pairs = N % 2 == 0;
    DLGPU_UNROLL
    for (int i = 0; i < BN / 2; i += 2) {
        const int row = row0 + 8 * ((i / 2) % 2), col = col0 + 8 * (i / 4);
        if (row >= M || col >= N) continue;
        const bool second = col + 1 < N;
        const float v0 = epilogue(acc[i], col, bias, flags);
        const float v1 = epilogue(acc[i + 1], second ? col + 1 : col, bias, flags);
        Out* const at = c + (long long)row * N + col;
        if constexpr (sizeof(Out) == 4) {
            if (pairs) store_pair(at, v0, v1);
            else {
                store_one(at, v0);
                if (second) store_one(at + 1, v1);
            }
        } else {
            if (pairs) store_pair<P>(at, v0, v1);
            else {
                store_one<P>(at, v0);
                if (second) store_one<P>(at + 1, v1);
            }
        }
    }
}

template <ptx::Precision P, int BN, int STAGES, bool kTransA, bool kTransB>
__device__ __forceinline__ void wgmma_gemm(const unsigned char* maps, const float* bias, void* c, int M, int N, int K,
                                           int flags)
{
#if WGMMA_GEMM_AVAILABLE
    using T = WgmmaTiles<P, BN, STAGES>;
    static_assert(P != ptx::Precision::tf32 || (!kTransA && kTransB), "tf32 operands must be K-major: layout nt");
    extern __shared__ __align__(1024) unsigned char wgmma_shared[];
    // The swizzle patterns repeat every 1024 bytes of shared address: tiles start on such a boundary.
    unsigned char* const smem = wgmma_shared + (1024 - ptx::shared_window_address(wgmma_shared) % 1024) % 1024;
    unsigned char* const a_tiles = smem;
    unsigned char* const b_tiles = smem + STAGES * T::kABytes;
    unsigned long long* const full = reinterpret_cast<unsigned long long*>(b_tiles + STAGES * T::kBBytes);
    unsigned long long* const empty = full + STAGES;
    const unsigned char* const map_a = maps;
    const unsigned char* const map_b = maps + 128;

    const int tiles_m = (M + WGMMA_BM - 1) / WGMMA_BM, tiles_n = (N + BN - 1) / BN;
    const int tiles = tiles_m * tiles_n, k_tiles = (K + T::kBK - 1) / T::kBK;
    const int warpgroup = threadIdx.x / 128;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            ptx::mbarrier_init(&full[s], 1);
            ptx::mbarrier_init(&empty[s], WGMMA_CONSUMERS);
        }
        ptx::fence_mbarrier_init();
    }
    __syncthreads();

    if (warpgroup == 0) {
        // ---- producer: one thread issues every TMA load of the block
        ptx::setmaxnreg_dec<WGMMA_PRODUCER_REGISTERS>();
        if (threadIdx.x != 0) return;
        ptx::prefetch_tensor_map(map_a);
        ptx::prefetch_tensor_map(map_b);
        int stage = 0;
        unsigned phase = 0;
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
            int tile_m, tile_n;
            grouped_tile(tile, tiles_m, tiles_n, tile_m, tile_n);
            const int m0 = tile_m * WGMMA_BM, n0 = tile_n * BN;
            for (int kt = 0; kt < k_tiles; ++kt) {
                const int k0 = kt * T::kBK;
                ptx::mbarrier_wait(&empty[stage], phase ^ 1);
                ptx::mbarrier_arrive_expect_tx(&full[stage], T::kStageBytes);
                unsigned char* const a = a_tiles + stage * T::kABytes;
                unsigned char* const b = b_tiles + stage * T::kBBytes;
                // Coordinates are (column, row) of the matrix as stored.
                if constexpr (kTransA) {
                    DLGPU_UNROLL
                    for (int box = 0; box < 2; ++box)
                        ptx::tma_load_2d(a + box * T::kBK * 128, map_a, m0 + 64 * box, k0, &full[stage]);
                } else {
                    ptx::tma_load_2d(a, map_a, k0, m0, &full[stage]);
                }
                if constexpr (kTransB) {
                    ptx::tma_load_2d(b, map_b, k0, n0, &full[stage]);
                } else {
                    DLGPU_UNROLL
                    for (int box = 0; box < BN / 64; ++box)
                        ptx::tma_load_2d(b + box * T::kBK * 128, map_b, n0 + 64 * box, k0, &full[stage]);
                }
                if (++stage == STAGES) {
                    stage = 0;
                    phase ^= 1;
                }
            }
        }
        return;
    }

    // ---- consumers: warpgroup w = 1, 2 computes rows [64 (w - 1), +64) of each tile
    ptx::setmaxnreg_inc<WGMMA_CONSUMER_REGISTERS>();
    const int consumer = warpgroup - 1;
    const bool releases = threadIdx.x % 128 == 0;  // one arrival per warpgroup on `empty`
    const unsigned a_base = ptx::shared_window_address(a_tiles), b_base = ptx::shared_window_address(b_tiles);
    int stage = 0;
    unsigned phase = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        int tile_m, tile_n;
        grouped_tile(tile, tiles_m, tiles_n, tile_m, tile_n);
        float acc[BN / 2];
        int previous = 0;
        for (int kt = 0; kt < k_tiles; ++kt) {
            ptx::mbarrier_wait(&full[stage], phase);
            const unsigned a_stage = a_base + stage * T::kABytes, b_stage = b_base + stage * T::kBBytes;
            ptx::wgmma_fence();
            ptx::wgmma_fence_operand(acc);
            DLGPU_UNROLL
            for (int j = 0; j < T::kBK / T::kStep; ++j) {
                const unsigned long long desc_a =
                    kTransA ? ptx::wgmma_descriptor(a_stage + consumer * T::kBK * 128 + j * T::kStep * 128,
                                                    T::kBK * 128, 1024, 128)
                            : ptx::wgmma_descriptor(a_stage + consumer * 64 * 128 + 32 * j, 16, 1024, 128);
                const unsigned long long desc_b =
                    kTransB ? ptx::wgmma_descriptor(b_stage + 32 * j, 16, 1024, 128)
                            : ptx::wgmma_descriptor(b_stage + j * T::kStep * 128, T::kBK * 128, 1024, 128);
                ptx::wgmma<BN, P, kTransA ? 1 : 0, kTransB ? 0 : 1>(acc, desc_a, desc_b, (kt | j) != 0);
            }
            ptx::wgmma_commit();
            ptx::wgmma_wait<1>();
            ptx::wgmma_fence_operand(acc);
            if (kt > 0 && releases) ptx::mbarrier_arrive(&empty[previous]);
            previous = stage;
            if (++stage == STAGES) {
                stage = 0;
                phase ^= 1;
            }
        }
        ptx::wgmma_wait<0>();
        ptx::wgmma_fence_operand(acc);
        if (releases) ptx::mbarrier_arrive(&empty[previous]);

        // ---- epilogue: while the producer already fills the next tile's stages
        const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
        const int row0 = tile_m * WGMMA_BM + consumer * 64 + warp * 16 + lane / 4;
        const int col0 = tile_n * BN + 2 * (lane % 4);
        // tf32 products are stored as fp32: no 16-bit store is even instantiated for them.
        bool half = false;
        if constexpr (P != ptx::Precision::tf32) {
            half = (flags & GEMM_STORE_HALF) != 0;
            if (half) store_accumulators<P, BN>(acc, static_cast<unsigned short*>(c), bias, flags, row0, col0, M, N);
        }
        if (!half) store_accumulators<P, BN>(acc, static_cast<float*>(c), bias, flags, row0, col0, M, N);
    }
#else
    __trap();
#endif
}

// ---------------------------------------------------------------- named instances
// Every configuration in every plain layout for bf16 and fp16, and in nt for tf32:
// gemm_wgmma_128x256_nn_bf16, ...
#define GEMM_WGMMA_KERNEL(layout, kTransA, kTransB, kMaskA, precision, BM, BN, THREADS, STAGES)                   \
    extern "C" __global__ void __launch_bounds__(THREADS, 1) gemm_wgmma_##BM##x##BN##_##layout##_##precision(     \
        const unsigned char* maps, const float* bias, void* c, int M, int N, int K, int flags)                  \
    {                                                                                                            \
        static_assert(BM == WGMMA_BM && THREADS == WGMMA_THREADS, "128 rows, a producer and two consumers");    \
        wgmma_gemm<ptx::Precision::precision, BN, STAGES, kTransA, kTransB>(maps, bias, c, M, N, K, flags);      \
    }
#define GEMM_WGMMA_KERNELS(...)                                  \
    GEMM_PLAIN_LAYOUTS(GEMM_WGMMA_KERNEL, bf16, __VA_ARGS__)     \
    GEMM_PLAIN_LAYOUTS(GEMM_WGMMA_KERNEL, fp16, __VA_ARGS__)     \
    GEMM_WGMMA_KERNEL(nt, false, true, false, tf32, __VA_ARGS__)
GEMM_WGMMA_CONFIGS(GEMM_WGMMA_KERNELS)
