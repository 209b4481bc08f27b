// kernels/elementwise.cu -- activations and their backward passes, float32.
//
//   relu_forward_f32(const float* x, float* y, long long n)          y = x < 0 ? 0 : x  (NaN passes)
//   tanh_forward_f32(const float* x, float* y, long long n)          y = tanh(x)
//   sigmoid_forward_f32(const float* x, float* y, long long n)       y = 1 / (1 + exp(-x))
//   relu_backward_f32(const float* grad_y, const float* y, float* grad_x, long long n)
//                                                                    grad_x = y > 0 ? grad_y : 0
//   tanh_backward_f32(...same...)                                    grad_x = grad_y * (1 - y)(1 + y)
//   sigmoid_backward_f32(...same...)                                 grad_x = grad_y * y * (1 - y)
//
// Buffers: contiguous, n >= 1 elements, any alignment.  The output may be one of the
// inputs (in place); partial overlap is not supported.  Backward passes use the saved
// OUTPUT y, so no input has to be kept.
// Launch: 1-D grid-stride loop; any grid, any block size.  The 16-byte-aligned body is
// read and written as float4 (LDG.E.128 / STG.E.128), four float4 in flight per thread
// before the first store; a head of up to 3 elements (to reach alignment) and a tail
// of up to 3 go through scalar code.  Pointers whose addresses differ modulo 16 (a
// view offset by one element) make the whole range scalar: correct, slower.
//
// dlgpu-sass: relu_forward_f32 LDG.E.128 STG.E.128
// dlgpu-sass: tanh_forward_f32 LDG.E.128 STG.E.128
// dlgpu-sass: sigmoid_forward_f32 LDG.E.128 STG.E.128
// dlgpu-sass: relu_backward_f32 LDG.E.128 STG.E.128
// dlgpu-sass: tanh_backward_f32 LDG.E.128 STG.E.128
// dlgpu-sass: sigmoid_backward_f32 LDG.E.128 STG.E.128

#include "common.cuh"

// Four independent float4 per thread per trip: enough bytes in flight per SM to cover
// DRAM latency with a grid capped at a few blocks per SM.
#define ELEMENTWISE_BATCH 4

// ---------------------------------------------------------------- the operations
struct ReluForward {
    __device__ __forceinline__ float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};
struct TanhForward {
    __device__ __forceinline__ float operator()(float x) const { return tanhf(x); }
};
struct SigmoidForward {
    // exp(-x) overflows to inf for x < -88, giving exactly 0: no special case needed.
    __device__ __forceinline__ float operator()(float x) const { return 1.0f / (1.0f + expf(-x)); }
};
struct ReluBackward {
    __device__ __forceinline__ float operator()(float g, float y) const { return relu_mask(g, y); }
};
struct TanhBackward {
    // (1 - y)(1 + y), not 1 - y*y: near |y| = 1 the rounding of y*y would dominate the small
    // difference, while 1 - y is exact there (Sterbenz) and 1 + y costs one rounding.
    __device__ __forceinline__ float operator()(float g, float y) const { return g * ((1.0f - y) * (1.0f + y)); }
};
struct SigmoidBackward {
    __device__ __forceinline__ float operator()(float g, float y) const { return g * (y * (1.0f - y)); }
};

template <class Op>
__device__ __forceinline__ float4 apply4(Op op, float4 a)
{
    return make_float4(op(a.x), op(a.y), op(a.z), op(a.w));
}

template <class Op>
__device__ __forceinline__ float4 apply4(Op op, float4 a, float4 b)
{
    return make_float4(op(a.x, b.x), op(a.y, b.y), op(a.z, b.z), op(a.w, b.w));
}

// ---------------------------------------------------------------- drivers
template <class Op>
__device__ __forceinline__ void map_unary(const float* x, float* y, long long n, Op op)
{
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const Vec4Plan plan = plan_vec4(n, x, phase_mismatch(x, y));

    // ---- scalar head (or everything, when the pointers cannot be vectorized together)
    for (long long i = tid; i < plan.head; i += stride) y[i] = op(x[i]);

    // ---- float4 body: load the whole batch before storing any of it, so that the
    // loads are independent even when y == x (each element is read by its own thread
    // before that thread writes it, which keeps in-place calls correct).
    const float4* xv = reinterpret_cast<const float4*>(x + plan.head);
    float4* yv = reinterpret_cast<float4*>(y + plan.head);
    long long j = tid;
    for (; j + (ELEMENTWISE_BATCH - 1) * stride < plan.vectors; j += ELEMENTWISE_BATCH * stride) {
        float4 v[ELEMENTWISE_BATCH];
        DLGPU_UNROLL
        for (int u = 0; u < ELEMENTWISE_BATCH; ++u) v[u] = xv[j + u * stride];
        DLGPU_UNROLL
        for (int u = 0; u < ELEMENTWISE_BATCH; ++u) yv[j + u * stride] = apply4(op, v[u]);
    }
    for (; j < plan.vectors; j += stride) yv[j] = apply4(op, xv[j]);

    // ---- scalar tail
    for (long long i = plan.tail_start + tid; i < n; i += stride) y[i] = op(x[i]);
}

template <class Op>
__device__ __forceinline__ void map_binary(const float* a, const float* b, float* out, long long n, Op op)
{
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const Vec4Plan plan = plan_vec4(n, a, phase_mismatch(a, b) | phase_mismatch(a, out));

    // ---- scalar head
    for (long long i = tid; i < plan.head; i += stride) out[i] = op(a[i], b[i]);

    // ---- float4 body, batched as in map_unary (out may alias a or b)
    const float4* av = reinterpret_cast<const float4*>(a + plan.head);
    const float4* bv = reinterpret_cast<const float4*>(b + plan.head);
    float4* ov = reinterpret_cast<float4*>(out + plan.head);
    long long j = tid;
    for (; j + (ELEMENTWISE_BATCH - 1) * stride < plan.vectors; j += ELEMENTWISE_BATCH * stride) {
        float4 va[ELEMENTWISE_BATCH];
        float4 vb[ELEMENTWISE_BATCH];
        DLGPU_UNROLL
        for (int u = 0; u < ELEMENTWISE_BATCH; ++u) {
            va[u] = av[j + u * stride];
            vb[u] = bv[j + u * stride];
        }
        DLGPU_UNROLL
        for (int u = 0; u < ELEMENTWISE_BATCH; ++u) ov[j + u * stride] = apply4(op, va[u], vb[u]);
    }
    for (; j < plan.vectors; j += stride) ov[j] = apply4(op, av[j], bv[j]);

    // ---- scalar tail
    for (long long i = plan.tail_start + tid; i < n; i += stride) out[i] = op(a[i], b[i]);
}

// ---------------------------------------------------------------- kernels
extern "C" __global__ void relu_forward_f32(const float* x, float* y, long long n)
{
    map_unary(x, y, n, ReluForward());
}

extern "C" __global__ void tanh_forward_f32(const float* x, float* y, long long n)
{
    map_unary(x, y, n, TanhForward());
}

extern "C" __global__ void sigmoid_forward_f32(const float* x, float* y, long long n)
{
    map_unary(x, y, n, SigmoidForward());
}

extern "C" __global__ void relu_backward_f32(const float* grad_y, const float* y, float* grad_x, long long n)
{
    map_binary(grad_y, y, grad_x, n, ReluBackward());
}

extern "C" __global__ void tanh_backward_f32(const float* grad_y, const float* y, float* grad_x, long long n)
{
    map_binary(grad_y, y, grad_x, n, TanhBackward());
}

extern "C" __global__ void sigmoid_backward_f32(const float* grad_y, const float* y, float* grad_x, long long n)
{
    map_binary(grad_y, y, grad_x, n, SigmoidBackward());
}
