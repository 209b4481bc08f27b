// kernels/tc_tile.cuh -- the tensor-core main loop fed by cp.async: what gemm_tc.cu and conv2d_tc.cu's
// NHWC kernels share.  Operands reach shared memory in the type they are stored in (fp32 for tf32, the 16
// bits of bf16 / fp16), 16 bytes per cp.async, STAGES tiles deep, never through registers; fragments come
// from ldmatrix, or (tf32 tiles stored m- or n-contiguous, which ldmatrix cannot transpose: it moves 16-bit
// elements) from one LDS.64 per pair of fragment registers.  Each family brings its own loaders (a plain
// matrix here; gathered convolution operands in conv2d_tc.cu) and says where C goes.
//
//   TcOperand<P>                  the stored element of precision P, its chunk (16 bytes) and k tile (64 bytes)
//   TcTile<P, EXTENT, kKContig>   one operand tile in shared memory: its rows, chunks and their swizzle
//   MatrixLoader<Tile, THREADS>   a tile of a row-major matrix (any leading dimension whose rows are
//                                 16-byte aligned), by cp.async, zeros outside the matrix
//   TcMainloop<P, BM, BN, ...>    the block tile's warps, the pipeline, the tf32 rounding of landed tiles,
//                                 the fragment loads and mma, and the epilogue to a row-major C
//   store_half_run<P, V>          V (2 or 4) consecutive outputs rounded to 16 bits: one store, or scalars
//
// Chunk ownership.  Every loader gives thread `tid` the chunks tid, tid + THREADS, ... of a tile (chunk i is
// row i / chunks-per-row, column chunk i % chunks-per-row), so that after its own cp.async.wait_group a thread
// knows which of a landed tile's bytes it may touch before the barrier: TcMainloop rounds exactly those.
#pragma once

#include "common.cuh"
#include "mainloop.cuh"
#include "ptx.cuh"

// Bytes of k per tile row of a k-contiguous tile: 16 floats or 32 halves, four 16-byte chunks.
#define TC_TILE_ROW_BYTES 64
// Floats of padding after each row of a tf32 tile stored m- or n-contiguous (read by LDS.64, not ldmatrix):
// a row stride of 8 (mod 32) words puts the 16 lanes of each half-warp's 8-byte reads on 32 distinct banks.
#define TC_PAD_MN 8

template <ptx::Precision P> struct TcOperand {
    using T = typename ptx::Operand<P>::type;
    static constexpr int kBytes = (int)sizeof(T);
    static constexpr int kChunk = 16 / kBytes;             // elements per 16-byte chunk
    static constexpr int kBK = TC_TILE_ROW_BYTES / kBytes;  // k per pipeline tile
};

// One operand tile.  kKContig: rows are m (or n), EXTENT of them, each kBK elements of k (the operand is
// stored with k contiguous); otherwise kBK rows of k, each EXTENT elements of m (or n).  Chunks are 16 bytes.
// Unpadded tiles are swizzled: chunk c of row r sits at chunk c ^ f(r), f(r) = r % 8 for rows of >= 8
// chunks, (r / 2) % 4 for rows of 4, so the 8 rows an ldmatrix reads at one column (and the chunks a warp's
// cp.async writes) fall in 8 different 16-byte bank groups.
template <ptx::Precision P, int EXTENT, bool kKContig> struct TcTile {
    using Op = TcOperand<P>;
    static constexpr int kRows = kKContig ? EXTENT : Op::kBK;
    static constexpr int kCols = kKContig ? Op::kBK : EXTENT;  // elements per row
    static constexpr int kChunksPerRow = kCols / Op::kChunk;
    static constexpr int kChunks = kRows * kChunksPerRow;
    static constexpr bool kPadded = !kKContig && P == ptx::Precision::tf32;
    static constexpr int kRowBytes = kPadded ? (kCols + TC_PAD_MN) * 4 : kCols * Op::kBytes;
    static constexpr int kBytes = kRows * kRowBytes;
    static_assert(kChunksPerRow == 4 || kChunksPerRow % 8 == 0, "rows of 4 chunks, or of a multiple of 8");

    // Byte offset of chunk `chunk` (in the row's own order) of row `row`.
    __device__ __forceinline__ static int offset(int row, int chunk)
    {
        if constexpr (kPadded) {
            return row * kRowBytes + chunk * 16;
        } else {
            constexpr int kPhase = kChunksPerRow >= 8 ? 1 : 8 / kChunksPerRow;
            constexpr int kMask = (kChunksPerRow >= 8 ? 8 : kChunksPerRow) - 1;
            return row * kRowBytes + ((chunk ^ ((row / kPhase) & kMask)) * 16);
        }
    }
};

// ---------------------------------------------------------------- a matrix, by cp.async
// The stored matrix is `rows` x `cols` with leading dimension `ld` (elements; ld * element bytes % 16 == 0 and
// a 16-byte aligned base: the launcher guarantees both).  issue() copies rows [row0, +Tile::kRows) x elements
// [col0, +Tile::kCols) into `tile`; what lies outside the matrix lands as zeros (cp.async's src-size), so a
// partial tile adds nothing to the product.
template <class Tile, int THREADS> struct MatrixLoader {
    using T = typename Tile::Op::T;
    static constexpr int kPerThread = Tile::kChunks / THREADS;
    static_assert(Tile::kChunks % THREADS == 0, "the tile splits evenly into the threads' chunks");

    const T* src;
    int rows, cols;
    long long ld;

    __device__ __forceinline__ void issue(unsigned char* tile, int row0, int col0) const
    {
        DLGPU_UNROLL
        for (int i = 0; i < kPerThread; ++i) {
            const int chunk = threadIdx.x + i * THREADS;
            const int r = chunk / Tile::kChunksPerRow, c = chunk % Tile::kChunksPerRow;
            const int row = row0 + r, col = col0 + c * Tile::Op::kChunk;
            const int left = cols - col;
            const int elements = row < rows && left > 0 ? (left < Tile::Op::kChunk ? left : Tile::Op::kChunk) : 0;
            const unsigned bytes = (unsigned)(elements * Tile::Op::kBytes);
            // A chunk wholly outside still issues (zero-fill) from a valid address.
            ptx::cp_async_16(tile + Tile::offset(r, c), bytes ? src + (long long)row * ld + col : src, bytes);
        }
    }
};

// ---------------------------------------------------------------- 16-bit outputs
// v[0 .. V) rounded to 16 bits into out[0 .. V), the outputs at positions at .. at + V - 1 of a run that ends
// before `end`: one 2V-byte store when all are before `end` and `vector` (out is 2V-byte aligned), else one
// store per position before `end` (common.cuh's store_run, for fp32 outputs, says the same).
template <ptx::Precision P, int V>
__device__ __forceinline__ void store_half_run(unsigned short* out, const float (&v)[V], int at, int end, bool vector)
{
    static_assert(V == 2 || V == 4, "runs of 2 or 4 halves");
    if (vector && at + V <= end) {
        if constexpr (V == 4) {
            const unsigned long long packed = (unsigned long long)ptx::pack_half2<P>(v[0], v[1]) |
                                              ((unsigned long long)ptx::pack_half2<P>(v[2], v[3]) << 32);
            *reinterpret_cast<unsigned long long*>(out) = packed;
        } else {
            *reinterpret_cast<unsigned*>(out) = ptx::pack_half2<P>(v[0], v[1]);
        }
    } else {
        DLGPU_UNROLL
        for (int j = 0; j < V; ++j)
            if (at + j < end) out[j] = ptx::to_half<P>(v[j]);
    }
}

// ---------------------------------------------------------------- the main loop
// A block tile BM x BN of C = op(A) op(B), reduced over tiles of kBK: WARPS_M x WARPS_N warps, warp (wm, wn)
// owning rows [wm * MT * 16, +MT * 16) and columns [wn * NT * 8, +NT * 8), MT x NT mma tiles of 16 x 8 with four
// fp32 accumulators per lane each.  kKContigA: A's tile is stored k-contiguous (rows of m); kKContigB: B's
// (rows of n).  Shared memory: STAGES x (A tile + B tile), kSharedBytes in all, dynamic.
//
// Fragments (ptx.cuh's layouts, g = lane / 4, t = lane % 4), per k-step of mma_k<P>:
//   k-contiguous tiles, every precision: ldmatrix.x4 in 16-byte chunks: a 16-bit chunk is 8 elements of k,
//     a tf32 chunk 4, and the x4 of rows (+0 / +8) x chunks (+0 / +1) is the A fragment of either (for B,
//     two n-tiles' fragments).
//   16-bit m/n-contiguous tiles: ldmatrix.x4.trans.
//   tf32 m/n-contiguous tiles: the tile's rows and columns are permuted, not transposed: within each 16 rows of
//     A the lane's two rows g and g + 8 are stored side by side (physical row 2g + h holds logical row g + 8h),
//     and within each 16 columns of B the columns g of n-tiles j and j + 1 (physical column 2g + j % 2), so each
//     pair of fragment registers is one LDS.64.  The epilogue maps the accumulators back (kPermA, kPermB).
//     The permutation needs no extra pass: the tile is filled in global order, and only the reads and the
//     epilogue use the permuted indices -- the product over a 16-row (16-column) group is the same set of
//     dot products whatever order its rows are named in.
// tf32 operands are rounded (cvt.rna) once, by the thread that copied them, as soon as they land
// (k_tile_pipeline's `landed`), rather than by every warp that reads them at every fragment load.
template <ptx::Precision P, int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, int STAGES, bool kKContigA,
          bool kKContigB>
struct TcMainloop {
    using Op = TcOperand<P>;
    using TileA = TcTile<P, BM, kKContigA>;
    using TileB = TcTile<P, BN, kKContigB>;
    static constexpr bool kTf32 = P == ptx::Precision::tf32;
    static constexpr bool kPermA = kTf32 && !kKContigA;
    static constexpr bool kPermB = kTf32 && !kKContigB;
    static constexpr int MT = BM / (16 * WARPS_M), NT = BN / (8 * WARPS_N);
    static constexpr int kStageBytes = TileA::kBytes + TileB::kBytes;
    static constexpr int kSharedBytes = STAGES * kStageBytes;
    static_assert(THREADS == 32 * WARPS_M * WARPS_N && MT * 16 * WARPS_M == BM && NT * 8 * WARPS_N == BN,
                  "warps tile the block");
    static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
    static_assert(TileA::kBytes % 16 == 0 && TileB::kBytes % 16 == 0, "tiles keep 16-byte alignment");

    unsigned char* smem;  // the dynamic shared memory: stage s's A tile, then its B tile
    int wm0, wn0, lane;   // this warp's first row and column in the block tile, and this thread's lane

    __device__ __forceinline__ explicit TcMainloop(unsigned char* smem_) : smem(smem_)
    {
        const int warp = threadIdx.x / 32;
        lane = threadIdx.x % 32;
        wm0 = (warp / WARPS_N) * MT * 16;
        wn0 = (warp % WARPS_N) * NT * 8;
    }

    __device__ __forceinline__ unsigned char* a_tile(int stage) const { return smem + stage * kStageBytes; }
    __device__ __forceinline__ unsigned char* b_tile(int stage) const
    {
        return smem + stage * kStageBytes + TileA::kBytes;
    }

    // The chunks this thread copied into a tile, rounded to tf32 in place (see "Chunk ownership").
    template <class Tile> __device__ __forceinline__ static void round_own(unsigned char* tile)
    {
        DLGPU_UNROLL
        for (int i = 0; i < Tile::kChunks / THREADS; ++i) {
            const int chunk = threadIdx.x + i * THREADS;
            float4* p = reinterpret_cast<float4*>(tile + Tile::offset(chunk / Tile::kChunksPerRow,
                                                                        chunk % Tile::kChunksPerRow));
            float4 v = *p;
            v.x = __uint_as_float(ptx::f32_to_tf32(v.x));
            v.y = __uint_as_float(ptx::f32_to_tf32(v.y));
            v.z = __uint_as_float(ptx::f32_to_tf32(v.z));
            v.w = __uint_as_float(ptx::f32_to_tf32(v.w));
            *p = v;
        }
    }

    // A fragment of m-tile i at k-step ks (elements) from the stage's A tile.
    __device__ __forceinline__ void load_a(unsigned (&af)[4], const unsigned char* tile, int i, int ks) const
    {
        const int q = lane / 8, j8 = lane % 8;
        const int row0 = wm0 + i * 16;
        if constexpr (kKContigA) {
            ptx::ldmatrix_x4(af, tile + TileA::offset(row0 + 8 * (q % 2) + j8, ks / Op::kChunk + q / 2));
        } else if constexpr (!kTf32) {
            // Tile rows are k: matrices (k +0 / +8) x (m +0 / +8), read transposed.
            const int k = ks + 8 * (q / 2) + j8, m = row0 + 8 * (q % 2);
            ptx::ldmatrix_x4_trans(af, tile + TileA::offset(k, m / Op::kChunk));
        } else {
            const int g = lane / 4, t = lane % 4;
            DLGPU_UNROLL
            for (int half = 0; half < 2; ++half) {  // k = t, then t + 4: registers (0, 1), then (2, 3)
                const float2 v = *reinterpret_cast<const float2*>(tile + (ks + t + 4 * half) * TileA::kRowBytes +
                                                                  (row0 + 2 * g) * 4);
                af[2 * half] = __float_as_uint(v.x);
                af[2 * half + 1] = __float_as_uint(v.y);
            }
        }
    }

    // B fragments of n-tiles j and j + 1 (j even) at k-step ks.
    __device__ __forceinline__ void load_b(unsigned (&bf)[NT][2], const unsigned char* tile, int j, int ks) const
    {
        const int q = lane / 8, j8 = lane % 8;
        const int col0 = wn0 + j * 8;
        if constexpr (kKContigB || !kTf32) {
            unsigned r[4];
            if constexpr (kKContigB) {
                // Matrices (n +0, k lo), (n +0, k hi), (n +8, k lo), (n +8, k hi).
                ptx::ldmatrix_x4(r, tile + TileB::offset(col0 + 8 * (q / 2) + j8, ks / Op::kChunk + q % 2));
            } else {
                const int k = ks + 8 * (q % 2) + j8, n = col0 + 8 * (q / 2);
                ptx::ldmatrix_x4_trans(r, tile + TileB::offset(k, n / Op::kChunk));
            }
            bf[j][0] = r[0];
            bf[j][1] = r[1];
            bf[j + 1][0] = r[2];
            bf[j + 1][1] = r[3];
        } else {
            // Physical column col0 + 2g + e holds column g of n-tile j + e: registers b[j][k], b[j + 1][k].
            const int g = lane / 4, t = lane % 4;
            DLGPU_UNROLL
            for (int half = 0; half < 2; ++half) {
                const float2 v = *reinterpret_cast<const float2*>(tile + (ks + t + 4 * half) * TileB::kRowBytes +
                                                                  (col0 + 2 * g) * 4);
                bf[j][half] = __float_as_uint(v.x);
                bf[j + 1][half] = __float_as_uint(v.y);
            }
        }
    }

    __device__ __forceinline__ void compute(float (&acc)[MT][NT][4], int stage) const
    {
        const unsigned char* as = a_tile(stage);
        const unsigned char* bs = b_tile(stage);
        DLGPU_UNROLL
        for (int ks = 0; ks < Op::kBK; ks += ptx::mma_k<P>) {
            unsigned af[MT][4], bf[NT][2];
            DLGPU_UNROLL
            for (int i = 0; i < MT; ++i) load_a(af[i], as, i, ks);
            DLGPU_UNROLL
            for (int j = 0; j < NT; j += 2) load_b(bf, bs, j, ks);
            mma_tile<P>(acc, af, bf);
        }
    }

    // The reduction: `tiles` tiles, tile `t`'s operands copied by issue(t, a_tile, b_tile) (cp.async only, the
    // chunks of "Chunk ownership"), accumulated into acc (which the caller zeroes).
    template <class Issue> __device__ __forceinline__ void run(float (&acc)[MT][NT][4], int tiles, Issue issue) const
    {
        k_tile_pipeline<STAGES, true, true>(
            tiles, [&](int tile, int stage) { issue(tile, a_tile(stage), b_tile(stage)); }, [](int) {},
            [&](int stage) { compute(acc, stage); },
            [&](int stage) {
                if constexpr (kTf32) {
                    round_own<TileA>(a_tile(stage));
                    round_own<TileB>(b_tile(stage));
                }
            });
    }

    // ---- epilogue: C (M x N of a row-major array with leading dimension ldc) rows m0 + ..., columns n0 + ...
    // gets epilogue(acc) (common.cuh: bias per column, ReLU) as fp32 (Out = float) or rounded to 16 bits
    // (Out = unsigned short).  Accumulator e of tile (i, j) is logical row g + 8 (e / 2), column 2t + e % 2;
    // kPermA / kPermB map those to the stored rows / columns (see the header).  Each lane writes runs of 2
    // (or, with kPermB, 4) adjacent columns: one vector store where `ldc` and the base allow.
    // The same to `c` of either type: 16-bit when `half` (bf16 / fp16 builds only: a tf32 product is stored as
    // fp32, and no 16-bit store is even instantiated for it).
    __device__ __forceinline__ void store_to(const float (&acc)[MT][NT][4], void* c, bool half, long long ldc, int m0,
                                             int n0, int M, int N, const float* bias, int flags) const
    {
        if constexpr (!kTf32) {
            if (half) {
                store(acc, static_cast<unsigned short*>(c), ldc, m0, n0, M, N, bias, flags);
                return;
            }
        }
        store(acc, static_cast<float*>(c), ldc, m0, n0, M, N, bias, flags);
    }

    template <class Out>
    __device__ __forceinline__ void store(const float (&acc)[MT][NT][4], Out* c, long long ldc, int m0, int n0,
                                          int M, int N, const float* bias, int flags) const
    {
        constexpr int V = kPermB ? 4 : 2;
        const int g = lane / 4, t = lane % 4;
        const bool vector = ldc % V == 0 && address_of(c) % (V * sizeof(Out)) == 0;
        auto put = [&](Out* at, const float (&v)[V], int col) {
            float w[V];
            DLGPU_UNROLL
            for (int e = 0; e < V; ++e) w[e] = col + e < N ? epilogue(v[e], col + e, bias, flags) : 0.0f;
            if constexpr (sizeof(Out) == 4) store_run(reinterpret_cast<float*>(at), w, col, N, vector);
            else store_half_run<P>(reinterpret_cast<unsigned short*>(at), w, col, N, vector);
        };
        DLGPU_UNROLL
        for (int i = 0; i < MT; ++i) {
            DLGPU_UNROLL
            for (int h = 0; h < 2; ++h) {
                const int m = m0 + wm0 + i * 16 + (kPermA ? 2 * g + h : g + 8 * h);
                if (m >= M) continue;
                Out* const row = c + (long long)m * ldc;
                DLGPU_UNROLL
                for (int j = 0; j < NT; j += 2) {
                    if constexpr (kPermB) {
                        // Physical columns 4t .. 4t + 3 of the 16: (j, 2t), (j + 1, 2t), (j, 2t + 1), (j + 1, 2t + 1).
                        const int col = n0 + wn0 + j * 8 + 4 * t;
                        const float v[4] = {acc[i][j][2 * h], acc[i][j + 1][2 * h], acc[i][j][2 * h + 1],
                                            acc[i][j + 1][2 * h + 1]};
                        put(row + col, v, col);
                    } else {
                        DLGPU_UNROLL
                        for (int jj = j; jj < j + 2; ++jj) {
                            const int col = n0 + wn0 + jj * 8 + 2 * t;
                            const float v[2] = {acc[i][jj][2 * h], acc[i][jj][2 * h + 1]};
                            put(row + col, v, col);
                        }
                    }
                }
            }
        }
    }
};
