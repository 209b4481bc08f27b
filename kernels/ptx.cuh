// kernels/ptx.cuh -- the only door from the kernels to inline PTX (sm_80 and newer).
//
// On the device each wrapper is one PTX instruction.  Under the CPU harness
// (DLGPU_HOST_HARNESS, dlgpu/testing/cuda_host.h) the same names run host code written
// from the PTX ISA's fragment layouts, so a kernel using them is checked on the CPU too.
//
//   f32_to_tf32(x)                       cvt.rna.tf32.f32: x rounded to tf32 (bits of a .b32)
//   pack_bf16x2(lo, hi), pack_fp16x2     cvt.rn.{bf16x2,f16x2}.f32: two floats -> one .b32,
//                                        `lo` in bits 0..15 (the lower-index element)
//   store_v4(p, q)                       st.global.v4.b32: one 16-byte store of q to 16-byte aligned global p;
//                                        NVVM may split a plain uint4 store into four 32-bit ones
//   f32_to_bf16(x), f32_to_fp16(x)       cvt.rn.{bf16,f16}.f32: one float -> 16 bits (a .b16)
//   fp16_to_f32(h)                       cvt.f32.f16: 16 bits -> float, exact (bf16 needs no
//                                        instruction: its bits are a float's upper half)
//   mma_m16n8k8_tf32(d, a, b, c)         mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//   mma_m16n8k16_bf16(d, a, b, c)        mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   mma_m16n8k16_fp16(d, a, b, c)        mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
//        d, c: float[4]; a: unsigned[4]; b: unsigned[2] -- PTX ISA 9.7.14.5 fragments, with
//        g = lane / 4, t = lane % 4:  c/d[i] at row g + 8*(i/2), column 2t + i%2;
//        tf32 a[i] at (g + 8*(i%2), t + 4*(i/2)), b[i] at (t + 4i, g);
//        16-bit A element i (register i/2, low half first) at (g + 8*((i/2)%2), 2t + i%2 + 8*(i/4)),
//        16-bit B element i at (2t + i%2 + 8*(i/2), g).  d may be c (accumulate in place).
//   ldmatrix_x1/x2/x4(r, row)            ldmatrix.sync.aligned.m8n8.x{1,2,4}.shared.b16; `row`:
//   ldmatrix_x1/x2/x4_trans(r, row)      this lane's 16-byte-aligned row address in shared
//                                        memory (lanes 8i..8i+7 give matrix i's rows)
//   cp_async_16(smem, gmem, src_bytes)   cp.async.cg.shared.global, 16 bytes, both addresses
//                                        16-byte aligned; bytes past src_bytes (0..16) are zeros
//   cp_async_commit()                    cp.async.commit_group
//   cp_async_wait<N>()                   cp.async.wait_group N: all but the newest N groups landed
//   cp_async_wait_all()                  cp.async.wait_all
// Precision-generic forms, so that one tensor-core main loop serves every operand type:
//   Precision                            enum class {tf32, bf16, fp16}: a tensor-core family is built
//                                        once per precision with -D<FAMILY>_PRECISION=<enumerator>
//                                        (the names of dlgpu's `precision` argument; the Python side
//                                        reads this enum: dlgpu/cuda/kernel_decls.py)
//   mma_k<P>                             the k of one mma: 8 for tf32, 16 for bf16/fp16
//   pack_half2<P>(lo, hi)                pack_bf16x2 for bf16, pack_fp16x2 for fp16
//   Operand<P>::type                     how an operand of precision P is stored in memory: float for tf32,
//                                        the 16 bits (unsigned short) of a bf16 or fp16 value otherwise
//   to_half<P>(v), from_half<P>(bits)    float -> 16 bits (round to nearest even) and back (exact)
//   mma_accumulate<P>(d, a, b)           d += a*b with the mma of precision P
//   a_fragment<P>(a, at, lane)           this lane's A (16 x mma_k<P>) or B (mma_k<P> x 8) fragment,
//   b_fragment<P>(b, at, lane)           rounded from fp32: at(row, k) / at(k, col) reads the tile
//                                        relative to the fragment's corner
// Warp-collective wrappers (mma, ldmatrix) must be called by all 32 lanes of the warp.
#pragma once

namespace ptx {

#ifdef DLGPU_HOST_HARNESS

__device__ __forceinline__ unsigned f32_to_tf32(float x) { return dlgpu_host::f32_to_tf32(x); }
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi)
{
    return (unsigned)dlgpu_host::float_to_bf16_bits(lo) | ((unsigned)dlgpu_host::float_to_bf16_bits(hi) << 16);
}
__device__ __forceinline__ unsigned pack_fp16x2(float lo, float hi)
{
    return (unsigned)dlgpu_host::float_to_half_bits(lo) | ((unsigned)dlgpu_host::float_to_half_bits(hi) << 16);
}
__device__ __forceinline__ void store_v4(void* p, uint4 q) { *static_cast<uint4*>(p) = q; }
__device__ __forceinline__ unsigned short f32_to_bf16(float x) { return dlgpu_host::float_to_bf16_bits(x); }
__device__ __forceinline__ unsigned short f32_to_fp16(float x) { return dlgpu_host::float_to_half_bits(x); }
__device__ __forceinline__ float fp16_to_f32(unsigned short h) { return dlgpu_host::half_bits_to_float(h); }
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4])
{
    dlgpu_host::mma_m16n8k8_tf32(d, a, b, c);
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4])
{
    dlgpu_host::mma_m16n8k16_bf16(d, a, b, c);
}
__device__ __forceinline__ void mma_m16n8k16_fp16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4])
{
    dlgpu_host::mma_m16n8k16_fp16(d, a, b, c);
}
__device__ __forceinline__ void ldmatrix_x1(unsigned (&r)[1], const void* row) { dlgpu_host::ldmatrix<1>(r, row, false); }
__device__ __forceinline__ void ldmatrix_x2(unsigned (&r)[2], const void* row) { dlgpu_host::ldmatrix<2>(r, row, false); }
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row) { dlgpu_host::ldmatrix<4>(r, row, false); }
__device__ __forceinline__ void ldmatrix_x1_trans(unsigned (&r)[1], const void* row) { dlgpu_host::ldmatrix<1>(r, row, true); }
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned (&r)[2], const void* row) { dlgpu_host::ldmatrix<2>(r, row, true); }
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) { dlgpu_host::ldmatrix<4>(r, row, true); }
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, unsigned src_bytes = 16)
{
    dlgpu_host::cp_async_16(smem, gmem, src_bytes);
}
__device__ __forceinline__ void cp_async_commit() { dlgpu_host::cp_async_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait() { dlgpu_host::cp_async_wait_group(N); }
__device__ __forceinline__ void cp_async_wait_all()
{
    dlgpu_host::cp_async_commit();
    dlgpu_host::cp_async_wait_group(0);
}

#else  // the device

__device__ __forceinline__ unsigned shared_address(const void* p)
{
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ unsigned f32_to_tf32(float x)
{
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi)
{
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ void store_v4(void* p, uint4 q)
{
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(q.x), "r"(q.y), "r"(q.z), "r"(q.w)
                 : "memory");
}
__device__ __forceinline__ unsigned pack_fp16x2(float lo, float hi)
{
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ unsigned short f32_to_bf16(float x)
{
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ unsigned short f32_to_fp16(float x)
{
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
}
__device__ __forceinline__ float fp16_to_f32(unsigned short h)
{
    float r;
    asm("cvt.f32.f16 %0, %1;" : "=f"(r) : "h"(h));
    return r;
}

#define DLGPU_PTX_MMA(name, instruction)                                                                    \
    __device__ __forceinline__ void name(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],     \
                                         const float (&c)[4])                                               \
    {                                                                                                       \
        asm volatile(instruction " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"              \
                     : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                       \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),                    \
                       "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));                                         \
    }
DLGPU_PTX_MMA(mma_m16n8k8_tf32, "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32")
DLGPU_PTX_MMA(mma_m16n8k16_bf16, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
DLGPU_PTX_MMA(mma_m16n8k16_fp16, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")
#undef DLGPU_PTX_MMA

__device__ __forceinline__ void ldmatrix_x1(unsigned (&r)[1], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2(unsigned (&r)[2], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(unsigned (&r)[1], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(r[0]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(unsigned (&r)[2], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(shared_address(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(row)));
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, unsigned src_bytes = 16)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(shared_address(smem)), "l"(gmem), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

#endif

// ---- precision-generic forms: one tensor-core main loop serves every precision

// The values are the precision codes of the harness's host models (dlgpu/testing/cuda_host*.h).
enum class Precision { tf32 = 0, bf16 = 1, fp16 = 2 };

template <Precision P> constexpr int mma_k = P == Precision::tf32 ? 8 : 16;

template <Precision P> __device__ __forceinline__ unsigned pack_half2(float lo, float hi)
{
    static_assert(P != Precision::tf32, "tf32 operands are 32-bit: f32_to_tf32");
    if constexpr (P == Precision::bf16) return pack_bf16x2(lo, hi);
    else return pack_fp16x2(lo, hi);
}

template <Precision P> struct Operand {
    using type = unsigned short;
};
template <> struct Operand<Precision::tf32> {
    using type = float;
};

template <Precision P> __device__ __forceinline__ unsigned short to_half(float v)
{
    static_assert(P != Precision::tf32, "tf32 operands are stored as fp32");
    if constexpr (P == Precision::bf16) return f32_to_bf16(v);
    else return f32_to_fp16(v);
}

template <Precision P> __device__ __forceinline__ float from_half(unsigned short bits)
{
    static_assert(P != Precision::tf32, "tf32 operands are stored as fp32");
    if constexpr (P == Precision::bf16) return __uint_as_float((unsigned)bits << 16);
    else return fp16_to_f32(bits);
}

template <Precision P>
__device__ __forceinline__ void mma_accumulate(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
    if constexpr (P == Precision::tf32) mma_m16n8k8_tf32(d, a, b, d);
    else if constexpr (P == Precision::bf16) mma_m16n8k16_bf16(d, a, b, d);
    else mma_m16n8k16_fp16(d, a, b, d);
}

// The fragment layouts of the header, g = lane / 4, t = lane % 4: a 16-bit register holds two
// elements adjacent in k, the lower k in the low half.  (Registers written out one by one: this
// header includes nothing, so it has no unroll macro.)
template <Precision P, class At>
__device__ __forceinline__ void a_fragment(unsigned (&a)[4], At at, int lane)
{
    const int g = lane / 4, t = lane % 4;
    auto reg = [&](int r) {
        const int row = g + 8 * (r % 2);
        if constexpr (P == Precision::tf32) {
            return f32_to_tf32(at(row, t + 4 * (r / 2)));
        } else {
            const int k = 2 * t + 8 * (r / 2);
            return pack_half2<P>(at(row, k), at(row, k + 1));
        }
    };
    a[0] = reg(0);
    a[1] = reg(1);
    a[2] = reg(2);
    a[3] = reg(3);
}

template <Precision P, class At>
__device__ __forceinline__ void b_fragment(unsigned (&b)[2], At at, int lane)
{
    const int g = lane / 4, t = lane % 4;
    auto reg = [&](int r) {
        if constexpr (P == Precision::tf32) {
            return f32_to_tf32(at(t + 4 * r, g));
        } else {
            const int k = 2 * t + 8 * r;
            return pack_half2<P>(at(k, g), at(k + 1, g));
        }
    };
    b[0] = reg(0);
    b[1] = reg(1);
}

}  // namespace ptx
