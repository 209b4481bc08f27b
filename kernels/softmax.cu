// kernels/softmax.cu -- softmax cross-entropy, forward (per-row loss and probabilities) and backward.
//
// logits/probs/grad: (rows, classes) row-major, of one storage type T (storage.cuh: suffix _f32,
// _bf16, _fp16; arithmetic in float, probabilities and gradients rounded to T once); row losses and
// the mean loss are float whatever T.  labels: (rows,) int32 (_i32) or int64 (_i64).
// A label outside [0, classes) is never used as an index: that row's loss (forward) or whole
// gradient row (backward) is NaN, and the first such label is reported in the device error flag
// `error` (common.cuh: report_bad_index) as DLGPU_ERROR_SOFTMAX_LABEL (forward) or
// DLGPU_ERROR_SOFTMAX_BACKWARD_LABEL, with the label, `classes` and its row.  Nothing checks the
// labels on the host before a launch (only dlgpu's debug mode does): that would synchronize.
//
//   softmax_xent_forward_warp{V}_<T>_{i32,i64}(const T* logits, const Label* labels, T* probs,
//                                              float* row_loss, long long rows, int classes,
//                                              unsigned long long* error)
//       V in {1, 2, 4, 8, 16, 32}, classes <= 32 * V.  One warp per row, the row held in
//       registers (lane owns columns lane + 32k, k < V): one read of the logits, one write of
//       the probabilities.  Any block size that is a multiple of 32; grid-stride over rows.
//   softmax_xent_forward_block_<T>_{i32,i64}(...same arguments...)
//       Any classes.  One block per row (block a multiple of 32, at most 1024): max, sum of
//       exponentials, then the probabilities, each pass reading the row (the later reads hit
//       L2).  Grid-stride over rows.
//   softmax_xent_mean_f32(const float* row_loss, float* loss, long long rows)
//       One block (a multiple of 32 threads): loss[0] = mean of row_loss, summed in a fixed order.
//   softmax_xent_backward_<T>_{i32,i64}(const T* probs, const Label* labels, T* grad,
//                                       long long rows, int classes, float inv_rows, unsigned long long* error)
//       grad = (probs - onehot(labels)) * inv_rows, inv_rows = 1 / rows.  One warp per row,
//       16-byte vectors (4 floats, 8 halves) when classes is a multiple of a vector's elements
//       and probs and grad are 16-byte aligned; grid-stride.
//
// Row losses are (max - logits[label]) + log(sum exp(logits - max)): every exponent is <= 0,
// so logits of +-1e4 neither overflow nor lose the loss to cancellation.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs; ~2.9-3.1 TB/s for a large copy; 16 MUFU per clock
// per SM), from the sm_90a build (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a softmax`), for the benchmark
// rows: 65536 x 1000 float32, int32 labels (bytes_moved 525 MB: ~180 us at 2.9 TB/s), as a share of the
// measured copy bandwidth.
//   forward     softmax_xent_forward_warp32_f32_i32: 95 registers, so 5 blocks of 128 (20 warps) per SM; grid
//               16384 blocks (24.8 waves), one row per warp: 32 scalar LDG.E issued together (coalesced, 4 KB
//               per warp, ~80 KB per SM in flight), 32 MUFU.EX2, 33 STG.E, ~925 instructions per row: 36 % of
//               the issue slots at 2.9 TB/s; EX2 ~18 us in all.  Lane 0 reads labels[r] only after the stores
//               (a second dependent memory latency per row); at ~3 us per row a warp still has ~2.5x the rate
//               the bandwidth needs.
//   mean        softmax_xent_mean_f32, one block of 1024, 32 registers: 64 rows a thread in 4 batches of 16
//               LDG.E issued together, then 16 F2F + DADD in order; 4 L2 round trips, not 64, and a chain
//               of 64 DADDs: ~4-6 us with its launch, ~2-3 % of the row.
//   backward    softmax_xent_backward_f32_i32: 38 registers, 6 blocks of 256 (48 warps) per SM, one row per
//               warp (8192 blocks, 10.3 waves): labels[r] first, then 8 LDG.E.128 / STG.E.128 pairs that reuse
//               one register quad, so one 512 B load per warp in flight (~24 KB per SM, ~2x what 3 TB/s needs
//               at ~1 us) and 9 dependent latencies per row; no second kernel.
// => forward 72-92 % of the copy ceiling (the mean kernel and the label read after the stores), backward
// 75-95 % (latency-bound margin of ~2x, not more).
//
// (every kernel here: no local memory -- the warp kernels' row must stay in registers)
// dlgpu-sass: softmax_xent_*
// dlgpu-sass: softmax_xent_backward_* LDG.E.128 STG.E.128

#include "storage.cuh"

// The device error flag's codes for this family (common.cuh; one number per report across families).
#define DLGPU_ERROR_SOFTMAX_LABEL 1
#define DLGPU_ERROR_SOFTMAX_BACKWARD_LABEL 2

template <class T, class Label>
__device__ __forceinline__ float row_loss_of(const T* row, Label label, int classes, float row_max, float sum,
                                             unsigned long long* error, long long r)
{
    if (label < 0 || label >= (Label)classes) {
        report_bad_index(error, DLGPU_ERROR_SOFTMAX_LABEL, (long long)label, classes, r);
        return NAN;
    }
    return (row_max - to_float(row[label])) + logf(sum);
}

// ---------------------------------------------------------------- forward, one warp per row
template <int V, class T, class Label>
__device__ __forceinline__ void forward_warp(const T* logits, const Label* labels, T* probs, float* row_loss,
                                             long long rows, int classes, unsigned long long* error)
{
    const int lane = threadIdx.x & 31;
    const long long warps_per_block = blockDim.x >> 5;
    const long long first = (long long)blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const long long step = (long long)gridDim.x * warps_per_block;
    for (long long r = first; r < rows; r += step) {
        const T* row = logits + r * classes;

        // ---- load the row into registers; missing columns read as -inf
        float v[V];
        DLGPU_UNROLL
        for (int k = 0; k < V; ++k) {
            const int column = lane + 32 * k;
            v[k] = column < classes ? to_float(row[column]) : -INFINITY;
        }

        // ---- max, then exponentials and their sum
        float row_max = v[0];
        DLGPU_UNROLL
        for (int k = 1; k < V; ++k) row_max = fmaxf(row_max, v[k]);
        row_max = warp_max(row_max);
        float sum = 0.0f;
        DLGPU_UNROLL
        for (int k = 0; k < V; ++k) {
            const int column = lane + 32 * k;
            v[k] = column < classes ? expf(v[k] - row_max) : 0.0f;
            sum += v[k];
        }
        sum = warp_sum(sum);

        // ---- epilogue: probabilities and this row's loss
        const float inv_sum = 1.0f / sum;
        T* out = probs + r * classes;
        DLGPU_UNROLL
        for (int k = 0; k < V; ++k) {
            const int column = lane + 32 * k;
            if (column < classes) out[column] = from_float<T>(v[k] * inv_sum);
        }
        if (lane == 0) row_loss[r] = row_loss_of(row, labels[r], classes, row_max, sum, error, r);
    }
}

// ---------------------------------------------------------------- forward, one block per row
template <class T, class Label>
__device__ __forceinline__ void forward_block(const T* logits, const Label* labels, T* probs, float* row_loss,
                                              long long rows, int classes, unsigned long long* error)
{
    __shared__ float scratch[33];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = logits + r * classes;
        float row_max = -INFINITY;
        for (int c = threadIdx.x; c < classes; c += blockDim.x) row_max = fmaxf(row_max, to_float(row[c]));
        row_max = block_max(row_max, scratch);
        float sum = 0.0f;
        for (int c = threadIdx.x; c < classes; c += blockDim.x) sum += expf(to_float(row[c]) - row_max);
        sum = block_sum(sum, scratch);
        const float inv_sum = 1.0f / sum;
        T* out = probs + r * classes;
        for (int c = threadIdx.x; c < classes; c += blockDim.x)
            out[c] = from_float<T>(expf(to_float(row[c]) - row_max) * inv_sum);
        if (threadIdx.x == 0) row_loss[r] = row_loss_of(row, labels[r], classes, row_max, sum, error, r);
    }
}

// ---------------------------------------------------------------- mean of the row losses
// Loads in flight per thread (64 rows a thread for the benchmark's 65536 rows and block of 1024).
#define MEAN_BATCH 16
extern "C" __global__ void softmax_xent_mean_f32(const float* row_loss, float* loss, long long rows)
{
    __shared__ float scratch[33];
    // Each thread's run in double: a long run of float additions would lose digits.  Its loads go out
    // MEAN_BATCH at a time, before any of them is added: one L2 round trip per batch, not per row.  The
    // additions keep the order of the plain loop (r = threadIdx.x, + blockDim.x, ...): the same sum.
    double run = 0.0;
    long long r = threadIdx.x;
    for (; r + (MEAN_BATCH - 1) * (long long)blockDim.x < rows; r += MEAN_BATCH * (long long)blockDim.x) {
        float batch[MEAN_BATCH];
        DLGPU_UNROLL
        for (int k = 0; k < MEAN_BATCH; ++k) batch[k] = row_loss[r + k * blockDim.x];
        DLGPU_UNROLL
        for (int k = 0; k < MEAN_BATCH; ++k) run += (double)batch[k];
    }
    for (; r < rows; r += blockDim.x) run += (double)row_loss[r];
    const float total = block_sum((float)run, scratch);
    if (threadIdx.x == 0) loss[0] = (float)((double)total / (double)rows);
}

// ---------------------------------------------------------------- backward, one warp per row
template <class T, class Label>
__device__ __forceinline__ void backward_rows(const T* probs, const Label* labels, T* grad, long long rows,
                                              int classes, float inv_rows, unsigned long long* error)
{
    constexpr int PV = per_vector<T>;
    const int lane = threadIdx.x & 31;
    const long long warps_per_block = blockDim.x >> 5;
    const long long first = (long long)blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const long long step = (long long)gridDim.x * warps_per_block;
    const bool vectorized = ((address_of(probs) | address_of(grad)) & 15u) == 0 && classes % PV == 0;
    for (long long r = first; r < rows; r += step) {
        const Label label = labels[r];
        const T* in = probs + r * classes;
        T* out = grad + r * classes;
        if (label < 0 || label >= (Label)classes) {
            if (lane == 0) report_bad_index(error, DLGPU_ERROR_SOFTMAX_BACKWARD_LABEL, (long long)label, classes, r);
            for (int c = lane; c < classes; c += 32) out[c] = from_float<T>(NAN);
            continue;
        }
        const int hot = (int)label;
        if (vectorized) {
            for (int j = lane; j < classes / PV; j += 32) {
                float p[PV];
                load_vector(in + PV * j, p);
                DLGPU_UNROLL
                for (int e = 0; e < PV; ++e) p[e] = (p[e] - (PV * j + e == hot ? 1.0f : 0.0f)) * inv_rows;
                store_vector(out + PV * j, p);
            }
        } else {
            for (int c = lane; c < classes; c += 32)
                out[c] = from_float<T>((to_float(in[c]) - (c == hot ? 1.0f : 0.0f)) * inv_rows);
        }
    }
}

// ---------------------------------------------------------------- named instances
// The warp kernels' values per lane, smallest first (dlgpu/cuda/softmax.py: WARP_VALUES mirrors it),
// and the label types: X(suffix, type, ...).
#define SOFTMAX_WARP_VALUES(X, ...) X(1, __VA_ARGS__) X(2, __VA_ARGS__) X(4, __VA_ARGS__) X(8, __VA_ARGS__) \
    X(16, __VA_ARGS__) X(32, __VA_ARGS__)
#define SOFTMAX_LABELS(X, ...) X(i32, int, __VA_ARGS__) X(i64, long long, __VA_ARGS__)

#define SOFTMAX_WARP_KERNEL(V, suffix, Label, tsuffix, T)                                                     \
    extern "C" __global__ void softmax_xent_forward_warp##V##_##tsuffix##_##suffix(                           \
        const T* logits, const Label* labels, T* probs, float* row_loss, long long rows, int classes,         \
        unsigned long long* error)                                                                            \
    {                                                                                                         \
        forward_warp<V, T, Label>(logits, labels, probs, row_loss, rows, classes, error);                     \
    }
// Per storage and label type: a warp kernel per V, the block kernel and the backward kernel.
#define SOFTMAX_KERNELS(suffix, Label, tsuffix, T)                                                            \
    SOFTMAX_WARP_VALUES(SOFTMAX_WARP_KERNEL, suffix, Label, tsuffix, T)                                       \
    extern "C" __global__ void softmax_xent_forward_block_##tsuffix##_##suffix(                               \
        const T* logits, const Label* labels, T* probs, float* row_loss, long long rows, int classes,         \
        unsigned long long* error)                                                                            \
    {                                                                                                         \
        forward_block<T, Label>(logits, labels, probs, row_loss, rows, classes, error);                       \
    }                                                                                                         \
    extern "C" __global__ void softmax_xent_backward_##tsuffix##_##suffix(                                    \
        const T* probs, const Label* labels, T* grad, long long rows, int classes, float inv_rows,            \
        unsigned long long* error)                                                                            \
    {                                                                                                         \
        backward_rows<T, Label>(probs, labels, grad, rows, classes, inv_rows, error);                         \
    }
#define SOFTMAX_TYPE_KERNELS(tsuffix, T) SOFTMAX_LABELS(SOFTMAX_KERNELS, tsuffix, T)
STORAGE_TYPES(SOFTMAX_TYPE_KERNELS)
