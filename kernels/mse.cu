// kernels/mse.cu -- the squared error of the review's Figure 1: E = 0.5 * (y - t)^2, summed over a
// row's outputs and averaged over the rows (the batch), and its gradient (y - t) / rows.
//
// y, t, grad: n contiguous elements (rows x outputs, any alignment) of one storage type T
// (storage.cuh: suffix _f32, _bf16, _fp16; every difference and square in float or wider, the
// gradient rounded once to T); partial and the loss: float whatever T.
//
//   mse_loss_partial_<T>(const T* y, const T* t, float* partial, long long n)
//       storage.cuh's vector driver map_vec with no output: each thread sums (y - t)^2 of its
//       elements in double, the block adds its threads' sums and thread 0 writes
//       partial[blockIdx.x].  Any grid; block a multiple of 32, at most 1024.
//   mse_loss_finish_f32(const float* partial, float* loss, int blocks, float scale)
//       One block (a multiple of 32 threads): loss[0] = scale * sum of partial[0 .. blocks), the
//       launcher's scale being 0.5 / rows.
//   mse_loss_backward_<T>(const T* y, const T* t, T* grad, long long n, float scale)
//       grad = (y - t) * scale, scale = 1 / rows; map_vec: any grid and block, grad may be y or t
//       (in place).
//
// Every sum runs in an order fixed by the grid and block sizes and by the arrays' offsets from a
// 16-byte boundary (where map_vec's vector body starts), so the same launch on the same arrays
// gives the same bits every call.  A NaN or inf in y or t reaches the loss (it is never skipped).
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs; ~2.9-3.1 TB/s for a large copy, a read-only stream
// as fast or a little faster; FP64 FMA 64 and 64-bit conversions 16 per clock per SM), from the sm_90a build
// (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a mse`), for the benchmark rows: 65536 x 1000 float32, as a
// share of the measured copy bandwidth.
//   loss        mse_loss_partial_f32: 34 registers, 528 blocks of 256 (4 per SM, one wave); batch loop 99
//               instructions: 8 LDG.E.128 (128 B per thread in flight, 128 KB per SM), then per element two
//               F2F.F64.F32, a DADD and a DFMA: the conversions take ~1/8 clock per element per SM against
//               ~0.6 clock for its 8 bytes at 3 TB/s, on their own pipe.  Then a block sum, 528 partials, and
//               mse_loss_finish_f32 (one block, one load per thread): ~2-4 us with its launch beside ~180 us
//               of reading 524 MB.
//   backward    mse_loss_backward_f32: 40 registers, 8 LDG.E.128 + 4 STG.E.128 per 77 instructions, the
//               float32 relu_backward's shape (elementwise.cu): 786 MB, ~270 us.  bytes_moved counts exactly
//               what both kernels move.
// => loss 85-105 % of the copy ceiling (read-only), backward 85-100 %.
//
// dlgpu-sass: mse_loss_*
// dlgpu-sass: mse_loss_partial_* LDG.E.128
// dlgpu-sass: mse_loss_backward_* LDG.E.128 STG.E.128

#include "common.cuh"
#include "storage.cuh"

// Two chunks of MAP_CHUNK elements per input per thread per trip: 64 bytes of float, 32 of 16-bit data.
#define MSE_BATCH 2

// ---------------------------------------------------------------- forward: per-block sums, then one
// The thread's run in double: a long run of float additions would lose digits.
struct SquaredDifferenceSum {
    double run;
    template <class R> __device__ __forceinline__ void operator()(const float (&a)[2], R&)
    {
        const double d = (double)a[0] - (double)a[1];
        run += d * d;
    }
};

template <class T> __device__ __forceinline__ void loss_partial(const T* y, const T* t, float* partial, long long n)
{
    __shared__ float scratch[33];
    const double run = map_vec<MSE_BATCH>(n, reads(y, t), writes(), SquaredDifferenceSum{0.0}).run;
    const float total = block_sum((float)run, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

extern "C" __global__ void mse_loss_finish_f32(const float* partial, float* loss, int blocks, float scale)
{
    __shared__ float scratch[33];
    double run = 0.0;
    for (int b = threadIdx.x; b < blocks; b += blockDim.x) run += (double)partial[b];
    const float total = block_sum((float)run, scratch);
    if (threadIdx.x == 0) loss[0] = (float)((double)total * (double)scale);
}

// ---------------------------------------------------------------- backward
struct ScaledDifference {
    float scale;
    __device__ __forceinline__ void operator()(const float (&a)[2], float (&r)[1]) const
    {
        r[0] = (a[0] - a[1]) * scale;
    }
};

// ---------------------------------------------------------------- named instances
#define MSE_KERNELS(suffix, T)                                                                                 \
    extern "C" __global__ void mse_loss_partial_##suffix(const T* y, const T* t, float* partial, long long n) \
    {                                                                                                          \
        loss_partial(y, t, partial, n);                                                                        \
    }                                                                                                          \
    extern "C" __global__ void mse_loss_backward_##suffix(const T* y, const T* t, T* grad, long long n,       \
                                                          float scale)                                         \
    {                                                                                                          \
        map_vec<MSE_BATCH>(n, reads(y, t), writes(grad), ScaledDifference{scale});                             \
    }
STORAGE_TYPES(MSE_KERNELS)
