// dlgpu/testing/cuda_host.h -- CUDA's built-ins on the host, for the CPU execution harness.
//
// dlgpu/testing/harness.py compiles a kernel family's .cu with g++ -std=c++20 after this
// header (DLGPU_HOST_HARNESS defined) and runs its `extern "C" __global__` kernels on NumPy
// buffers.  What a kernel sees:
//   threads      every CUDA thread of a block is a real std::thread; blocks run one after
//                another, so __shared__ storage is reused, never shared, between blocks
//   __syncthreads a mutex + condition-variable barrier (visible to ThreadSanitizer); a thread
//                that has returned from the kernel no longer counts (as on sm_70+)
//   __shared__   static: `__shared__ float t[32]` is a function-local static, one object per
//                process, which is one per block because blocks do not overlap (it keeps the
//                previous block's values: zero for the first block, never poisoned).  `extern
//                __shared__ T s[]` is rewritten by harness.py into a pointer to one dynamic
//                buffer of the launch's exact size (the rest is poisoned for ASan) and
//                refilled with 0xFF bytes (NaN) before each block; `__shared__ alignas(n)` is
//                reordered to `alignas(n) __shared__` (g++ refuses an attribute after `static`)
//   warps        lanes are 32 consecutive linear thread ids; shuffles, votes, mma, ldmatrix
//                exchange values through a per-warp buffer between two warp barriers.  A
//                lane reading from an absent lane gets 0xFF bytes; a collective whose mask
//                names a lane that has returned, or lanes disagreeing on the mask, fail (so
//                two disjoint groups of one warp in collectives at once are refused too)
//   atomics      std::atomic_ref on the global or shared location
//   half types   __half / __nv_bfloat16 with round-to-nearest-even conversions
//   PTX          kernels/ptx.cuh's wrappers call the dlgpu_host:: implementations below:
//                mma.sync from the PTX ISA fragment layouts with operand rounding, ldmatrix,
//                cp.async copies captured at issue and written at the matching wait_group
// What it does not model: timing, memory coalescing, bank conflicts, the real warp
// scheduler and independent thread scheduling (lanes of a warp are not in lockstep between
// collectives), blocks running concurrently, the weak GPU memory model (host memory is
// x86's), the tensor cores' internal accumulation order, and the 48 KB opt-in for dynamic
// shared memory.  The device remains the judge; the GPU run cross-checks harness and device.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cfloat>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <math.h>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __shared__ static
#define __constant__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

constexpr int warpSize = 32;

// ---------------------------------------------------------------- vector types
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define DLGPU_VEC2(name, T, align)                                                            \
    struct alignas(align) name { T x, y; };                                                   \
    inline name make_##name(T x, T y) { return name{x, y}; }
#define DLGPU_VEC3(name, T)                                                                   \
    struct name { T x, y, z; };                                                               \
    inline name make_##name(T x, T y, T z) { return name{x, y, z}; }
#define DLGPU_VEC4(name, T, align)                                                            \
    struct alignas(align) name { T x, y, z, w; };                                             \
    inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }

DLGPU_VEC2(float2, float, 8)
DLGPU_VEC3(float3, float)
DLGPU_VEC4(float4, float, 16)
DLGPU_VEC2(double2, double, 16)
DLGPU_VEC2(int2, int, 8)
DLGPU_VEC3(int3, int)
DLGPU_VEC4(int4, int, 16)
DLGPU_VEC2(uint2, unsigned, 8)
DLGPU_VEC4(uint4, unsigned, 16)
DLGPU_VEC2(longlong2, long long, 16)
DLGPU_VEC2(short2, short, 4)
DLGPU_VEC2(ushort2, unsigned short, 4)
DLGPU_VEC4(char4, signed char, 4)
DLGPU_VEC4(uchar4, unsigned char, 4)
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

// The launch geometry: one launch at a time per process, so grid and block sizes are
// plain globals; indices are per thread.
static dim3 gridDim, blockDim;
static thread_local uint3 threadIdx, blockIdx;

// ---------------------------------------------------------------- bit casts and conversions
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }

namespace dlgpu_host {
// float -> IEEE binary16, round to nearest even; NaN stays a (quiet) NaN.
inline unsigned short float_to_half_bits(float f)
{
    const unsigned x = __float_as_uint(f);
    const unsigned sign = (x >> 16) & 0x8000u;
    const unsigned ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (unsigned short)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (ax < 0x38800000u) {                                            // below 2^-14: subnormal
        const int shift = 126 - (int)(ax >> 23);                       // to units of 2^-24
        if (shift > 24) return (unsigned short)sign;
        const unsigned mant = (ax & 0x7fffffu) | 0x800000u;
        unsigned r = mant >> shift;
        const unsigned rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return (unsigned short)(sign | r);
    }
    unsigned r = (ax >> 13) - (112u << 10);  // rebias 127 -> 15
    const unsigned rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // a carry into the exponent is right
    return (unsigned short)(sign | r);
}

inline float half_bits_to_float(unsigned short h)
{
    const unsigned sign = (unsigned)(h & 0x8000u) << 16;
    const unsigned exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        const float v = (float)mant * 5.9604644775390625e-8f;  // mant * 2^-24, exact
        return sign ? -v : v;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// float -> bfloat16, round to nearest even; NaN stays a (quiet) NaN.
inline unsigned short float_to_bf16_bits(float f)
{
    const unsigned x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
    return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_float(unsigned short b) { return __uint_as_float((unsigned)b << 16); }
}  // namespace dlgpu_host

struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(dlgpu_host::float_to_half_bits(f)) {}
    operator float() const { return dlgpu_host::half_bits_to_float(__x); }
};
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(dlgpu_host::float_to_bf16_bits(f)) {}
    operator float() const { return dlgpu_host::bf16_bits_to_float(__x); }
};
struct alignas(4) __half2 { __half x, y; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return float(b); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__half(lo), __half(hi)}; }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __half22float2(__half2 h) { return float2{float(h.x), float(h.y)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {__nv_bfloat16(lo), __nv_bfloat16(hi)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 b) { return float2{float(b.x), float(b.y)}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 b; b.__x = u; return b; }
inline float __low2float(__half2 h) { return float(h.x); }
inline float __high2float(__half2 h) { return float(h.y); }
#define DLGPU_HALF_OPS(T)                                                                     \
    inline T operator+(T a, T b) { return T(float(a) + float(b)); }                          \
    inline T operator-(T a, T b) { return T(float(a) - float(b)); }                          \
    inline T operator*(T a, T b) { return T(float(a) * float(b)); }                          \
    inline T operator/(T a, T b) { return T(float(a) / float(b)); }                          \
    inline bool operator<(T a, T b) { return float(a) < float(b); }                          \
    inline bool operator>(T a, T b) { return float(a) > float(b); }
DLGPU_HALF_OPS(__half)
DLGPU_HALF_OPS(__nv_bfloat16)

// ---------------------------------------------------------------- math
#ifndef CUDART_INF_F
#define CUDART_INF_F __int_as_float(0x7f800000)
#define CUDART_NAN_F __int_as_float(0x7fffffff)
#endif
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) { return b < a ? b : a; }
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) { return a < b ? b : a; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline float __int2float_rn(int i) { return (float)i; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x)
{
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
// Cache-hinted loads and stores are plain accesses on the host.
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---------------------------------------------------------------- atomics
template <class T> inline T atomicAdd(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> inline T atomicSub(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <class T> inline T atomicExch(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> inline T atomicAnd(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_and(v); }
template <class T> inline T atomicOr(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_or(v); }
template <class T> inline T atomicXor(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_xor(v); }
template <class T> inline T atomicCAS(T* p, std::type_identity_t<T> expected, std::type_identity_t<T> desired)
{
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;  // the old value, whether or not the swap happened
}
template <class T> inline T atomicMax(T* p, std::type_identity_t<T> v)
{
    std::atomic_ref<T> ref(*p);
    T old = ref.load();
    while (old < v && !ref.compare_exchange_weak(old, v)) {}
    return old;
}
template <class T> inline T atomicMin(T* p, std::type_identity_t<T> v)
{
    std::atomic_ref<T> ref(*p);
    T old = ref.load();
    while (v < old && !ref.compare_exchange_weak(old, v)) {}
    return old;
}

// ---------------------------------------------------------------- the execution model
namespace dlgpu_host {

constexpr size_t kMaxDynamicShared = 227 * 1024;  // the largest opt-in on sm_90
alignas(128) static unsigned char dynamic_shared_storage[kMaxDynamicShared];
inline unsigned char* dynamic_shared() { return dynamic_shared_storage; }

// A harness check failed (or a sibling thread's did): unwinds the kernel thread.
struct Abort {};
static std::atomic<bool> g_aborted{false};
static std::mutex g_error_mutex;
static std::string g_error;
constexpr auto kDeadlock = std::chrono::seconds(300);

[[noreturn]] inline void fail(const std::string& message)
{
    {
        std::lock_guard<std::mutex> lock(g_error_mutex);
        if (g_error.empty())
            g_error = message + " (thread (" + std::to_string(threadIdx.x) + "," + std::to_string(threadIdx.y) + "," +
                      std::to_string(threadIdx.z) + ") of block (" + std::to_string(blockIdx.x) + "," +
                      std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + "))";
    }
    g_aborted = true;
    throw Abort{};
}

// Waits for `ready`, giving up when the launch has failed elsewhere or nothing moves for
// kDeadlock (a barrier some thread never reaches).
template <class Ready>
inline void wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Ready ready)
{
    if (!cv.wait_for(lock, kDeadlock, [&] { return ready() || g_aborted.load(); }))
        fail("deadlock: a barrier or warp collective waited " + std::to_string(kDeadlock.count()) + " s");
    if (!ready()) throw Abort{};
}

// The block: __syncthreads, and the hand-over to the next block once every thread is done.
struct Block {
    std::mutex mutex;
    std::condition_variable cv;
    int size = 0, live = 0, arrived = 0, finished = 0;
    long long sum = 0, last_sum = 0;
    unsigned long long sync_phase = 0, block_phase = 0;

    void release_barrier()
    {
        arrived = 0;
        last_sum = sum;
        sum = 0;
        ++sync_phase;
        cv.notify_all();
    }
    long long sync(int contribution)  // __syncthreads; returns the sum of contributions
    {
        if (g_aborted) throw Abort{};
        std::unique_lock<std::mutex> lock(mutex);
        sum += contribution;
        if (++arrived == live) {
            release_barrier();
            return last_sum;
        }
        const auto phase = sync_phase;
        wait(lock, cv, [&] { return sync_phase != phase; });
        return last_sum;
    }
    template <class OnBlockEnd> void finish(OnBlockEnd on_block_end)
    {
        std::unique_lock<std::mutex> lock(mutex);
        --live;
        if (arrived > 0 && arrived == live) release_barrier();
        if (++finished == size) {
            on_block_end();
            finished = 0;
            live = size;
            ++block_phase;
            cv.notify_all();
            return;
        }
        const auto phase = block_phase;
        cv.wait(lock, [&] { return block_phase != phase || g_aborted.load(); });
    }
};

struct Warp {
    std::mutex mutex;
    std::condition_variable cv;
    unsigned present = 0;  // lanes that exist (a partial last warp has fewer)
    unsigned exited = 0;   // lanes that have returned from the kernel in this block
    unsigned arrived = 0, group = 0;
    unsigned long long phase = 0;
    alignas(16) unsigned char slot[32][64];  // what each lane contributes to a collective
};

static Block* g_block = nullptr;
static std::vector<Warp>* g_warps = nullptr;
static thread_local Warp* t_warp = nullptr;
static thread_local int t_lane = 0;

inline Warp& this_warp() { return *t_warp; }
inline int lane_id() { return t_lane; }

// A warp barrier over the lanes of `mask` that exist.
inline void warp_sync(unsigned mask)
{
    Warp& w = this_warp();
    const unsigned bit = 1u << t_lane, group = mask & w.present;
    if (g_aborted) throw Abort{};
    std::unique_lock<std::mutex> lock(w.mutex);
    char text[160];
    if (!(group & bit)) {
        std::snprintf(text, sizeof text, "warp collective with mask 0x%08x called by lane %d, which the mask excludes", mask, t_lane);
        fail(text);
    }
    if (w.arrived == 0) w.group = group;
    if (w.group != group) {
        std::snprintf(text, sizeof text, "lanes of one warp disagree on a collective's mask (0x%08x vs 0x%08x)", w.group, group);
        fail(text);
    }
    if (group & w.exited) {
        std::snprintf(text, sizeof text, "warp collective with mask 0x%08x names lanes 0x%08x that have returned", mask, group & w.exited);
        fail(text);
    }
    w.arrived |= bit;
    if (w.arrived == group) {
        w.arrived = 0;
        ++w.phase;
        w.cv.notify_all();
        return;
    }
    const auto phase = w.phase;
    wait(lock, w.cv, [&] { return w.phase != phase || (w.group & w.exited) != 0; });
    if (w.phase == phase) {
        std::snprintf(text, sizeof text, "lanes 0x%08x returned while the warp waited in a collective (mask 0x%08x)", w.group & w.exited, mask);
        fail(text);
    }
}

// Every lane of `mask` publishes `value`; `read(slots)` runs once all have, before any
// lane may publish again.  Absent lanes' slots hold 0xFF bytes.
template <class T, class Read> inline auto exchange(unsigned mask, const T& value, Read read)
{
    static_assert(sizeof(T) <= 64, "exchange: value too large");
    Warp& w = this_warp();
    std::memcpy(w.slot[t_lane], &value, sizeof(T));
    warp_sync(mask);
    auto result = read(w.slot);
    warp_sync(mask);
    return result;
}

template <class T> inline T shuffle_from(unsigned mask, T value, int source)
{
    const bool absent = !((mask & this_warp().present) >> source & 1u);
    return exchange(mask, value, [&](unsigned char (*slot)[64]) {
        T out;
        if (absent) std::memset(&out, 0xff, sizeof(T));  // undefined on the device: make it show
        else std::memcpy(&out, slot[source], sizeof(T));
        return out;
    });
}

inline unsigned ballot(unsigned mask, int predicate)
{
    const unsigned char vote = predicate ? 1 : 0;
    return exchange(mask, vote, [&](unsigned char (*slot)[64]) {
        unsigned bits = 0;
        for (int lane = 0; lane < 32; ++lane)
            if (((mask & this_warp().present) >> lane & 1u) && slot[lane][0] == 1) bits |= 1u << lane;
        return bits;
    });
}

// mma and ldmatrix are .aligned: all 32 lanes of the warp, which must exist.
inline void require_full_warp(const char* what)
{
    if (this_warp().present != 0xffffffffu) fail(std::string(what) + " in a partial warp: it needs all 32 lanes");
}

inline void lane_exit()
{
    Warp& w = this_warp();
    std::lock_guard<std::mutex> lock(w.mutex);
    w.exited |= 1u << t_lane;
    w.cv.notify_all();
}

inline void wake_everyone()
{
    if (g_block) {
        { std::lock_guard<std::mutex> lock(g_block->mutex); }
        g_block->cv.notify_all();
    }
    if (g_warps)
        for (Warp& w : *g_warps) {
            { std::lock_guard<std::mutex> lock(w.mutex); }
            w.cv.notify_all();
        }
}

// ---------------------------------------------------------------- cp.async
// Copies are captured (source read) at issue and written to shared memory at the
// wait_group that covers them; a copy never waited for is never written.
struct PendingCopy {
    void* dst;
    unsigned char bytes[16];
};
struct AsyncCopies {
    std::vector<PendingCopy> open;
    std::deque<std::vector<PendingCopy>> committed;
    void clear() { open.clear(); committed.clear(); }
};
static thread_local AsyncCopies t_async;

inline void check_aligned(const void* p, unsigned alignment, const char* what)
{
    if (reinterpret_cast<uintptr_t>(p) % alignment != 0) {
        char text[120];
        std::snprintf(text, sizeof text, "%s: address %p is not %u-byte aligned", what, p, alignment);
        fail(text);
    }
}

inline void cp_async_16(void* smem_dst, const void* gmem_src, unsigned src_bytes)
{
    check_aligned(smem_dst, 16, "cp.async destination");
    check_aligned(gmem_src, 16, "cp.async source");
    if (src_bytes > 16) fail("cp.async: src-size " + std::to_string(src_bytes) + " > 16");
    PendingCopy copy{smem_dst, {}};
    std::memcpy(copy.bytes, gmem_src, src_bytes);  // the rest stays zero, as the zero-fill form
    t_async.open.push_back(copy);
}
inline void cp_async_commit()
{
    t_async.committed.push_back(std::move(t_async.open));
    t_async.open.clear();
}
inline void cp_async_wait_group(int pending_allowed)
{
    while ((int)t_async.committed.size() > pending_allowed) {
        for (const PendingCopy& c : t_async.committed.front()) std::memcpy(c.dst, c.bytes, 16);
        t_async.committed.pop_front();
    }
}

// ---------------------------------------------------------------- ldmatrix
// Lanes 8i..8i+7 give the row addresses of 8x8 b16 matrix i.  Lane l receives, per matrix,
// the pair (row l/4, columns 2(l%4), 2(l%4)+1), or with .trans (rows 2(l%4), 2(l%4)+1,
// column l/4).
template <int N> inline void ldmatrix(unsigned (&r)[N], const void* row_address, bool trans)
{
    require_full_warp("ldmatrix");
    check_aligned(row_address, 16, "ldmatrix row address");
    const int lane = t_lane;
    exchange(0xffffffffu, row_address, [&](unsigned char (*slot)[64]) {
        for (int i = 0; i < N; ++i) {
            unsigned short half[2];
            for (int e = 0; e < 2; ++e) {
                const int row = trans ? 2 * (lane % 4) + e : lane / 4;
                const int col = trans ? lane / 4 : 2 * (lane % 4) + e;
                const unsigned char* base;
                std::memcpy(&base, slot[8 * i + row], sizeof base);
                std::memcpy(&half[e], base + 2 * col, 2);
            }
            r[i] = (unsigned)half[0] | ((unsigned)half[1] << 16);
        }
        return 0;
    });
}

// ---------------------------------------------------------------- mma.sync
// tf32 operands: the tensor core reads the top 19 bits of each 32-bit register.
inline float tf32_operand(unsigned bits)
{
    const float f = __uint_as_float(bits);
    return f != f ? f : __uint_as_float(bits & 0xffffe000u);
}
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to a 10-bit mantissa.
inline unsigned f32_to_tf32(float x)
{
    const unsigned bits = __float_as_uint(x);
    if ((bits & 0x7f800000u) == 0x7f800000u) return bits;  // inf and NaN unchanged
    return (bits + 0x1000u) & 0xffffe000u;
}

struct MmaOperands {
    unsigned a[4], b[2];
};

// D = A (16xK, row) * B (Kx8, col) + C.  `a_of(slot, row, k)` / `b_of(slot, k, n)` read
// an element from the lane and register that hold it in the fragment layout.  Each
// lane computes its own four accumulators: rows g, g, g+8, g+8, columns 2t, 2t+1.
template <int K, class AOf, class BOf>
inline void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4], AOf a_of, BOf b_of)
{
    require_full_warp("mma.sync");
    MmaOperands mine;
    std::memcpy(mine.a, a, sizeof mine.a);
    std::memcpy(mine.b, b, sizeof mine.b);
    const int g = t_lane >> 2, t = t_lane & 3;
    float acc[4] = {c[0], c[1], c[2], c[3]};
    exchange(0xffffffffu, mine, [&](unsigned char (*slot)[64]) {
        auto lane_ops = [&](int lane) {
            MmaOperands ops;
            std::memcpy(&ops, slot[lane], sizeof ops);
            return ops;
        };
        for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
            float sum = 0.0f;
            for (int k = 0; k < K; ++k) sum += a_of(lane_ops, row, k) * b_of(lane_ops, k, col);
            acc[i] += sum;
        }
        return 0;
    });
    for (int i = 0; i < 4; ++i) d[i] = acc[i];
}

// m16n8k8 tf32: a0..a3 at (g, t), (g+8, t), (g, t+4), (g+8, t+4); b0, b1 at (t, g), (t+4, g).
inline void mma_m16n8k8_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4])
{
    auto a_of = [](auto lane_ops, int row, int k) {
        return tf32_operand(lane_ops(4 * (row % 8) + k % 4).a[(row / 8) + 2 * (k / 4)]);
    };
    auto b_of = [](auto lane_ops, int k, int n) { return tf32_operand(lane_ops(4 * n + k % 4).b[k / 4]); };
    mma<8>(d, a, b, c, a_of, b_of);
}

// m16n8k16 f16/bf16: element i of A (registers i/2, low half first) sits at row
// g + 8*((i/2)%2), column 2t + i%2 + 8*(i/4); element i of B at row 2t + i%2 + 8*(i/2), column g.
template <float (*Convert)(unsigned short)>
inline void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4])
{
    auto half_of = [](unsigned reg, int which) { return Convert((unsigned short)(reg >> (16 * which))); };
    auto a_of = [&](auto lane_ops, int row, int k) {
        const int i = (k % 2) + 2 * (row / 8) + 4 * (k / 8);
        return half_of(lane_ops(4 * (row % 8) + (k % 8) / 2).a[i / 2], i % 2);
    };
    auto b_of = [&](auto lane_ops, int k, int n) {
        const int i = (k % 2) + 2 * (k / 8);
        return half_of(lane_ops(4 * n + (k % 8) / 2).b[i / 2], i % 2);
    };
    mma<16>(d, a, b, c, a_of, b_of);
}
inline void mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4])
{
    mma_m16n8k16<bf16_bits_to_float>(d, a, b, c);
}
inline void mma_m16n8k16_fp16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4])
{
    mma_m16n8k16<half_bits_to_float>(d, a, b, c);
}

// ---------------------------------------------------------------- launching
// The argument codes Python sends: "p" pointer, "i4"/"u8"/"f4"/"b1" scalars, "s<n>" other.
template <class T> std::string param_code()
{
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) return "p";
    else if constexpr (std::is_same_v<U, bool>) return "b1";
    else if constexpr (std::is_integral_v<U>) return (std::is_signed_v<U> ? "i" : "u") + std::to_string(sizeof(U));
    else if constexpr (std::is_floating_point_v<U>) return "f" + std::to_string(sizeof(U));
    else return "s" + std::to_string(sizeof(U));
}

inline std::string run_launch(const unsigned* grid, const unsigned* block, size_t smem, const std::function<void()>& body)
{
    const unsigned threads = block[0] * block[1] * block[2];
    if (threads == 0 || threads > 1024 || block[2] > 64 || grid[0] == 0 || grid[1] == 0 || grid[2] == 0 ||
        grid[1] > 65535 || grid[2] > 65535)
        return "invalid launch geometry";
    if (smem > kMaxDynamicShared) return "dynamic shared memory " + std::to_string(smem) + " B exceeds 227 KB";
    static std::mutex one_launch_at_a_time;
    std::lock_guard<std::mutex> launch_lock(one_launch_at_a_time);
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    g_aborted = false;
    g_error.clear();
#ifdef __SANITIZE_ADDRESS__
    ASAN_UNPOISON_MEMORY_REGION(dynamic_shared_storage, kMaxDynamicShared);
    ASAN_POISON_MEMORY_REGION(dynamic_shared_storage + smem, kMaxDynamicShared - smem);
#endif
    std::memset(dynamic_shared_storage, 0xff, smem);  // NaN: unwritten shared memory shows

    Block block_state;
    block_state.size = block_state.live = (int)threads;
    std::vector<Warp> warps((threads + 31) / 32);
    for (unsigned w = 0; w < warps.size(); ++w) {
        const unsigned lanes = std::min(32u, threads - 32 * w);
        warps[w].present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    }
    g_block = &block_state;
    g_warps = &warps;
    auto on_block_end = [&] {
        for (Warp& w : warps) {
            std::lock_guard<std::mutex> lock(w.mutex);
            w.exited = w.arrived = 0;
        }
        std::memset(dynamic_shared_storage, 0xff, smem);
    };
    const unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    auto thread_main = [&](unsigned tid) {
        threadIdx = uint3{tid % block[0], tid / block[0] % block[1], tid / (block[0] * block[1])};
        t_warp = &warps[tid / 32];
        t_lane = (int)(tid % 32);
        for (unsigned long long b = 0; b < blocks && !g_aborted; ++b) {
            blockIdx = uint3{(unsigned)(b % grid[0]), (unsigned)(b / grid[0] % grid[1]), (unsigned)(b / grid[0] / grid[1])};
            t_async.clear();
            try {
                body();
            } catch (const Abort&) {
            } catch (const std::exception& e) {
                try { fail(std::string("C++ exception in kernel: ") + e.what()); } catch (const Abort&) {}
            }
            if (g_aborted) wake_everyone();
            lane_exit();
            block_state.finish(on_block_end);
        }
        t_async.clear();
    };
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned tid = 0; tid < threads; ++tid) pool.emplace_back(thread_main, tid);
    for (std::thread& t : pool) t.join();
    g_block = nullptr;
    g_warps = nullptr;
#ifdef __SANITIZE_ADDRESS__
    ASAN_UNPOISON_MEMORY_REGION(dynamic_shared_storage, kMaxDynamicShared);
#endif
    return g_aborted ? (g_error.empty() ? std::string("launch aborted") : g_error) : std::string();
}

// Runs `kernel` with arguments args[i] -> the bytes of parameter i (cudaLaunchKernel's
// convention); `codes` is what the caller believes the parameters are.  Returns 0, or 1
// with a message in `error`.
template <class... P>
int launch(void (*kernel)(P...), const char* codes, const unsigned* grid, const unsigned* block, size_t smem,
           void* const* args, char* error, size_t error_size)
{
    std::string expected;
    ((expected += (expected.empty() ? "" : ",") + param_code<P>()), ...);
    std::string message;
    if (expected != codes) {
        message = "kernel parameters are (" + expected + ") but the launch passes (" + codes + ")";
    } else {
        std::tuple<std::remove_cv_t<P>...> params;
        size_t index = 0;
        std::apply([&](auto&... p) { ((std::memcpy(&p, args[index++], sizeof p)), ...); }, params);
        message = run_launch(grid, block, smem, [&] { std::apply(kernel, params); });
    }
    if (message.empty()) return 0;
    std::snprintf(error, error_size, "%s", message.c_str());
    return 1;
}

typedef int (*LaunchFunction)(const char*, const unsigned*, const unsigned*, size_t, void* const*, char*, size_t);
struct KernelEntry {
    const char* name;
    LaunchFunction launch;
};

#ifdef DLGPU_RUNNER_MAIN
// The sanitizer runner: `runner IN OUT`.  IN holds the launch (see harness.py, _pack_launch):
// each buffer is copied into a malloc'd block of exactly its size, so an overrun is an
// ASan report; OUT receives every buffer afterwards.
inline int runner_main(int argc, char** argv, const KernelEntry* table, size_t entries)
{
    if (argc != 3) { std::fprintf(stderr, "usage: %s IN OUT\n", argv[0]); return 2; }
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) { std::perror(argv[1]); return 2; }
    auto read = [&](void* p, size_t n) {
        if (n && std::fread(p, 1, n, in) != n) { std::fprintf(stderr, "dlgpu runner: truncated input\n"); std::exit(2); }
    };
    auto read_u64 = [&] { unsigned long long v; read(&v, 8); return v; };
    std::string name(read_u64(), '\0'), codes;
    read(name.data(), name.size());
    codes.resize(read_u64());
    read(codes.data(), codes.size());
    unsigned grid[3], block[3];
    for (unsigned& g : grid) g = (unsigned)read_u64();
    for (unsigned& b : block) b = (unsigned)read_u64();
    const size_t smem = read_u64();
    std::vector<unsigned char*> buffers(read_u64());
    std::vector<size_t> sizes(buffers.size());
    for (size_t i = 0; i < buffers.size(); ++i) {
        sizes[i] = read_u64();
        void* p = nullptr;
        if (posix_memalign(&p, 256, sizes[i])) { std::fprintf(stderr, "dlgpu runner: out of memory\n"); return 2; }
        buffers[i] = static_cast<unsigned char*>(p);
        read(buffers[i], sizes[i]);
    }
    std::vector<std::array<unsigned char, 16>> values(read_u64());
    std::vector<void*> args(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
        const unsigned long long kind = read_u64(), a = read_u64(), b = read_u64();
        if (kind == 0) {  // a pointer: buffer a at byte offset b
            void* p = buffers.at(a) + b;
            std::memcpy(values[i].data(), &p, sizeof p);
        } else {  // a scalar of a bytes, value bits b
            std::memcpy(values[i].data(), &b, std::min<size_t>(a, 8));
        }
        args[i] = values[i].data();
    }
    std::fclose(in);
    const KernelEntry* entry = nullptr;
    for (size_t i = 0; i < entries; ++i)
        if (name == table[i].name) entry = &table[i];
    if (!entry) { std::fprintf(stderr, "dlgpu runner: no kernel named %s\n", name.c_str()); return 2; }
    char error[1024] = "";
    if (entry->launch(codes.c_str(), grid, block, smem, args.data(), error, sizeof error) != 0) {
        std::fprintf(stderr, "dlgpu harness: %s\n", error);
        return 3;
    }
    FILE* out = std::fopen(argv[2], "wb");
    if (!out) { std::perror(argv[2]); return 2; }
    for (size_t i = 0; i < buffers.size(); ++i) {
        if (sizes[i]) std::fwrite(buffers[i], 1, sizes[i], out);
        std::free(buffers[i]);
    }
    std::fclose(out);
    return 0;
}
#endif

}  // namespace dlgpu_host

// ---------------------------------------------------------------- CUDA's names for the above
inline void __syncthreads() { dlgpu_host::g_block->sync(0); }
inline int __syncthreads_count(int p) { return (int)dlgpu_host::g_block->sync(p ? 1 : 0); }
inline int __syncthreads_and(int p) { return dlgpu_host::g_block->sync(p ? 0 : 1) == 0; }
inline int __syncthreads_or(int p) { return dlgpu_host::g_block->sync(p ? 1 : 0) != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) { dlgpu_host::warp_sync(mask); }
inline unsigned __activemask() { return dlgpu_host::this_warp().present; }
inline unsigned __ballot_sync(unsigned mask, int p) { return dlgpu_host::ballot(mask, p); }
inline int __any_sync(unsigned mask, int p) { return dlgpu_host::ballot(mask, p) != 0; }
inline int __all_sync(unsigned mask, int p) { return dlgpu_host::ballot(mask, p) == (mask & dlgpu_host::this_warp().present); }

// Shuffles over segments of `width` lanes; a lane whose source falls outside its segment
// keeps its own value, as on the device.
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize)
{
    const int lane = dlgpu_host::lane_id();
    return dlgpu_host::shuffle_from(mask, v, (lane / width) * width + (src % width));
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    const int lane = dlgpu_host::lane_id();
    const int src = (lane % width) >= (int)delta ? lane - (int)delta : lane;
    return dlgpu_host::shuffle_from(mask, v, src);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize)
{
    const int lane = dlgpu_host::lane_id();
    const int src = (lane % width) + (int)delta < width ? lane + (int)delta : lane;
    return dlgpu_host::shuffle_from(mask, v, src);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize)
{
    const int lane = dlgpu_host::lane_id();
    const int src = lane ^ lane_mask;
    return dlgpu_host::shuffle_from(mask, v, src / width == lane / width ? src : lane);
}

// One exported entry per kernel: harness.py generates DLGPU_EXPORT_KERNEL(name) lines.
#define DLGPU_EXPORT_KERNEL(name)                                                                    \
    extern "C" __attribute__((visibility("default"))) int dlgpu_launch_##name(                       \
        const char* codes, const unsigned* grid, const unsigned* block, size_t smem, void* const* args, \
        char* error, size_t error_size)                                                              \
    {                                                                                                \
        return dlgpu_host::launch(name, codes, grid, block, smem, args, error, error_size);          \
    }

#include "cuda_host_sm90.h"  // Hopper: wgmma, TMA and mbarrier models for kernels/ptx_sm90.cuh
