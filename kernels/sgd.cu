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
// traffic.  Launch: 1-D grid-stride, any grid and block.  The 16-byte-aligned body moves
// as float4, two per array in flight per thread; a scalar head and tail cover the rest,
// and pointers that differ modulo 16 make everything scalar.
//
// dlgpu-sass: sgd_momentum_f32 LDG.E.128 STG.E.128
// dlgpu-sass: sgd_plain_f32 LDG.E.128 STG.E.128

#include "common.cuh"

#define SGD_BATCH 2

struct SgdRule {
    float lr, momentum, weight_decay;

    __device__ __forceinline__ void momentum_step(float& p, float g, float& v) const
    {
        g += weight_decay * p;
        v = momentum * v + g;
        p -= lr * v;
    }
    __device__ __forceinline__ void plain_step(float& p, float g) const
    {
        g += weight_decay * p;
        p -= lr * g;
    }
};

// ---------------------------------------------------------------- kernels
extern "C" __global__ void sgd_momentum_f32(float* param, const float* grad, float* velocity, long long n,
                                            float lr, float momentum, float weight_decay)
{
    const SgdRule rule = {lr, momentum, weight_decay};
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const Vec4Plan plan = plan_vec4(n, param, phase_mismatch(param, grad) | phase_mismatch(param, velocity));

    // ---- scalar head
    for (long long i = tid; i < plan.head; i += stride) rule.momentum_step(param[i], grad[i], velocity[i]);

    // ---- float4 body: all loads of the batch before any store
    float4* pv = reinterpret_cast<float4*>(param + plan.head);
    const float4* gv = reinterpret_cast<const float4*>(grad + plan.head);
    float4* vv = reinterpret_cast<float4*>(velocity + plan.head);
    long long j = tid;
    for (; j < plan.vectors; j += SGD_BATCH * stride) {
        float4 p[SGD_BATCH], g[SGD_BATCH], v[SGD_BATCH];
        DLGPU_UNROLL
        for (int u = 0; u < SGD_BATCH; ++u) {
            const long long k = j + u * stride;
            if (k < plan.vectors) {
                p[u] = pv[k];
                g[u] = gv[k];
                v[u] = vv[k];
            }
        }
        DLGPU_UNROLL
        for (int u = 0; u < SGD_BATCH; ++u) {
            const long long k = j + u * stride;
            if (k < plan.vectors) {
                rule.momentum_step(p[u].x, g[u].x, v[u].x);
                rule.momentum_step(p[u].y, g[u].y, v[u].y);
                rule.momentum_step(p[u].z, g[u].z, v[u].z);
                rule.momentum_step(p[u].w, g[u].w, v[u].w);
                pv[k] = p[u];
                vv[k] = v[u];
            }
        }
    }

    // ---- scalar tail
    for (long long i = plan.tail_start + tid; i < n; i += stride) rule.momentum_step(param[i], grad[i], velocity[i]);
}

extern "C" __global__ void sgd_plain_f32(float* param, const float* grad, long long n, float lr, float weight_decay)
{
    const SgdRule rule = {lr, 0.0f, weight_decay};
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const Vec4Plan plan = plan_vec4(n, param, phase_mismatch(param, grad));

    // ---- scalar head
    for (long long i = tid; i < plan.head; i += stride) rule.plain_step(param[i], grad[i]);

    // ---- float4 body
    float4* pv = reinterpret_cast<float4*>(param + plan.head);
    const float4* gv = reinterpret_cast<const float4*>(grad + plan.head);
    long long j = tid;
    for (; j < plan.vectors; j += SGD_BATCH * stride) {
        float4 p[SGD_BATCH], g[SGD_BATCH];
        DLGPU_UNROLL
        for (int u = 0; u < SGD_BATCH; ++u) {
            const long long k = j + u * stride;
            if (k < plan.vectors) {
                p[u] = pv[k];
                g[u] = gv[k];
            }
        }
        DLGPU_UNROLL
        for (int u = 0; u < SGD_BATCH; ++u) {
            const long long k = j + u * stride;
            if (k < plan.vectors) {
                rule.plain_step(p[u].x, g[u].x);
                rule.plain_step(p[u].y, g[u].y);
                rule.plain_step(p[u].z, g[u].z);
                rule.plain_step(p[u].w, g[u].w);
                pv[k] = p[u];
            }
        }
    }

    // ---- scalar tail
    for (long long i = plan.tail_start + tid; i < n; i += stride) rule.plain_step(param[i], grad[i]);
}
