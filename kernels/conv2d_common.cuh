// kernels/conv2d_common.cuh -- what the convolution families (conv2d.cu, conv2d_tc.cu) share.
//
//   CONV_BIAS, CONV_RELU, CONV_MASK   bits of the kernels' `flags` argument
//   CONV_GEOMETRY_PARAMS / _ARGS      the 23 scalar parameters every convolution kernel takes, in
//                                     this order: N, C, H, W (input), K, R, S (filter), P, Q
//                                     (output), stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, and
//                                     four fast divisors (multiplier, shift) for P*Q, Q, R*S, S
//   fast_div(n, mul, shift)           n / d for 0 <= n < 2^31 by one wide multiply and a shift; the
//                                     launcher computes (mul, shift) (dlgpu/cuda/conv2d.py:
//                                     fast_divisor), so the kernels never divide in their loops
//   conv_epilogue(v, k, bias, flags)  v + bias[k] (CONV_BIAS), then ReLU (CONV_RELU)
//   ConvGeometry, CONV_GEOMETRY       the same parameters as one struct value
//   InputGather                       one output pixel's view of x for the implicit GEMM: the
//                                     element that filter tap kk = (c, r, s) meets, 0 in padding
#pragma once

#include "common.cuh"

#define CONV_BIAS 1
#define CONV_RELU 2
// Backward kernels: grad_y is replaced by relu_mask(grad_y, y) as it is loaded.
#define CONV_MASK 4

#define CONV_GEOMETRY_PARAMS                                                                             \
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h, \
        int pad_w, int dil_h, int dil_w, unsigned pq_mul, unsigned pq_shift, unsigned q_mul, unsigned q_shift, \
        unsigned rs_mul, unsigned rs_shift, unsigned s_mul, unsigned s_shift
#define CONV_GEOMETRY_ARGS                                                                                   \
    N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, pq_mul, pq_shift, q_mul, q_shift, \
        rs_mul, rs_shift, s_mul, s_shift

// Exact for 0 <= n < 2^31 and mul = ceil(2^shift / d), shift = 31 + ceil(log2 d) (see the launcher).
__device__ __forceinline__ int fast_div(int n, unsigned mul, unsigned shift)
{
    return (int)(((unsigned long long)(unsigned)n * mul) >> shift);
}

__device__ __forceinline__ float conv_epilogue(float v, int k, const float* bias, int flags)
{
    if (flags & CONV_BIAS) v += bias[k];
    if (flags & CONV_RELU) v = v < 0.0f ? 0.0f : v;
    return v;
}

// All of CONV_GEOMETRY_PARAMS in one value: `const ConvGeometry geo = CONV_GEOMETRY;`.
struct ConvGeometry {
    int N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    unsigned pq_mul, pq_shift, q_mul, q_shift, rs_mul, rs_shift, s_mul, s_shift;
};
#define CONV_GEOMETRY {CONV_GEOMETRY_ARGS}

// ---------------------------------------------------------------- the implicit-GEMM A operand
// Row m of the implicit matrix A (M = N*P*Q rows, C*R*S columns) is output pixel (n, p, q); its
// column kk = (c, r, s) holds x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw], or 0 in the padding.
// A thread builds this once for its pixel and then asks for any column: the (n, p, q) division is
// paid once per kernel, the (c, r, s) one once per element, by fast_div.
struct InputGather {
    const float* image;  // x + n*C*H*W; null when m is past the last pixel
    int h0, w0;          // top-left input corner of the pixel's receptive field

    __device__ __forceinline__ InputGather() : image(nullptr), h0(0), w0(0) {}

    __device__ __forceinline__ InputGather(const float* x, int m, int M, const ConvGeometry& g)
    {
        if (m >= M) {
            image = nullptr;
            h0 = w0 = 0;
            return;
        }
        const int n = fast_div(m, g.pq_mul, g.pq_shift);
        const int pq = m - n * g.P * g.Q;
        const int p = fast_div(pq, g.q_mul, g.q_shift);
        const int q = pq - p * g.Q;
        image = x + (long long)n * g.C * g.H * g.W;
        h0 = p * g.stride_h - g.pad_h;
        w0 = q * g.stride_w - g.pad_w;
    }

    // Column kk of this row (kk < C*R*S is the caller's business: pass valid = false past it).
    __device__ __forceinline__ float at(int kk, bool valid, const ConvGeometry& g) const
    {
        if (image == nullptr || !valid) return 0.0f;
        const int c = fast_div(kk, g.rs_mul, g.rs_shift);
        const int rs = kk - c * g.R * g.S;
        const int r = fast_div(rs, g.s_mul, g.s_shift);
        const int s = rs - r * g.S;
        const int h = h0 + r * g.dil_h, w = w0 + s * g.dil_w;
        // One unsigned comparison per axis covers both h < 0 and h >= H.
        if ((unsigned)h >= (unsigned)g.H || (unsigned)w >= (unsigned)g.W) return 0.0f;
        return image[(c * g.H + h) * g.W + w];
    }
};
