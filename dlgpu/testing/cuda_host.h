// dlgpu/testing/cuda_host.h -- CUDA's built-ins on the host, for the CPU execution harness.
//
// dlgpu/testing/harness.py compiles a kernel family's .cu with g++ -std=c++20 after this
// header (DLGPU_HOST_HARNESS defined) and runs its `extern "C" __global__` kernels on NumPy
// buffers.  Wherever the device may punish a kernel, the harness tries to punish it every time.
// What a kernel sees:
//   launch       checked first, as the device would refuse it: the block (1024 threads, z <= 64),
//                the grid, the kernel's __launch_bounds__, and shared memory -- static arrays at
//                most 48 KB, static + dynamic at most 48 KB, or 227 KB when the launch opts in
//                (dlgpu/cuda/launch.py holds the limits; harness.py passes them in)
//   blocks       run `resident` (2) at a time, in an order shuffled from the launch's seed (a
//                failure names it), each slot taking the next block when its block is done: no
//                kernel may rely on block order, and ThreadSanitizer sees blocks race
//   clusters     the CTAs of a cluster (Launch.cluster) run at once, in the slots of one group
//                (`resident` rounded up to whole clusters), and the group takes the next cluster
//                when all of them have exited; cuda_host_sm90.h models what they share
//   threads      every CUDA thread of a block is a real std::thread
//   __syncthreads a barrier tagged with its call site: threads at two different __syncthreads
//                fail instead of pairing up.  A thread that has returned no longer counts (as on
//                sm_70+).  When every live thread of a block waits (barriers, collectives) and
//                none can arrive, the launch fails at once, naming the threads and where they wait
//   __shared__   harness.py rewrites every declaration of the source and the headers it
//                includes: a static `__shared__ T a[n]` becomes a reference to the running
//                block's own copy and `extern __shared__ T s[]` a pointer to its dynamic buffer,
//                each allocated at exactly its size (an overrun is an ASan report) and refilled
//                with 0xFF bytes (NaN, -1) before every block: a read before a write, or of what
//                another block wrote, shows
//   warps        lanes are 32 consecutive linear thread ids; shuffles, votes, mma, ldmatrix
//                exchange values through a per-warp buffer between two warp barriers.  A mask
//                must name only lanes that exist, have not returned, and include the caller;
//                lanes disagreeing on the mask or on the collective fail (so two disjoint groups
//                of one warp in collectives at once are refused too); a lane reading from a lane
//                outside the mask gets 0xFF bytes; __activemask() is the lanes that exist and have
//                not returned.  A collective orders no memory (invisible to ThreadSanitizer), so
//                warp-shared data exchanged without __syncwarp is a race; __syncwarp orders
//   atomics      std::atomic_ref on the global or shared location, relaxed as on the device; a
//                hand-over through one needs a __threadfence on each side, as the PTX memory model
//                says, and ThreadSanitizer is told exactly that (a missing fence is a race it reports)
//   half types   __half / __nv_bfloat16 with round-to-nearest-even conversions
//   PTX          kernels/ptx.cuh's wrappers call the dlgpu_host:: implementations below:
//                mma.sync from the PTX ISA fragment layouts with operand rounding, ldmatrix,
//                cp.async: the destination filled with 0xFF bytes at issue (a write TSan sees)
//                and the data landing at the wait_group that covers it
// What it does not model: timing, memory coalescing, bank conflicts, the real warp scheduler
// and independent thread scheduling (lanes of a warp are not in lockstep between collectives;
// which lanes are converged), more than `resident` blocks at once (blocks sharing a slot are
// ordered for ThreadSanitizer), the weak GPU memory model (host memory is x86's; __syncwarp is
// a full fence over its warp), the tensor cores' internal accumulation order, the opt-in limit
// of GPUs below sm_90 (163 KB sm_80, 99 KB sm_86/89), and a __shared__ declaration never
// reached (static shared memory is counted as declarations run).  The device remains the
// judge; the GPU run cross-checks harness and device.
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
#include <memory>
#include <mutex>
#include <random>
#include <source_location>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
// harness.py rewrites every __shared__ declaration of the kernel sources (the .cu and the
// headers it includes) into a reference to the running block's copy; one it could not read
// must not compile as a process-wide static.
#define __shared__ static_assert(false, "dlgpu harness: a __shared__ declaration harness.py could not rewrite");
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
struct alignas(4) __half2 { __half x, y; };
typedef __half half;
typedef __half2 half2;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2{__half(lo), __half(hi)}; }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __half22float2(__half2 h) { return float2{float(h.x), float(h.y)}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.__x = u; return h; }
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

// The bfloat16 names live in a namespace that only the stub <cuda_bf16.h> opens (harness.py's
// _STUBS): a source that uses them without including that header fails here as under NVRTC 13.0,
// whose cuda_fp16.h does not pull it in (the first GPU run found a test source that did).
namespace dlgpu_cuda_bf16 {
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(dlgpu_host::float_to_bf16_bits(f)) {}
    operator float() const { return dlgpu_host::bf16_bits_to_float(__x); }
};
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return float(b); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {__nv_bfloat16(lo), __nv_bfloat16(hi)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 b) { return float2{float(b.x), float(b.y)}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 b; b.__x = u; return b; }
DLGPU_HALF_OPS(__nv_bfloat16)
}  // namespace dlgpu_cuda_bf16

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

// ---------------------------------------------------------------- atomics and __threadfence
// The device's atomics are relaxed: atomicAdd and friends order no other memory access.  What hands data
// over through one is the PTX memory model's fence-fence synchronization: the writer's stores, then a
// __threadfence, then its atomic on M; the reader's atomic on M, then a __threadfence, then its loads.  The
// harness's atomics are relaxed too, and ThreadSanitizer (which does not follow std::atomic_thread_fence)
// is told exactly that pattern: an atomic that follows its thread's fence releases into M's sync object,
// and a fence acquires from every M its warp's lanes have touched by atomics before it (lanes hand the
// observation on through __syncwarp).  Without either fence, TSan sees the stores and loads race.
namespace dlgpu_host {
inline void atomic_done(const void* location);
inline void fence_acquire_release();
}  // namespace dlgpu_host
constexpr std::memory_order kRelaxed = std::memory_order_relaxed;
inline void __threadfence()
{
    std::atomic_thread_fence(std::memory_order_seq_cst);
    dlgpu_host::fence_acquire_release();
}
inline void __threadfence_block() { __threadfence(); }
// Every atomic: the hand-over bookkeeping, then `op` on a relaxed atomic_ref of the location.
template <class T, class Op> inline T atomic_op(T* p, Op op)
{
    dlgpu_host::atomic_done(p);
    std::atomic_ref<T> ref(*p);
    return op(ref);
}
#define DLGPU_ATOMIC(name, body) \
    template <class T> inline T name(T* p, std::type_identity_t<T> v) { return atomic_op(p, [&](auto& ref) body); }
DLGPU_ATOMIC(atomicAdd, { return ref.fetch_add(v, kRelaxed); })
DLGPU_ATOMIC(atomicSub, { return ref.fetch_sub(v, kRelaxed); })
DLGPU_ATOMIC(atomicExch, { return ref.exchange(v, kRelaxed); })
DLGPU_ATOMIC(atomicAnd, { return ref.fetch_and(v, kRelaxed); })
DLGPU_ATOMIC(atomicOr, { return ref.fetch_or(v, kRelaxed); })
DLGPU_ATOMIC(atomicXor, { return ref.fetch_xor(v, kRelaxed); })
DLGPU_ATOMIC(atomicMax, {
    T old = ref.load(kRelaxed);
    while (old < v && !ref.compare_exchange_weak(old, v, kRelaxed)) {}
    return old;
})
DLGPU_ATOMIC(atomicMin, {
    T old = ref.load(kRelaxed);
    while (v < old && !ref.compare_exchange_weak(old, v, kRelaxed)) {}
    return old;
})
#undef DLGPU_ATOMIC
template <class T> inline T atomicCAS(T* p, std::type_identity_t<T> expected, std::type_identity_t<T> desired)
{
    return atomic_op(p, [&](auto& ref) {
        ref.compare_exchange_strong(expected, desired, kRelaxed);
        return expected;  // the old value, whether or not the swap happened
    });
}


// ---------------------------------------------------------------- the execution model
namespace dlgpu_host {

// What a launch asks of the harness besides its geometry (harness.py fills it in; the limits
// come from dlgpu/cuda/launch.py, where the CuPy executor reads them too).
struct LaunchOptions {
    unsigned long long seed;          // shuffles the order in which blocks start
    unsigned long long shared_limit;  // static + dynamic shared memory of one block, in bytes
    unsigned long long static_limit;  // static __shared__ arrays of one block, in bytes
    unsigned long long resident;      // blocks that run at the same time (whole clusters: rounded up)
    unsigned long long cluster[3];    // CTAs per cluster in x, y, z (1, 1, 1: no cluster)
};

// ThreadSanitizer must not take the harness's own locking for the kernel's synchronization: a
// warp collective is not a memory fence on the device, so the mutex inside our model of one
// must not order anything either.  In an Unseen scope the thread's synchronization and memory
// accesses are invisible to TSan (nothing elsewhere).
#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
struct Unseen {
    Unseen()
    {
        AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
        AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
        AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
    }
    ~Unseen()
    {
        AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
        AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
        AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
    }
    Unseen(const Unseen&) = delete;
    Unseen& operator=(const Unseen&) = delete;
};
// The happens-before a barrier does give, stated to TSan directly: each arriving thread releases
// into a token, each departing one acquires from it.  (A mutex-based barrier would also order
// an early thread's work after the barrier before a late waker's, hiding races.)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
inline void tsan_release(void* token) { __tsan_release(token); }
inline void tsan_acquire(void* token) { __tsan_acquire(token); }
#else
struct Unseen {
    Unseen() {}  // user-provided: no unused-variable warning where it does nothing
};
inline void tsan_release(void*) {}
inline void tsan_acquire(void*) {}
#endif

// A harness check failed (or a sibling thread's did): unwinds the kernel thread.
struct Abort {};
static std::atomic<bool> g_aborted{false};
static std::mutex g_error_mutex;
static std::string g_error;
// A backstop only: a barrier or collective that cannot complete is found as soon as every live
// thread of the block waits (Block::will_wait); this catches a thread that never comes back.
constexpr auto kStuck = std::chrono::seconds(120);

static LaunchOptions g_options;
static size_t g_dynamic_bytes = 0;

struct Slot;
struct Warp;
static thread_local Slot* t_slot = nullptr;  // the block slot this thread belongs to
static thread_local Warp* t_warp = nullptr;
static thread_local int t_lane = 0, t_tid = 0;
static thread_local unsigned long long t_syncs = 0;  // __syncthreads this thread passed in its block

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

inline std::string hex(unsigned mask)
{
    char text[16];
    std::snprintf(text, sizeof text, "0x%08x", mask);
    return text;
}

inline std::string where(const char* file, unsigned line)
{
    const char* slash = std::strrchr(file, '/');
    return std::string(slash ? slash + 1 : file) + ":" + std::to_string(line);
}

// "threads 0-15, 32" for a set of linear thread ids.
inline std::string thread_ranges(std::vector<int> ids)
{
    std::sort(ids.begin(), ids.end());
    std::string out = ids.size() == 1 ? "thread " : "threads ";
    for (size_t i = 0; i < ids.size();) {
        size_t j = i;
        while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
        out += (i ? ", " : "") + std::to_string(ids[i]) + (j > i ? "-" + std::to_string(ids[j]) : "");
        i = j + 1;
    }
    return out;
}

// Waits for `ready`, giving up when the launch has failed elsewhere.
template <class Ready>
inline void wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Ready ready)
{
    if (!cv.wait_for(lock, kStuck, [&] { return ready() || g_aborted.load(); }))
        fail("a barrier or warp collective waited " + std::to_string(kStuck.count()) +
             " s for a thread that never came (an endless loop?)");
    if (!ready()) throw Abort{};
}

// What a waiting thread waits for, for the message when nothing can move any more.
struct WaitRecord {
    const char* what = "";
    const char* file = "";
    unsigned line = 0;
    unsigned mask = 0;
    bool waiting = false;
};

// One block: __syncthreads, the deadlock accounting, and the hand-over to the next block.
struct Block {
    std::mutex mutex;
    std::condition_variable cv;
    int size = 0, arrived = 0, finished = 0;
    long long sum = 0, last_sum = 0;
    unsigned long long sync_phase = 0, block_phase = 0;
    const char* site_file = nullptr;  // the call site of the barrier being filled
    unsigned site_line = 0;
    std::vector<int> arrivals;  // threads waiting in it
    char tokens[2];             // TSan's sync objects, by the parity of the barrier's number

    // Deadlock accounting, shared with the warps' collectives (lock order: a Block's or Warp's
    // mutex, then this one).  `live`: threads that have not returned; `blocked`: those of them
    // waiting in a barrier or a collective that nobody has completed yet.  When every live
    // thread is blocked, nothing can ever wake any of them.
    std::mutex account;
    int live = 0, blocked = 0;
    std::vector<WaitRecord> waits;

    int live_count()
    {
        Unseen unseen_account;  // bookkeeping: orders nothing
        std::lock_guard<std::mutex> lock(account);
        return live;
    }

    [[noreturn]] void deadlock()  // with `account` held
    {
        std::vector<std::pair<std::string, std::vector<int>>> groups;
        for (int tid = 0; tid < size; ++tid) {
            const WaitRecord& r = waits[tid];
            if (!r.waiting) continue;
            std::string what = std::string(r.what) + (r.line ? " at " + where(r.file, r.line) : "") +
                               (r.mask ? " (mask " + hex(r.mask) + ")" : "");
            auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == what; });
            if (it == groups.end()) groups.push_back({what, {tid}});
            else it->second.push_back(tid);
        }
        std::string text = "deadlock: every live thread of the block waits and none can arrive:";
        for (const auto& [what, ids] : groups) text += " " + thread_ranges(ids) + " wait in " + what + ";";
        text += " " + std::to_string(size - live) + " have returned";
        fail(text);
    }
    void will_wait(int tid, const WaitRecord& record)
    {
        Unseen unseen_account;  // bookkeeping: orders nothing
        std::lock_guard<std::mutex> lock(account);
        waits[tid] = record;
        waits[tid].waiting = true;
        ++blocked;
        if (blocked == live && !g_aborted) deadlock();
    }
    void released(int tid)  // with `account` held
    {
        if (waits[tid].waiting) {
            waits[tid].waiting = false;
            --blocked;
        }
    }

    void release_barrier()  // with `mutex` held
    {
        {
            Unseen unseen_account;  // bookkeeping: orders nothing
            std::lock_guard<std::mutex> lock(account);
            for (int tid : arrivals) released(tid);
        }
        arrivals.clear();
        arrived = 0;
        last_sum = sum;
        sum = 0;
        site_file = nullptr;
        ++sync_phase;
        cv.notify_all();
    }
    // __syncthreads and its counting forms, tagged with their call site; returns the sum of the
    // contributions.  Threads at two different __syncthreads never pair up: that is undefined on
    // the device (it may hang, or pass with the wrong threads), so it fails here.
    long long sync(int contribution, const char* file, unsigned line)
    {
        if (g_aborted) throw Abort{};
        // Every thread passes the same barriers in the same order, so the n-th barrier of one is
        // the n-th of all; barrier n + 2 cannot start before every thread has left barrier n.
        char* token = &tokens[t_syncs++ & 1];
        tsan_release(token);
        long long result;
        {
            Unseen unseen;
            result = arrive(contribution, file, line);
        }
        tsan_acquire(token);
        return result;
    }
    long long arrive(int contribution, const char* file, unsigned line)
    {
        std::unique_lock<std::mutex> lock(mutex);
        if (arrived == 0) {
            site_file = file;
            site_line = line;
        } else if (line != site_line || std::strcmp(file, site_file) != 0) {
            fail("__syncthreads at " + where(file, line) + " would pair with " + thread_ranges(arrivals) +
                 " waiting in __syncthreads at " + where(site_file, site_line) +
                 ": barriers reached from different places are undefined behaviour");
        }
        sum += contribution;
        if (++arrived == live_count()) {
            release_barrier();
            return last_sum;
        }
        arrivals.push_back(t_tid);
        will_wait(t_tid, {"__syncthreads", file, line, 0, true});
        const auto phase = sync_phase;
        wait(lock, cv, [&] { return sync_phase != phase; });
        return last_sum;
    }
    // A thread has returned from the kernel: it no longer counts at barriers (as on sm_70+), and
    // may have been the last one some barrier or collective needed, or the last that could move.
    template <class OnBlockEnd> void finish(OnBlockEnd on_block_end)
    {
        std::unique_lock<std::mutex> lock(mutex);
        {
            Unseen unseen_account;  // bookkeeping: orders nothing
            std::lock_guard<std::mutex> account_lock(account);
            --live;
        }
        if (arrived > 0 && arrived == live_count()) release_barrier();
        {
            Unseen unseen_account;  // bookkeeping: orders nothing
            std::lock_guard<std::mutex> account_lock(account);
            if (live > 0 && blocked == live && !g_aborted) deadlock();
        }
        if (++finished == size) {
            on_block_end();
            finished = 0;
            {
                Unseen unseen_account;  // bookkeeping: orders nothing
                std::lock_guard<std::mutex> account_lock(account);
                live = size;
                blocked = 0;
            }
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
    int base = 0;            // the linear thread id of lane 0
    const char* what = "";  // the collective being filled
    unsigned long long phase = 0;
    alignas(16) unsigned char slot[32][64];  // what each lane contributes to a collective
    std::vector<const void*> atomics;        // locations its lanes have touched by atomics (__threadfence)
};

// A __shared__ declaration (one per template instance): harness.py turns
// `__shared__ T name[n];` into a reference to the running block's copy, found by this key.
struct SharedSite {};
struct StaticShared {
    const SharedSite* site;
    unsigned char* data;
    size_t bytes;
};

// The slots that run the CTAs of one cluster together (one slot when the launch has no clusters):
// they start a cluster's CTAs at once and take the next cluster only when all of them have exited,
// so a CTA's shared memory stays where its peers address it (distributed shared memory) for as
// long as the cluster runs -- but an exited CTA's is poisoned and marked `exited`, and a peer that
// still reaches into it fails (cuda_host_sm90.h).  `mutex` orders those accesses against the exit.
struct Slot;
struct ClusterGroup {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<Slot*> members;  // by CTA rank in the cluster
    int finished = 0;            // members whose CTA has exited
    unsigned long long generation = 0;
    int barrier_arrived = 0;     // barrier.cluster (cuda_host_sm90.h)
    unsigned long long barrier_phase = 0;
    char token = 0;              // ThreadSanitizer's sync object for barrier.cluster
};
static std::vector<std::unique_ptr<ClusterGroup>> g_groups;

// Where one block runs: `resident` of these run at once, each taking the next block of the
// shuffled order when its block is done (with clusters: its group the next cluster).  Shared
// memory belongs to the slot and is refilled with 0xFF bytes (NaN, -1) before every block.
struct Slot {
    Block block;
    std::vector<Warp> warps;
    unsigned char* dynamic = nullptr;
    std::mutex statics_mutex;
    std::vector<StaticShared> statics;
    size_t static_bytes = 0;
    unsigned long long current = 0;  // the linear id of the block it runs
    bool done = false;
    ClusterGroup* group = nullptr;
    unsigned rank = 0;               // %cluster_ctarank of its CTA
    bool exited = false;             // its CTA has exited, its peers still run (under group->mutex)
    // The dynamic shared memory as the async proxy (TMA, wgmma) sees it: what TMA wrote, and what the generic
    // proxy wrote before the latest fence.proxy.async (cuda_host_sm90.h; under its g_async_view_mutex).
    std::vector<unsigned char> async_view;
};
static std::vector<std::unique_ptr<Slot>> g_slots;

inline Warp& this_warp() { return *t_warp; }
inline int lane_id() { return t_lane; }
inline Block& this_block() { return t_slot->block; }

inline unsigned char* dynamic_shared() { return t_slot->dynamic; }

// The hand-over through atomics (see the atomics above).  t_fenced: a __threadfence since this thread's
// last atomic, so that its next atomic releases what came before the fence.
static thread_local bool t_fenced = false;
inline void atomic_done(const void* location)
{
    if (t_fenced) {
        tsan_release(const_cast<void*>(location));
        t_fenced = false;
    }
    Warp& w = this_warp();
    Unseen unseen;  // the model's own locking orders nothing
    std::lock_guard<std::mutex> lock(w.mutex);
    if (std::find(w.atomics.begin(), w.atomics.end(), location) == w.atomics.end()) w.atomics.push_back(location);
}
inline void fence_acquire_release()
{
    std::vector<const void*> seen;
    {
        Warp& w = this_warp();
        Unseen unseen;
        std::lock_guard<std::mutex> lock(w.mutex);
        seen = w.atomics;
    }
    for (const void* location : seen) tsan_acquire(const_cast<void*>(location));
    t_fenced = true;
}

// Shared memory of `bytes`, filled with 0xFF.  Under ASan exactly that much, so that an access
// past it is a report; elsewhere with some slack behind, so that one does not crash the process.
inline unsigned char* shared_alloc(size_t bytes, size_t alignment)
{
#ifdef __SANITIZE_ADDRESS__
    const size_t slack = 0;
#else
    const size_t slack = 256;
#endif
    void* p = nullptr;
    if (posix_memalign(&p, alignment, bytes + slack)) return nullptr;
    std::memset(p, 0xff, bytes + slack);
    return static_cast<unsigned char*>(p);
}

template <class T, size_t Align> inline T& static_shared(const SharedSite& site)
{
    if (!t_slot) {
        std::fprintf(stderr, "dlgpu harness: a __shared__ variable used outside a kernel (at namespace scope?)\n");
        std::abort();
    }
    Slot& slot = *t_slot;
    Unseen unseen;  // finding the block's copy orders nothing between its threads
    std::lock_guard<std::mutex> lock(slot.statics_mutex);
    for (const StaticShared& s : slot.statics)
        if (s.site == &site) return *reinterpret_cast<T*>(s.data);
    slot.static_bytes += sizeof(T);
    if (slot.static_bytes > g_options.static_limit)
        fail("static __shared__ arrays of " + std::to_string(slot.static_bytes) + " B exceed the " +
             std::to_string(g_options.static_limit) + " B a kernel may declare");
    if (slot.static_bytes + g_dynamic_bytes > g_options.shared_limit)
        fail("shared memory of " + std::to_string(slot.static_bytes) + " B static + " +
             std::to_string(g_dynamic_bytes) + " B dynamic exceeds this launch's " +
             std::to_string(g_options.shared_limit) + " B (48 KB unless the launch opts in: shared_opt_in)");
    unsigned char* p = shared_alloc(sizeof(T), std::max<size_t>({Align, alignof(T), 16}));
    if (!p) fail("out of memory for __shared__");
    slot.statics.push_back({&site, p, sizeof(T)});
    return *reinterpret_cast<T*>(p);
}

// A warp barrier over the lanes of `mask`, which must exist, include the caller and not have
// returned; every lane of it must be in the same kind of collective (`what`).
inline void warp_sync(unsigned mask, const char* what, const char* file = "", unsigned line = 0)
{
    Warp& w = this_warp();
    const unsigned bit = 1u << t_lane;
    if (g_aborted) throw Abort{};
    std::unique_lock<std::mutex> lock(w.mutex);
    if (mask & ~w.present)
        fail(std::string(what) + " with mask " + hex(mask) + " names lanes " + hex(mask & ~w.present) +
             " that do not exist (the warp has lanes " + hex(w.present) + ")");
    if (!(mask & bit))
        fail(std::string(what) + " with mask " + hex(mask) + " called by lane " + std::to_string(t_lane) +
             ", which the mask excludes");
    if (mask & w.exited)
        fail(std::string(what) + " with mask " + hex(mask) + " names lanes " + hex(mask & w.exited) +
             " that have returned");
    if (w.arrived == 0) {
        w.group = mask;
        w.what = what;
    }
    if (w.group != mask)
        fail("lanes of one warp disagree on a collective's mask (" + hex(w.group) + " vs " + hex(mask) + ")");
    if (std::strcmp(w.what, what) != 0)
        fail("lanes of one warp meet in different collectives (" + std::string(w.what) + " and " + what + ")");
    w.arrived |= bit;
    Block& block = this_block();
    if (w.arrived == mask) {
        {
            Unseen unseen_account;  // bookkeeping: orders nothing
            std::lock_guard<std::mutex> account_lock(block.account);
            for (int lane = 0; lane < 32; ++lane)
                if ((mask >> lane & 1u) && lane != t_lane) block.released(w.base + lane);
        }
        w.arrived = 0;
        ++w.phase;
        w.cv.notify_all();
        return;
    }
    block.will_wait(t_tid, {what, file, line, mask, true});
    const auto phase = w.phase;
    wait(lock, w.cv, [&] { return w.phase != phase || (w.group & w.exited) != 0; });
    if (w.phase == phase)
        fail("lanes " + hex(w.group & w.exited) + " returned while the warp waited in " + what + " (mask " +
             hex(mask) + ")");
}

// Every lane of `mask` publishes `value`; `read(slots)` runs once all have, before any lane may
// publish again.  Unseen: the exchange is no memory fence between the lanes (only __syncwarp
// is), so ThreadSanitizer still sees shared-memory traffic between them as unordered.
template <class T, class Read>
inline auto exchange(unsigned mask, const T& value, Read read, const char* what, const char* file = "",
                     unsigned line = 0)
{
    static_assert(sizeof(T) <= 64, "exchange: value too large");
    Unseen unseen;
    Warp& w = this_warp();
    std::memcpy(w.slot[t_lane], &value, sizeof(T));
    warp_sync(mask, what, file, line);
    auto result = read(w.slot);
    warp_sync(mask, what, file, line);
    return result;
}

// A source lane outside the mask gives 0xFF bytes (undefined on the device: make it show).
template <class T> inline T shuffle_from(unsigned mask, T value, int source, const char* file, unsigned line)
{
    const bool absent = !(mask >> source & 1u);
    return exchange(mask, value, [&](unsigned char (*slot)[64]) {
        T out;
        if (absent) std::memset(&out, 0xff, sizeof(T));
        else std::memcpy(&out, slot[source], sizeof(T));
        return out;
    }, "a shuffle", file, line);
}

inline unsigned ballot(unsigned mask, int predicate, const char* file, unsigned line)
{
    const unsigned char vote = predicate ? 1 : 0;
    return exchange(mask, vote, [&](unsigned char (*slot)[64]) {
        unsigned bits = 0;
        for (int lane = 0; lane < 32; ++lane)
            if ((mask >> lane & 1u) && slot[lane][0] == 1) bits |= 1u << lane;
        return bits;
    }, "a vote", file, line);
}

// The lanes of this warp that exist and have not returned.
inline unsigned active_mask()
{
    Unseen unseen;
    Warp& w = this_warp();
    std::lock_guard<std::mutex> lock(w.mutex);
    return w.present & ~w.exited;
}

// mma and ldmatrix are .aligned: all 32 lanes of the warp, which must exist.
inline void require_full_warp(const char* what)
{
    if (this_warp().present != 0xffffffffu) fail(std::string(what) + " in a partial warp: it needs all 32 lanes");
}

// This lane returns from the kernel.  Lanes waiting for it in a collective can never complete.
inline void lane_exit()
{
    Unseen unseen;
    Warp& w = this_warp();
    std::lock_guard<std::mutex> lock(w.mutex);
    const unsigned bit = 1u << t_lane;
    w.exited |= bit;
    w.cv.notify_all();
    if (w.arrived != 0 && (w.group & bit))
        fail("lane " + std::to_string(t_lane) + " returned while lanes " + hex(w.arrived) + " wait for it in " +
             w.what + " (mask " + hex(w.group) + ")");
}

inline void wake_everyone()
{
    for (auto& slot : g_slots) {
        { std::lock_guard<std::mutex> lock(slot->block.mutex); }
        slot->block.cv.notify_all();
        for (Warp& w : slot->warps) {
            { std::lock_guard<std::mutex> lock(w.mutex); }
            w.cv.notify_all();
        }
    }
}

// ---------------------------------------------------------------- cp.async
// At issue the source is read and the destination filled with 0xFF bytes (NaN): until the
// wait_group that covers it the copy is in flight, and whoever reads the destination meanwhile
// sees garbage, as on the device -- in every mode, and as a write that ThreadSanitizer sees racing
// with other threads' reads of it (a refill issued before the barrier that frees its stage).  The
// data lands at the wait; a copy never waited for never lands.
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

// Shared-memory traffic of the PTX models goes through plain 4- or 2-byte accesses: g++ turns a
// fixed-size memcpy or memset into stores of its own that ThreadSanitizer never sees.
typedef unsigned __attribute__((may_alias)) word32;
typedef unsigned short __attribute__((may_alias)) word16;
inline void store16(void* dst, const unsigned char* bytes)
{
    word32 words[4];
    std::memcpy(words, bytes, 16);
    for (int i = 0; i < 4; ++i) static_cast<word32*>(dst)[i] = words[i];
}

inline void cp_async_16(void* smem_dst, const void* gmem_src, unsigned src_bytes)
{
    check_aligned(smem_dst, 16, "cp.async destination");
    check_aligned(gmem_src, 16, "cp.async source");
    if (src_bytes > 16) fail("cp.async: src-size " + std::to_string(src_bytes) + " > 16");
    PendingCopy copy{smem_dst, {}};
    std::memcpy(copy.bytes, gmem_src, src_bytes);  // the rest stays zero, as the zero-fill form
    unsigned char poison[16];
    std::memset(poison, 0xff, sizeof poison);
    store16(smem_dst, poison);
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
        for (const PendingCopy& c : t_async.committed.front()) store16(c.dst, c.bytes);
        t_async.committed.pop_front();
    }
}

// ---------------------------------------------------------------- ldmatrix
// Lanes 8i..8i+7 give the row addresses of 8x8 b16 matrix i.  Lane l receives, per matrix,
// the pair (row l/4, columns 2(l%4), 2(l%4)+1), or with .trans (rows 2(l%4), 2(l%4)+1,
// column l/4).  The addresses go through the warp; each lane then reads its own elements, so
// that ThreadSanitizer sees those reads (a tile written without a barrier before it races).
template <int N> inline void ldmatrix(unsigned (&r)[N], const void* row_address, bool trans)
{
    require_full_warp("ldmatrix");
    check_aligned(row_address, 16, "ldmatrix row address");
    const int lane = t_lane;
    const unsigned char* rows[8 * N];
    exchange(0xffffffffu, row_address, [&](unsigned char (*slot)[64]) {
        for (int i = 0; i < 8 * N; ++i) std::memcpy(&rows[i], slot[i], sizeof rows[i]);
        return 0;
    }, "ldmatrix");
    for (int i = 0; i < N; ++i) {
        unsigned short half[2];
        for (int e = 0; e < 2; ++e) {
            const int row = trans ? 2 * (lane % 4) + e : lane / 4;
            const int col = trans ? lane / 4 : 2 * (lane % 4) + e;
            half[e] = *reinterpret_cast<const word16*>(rows[8 * i + row] + 2 * col);
        }
        r[i] = (unsigned)half[0] | ((unsigned)half[1] << 16);
    }
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
    }, "mma.sync");
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

// The order in which the blocks of a grid start: a Fisher-Yates shuffle of their linear ids,
// from the launch's seed (reported with any failure, so that a run can be repeated).
inline std::vector<unsigned long long> block_order(unsigned long long blocks, unsigned long long seed)
{
    std::vector<unsigned long long> order(blocks);
    for (unsigned long long b = 0; b < blocks; ++b) order[b] = b;
    std::mt19937_64 random(seed);
    for (unsigned long long i = blocks; i > 1; --i) std::swap(order[i - 1], order[random() % i]);
    return order;
}

inline void poison_shared(Slot& slot)
{
    std::memset(slot.dynamic, 0xff, g_dynamic_bytes);  // NaN: unwritten shared memory shows
    slot.async_view.assign(g_dynamic_bytes, 0xff);     // the same poison through either proxy
    for (const StaticShared& s : slot.statics) std::memset(s.data, 0xff, s.bytes);
}

// The linear block id of CTA `rank` of cluster `cluster` (clusters and ranks numbered x fastest).
inline unsigned long long cluster_member(const unsigned* grid, const unsigned long long* dims,
                                         unsigned long long cluster, unsigned long long rank)
{
    const unsigned long long across_x = grid[0] / dims[0], across_y = grid[1] / dims[1];
    const unsigned long long x = cluster % across_x * dims[0] + rank % dims[0];
    const unsigned long long y = cluster / across_x % across_y * dims[1] + rank / dims[0] % dims[1];
    const unsigned long long z = cluster / across_x / across_y * dims[2] + rank / dims[0] / dims[1];
    return x + grid[0] * (y + grid[1] * z);
}

// Checks the launch against the device's limits, then runs its blocks: `resident` slots at a
// time, each a real thread per CUDA thread, blocks (or whole clusters) taken in the shuffled order.
inline std::string run_launch(const unsigned* grid, const unsigned* block, size_t smem, const LaunchOptions& options,
                              unsigned max_threads, const std::function<void()>& body)
{
    const unsigned threads = block[0] * block[1] * block[2];
    if (block[0] > 1024 || block[1] > 1024 || block[2] > 64 || threads == 0 || threads > 1024 || grid[0] == 0 ||
        grid[1] == 0 || grid[2] == 0 || grid[0] > 2147483647u || grid[1] > 65535 || grid[2] > 65535)
        return "invalid launch geometry";
    if (max_threads && threads > max_threads)
        return "a block of " + std::to_string(threads) + " threads exceeds the kernel's __launch_bounds__(" +
               std::to_string(max_threads) + ")";
    if (smem > options.shared_limit)
        return "dynamic shared memory of " + std::to_string(smem) + " B exceeds this launch's " +
               std::to_string(options.shared_limit) + " B (48 KB unless the launch opts in: shared_opt_in)";
    const unsigned long long* dims = options.cluster;
    const unsigned long long cluster_size = dims[0] * dims[1] * dims[2];
    if (cluster_size == 0 || cluster_size > 8)
        return "a cluster of " + std::to_string(cluster_size) + " CTAs (at most 8 are portable)";
    if (grid[0] % dims[0] || grid[1] % dims[1] || grid[2] % dims[2])
        return "the grid (" + std::to_string(grid[0]) + ", " + std::to_string(grid[1]) + ", " +
               std::to_string(grid[2]) + ") is not a whole number of clusters (" + std::to_string(dims[0]) + ", " +
               std::to_string(dims[1]) + ", " + std::to_string(dims[2]) + ")";
    static std::mutex one_launch_at_a_time;
    std::lock_guard<std::mutex> launch_lock(one_launch_at_a_time);
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    g_aborted = false;
    g_error.clear();
    g_options = options;
    g_dynamic_bytes = smem;

    const unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    const unsigned long long clusters = blocks / cluster_size;
    const std::vector<unsigned long long> order = block_order(clusters, options.seed);
    const unsigned long long groups =
        std::max(1ull, std::min((options.resident + cluster_size - 1) / cluster_size, clusters));
    const unsigned long long resident = groups * cluster_size;
    std::atomic<unsigned long long> next{groups};  // the next cluster; relaxed: taking one orders nothing
    g_slots.clear();
    g_groups.clear();
    for (unsigned long long g = 0; g < groups; ++g) g_groups.push_back(std::make_unique<ClusterGroup>());
    for (unsigned long long s = 0; s < resident; ++s) {
        auto slot = std::make_unique<Slot>();
        slot->block.size = slot->block.live = (int)threads;
        slot->block.waits.resize(threads);
        slot->warps = std::vector<Warp>((threads + 31) / 32);
        for (unsigned w = 0; w < slot->warps.size(); ++w) {
            const unsigned lanes = std::min(32u, threads - 32 * w);
            slot->warps[w].present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
            slot->warps[w].base = (int)(32 * w);
        }
        slot->dynamic = shared_alloc(smem, 128);
        if (!slot->dynamic) return "out of memory for dynamic shared memory";
        slot->group = g_groups[s / cluster_size].get();
        slot->rank = (unsigned)(s % cluster_size);
        slot->group->members.push_back(slot.get());
        slot->current = cluster_member(grid, dims, order[s / cluster_size], slot->rank);
        poison_shared(*slot);
        g_slots.push_back(std::move(slot));
    }

    auto thread_main = [&](Slot& slot, unsigned tid) {
        t_slot = &slot;
        t_tid = (int)tid;
        threadIdx = uint3{tid % block[0], tid / block[0] % block[1], tid / (block[0] * block[1])};
        t_warp = &slot.warps[tid / 32];
        t_lane = (int)(tid % 32);
        auto on_block_end = [&] {  // the last thread of the block, under its mutex
            for (Warp& w : slot.warps) {
                std::lock_guard<std::mutex> lock(w.mutex);
                w.exited = w.arrived = 0;
                w.atomics.clear();
            }
            ClusterGroup& group = *slot.group;
            std::unique_lock<std::mutex> lock(group.mutex);
            poison_shared(slot);
            slot.exited = true;
            if (++group.finished < (int)cluster_size) {  // the last CTA of the cluster to exit moves all on
                const auto generation = group.generation;
                while (group.generation == generation && !g_aborted)
                    group.cv.wait_for(lock, std::chrono::milliseconds(20));
                return;
            }
            const unsigned long long taken = next.fetch_add(1, std::memory_order_relaxed);
            for (Slot* member : group.members) {
                if (taken < clusters) member->current = cluster_member(grid, dims, order[taken], member->rank);
                else member->done = true;
                member->exited = false;
            }
            group.finished = group.barrier_arrived = 0;
            ++group.generation;
            group.cv.notify_all();
        };
        while (!slot.done && !g_aborted) {
            const unsigned long long b = slot.current;
            blockIdx = uint3{(unsigned)(b % grid[0]), (unsigned)(b / grid[0] % grid[1]),
                             (unsigned)(b / grid[0] / grid[1])};
            t_async.clear();
            t_syncs = 0;
            t_fenced = false;  // a fence of the slot's previous block releases nothing of this one's
            try {
                body();
            } catch (const Abort&) {
            } catch (const std::exception& e) {
                try { fail(std::string("C++ exception in kernel: ") + e.what()); } catch (const Abort&) {}
            }
            try {
                if (!g_aborted) lane_exit();
                if (!g_aborted) slot.block.finish(on_block_end);
            } catch (const Abort&) {
            }
            if (g_aborted) {
                wake_everyone();
                break;
            }
        }
        t_async.clear();
        t_slot = nullptr;
    };
    std::vector<std::thread> pool;
    pool.reserve(resident * threads);
    for (auto& slot : g_slots)
        for (unsigned tid = 0; tid < threads; ++tid) pool.emplace_back(thread_main, std::ref(*slot), tid);
    for (std::thread& t : pool) t.join();
    for (auto& slot : g_slots) {
        for (const StaticShared& s : slot->statics) std::free(s.data);
        std::free(slot->dynamic);
    }
    g_slots.clear();
    g_groups.clear();
    if (!g_aborted) return std::string();
    return g_error.empty() ? std::string("launch aborted") : g_error;
}

// Runs `kernel` with arguments args[i] -> the bytes of parameter i (cudaLaunchKernel's
// convention); `codes` is what the caller believes the parameters are; `max_threads` is the
// kernel's __launch_bounds__ (0: none).  Returns 0, or 1 with a message in `error`.
template <class... P>
int launch(void (*kernel)(P...), unsigned max_threads, const char* codes, const unsigned* grid,
           const unsigned* block, size_t smem, const LaunchOptions* options, void* const* args, char* error,
           size_t error_size)
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
        message = run_launch(grid, block, smem, *options, max_threads, [&] { std::apply(kernel, params); });
    }
    if (message.empty()) return 0;
    std::snprintf(error, error_size, "%s", message.c_str());
    return 1;
}

typedef int (*LaunchFunction)(const char*, const unsigned*, const unsigned*, size_t, const LaunchOptions*,
                              void* const*, char*, size_t);
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
    LaunchOptions options;
    options.seed = read_u64();
    options.shared_limit = read_u64();
    options.static_limit = read_u64();
    options.resident = read_u64();
    for (unsigned long long& c : options.cluster) c = read_u64();
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
    char error[2048] = "";
    if (entry->launch(codes.c_str(), grid, block, smem, &options, args.data(), error, sizeof error) != 0) {
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
// Barriers and collectives carry their call site (for mismatches and deadlock messages).
#define DLGPU_SITE std::source_location where = std::source_location::current()
inline void __syncthreads(DLGPU_SITE) { dlgpu_host::this_block().sync(0, where.file_name(), where.line()); }
inline int __syncthreads_count(int p, DLGPU_SITE)
{
    return (int)dlgpu_host::this_block().sync(p ? 1 : 0, where.file_name(), where.line());
}
inline int __syncthreads_and(int p, DLGPU_SITE)
{
    return dlgpu_host::this_block().sync(p ? 0 : 1, where.file_name(), where.line()) == 0;
}
inline int __syncthreads_or(int p, DLGPU_SITE)
{
    return dlgpu_host::this_block().sync(p ? 1 : 0, where.file_name(), where.line()) != 0;
}
// The one warp-level memory fence: ThreadSanitizer sees it order the lanes it names.
inline void __syncwarp(unsigned mask = 0xffffffffu, DLGPU_SITE)
{
    dlgpu_host::warp_sync(mask, "__syncwarp", where.file_name(), where.line());
}
inline unsigned __activemask() { return dlgpu_host::active_mask(); }
inline unsigned __ballot_sync(unsigned mask, int p, DLGPU_SITE)
{
    return dlgpu_host::ballot(mask, p, where.file_name(), where.line());
}
inline int __any_sync(unsigned mask, int p, DLGPU_SITE)
{
    return dlgpu_host::ballot(mask, p, where.file_name(), where.line()) != 0;
}
inline int __all_sync(unsigned mask, int p, DLGPU_SITE)
{
    return dlgpu_host::ballot(mask, p, where.file_name(), where.line()) == mask;
}

// Shuffles over segments of `width` lanes; a lane whose source falls outside its segment
// keeps its own value, as on the device.
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize, DLGPU_SITE)
{
    const int lane = dlgpu_host::lane_id();
    return dlgpu_host::shuffle_from(mask, v, (lane / width) * width + (src % width), where.file_name(), where.line());
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize, DLGPU_SITE)
{
    const int lane = dlgpu_host::lane_id();
    const int src = (lane % width) >= (int)delta ? lane - (int)delta : lane;
    return dlgpu_host::shuffle_from(mask, v, src, where.file_name(), where.line());
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize, DLGPU_SITE)
{
    const int lane = dlgpu_host::lane_id();
    const int src = (lane % width) + (int)delta < width ? lane + (int)delta : lane;
    return dlgpu_host::shuffle_from(mask, v, src, where.file_name(), where.line());
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize, DLGPU_SITE)
{
    const int lane = dlgpu_host::lane_id();
    const int src = lane ^ lane_mask;
    return dlgpu_host::shuffle_from(mask, v, src / width == lane / width ? src : lane, where.file_name(), where.line());
}
#undef DLGPU_SITE

// One exported entry per kernel: harness.py generates DLGPU_EXPORT_KERNEL(name, max_threads)
// lines, max_threads being the kernel's __launch_bounds__ (0 when it has none).
#define DLGPU_EXPORT_KERNEL(name, max_threads)                                                          \
    extern "C" __attribute__((visibility("default"))) int dlgpu_launch_##name(                          \
        const char* codes, const unsigned* grid, const unsigned* block, size_t smem,                    \
        const dlgpu_host::LaunchOptions* options, void* const* args, char* error, size_t error_size)    \
    {                                                                                                   \
        return dlgpu_host::launch(name, (unsigned)(max_threads), codes, grid, block, smem, options, args, \
                                  error, error_size);                                                   \
    }

#include "cuda_host_sm90.h"  // Hopper: wgmma, TMA and mbarrier models for kernels/ptx_sm90.cuh
