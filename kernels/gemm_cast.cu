// kernels/gemm_cast.cu -- copies of a matrix between storage types: the tensor-core kernels' producer pass.
//
// The tensor-core GEMM and convolution (gemm_tc.cu, conv2d_tc.cu) read their operands in the storage type of
// their precision (fp32 for tf32, 16 bits for bf16 / fp16) by 16-byte cp.async.  What they are given is not
// always that: fp32 arrays multiplied at bf16, an operand to be masked by a ReLU's output first, rows whose
// length is not a multiple of 16 bytes.  One pass over the operand makes the copy they need (see gemm_tc.cu,
// "Why a producer pass").
//
//   cast_<src>_<dst>(src, mask, dst, rows, cols, src_ld, dst_ld, flags)
//       dst[r * dst_ld + c] = src[r * src_ld + c] converted, for r < rows, c < cols; with CAST_MASK in `flags`
//       the value is first replaced by relu_mask(value, mask[r * src_ld + c]) (mask stored like src, in src's
//       type).  Elements of a dst row past `cols` are left alone.  <src>_<dst>: f32_bf16, f32_fp16 (round to
//       nearest even), f32_f32, bf16_bf16, fp16_fp16 (masking, padding: exact), bf16_f32, fp16_f32 (exact).
//       16-bit values are their bits (unsigned short).  Any rows, cols >= 1, rows < 2^31, cols < 2^31.
//       Grid (x, y) of 256-thread blocks, any size: block row y walks rows y, y + gridDim.y, ...; thread
//       x walks runs of 8 elements of the row with a grid stride.  A run is moved with 16-byte accesses when
//       every pointer, leading dimension and the run itself allow it (whole, 16-byte aligned), else element by
//       element.
//
// dlgpu-sass: cast_* LDG.E.128 STG.E.128 !LDL !STL

#include "common.cuh"
#include "ptx.cuh"

#define CAST_MASK 1
#define CAST_RUN 8
#define CAST_THREADS 256

enum class Storage { f32, bf16, fp16 };

template <Storage S> struct StorageType {
    using T = unsigned short;
};
template <> struct StorageType<Storage::f32> {
    using T = float;
};

template <Storage S> __device__ __forceinline__ float decode(typename StorageType<S>::T v)
{
    if constexpr (S == Storage::f32) return v;
    else if constexpr (S == Storage::bf16) return ptx::from_half<ptx::Precision::bf16>(v);
    else return ptx::from_half<ptx::Precision::fp16>(v);
}

template <Storage S> __device__ __forceinline__ typename StorageType<S>::T encode(float v)
{
    if constexpr (S == Storage::f32) return v;
    else if constexpr (S == Storage::bf16) return ptx::to_half<ptx::Precision::bf16>(v);
    else return ptx::to_half<ptx::Precision::fp16>(v);
}

// Eight consecutive elements from (or to) a 16-byte aligned address: one or two 16-byte accesses.
template <Storage S> __device__ __forceinline__ void load_run(const typename StorageType<S>::T* p, float (&v)[8])
{
    if constexpr (S == Storage::f32) {
        const float4 lo = reinterpret_cast<const float4*>(p)[0], hi = reinterpret_cast<const float4*>(p)[1];
        v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
    } else {
        const uint4 raw = *reinterpret_cast<const uint4*>(p);
        const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
        DLGPU_UNROLL
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = decode<S>((unsigned short)(words[i] & 0xffffu));
            v[2 * i + 1] = decode<S>((unsigned short)(words[i] >> 16));
        }
    }
}

template <Storage S> __device__ __forceinline__ void store_run8(typename StorageType<S>::T* p, const float (&v)[8])
{
    if constexpr (S == Storage::f32) {
        reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
        constexpr ptx::Precision P = S == Storage::bf16 ? ptx::Precision::bf16 : ptx::Precision::fp16;
        *reinterpret_cast<uint4*>(p) = make_uint4(ptx::pack_half2<P>(v[0], v[1]), ptx::pack_half2<P>(v[2], v[3]),
                                                  ptx::pack_half2<P>(v[4], v[5]), ptx::pack_half2<P>(v[6], v[7]));
    }
}

template <Storage SRC, Storage DST>
__device__ __forceinline__ void cast(const typename StorageType<SRC>::T* src, const typename StorageType<SRC>::T* mask,
                                     typename StorageType<DST>::T* dst, int rows, int cols, long long src_ld,
                                     long long dst_ld, int flags)
{
    using S = typename StorageType<SRC>::T;
    using D = typename StorageType<DST>::T;
    const bool masked = (flags & CAST_MASK) != 0;
    // Runs start at multiples of 8 elements, so a run is 16-byte aligned when the bases and row pitches are.
    const unsigned long long misaligned = (address_of(src) | address_of(dst) | (masked ? address_of(mask) : 0)) % 16 |
                                          (unsigned long long)(src_ld * sizeof(S)) % 16 |
                                          (unsigned long long)(dst_ld * sizeof(D)) % 16;
    const int runs = (cols + CAST_RUN - 1) / CAST_RUN;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        const S* const in = src + r * src_ld;
        const S* const y = mask + r * src_ld;
        D* const out = dst + r * dst_ld;
        for (int run = blockIdx.x * blockDim.x + threadIdx.x; run < runs; run += gridDim.x * blockDim.x) {
            const int c = run * CAST_RUN;
            if (misaligned == 0 && c + CAST_RUN <= cols) {
                float v[CAST_RUN];
                load_run<SRC>(in + c, v);
                if (masked) {
                    float m[CAST_RUN];
                    load_run<SRC>(y + c, m);
                    DLGPU_UNROLL
                    for (int i = 0; i < CAST_RUN; ++i) v[i] = relu_mask(v[i], m[i]);
                }
                store_run8<DST>(out + c, v);
            } else {
                for (int i = c; i < cols && i < c + CAST_RUN; ++i) {
                    const float v = decode<SRC>(in[i]);
                    out[i] = encode<DST>(masked ? relu_mask(v, decode<SRC>(y[i])) : v);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- named instances
#define CAST_KERNEL(src, dst)                                                                                       \
    extern "C" __global__ void __launch_bounds__(CAST_THREADS) cast_##src##_##dst(                                \
        const StorageType<Storage::src>::T* in, const StorageType<Storage::src>::T* mask,                           \
        StorageType<Storage::dst>::T* out, int rows, int cols, long long src_ld, long long dst_ld, int flags)       \
    {                                                                                                              \
        cast<Storage::src, Storage::dst>(in, mask, out, rows, cols, src_ld, dst_ld, flags);                        \
    }
CAST_KERNEL(f32, bf16)
CAST_KERNEL(f32, fp16)
CAST_KERNEL(f32, f32)
CAST_KERNEL(bf16, bf16)
CAST_KERNEL(fp16, fp16)
CAST_KERNEL(bf16, f32)
CAST_KERNEL(fp16, f32)
