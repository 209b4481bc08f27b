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

// ---------------------------------------------------------------- over arrays
// An elementwise op as common.cuh's map_vec4 takes it: the input values of one element in, its output out.
template <class Op> struct Unary {
    Op op;
    __device__ __forceinline__ void operator()(const float (&a)[1], float (&r)[1]) const { r[0] = op(a[0]); }
};
template <class Op> struct Binary {
    Op op;
    __device__ __forceinline__ void operator()(const float (&a)[2], float (&r)[1]) const { r[0] = op(a[0], a[1]); }
};

template <class Op> __device__ __forceinline__ void map_unary(const float* x, float* y, long long n, Op op)
{
    const float* const in[] = {x};
    float* const out[] = {y};
    map_vec4<ELEMENTWISE_BATCH>(n, in, out, Unary<Op>{op});
}

template <class Op>
__device__ __forceinline__ void map_binary(const float* a, const float* b, float* result, long long n, Op op)
{
    const float* const in[] = {a, b};
    float* const out[] = {result};
    map_vec4<ELEMENTWISE_BATCH>(n, in, out, Binary<Op>{op});
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
