// kernels/sgd.cu -- one fused SGD step, in place, PyTorch's rule (no dampening, no Nesterov).
//
//   sgd_momentum_f32(float* param, const float* grad, float* velocity, long long n,
//                    float lr, float momentum, float weight_decay)
//       g = grad + weight_decay * param;  velocity = momentum * velocity + g;  param -= lr * velocity
//   sgd_plain_f32(float* param, const float* grad, long long n, float lr, float weight_decay)
//       param -= lr * (grad + weight_decay * param)          (momentum == 0: velocity untouched)
//
// Buffers: contiguous, n >= 1 elements each, pairwise disjoint, any alignment.  One pass:
// every element is read once and written once (param, velocity) -- the optimizer's whole
// traffic.  Launch: 1-D grid-stride, any grid and block (common.cuh's map_vec4).  The
// 16-byte-aligned body moves as float4, two per array in flight per thread; a scalar head
// and tail cover the rest, and pointers that differ modulo 16 make everything scalar.
//
// dlgpu-sass: sgd_momentum_f32 LDG.E.128 STG.E.128
// dlgpu-sass: sgd_plain_f32 LDG.E.128 STG.E.128

#include "common.cuh"

// Two float4 per array in flight: three arrays in, two out already keep many bytes moving.
#define SGD_BATCH 2

// One element's update as map_vec4's op: a = (param, grad, velocity) in, r = (param, velocity) out.
struct MomentumStep {
    float lr, momentum, weight_decay;
    __device__ __forceinline__ void operator()(const float (&a)[3], float (&r)[2]) const
    {
        const float g = a[1] + weight_decay * a[0];
        r[1] = momentum * a[2] + g;
        r[0] = a[0] - lr * r[1];
    }
};
// The same without momentum: a = (param, grad) in, r = (param) out.
struct PlainStep {
    float lr, weight_decay;
    __device__ __forceinline__ void operator()(const float (&a)[2], float (&r)[1]) const
    {
        const float g = a[1] + weight_decay * a[0];
        r[0] = a[0] - lr * g;
    }
};

// ---------------------------------------------------------------- kernels
extern "C" __global__ void sgd_momentum_f32(float* param, const float* grad, float* velocity, long long n,
                                            float lr, float momentum, float weight_decay)
{
    const float* const in[] = {param, grad, velocity};
    float* const out[] = {param, velocity};
    map_vec4<SGD_BATCH>(n, in, out, MomentumStep{lr, momentum, weight_decay});
}

extern "C" __global__ void sgd_plain_f32(float* param, const float* grad, long long n, float lr, float weight_decay)
{
    const float* const in[] = {param, grad};
    float* const out[] = {param};
    map_vec4<SGD_BATCH>(n, in, out, PlainStep{lr, weight_decay});
}
