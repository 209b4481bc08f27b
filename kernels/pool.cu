// kernels/pool.cu -- 2-D max pooling with argmax, and its deterministic backward passes.
//
// x, grad_x: (planes, H, W) with planes = N * C; y, grad_y, argmax: (planes, P, Q), contiguous.
// Window (p, q) covers rows p*sh - ph .. +kh-1 and columns q*sw - pw .. +kw-1 of the unpadded
// plane; padding never wins (the launcher enforces padding <= kernel / 2, so every window holds
// a real element).  argmax (int32) = h * W + w within the plane.  x, y, grad_y and grad_x are of
// one storage type T (storage.cuh: suffix _f32, _bf16, _fp16): a maximum is an element itself,
// and sums of gradients are float, rounded to T once.
//
//   max_pool2d_forward_<T>(const T* x, T* y, int* argmax, long long planes, int H, int W,
//                          int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
//                          unsigned q_mul, unsigned q_shift)
//       One thread per output element on a 2-D grid of POOL_THREADS-thread blocks (planes on y, a
//       plane's outputs on x, both grid-stride); (q_mul, q_shift) divide by Q (common.cuh:
//       fast_div).  The first real element of the window in row-major order starts as the best; a
//       later one replaces it if it is NaN or strictly greater; a NaN best stays (NaN propagates,
//       ties go to the first).
//   max_pool2d_backward_<T>(const T* grad_y, const int* argmax, T* grad_x, long long planes,
//                           int H, int W, int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
//                           unsigned w_mul, unsigned w_shift, unsigned sh_mul, unsigned sh_shift,
//                           unsigned sw_mul, unsigned sw_shift, unsigned long long* error)
//       Needs the window.  One thread per INPUT element, on the forward's grid; fast divisors for W,
//       sh and sw.  It visits the outputs whose windows contain it, in increasing (p, q), and adds
//       grad_y where argmax points at it.  Writes every element of grad_x (no zero-fill; the only
//       atomic is the error report).
//   max_pool2d_backward_planes_<T>(const T* grad_y, const int* argmax, float* grad_x,
//                                  long long planes, int plane_in, int plane_out, unsigned long long* error)
//       Needs only argmax (for callers that do not know the window).  One warp per plane,
//       grid-stride over planes, block a multiple of 32: zero the plane, then take the outputs 32
//       at a time in order; lanes whose argmax coincide add their values in lane order and the
//       first of them updates grad_x, so every sum has a fixed order.  grad_x is float for every
//       T: the sums build up in it across rounds (the launcher rounds a 16-bit result once
//       afterwards).
//   Both backward kernels skip an argmax outside [0, H * W) (never written through) and report the
//   first one in the device error flag `error` (common.cuh: report_bad_index) as
//   DLGPU_ERROR_POOL_ARGMAX, with the value, H * W and its flat position in argmax.  (Every window
//   holds a real element, so the gather kernel visits every output.)  Nothing checks argmax on the
//   host before a launch (only dlgpu's debug mode does): that would synchronize.
//   A plane holds fewer than 2^31 elements (argmax is int32), so within a plane the kernels count in int.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs, 4 warp instructions per clock per SM at ~1.75 GHz;
// ~2.9-3.1 TB/s for a large copy), from the sm_90a build (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a
// pool`), for the benchmark rows: x (64, 64, 56, 56) float32, window 3x3 / 2, padding 1 (P = Q = 28); bytes_moved
// 77 MB either way (~27 us at 2.9 TB/s), as a share of the measured copy bandwidth.  No runtime division is left
// on either kernel's per-element path (fast_div: a wide multiply and a shift each).
//   forward     max_pool2d_forward_f32: 31 registers, 8 blocks of 256 per SM (the launch bounds); the grid is
//               4 x 264 = 1056 blocks, one wave.  Per output ~180 instructions: ~30 for the indices and the
//               clipped window, per window row ~38 (the row's 3 loads and NaN-aware compares, 2 FSETP + FSEL +
//               SEL each, in the 1-3 remainder of the 4-wide unrolled column loop), ~20 for the 2 STG.E.
//               3.2 M outputs: ~18 M warp instructions, ~19 us at full issue against ~27 us of traffic; the
//               loads are still scalar (each warp's 9 loads cover ~2 rows of x, L1 hits after the first).
//   backward    max_pool2d_backward_f32 (the window-known gather, which the op runs): 30 registers, 8 blocks
//               per SM; the grid is 13 x 81 = 1053 blocks, one wave.  Per INPUT element ~140 instructions:
//               ~33 for the indices and five fast divisions, ~30 per window row (1.5 on average: its pointers
//               are rebuilt in 64 bits per row), ~19 per window (2.25 on average: an argmax load, a compare,
//               maybe a grad_y load), ~16 for the store.  12.8 M elements: ~55 M warp instructions, ~60 us at
//               full issue against ~27 us of traffic.
// => forward 65-90 % of the copy ceiling (memory-bound now, less for its scalar loads), backward 30-50 % (still
// bound by issue: a thread per output row segment, reusing argmax across neighbouring inputs, would be next);
// the argmax-only kernel is not benchmarked.
//
// dlgpu-sass: max_pool2d_*

#include "storage.cuh"

// The device error flag's code for this family (common.cuh; one number per report across families).
#define DLGPU_ERROR_POOL_ARGMAX 3

// The forward and the window-known backward run on a 2-D grid of POOL_THREADS-thread blocks: planes
// on y, the elements of a plane on x, both grid-stride.  A thread then needs only 32-bit index
// arithmetic, and every division is a fast_div by a divisor the launcher prepared (Q; W, sh, sw):
// a runtime division costs ~25 instructions, more than the rest of an element's work.
// __launch_bounds__ holds ptxas to the registers of POOL_MIN_BLOCKS resident blocks per SM, the
// grid the launcher (dlgpu/cuda/pool.py, which reads both numbers here) sizes for.
#define POOL_THREADS 256
#define POOL_MIN_BLOCKS 8

// ---------------------------------------------------------------- forward
template <class T>
__device__ __forceinline__ void forward(const T* x, T* y, int* argmax, long long planes, int H, int W, int P, int Q,
                                        int kh, int kw, int sh, int sw, int ph, int pw, unsigned q_mul,
                                        unsigned q_shift)
{
    const int per_plane = P * Q;
    const int step = gridDim.x * blockDim.x;
    for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const T* in = x + plane * ((long long)H * W);
        T* out = y + plane * per_plane;
        int* out_at = argmax + plane * per_plane;
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < per_plane; o += step) {
            const int p = fast_div(o, q_mul, q_shift);
            const int q = o - p * Q;
            const int h0 = p * sh - ph;
            const int w0 = q * sw - pw;
            // The window clipped to the plane: never empty (padding <= kernel / 2).
            const int h_begin = max(h0, 0), h_end = min(h0 + kh, H);
            const int w_begin = max(w0, 0), w_end = min(w0 + kw, W);

            // The first element in row-major order starts as the best; comparing it with itself changes nothing.
            int best_at = h_begin * W + w_begin;
            float best = to_float(in[best_at]);
            for (int h = h_begin; h < h_end; ++h) {
                for (int at = h * W + w_begin; at < h * W + w_end; ++at) {
                    const float v = to_float(in[at]);
                    // best != best: the best so far is NaN and stays; !(v <= best): v is greater, or a NaN that
                    // takes over.
                    if (best == best && !(v <= best)) {
                        best = v;
                        best_at = at;
                    }
                }
            }
            out[o] = from_float<T>(best);  // exact: best is an element of x
            out_at[o] = best_at;
        }
    }
}

// ---------------------------------------------------------------- backward, window known
template <class T>
__device__ __forceinline__ void backward(const T* grad_y, const int* argmax, T* grad_x, long long planes, int H, int W,
                                         int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
                                         unsigned w_mul, unsigned w_shift, unsigned sh_mul, unsigned sh_shift,
                                         unsigned sw_mul, unsigned sw_shift, unsigned long long* error)
{
    const int per_plane = H * W;
    const int step = gridDim.x * blockDim.x;
    for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y) {
        const long long out_plane = plane * ((long long)P * Q);
        const T* gy = grad_y + out_plane;
        const int* at_plane = argmax + out_plane;
        T* gx = grad_x + plane * per_plane;
        for (int me = blockIdx.x * blockDim.x + threadIdx.x; me < per_plane; me += step) {
            const int h = fast_div(me, w_mul, w_shift);
            const int w = me - h * W;
            // Output rows whose window rows p*sh - ph .. p*sh - ph + kh - 1 include h (columns alike).
            const int p_first = h + ph < kh ? 0 : fast_div(h + ph - kh, sh_mul, sh_shift) + 1;
            const int p_last = min(fast_div(h + ph, sh_mul, sh_shift), P - 1);
            const int q_first = w + pw < kw ? 0 : fast_div(w + pw - kw, sw_mul, sw_shift) + 1;
            const int q_last = min(fast_div(w + pw, sw_mul, sw_shift), Q - 1);
            float sum = 0.0f;
            for (int p = p_first; p <= p_last; ++p) {
                // 1-2 windows a row for the usual kernel <= 2 * stride: unrolling by 4 only adds registers.
                DLGPU_UNROLL_1
                for (int o = p * Q + q_first; o <= p * Q + q_last; ++o) {
                    const int at = at_plane[o];
                    if (at == me) sum += to_float(gy[o]);
                    else if (at < 0 || at >= per_plane)
                        report_bad_index(error, DLGPU_ERROR_POOL_ARGMAX, at, per_plane, out_plane + o);
                }
            }
            gx[me] = from_float<T>(sum);
        }
    }
}

// ---------------------------------------------------------------- backward, argmax only
template <class T>
__device__ __forceinline__ void backward_planes(const T* grad_y, const int* argmax, float* grad_x, long long planes,
                                                int plane_in, int plane_out, unsigned long long* error)
{
    const int lane = threadIdx.x & 31;
    const long long warps_per_block = blockDim.x >> 5;
    const long long first = (long long)blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    const long long step = (long long)gridDim.x * warps_per_block;
    for (long long plane = first; plane < planes; plane += step) {
        float* gx = grad_x + plane * plane_in;
        const T* gy = grad_y + plane * plane_out;
        const int* at = argmax + plane * plane_out;

        // ---- zero the plane; the barrier orders these stores before the updates below
        for (int i = lane; i < plane_in; i += 32) gx[i] = 0.0f;
        __syncwarp();

        // ---- outputs in rounds of 32, in order
        for (int base = 0; base < plane_out; base += 32) {
            const int o = base + lane;
            int target = o < plane_out ? at[o] : -1;
            if (o < plane_out && (target < 0 || target >= plane_in)) {
                report_bad_index(error, DLGPU_ERROR_POOL_ARGMAX, target, plane_in, plane * plane_out + o);
                target = -1;
            }
            const float g = (o < plane_out && target >= 0) ? to_float(gy[o]) : 0.0f;
            bool leader = target >= 0;
            float same = 0.0f;
            for (int k = 0; k < 32; ++k) {
                const int other = __shfl_sync(DLGPU_FULL_WARP, target, k);
                const float value = __shfl_sync(DLGPU_FULL_WARP, g, k);
                if (other == target) {
                    if (k < lane) leader = false;
                    same += value;
                }
            }
            if (leader) gx[target] += same;
            // The next round may update the same element from another lane.
            __syncwarp();
        }
    }
}

// ---------------------------------------------------------------- kernels
#define POOL_KERNELS(suffix, T)                                                                                \
    extern "C" __global__ void __launch_bounds__(POOL_THREADS, POOL_MIN_BLOCKS) max_pool2d_forward_##suffix(   \
        const T* x, T* y, int* argmax, long long planes, int H, int W, int P, int Q, int kh, int kw, int sh,   \
        int sw, int ph, int pw, unsigned q_mul, unsigned q_shift)                                              \
    {                                                                                                          \
        forward(x, y, argmax, planes, H, W, P, Q, kh, kw, sh, sw, ph, pw, q_mul, q_shift);                     \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(POOL_THREADS, POOL_MIN_BLOCKS) max_pool2d_backward_##suffix(  \
        const T* grad_y, const int* argmax, T* grad_x, long long planes, int H, int W, int P, int Q, int kh,   \
        int kw, int sh, int sw, int ph, int pw, unsigned w_mul, unsigned w_shift, unsigned sh_mul,             \
        unsigned sh_shift, unsigned sw_mul, unsigned sw_shift, unsigned long long* error)                      \
    {                                                                                                          \
        backward(grad_y, argmax, grad_x, planes, H, W, P, Q, kh, kw, sh, sw, ph, pw, w_mul, w_shift, sh_mul,   \
                 sh_shift, sw_mul, sw_shift, error);                                                           \
    }                                                                                                          \
    extern "C" __global__ void max_pool2d_backward_planes_##suffix(const T* grad_y, const int* argmax,         \
                                                                   float* grad_x, long long planes,            \
                                                                   int plane_in, int plane_out,                \
                                                                   unsigned long long* error)                  \
    {                                                                                                          \
        backward_planes(grad_y, argmax, grad_x, planes, plane_in, plane_out, error);                           \
    }
STORAGE_TYPES(POOL_KERNELS)
