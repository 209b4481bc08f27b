// kernels/sgd.cu -- one fused SGD step, in place, PyTorch's rule (no dampening, no Nesterov).
//
// Per storage type T (storage.cuh's STORAGE_TYPES: suffix _f32, _bf16, _fp16), the arrays in T:
//   sgd_momentum_<T>(T* param, const T* grad, T* velocity, long long n,
//                    float lr, float momentum, float weight_decay, float unscale)
//       g = grad * unscale + weight_decay * param;  velocity = momentum * velocity + g;
//       param -= lr * velocity
//   sgd_plain_<T>(T* param, const T* grad, long long n, float lr, float weight_decay, float unscale)
//       param -= lr * (grad * unscale + weight_decay * param)      (momentum == 0: no velocity)
// With fp32 master weights, for the 16-bit types H (bf16, fp16): the step is taken on the float
// master copy (and a float velocity), and the 16-bit model copy is overwritten with the result:
//   sgd_master_momentum_<H>(float* master, H* param, const H* grad, float* velocity, long long n,
//                           float lr, float momentum, float weight_decay, float unscale)
//   sgd_master_plain_<H>(float* master, H* param, const H* grad, long long n,
//                        float lr, float weight_decay, float unscale)
//       the rules above with master in place of param, then param = master rounded to H
//       (param's old value is not read: the master copy is the truth).
// `unscale` multiplies the gradient first: 1 / the loss scale of mixed-precision training, so
// that a scaled 16-bit gradient is unscaled in float, where it cannot underflow.
//
// Buffers: contiguous, n >= 1 elements each, pairwise disjoint, any alignment.  One pass:
// every element is read once and written once (param, velocity, master) -- the optimizer's
// whole traffic.  Arithmetic in float; 16-bit outputs rounded once.  Launch: 1-D grid-stride,
// any grid and block (storage.cuh's map_vec): 16-byte vectors from the first element at which
// every array is aligned, 32 bytes of each input in flight per thread; a scalar head and tail.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs; ~2.9-3.1 TB/s for a large copy), from the sm_90a
// build (NVRTC 13.5; `dlgpu compile --sass --arch sm_90a sgd`), for the benchmark rows (momentum + weight decay
// on 2^26 elements, as a share of the measured copy bandwidth):
//   float32     sgd_momentum_f32: 30 registers; one chunk per trip (SGD_BYTES), 58 instructions: 6 LDG.E.128
//               (param, grad, velocity), 24 FFMA + 8 FMUL, 4 STG.E.128.  528 blocks of 256 (4 per SM): 96 B
//               per thread, 96 KB per SM in flight.  20 bytes per element, as bytes_moved counts: 1.34 GB,
//               ~460 us at 2.9 TB/s; read:write 3:2, close to a copy's mix.
//   master      sgd_master_momentum_bf16/_fp16: 32 registers, 77 instructions per chunk: 5 LDG.E.128 (master and
//               velocity 2 each, the 16-bit grad 1) and 5 STG.E.128 (the 16-bit param 1): every access 16 bytes,
//               20 bytes per element, as bytes_moved counts; ~80 KB per SM in flight.
//   issue       4-5 KB per warp-trip for 58-77 instructions: under 10 % of the issue slots at 3 TB/s.
// => all three rows 85-100 % of the copy ceiling; the baseline's array expressions make several passes.
//
// dlgpu-sass: sgd_momentum_* LDG.E.128 STG.E.128
// dlgpu-sass: sgd_plain_* LDG.E.128 STG.E.128
// dlgpu-sass: sgd_master_* LDG.E.128 STG.E.128

#include "storage.cuh"

// 32 bytes of each input in flight per thread (of the first input's type): with three arrays
// in and two or three out, many bytes are already moving.
#define SGD_BYTES 32
template <class T> constexpr int sgd_batch = SGD_BYTES / (MAP_CHUNK * (int)sizeof(T)) > 0
                                                 ? SGD_BYTES / (MAP_CHUNK * (int)sizeof(T)) : 1;

// One element's update as map_vec's op: a = (param, grad, velocity) in, r = (param, velocity) out.
// The master forms read (master, grad, velocity) and write (master, velocity, param): the same
// update, and its result a third time, rounded into the 16-bit copy.
struct MomentumStep {
    float lr, momentum, weight_decay, unscale;
    __device__ __forceinline__ float velocity(const float (&a)[3]) const
    {
        const float g = a[1] * unscale + weight_decay * a[0];
        return momentum * a[2] + g;
    }
    __device__ __forceinline__ void operator()(const float (&a)[3], float (&r)[2]) const
    {
        r[1] = velocity(a);
        r[0] = a[0] - lr * r[1];
    }
    __device__ __forceinline__ void operator()(const float (&a)[3], float (&r)[3]) const
    {
        r[1] = velocity(a);
        r[0] = a[0] - lr * r[1];
        r[2] = r[0];
    }
};
// The same without momentum: a = (param, grad) in, r = (param) out (master: r = (master, param)).
struct PlainStep {
    float lr, weight_decay, unscale;
    __device__ __forceinline__ float step(const float (&a)[2]) const
    {
        return a[0] - lr * (a[1] * unscale + weight_decay * a[0]);
    }
    __device__ __forceinline__ void operator()(const float (&a)[2], float (&r)[1]) const { r[0] = step(a); }
    __device__ __forceinline__ void operator()(const float (&a)[2], float (&r)[2]) const
    {
        r[0] = step(a);
        r[1] = r[0];
    }
};

// ---------------------------------------------------------------- kernels
#define SGD_KERNELS(suffix, T)                                                                                 \
    extern "C" __global__ void sgd_momentum_##suffix(T* param, const T* grad, T* velocity, long long n,        \
                                                     float lr, float momentum, float weight_decay,             \
                                                     float unscale)                                            \
    {                                                                                                          \
        map_vec<sgd_batch<T>>(n, reads(param, grad, velocity), writes(param, velocity),                        \
                              MomentumStep{lr, momentum, weight_decay, unscale});                              \
    }                                                                                                          \
    extern "C" __global__ void sgd_plain_##suffix(T* param, const T* grad, long long n, float lr,              \
                                                  float weight_decay, float unscale)                           \
    {                                                                                                          \
        map_vec<sgd_batch<T>>(n, reads(param, grad), writes(param), PlainStep{lr, weight_decay, unscale});     \
    }
STORAGE_TYPES(SGD_KERNELS)

#define SGD_MASTER_KERNELS(suffix, H)                                                                          \
    extern "C" __global__ void sgd_master_momentum_##suffix(float* master, H* param, const H* grad,            \
                                                            float* velocity, long long n, float lr,            \
                                                            float momentum, float weight_decay, float unscale) \
    {                                                                                                          \
        map_vec<sgd_batch<float>>(n, reads(master, grad, velocity), writes(master, velocity, param),           \
                                  MomentumStep{lr, momentum, weight_decay, unscale});                          \
    }                                                                                                          \
    extern "C" __global__ void sgd_master_plain_##suffix(float* master, H* param, const H* grad, long long n,  \
                                                         float lr, float weight_decay, float unscale)           \
    {                                                                                                          \
        map_vec<sgd_batch<float>>(n, reads(master, grad), writes(master, param),                               \
                                  PlainStep{lr, weight_decay, unscale});                                       \
    }
HALF_TYPES(SGD_MASTER_KERNELS)
