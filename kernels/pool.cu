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
//                          int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw)
//       One thread per output element, grid-stride, any grid and block.  The first real element
//       of the window in row-major order starts as the best; a later one replaces it if it is
//       NaN or strictly greater; a NaN best stays (NaN propagates, ties go to the first).
//   max_pool2d_backward_<T>(const T* grad_y, const int* argmax, T* grad_x, long long planes,
//                           int H, int W, int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
//                           unsigned long long* error)
//       Needs the window.  One thread per INPUT element, grid-stride: it visits the outputs whose
//       windows contain it, in increasing (p, q), and adds grad_y where argmax points at it.
//       Writes every element of grad_x (no zero-fill; the only atomic is the error report).
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
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs, 4 warp instructions per clock per SM at ~1.75 GHz;
// ~2.9-3.1 TB/s for a large copy), from the sm_90a build (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a
// pool`), for the benchmark rows: x (64, 64, 56, 56) float32, window 3x3 / 2, padding 1 (P = Q = 28); bytes_moved
// 77 MB either way (~27 us at 2.9 TB/s), as a share of the measured copy bandwidth.  Both rows are bound by
// instruction issue, not by memory: the window and the plane indices are runtime values.
//   forward     max_pool2d_forward_f32: 30 registers, 1056 blocks of 256 = 8 per SM, one wave.  Per output
//               ~285 instructions: the plane/row/column divisions (~75), then per window row ~64 (bounds
//               tests, a scalar LDG.E, the NaN-aware compare) -- the 4-wide unrolled column loop is skipped
//               for kw = 3 -- and 2 STG.E.  3.2 M outputs: 28.5 M warp instructions, ~31 us at full issue
//               against ~27 us of traffic; the loads are scalar (each warp's 9 loads cover ~2 rows of x).
//   backward    max_pool2d_backward_f32 (the window-known gather, which the op runs): 38 registers, so 6
//               blocks per SM and 1056 blocks make 1.33 waves.  Per INPUT element ~310 instructions: two index
//               divisions and four by the stride (6 MUFU.RCP), then 1-2 x 1-2 windows, each an argmax load,
//               a compare and maybe a grad_y load.  12.8 M elements: ~124 M warp instructions, ~135 us at full
//               issue against ~27 us of traffic.
// => forward 50-80 % of the copy ceiling, backward 10-25 %.  Hoisting the divisions out of the loop (a thread
// per output row, or a 2-D grid) is where the time would come from; the argmax-only kernel is not benchmarked.
//
// dlgpu-sass: max_pool2d_*

#include "storage.cuh"

// The device error flag's code for this family (common.cuh; one number per report across families).
#define DLGPU_ERROR_POOL_ARGMAX 3

// Element i of a stack of planes of `per_plane` = rows x `cols` elements: its plane, its offset in
// the plane, and that offset's row and column.
struct PlaneIndex {
    long long plane;
    int offset, row, col;
};

__device__ __forceinline__ PlaneIndex plane_index(long long i, long long per_plane, int cols)
{
    PlaneIndex at;
    at.plane = i / per_plane;
    at.offset = (int)(i - at.plane * per_plane);
    at.row = at.offset / cols;
    at.col = at.offset - at.row * cols;
    return at;
}

// ---------------------------------------------------------------- forward
template <class T>
__device__ __forceinline__ void forward(const T* x, T* y, int* argmax, long long planes, int H, int W, int P, int Q,
                                        int kh, int kw, int sh, int sw, int ph, int pw)
{
    const long long per_plane = (long long)P * Q;
    const long long total = planes * per_plane;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += stride) {
        const PlaneIndex out = plane_index(o, per_plane, Q);
        const T* in = x + out.plane * ((long long)H * W);
        const int h0 = out.row * sh - ph;
        const int w0 = out.col * sw - pw;

        float best = -INFINITY;
        int best_at = -1;
        for (int i = 0; i < kh; ++i) {
            const int h = h0 + i;
            if (h < 0 || h >= H) continue;
            for (int j = 0; j < kw; ++j) {
                const int w = w0 + j;
                if (w < 0 || w >= W) continue;
                const float v = to_float(in[h * W + w]);
                // best != best: the best so far is NaN and stays; v != v: a NaN takes over.
                if (best_at < 0 || (best == best && (v > best || v != v))) {
                    best = v;
                    best_at = h * W + w;
                }
            }
        }
        y[o] = from_float<T>(best);  // exact: best is an element of x
        argmax[o] = best_at;
    }
}

// ---------------------------------------------------------------- backward, window known
template <class T>
__device__ __forceinline__ void backward(const T* grad_y, const int* argmax, T* grad_x, long long planes, int H, int W,
                                         int P, int Q, int kh, int kw, int sh, int sw, int ph, int pw,
                                         unsigned long long* error)
{
    const long long per_plane = (long long)H * W;
    const long long total = planes * per_plane;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const PlaneIndex in = plane_index(i, per_plane, W);
        const int me = in.offset, h = in.row, w = in.col;
        // Output rows whose window rows p*sh - ph .. p*sh - ph + kh - 1 include h (columns alike).
        const int p_first = h + ph < kh ? 0 : (h + ph - kh) / sh + 1;
        const int p_last = min((h + ph) / sh, P - 1);
        const int q_first = w + pw < kw ? 0 : (w + pw - kw) / sw + 1;
        const int q_last = min((w + pw) / sw, Q - 1);
        const long long out_plane = in.plane * ((long long)P * Q);
        float sum = 0.0f;
        for (int p = p_first; p <= p_last; ++p) {
            for (int q = q_first; q <= q_last; ++q) {
                const long long o = out_plane + (long long)p * Q + q;
                const int at = argmax[o];
                if (at == me) sum += to_float(grad_y[o]);
                else if (at < 0 || at >= per_plane) report_bad_index(error, DLGPU_ERROR_POOL_ARGMAX, at, per_plane, o);
            }
        }
        grad_x[i] = from_float<T>(sum);
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
    extern "C" __global__ void max_pool2d_forward_##suffix(const T* x, T* y, int* argmax, long long planes,    \
                                                           int H, int W, int P, int Q, int kh, int kw, int sh, \
                                                           int sw, int ph, int pw)                             \
    {                                                                                                          \
        forward(x, y, argmax, planes, H, W, P, Q, kh, kw, sh, sw, ph, pw);                                     \
    }                                                                                                          \
    extern "C" __global__ void max_pool2d_backward_##suffix(const T* grad_y, const int* argmax, T* grad_x,     \
                                                            long long planes, int H, int W, int P, int Q,      \
                                                            int kh, int kw, int sh, int sw, int ph, int pw,    \
                                                            unsigned long long* error)                         \
    {                                                                                                          \
        backward(grad_y, argmax, grad_x, planes, H, W, P, Q, kh, kw, sh, sw, ph, pw, error);                   \
    }                                                                                                          \
    extern "C" __global__ void max_pool2d_backward_planes_##suffix(const T* grad_y, const int* argmax,         \
                                                                   float* grad_x, long long planes,            \
                                                                   int plane_in, int plane_out,                \
                                                                   unsigned long long* error)                  \
    {                                                                                                          \
        backward_planes(grad_y, argmax, grad_x, planes, plane_in, plane_out, error);                           \
    }
STORAGE_TYPES(POOL_KERNELS)
