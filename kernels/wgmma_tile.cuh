// kernels/wgmma_tile.cuh -- what the Hopper (wgmma + TMA + mbarrier) families share: gemm_wgmma.cu and
// conv2d_wgmma.cu.  Both run a persistent block of one producer and two consumer warpgroups over a ring of
// stages, each stage a 128-row A tile and a BN-row B tile of 128-byte swizzled rows of k (K-major for the
// conv; gemm_wgmma.cu's header describes the ring, the descriptors and the epilogue in full).
//
//   WGMMA_AVAILABLE                     1 where wgmma exists (sm_90a, and the CPU harness), else 0: the
//                                       kernels' bodies are built only then (elsewhere they trap)
//   WGMMA_CLUSTER_DIMS(n)               the kernel attribute for clusters of n CTAs (nothing for n = 1)
//   WGMMA_BM, WGMMA_THREADS, WGMMA_CONSUMERS
//                                       128 rows per tile, 384 threads: warpgroup 0 the producer, 1 and
//                                       2 the consumers (64 rows each)
//   WGMMA_STORE_ROWS, WGMMA_STORE_BOXES, WGMMA_WARPS_PER_TILE
//                                       the epilogue's TMA-store boxes (16 rows x 128 bytes), two per
//                                       consumer warp, 8 consumer warps per tile
//   WgmmaTiles<P, BN, STAGES>           the byte sizes of a stage, the staging boxes, the whole shared
//                                       memory (dlgpu/cuda/gemm_wgmma.py: shared_bytes mirrors it)
//   StageRing<STAGES, CLUSTER>          a cursor over the ring (stage, phase) with its barriers' steps: the
//                                       producer's wait for a free stage, the consumers' wait for a full
//                                       one and their end of a k-tile (commit, wait, release the previous
//                                       stage in every CTA of the cluster)
//   WgmmaSchedule<BN, CLUSTER>          the units (tiles, or split-K ranges of a tile) of a persistent
//                                       grid, in grouped raster order
//   store_tma<P, BN, Out>(...)          a consumer warp's 16 x BN accumulators, with bias and ReLU, out
//                                       through swizzled staging boxes and TMA stores
#pragma once

#include "common.cuh"
#include "gemm_tile.cuh"
#include "ptx.cuh"
#include "ptx_sm90.cuh"

// wgmma, setmaxnreg and multicast exist on sm_90a alone; the harness models them.  Elsewhere the kernels
// trap (their launchers choose them only on compute capability 9.0) and declare no cluster.
#if defined(DLGPU_HOST_HARNESS) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define WGMMA_AVAILABLE 1
#define WGMMA_CLUSTER_DIMS_2 __cluster_dims__(2, 1, 1)
#else
#define WGMMA_AVAILABLE 0
#define WGMMA_CLUSTER_DIMS_2
#endif
#define WGMMA_CLUSTER_DIMS_1
#define WGMMA_CLUSTER_DIMS(n) WGMMA_CLUSTER_DIMS_##n  // a kernel attribute for clusters of n > 1

#define WGMMA_BM 128
#define WGMMA_THREADS 384
#define WGMMA_CONSUMERS 2
#define WGMMA_STORE_ROWS 16    // a TMA store box: one consumer warp's 16 rows of 128 bytes
#define WGMMA_STORE_BOXES 2    // staging boxes per consumer warp
#define WGMMA_WARPS_PER_TILE 8 // consumer warps of a tile: one split-K counter each

// Sizes for precision P, BN columns and STAGES stages.
template <ptx::Precision P, int BN, int STAGES> struct WgmmaTiles {
    static constexpr int kElement = P == ptx::Precision::tf32 ? 4 : 2;
    static constexpr int kBK = 128 / kElement;     // k per stage: one 128-byte swizzled row
    static constexpr int kStep = 32 / kElement;    // k per wgmma: 16 halves or 8 tf32
    static constexpr int kABytes = WGMMA_BM * 128;  // 128 rows (or BK rows x 2 boxes) of 128 bytes
    static constexpr int kBBytes = BN * 128;
    static constexpr int kStageBytes = kABytes + kBBytes;
    static constexpr int kBoxBytes = WGMMA_STORE_ROWS * 128;
    static constexpr int kStagingBytes = WGMMA_WARPS_PER_TILE * WGMMA_STORE_BOXES * kBoxBytes;
    static constexpr int kSharedBytes = STAGES * kStageBytes + kStagingBytes + 2 * STAGES * 8 + 1024;
    static_assert(kBK * kElement == 128 && BN % 64 == 0 && BN <= 256, "tiles of 128-byte rows");

    // The dynamic shared memory (kSharedBytes) as the kernels carve it: the ring's A tiles, its B tiles, the
    // consumer warps' TMA-store staging boxes, then a `full` and an `empty` barrier per stage.  The tiles start
    // on a 1024-byte boundary, where the 128-byte swizzle pattern repeats (the same offset in every CTA of a
    // kernel, as multicast needs).
    struct Shared {
        unsigned char* a_tiles;
        unsigned char* b_tiles;
        unsigned char* staging;
        unsigned long long* full;
        unsigned long long* empty;
    };
    static __device__ __forceinline__ Shared carve(unsigned char* dynamic_shared)
    {
        unsigned char* const base =
            dynamic_shared + (1024 - ptx::shared_window_address(dynamic_shared) % 1024) % 1024;
        unsigned char* const staging = base + STAGES * kStageBytes;
        unsigned long long* const full = reinterpret_cast<unsigned long long*>(staging + kStagingBytes);
        return Shared{base, base + STAGES * kABytes, staging, full, full + STAGES};
    }
};

// ---------------------------------------------------------------- the ring
// Each stage has a `full` barrier (the fill's arrivals and TMA bytes) and an `empty` one (one arrival per
// consumer warpgroup of each of the CLUSTER CTAs whose producers write into the stage: with multicast, every
// CTA's copy of a stage is refilled by every CTA).  The producer and each consumer warpgroup keep their own
// cursor: all walk the block's k-tiles in the same order, so the cursors agree without talking.  The stage and
// the parity of its barriers' phase run on across units; the phase flips each time the ring wraps.
template <int STAGES, int CLUSTER> struct StageRing {
    unsigned long long* full;
    unsigned long long* empty;
    int stage = 0;
    unsigned phase = 0;
    int previous = 0;  // a consumer's: the stage of its last k-tile, released once that k-tile's wgmmas are done

    __device__ __forceinline__ StageRing(unsigned long long* full_, unsigned long long* empty_)
        : full(full_), empty(empty_)
    {
    }
    // By one thread, before the block's barrier (or the cluster's) that publishes the barriers.
    __device__ __forceinline__ void init(unsigned full_arrivals) const
    {
        for (int s = 0; s < STAGES; ++s) {
            ptx::mbarrier_init(&full[s], full_arrivals);
            ptx::mbarrier_init(&empty[s], WGMMA_CONSUMERS * CLUSTER);
        }
        ptx::fence_mbarrier_init();
    }
    __device__ __forceinline__ void advance()
    {
        if (++stage == STAGES) {
            stage = 0;
            phase ^= 1;
        }
    }
    // The producer, before filling the stage: every consumer is done with it (parity phase ^ 1: a fresh
    // barrier counts as released).
    __device__ __forceinline__ void wait_empty() const { ptx::mbarrier_wait(&empty[stage], phase ^ 1); }
    // A consumer, before reading the stage: its fill has landed.
    __device__ __forceinline__ void wait_full() const { ptx::mbarrier_wait(&full[stage], phase); }

    // A consumer warpgroup, after issuing a k-tile's wgmmas: commits them as one group and waits until at most
    // that group is in flight, so the previous k-tile's wgmmas are done and its stage is released (only if it
    // is the same unit's: end_unit released the last unit's).  `releases`: this thread arrives for its
    // warpgroup.
    template <int R> __device__ __forceinline__ void end_k_tile(float (&acc)[R], bool has_previous, bool releases)
    {
        ptx::wgmma_commit();
        ptx::wgmma_wait<1>();
        ptx::wgmma_fence_operand(acc);
        if (has_previous && releases) release(previous);
        previous = stage;
        advance();
    }
    // After a unit's last k-tile: every wgmma done, the accumulators readable, the last stage released.
    template <int R> __device__ __forceinline__ void end_unit(float (&acc)[R], bool releases)
    {
        ptx::wgmma_wait<0>();
        ptx::wgmma_fence_operand(acc);
        if (releases) release(previous);
        previous = 0;  // a constant, not a register, through the epilogue: the SASS is 1-2 instructions shorter
    }
    // One arrival on stage s's `empty` in every CTA of the cluster.
    __device__ __forceinline__ void release(int s) const
    {
        if constexpr (CLUSTER == 1) {
            ptx::mbarrier_arrive(&empty[s]);
        } else {
            DLGPU_UNROLL
            for (int r = 0; r < CLUSTER; ++r) ptx::mbarrier_arrive_cluster(&empty[s], r);
        }
    }
};

// ---------------------------------------------------------------- the work of a persistent block
// A unit is one tile of C, or with split-K one of `splits` ranges of its k-tiles.  Units are numbered
// per cluster tile (CLUSTER tiles stacked along M, computed by the cluster's CTAs together), splits
// fastest, cluster tiles in grouped raster order; cluster c walks units c, c + clusters, ...  Every
// split is non-empty: the launcher picks `splits` so that (splits - 1) x per_split < k_tiles.
template <int BN, int CLUSTER> struct WgmmaSchedule {
    int tiles_m, tiles_n, pairs_m, units, k_tiles, splits, per_split;

    __device__ __forceinline__ WgmmaSchedule(int M, int N, int K, int bk, int splits_)
        : tiles_m((M + WGMMA_BM - 1) / WGMMA_BM), tiles_n((N + BN - 1) / BN),
          pairs_m((tiles_m + CLUSTER - 1) / CLUSTER), units(pairs_m * tiles_n * splits_),
          k_tiles((K + bk - 1) / bk), splits(splits_), per_split((k_tiles + splits_ - 1) / splits_)
    {
    }
    // The tile of unit u for the CTA of cluster rank `rank`, its split and its k-tiles [begin, end).
    // With an odd number of tile rows, the last cluster tile's upper CTA gets tile_m == tiles_m: it
    // loads zeros (TMA fills boxes outside A) and stores nothing, but keeps its cluster in step.
    __device__ __forceinline__ void unit(int u, int rank, int& tile_m, int& tile_n, int& split, int& begin,
                                         int& end) const
    {
        int pair_m;
        grouped_tile(u / splits, pairs_m, tiles_n, pair_m, tile_n);
        tile_m = pair_m * CLUSTER + rank;
        split = u % splits;
        begin = split * per_split;
        end = begin + per_split < k_tiles ? begin + per_split : k_tiles;
    }
};

// ---------------------------------------------------------------- the epilogue
// A consumer thread's 64 x BN accumulators: accumulator i is row 8 ((i / 2) % 2) and column 8 (i / 4) + i % 2
// from the thread's (row0, col0) (ptx_sm90.cuh's fragment), so pairs (i, i + 1) are adjacent columns.
__device__ __forceinline__ void store_pair(float* at, float v0, float v1)
{
    *reinterpret_cast<float2*>(at) = make_float2(v0, v1);
}
template <ptx::Precision P> __device__ __forceinline__ void store_pair(unsigned short* at, float v0, float v1)
{
    *reinterpret_cast<unsigned*>(at) = ptx::pack_half2<P>(v0, v1);
}

// The fused epilogue of a column that may lie past N (its bias is not read there).
__device__ __forceinline__ float epilogue_at(float v, int col, int N, const float* bias, int flags)
{
    return col < N ? epilogue(v, col, bias, flags) : 0.0f;
}

// Through shared memory and TMA stores: the warp's 16 rows go out in boxes of 16 rows x 128 bytes (32
// fp32 or 64 16-bit columns), written into the warp's WGMMA_STORE_BOXES staging boxes with the 128-byte
// swizzle (16-byte chunk c of row r at chunk c ^ (r % 8): the 8 rows a store instruction touches hit 8
// different chunks, no bank conflict) and stored by lane 0; TMA clips the boxes at M and N.  A round
// waits until the previous round's stores have read the staging boxes.
template <ptx::Precision P, int BN, class Out>
__device__ __forceinline__ void store_tma(const float (&acc)[BN / 2], unsigned char* staging, const unsigned char* map,
                                          const float* bias, int flags, int box_row, int tile_col, int N)
{
    constexpr int kOut = sizeof(Out), kCols = 128 / kOut, kBoxes = BN / kCols;
    constexpr int kRounds = (kBoxes + WGMMA_STORE_BOXES - 1) / WGMMA_STORE_BOXES;
    const int lane = threadIdx.x % 32;
    DLGPU_UNROLL
    for (int round = 0; round < kRounds; ++round) {
        if (lane == 0) ptx::bulk_wait_read<0>();
        __syncwarp();
        DLGPU_UNROLL
        for (int i = 0; i < BN / 2; i += 2) {
            const int box = 8 * (i / 4) / kCols;  // the same for every lane: boxes hold whole 8-column groups
            if (box / WGMMA_STORE_BOXES != round) continue;
            const int row = lane / 4 + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * (lane % 4);
            const float v0 = epilogue_at(acc[i], tile_col + col, N, bias, flags);
            const float v1 = epilogue_at(acc[i + 1], tile_col + col + 1, N, bias, flags);
            const int byte = (col % kCols) * kOut;
            Out* const at = reinterpret_cast<Out*>(staging + (box % WGMMA_STORE_BOXES) * WGMMA_STORE_ROWS * 128 +
                                                   row * 128 + ((byte / 16) ^ (row % 8)) * 16 + byte % 16);
            if constexpr (kOut == 4) store_pair(at, v0, v1);
            else store_pair<P>(at, v0, v1);
        }
        ptx::fence_proxy_async_shared();  // each writer's stores, visible to the TMA unit
        __syncwarp();
        if (lane == 0) {
            DLGPU_UNROLL
            for (int box = round * WGMMA_STORE_BOXES; box < kBoxes && box < (round + 1) * WGMMA_STORE_BOXES; ++box)
                ptx::tma_store_2d(map, tile_col + box * kCols, box_row,
                                  staging + (box % WGMMA_STORE_BOXES) * WGMMA_STORE_ROWS * 128);
            ptx::bulk_commit();
        }
    }
}
