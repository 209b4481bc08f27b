// kernels/gemm_wgmma.cu -- the matrix product on Hopper's warpgroup tensor cores (wgmma, TMA, mbarriers; sm_90a).
//
// Same contract as kernels/gemm.cu -- C (M x N, row-major) = epilogue(op(A) @ op(B)), `flags` EPILOGUE_BIAS /
// EPILOGUE_RELU (common.cuh), any M, N, K >= 1 -- but the operands are 16-bit (bf16, fp16) or fp32 read as
// tf32, straight from global memory by TMA, accumulated in fp32; C is fp32, or with GEMM_STORE_HALF the
// operands' 16-bit type.  The launcher is dlgpu/cuda/gemm_wgmma.py.
//
//   gemm_wgmma_128x<BN>_<layout>_<precision>(maps, bias, workspace, counters, M, N, K, flags, splits)
//       GEMM_WGMMA_CONFIGS below: BN 256 (4 stages, clusters of 2 CTAs) or 128 (6 stages, no cluster);
//       layouts nn, nt, tn, tt (GEMM_PLAIN_LAYOUTS) for bf16 and fp16, nt only for tf32
//       (wgmma reads tf32 operands K-major: A stored M x K, B stored N x K).  `maps`: TMA tensor maps of
//       128 bytes (dlgpu/cuda/tma.py), A's, B's and C's, each over the matrix as stored with the 128-byte
//       swizzle: A boxes of 128-byte rows, B's of BN / CLUSTER rows (each CTA of a cluster loads its
//       share), C's of 16 rows x 128 bytes; C (fp32 or 16-bit, M x N) is row-major with a pitch of 16-byte
//       multiples (the launcher pads it where N does not allow that).  bias: fp32 (N,).  splits: split-K ways (1: none), with `workspace` (fp32, a BM x BN
//       slice per tile and split) and `counters` (int, WGMMA_WARPS_PER_TILE per tile, zeroed).
//       384 threads: warpgroup 0 the producer, 1 and 2 the consumers.  A persistent grid of whole
//       clusters, at most one CTA per SM (225 KB of shared memory); cluster c computes units c,
//       c + clusters, ... (WgmmaSchedule: tiles in grouped raster order, gemm_tile.cuh, split-K ranges).
//       Dynamic shared memory STAGES x (A + B) + 32 KB of TMA-store staging + barriers + 1 KB to align:
//       230,464 bytes (BN 256) or 230,496 (BN 128), above 48 KB: the executor opts in.
//
// The pipeline.  Each stage of the ring holds a 128 x BK tile of A and a BN x BK tile of B, BK = 128 bytes of
// k (64 halves, 32 tf32), as TMA writes them: 128-byte rows, 128-byte swizzle, 1024-byte aligned.  Per stage,
// an mbarrier `full` (1 arrival: the producer's arrive.expect_tx of the stage's bytes, completed by the TMA
// transactions) and `empty` (2 x CLUSTER arrivals: one per consumer warpgroup of the cluster once its wgmmas
// reading the stage are done).  One producer thread walks the block's units and their k-tiles: wait `empty`
// (parity phase ^ 1: a fresh barrier counts as released), arrive.expect_tx on `full`, issue the stage's TMA
// loads (boxes partly or wholly outside the matrix are zero-filled, which is how edges are handled: no
// predication anywhere).
// Consumer warpgroup w owns rows [64 w, 64 w + 64) of the tile and all BN columns: per k-tile it waits
// `full`, issues BK / KSTEP wgmma m64nBNk{16,8} (descriptors below), commits them as one group and waits
// until at most that group is in flight, so the previous stage's wgmmas are done and it releases that
// stage.  A tile's last stage is released after wgmma_wait<0>; then the warpgroup stores its 64 x BN
// accumulators (bias, ReLU, conversion) while the producer already fills the stages of the next tile.
// The ring's stage and phase run on across units (these steps: StageRing, wgmma_tile.cuh).  setmaxnreg
// moves registers from the producer (40) to the consumers (232: 128 fp32 accumulators at BN 256):
// 40 + 2 x 232 = 504 <= 512 per thread-slot of the 64K-register file.
//
// Clusters (BN 256).  The two CTAs of a cluster compute vertically adjacent tiles (rows m0 and m0 + 128,
// the same BN columns), so they need the same B tile: each CTA's producer loads half of it
// (multicast::cluster) into the same stage of both CTAs, and each CTA's `full` barrier expects its own A
// plus the whole B.  A stage may be refilled only when the consumers of both CTAs are done with it, as
// the peer's producer writes into it too: `empty` counts 2 x 2 arrivals, and each consumer warpgroup
// arrives on the stage's `empty` in both CTAs (mapa + mbarrier.arrive.shared::cluster).  barrier.cluster
// after the barriers' init (before any peer's copy or arrival reaches them) and before exit (no CTA
// leaves while its peer can still arrive on its barriers).
//
// The epilogue.  Each consumer warp writes its 16 x BN accumulators (bias, ReLU, conversion) into two
// staging boxes of 16 rows x 128 bytes in shared memory (128-byte swizzle, no bank conflicts) and lane 0
// stores them with cp.async.bulk.tensor, which clips at M and N; before refilling a box it waits until the
// previous stores have read it (bulk wait_group.read).  One path only: a second one storing from
// registers (for pitches TMA cannot take) made ptxas take over twice as long.  Split-K: each warp writes its
// partial sums to the workspace and counts itself in on its tile's counter; the last of the splits adds
// all of them in split order (the result does not depend on who came last) and stores C.
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
//               memory; setmaxnreg 40 / 232 honoured (USETMAXREG in SASS, no ptxas warning).  The SASS has
//               UTMALDG.2D.MULTICAST for B's share, UTMASTG for C, UCGABAR_ARV/WAIT for the cluster barrier.
//   tensor      per k-tile per SM: 2 warpgroups x 4 HGMMA.64x256x16 = 2.1 M FMA = 1024 clocks.
//   issue       the first round's count, 85 SASS instructions per consumer warp per k-tile (4 HGMMA), plus the
//               second `empty` arrival (mapa + arrive to the peer): ~2 x 90 of 1024 issue slots per scheduler,
//               under 20 %: not a limit.
//   L2 -> SM    per k-tile per SM 16 KB of A and, with B multicast to the cluster's 2 CTAs, half of B's 32 KB:
//               32 KB (48 KB without the cluster), 31 B/clock/SM, about 7.3 TB/s for 132 SMs: a third less
//               than before, no longer far past what H100's L2 is reported to deliver.  Multicast along M
//               shares the larger operand; a 2 x 2 cluster would take it to 24 KB (not done).
//   shared      per k-tile wgmma reads 2 x (8 KB of A + 32 KB of B) and TMA writes 48 KB: 125 B/clock of the
//               128 B/clock port (multicast does not change what lands in each CTA): now the likely limit.
//   waves       4096^2: 256 cluster tiles on 66 clusters (3.9 waves, 97 %); 8192^2: 1024 (15.5 waves, 97 %),
//               assuming all 66 pairs of SMs co-schedule (clusters must fit a GPC).
//   epilogue    per thread 64 8-byte shared stores and per warp 8 (fp32) or 4 (16-bit) bulk stores, whose
//               global writes are whole 128-byte lines issued by the TMA unit while the consumers go on to
//               the next tile; before, 64 global stores per thread each touching 8 half-used lines: ~1-2 % of
//               the main loop, now ~0.5-1 %.
//   split-K     only for shapes of few tiles: 512 x 512 x 8192 (16 tiles of 128x128) splits 8 ways, 128 CTAs
//               busy instead of 16, for 8 x 64 KB of fp32 partial sums through L2 per tile.
// => bf16/fp16 at 4096^3 and 8192^3: 650-760 TFLOP/s, 0.8-0.95x cuBLAS (~750-800); tf32 (same bytes and clocks
// per k-tile at half the FLOPs): 325-380 TFLOP/s, 0.75-0.9x cuBLAS TF32.  Still not sure of issue 19's 1.0x:
// the shared-memory port remains, and the GPU run confirms or refutes all of this.
//
// dlgpu-sass: gemm_wgmma_* arch=sm_90a HGMMA UTMALDG UTMASTG SYNCS !LDL !STL
// dlgpu-sass: gemm_wgmma_128x256_* arch=sm_90a UTMALDG.MULTICAST UCGABAR_ARV UCGABAR_WAIT

#include "common.cuh"
#include "gemm_tile.cuh"
#include "ptx.cuh"
#include "ptx_sm90.cuh"
#include "wgmma_tile.cuh"

// setmaxnreg budgets: the producer's thread needs few registers, the consumers' 128 fp32 accumulators
// (BN 256) many.
#define WGMMA_PRODUCER_REGISTERS 40
#define WGMMA_CONSUMER_REGISTERS 232

// The tile configurations, largest first: X(BM, BN, THREADS, STAGES, CLUSTER).  CLUSTER CTAs along M
// share each B tile by multicast.  dlgpu/cuda/gemm_wgmma.py reads this list.
#define GEMM_WGMMA_CONFIGS(X)    \
    X(128, 256, 384, 4, 2)       \
    X(128, 128, 384, 6, 1)

// Split-K: a warp's partial sums go to its unit's slice of `workspace`, in fragment order (each store
// instruction writes 32 consecutive floats); the warp then counts itself in on its tile's counter.  The
// warp that arrives last adds every split's partials, in split order (so the sum does not depend on who
// came last), into `acc` and returns true; the others return false.  Each writer fences before the
// count, and the last warp after it (as CUDA's threadFenceReduction sample does, with __syncwarp for its
// __syncthreads); its loads bypass L1 (ld.global.cg), which never held these lines.
template <int BN>
__device__ __forceinline__ bool reduce_splits(float (&acc)[BN / 2], float* workspace, int* counters, int tile,
                                              int split, int splits, int warp_in_tile)
{
    const int lane = threadIdx.x % 32;
    constexpr long long kTileFloats = WGMMA_BM * BN, kWarpFloats = kTileFloats / WGMMA_WARPS_PER_TILE;
    float* const mine = workspace + ((long long)tile * splits + split) * kTileFloats + warp_in_tile * kWarpFloats;
    DLGPU_UNROLL
    for (int i = 0; i < BN / 2; ++i) mine[i * 32 + lane] = acc[i];
    __threadfence();
    __syncwarp();
    int arrived = 0;
    if (lane == 0) arrived = atomicAdd(&counters[tile * WGMMA_WARPS_PER_TILE + warp_in_tile], 1);
    arrived = __shfl_sync(DLGPU_FULL_WARP, arrived, 0);
    if (arrived != splits - 1) return false;
    __syncwarp();  // what lane 0's count saw, to every lane (bar.warp.sync orders memory among its lanes)
    __threadfence();
    const float* const first = workspace + (long long)tile * splits * kTileFloats + warp_in_tile * kWarpFloats;
    DLGPU_UNROLL
    for (int i = 0; i < BN / 2; ++i) acc[i] = __ldcg(first + i * 32 + lane);
    for (int s = 1; s < splits; ++s) {
        DLGPU_UNROLL
        for (int i = 0; i < BN / 2; ++i) acc[i] += __ldcg(first + s * kTileFloats + i * 32 + lane);
    }
    return true;
}

// ---------------------------------------------------------------- the kernel
template <ptx::Precision P, int BN, int STAGES, int CLUSTER, bool kTransA, bool kTransB>
__device__ __forceinline__ void wgmma_gemm(const unsigned char* maps, const float* bias, float* workspace,
                                           int* counters, int M, int N, int K, int flags, int splits)
{
#if WGMMA_AVAILABLE
    using T = WgmmaTiles<P, BN, STAGES>;
    static_assert(P != ptx::Precision::tf32 || (!kTransA && kTransB), "tf32 operands must be K-major: layout nt");
    static_assert(CLUSTER == 1 || CLUSTER == 2, "clusters of one or two CTAs");
    extern __shared__ __align__(1024) unsigned char wgmma_shared[];
    const auto [a_tiles, b_tiles, staging, full, empty] = T::carve(wgmma_shared);
    const unsigned char* const map_a = maps;
    const unsigned char* const map_b = maps + 128;
    const unsigned char* const map_c = maps + 256;

    const WgmmaSchedule<BN, CLUSTER> schedule(M, N, K, T::kBK, splits);
    const int rank = CLUSTER == 1 ? 0 : (int)ptx::cluster_ctarank();
    const int cluster = blockIdx.x / CLUSTER, clusters = gridDim.x / CLUSTER;
    const int warpgroup = threadIdx.x / 128;

    // `full` expects the producer's arrive.expect_tx; `empty` the consumer warpgroups of the whole cluster, as
    // each CTA's producer writes (its half of B) into every CTA's copy of a stage.
    StageRing<STAGES, CLUSTER> ring(full, empty);
    if (threadIdx.x == 0) ring.init(1);
    // The barriers of every CTA are initialized before any CTA's copies or arrivals reach them.
    if constexpr (CLUSTER > 1) {
        ptx::cluster_arrive();
        ptx::cluster_wait();
    } else {
        __syncthreads();
    }

    if (warpgroup == 0) {
        // ---- producer: one thread issues every TMA load of the block
        ptx::setmaxnreg_dec<WGMMA_PRODUCER_REGISTERS>();
        if (threadIdx.x != 0) return;
        ptx::prefetch_tensor_map(map_a);
        ptx::prefetch_tensor_map(map_b);
        for (int u = cluster; u < schedule.units; u += clusters) {
            int tile_m, tile_n, split, begin, end;
            schedule.unit(u, rank, tile_m, tile_n, split, begin, end);
            const int m0 = tile_m * WGMMA_BM, n0 = tile_n * BN;
            for (int kt = begin; kt < end; ++kt) {
                const int k0 = kt * T::kBK, stage = ring.stage;
                ring.wait_empty();
                // The whole stage lands here: A from this CTA's loads, B from every CTA's share.
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
                // This CTA's share of B: one box of BN / CLUSTER rows of k (K-major), or BN / 64 / CLUSTER
                // boxes of 64 columns (N-major), sent to every CTA of the cluster.
                constexpr int kBoxes = kTransB ? 1 : BN / 64 / CLUSTER;
                DLGPU_UNROLL
                for (int box = 0; box < kBoxes; ++box) {
                    int c0, c1, offset;
                    if constexpr (kTransB) {
                        c0 = k0, c1 = n0 + rank * (BN / CLUSTER), offset = rank * (BN / CLUSTER) * 128;
                    } else {
                        const int group = rank * kBoxes + box;
                        c0 = n0 + 64 * group, c1 = k0, offset = group * T::kBK * 128;
                    }
                    if constexpr (CLUSTER == 1) ptx::tma_load_2d(b + offset, map_b, c0, c1, &full[stage]);
                    else ptx::tma_load_2d_multicast(b + offset, map_b, c0, c1, &full[stage], (1u << CLUSTER) - 1);
                }
                ring.advance();
            }
        }
        return;
    }

    // ---- consumers: warpgroup w = 1, 2 computes rows [64 (w - 1), +64) of each tile
    ptx::setmaxnreg_inc<WGMMA_CONSUMER_REGISTERS>();
    const int consumer = warpgroup - 1;
    const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
    const bool releases = threadIdx.x % 128 == 0;  // one arrival per warpgroup on each CTA's `empty`
    const unsigned a_base = ptx::shared_window_address(a_tiles), b_base = ptx::shared_window_address(b_tiles);
    unsigned char* const my_staging = staging + (consumer * 4 + warp) * WGMMA_STORE_BOXES * T::kBoxBytes;
    for (int u = cluster; u < schedule.units; u += clusters) {
        int tile_m, tile_n, split, begin, end;
        schedule.unit(u, rank, tile_m, tile_n, split, begin, end);
        float acc[BN / 2];
        for (int kt = begin; kt < end; ++kt) {
            ring.wait_full();
            const unsigned a_stage = a_base + ring.stage * T::kABytes, b_stage = b_base + ring.stage * T::kBBytes;
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
                ptx::wgmma<BN, P, kTransA ? 1 : 0, kTransB ? 0 : 1>(acc, desc_a, desc_b, kt != begin || j != 0);
            }
            ring.end_k_tile(acc, kt > begin, releases);
        }
        ring.end_unit(acc, releases);

        // ---- epilogue: while the producer already fills the next unit's stages
        if (tile_m >= schedule.tiles_m) continue;  // the upper CTA past M's last tile row: nothing to store
        if (splits > 1 && !reduce_splits<BN>(acc, workspace, counters, tile_m * schedule.tiles_n + tile_n, split,
                                             splits, consumer * 4 + warp))
            continue;
        const int row0 = tile_m * WGMMA_BM + consumer * 64 + warp * 16;
        const int col0 = tile_n * BN;
        // tf32 products are stored as fp32: no 16-bit store is even instantiated for them.
        bool half = false;
        if constexpr (P != ptx::Precision::tf32) half = (flags & GEMM_STORE_HALF) != 0;
        if constexpr (P != ptx::Precision::tf32)
            if (half) store_tma<P, BN, unsigned short>(acc, my_staging, map_c, bias, flags, row0, col0, N);
        if (!half) store_tma<P, BN, float>(acc, my_staging, map_c, bias, flags, row0, col0, N);
    }
    // The TMA stores have written C before the block ends (and read the staging boxes before they go).
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
// Every configuration in every plain layout for bf16 and fp16, and in nt for tf32:
// gemm_wgmma_128x256_nn_bf16, ...
#define GEMM_WGMMA_KERNEL(layout, kTransA, kTransB, kMaskA, precision, BM, BN, THREADS, STAGES, CLUSTER)          \
    extern "C" __global__ void WGMMA_CLUSTER_DIMS(CLUSTER) __launch_bounds__(THREADS, 1)                          \
        gemm_wgmma_##BM##x##BN##_##layout##_##precision(const unsigned char* maps, const float* bias,               \
                                                        float* workspace, int* counters, int M, int N, int K,     \
                                                        int flags, int splits)                                    \
    {                                                                                                            \
        static_assert(BM == WGMMA_BM && THREADS == WGMMA_THREADS, "128 rows, a producer and two consumers");    \
        wgmma_gemm<ptx::Precision::precision, BN, STAGES, CLUSTER, kTransA, kTransB>(maps, bias, workspace,     \
                                                                                     counters, M, N, K, flags,   \
                                                                                     splits);                    \
    }
#define GEMM_WGMMA_KERNELS(...)                                  \
    GEMM_PLAIN_LAYOUTS(GEMM_WGMMA_KERNEL, bf16, __VA_ARGS__)     \
    GEMM_PLAIN_LAYOUTS(GEMM_WGMMA_KERNEL, fp16, __VA_ARGS__)     \
    GEMM_WGMMA_KERNEL(nt, false, true, false, tf32, __VA_ARGS__)
GEMM_WGMMA_CONFIGS(GEMM_WGMMA_KERNELS)
