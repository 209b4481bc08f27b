// kernels/elementwise.cu -- activations and their backward passes, and storage conversions.
//
// Every kernel exists once per storage type T (storage.cuh's STORAGE_TYPES): suffix _f32 (float),
// _bf16 and _fp16 (16-bit storage, computed in float, each output rounded once).
//   relu_forward_<T>(const T* x, T* y, long long n)          y = x < 0 ? 0 : x  (NaN passes)
//   tanh_forward_<T>(const T* x, T* y, long long n)          y = tanh(x)
//   sigmoid_forward_<T>(const T* x, T* y, long long n)       y = 1 / (1 + exp(-x))
//   relu_backward_<T>(const T* grad_y, const T* y, T* grad_x, long long n)
//                                                            grad_x = y > 0 ? grad_y : 0
//   tanh_backward_<T>(...same...)                            grad_x = grad_y * (1 - y)(1 + y)
//   sigmoid_backward_<T>(...same...)                         grad_x = grad_y * y * (1 - y)
// And for the 16-bit types H (bf16, fp16), the conversions the launchers use where a kernel has
// no 16-bit form yet (the tensor-core products read float32 operands):
//   convert_f32_to_<H>(const float* x, H* y, long long n)    y = x rounded to nearest even
//   convert_<H>_to_f32(const H* x, float* y, long long n)    y = x, exact
//
// Buffers: contiguous, n >= 1 elements, any alignment.  The output may be one of the
// inputs (in place); partial overlap is not supported.  Backward passes use the saved
// OUTPUT y, so no input has to be kept.
// Launch: 1-D grid-stride loop; any grid, any block size (storage.cuh's map_vec).  From the
// first element at which every array is 16-byte aligned, chunks of 8 elements are read and
// written as 16-byte vectors (LDG.E.128 / STG.E.128: two per float array, one per 16-bit
// array), 64 bytes per input in flight per thread before the first store; a short head and
// tail go through scalar code.  Arrays with no common aligned element (a view offset by one
// element) make the whole range scalar: correct, slower.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs; HBM3 3.35 TB/s, ~2.9-3.1 TB/s for a large copy;
// 50 MB L2), from the sm_90a build (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a elementwise`), for the
// benchmark rows: relu forward and backward on 2^26 elements, as a share of the measured copy bandwidth.
//   launch      min(n / 8 / 256, 4 x 132) = 528 blocks of 256 threads: one wave, 1024 threads per SM, each
//               thread ~62 chunks (31 trips of the batch loop in float32, 16 in 16-bit storage).
//   float32     relu_forward 32 registers, batch loop 70 instructions: 4 LDG.E.128, then 4 STG.E.128 (64 B
//               per thread in flight, 64 KB per SM: ~3x the ~20 KB per SM that 3 TB/s at ~1 us loaded latency
//               needs); relu_backward 40 registers, 8 LDG.E.128 + 4 STG.E.128 in 73 (128 KB per SM).
//   16-bit      relu forward / backward 32 / 50 registers, 4 / 8 LDG.E.128 and 4 STG.E.128 per trip of 152 / 200
//               instructions (storage.cuh stores each output vector through ptx::store_v4: from a plain uint4
//               store NVVM had emitted 2 of the 4 as four 32-bit st.global.u32, 2.5x the L1 -> L2 store
//               requests for the same DRAM bytes).
//   issue       4 KB per warp-trip for 70-206 warp instructions: at 3 TB/s (13 B per clock per SM) 6-13 % of
//               the issue slots.  bytes_moved (8 / 12 bytes per float32 element) is what moves: one pass.
// => float32 forward and backward 85-100 % of the copy ceiling (one read and one write stream is a copy;
// ~185 and ~280 us); 16-bit 80-100 % (half the bytes, ~95 / 140 us, so the ramp weighs more).  Under 80 %
// would point at too few bytes in flight (the launch), not the arithmetic.
//
// dlgpu-sass: relu_forward_* LDG.E.128 STG.E.128
// dlgpu-sass: tanh_forward_* LDG.E.128 STG.E.128
// dlgpu-sass: sigmoid_forward_* LDG.E.128 STG.E.128
// dlgpu-sass: relu_backward_* LDG.E.128 STG.E.128
// dlgpu-sass: tanh_backward_* LDG.E.128 STG.E.128
// dlgpu-sass: sigmoid_backward_* LDG.E.128 STG.E.128
// dlgpu-sass: convert_* LDG.E.128 STG.E.128
// (16-bit outputs: every store a 16-byte vector or a 16-bit scalar, no 32-bit piece of a split vector)
// dlgpu-sass: *_bf16 !STG.E$
// dlgpu-sass: *_fp16 !STG.E$

#include "storage.cuh"

// 64 bytes per input per thread per trip (four float4 of float, four vectors of 16-bit data):
// enough bytes in flight per SM to cover DRAM latency with a grid capped at a few blocks per SM.
#define ELEMENTWISE_BYTES 64
template <class T> constexpr int elementwise_batch = ELEMENTWISE_BYTES / (MAP_CHUNK * (int)sizeof(T));

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

struct Identity {
    __device__ __forceinline__ float operator()(float x) const { return x; }
};

// ---------------------------------------------------------------- over arrays
// An elementwise op as storage.cuh's map_vec takes it: the input values of one element in, its output out.
template <class Op> struct Unary {
    Op op;
    __device__ __forceinline__ void operator()(const float (&a)[1], float (&r)[1]) const { r[0] = op(a[0]); }
};
template <class Op> struct Binary {
    Op op;
    __device__ __forceinline__ void operator()(const float (&a)[2], float (&r)[1]) const { r[0] = op(a[0], a[1]); }
};

template <class Op, class TX, class TY> __device__ __forceinline__ void map_unary(const TX* x, TY* y, long long n, Op op)
{
    map_vec<elementwise_batch<TX>>(n, reads(x), writes(y), Unary<Op>{op});
}

template <class Op, class T>
__device__ __forceinline__ void map_binary(const T* a, const T* b, T* result, long long n, Op op)
{
    map_vec<elementwise_batch<T>>(n, reads(a, b), writes(result), Binary<Op>{op});
}

// ---------------------------------------------------------------- kernels
#define ELEMENTWISE_KERNELS(suffix, T)                                                                         \
    extern "C" __global__ void relu_forward_##suffix(const T* x, T* y, long long n)                             \
    {                                                                                                          \
        map_unary(x, y, n, ReluForward());                                                                     \
    }                                                                                                          \
    extern "C" __global__ void tanh_forward_##suffix(const T* x, T* y, long long n)                             \
    {                                                                                                          \
        map_unary(x, y, n, TanhForward());                                                                     \
    }                                                                                                          \
    extern "C" __global__ void sigmoid_forward_##suffix(const T* x, T* y, long long n)                          \
    {                                                                                                          \
        map_unary(x, y, n, SigmoidForward());                                                                  \
    }                                                                                                          \
    extern "C" __global__ void relu_backward_##suffix(const T* grad_y, const T* y, T* grad_x, long long n)      \
    {                                                                                                          \
        map_binary(grad_y, y, grad_x, n, ReluBackward());                                                      \
    }                                                                                                          \
    extern "C" __global__ void tanh_backward_##suffix(const T* grad_y, const T* y, T* grad_x, long long n)      \
    {                                                                                                          \
        map_binary(grad_y, y, grad_x, n, TanhBackward());                                                      \
    }                                                                                                          \
    extern "C" __global__ void sigmoid_backward_##suffix(const T* grad_y, const T* y, T* grad_x, long long n)   \
    {                                                                                                          \
        map_binary(grad_y, y, grad_x, n, SigmoidBackward());                                                   \
    }
STORAGE_TYPES(ELEMENTWISE_KERNELS)

#define CONVERT_KERNELS(suffix, H)                                                                             \
    extern "C" __global__ void convert_f32_to_##suffix(const float* x, H* y, long long n)                       \
    {                                                                                                          \
        map_unary(x, y, n, Identity());                                                                        \
    }                                                                                                          \
    extern "C" __global__ void convert_##suffix##_to_f32(const H* x, float* y, long long n)                     \
    {                                                                                                          \
        map_unary(x, y, n, Identity());                                                                        \
    }
HALF_TYPES(CONVERT_KERNELS)
