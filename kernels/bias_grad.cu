// kernels/bias_grad.cu -- the bias gradient: grad_y summed over every axis but the channel axis.
//
// grad_y is viewed as (rows, row_len) = (N, C * S) with S = H * W (S = 1 for a (N, C) input), so
// the channel of column j is j / S.  Two passes, both in a fixed order, so that a given shape and
// launch always give the same bits (no float atomics).  grad_y, y and grad_b are of one storage
// type T (storage.cuh: suffix _f32, _bf16, _fp16); every sum is a float one, and grad_b is rounded
// to T once at the end.  V = per_vector<T> (4 floats, 8 halves: one 16-byte vector):
//
//   bias_grad_partial_<T>(const T* grad_y, float* partial, long long rows, long long row_len,
//                         long long rows_per_chunk)
//   bias_grad_relu_partial_<T>(const T* grad_y, const T* y, float* partial, ...same...)
//       grid (ceil(row_len / (32 V)), chunks), block 256 (8 warps; required).  Block (bx, by) sums
//       rows [by * rows_per_chunk, +rows_per_chunk) of columns [bx * 32V, +32V) into
//       partial[by * row_len + column]; the relu variant masks grad_y by (y > 0) first (y has
//       grad_y's shape), which is linear_backward/conv2d_backward's fused ReLU.
//       Warp w takes rows w, w + 8, ...; each lane V columns: one 16-byte vector when row_len % V
//       == 0 and the inputs are 16-byte aligned, else columns lane, lane + 32, ..., lane + 32(V-1).
//   bias_grad_finish_<T>(const float* partial, T* grad_b, long long chunks, long long row_len,
//                        long long spatial)
//       grid (channels), block 256 (a multiple of 32).  grad_b[c] = sum over chunks p and spatial
//       positions s of partial[p * row_len + c * spatial + s]: one block per channel, threads over
//       s (or over p when spatial == 1), then a fixed-order block reduction.
//
// partial holds chunks * row_len floats; the launcher picks chunks so that pass 1 fills the
// device while the partial buffer stays a small fraction of grad_y.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs; ~2.9-3.1 TB/s for a large copy, a read-only stream
// as fast or a little faster), from the sm_90a build (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a
// bias_grad`), for the benchmark rows: grad_y (64, 256, 64, 64) float32, plain and ReLU-masked, as a share of
// the measured copy bandwidth.
//   plan        row_len = 2^20, 8192 column blocks of 128 floats; TARGET_BLOCKS 2048 < 8192, so one chunk of
//               all 64 rows: grid (8192, 1), 8 rows per warp.  Pass 2: 256 blocks (one per channel) of 4096
//               partial sums each.
//   pass 1      bias_grad_partial_f32 39 registers + 4 KB shared: 6 blocks (48 warps) per SM, 10.3 waves of
//               short blocks (32 KB each); per warp 2 batches of 4 LDG.E.128 per lane (64 B in flight per
//               thread, ~96 KB per SM).  The relu form: 56 registers, 4 blocks per SM, 8 LDG.E.128 per batch
//               (128 B per thread).  Every element read once, coalesced 512 B per warp and row.
//   extra       the partial buffer (4 MB, written and read back from L2) and pass 2 (a 16-float run per
//               thread, a block reduction) plus its launch: ~4-6 us beside ~92 us (plain, 268 MB) and ~185 us
//               (masked, 537 MB) of reading at 2.9 TB/s; bytes_moved counts the reads and grad_b only.
// => plain 80-105 % of the copy ceiling, masked 85-105 % (a read-only stream can beat a copy's read + write
// mix; the second pass and the barrier at the end of each short block cost a few percent).
//
// dlgpu-sass: bias_grad_partial_* LDG.E.128
// dlgpu-sass: bias_grad_relu_partial_* LDG.E.128
// dlgpu-sass: bias_grad_finish_*

#include "storage.cuh"

#define BIAS_GRAD_WARPS 8
// Columns of a block: one vector per lane (128 floats, 256 halves).
template <class T> constexpr int bias_grad_columns = 32 * per_vector<T>;
// Rows loaded per warp before the first addition, for memory-level parallelism.
#define BIAS_GRAD_BATCH 4

// ---------------------------------------------------------------- pass 1
template <bool kReluMask, class T>
__device__ __forceinline__ void partial_sums(const T* grad_y, const T* y, float* partial, long long rows,
                                             long long row_len, long long rows_per_chunk)
{
    constexpr int V = per_vector<T>;
    constexpr int COLUMNS = bias_grad_columns<T>;
    __shared__ float column_sums[BIAS_GRAD_WARPS][COLUMNS];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const long long column0 = (long long)blockIdx.x * COLUMNS;
    const long long row_begin = (long long)blockIdx.y * rows_per_chunk;
    const long long row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;

    unsigned long long misaligned = (address_of(grad_y) & 15u) | (unsigned long long)(row_len % V);
    if (kReluMask) misaligned |= address_of(y) & 15u;
    float acc[V];
    DLGPU_UNROLL
    for (int k = 0; k < V; ++k) acc[k] = 0.0f;
    // One vector's values g (masked by m under kReluMask) added into acc.
    auto add = [&](const float (&g)[V], const float (&m)[V]) {
        DLGPU_UNROLL
        for (int k = 0; k < V; ++k) acc[k] += kReluMask ? relu_mask(g[k], m[k]) : g[k];
    };

    // ---- accumulate this warp's rows, in increasing row order
    if (misaligned == 0) {
        // Lane owns columns column0 + V*lane .. +V-1, all valid or all past the end (row_len % V == 0).
        const long long column = column0 + V * lane;
        if (column < row_len) {
            long long r = row_begin + warp;
            for (; r + (BIAS_GRAD_BATCH - 1) * BIAS_GRAD_WARPS < row_end; r += BIAS_GRAD_BATCH * BIAS_GRAD_WARPS) {
                float g[BIAS_GRAD_BATCH][V];
                float m[BIAS_GRAD_BATCH][V];
                DLGPU_UNROLL
                for (int u = 0; u < BIAS_GRAD_BATCH; ++u) {
                    const long long offset = (r + u * BIAS_GRAD_WARPS) * row_len + column;
                    load_vector(grad_y + offset, g[u]);
                    if (kReluMask) load_vector(y + offset, m[u]);
                }
                DLGPU_UNROLL
                for (int u = 0; u < BIAS_GRAD_BATCH; ++u) add(g[u], m[u]);
            }
            for (; r < row_end; r += BIAS_GRAD_WARPS) {
                const long long offset = r * row_len + column;
                float g[V], m[V];
                load_vector(grad_y + offset, g);
                if (kReluMask) load_vector(y + offset, m);
                add(g, m);
            }
        }
    } else {
        // Scalar: lane owns columns column0 + lane + 32k; a warp's loads stay coalesced.
        for (long long r = row_begin + warp; r < row_end; r += BIAS_GRAD_WARPS) {
            DLGPU_UNROLL
            for (int k = 0; k < V; ++k) {
                const long long column = column0 + lane + 32 * k;
                if (column < row_len) {
                    const long long offset = r * row_len + column;
                    const float g = to_float(grad_y[offset]);
                    acc[k] += kReluMask ? relu_mask(g, to_float(y[offset])) : g;
                }
            }
        }
    }

    // ---- combine the 8 warps' sums of each column in warp order
    DLGPU_UNROLL
    for (int k = 0; k < V; ++k) {
        const int slot = misaligned == 0 ? V * lane + k : lane + 32 * k;
        column_sums[warp][slot] = acc[k];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < COLUMNS && column0 + c < row_len; c += blockDim.x) {
        float sum = 0.0f;
        DLGPU_UNROLL
        for (int w = 0; w < BIAS_GRAD_WARPS; ++w) sum += column_sums[w][c];
        partial[(long long)blockIdx.y * row_len + column0 + c] = sum;
    }
}

// ---------------------------------------------------------------- pass 2
template <class T>
__device__ __forceinline__ void finish(const float* partial, T* grad_b, long long chunks, long long row_len,
                                       long long spatial)
{
    __shared__ float scratch[33];
    const long long channel = blockIdx.x;
    float sum = 0.0f;
    if (spatial == 1) {
        // (N, C) input: one partial sum per chunk, strided by row_len.
        DLGPU_UNROLL_4
        for (long long chunk = threadIdx.x; chunk < chunks; chunk += blockDim.x)
            sum += partial[chunk * row_len + channel];
    } else {
        // Chunk by chunk, the channel's `spatial` partial sums are contiguous: coalesced loads,
        // and the unrolled loop keeps several of them in flight.
        for (long long chunk = 0; chunk < chunks; ++chunk) {
            const float* run = partial + chunk * row_len + channel * spatial;
            DLGPU_UNROLL_4
            for (long long s = threadIdx.x; s < spatial; s += blockDim.x) sum += run[s];
        }
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) grad_b[channel] = from_float<T>(sum);
}

// ---------------------------------------------------------------- kernels
#define BIAS_GRAD_KERNELS(suffix, T)                                                                           \
    extern "C" __global__ void bias_grad_partial_##suffix(const T* grad_y, float* partial, long long rows,      \
                                                          long long row_len, long long rows_per_chunk)         \
    {                                                                                                          \
        partial_sums<false>(grad_y, grad_y, partial, rows, row_len, rows_per_chunk);                           \
    }                                                                                                          \
    extern "C" __global__ void bias_grad_relu_partial_##suffix(const T* grad_y, const T* y, float* partial,    \
                                                               long long rows, long long row_len,              \
                                                               long long rows_per_chunk)                       \
    {                                                                                                          \
        partial_sums<true>(grad_y, y, partial, rows, row_len, rows_per_chunk);                                 \
    }                                                                                                          \
    extern "C" __global__ void bias_grad_finish_##suffix(const float* partial, T* grad_b, long long chunks,     \
                                                         long long row_len, long long spatial)                 \
    {                                                                                                          \
        finish(partial, grad_b, chunks, row_len, spatial);                                                     \
    }
STORAGE_TYPES(BIAS_GRAD_KERNELS)
