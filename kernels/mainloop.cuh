// kernels/mainloop.cuh -- what every tiled main loop shares: the GEMM families (gemm.cu, gemm_tc.cu)
// and the implicit-GEMM convolutions (conv2d.cu, conv2d_tc.cu), on CUDA cores and on tensor cores.
// Each family keeps what is its own: how operands reach shared memory, which thread owns which
// outputs, and where the outputs go.
//
//   k_tile_pipeline<STAGES, kAsync, kTestFirst>(tiles, issue, store, compute[, landed])
//                        the loop over the reduction's tiles, STAGES shared-memory stages deep
//   fma_tile<BK, SA, SB, ROW_GAP, COL_GAP>(acc, as, bs)
//                        one reduction tile of a CUDA-core thread tile (FFMA outer products)
//   mma_tile<P>(acc, af, bf)
//                        one k-step of a warp's MT x NT tensor-core tiles
#pragma once

#include "common.cuh"
#include "ptx.cuh"

// ---------------------------------------------------------------- tile configurations
// Each tiled family lists its tile configurations once, as an X-macro `<FAMILY>_CONFIGS(X)` whose
// entries X(BM, BN, THREADS, ...) start with the block tile and the block size; the rest is the
// family's own.  The list expands into the family's named `extern "C"` kernels (BM x BN in the
// name, THREADS in __launch_bounds__), and dlgpu/cuda/kernel_decls.py reads it for the launchers'
// registries, so a configuration is written in one place.

// ---------------------------------------------------------------- the pipeline
// Tile t + STAGES - 1 is loading while tile t is multiplied.  The caller's steps:
//   issue(tile, stage)  start the global loads of reduction tile `tile`: cp.async into `stage`,
//                       or into registers (which takes the loads' latency off the critical path)
//   store(stage)        write what `issue` left in registers into `stage`
//   compute(stage)      multiply the tile held in `stage`
//   landed(stage)       (optional) touch what this thread's own cp.async copies put into `stage`,
//                       once they have landed and before the barrier that publishes the stage to
//                       the other threads (tf32 operands are rounded there, once per tile)
// kAsync: `issue` uses cp.async, one commit group per tile, and a tile's group is waited for
// before the barrier that publishes it; loaders that only use registers leave the group
// bookkeeping out.  kTestFirst: the prologue tests `0 < tiles` before it issues tile 0.  Every
// caller's loaders read zeros past the reduction's end, so the test changes only the code ptxas
// makes: the GEMMs keep their register counts with it, the convolutions theirs without it.  A barrier after the prologue and one closing each iteration: it publishes
// the next tile, and it tells every thread that the stage just read is free, so the next
// iteration's `issue` and `store` may refill it.
struct NothingLanded {
    __device__ __forceinline__ void operator()(int) const {}
};

template <int STAGES, bool kAsync, bool kTestFirst, class Issue, class Store, class Compute,
          class Landed = NothingLanded>
__device__ __forceinline__ void k_tile_pipeline(int tiles, Issue issue, Store store, Compute compute,
                                                Landed landed = {})
{
    static_assert(STAGES >= 2, "a pipeline has at least two stages");
    // ---- prologue: tiles 0 .. STAGES-2 in flight (one cp.async group each, even when empty)
    DLGPU_UNROLL
    for (int s = 0; s < STAGES - 1; ++s) {
        if ((s == 0 && !kTestFirst) || s < tiles) {
            issue(s, s);
            store(s);
        }
        if constexpr (kAsync) ptx::cp_async_commit();
    }
    if constexpr (kAsync) ptx::cp_async_wait<STAGES - 2>();
    if (0 < tiles) landed(0);
    __syncthreads();
    // ---- main loop: start tile t + STAGES - 1, multiply tile t, publish tile t + 1
    for (int t = 0; t < tiles; ++t) {
        const int next = t + STAGES - 1;
        if (next < tiles) issue(next, next % STAGES);
        if constexpr (kAsync) ptx::cp_async_commit();
        compute(t % STAGES);
        // Registers -> the stage tile t - 1 occupied (every thread left it before the last barrier).
        if (next < tiles) store(next % STAGES);
        if constexpr (kAsync) ptx::cp_async_wait<STAGES - 2>();
        if (t + 1 < tiles) landed((t + 1) % STAGES);
        __syncthreads();
    }
    if constexpr (kAsync) ptx::cp_async_wait_all();
}

// ---------------------------------------------------------------- CUDA cores
// v[4q .. 4q + 3] = p[q * GAP .. q * GAP + 3]: runs of four floats, each one LDS.128.
template <int GAP, int N> __device__ __forceinline__ void load_runs(float (&v)[N], const float* p)
{
    DLGPU_UNROLL
    for (int q = 0; q < N / 4; ++q) {
        const float4 run = *reinterpret_cast<const float4*>(p + q * GAP);
        v[4 * q + 0] = run.x;
        v[4 * q + 1] = run.y;
        v[4 * q + 2] = run.z;
        v[4 * q + 3] = run.w;
    }
}

// acc[i][j] += A(row i, k) B(k, col j) for k < BK, from k-major shared tiles: `as` points at the
// thread's first row of k = 0 (row stride SA per k), `bs` at its first column (SB per k).  The
// thread's rows are (i % 4) + (i / 4) * ROW_GAP, its columns (j % 4) + (j / 4) * COL_GAP: runs of
// four, each read as one LDS.128.
template <int BK, int SA, int SB, int ROW_GAP, int COL_GAP, int TM, int TN>
__device__ __forceinline__ void fma_tile(float (&acc)[TM][TN], const float* as, const float* bs)
{
    static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are made of 4 x 4 quadrants");
    DLGPU_UNROLL
    for (int kk = 0; kk < BK; ++kk) {
        float av[TM], bv[TN];
        load_runs<ROW_GAP>(av, as + kk * SA);
        load_runs<COL_GAP>(bv, bs + kk * SB);
        DLGPU_UNROLL
        for (int i = 0; i < TM; ++i)
            DLGPU_UNROLL
            for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
}

// ---------------------------------------------------------------- tensor cores
// One k-step of a warp's MT x NT tiles of 16 x 8: acc[i][j] += af[i] bf[j].  The accumulators'
// layout (ptx.cuh): element e of tile (i, j) is row 16i + g + 8(e / 2), column 8j + 2t + e % 2.
template <ptx::Precision P, int MT, int NT>
__device__ __forceinline__ void mma_tile(float (&acc)[MT][NT][4], const unsigned (&af)[MT][4],
                                         const unsigned (&bf)[NT][2])
{
    DLGPU_UNROLL
    for (int i = 0; i < MT; ++i)
        DLGPU_UNROLL
        for (int j = 0; j < NT; ++j) ptx::mma_accumulate<P>(acc[i][j], af[i], bf[j]);
}
