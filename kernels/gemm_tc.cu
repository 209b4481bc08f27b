// kernels/gemm_tc.cu -- the matrix product on tensor cores (mma.sync, sm_80+), operands read in their storage type.
//
// Same contract as kernels/gemm.cu -- C (M x N, row-major, leading dimension N) = epilogue(op(A) @ op(B)), layouts
// nn/nt/tn/tt, `flags` EPILOGUE_BIAS / EPILOGUE_RELU (common.cuh), any M, N, K >= 1 -- but the operands are stored
// in the type of the build's precision, a ptx::Precision named by a define (ptx.cuh):
//
//   GEMM_TC_PRECISION=tf32  operands fp32, rounded to tf32 (cvt.rna) once per tile; mma.m16n8k8
//   GEMM_TC_PRECISION=bf16  operands bf16 (their 16 bits); mma.m16n8k16
//   GEMM_TC_PRECISION=fp16  operands fp16; mma.m16n8k16
// always accumulating in fp32.  C is fp32, or under GEMM_STORE_HALF (gemm_tile.cuh; bf16 / fp16 builds) the
// operands' 16-bit type.  For a given build, kernel and shape the bits are the same on every run (each output's
// k order is fixed).  fp32 operands at bf16 / fp16, a masked A (linear_backward's ReLU) and rows that are not
// 16-byte aligned reach these kernels through cast_*'s producer pass (kernels/gemm_cast.cu): see "Why a producer pass".
//
//   gemm_tc_<BM>x<BN>_<layout>(a, b, bias, c, M, N, K, lda, ldb, flags)
//       a, b: the operands as stored (A: M x K, or K x M for layouts t*; B: K x N, or N x K for *t), leading
//       dimensions lda, ldb in elements, rows 16-byte aligned (lda * element bytes % 16 == 0, 16-byte aligned
//       base: the launcher checks).  bias: fp32 (N,).  c: fp32 or 16-bit, M x N.
//       Configurations: GEMM_TC_CONFIGS below, X(BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS):
//       128x256: 8 warps (2 x 4) of 64 x 64, 3 stages, one block per SM; 128x128: 4 warps (2 x 2) of 64 x 64,
//       4 stages, two blocks per SM; 64x64: 4 warps (2 x 2) of 32 x 32, 4 stages, for products too small to
//       fill the device with larger tiles.  Block tile BM x BN x BK (BK = 64 bytes of k: 16 floats, 32 halves).
//       Dynamic shared memory STAGES x (A tile + B tile) (dlgpu/cuda/gemm.py: tc_shared_bytes), at most 73 KB:
//       it fits sm_86/89's 99 KB, and two 128x128 blocks fit an SM of sm_80 (164 KB) and sm_90 (228 KB).
//       Grid (ceil(N/BN), ceil(M/BM)), blocks mapped to tiles in bands of 8 tile rows (block_tile).
//
// The main loop is kernels/tc_tile.cuh's: A and B tiles copied 16 bytes at a time by cp.async straight into
// swizzled (16-bit, and tf32 k-contiguous) or padded (tf32 m/n-contiguous) shared tiles, STAGES deep, no
// register staging; fragments by ldmatrix, or one LDS.64 per register pair for tf32 m/n-contiguous tiles;
// tf32 values rounded in place by the thread that copied them, once per tile.
//
// Why a producer pass.  fp32 operands multiplied at bf16 / fp16 are first cast to 16-bit copies (gemm_cast.cu: one
// pass reads 4 and writes 2 bytes per element), and then multiplied from those.  The alternative, converting
// inside this loop, stages every fp32 tile through registers (the previous version of this file: 158-163
// registers, one block per SM) and moves twice the bytes through L2 and shared memory for every block that
// reads a tile (N / BN blocks read each A tile): by the predictions below the 16-bit loop runs about twice as
// fast, and the pass costs 6 bytes per operand element once -- for 4096^3, 201 MB at ~3 TB/s, ~70 us, against
// 0.2-0.6 ms saved.  Only products too small for either to matter (a few microseconds, where launches dominate)
// would do better converting in the loop, and those do not justify a second main loop.  The same pass applies
// linear_backward's ReLU mask to grad_y once for both of its products, and pads rows that are not 16-byte
// aligned.
//
// Predicted rate (NOT YET RUN ON A GPU), H100 SXM (132 SMs, ~1.75 GHz under load), from the sm_90a build (NVRTC
// 13.5; `dlgpu compile --sass --arch sm_90a gemm_tc`), the 128x256 tile that 4096^3 and 8192^3 choose
// (3.9 and 15.5 waves).  Counts are per warp per k-tile of the main loop's SASS (the loop between its
// backward branch and target):
//   registers   bf16/fp16 228-233, tf32 199-228 (128x256, 256 threads: one block, 8 warps per SM); 128x128
//               202-240 at 128 threads (two blocks per SM fit: 2 x 128 x 240 < 64 K); 64x64 96-110.  No
//               spills, no local memory (!LDL !STL below).
//   bf16 nn     264 instructions: 64 HMMA.16816, 16 LDSM.x4, 6 LDGSTS, ~170 integer (addresses, loop, cp.async
//               predicates).  tf32 nn: 445: 64 HMMA.1688, 8 LDSM + 25 LDS.64, 6 LDGSTS, and the once-per-tile
//               rounding of the thread's own 24 elements (24 FSETP, ~150 IMAD / LOP3 with the addressing); tn 488.
//   tensor      mma.sync is reported to reach about 2/3 of Hopper's wgmma peak: ~0.66 HMMA per clock per SM
//               (~650 TFLOP/s bf16, ~325 tf32); one k-tile's 512 HMMA of the SM then take ~780 clocks.
//   issue       two warps per scheduler: bf16 528 of those ~780 slots (68 %); tf32 890-976 (> 780: issue-bound,
//               ~250-270 TFLOP/s at most).
//   shared      per k-tile and SM: 24 KB written by cp.async + 64 KB read by ldmatrix = 113 B/clock of 128 at
//               the mma.sync rate: close to a second limit.
//   L2 -> SM    24 KB per k-tile per SM (85 FLOP per byte at 16 bits, 43 at tf32): at the 5.5-7 TB/s H100's L2
//               is reported to deliver, 470-600 TFLOP/s bf16, 235-300 tf32: the likely limit for 16-bit operands.
// => bf16/fp16 at 4096^3 and 8192^3: 400-500 TFLOP/s, 0.5-0.65x cuBLAS (~750-800), against 150-280 (0.2-0.4x)
// predicted for the register-staged loop this replaced; tf32: 200-260 TFLOP/s, 0.45-0.65x cuBLAS TF32, against
// 130-200.  Issue 16's 0.7x for 16-bit operands is more than mma.sync is likely to give on Hopper (tensor rate,
// L2 at 85 FLOP per byte): gemm_wgmma.cu is the kernel for that on sm_90a; this one is sm_80/86/89's.  The fp32
// operands at bf16 / fp16 add the producer pass (~70 us at 4096^3: ~20 % more time there, ~10 % at 8192^3).  The
// GPU run confirms or refutes this.
//
// dlgpu-build: GEMM_TC_PRECISION=tf32
// dlgpu-build: GEMM_TC_PRECISION=bf16
// dlgpu-build: GEMM_TC_PRECISION=fp16
// dlgpu-sass: gemm_tc_*_nn HMMA LDSM LDGSTS !LDL !STL
// dlgpu-sass: gemm_tc_*_nt HMMA LDSM LDGSTS !LDL !STL
// dlgpu-sass: gemm_tc_*_tt HMMA LDSM LDGSTS !LDL !STL
// dlgpu-sass: gemm_tc_*_tn HMMA LDGSTS !LDL !STL

#include "common.cuh"
#include "gemm_tile.cuh"
#include "ptx.cuh"
#include "tc_tile.cuh"

#ifndef GEMM_TC_PRECISION
#error "gemm_tc.cu is built with -DGEMM_TC_PRECISION=tf32, bf16 or fp16 (a ptx::Precision)"
#endif
constexpr ptx::Precision TC_PRECISION = ptx::Precision::GEMM_TC_PRECISION;
using TcElement = ptx::Operand<TC_PRECISION>::type;

// The tile configurations, largest first: X(BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS), THREADS = 32 *
// WARPS_M * WARPS_N, warp tiles (BM / WARPS_M) x (BN / WARPS_N), MIN_BLOCKS per SM for __launch_bounds__.
// dlgpu/cuda/gemm.py reads this list.
#define GEMM_TC_CONFIGS(X)            \
    X(128, 256, 256, 2, 4, 3, 1)      \
    X(128, 128, 128, 2, 2, 4, 2)      \
    X(64, 64, 128, 2, 2, 4, 1)

// ---------------------------------------------------------------- the kernel body
template <ptx::Precision P, int BM, int BN, int THREADS, int WARPS_M, int WARPS_N, int STAGES, bool kTransA,
          bool kTransB>
__device__ __forceinline__ void tc_gemm(const TcElement* a, const TcElement* b, const float* bias, void* c, int M,
                                        int N, int K, int lda, int ldb, int flags)
{
    // A stored M x K (not transposed) has k-contiguous rows of m; B stored N x K (transposed) rows of n.
    using Loop = TcMainloop<P, BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, !kTransA, kTransB>;
    constexpr int BK = Loop::Op::kBK;
    extern __shared__ float4 tc_shared[];
    const Loop loop(reinterpret_cast<unsigned char*>(tc_shared));

    int m0, n0;
    block_tile<BM, BN>(m0, n0);
    const MatrixLoader<typename Loop::TileA, THREADS> load_a{a, kTransA ? K : M, kTransA ? M : K, lda};
    const MatrixLoader<typename Loop::TileB, THREADS> load_b{b, kTransB ? N : K, kTransB ? K : N, ldb};

    float acc[Loop::MT][Loop::NT][4];
    zero(acc);
    loop.run(acc, (K + BK - 1) / BK, [&](int tile, unsigned char* a_tile, unsigned char* b_tile) {
        const int k0 = tile * BK;
        load_a.issue(a_tile, kTransA ? k0 : m0, kTransA ? m0 : k0);
        load_b.issue(b_tile, kTransB ? n0 : k0, kTransB ? k0 : n0);
    });

    loop.store_to(acc, c, (flags & GEMM_STORE_HALF) != 0, N, m0, n0, M, N, bias, flags);
}

// ---------------------------------------------------------------- named instances
// Every configuration in every plain layout (GEMM_PLAIN_LAYOUTS, gemm_tile.cuh): gemm_tc_128x256_nn, ...
#define GEMM_TC_KERNEL(layout, kTransA, kTransB, kMaskA, BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, MIN_BLOCKS)    \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) gemm_tc_##BM##x##BN##_##layout(                \
        const TcElement* a, const TcElement* b, const float* bias, void* c, int M, int N, int K, int lda, int ldb, \
        int flags)                                                                                                \
    {                                                                                                             \
        tc_gemm<TC_PRECISION, BM, BN, THREADS, WARPS_M, WARPS_N, STAGES, kTransA, kTransB>(a, b, bias, c, M, N, K,  \
                                                                                          lda, ldb, flags);       \
    }
#define GEMM_TC_LAYOUTS(...) GEMM_PLAIN_LAYOUTS(GEMM_TC_KERNEL, __VA_ARGS__)
GEMM_TC_CONFIGS(GEMM_TC_LAYOUTS)
