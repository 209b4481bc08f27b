// kernels/gemm_tile.cuh -- what the GEMM families (gemm.cu, gemm_tc.cu, gemm_wgmma.cu) share beyond
// mainloop.cuh: the layouts they are instantiated in, the raster order, and the loader that moves
// one fp32 operand tile into shared memory (gemm.cu's; the tensor-core loaders are tc_tile.cuh's).  Their `flags`: EPILOGUE_BIAS, EPILOGUE_RELU (common.cuh),
// GEMM_MASK_A and GEMM_STORE_HALF.
//
//   GEMM_MASK_A                         the naive kernel's flag for a masked A
//   GEMM_STORE_HALF                     kernels with 16-bit operands (gemm_tc.cu, gemm_wgmma.cu): C is
//                                       stored in their 16-bit type instead of fp32
//   GEMM_LAYOUTS(X, config...)          every (layout, mask) an mma.sync GEMM kernel exists for:
//                                       GEMM_PLAIN_LAYOUTS, then GEMM_MASK_LAYOUTS
//   grouped_tile(id, ...)               which C tile a linear tile id computes (grouped raster order)
//   block_tile<BM, BN>(m0, n0)          the first row and column of the C tile this block computes
//   TileLoader<...>                     one operand tile: global (row-major rows x cols, rows
//                                       16-byte aligned) -> shared, by cp.async or through registers
#pragma once

#include "common.cuh"
#include "mainloop.cuh"
#include "ptx.cuh"

// Naive kernel only (the tiled kernels take the mask as a template parameter): A's element is
// replaced by relu_mask(A, Y) as it is loaded, Y stored exactly like A.  Clear of the EPILOGUE_ bits.
#define GEMM_MASK_A 4
#define GEMM_STORE_HALF 8

// ---------------------------------------------------------------- layouts
// X(suffix, kTransA, kTransB, kMaskA, config...) for each kernel of one tile configuration: the
// four layouts, and `_mask` (A multiplied by Y > 0 as it is loaded) for the two products of
// linear_backward, grad_x = G W (nn) and grad_w = G^T X (tn).  dlgpu/cuda/gemm.py reads these lists.
#define GEMM_PLAIN_LAYOUTS(X, ...)                \
    X(nn, false, false, false, __VA_ARGS__)       \
    X(nt, false, true, false, __VA_ARGS__)        \
    X(tn, true, false, false, __VA_ARGS__)        \
    X(tt, true, true, false, __VA_ARGS__)
#define GEMM_MASK_LAYOUTS(X, ...)                 \
    X(nn_mask, false, false, true, __VA_ARGS__)   \
    X(tn_mask, true, false, true, __VA_ARGS__)
#define GEMM_LAYOUTS(X, ...) GEMM_PLAIN_LAYOUTS(X, __VA_ARGS__) GEMM_MASK_LAYOUTS(X, __VA_ARGS__)

// ---------------------------------------------------------------- raster order
// The grid is (tiles along N, tiles along M), and blocks start roughly in linear order (x fastest).
// Taken literally, a wave of blocks would sweep one or two tile rows across all of N, reading
// every B panel from DRAM for each of them.  Instead, consecutive blocks walk down a band of
// GEMM_GROUP_ROWS tile rows before stepping right, so a wave touches a few A panels and a few B
// panels, which stay in L2.  A bijection of block ids onto tiles: every tile is computed once.
#define GEMM_GROUP_ROWS 8

__device__ __forceinline__ void grouped_tile(int id, int tiles_m, int tiles_n, int& tile_m, int& tile_n)
{
    const int per_band = GEMM_GROUP_ROWS * tiles_n;
    const int first_row = (id / per_band) * GEMM_GROUP_ROWS;
    const int band_rows = tiles_m - first_row < GEMM_GROUP_ROWS ? tiles_m - first_row : GEMM_GROUP_ROWS;
    const int in_band = id % per_band;
    tile_m = first_row + in_band % band_rows;
    tile_n = in_band / band_rows;
}

// The grid is (tiles along N, tiles along M): one block per tile of BM x BN.
template <int BM, int BN> __device__ __forceinline__ void block_tile(int& m0, int& n0)
{
    int tile_m, tile_n;
    grouped_tile(blockIdx.y * gridDim.x + blockIdx.x, gridDim.y, gridDim.x, tile_m, tile_n);
    m0 = tile_m * BM;
    n0 = tile_n * BN;
}

// ---------------------------------------------------------------- operand tiles
// The global operand is a row-major matrix `rows` x `cols` (leading dimension `cols`, a multiple
// of 4, base 16-byte aligned: the launcher guarantees it).  A tile is rows [row0, row0 + TILE_ROWS)
// x cols [col0, col0 + TILE_COLS), cut into 16-byte chunks of four consecutive columns; thread
// `threadIdx.x` owns chunks threadIdx.x + i * THREADS.  Elements outside the matrix land as zeros,
// so a partial tile contributes nothing to the product.
//
// In shared memory the tile has row stride STRIDE floats; kTransposeStore puts element (r, c) at
// [c * STRIDE + r] instead of [r * STRIDE + c] (the simt kernel keeps A and B k-major, so its
// k-contiguous operands are transposed on the way in).
//
// Two ways in: plain chunks go global -> shared by cp.async (no registers, issued a few stages
// ahead); transposed or masked chunks must pass through registers: `issue` loads them into `held`
// (early, so the loads are in flight during the math) and `store` writes them to shared memory
// (after the math).  With kMask the chunk is masked by the same chunk of `mask` (relu_mask).
template <int TILE_ROWS, int TILE_COLS, int STRIDE, int THREADS, bool kTransposeStore, bool kMask>
struct TileLoader {
    static constexpr int kChunksPerRow = TILE_COLS / 4;
    static constexpr int kChunks = TILE_ROWS * kChunksPerRow;
    static_assert(TILE_COLS % 4 == 0 && kChunks % THREADS == 0, "tile must split evenly into 16-byte chunks");
    static constexpr int kPerThread = kChunks / THREADS;
    static constexpr bool kAsync = !kTransposeStore && !kMask;

    const float* src;
    const float* mask;
    int rows, cols;
    float4 held[kAsync ? 1 : kPerThread];

    __device__ __forceinline__ TileLoader(const float* src_, const float* mask_, int rows_, int cols_)
        : src(src_), mask(mask_), rows(rows_), cols(cols_)
    {
    }

    // Four floats from `p + offset`, zeros past the matrix (`row_ok`, `left` columns remaining).
    __device__ __forceinline__ static float4 load4(const float* p, long long offset, bool row_ok, int left)
    {
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (row_ok && left >= 4) {
            v = *reinterpret_cast<const float4*>(p + offset);
        } else if (row_ok && left > 0) {
            v.x = p[offset];
            if (left > 1) v.y = p[offset + 1];
            if (left > 2) v.z = p[offset + 2];
        }
        return v;
    }

    __device__ __forceinline__ void issue(int row0, int col0, float* tile)
    {
        DLGPU_UNROLL
        for (int i = 0; i < kPerThread; ++i) {
            const int chunk = threadIdx.x + i * THREADS;
            const int r = chunk / kChunksPerRow, c = (chunk % kChunksPerRow) * 4;
            const int global_row = row0 + r, global_col = col0 + c;
            const long long offset = (long long)global_row * cols + global_col;
            const bool row_ok = global_row < rows;
            const int left = cols - global_col;
            if constexpr (kAsync) {
                const unsigned bytes = row_ok && left > 0 ? 4u * (unsigned)(left < 4 ? left : 4) : 0u;
                // A chunk wholly outside still issues (zero-fill) from a valid address.
                ptx::cp_async_16(tile + r * STRIDE + c, bytes ? src + offset : src, bytes);
            } else {
                float4 v = load4(src, offset, row_ok, left);
                if constexpr (kMask) {
                    const float4 y = load4(mask, offset, row_ok, left);
                    v.x = relu_mask(v.x, y.x);
                    v.y = relu_mask(v.y, y.y);
                    v.z = relu_mask(v.z, y.z);
                    v.w = relu_mask(v.w, y.w);
                }
                held[i] = v;
            }
        }
    }

    __device__ __forceinline__ void store(float* tile) const
    {
        if constexpr (!kAsync) {
            DLGPU_UNROLL
            for (int i = 0; i < kPerThread; ++i) {
                const int chunk = threadIdx.x + i * THREADS;
                const int r = chunk / kChunksPerRow, c = (chunk % kChunksPerRow) * 4;
                if constexpr (kTransposeStore) {
                    tile[(c + 0) * STRIDE + r] = held[i].x;
                    tile[(c + 1) * STRIDE + r] = held[i].y;
                    tile[(c + 2) * STRIDE + r] = held[i].z;
                    tile[(c + 3) * STRIDE + r] = held[i].w;
                } else {
                    *reinterpret_cast<float4*>(tile + r * STRIDE + c) = held[i];
                }
            }
        }
    }
};
