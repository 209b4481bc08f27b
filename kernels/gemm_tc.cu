// kernels/gemm_tc.cu -- the matrix product on tensor cores (mma.sync, sm_80+), fp32 in and out.
//
// Same contract as kernels/gemm.cu: C (M x N, row-major) = epilogue(op(A) @ op(B)), layouts
// nn/nt/tn/tt, `flags` EPILOGUE_BIAS / EPILOGUE_RELU (common.cuh), any M, N, K >= 1, every operand's
// leading dimension % 4 == 0 and 16-byte aligned (the launcher checks; else it takes the naive
// kernel).  The operands are fp32 in global memory; the precision is a build define naming a
// ptx::Precision (ptx.cuh):
//
//   GEMM_TC_PRECISION=tf32  mma.m16n8k8, operands rounded by cvt.rna.tf32.f32
//   GEMM_TC_PRECISION=bf16  mma.m16n8k16, operands rounded to bf16 (cvt.rn)
//   GEMM_TC_PRECISION=fp16  mma.m16n8k16, operands rounded to fp16 (cvt.rn)
// always accumulating in fp32.  For a given build, kernel and shape the bits are the same on
// every run (each output's k order is fixed).
//
//   gemm_tc_<BM>x<BN>_<layout>[_mask]_f32(a, b, bias, mask_y, c, M, N, K, flags)
//       Configurations: GEMM_TC_CONFIGS below (128x128: 8 warps (2 x 4), warp tile 64 x 32;
//       64x64: 4 warps (2 x 2), warp tile 32 x 32); layouts: GEMM_LAYOUTS (gemm_tile.cuh).
//       Block tile BM x BN x BK (BK = 16 floats for tf32, 32 halves for bf16/fp16), a 3-stage
//       shared-memory ring; dynamic shared memory (dlgpu/cuda/gemm.py: tc_shared_bytes).  Grid
//       (ceil(N/BN), ceil(M/BM)), blocks mapped to tiles in bands of 8 tile rows (block_tile).
//       `_mask` (nn, tn): A multiplied by (Y > 0) on its way in.
//
// How operands reach the tensor cores (every tile is kept in its operand's global layout, rows
// of k or rows of m/n, so no layout needs a transposing store):
//   tf32       fp32 tiles copied by 16-byte cp.async (masked A: through registers), rounded by
//              cvt.rna.tf32 as each fragment is read.  Rows padded: k-contiguous rows by 4
//              floats (stride = 4 mod 32 banks), the others by 8 (= 8 mod 32), so the (g, t) or
//              (t, g) reads of a fragment (g = lane / 4, t = lane % 4) hit 32 different banks.
//   bf16/fp16  cast on the way into shared memory: each thread loads 16 bytes of fp32 into
//              registers one stage ahead (LDG.128 issued before the math, stored after it), rounds
//              them to 16 bits (cvt.rn) and stores 8 bytes into a 16-bit tile.  Tiles are swizzled
//              (16-byte chunk index XOR row) rather than padded, and fragments come from ldmatrix
//              (.trans for m/n-contiguous tiles).  Why not a separate cast pass and cp.async of
//              16-bit operands: that pass would read the fp32 operands and write 16-bit copies,
//              by our estimate a fifth of the product's own time at 4096^3; and why not
//              cp.async of fp32 with rounding at fragment time (as for tf32): twice the shared
//              memory and traffic, and every warp would round the same values again.  The ReLU mask of
//              the backward is applied in fp32, before rounding.
//
// dlgpu-build: GEMM_TC_PRECISION=tf32
// dlgpu-build: GEMM_TC_PRECISION=bf16
// dlgpu-build: GEMM_TC_PRECISION=fp16
// dlgpu-sass: gemm_tc_* HMMA !LDL !STL

#include "common.cuh"
#include "gemm_tile.cuh"
#include "mainloop.cuh"
#include "ptx.cuh"

#ifndef GEMM_TC_PRECISION
#error "gemm_tc.cu is built with -DGEMM_TC_PRECISION=tf32, bf16 or fp16 (a ptx::Precision)"
#endif
constexpr ptx::Precision TC_PRECISION = ptx::Precision::GEMM_TC_PRECISION;

#define TC_STAGES 3
// k per block tile: 64 bytes of a k-contiguous row, 16 floats (tf32) or 32 halves (bf16/fp16).
#define TC_BK_TF32 16
#define TC_BK_HALF 32
// tf32 tiles: row padding, in floats, for k-contiguous and for m/n-contiguous tiles.
#define TC_PAD_K 4
#define TC_PAD_MN 8

// The tile configurations, largest first: X(BM, BN, THREADS, WARPS_M, WARPS_N), THREADS = 32 *
// WARPS_M * WARPS_N, warp tiles (BM / WARPS_M) x (BN / WARPS_N).  dlgpu/cuda/gemm.py reads this list.
#define GEMM_TC_CONFIGS(X)   \
    X(128, 128, 256, 2, 4)   \
    X(64, 64, 128, 2, 2)

// ---------------------------------------------------------------- 16-bit tiles: swizzled rows
// A 16-bit tile of COLS halves per row is a run of 16-byte chunks (8 halves each).  ldmatrix reads
// one chunk from each of 8 consecutive rows; unswizzled, those rows' chunks would share banks
// (rows 64 or 256 bytes apart).  XOR-ing the chunk index with the row (per pair of rows when a
// row has only 4 chunks) puts the 8 chunks in 8 different bank groups, for stores and loads alike.
template <int COLS>
__device__ __forceinline__ int swizzled(int row, int col)
{
    constexpr int kChunks = COLS / 8;
    constexpr int kRowsPerPhase = kChunks >= 8 ? 1 : 8 / kChunks;
    constexpr int kMask = (kChunks >= 8 ? 8 : kChunks) - 1;
    return row * COLS + (((col / 8) ^ ((row / kRowsPerPhase) & kMask)) * 8) + col % 8;
}

// The registers a TileLoader holds (fp32, four consecutive columns per chunk), rounded to
// 16 bits and written as 8 bytes into the swizzled tile.
template <ptx::Precision P, class Loader, int TILE_COLS, int THREADS>
__device__ __forceinline__ void store_half(const Loader& loader, unsigned short* tile)
{
    DLGPU_UNROLL
    for (int i = 0; i < Loader::kPerThread; ++i) {
        const int chunk = threadIdx.x + i * THREADS;
        const int r = chunk / Loader::kChunksPerRow, c = (chunk % Loader::kChunksPerRow) * 4;
        const float4 v = loader.held[i];
        // One 8-byte store (a uint2 store was split into two 4-byte STS by the compiler).
        const unsigned long long packed = (unsigned long long)ptx::pack_half2<P>(v.x, v.y) |
                                          ((unsigned long long)ptx::pack_half2<P>(v.z, v.w) << 32);
        *reinterpret_cast<unsigned long long*>(tile + swizzled<TILE_COLS>(r, c)) = packed;
    }
}

// ---------------------------------------------------------------- the kernel body
// Warp (wm, wn) owns rows [wm * MT * 16, +MT * 16) and columns [wn * NT * 8, +NT * 8) of the block
// tile: MT x NT mma tiles of 16 x 8, four fp32 accumulators per lane each.  Every tile in shared
// memory is stored as its operand is stored in global memory (rows of k, or rows of m/n).
template <ptx::Precision P, int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, bool kTransA, bool kTransB,
          bool kMaskA>
__device__ __forceinline__ void tc_gemm(const float* a, const float* b, const float* bias, const float* mask_y,
                                        float* c, int M, int N, int K, int flags)
{
    // 16-bit operands (bf16, fp16) live in shared memory as 16-bit values; tf32 operands as fp32.
    constexpr bool kHalf = P != ptx::Precision::tf32;
    constexpr int MT = BM / (16 * WARPS_M), NT = BN / (8 * WARPS_N), BK = kHalf ? TC_BK_HALF : TC_BK_TF32;
    static_assert(THREADS == 32 * WARPS_M * WARPS_N && MT * 16 * WARPS_M == BM && NT * 8 * WARPS_N == BN,
                  "warps tile the block");
    static_assert(NT % 2 == 0, "16-bit B fragments are loaded two n-tiles at a time");
    // Global tile geometry: A stored (M, K) gives tile rows m (cols k), stored (K, M) rows k.
    constexpr int A_ROWS = kTransA ? BK : BM, A_COLS = kTransA ? BM : BK;
    constexpr int B_ROWS = kTransB ? BN : BK, B_COLS = kTransB ? BK : BN;
    // Row strides in shared memory, in elements: tf32 rows padded (see the header), 16-bit swizzled.
    constexpr int SA = kHalf ? A_COLS : A_COLS + (kTransA ? TC_PAD_MN : TC_PAD_K);
    constexpr int SB = kHalf ? B_COLS : B_COLS + (kTransB ? TC_PAD_K : TC_PAD_MN);
    constexpr int ELEMENT_BYTES = kHalf ? 2 : 4;
    constexpr int A_TILE_BYTES = A_ROWS * SA * ELEMENT_BYTES, B_TILE_BYTES = B_ROWS * SB * ELEMENT_BYTES;

    extern __shared__ float4 tc_shared[];
    unsigned char* const a_tiles = reinterpret_cast<unsigned char*>(tc_shared);
    unsigned char* const b_tiles = a_tiles + TC_STAGES * A_TILE_BYTES;

    // 16-bit tiles must be converted on the way in, so they always come through registers.
    using LoaderA = TileLoader<A_ROWS, A_COLS, SA, THREADS, false, kMaskA, kHalf>;
    using LoaderB = TileLoader<B_ROWS, B_COLS, SB, THREADS, false, false, kHalf>;
    LoaderA load_a(a, mask_y, kTransA ? K : M, kTransA ? M : K);
    LoaderB load_b(b, b, kTransB ? N : K, kTransB ? K : N);

    int m0, n0;
    block_tile<BM, BN>(m0, n0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm0 = (warp / WARPS_N) * MT * 16, wn0 = (warp % WARPS_N) * NT * 8;

    auto issue = [&](int tile, int stage) {
        const int k0 = tile * BK;
        load_a.issue(kTransA ? k0 : m0, kTransA ? m0 : k0, reinterpret_cast<float*>(a_tiles + stage * A_TILE_BYTES));
        load_b.issue(kTransB ? n0 : k0, kTransB ? k0 : n0, reinterpret_cast<float*>(b_tiles + stage * B_TILE_BYTES));
    };
    auto store = [&](int stage) {
        if constexpr (kHalf) {
            store_half<P, LoaderA, A_COLS, THREADS>(load_a,
                                                     reinterpret_cast<unsigned short*>(a_tiles + stage * A_TILE_BYTES));
            store_half<P, LoaderB, B_COLS, THREADS>(load_b,
                                                     reinterpret_cast<unsigned short*>(b_tiles + stage * B_TILE_BYTES));
        } else {
            load_a.store(reinterpret_cast<float*>(a_tiles + stage * A_TILE_BYTES));
            load_b.store(reinterpret_cast<float*>(b_tiles + stage * B_TILE_BYTES));
        }
    };

    float acc[MT][NT][4];
    zero(acc);
    auto compute = [&](int stage) {
        const unsigned char* a_stage = a_tiles + stage * A_TILE_BYTES;
        const unsigned char* b_stage = b_tiles + stage * B_TILE_BYTES;
        DLGPU_UNROLL
        for (int ks = 0; ks < BK; ks += ptx::mma_k<P>) {
            // Fragments in the PTX ISA's layouts (kernels/ptx.cuh's header lists them).
            unsigned af[MT][4], bf[NT][2];
            if constexpr (kHalf) {
                // ldmatrix.x4: lane l gives row l % 8 of 8x8 matrix q = l / 8.  A's matrices are
                // (rows +0/+8) x (k +0/+8) in register order; B's are (n +0/+8) x (k +0/+8), two
                // n-tiles per load.  Tiles stored with m/n contiguous are read transposed.
                const unsigned short* as = reinterpret_cast<const unsigned short*>(a_stage);
                const unsigned short* bs = reinterpret_cast<const unsigned short*>(b_stage);
                const int q = lane / 8, j8 = lane % 8;
                DLGPU_UNROLL
                for (int i = 0; i < MT; ++i) {
                    const int row = wm0 + i * 16 + 8 * (q % 2), k = ks + 8 * (q / 2);
                    if constexpr (kTransA) ptx::ldmatrix_x4_trans(af[i], as + swizzled<A_COLS>(k + j8, row));
                    else ptx::ldmatrix_x4(af[i], as + swizzled<A_COLS>(row + j8, k));
                }
                DLGPU_UNROLL
                for (int j = 0; j < NT; j += 2) {
                    const int col = wn0 + j * 8 + 8 * (q / 2), k = ks + 8 * (q % 2);
                    unsigned r[4];
                    if constexpr (kTransB) ptx::ldmatrix_x4(r, bs + swizzled<B_COLS>(col + j8, k));
                    else ptx::ldmatrix_x4_trans(r, bs + swizzled<B_COLS>(k + j8, col));
                    bf[j][0] = r[0];
                    bf[j][1] = r[1];
                    bf[j + 1][0] = r[2];
                    bf[j + 1][1] = r[3];
                }
            } else {
                const float* as = reinterpret_cast<const float*>(a_stage);
                const float* bs = reinterpret_cast<const float*>(b_stage);
                auto a_at = [&](int m, int k) { return kTransA ? as[k * SA + m] : as[m * SA + k]; };
                auto b_at = [&](int k, int n) { return kTransB ? bs[n * SB + k] : bs[k * SB + n]; };
                DLGPU_UNROLL
                for (int i = 0; i < MT; ++i)
                    ptx::a_fragment<P>(af[i], [&](int r, int k) { return a_at(wm0 + i * 16 + r, ks + k); }, lane);
                DLGPU_UNROLL
                for (int j = 0; j < NT; ++j)
                    ptx::b_fragment<P>(bf[j], [&](int k, int n) { return b_at(ks + k, wn0 + j * 8 + n); }, lane);
            }
            mma_tile<P>(acc, af, bf);
        }
    };
    k_tile_pipeline<TC_STAGES, LoaderA::kAsync || LoaderB::kAsync, true>((K + BK - 1) / BK, issue, store, compute);

    // ---- epilogue: accumulator e of tile (i, j) is row g + 8 * (e / 2), column 2t + e % 2
    const int g = lane / 4, t = lane % 4;
    const bool vector_c = (N % 2 == 0) && (address_of(c) % 8 == 0);
    DLGPU_UNROLL
    for (int i = 0; i < MT; ++i) {
        DLGPU_UNROLL
        for (int half = 0; half < 2; ++half) {
            const int m = m0 + wm0 + i * 16 + g + 8 * half;
            if (m >= M) continue;
            float* row = c + (long long)m * N;
            DLGPU_UNROLL
            for (int j = 0; j < NT; ++j) {
                const int n = n0 + wn0 + j * 8 + 2 * t;
                const float v[2] = {n < N ? epilogue(acc[i][j][2 * half], n, bias, flags) : 0.0f,
                                    n + 1 < N ? epilogue(acc[i][j][2 * half + 1], n + 1, bias, flags) : 0.0f};
                store_run(row + n, v, n, N, vector_c);
            }
        }
    }
}

// ---------------------------------------------------------------- named instances
// Every configuration in every layout (GEMM_LAYOUTS): gemm_tc_128x128_nn_f32, ...
#define GEMM_TC_KERNEL(layout, kTransA, kTransB, kMaskA, BM, BN, THREADS, WARPS_M, WARPS_N)                   \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                    \
        gemm_tc_##BM##x##BN##_##layout##_f32(const float* a, const float* b, const float* bias,               \
                                             const float* mask_y, float* c, int M, int N, int K, int flags)    \
    {                                                                                                        \
        tc_gemm<TC_PRECISION, BM, BN, THREADS, WARPS_M, WARPS_N, kTransA, kTransB, kMaskA>(a, b, bias, mask_y, \
                                                                                           c, M, N, K, flags); \
    }
#define GEMM_TC_LAYOUTS(...) GEMM_LAYOUTS(GEMM_TC_KERNEL, __VA_ARGS__)
GEMM_TC_CONFIGS(GEMM_TC_LAYOUTS)
