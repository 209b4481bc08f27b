// kernels/common.cuh -- small device helpers shared by the kernel families.
//
// Everything here is plain CUDA C++ that both NVRTC and the CPU harness
// (dlgpu/testing/cuda_host.h, which g++ includes before this file) understand:
//   INFINITY, NAN          NVRTC has no <cmath>; defined from bit patterns when missing
//   DLGPU_UNROLL(_4)       `#pragma unroll` (4) on the device, nothing on the host (no g++ warning)
//   ceil_div               integer division rounding up
//   relu_mask              grad * (y > 0) as every family computes it (one definition)
//   Vec4Plan, plan_vec4    split [0, n) into a scalar head, a 16-byte-aligned float4 body
//                          and a scalar tail, when every pointer shares one alignment
//   warp_sum, warp_max     butterfly shuffles over a full warp: every lane gets the result,
//                          and the order of the additions is fixed (deterministic)
//   block_sum, block_max   the same over a block whose size is a multiple of 32
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
#else
#define DLGPU_UNROLL
#define DLGPU_UNROLL_4
#endif

#define DLGPU_FULL_WARP 0xffffffffu

__device__ __forceinline__ long long ceil_div(long long a, long long b) { return (a + b - 1) / b; }

// The ReLU derivative from the saved output: 1 where y > 0, else 0 (NaN y gives 0).
// A select, not a product, so that an infinite gradient under a zero mask stays 0.
__device__ __forceinline__ float relu_mask(float grad, float y) { return y > 0.0f ? grad : 0.0f; }

// ---------------------------------------------------------------- vector plan
// Elements [0, head) and [tail_start, n) go through scalar code; float4 number j of
// the body covers elements head + 4j .. head + 4j + 3.  `vectorizable` is false when
// the pointers disagree on their address modulo 16 (one of them is a view offset by
// an element the others are not): then head == n and everything is scalar.
struct Vec4Plan {
    long long head;
    long long vectors;
    long long tail_start;
};

__device__ __forceinline__ unsigned long long address_of(const void* p)
{
    return reinterpret_cast<unsigned long long>(p);
}

// `residue_mismatch` is the OR over pointers of (address ^ first address) & 15, so one
// number carries "do all pointers share their 16-byte phase"; 0 means they do.
__device__ __forceinline__ Vec4Plan plan_vec4(long long n, const void* first, unsigned long long residue_mismatch)
{
    Vec4Plan plan;
    const unsigned long long phase = address_of(first) & 15u;
    if (residue_mismatch != 0 || (phase & 3u) != 0) {
        plan.head = n;
        plan.vectors = 0;
        plan.tail_start = n;
        return plan;
    }
    long long head = (long long)(((16u - phase) & 15u) >> 2);
    plan.head = head < n ? head : n;
    plan.vectors = (n - plan.head) >> 2;
    plan.tail_start = plan.head + 4 * plan.vectors;
    return plan;
}

__device__ __forceinline__ unsigned long long phase_mismatch(const void* a, const void* b)
{
    return (address_of(a) ^ address_of(b)) & 15u;
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
