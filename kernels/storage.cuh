// kernels/storage.cuh -- the element types of the memory-bound kernels, and their one vector driver.
//
// An array holds float32 or a 16-bit storage type; arithmetic is always float: an element is
// widened exactly when it is read and rounded once, to nearest even, when it is written.
//   bf16_bits, fp16_bits       a bfloat16 / IEEE binary16 element: its 16 bits in a struct, so that
//                              no arithmetic can happen on it by accident (and no CUDA header is needed)
//   STORAGE_TYPES(X)           X(suffix, type) for f32 float, bf16 bf16_bits, fp16 fp16_bits: a family
//   HALF_TYPES(X)              instantiates its kernels once per type, named <kernel>_<suffix>
//                              (dlgpu/cuda/launch.py's STORAGE_SUFFIXES maps dtypes to the suffixes)
//   to_float(v)                any element -> float, exact
//   from_float<T>(f)           float -> T, round to nearest even (ptx.cuh's cvt)
//   VECTOR_BYTES               16: one LDG.E.128 / STG.E.128
//   per_vector<T>              elements of T in one vector: 4 floats, 8 halves
//   load_vector(p, v)          per_vector<T> elements at 16-byte-aligned p, as floats
//   store_vector(p, v)         per_vector<T> floats rounded to T, stored at 16-byte-aligned p
//   reads(p...), writes(p...)  the arrays of one map_vec call, each of its own element type
//   map_vec<BATCH>(n, reads(...), writes(...), op)
//       the one driver of the elementwise, conversion, SGD and squared-error kernels: op(a, r) maps
//       the float values a[k] = in[k][i] of element i to r[k], stored to out[k][i].  With no
//       outputs (writes()) op only reads, in a fixed order per thread: a reduction keeps its
//       running sum in op, which map_vec returns (as std::for_each does).  A 1-D grid-stride loop,
//       any grid and block.  Elements go in chunks of MAP_CHUNK = 8 (one 16-byte vector of a
//       16-bit array, two of a float array) from the first element at which EVERY array is
//       16-byte aligned; a scalar head before it and a scalar tail after the last whole chunk.
//       Arrays with no common aligned element (a view offset by one element) go all scalar.
//       Each thread loads BATCH chunks of every input before it stores any, so that many
//       independent loads are in flight; each element is read and written by one thread, which
//       keeps in-place calls (an output that is an input) correct.  Other overlaps: unsupported.
#pragma once

#include "common.cuh"
#include "ptx.cuh"

struct bf16_bits {
    unsigned short bits;
};
struct fp16_bits {
    unsigned short bits;
};

#define HALF_TYPES(X) X(bf16, bf16_bits) X(fp16, fp16_bits)
#define STORAGE_TYPES(X) X(f32, float) HALF_TYPES(X)

// NVRTC has no <type_traits>: the two traits needed here.
template <class A, class B> constexpr bool same_type = false;
template <class A> constexpr bool same_type<A, A> = true;
template <class T, class...> struct first_of {
    using type = T;
};

// ---------------------------------------------------------------- one element
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16_bits v) { return __uint_as_float((unsigned)v.bits << 16); }
__device__ __forceinline__ float to_float(fp16_bits v) { return ptx::fp16_to_f32(v.bits); }

template <class T> __device__ __forceinline__ T from_float(float f)
{
    if constexpr (same_type<T, float>) return f;
    else if constexpr (same_type<T, bf16_bits>) return bf16_bits{ptx::f32_to_bf16(f)};
    else return fp16_bits{ptx::f32_to_fp16(f)};
}

// ---------------------------------------------------------------- one 16-byte vector
#define VECTOR_BYTES 16
template <class T> constexpr int per_vector = VECTOR_BYTES / (int)sizeof(T);

template <class T> __device__ __forceinline__ void load_vector(const T* p, float (&v)[per_vector<T>])
{
    if constexpr (same_type<T, float>) {
        const float4 q = *reinterpret_cast<const float4*>(p);
        v[0] = q.x;
        v[1] = q.y;
        v[2] = q.z;
        v[3] = q.w;
    } else {
        const uint4 q = *reinterpret_cast<const uint4*>(p);
        const unsigned pairs[4] = {q.x, q.y, q.z, q.w};  // element 2i in the low half (little-endian)
        DLGPU_UNROLL
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = to_float(T{(unsigned short)(pairs[i] & 0xffffu)});
            v[2 * i + 1] = to_float(T{(unsigned short)(pairs[i] >> 16)});
        }
    }
}

template <class T> __device__ __forceinline__ unsigned pack_pair(float lo, float hi)
{
    if constexpr (same_type<T, bf16_bits>) return ptx::pack_bf16x2(lo, hi);
    else return ptx::pack_fp16x2(lo, hi);
}

template <class T> __device__ __forceinline__ void store_vector(T* p, const float (&v)[per_vector<T>])
{
    if constexpr (same_type<T, float>) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
        // Through PTX: from a plain uint4 store NVVM emitted 2 of map_vec's 4 batch vectors as four st.global.u32.
        ptx::store_v4(p, make_uint4(pack_pair<T>(v[0], v[1]), pack_pair<T>(v[2], v[3]), pack_pair<T>(v[4], v[5]),
                                    pack_pair<T>(v[6], v[7])));
    }
}

// ---------------------------------------------------------------- chunks of MAP_CHUNK elements
#define MAP_CHUNK 8

template <class T> __device__ __forceinline__ void load_chunk(const void* base, long long first, float (&v)[MAP_CHUNK])
{
    constexpr int V = per_vector<T>;
    const T* p = static_cast<const T*>(base) + first;
    DLGPU_UNROLL
    for (int u = 0; u < MAP_CHUNK / V; ++u) {
        float w[V];
        load_vector(p + u * V, w);
        DLGPU_UNROLL
        for (int e = 0; e < V; ++e) v[u * V + e] = w[e];
    }
}

template <class T> __device__ __forceinline__ void store_chunk(void* base, long long first, const float (&v)[MAP_CHUNK])
{
    constexpr int V = per_vector<T>;
    T* p = static_cast<T*>(base) + first;
    DLGPU_UNROLL
    for (int u = 0; u < MAP_CHUNK / V; ++u) {
        float w[V];
        DLGPU_UNROLL
        for (int e = 0; e < V; ++e) w[e] = v[u * V + e];
        store_vector(p + u * V, w);
    }
}

// ---------------------------------------------------------------- the driver
template <class... T> struct Reads {
    const void* at[sizeof...(T)];
};
template <class... T> struct Writes {
    void* at[sizeof...(T) > 0 ? sizeof...(T) : 1];  // writes(): no outputs, and no zero-length array
};
template <class... T> __device__ __forceinline__ Reads<T...> reads(const T*... p) { return Reads<T...>{{p...}}; }
template <class... T> __device__ __forceinline__ Writes<T...> writes(T*... p) { return Writes<T...>{{p...}}; }

// Array k's work below is written once as a pattern over the type packs: `((f(k), ++k), ...)` runs
// f for k = 0, 1, ... with the k-th type (a comma fold is evaluated left to right), and k is a
// compile-time constant at each step once inlined, so every a[k] stays in registers.
template <int BATCH, class... TI, class... TO, class Op>
__device__ __forceinline__ Op map_vec(long long n, Reads<TI...> in, Writes<TO...> out, Op op)
{
    constexpr int NI = sizeof...(TI), NO = sizeof...(TO);
    constexpr int NR = NO > 0 ? NO : 1;  // the results' array: op's r has one unused slot when NO = 0
    constexpr unsigned long long first_size = sizeof(typename first_of<TI...>::type);
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * blockDim.x;

    // ---- the first element at which every array is 16-byte aligned, if there is one
    long long head = n;
    const unsigned long long phase = address_of(in.at[0]) & 15u;
    if (phase % first_size == 0) {
        const unsigned long long h = ((16u - phase) & 15u) / first_size;
        unsigned long long misaligned = 0;
        int k = 0;
        ((misaligned |= (address_of(in.at[k]) + h * sizeof(TI)) & 15u, ++k), ...);
        k = 0;
        ((misaligned |= (address_of(out.at[k]) + h * sizeof(TO)) & 15u, ++k), ...);
        if (misaligned == 0) head = (long long)h < n ? (long long)h : n;
    }
    const long long chunks = (n - head) / MAP_CHUNK;
    const long long tail_start = head + MAP_CHUNK * chunks;

    auto scalar = [&](long long i) {
        float a[NI], r[NR];
        int k = 0;
        ((a[k] = to_float(static_cast<const TI*>(in.at[k])[i]), ++k), ...);
        op(a, r);
        k = 0;
        ((static_cast<TO*>(out.at[k])[i] = from_float<TO>(r[k]), ++k), ...);
    };
    auto load = [&](long long j, float (&v)[NI][MAP_CHUNK]) {
        int k = 0;
        ((load_chunk<TI>(in.at[k], head + MAP_CHUNK * j, v[k]), ++k), ...);
    };
    // Chunk j, whose inputs `v` are already loaded: compute, then store.
    auto finish = [&](long long j, const float (&v)[NI][MAP_CHUNK]) {
        float r[NR][MAP_CHUNK];
        DLGPU_UNROLL
        for (int c = 0; c < MAP_CHUNK; ++c) {
            float ac[NI], rc[NR];
            DLGPU_UNROLL
            for (int k = 0; k < NI; ++k) ac[k] = v[k][c];
            op(ac, rc);
            DLGPU_UNROLL
            for (int k = 0; k < NO; ++k) r[k][c] = rc[k];
        }
        [[maybe_unused]] int k = 0;
        ((store_chunk<TO>(out.at[k], head + MAP_CHUNK * j, r[k]), ++k), ...);
    };

    // ---- scalar head (or everything, when the arrays have no common aligned start)
    for (long long i = tid; i < head; i += stride) scalar(i);

    // ---- vector body: whole batches, then single chunks
    long long j = tid;
    for (; j + (BATCH - 1) * stride < chunks; j += BATCH * stride) {
        float v[BATCH][NI][MAP_CHUNK];
        DLGPU_UNROLL
        for (int u = 0; u < BATCH; ++u) load(j + u * stride, v[u]);
        DLGPU_UNROLL
        for (int u = 0; u < BATCH; ++u) finish(j + u * stride, v[u]);
    }
    for (; j < chunks; j += stride) {
        float v[NI][MAP_CHUNK];
        load(j, v);
        finish(j, v);
    }

    // ---- scalar tail
    for (long long i = tail_start + tid; i < n; i += stride) scalar(i);
    return op;
}
