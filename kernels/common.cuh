// kernels/common.cuh -- small device helpers shared by the kernel families.
//
// Everything here is plain CUDA C++ that both NVRTC and the CPU harness
// (dlgpu/testing/cuda_host.h, which g++ includes before this file) understand:
//   INFINITY, NAN          NVRTC has no <cmath>; defined from bit patterns when missing
//   DLGPU_UNROLL(_4, _1)   `#pragma unroll` (4, 1: not at all) on the device, nothing on the host (no g++ warning)
//   ceil_div               integer division rounding up
//   fast_div(n, mul, shift)
//                          n / d for 0 <= n < 2^31 by one wide multiply and a shift, (mul, shift) from the
//                          launcher (dlgpu/cuda/conv2d.py: fast_divisor): no division in a kernel's loop
//   relu_mask              grad * (y > 0) as every family computes it (one definition)
//   zero(array)            every float of a (nested) accumulator array set to 0
//   EPILOGUE_BIAS, _RELU   bits of the tiled GEMM and convolution kernels' `flags`
//   epilogue(v, ch, ...)   v + bias[ch] (EPILOGUE_BIAS), then ReLU (EPILOGUE_RELU): every fused epilogue
//   store_run<V>           V (2 or 4) consecutive outputs: one vector store, or scalars at an edge
//   address_of(p)          a pointer as an integer, for alignment tests
//                          (the memory-bound kernels' vector driver is storage.cuh's map_vec)
//   warp_sum, warp_max     butterfly shuffles over a full warp: every lane gets the result,
//                          and the order of the additions is fixed (deterministic)
//   block_sum, block_max   the same over a block whose size is a multiple of 32
//   report_bad_index       record an index outside its range in the device error flag (first one wins)
#pragma once

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif

#if defined(__CUDA_ARCH__)
#define DLGPU_UNROLL _Pragma("unroll")
#define DLGPU_UNROLL_4 _Pragma("unroll 4")
#define DLGPU_UNROLL_1 _Pragma("unroll 1")
#else
#define DLGPU_UNROLL
#define DLGPU_UNROLL_4
#define DLGPU_UNROLL_1
#endif

#define DLGPU_FULL_WARP 0xffffffffu

__device__ __forceinline__ long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

// Exact for 0 <= n < 2^31 and mul = ceil(2^shift / d), shift = 31 + ceil(log2 d) (see the launcher).
__device__ __forceinline__ int fast_div(int n, unsigned mul, unsigned shift)
{
    return (int)(((unsigned long long)(unsigned)n * mul) >> shift);
}

// The ReLU derivative from the saved output: 1 where y > 0, else 0 (NaN y gives 0).
// A select, not a product, so that an infinite gradient under a zero mask stays 0.
__device__ __forceinline__ float relu_mask(float grad, float y) { return y > 0.0f ? grad : 0.0f; }

__device__ __forceinline__ void zero(float& v) { v = 0.0f; }
template <class T, int N> __device__ __forceinline__ void zero(T (&a)[N])
{
    DLGPU_UNROLL
    for (int i = 0; i < N; ++i) zero(a[i]);
}

// ---------------------------------------------------------------- the fused epilogue
// The tiled GEMM and convolution kernels end alike: bias[channel] added under EPILOGUE_BIAS,
// then negatives clamped under EPILOGUE_RELU (NaN passes, like relu_forward_f32).  `channel` is a
// GEMM's output column, a convolution's output channel.  dlgpu/cuda/gemm.py mirrors the bits.
#define EPILOGUE_BIAS 1
#define EPILOGUE_RELU 2

__device__ __forceinline__ float epilogue(float v, int channel, const float* bias, int flags)
{
    if (flags & EPILOGUE_BIAS) v += bias[channel];
    if (flags & EPILOGUE_RELU) v = v < 0.0f ? 0.0f : v;
    return v;
}

// v[0 .. V) to out[0 .. V), the outputs at positions at .. at + V - 1 of a run that ends before
// `end` (a row of C, a plane of a convolution's output): one 4V-byte store when all of them are
// before `end` and `vector` (out is 4V-byte aligned), else one store per position before `end`.
template <int V>
__device__ __forceinline__ void store_run(float* out, const float (&v)[V], int at, int end, bool vector)
{
    static_assert(V == 2 || V == 4, "runs of 2 or 4 floats");
    if (vector && at + V <= end) {
        if constexpr (V == 4) *reinterpret_cast<float4*>(out) = make_float4(v[0], v[1], v[2], v[3]);
        else *reinterpret_cast<float2*>(out) = make_float2(v[0], v[1]);
    } else {
        DLGPU_UNROLL
        for (int j = 0; j < V; ++j)
            if (at + j < end) out[j] = v[j];
    }
}

// ---------------------------------------------------------------- addresses
__device__ __forceinline__ unsigned long long address_of(const void* p)
{
    return reinterpret_cast<unsigned long long>(p);
}

// ---------------------------------------------------------------- reductions
__device__ __forceinline__ float warp_sum(float v)
{
    DLGPU_UNROLL
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(DLGPU_FULL_WARP, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    DLGPU_UNROLL
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(DLGPU_FULL_WARP, v, offset));
    return v;
}

// Block-wide sum returned to every thread.  `scratch` is __shared__ float[33]; the
// leading barrier lets a caller reuse the same scratch for consecutive reductions.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < warps ? scratch[lane] : 0.0f;
        w = warp_sum(w);
        if (lane == 0) scratch[32] = w;
    }
    __syncthreads();
    return scratch[32];
}

__device__ __forceinline__ float block_max(float v, float* scratch)
{
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < warps ? scratch[lane] : -INFINITY;
        w = warp_max(w);
        if (lane == 0) scratch[32] = w;
    }
    __syncthreads();
    return scratch[32];
}

// ---------------------------------------------------------------- the device error flag
// A kernel that takes indices (class labels, pooling's argmax) never uses one outside its range, and
// reports the first such index it meets here instead of leaving the host to look for it: no op reads
// its indices back to the host, which would synchronize the device.  `error` is the flag of the
// device, DLGPU_ERROR_WORDS 64-bit words that dlgpu/cuda/error_flag.py makes zero and reads where
// the caller synchronizes anyway (dlgpu.check_errors):
//   [0] what was found: the family's DLGPU_ERROR_<what> code, never 0; 0 while nothing has been
//   [1] the index, as a signed 64-bit value    [2] its bound: it had to lie in [0, bound)
//   [3] where: the row or element of the launch, as the family's code documents
// One atomicCAS claims word 0, so only the first report since the flag was last read writes the
// others, and a record is never a mix of two reports.  The codes live in each family's .cu, one
// number per report across the families (dlgpu.ops.validate.IndexCheck names and words each one).
#define DLGPU_ERROR_WORDS 4

__device__ __forceinline__ void report_bad_index(unsigned long long* error, unsigned long long code, long long index,
                                                 long long bound, long long where)
{
    if (atomicCAS(error, 0ull, code) == 0ull) {
        error[1] = (unsigned long long)index;
        error[2] = (unsigned long long)bound;
        error[3] = (unsigned long long)where;
    }
}
