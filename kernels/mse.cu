// kernels/mse.cu -- the squared error of the review's Figure 1: E = 0.5 * (y - t)^2, summed over a
// row's outputs and averaged over the rows (the batch), and its gradient (y - t) / rows.
//
// y, t, grad: n contiguous float32 elements (rows x outputs, any alignment); partial: float32.
//
//   mse_loss_partial_f32(const float* y, const float* t, float* partial, long long n)
//       Grid-stride over the elements: each thread sums (y - t)^2 of its elements in double, the
//       block adds its threads' sums and thread 0 writes partial[blockIdx.x].  Any grid; block a
//       multiple of 32, at most 1024.
//   mse_loss_finish_f32(const float* partial, float* loss, int blocks, float scale)
//       One block (a multiple of 32 threads): loss[0] = scale * sum of partial[0 .. blocks), the
//       launcher's scale being 0.5 / rows.
//   mse_loss_backward_f32(const float* y, const float* t, float* grad, long long n, float scale)
//       grad = (y - t) * scale, scale = 1 / rows; storage.cuh's vector driver map_vec: any grid and
//       block, grad may be y or t (in place).
//
// Every sum runs in an order fixed by the grid and block sizes, so the same launch gives the same
// bits every call.  A NaN or inf in y or t reaches the loss (it is never skipped).
//
// dlgpu-sass: mse_loss_*
// dlgpu-sass: mse_loss_backward_f32 LDG.E.128 STG.E.128

#include "common.cuh"
#include "storage.cuh"

// Two chunks of MAP_CHUNK floats (four independent float4) per input per thread per trip.
#define MSE_BATCH 2

// ---------------------------------------------------------------- forward: per-block sums, then one
extern "C" __global__ void mse_loss_partial_f32(const float* y, const float* t, float* partial, long long n)
{
    __shared__ float scratch[33];
    // The thread's run in double: a long run of float additions would lose digits.
    double run = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double d = (double)y[i] - (double)t[i];
        run += d * d;
    }
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

extern "C" __global__ void mse_loss_backward_f32(const float* y, const float* t, float* grad, long long n,
                                                 float scale)
{
    map_vec<MSE_BATCH>(n, reads(y, t), writes(grad), ScaledDifference{scale});
}
