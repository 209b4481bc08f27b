// kernels/bias_grad.cu -- the bias gradient: grad_y summed over every axis but the channel axis.
//
// grad_y is viewed as (rows, row_len) = (N, C * S) with S = H * W (S = 1 for a (N, C) input), so
// the channel of column j is j / S.  Two passes, both in a fixed order, so that a given shape and
// launch always give the same bits (no float atomics):
//
//   bias_grad_partial_f32(const float* grad_y, float* partial, long long rows, long long row_len,
//                         long long rows_per_chunk)
//   bias_grad_relu_partial_f32(const float* grad_y, const float* y, float* partial, ...same...)
//       grid (ceil(row_len / 128), chunks), block 256 (8 warps; required).  Block (bx, by) sums
//       rows [by * rows_per_chunk, +rows_per_chunk) of columns [bx * 128, +128) into
//       partial[by * row_len + column]; the relu variant masks grad_y by (y > 0) first (y has
//       grad_y's shape), which is linear_backward/conv2d_backward's fused ReLU.
//       Warp w takes rows w, w + 8, ...; each lane four columns: a float4 when row_len % 4 == 0
//       and the inputs are 16-byte aligned, else columns lane, lane + 32, lane + 64, lane + 96.
//   bias_grad_finish_f32(const float* partial, float* grad_b, long long chunks, long long row_len,
//                        long long spatial)
//       grid (channels), block 256 (a multiple of 32).  grad_b[c] = sum over chunks p and spatial
//       positions s of partial[p * row_len + c * spatial + s]: one block per channel, threads over
//       s (or over p when spatial == 1), then a fixed-order block reduction.
//
// partial holds chunks * row_len floats; the launcher picks chunks so that pass 1 fills the
// device while the partial buffer stays a small fraction of grad_y.
//
// dlgpu-sass: bias_grad_partial_f32 LDG.E.128
// dlgpu-sass: bias_grad_relu_partial_f32 LDG.E.128
// dlgpu-sass: bias_grad_finish_f32

#include "common.cuh"

#define BIAS_GRAD_WARPS 8
#define BIAS_GRAD_COLUMNS 128
// Rows loaded per warp before the first addition, for memory-level parallelism.
#define BIAS_GRAD_BATCH 4

// ---------------------------------------------------------------- pass 1
template <bool kReluMask>
__device__ __forceinline__ void partial_sums(const float* grad_y, const float* y, float* partial, long long rows,
                                             long long row_len, long long rows_per_chunk)
{
    __shared__ float column_sums[BIAS_GRAD_WARPS][BIAS_GRAD_COLUMNS];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const long long column0 = (long long)blockIdx.x * BIAS_GRAD_COLUMNS;
    const long long row_begin = (long long)blockIdx.y * rows_per_chunk;
    const long long row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;

    unsigned long long misaligned = (address_of(grad_y) & 15u) | (unsigned long long)(row_len & 3);
    if (kReluMask) misaligned |= address_of(y) & 15u;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};

    // ---- accumulate this warp's rows, in increasing row order
    if (misaligned == 0) {
        // Lane owns columns column0 + 4*lane .. +3, all valid or all past the end (row_len % 4 == 0).
        const long long column = column0 + 4 * lane;
        if (column < row_len) {
            long long r = row_begin + warp;
            for (; r + (BIAS_GRAD_BATCH - 1) * BIAS_GRAD_WARPS < row_end; r += BIAS_GRAD_BATCH * BIAS_GRAD_WARPS) {
                float4 g[BIAS_GRAD_BATCH];
                float4 m[BIAS_GRAD_BATCH];
                DLGPU_UNROLL
                for (int u = 0; u < BIAS_GRAD_BATCH; ++u) {
                    const long long offset = (r + u * BIAS_GRAD_WARPS) * row_len + column;
                    g[u] = *reinterpret_cast<const float4*>(grad_y + offset);
                    if (kReluMask) m[u] = *reinterpret_cast<const float4*>(y + offset);
                }
                DLGPU_UNROLL
                for (int u = 0; u < BIAS_GRAD_BATCH; ++u) {
                    if (kReluMask) {
                        g[u].x = relu_mask(g[u].x, m[u].x);
                        g[u].y = relu_mask(g[u].y, m[u].y);
                        g[u].z = relu_mask(g[u].z, m[u].z);
                        g[u].w = relu_mask(g[u].w, m[u].w);
                    }
                    acc[0] += g[u].x;
                    acc[1] += g[u].y;
                    acc[2] += g[u].z;
                    acc[3] += g[u].w;
                }
            }
            for (; r < row_end; r += BIAS_GRAD_WARPS) {
                const long long offset = r * row_len + column;
                float4 g = *reinterpret_cast<const float4*>(grad_y + offset);
                if (kReluMask) {
                    const float4 m = *reinterpret_cast<const float4*>(y + offset);
                    g.x = relu_mask(g.x, m.x);
                    g.y = relu_mask(g.y, m.y);
                    g.z = relu_mask(g.z, m.z);
                    g.w = relu_mask(g.w, m.w);
                }
                acc[0] += g.x;
                acc[1] += g.y;
                acc[2] += g.z;
                acc[3] += g.w;
            }
        }
    } else {
        // Scalar: lane owns columns column0 + lane + 32k; a warp's loads stay coalesced.
        for (long long r = row_begin + warp; r < row_end; r += BIAS_GRAD_WARPS) {
            DLGPU_UNROLL
            for (int k = 0; k < 4; ++k) {
                const long long column = column0 + lane + 32 * k;
                if (column < row_len) {
                    const long long offset = r * row_len + column;
                    const float g = grad_y[offset];
                    acc[k] += kReluMask ? relu_mask(g, y[offset]) : g;
                }
            }
        }
    }

    // ---- combine the 8 warps' sums of each column in warp order
    DLGPU_UNROLL
    for (int k = 0; k < 4; ++k) {
        const int slot = misaligned == 0 ? 4 * lane + k : lane + 32 * k;
        column_sums[warp][slot] = acc[k];
    }
    __syncthreads();
    if (threadIdx.x < BIAS_GRAD_COLUMNS && column0 + threadIdx.x < row_len) {
        float sum = 0.0f;
        DLGPU_UNROLL
        for (int w = 0; w < BIAS_GRAD_WARPS; ++w) sum += column_sums[w][threadIdx.x];
        partial[(long long)blockIdx.y * row_len + column0 + threadIdx.x] = sum;
    }
}

extern "C" __global__ void bias_grad_partial_f32(const float* grad_y, float* partial, long long rows, long long row_len,
                                                 long long rows_per_chunk)
{
    partial_sums<false>(grad_y, grad_y, partial, rows, row_len, rows_per_chunk);
}

extern "C" __global__ void bias_grad_relu_partial_f32(const float* grad_y, const float* y, float* partial,
                                                      long long rows, long long row_len, long long rows_per_chunk)
{
    partial_sums<true>(grad_y, y, partial, rows, row_len, rows_per_chunk);
}

// ---------------------------------------------------------------- pass 2
extern "C" __global__ void bias_grad_finish_f32(const float* partial, float* grad_b, long long chunks,
                                                long long row_len, long long spatial)
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
    if (threadIdx.x == 0) grad_b[channel] = sum;
}
