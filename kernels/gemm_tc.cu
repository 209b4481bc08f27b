// kernels/gemm_tc.cu -- the matrix product on tensor cores (mma.sync, sm_80+), fp32 in and out.
//
// Same contract as kernels/gemm.cu: C (M x N, row-major) = epilogue(op(A) @ op(B)), layouts
// nn/nt/tn/tt, `flags` GEMM_BIAS / GEMM_RELU (gemm_tile.cuh), any M, N, K >= 1, every operand's
// leading dimension % 4 == 0 and 16-byte aligned (the launcher checks; else it takes the naive
// kernel).  The operands are fp32 in global memory; the precision is a build define:
//
//   GEMM_TC_PRECISION=0  tf32: mma.m16n8k8, operands rounded by cvt.rna.tf32.f32
//   GEMM_TC_PRECISION=1  bf16: mma.m16n8k16, operands rounded to bf16 (cvt.rn)
//   GEMM_TC_PRECISION=2  fp16: mma.m16n8k16, operands rounded to fp16 (cvt.rn)
// always accumulating in fp32.  For a given build, kernel and shape the bits are the same on
// every run (each output's k order is fixed).
//
//   gemm_tc_<BM>x<BN>_<layout>[_mask]_f32(a, b, bias, mask_y, c, M, N, K, flags)
//       128x128: 8 warps (2 x 4), warp tile 64 x 32;  64x64: 4 warps (2 x 2), warp tile 32 x 32.
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
// dlgpu-build: GEMM_TC_PRECISION=0
// dlgpu-build: GEMM_TC_PRECISION=1
// dlgpu-build: GEMM_TC_PRECISION=2
// dlgpu-sass: gemm_tc_* HMMA !LDL !STL

#include "common.cuh"
#include "gemm_tile.cuh"
#include "ptx.cuh"

#ifndef GEMM_TC_PRECISION
#error "gemm_tc.cu is built with -DGEMM_TC_PRECISION=0 (tf32), 1 (bf16) or 2 (fp16)"
#endif

// 16-bit operands (bf16, fp16) live in shared memory as 16-bit values; tf32 operands as fp32.
#define TC_HALF (GEMM_TC_PRECISION != 0)
#define TC_STAGES 3
// k per block tile: 16 floats (tf32) or 32 halves (bf16/fp16): 64 bytes of a k-contiguous row.
#define TC_BK (TC_HALF ? 32 : 16)
// tf32 tiles: row padding, in floats, for k-contiguous and for m/n-contiguous tiles.
#define TC_PAD_K 4
#define TC_PAD_MN 8

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
template <class Loader, int TILE_COLS, int THREADS>
__device__ __forceinline__ void store_half(const Loader& loader, unsigned short* tile)
{
    DLGPU_UNROLL
    for (int i = 0; i < Loader::kPerThread; ++i) {
        const int chunk = threadIdx.x + i * THREADS;
        const int r = chunk / Loader::kChunksPerRow, c = (chunk % Loader::kChunksPerRow) * 4;
        const float4 v = loader.held[i];
        // One 8-byte store (a uint2 store was split into two 4-byte STS by the compiler).
        const unsigned long long packed =
            (unsigned long long)ptx::pack_half2<GEMM_TC_PRECISION>(v.x, v.y) |
            ((unsigned long long)ptx::pack_half2<GEMM_TC_PRECISION>(v.z, v.w) << 32);
        *reinterpret_cast<unsigned long long*>(tile + swizzled<TILE_COLS>(r, c)) = packed;
    }
}

// ---------------------------------------------------------------- the kernel body
// Warp (wm, wn) owns rows [wm * MT * 16, +MT * 16) and columns [wn * NT * 8, +NT * 8) of the block
// tile: MT x NT mma tiles of 16 x 8, four fp32 accumulators per lane each.  Every tile in shared
// memory is stored as its operand is stored in global memory (rows of k, or rows of m/n).
template <int WARPS_M, int WARPS_N, int MT, int NT, bool kTransA, bool kTransB, bool kMaskA>
__device__ __forceinline__ void tc_gemm(const float* a, const float* b, const float* bias, const float* mask_y,
                                        float* c, int M, int N, int K, int flags)
{
    constexpr bool kHalf = TC_HALF;
    constexpr int BM = WARPS_M * MT * 16, BN = WARPS_N * NT * 8, BK = TC_BK;
    constexpr int THREADS = WARPS_M * WARPS_N * 32;
    constexpr int KSTEP = kHalf ? 16 : 8;
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
    TileLoader<A_ROWS, A_COLS, SA, THREADS, false, kMaskA, kHalf> load_a(a, mask_y, kTransA ? K : M,
                                                                         kTransA ? M : K);
    TileLoader<B_ROWS, B_COLS, SB, THREADS, false, false, kHalf> load_b(b, b, kTransB ? N : K, kTransB ? K : N);

    int tile_m, tile_n;
    block_tile(tile_m, tile_n);
    const int m0 = tile_m * BM, n0 = tile_n * BN;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm0 = (warp / WARPS_N) * MT * 16, wn0 = (warp % WARPS_N) * NT * 8;
    const int g = lane / 4, t = lane % 4;
    const int tiles = (K + BK - 1) / BK;

    auto issue = [&](int tile, int stage) {
        const int k0 = tile * BK;
        load_a.issue(kTransA ? k0 : m0, kTransA ? m0 : k0, reinterpret_cast<float*>(a_tiles + stage * A_TILE_BYTES));
        load_b.issue(kTransB ? n0 : k0, kTransB ? k0 : n0, reinterpret_cast<float*>(b_tiles + stage * B_TILE_BYTES));
    };
    auto store = [&](int stage) {
        if constexpr (kHalf) {
            store_half<decltype(load_a), A_COLS, THREADS>(
                load_a, reinterpret_cast<unsigned short*>(a_tiles + stage * A_TILE_BYTES));
            store_half<decltype(load_b), B_COLS, THREADS>(
                load_b, reinterpret_cast<unsigned short*>(b_tiles + stage * B_TILE_BYTES));
        } else {
            load_a.store(reinterpret_cast<float*>(a_tiles + stage * A_TILE_BYTES));
            load_b.store(reinterpret_cast<float*>(b_tiles + stage * B_TILE_BYTES));
        }
    };

    // ---- prologue: tiles 0 .. STAGES-2 in flight, one cp.async group each (empty for 16-bit)
    DLGPU_UNROLL
    for (int s = 0; s < TC_STAGES - 1; ++s) {
        if (s < tiles) {
            issue(s, s);
            store(s);
        }
        ptx::cp_async_commit();
    }

    float acc[MT][NT][4];
    DLGPU_UNROLL
    for (int i = 0; i < MT; ++i)
        DLGPU_UNROLL
        for (int j = 0; j < NT; ++j)
            DLGPU_UNROLL
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // ---- main loop: wait for tile t, start tile t + STAGES - 1, multiply tile t
    for (int t_k = 0; t_k < tiles; ++t_k) {
        ptx::cp_async_wait<TC_STAGES - 2>();
        __syncthreads();
        const int next = t_k + TC_STAGES - 1;
        if (next < tiles) issue(next, next % TC_STAGES);
        ptx::cp_async_commit();

        const unsigned char* a_stage = a_tiles + (t_k % TC_STAGES) * A_TILE_BYTES;
        const unsigned char* b_stage = b_tiles + (t_k % TC_STAGES) * B_TILE_BYTES;
        DLGPU_UNROLL
        for (int ks = 0; ks < BK; ks += KSTEP) {
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
                for (int i = 0; i < MT; ++i) {
                    const int row = wm0 + i * 16 + g;
                    DLGPU_UNROLL
                    for (int r = 0; r < 4; ++r)
                        af[i][r] = ptx::f32_to_tf32(a_at(row + 8 * (r % 2), ks + t + 4 * (r / 2)));
                }
                DLGPU_UNROLL
                for (int j = 0; j < NT; ++j) {
                    const int col = wn0 + j * 8 + g;
                    DLGPU_UNROLL
                    for (int r = 0; r < 2; ++r) bf[j][r] = ptx::f32_to_tf32(b_at(ks + t + 4 * r, col));
                }
            }
            DLGPU_UNROLL
            for (int i = 0; i < MT; ++i)
                DLGPU_UNROLL
                for (int j = 0; j < NT; ++j) ptx::mma_accumulate<GEMM_TC_PRECISION>(acc[i][j], af[i], bf[j]);
        }
        if (next < tiles) store(next % TC_STAGES);
    }
    ptx::cp_async_wait_all();

    // ---- epilogue: accumulator e of tile (i, j) is row g + 8 * (e / 2), column 2t + e % 2
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
                const float v0 = n < N ? epilogue(acc[i][j][2 * half], n, bias, flags) : 0.0f;
                const float v1 = n + 1 < N ? epilogue(acc[i][j][2 * half + 1], n + 1, bias, flags) : 0.0f;
                if (vector_c && n + 2 <= N) {
                    *reinterpret_cast<float2*>(row + n) = make_float2(v0, v1);
                } else {
                    if (n < N) row[n] = v0;
                    if (n + 1 < N) row[n + 1] = v1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- named instances
// 128x128: warps 2 x 4, MT 4, NT 4;  64x64: warps 2 x 2, MT 2, NT 4.
#define TC_PARAMS \
    const float *a, const float *b, const float *bias, const float *mask_y, float *c, int M, int N, int K, int flags
#define TC_ARGS a, b, bias, mask_y, c, M, N, K, flags

extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_nn_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, false, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_nt_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, false, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_tn_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, true, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_tt_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, true, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_nn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, false, false, true>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_tc_128x128_tn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 4, 4, 4, true, false, true>(TC_ARGS);
}

extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_nn_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, false, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_nt_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, false, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_tn_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, true, false, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_tt_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, true, true, false>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_nn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, false, false, true>(TC_ARGS);
}
extern "C" __global__ void __launch_bounds__(128) gemm_tc_64x64_tn_mask_f32(TC_PARAMS)
{
    tc_gemm<2, 2, 2, 4, true, false, true>(TC_ARGS);
}
