// kernels/ptx_sm90.cuh -- the only door from the kernels to Hopper's inline PTX (sm_90a).
//
// On the device each wrapper is one PTX instruction (wgmma and setmaxnreg need the sm_90a target;
// the rest plain sm_90).  Under the CPU harness (DLGPU_HOST_HARNESS) the same names run the models of
// dlgpu/testing/cuda_host_sm90.h, written from the PTX ISA, so a Hopper kernel runs on the CPU too.
// Shared-memory objects below (tiles, mbarriers) must be in dynamic shared memory on the harness.
//
//   shared_window_address(p)             cvta.to.shared: p's shared-memory address (32 bits)
//   wgmma_descriptor(addr, lbo, sbo, sw) the 64-bit shared-memory matrix descriptor: byte address,
//                                        leading and stride byte offsets (multiples of 16) and the
//                                        swizzle width in bytes (0, 32, 64, 128); base offset 0
//   wgmma_fence()                        wgmma.fence.sync.aligned: before the first wgmma, and before any
//                                        wgmma after its accumulators were read or written
//   wgmma<N, P, TA, TB>(d, da, db, s)    wgmma.mma_async.sync.aligned.m64nNk{16,8}.f32.{tf32,bf16,f16}:
//                                        d[N/2] (+)= A (64 x K, descriptor da) * B (K x N, descriptor db),
//                                        scale-d s (0: ignore d's input); P a ptx::Precision (ptx.cuh:
//                                        tf32 with K 8, bf16 and fp16 with K 16); TA = 1: A M-major, TB = 1:
//                                        B N-major (16-bit only; tf32 operands are K-major).  d[i] of
//                                        thread t of the warpgroup is row 16 (t / 32) + (t % 32) / 4 +
//                                        8 ((i / 2) % 2), column 8 (i / 4) + 2 (t % 4) + i % 2.  N: 64,
//                                        128 or 256.  A warpgroup collective (4 consecutive warps, the
//                                        first a multiple of 4), asynchronous: d is not readable or
//                                        writable until the wgmma_wait that covers it
//   wgmma_fence_operand(d)               no instruction: pins d's registers at this point, so that the
//                                        compiler moves no accumulator across a wgmma or its wait
//   wgmma_commit()                       wgmma.commit_group: the wgmmas issued since the last commit
//   wgmma_wait<N>()                      wgmma.wait_group N: all but the newest N groups complete
//   setmaxnreg_inc<R>(), _dec<R>()       setmaxnreg.{inc,dec}.sync.aligned.u32 R, per warpgroup
//   cluster_ctarank()                    %cluster_ctarank: this CTA's rank in its cluster (a kernel with
//                                        __cluster_dims__; 0 without)
//   cluster_arrive(), cluster_wait()     barrier.cluster.arrive (.release) and barrier.cluster.wait
//                                        (.acquire): every thread of the cluster that has not exited arrives
//                                        before any waiting thread goes on
//   mbarrier_init(bar, count)            mbarrier.init.shared::cta.b64 (bar: 8-byte aligned uint64)
//   fence_mbarrier_init()                fence.mbarrier_init.release.cluster: inits visible to TMA
//   mbarrier_arrive(bar)                 mbarrier.arrive.shared::cta.b64
//   mbarrier_arrive_cluster(bar, rank)   mapa + mbarrier.arrive.shared::cluster.b64 (the default .release.cta,
//                                        as CUTLASS's cluster pipelines arrive: .release.cluster puts
//                                        MEMBAR.ALL.GPU + ERRBAR + CGAERRBAR before each arrive): arrive on
//                                        the barrier at bar's offset in the cluster's CTA of that rank
//   mbarrier_arrive_expect_tx(bar, n)    mbarrier.arrive.expect_tx.shared::cta.b64: tx-count += n, arrive
//   mbarrier_try_wait(bar, parity)       mbarrier.try_wait.parity.shared::cta.b64: true once the phase
//                                        of that parity has completed (the current phase's differs)
//   mbarrier_wait(bar, parity)           try_wait until it succeeds
//   cp_async_mbarrier_arrive_noinc(bar) cp.async.mbarrier.arrive.noinc.shared::cta.b64: an arrival on bar once
//                                        every cp.async this thread issued before it has landed, counted
//                                        against bar's expected count (the init count includes it)
//   fence_proxy_async_shared()           fence.proxy.async.shared::cta: ordinary shared stores (and cp.async
//                                        copies) visible to TMA / wgmma (the async proxy)
//   prefetch_tensor_map(map)             prefetch.tensormap
//   tma_load_2d(dst, map, c0, c1, bar)   cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::
//                                        complete_tx::bytes: the box at element (c0 inner, c1 outer),
//                                        completing its bytes on bar; map: the tensor map's address in
//                                        global memory (64-byte aligned)
//   tma_load_2d_multicast(dst, map, c0, c1, bar, mask)
//                                        the same with .multicast::cluster: the box lands at dst's offset
//                                        in the shared memory of every CTA whose rank is a bit of mask, and
//                                        completes its bytes on the barrier at bar's offset in each
//   tma_store_2d(map, c0, c1, src)       cp.async.bulk.tensor.2d.global.shared::cta.bulk_group
//   bulk_commit()                        cp.async.bulk.commit_group
//   bulk_wait<N>(), bulk_wait_read<N>()  cp.async.bulk.wait_group[.read] N
#pragma once

#include "common.cuh"
#include "ptx.cuh"  // Precision

namespace ptx {

// Every field of the descriptor is a byte quantity stored >> 4 in 14 bits (the PTX ISA's
// matrix-descriptor-encode); the layout code: 1 = 128-byte, 2 = 64-byte, 3 = 32-byte swizzle, 0 = none.
__device__ __forceinline__ unsigned long long wgmma_descriptor(unsigned address, unsigned leading_bytes,
                                                               unsigned stride_bytes, unsigned swizzle_bytes)
{
    const unsigned long long layout = swizzle_bytes == 128 ? 1 : swizzle_bytes == 64 ? 2 : swizzle_bytes == 32 ? 3 : 0;
    auto encode = [](unsigned bytes) { return (unsigned long long)((bytes & 0x3ffffu) >> 4); };
    return encode(address) | (encode(leading_bytes) << 16) | (encode(stride_bytes) << 32) | (layout << 62);
}

#ifdef DLGPU_HOST_HARNESS

__device__ __forceinline__ unsigned shared_window_address(const void* p) { return dlgpu_host::sm90::shared_address(p); }
__device__ __forceinline__ void wgmma_fence() { dlgpu_host::sm90::wgmma_fence(); }
template <int N, Precision P, int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma(float (&d)[N / 2], unsigned long long desc_a, unsigned long long desc_b,
                                      int scale_d)
{
    static_assert(N == 64 || N == 128 || N == 256, "the device wrappers exist for N = 64, 128, 256");
    static_assert(P != Precision::tf32 || (TRANS_A == 0 && TRANS_B == 0), "tf32 wgmma takes K-major operands only");
    dlgpu_host::sm90::wgmma_mma_async(d, N, static_cast<int>(P), desc_a, desc_b, scale_d, TRANS_A, TRANS_B);
}
template <int R> __device__ __forceinline__ void wgmma_fence_operand(float (&)[R]) {}
__device__ __forceinline__ void wgmma_commit() { dlgpu_host::sm90::wgmma_commit_group(); }
template <int N> __device__ __forceinline__ void wgmma_wait() { dlgpu_host::sm90::wgmma_wait_group(N); }
template <int R> __device__ __forceinline__ void setmaxnreg_inc() { dlgpu_host::sm90::setmaxnreg<true>(R); }
template <int R> __device__ __forceinline__ void setmaxnreg_dec() { dlgpu_host::sm90::setmaxnreg<false>(R); }
__device__ __forceinline__ void mbarrier_init(unsigned long long* bar, unsigned count)
{
    dlgpu_host::sm90::mbarrier_init(bar, count);
}
__device__ __forceinline__ void fence_mbarrier_init() { dlgpu_host::sm90::publish_mbarrier_inits(true); }
__device__ __forceinline__ void mbarrier_arrive(unsigned long long* bar) { dlgpu_host::sm90::mbarrier_arrive(bar); }
__device__ __forceinline__ void mbarrier_arrive_cluster(unsigned long long* bar, unsigned rank)
{
    dlgpu_host::sm90::mbarrier_arrive_remote(bar, rank);
}
__device__ __forceinline__ unsigned cluster_ctarank() { return dlgpu_host::sm90::cluster_ctarank(); }
__device__ __forceinline__ void cluster_arrive() { dlgpu_host::sm90::cluster_arrive(); }
__device__ __forceinline__ void cluster_wait() { dlgpu_host::sm90::cluster_wait(); }
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned long long* bar, unsigned bytes)
{
    dlgpu_host::sm90::mbarrier_arrive_expect_tx(bar, bytes);
}
__device__ __forceinline__ bool mbarrier_try_wait(unsigned long long* bar, unsigned parity)
{
    return dlgpu_host::sm90::mbarrier_try_wait_parity(bar, parity);
}
__device__ __forceinline__ void cp_async_mbarrier_arrive_noinc(unsigned long long* bar)
{
    dlgpu_host::sm90::cp_async_mbarrier_arrive_noinc(bar);
}
__device__ __forceinline__ void fence_proxy_async_shared() { dlgpu_host::sm90::fence_proxy_async(); }
__device__ __forceinline__ void prefetch_tensor_map(const void*) {}
__device__ __forceinline__ void tma_load_2d(void* dst, const void* map, int c0, int c1, unsigned long long* bar)
{
    const int coords[2] = {c0, c1};
    dlgpu_host::sm90::tma_load(dst, map, coords, 2, bar);
}
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const void* map, int c0, int c1,
                                                      unsigned long long* bar, unsigned mask)
{
    const int coords[2] = {c0, c1};
    dlgpu_host::sm90::tma_load_multicast(dst, map, coords, 2, bar, mask);
}
__device__ __forceinline__ void tma_store_2d(const void* map, int c0, int c1, const void* src)
{
    const int coords[2] = {c0, c1};
    dlgpu_host::sm90::tma_store(map, coords, 2, src);
}
__device__ __forceinline__ void bulk_commit() { dlgpu_host::sm90::bulk_commit_group(); }
template <int N> __device__ __forceinline__ void bulk_wait() { dlgpu_host::sm90::bulk_wait_group(N, false); }
template <int N> __device__ __forceinline__ void bulk_wait_read() { dlgpu_host::sm90::bulk_wait_group(N, true); }

#else  // the device

__device__ __forceinline__ unsigned shared_window_address(const void* p)
{
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
template <int R> __device__ __forceinline__ void wgmma_fence_operand(float (&d)[R])
{
    DLGPU_UNROLL
    for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// The accumulator operands: "+f" for each of d[0 .. R), R = N / 2, and their names %0 .. %(R-1).
#define DLGPU_F8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                    "+f"(d[i + 6]), "+f"(d[i + 7])
#define DLGPU_F32(i) DLGPU_F8(i), DLGPU_F8(i + 8), DLGPU_F8(i + 16), DLGPU_F8(i + 24)
#define DLGPU_F64(i) DLGPU_F32(i), DLGPU_F32(i + 32)
#define DLGPU_F128(i) DLGPU_F64(i), DLGPU_F64(i + 64)
#define DLGPU_WGMMA_D32 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define DLGPU_WGMMA_D64 DLGPU_WGMMA_D32 ", " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define DLGPU_WGMMA_D128 DLGPU_WGMMA_D64 ", " \
    "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
    "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
    "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
    "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
// One wgmma: the scale-d predicate from a register, imm-scale-a/b 1, and (16-bit only) the transposes.
#define DLGPU_WGMMA_ASM(shape, types, regs, descs, scale, transposes)                                            \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " scale ", 0;\n"                                             \
                 "wgmma.mma_async.sync.aligned." shape "." types " {" DLGPU_WGMMA_D##regs "}, " descs ", p, 1, 1" \
                 transposes ";\n}\n"                                                                             \
                 : DLGPU_F##regs(0)                                                                              \
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_A), "n"(TRANS_B))

template <int N, Precision P, int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma(float (&d)[N / 2], unsigned long long desc_a, unsigned long long desc_b,
                                      int scale_d)
{
    static_assert(N == 64 || N == 128 || N == 256, "the device wrappers exist for N = 64, 128, 256");
    static_assert(P != Precision::tf32 || (TRANS_A == 0 && TRANS_B == 0), "tf32 wgmma takes K-major operands only");
// After the R = N / 2 accumulators come %R desc_a, %R+1 desc_b, %R+2 scale_d, %R+3 and %R+4 the transposes.
#define DLGPU_WGMMA_CASE(n, regs, descs, scale, transposes)                                                     \
    if constexpr (N == n) {                                                                                    \
        if constexpr (P == Precision::bf16)                                                                    \
            DLGPU_WGMMA_ASM("m64n" #n "k16", "f32.bf16.bf16", regs, descs, scale, transposes);                 \
        else if constexpr (P == Precision::fp16)                                                               \
            DLGPU_WGMMA_ASM("m64n" #n "k16", "f32.f16.f16", regs, descs, scale, transposes);                   \
        else                                                                                                   \
            DLGPU_WGMMA_ASM("m64n" #n "k8", "f32.tf32.tf32", regs, descs, scale, "");                          \
    }
    DLGPU_WGMMA_CASE(64, 32, "%32, %33", "%34", ", %35, %36")
    DLGPU_WGMMA_CASE(128, 64, "%64, %65", "%66", ", %67, %68")
    DLGPU_WGMMA_CASE(256, 128, "%128, %129", "%130", ", %131, %132")
#undef DLGPU_WGMMA_CASE
}

template <int R> __device__ __forceinline__ void setmaxnreg_inc()
{
    static_assert(R >= 24 && R <= 256 && R % 8 == 0, "setmaxnreg takes a multiple of 8 in [24, 256]");
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(R));
}
template <int R> __device__ __forceinline__ void setmaxnreg_dec()
{
    static_assert(R >= 24 && R <= 256 && R % 8 == 0, "setmaxnreg takes a multiple of 8 in [24, 256]");
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(R));
}

__device__ __forceinline__ void mbarrier_init(unsigned long long* bar, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_window_address(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbarrier_init()
{
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void mbarrier_arrive(unsigned long long* bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_window_address(bar)) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive_cluster(unsigned long long* bar, unsigned rank)
{
    asm volatile("{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
                 "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n"
                 ::"r"(shared_window_address(bar)), "r"(rank) : "memory");
}
__device__ __forceinline__ unsigned cluster_ctarank()
{
    unsigned rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    return rank;
}
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive;" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait;" ::: "memory"); }
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned long long* bar, unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_window_address(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ bool mbarrier_try_wait(unsigned long long* bar, unsigned parity)
{
    unsigned done;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(shared_window_address(bar)), "r"(parity) : "memory");
    return done != 0;
}
__device__ __forceinline__ void cp_async_mbarrier_arrive_noinc(unsigned long long* bar)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(shared_window_address(bar)) : "memory");
}
__device__ __forceinline__ void fence_proxy_async_shared()
{
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void prefetch_tensor_map(const void* map)
{
    asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
}
__device__ __forceinline__ void tma_load_2d(void* dst, const void* map, int c0, int c1, unsigned long long* bar)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];"
                 ::"r"(shared_window_address(dst)), "l"(map), "r"(c0), "r"(c1), "r"(shared_window_address(bar))
                 : "memory");
}
__device__ __forceinline__ void tma_load_2d_multicast(void* dst, const void* map, int c0, int c1,
                                                      unsigned long long* bar, unsigned mask)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
                 " [%0], [%1, {%2, %3}], [%4], %5;"
                 ::"r"(shared_window_address(dst)), "l"(map), "r"(c0), "r"(c1), "r"(shared_window_address(bar)),
                 "h"((unsigned short)mask)
                 : "memory");
}
__device__ __forceinline__ void tma_store_2d(const void* map, int c0, int c1, const void* src)
{
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];"
                 ::"l"(map), "r"(c0), "r"(c1), "r"(shared_window_address(src)) : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void bulk_wait()
{
    asm volatile("cp.async.bulk.wait_group %0;" ::"n"(N) : "memory");
}
template <int N> __device__ __forceinline__ void bulk_wait_read()
{
    asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(N) : "memory");
}

#endif

__device__ __forceinline__ void mbarrier_wait(unsigned long long* bar, unsigned parity)
{
    while (!mbarrier_try_wait(bar, parity)) {
    }
}

}  // namespace ptx
