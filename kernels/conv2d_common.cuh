// kernels/conv2d_common.cuh -- what the convolution families (conv2d.cu, conv2d_tc.cu) share: the
// geometry, and the implicit-GEMM operand module (each pass as a problem any main loop can run).
//
//   CONV_MASK                         the backward kernels' `flags` bit (the forward's are
//                                     EPILOGUE_BIAS, EPILOGUE_RELU of common.cuh)
//   CONV_STORE_HALF                   the NHWC tensor-core kernels' bit for a 16-bit output
//   CONV_GEOMETRY_PARAMS / _ARGS      the 23 scalar parameters every convolution kernel takes, in
//                                     this order: N, C, H, W (input), K, R, S (filter), P, Q
//                                     (output), stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, and
//                                     four fast divisors (multiplier, shift) for P*Q, Q, R*S, S
//                                     (the kernels divide by them with common.cuh's fast_div)
//   Strided                           a coordinate held divided by a stride, stepped without dividing
//   ConvGeometry, CONV_GEOMETRY       the same parameters as one struct value
//   InputGather                       one output pixel's view of x for the implicit GEMM: the
//                                     element that filter tap kk = (c, r, s) meets, 0 in padding
//   GemmShape, ForwardOps, OneByOneOps, DgradOps, WgradOps, forward_ops/_shape, dgrad_ops/_shape,
//   wgrad_ops/_shape
//                                     each pass as an implicit-GEMM problem for the main loops
//   GatherB                           how both main loops bring B through registers
//   SteppedGatherB, make_gather_b     the same layout through the problems' cursors (the tensor-core loop)
//   FWD_PARAMS, DGRAD_PARAMS, WGRAD_PARAMS   the kernels' parameter lists
//   CONV_PASS_KERNELS(variant, LOOP, config...)
//                                     the forward, 1x1 forward and dgrad kernels of one tile
//                                     configuration of a main loop
#pragma once

#include "common.cuh"
#include "mainloop.cuh"

// Backward kernels: grad_y is replaced by relu_mask(grad_y, y) as it is loaded.  Clear of the
// EPILOGUE_ bits.
#define CONV_MASK 4
// NHWC tensor-core kernels (conv2d_tc.cu) with 16-bit operands: the output is stored in their 16-bit type
// instead of fp32.  Clear of the other bits.
#define CONV_STORE_HALF 8

#define CONV_GEOMETRY_PARAMS                                                                             \
    int N, int C, int H, int W, int K, int R, int S, int P, int Q, int stride_h, int stride_w, int pad_h, \
        int pad_w, int dil_h, int dil_w, unsigned pq_mul, unsigned pq_shift, unsigned q_mul, unsigned q_shift, \
        unsigned rs_mul, unsigned rs_shift, unsigned s_mul, unsigned s_shift
#define CONV_GEOMETRY_ARGS                                                                                   \
    N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, pq_mul, pq_shift, q_mul, q_shift, \
        rs_mul, rs_shift, s_mul, s_shift

// A coordinate v divided by a stride, as v = quot * stride + rem with 0 <= rem < stride (floor division, so a
// negative v has a negative quot), and stepped by a constant d = d.quot * stride + d.rem: the loaders move it
// from tap to tap with an add and a compare where they would otherwise divide at every tap or pixel.
struct Strided {
    int quot, rem;
    __device__ __forceinline__ static Strided of(int v, int stride)
    {
        Strided d{v / stride, v % stride};
        if (d.rem < 0) {  // C++ division truncates toward zero
            d.rem += stride;
            --d.quot;
        }
        return d;
    }
    __device__ __forceinline__ void add(Strided d, int stride)
    {
        quot += d.quot;
        rem += d.rem;
        if (rem >= stride) {
            rem -= stride;
            ++quot;
        }
    }
    __device__ __forceinline__ void subtract(Strided d, int stride)
    {
        quot -= d.quot;
        rem -= d.rem;
        if (rem < 0) {
            rem += stride;
            --quot;
        }
    }
};

// All of CONV_GEOMETRY_PARAMS in one value: `const ConvGeometry geo = CONV_GEOMETRY;`.
struct ConvGeometry {
    int N, C, H, W, K, R, S, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    unsigned pq_mul, pq_shift, q_mul, q_shift, rs_mul, rs_shift, s_mul, s_shift;
};
#define CONV_GEOMETRY {CONV_GEOMETRY_ARGS}

// grad_y[at], masked by y > 0 under CONV_MASK (`masked`): the backward passes' A operand element.
__device__ __forceinline__ float masked_grad(const float* grad_y, const float* y, long long at, bool masked)
{
    const float v = grad_y[at];
    return masked ? relu_mask(v, y[at]) : v;
}

// An NHWC output pixel m (of M) as the gathers of the NHWC kernels see it: the top-left corner (h0, w0) of
// its receptive field and that corner's element offset in x (N, H, W, C); past the last pixel h0 = H, so
// that every tap of the row falls outside the image and reads zeros.
__device__ __forceinline__ void nhwc_corner(const ConvGeometry& g, int m, int M, int& h0, int& w0, long long& corner)
{
    if (m >= M) {
        h0 = g.H;
        w0 = 0;
        corner = 0;
        return;
    }
    const int n = fast_div(m, g.pq_mul, g.pq_shift);
    const int pq = m - n * g.P * g.Q;
    const int p = fast_div(pq, g.q_mul, g.q_shift);
    h0 = g.stride_h * p - g.pad_h;
    w0 = g.stride_w * (pq - p * g.Q) - g.pad_w;
    corner = (((long long)n * g.H + h0) * g.W + w0) * g.C;
}

// ---------------------------------------------------------------- the implicit-GEMM A operand
// Row m of the implicit matrix A (M = N*P*Q rows, C*R*S columns) is output pixel (n, p, q); its
// column kk = (c, r, s) holds x[n, c, p*sh - ph + r*dh, q*sw - pw + s*dw], or 0 in the padding.
// A thread builds this once for its pixel and then asks for any column: the (n, p, q) division is
// paid once per kernel, the (c, r, s) one once per element, by fast_div.
struct InputGather {
    const float* image;  // x + n*C*H*W; null when m is past the last pixel
    int h0, w0;          // top-left input corner of the pixel's receptive field
    int corner;          // h0 * W + w0: image[corner] is (0, h0, w0)

    __device__ __forceinline__ InputGather() : image(nullptr), h0(0), w0(0), corner(0) {}

    __device__ __forceinline__ InputGather(const float* x, int m, int M, const ConvGeometry& g)
    {
        if (m >= M) {  // h0 = H: every tap of the row is outside the image (ForwardOps::a_at relies on it)
            image = nullptr;
            h0 = g.H;
            w0 = corner = 0;
            return;
        }
        const int n = fast_div(m, g.pq_mul, g.pq_shift);
        const int pq = m - n * g.P * g.Q;
        const int p = fast_div(pq, g.q_mul, g.q_shift);
        const int q = pq - p * g.Q;
        image = x + (long long)n * g.C * g.H * g.W;
        h0 = p * g.stride_h - g.pad_h;
        w0 = q * g.stride_w - g.pad_w;
        corner = h0 * g.W + w0;
    }

    // Column kk of this row (kk < C*R*S is the caller's business: pass valid = false past it).
    __device__ __forceinline__ float at(int kk, bool valid, const ConvGeometry& g) const
    {
        if (image == nullptr || !valid) return 0.0f;
        const int c = fast_div(kk, g.rs_mul, g.rs_shift);
        const int rs = kk - c * g.R * g.S;
        const int r = fast_div(rs, g.s_mul, g.s_shift);
        const int s = rs - r * g.S;
        const int h = h0 + r * g.dil_h, w = w0 + s * g.dil_w;
        // One unsigned comparison per axis covers both h < 0 and h >= H.
        if ((unsigned)h >= (unsigned)g.H || (unsigned)w >= (unsigned)g.W) return 0.0f;
        return image[(c * g.H + h) * g.W + w];
    }
};

// ---------------------------------------------------------------- implicit-GEMM problems
// out (M x COLS, stored as images: m = (img, pix), element (m, col) at out[(img*COLS + col)*PLANE
// + pix]) = epilogue(A (M x RED) x B (RED x COLS)).  An operand policy says what A and B are:
//   Ops::Row                    per-thread state for one row of A (built once per kernel)
//   ops.row(m)                  that state (m >= M gives a row of zeros)
//   ops.a(row, kk)              A(m, kk) for RED_BEGIN <= kk < RED
//   ops.b(kk, col)              B(kk, col) for RED_BEGIN <= kk < RED, col < COLS
// and the same elements for the tensor-core loop (conv2d_tc.cu), which divides nothing per element: A's
// reduction index is decoded once per tile of the block into a small table, B's walked by cursors:
//   Ops::kTapTable                        whether A is read through the table (else by index: a(row, kk))
//   Ops::ATap, ops.a_tap(kk)              what every row needs of column kk (16 bytes at most, built by a few
//                                         threads per tile into shared memory and read back by all)
//   ops.a_at(row, tap, ok)                A(m, kk) from the row and kk's ATap (0 when !ok)
//   Ops::kSteppedB                        whether B is read through cursors (SteppedGatherB; else by index)
//   Ops::BColumn, ops.b_column(col)       what a column of B keeps for the whole reduction (held in registers
//                                         when Ops::kHoldColumns, else made again at every tile)
//   Ops::BCursor, ops.b_cursor<STEP>(kk)  a place kk in the reduction, stepped STEP at a time
//   ops.b_next<STEP>(cursor)              kk += STEP (a compare and a carry per digit, no division)
//   ops.b_at(cursor, column)              B(kk, col)
// The simt main loop (conv2d.cu) reads by index.
struct GemmShape {
    int M, COLS, RED;              // rows, columns, end of the reduction
    int PLANE;                     // rows per image of the output
    unsigned plane_mul, plane_shift;
    int RED_BEGIN;                 // start of the reduction (a split's share; 0 when not given)

    // The reduction in tiles of BK steps (none for a wgrad split past the last pixel: its
    // loaders read zeros past RED, and the output is zeros).
    template <int BK> __device__ __forceinline__ int tiles() const { return (RED - RED_BEGIN + BK - 1) / BK; }
};

// ---------------------------------------------------------------- the B operand, through registers
// Both main loops gather B alike: thread t holds tap t % BK of the tile's columns t / BK + j * STEP
// (STEP = THREADS / BK, j < PER), zeros outside the problem.  `issue` loads a tile into `held`
// (early: the loads are in flight during the math), `store` writes it to a shared tile whose
// element (tap, column) sits at tile[tap * TAP_STRIDE + column * COLUMN_STRIDE].
template <int BK, int BN, int THREADS>
struct GatherB {
    static constexpr int STEP = THREADS / BK, PER = BN / STEP;
    static_assert(THREADS % BK == 0 && BN % STEP == 0, "loader layout");
    int tap, column;  // this thread's tap and first column in the tile
    float held[PER];

    __device__ __forceinline__ GatherB() : tap(threadIdx.x % BK), column(threadIdx.x / BK) {}

    template <class Ops> __device__ __forceinline__ void issue(const Ops& ops, const GemmShape& shape, int k0, int n0)
    {
        DLGPU_UNROLL
        for (int j = 0; j < PER; ++j) {
            const int col = n0 + column + j * STEP, kk = k0 + tap;
            held[j] = col < shape.COLS && kk < shape.RED ? ops.b(kk, col) : 0.0f;
        }
    }

    template <int TAP_STRIDE, int COLUMN_STRIDE> __device__ __forceinline__ void store(float* tile) const
    {
        DLGPU_UNROLL
        for (int j = 0; j < PER; ++j) tile[tap * TAP_STRIDE + (column + j * STEP) * COLUMN_STRIDE] = held[j];
    }
};

// GatherB's layout, stepped through the problem's cursors (Ops::BColumn, Ops::BCursor) for a loop that
// issues the tiles once each, in order from RED_BEGIN: the thread's columns are decoded once, its tap
// stepped BK at a time.
template <int BK, int BN, int THREADS, class Ops>
struct SteppedGatherB : GatherB<BK, BN, THREADS> {
    using Layout = GatherB<BK, BN, THREADS>;
    // Ops::kHoldColumns: the columns are decoded once and held (registers), else remade at every tile (where
    // that costs less than holding them).
    typename Ops::BColumn columns[Ops::kHoldColumns ? Layout::PER : 1];
    typename Ops::BCursor cursor;

    __device__ __forceinline__ SteppedGatherB(const Ops& ops, const GemmShape& shape, int n0)
    {
        if constexpr (Ops::kHoldColumns) {
            DLGPU_UNROLL
            for (int j = 0; j < Layout::PER; ++j) columns[j] = ops.b_column(n0 + this->column + j * Layout::STEP);
        }
        cursor = ops.template b_cursor<BK>(shape.RED_BEGIN + this->tap);
    }

    // The tile at k0, the one after the last issued.
    __device__ __forceinline__ void issue(const Ops& ops, const GemmShape& shape, int k0, int n0)
    {
        const bool tap_ok = k0 + this->tap < shape.RED;
        DLGPU_UNROLL
        for (int j = 0; j < Layout::PER; ++j) {
            const int col = n0 + this->column + j * Layout::STEP;
            const bool ok = tap_ok && col < shape.COLS;
            if constexpr (Ops::kHoldColumns)
                this->held[j] = ok ? ops.b_at(cursor, columns[j]) : 0.0f;
            else
                this->held[j] = ok ? ops.b_at(cursor, ops.b_column(col)) : 0.0f;
        }
        ops.template b_next<BK>(cursor);
    }
};

// The B gatherer a problem asks for (Ops::kSteppedB).
template <int BK, int BN, int THREADS, class Ops>
__device__ __forceinline__ auto make_gather_b(const Ops& ops, const GemmShape& shape, int n0)
{
    if constexpr (Ops::kSteppedB)
        return SteppedGatherB<BK, BN, THREADS, Ops>(ops, shape, n0);
    else
        return GatherB<BK, BN, THREADS>();
}

// ---------------------------------------------------------------- operand policies

// Forward: A = x gathered by (pixel, tap), B(kk, k) = w[k, kk] (w's rows are B's columns).
struct ForwardOps {
    const float* x;
    const float* w;
    ConvGeometry g;
    int M, CRS;
    using Row = InputGather;
    __device__ __forceinline__ Row row(int m) const { return InputGather(x, m, M, g); }
    __device__ __forceinline__ float a(const Row& r, int kk) const { return r.at(kk, true, g); }
    __device__ __forceinline__ float b(int kk, int k) const { return w[(long long)k * CRS + kk]; }

    // kk = (c, r, s): its offset from the receptive field's corner and its (dh, dw) from the corner.  B by
    // index: it divides nothing.
    static constexpr bool kTapTable = true, kSteppedB = false;
    // (dh, dw) saturate at 0xffff, 16 bits each: exact while H + pad_h <= 0xffff (then a larger dh is outside
    // every window either way), or while no tap reaches that far; the launcher checks (tc_taps_fit).
    struct ATap {
        int at;
        unsigned dhw;  // dh << 16 | dw
    };
    __device__ __forceinline__ ATap a_tap(int kk) const
    {
        const int c = fast_div(kk, g.rs_mul, g.rs_shift), rs = kk - c * g.R * g.S;
        const int r = fast_div(rs, g.s_mul, g.s_shift), s = rs - r * g.S;
        const int dh = r * g.dil_h, dw = s * g.dil_w;
        return ATap{(c * g.H + dh) * g.W + dw, (unsigned)min(dh, 0xffff) << 16 | (unsigned)min(dw, 0xffff)};
    }
    __device__ __forceinline__ float a_at(const Row& row, const ATap& tap, bool ok) const
    {
        // Past the last pixel h0 = H (InputGather): every tap fails the test.
        const int h = row.h0 + (int)(tap.dhw >> 16), w = row.w0 + (int)(tap.dhw & 0xffff);
        return ok && (unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W ? row.image[row.corner + tap.at] : 0.0f;
    }
};

// Forward, 1x1 filter at stride 1 without padding: A is x itself, A(m, c) = x[n, c, pq].
struct OneByOneOps {
    const float* x;
    const float* w;
    ConvGeometry g;
    int M, CRS;
    struct Row {
        const float* pixel;  // x + n*C*HW + pq, null past the last pixel
    };
    __device__ __forceinline__ Row row(int m) const
    {
        if (m >= M) return Row{nullptr};
        const int n = fast_div(m, g.pq_mul, g.pq_shift);
        return Row{x + (long long)n * g.C * g.H * g.W + (m - n * g.P * g.Q)};
    }
    __device__ __forceinline__ float a(const Row& r, int c) const
    {
        return r.pixel != nullptr ? r.pixel[(long long)c * g.H * g.W] : 0.0f;
    }
    __device__ __forceinline__ float b(int c, int k) const { return w[(long long)k * CRS + c]; }

    // A and B by index: neither divides.
    static constexpr bool kTapTable = false, kSteppedB = false;
    using ATap = int;  // no table
};

// Dgrad: rows are input pixels (n, h, w), columns input channels c, the reduction runs over
// kk = (k, r, s).  A(m, kk) = G[n, k, p, q] (grad_y, masked by y > 0 under CONV_MASK) where
// p*sh = h + ph - r*dh and q*sw = w + pw - s*dw have integer solutions inside the output, else 0;
// B(kk, c) = w[k, c, r, s].  The same sum as the naive gather, as a GEMM.
struct DgradOps {
    const float* grad_y;
    const float* y;
    const float* w;
    ConvGeometry g;
    int M;
    unsigned hw_mul, hw_shift, w_mul, w_shift;
    bool masked;
    struct Row {
        long long image;  // offset of grad_y[n, 0, 0, 0]; -1 past the last pixel
        int hp, wp;       // h + ph, w + pw
        // For a_at: hp = hq * sh + (rems % sh), wp = wq * sw + (rems / sh) (floor division, Strided); hq = -1
        // past the last pixel; grad_y[base] is (n, 0, hq, wq).
        long long base;
        int hq, wq, rems;
    };
    __device__ __forceinline__ Row row(int m) const
    {
        if (m >= M) return Row{-1, 0, 0, 0, -1, 0, 0};
        const int n = fast_div(m, hw_mul, hw_shift);
        const int hw = m - n * g.H * g.W;
        const int h = fast_div(hw, w_mul, w_shift);
        const long long image = (long long)n * g.K * g.P * g.Q;
        const int hp = h + g.pad_h, wp = hw - h * g.W + g.pad_w;
        const Strided hs = Strided::of(hp, g.stride_h), ws = Strided::of(wp, g.stride_w);
        return Row{image, hp, wp, image + (long long)hs.quot * g.Q + ws.quot, hs.quot, ws.quot,
                   hs.rem + g.stride_h * ws.rem};
    }
    __device__ __forceinline__ float a(const Row& r, int kk) const
    {
        if (r.image < 0) return 0.0f;
        const int k = fast_div(kk, g.rs_mul, g.rs_shift);
        const int rs = kk - k * g.R * g.S;
        const int tap_r = fast_div(rs, g.s_mul, g.s_shift);
        const int tap_s = rs - tap_r * g.S;
        int p = r.hp - tap_r * g.dil_h, q = r.wp - tap_s * g.dil_w;
        if (g.stride_h != 1 || g.stride_w != 1) {
            // Negative p or q fail the range test below whatever the quotient; only exact
            // multiples of the stride are read.
            if (p < 0 || q < 0 || p % g.stride_h != 0 || q % g.stride_w != 0) return 0.0f;
            p /= g.stride_h;
            q /= g.stride_w;
        }
        if ((unsigned)p >= (unsigned)g.P || (unsigned)q >= (unsigned)g.Q) return 0.0f;
        return masked_grad(grad_y, y, r.image + ((long long)k * g.P + p) * g.Q + q, masked);
    }
    __device__ __forceinline__ float b(int kk, int c) const
    {
        const int k = fast_div(kk, g.rs_mul, g.rs_shift);
        return w[((long long)k * g.C + c) * g.R * g.S + (kk - k * g.R * g.S)];
    }

    static constexpr bool kTapTable = true, kSteppedB = true;
    // kk = (k, r, s): r*dh = qr * sh + rr and s*dw = qs * sw + rs (Strided).  The row meets output pixel
    // (p, q) = (hq - qr, wq - qs) when its remainders equal the tap's (rems: both pairs in one number), else
    // none: p*sh = h + ph - r*dh has no solution.  `at` is the offset of (k, p, q) from the row's base.
    struct ATap {
        int at, qr, qs, rems;
    };
    __device__ __forceinline__ ATap a_tap(int kk) const
    {
        const int k = fast_div(kk, g.rs_mul, g.rs_shift), rs = kk - k * g.R * g.S;
        const int r = fast_div(rs, g.s_mul, g.s_shift), s = rs - r * g.S;
        const Strided dr = Strided::of(r * g.dil_h, g.stride_h), ds = Strided::of(s * g.dil_w, g.stride_w);
        return ATap{k * g.P * g.Q - dr.quot * g.Q - ds.quot, dr.quot, ds.quot, dr.rem + g.stride_h * ds.rem};
    }
    __device__ __forceinline__ float a_at(const Row& row, const ATap& tap, bool ok) const
    {
        const bool inside = ok && row.rems == tap.rems && (unsigned)(row.hq - tap.qr) < (unsigned)g.P &&
                            (unsigned)(row.wq - tap.qs) < (unsigned)g.Q;
        return inside ? masked_grad(grad_y, y, row.base + tap.at, masked) : 0.0f;
    }
    // B: kk = k * RS + rs held as w's offset of (k, 0, rs) and rs, stepped by STEP = d.quot * RS + d.rem.
    static constexpr bool kHoldColumns = false;
    struct BColumn {
        int c;
    };
    struct BCursor {
        long long at;  // w[at + c * RS] is B(kk, c)
        int rs;
        Strided d;
    };
    __device__ __forceinline__ BColumn b_column(int c) const { return BColumn{c}; }
    template <int STEP> __device__ __forceinline__ BCursor b_cursor(int kk) const
    {
        const int k = fast_div(kk, g.rs_mul, g.rs_shift), rs = kk - k * g.R * g.S;
        return BCursor{(long long)k * g.C * g.R * g.S + rs, rs, Strided::of(STEP, g.R * g.S)};
    }
    template <int STEP> __device__ __forceinline__ void b_next(BCursor& at) const
    {
        const int RS = g.R * g.S;
        at.rs += at.d.rem;
        at.at += (long long)at.d.quot * g.C * RS + at.d.rem;
        if (at.rs >= RS) {  // one more output channel
            at.rs -= RS;
            at.at += (long long)g.C * RS - RS;
        }
    }
    __device__ __forceinline__ float b_at(const BCursor& at, const BColumn& col) const
    {
        return w[at.at + col.c * g.R * g.S];
    }
};

#define FWD_PARAMS const float *x, const float *w, const float *bias, float *y, CONV_GEOMETRY_PARAMS, int flags
#define DGRAD_PARAMS                                                                                           \
    const float *grad_y, const float *y, const float *w, float *grad_x, CONV_GEOMETRY_PARAMS, int flags,       \
        unsigned hw_mul, unsigned hw_shift, unsigned w_mul, unsigned w_shift
#define WGRAD_PARAMS                                                                                           \
    const float *grad_y, const float *y, const float *x, float *partial, CONV_GEOMETRY_PARAMS, int flags,      \
        int pixels_per_split


// Wgrad: rows are output channels k, columns taps (c, r, s), the reduction runs over output
// pixels m = (n, p, q).  A(k, m) = G[n, k, p, q] (masked by y > 0 under CONV_MASK); B(m, (c, r,
// s)) = x at the input element that tap meets from pixel m, 0 in the padding.  The output is
// grad_w itself, row-major K x C*R*S (PLANE = 1).
struct WgradOps {
    const float* grad_y;
    const float* y;
    const float* x;
    ConvGeometry g;
    bool masked;
    struct Row {
        long long channel;  // k*P*Q, the offset of channel k's plane in image 0; -1 past the last
    };
    __device__ __forceinline__ Row row(int k) const { return Row{k < g.K ? (long long)k * g.P * g.Q : -1}; }
    __device__ __forceinline__ float a(const Row& r, int m) const
    {
        if (r.channel < 0) return 0.0f;
        const int n = fast_div(m, g.pq_mul, g.pq_shift);
        return masked_grad(grad_y, y, (long long)n * g.K * g.P * g.Q + r.channel + (m - n * g.P * g.Q), masked);
    }
    __device__ __forceinline__ float b(int m, int kk) const { return InputGather(x, m, m + 1, g).at(kk, true, g); }

    // Pixel m = (n, pq): its offset in grad_y's channel 0.
    static constexpr bool kTapTable = true, kSteppedB = true;
    struct ATap {
        long long at;
    };
    __device__ __forceinline__ ATap a_tap(int m) const
    {
        const int n = fast_div(m, g.pq_mul, g.pq_shift);
        return ATap{(long long)n * g.K * g.P * g.Q + (m - n * g.P * g.Q)};
    }
    __device__ __forceinline__ float a_at(const Row& r, const ATap& tap, bool ok) const
    {
        return ok && r.channel >= 0 ? masked_grad(grad_y, y, tap.at + r.channel, masked) : 0.0f;
    }
    // B: a column's tap (c, r, s) is fixed, decoded once (its offset from the receptive field's
    // corner and its (dh, dw)); the pixel m steps STEP = bn * P*Q + bp * Q + bq at a time, as the corner
    // (h0, w0) of its receptive field and that corner's offset in x, with at most one carry from q into p
    // and one from p into n (bq < Q, bp < P).
    static constexpr bool kHoldColumns = true;  // their decoding divides
    struct BColumn {
        int at, dh, dw;  // x[corner + at] is the tap's element; (h0 + dh, w0 + dw) its position
    };
    struct BCursor {
        long long corner, step, q_carry, p_carry;  // offsets: of (n, h0, w0); per step; per carry
        int h0, w0, h_step, w_step, h_end, w_end;  // the corner; per step; past the last p, q
    };
    __device__ __forceinline__ BColumn b_column(int kk) const
    {
        const int c = fast_div(kk, g.rs_mul, g.rs_shift), rs = kk - c * g.R * g.S;
        const int r = fast_div(rs, g.s_mul, g.s_shift), s = rs - r * g.S;
        const int dh = r * g.dil_h, dw = s * g.dil_w;
        return BColumn{(c * g.H + dh) * g.W + dw, dh, dw};
    }
    template <int STEP> __device__ __forceinline__ BCursor b_cursor(int m) const
    {
        const long long image = (long long)g.C * g.H * g.W;
        const int n = fast_div(m, g.pq_mul, g.pq_shift), pq = m - n * g.P * g.Q;
        const int p = fast_div(pq, g.q_mul, g.q_shift), q = pq - p * g.Q;
        const int bn = fast_div(STEP, g.pq_mul, g.pq_shift), b_pq = STEP - bn * g.P * g.Q;
        const int bp = fast_div(b_pq, g.q_mul, g.q_shift), bq = b_pq - bp * g.Q;
        BCursor at;
        at.h0 = p * g.stride_h - g.pad_h;
        at.w0 = q * g.stride_w - g.pad_w;
        at.corner = n * image + (long long)at.h0 * g.W + at.w0;
        at.h_step = bp * g.stride_h;
        at.w_step = bq * g.stride_w;
        at.step = bn * image + (long long)at.h_step * g.W + at.w_step;
        at.h_end = g.P * g.stride_h - g.pad_h;
        at.w_end = g.Q * g.stride_w - g.pad_w;
        at.q_carry = (long long)g.stride_h * g.W - g.Q * g.stride_w;   // q -= Q, ++p
        at.p_carry = image - (long long)g.P * g.stride_h * g.W;        // p -= P, ++n
        return at;
    }
    template <int STEP> __device__ __forceinline__ void b_next(BCursor& at) const
    {
        at.h0 += at.h_step;
        at.w0 += at.w_step;
        at.corner += at.step;
        if (at.w0 >= at.w_end) {
            at.w0 -= g.Q * g.stride_w;
            at.h0 += g.stride_h;
            at.corner += at.q_carry;
        }
        if (at.h0 >= at.h_end) {
            at.h0 -= g.P * g.stride_h;
            at.corner += at.p_carry;
        }
    }
    __device__ __forceinline__ float b_at(const BCursor& at, const BColumn& col) const
    {
        const int h = at.h0 + col.dh, w = at.w0 + col.dw;
        return (unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W ? x[at.corner + col.at] : 0.0f;
    }
};

// ---------------------------------------------------------------- each pass as a problem
template <class Ops>
__device__ __forceinline__ Ops forward_ops(const float* x, const float* w, const ConvGeometry& g)
{
    return Ops{x, w, g, g.N * g.P * g.Q, g.C * g.R * g.S};
}
__device__ __forceinline__ GemmShape forward_shape(const ConvGeometry& g)
{
    return GemmShape{g.N * g.P * g.Q, g.K, g.C * g.R * g.S, g.P * g.Q, g.pq_mul, g.pq_shift};
}
__device__ __forceinline__ DgradOps dgrad_ops(const float* grad_y, const float* y, const float* w,
                                              const ConvGeometry& g, int flags, unsigned hw_mul, unsigned hw_shift,
                                              unsigned w_mul, unsigned w_shift)
{
    return DgradOps{grad_y, y, w, g, g.N * g.H * g.W, hw_mul, hw_shift, w_mul, w_shift, (flags & CONV_MASK) != 0};
}
// One split of the wgrad reduction: pixels [begin, min(begin + count, N*P*Q)).
__device__ __forceinline__ WgradOps wgrad_ops(const float* grad_y, const float* y, const float* x,
                                              const ConvGeometry& g, int flags)
{
    return WgradOps{grad_y, y, x, g, (flags & CONV_MASK) != 0};
}
__device__ __forceinline__ GemmShape wgrad_shape(const ConvGeometry& g, int begin, int count)
{
    const int pixels = g.N * g.P * g.Q;
    const int end = pixels - begin < count ? pixels : begin + count;
    return GemmShape{g.K, g.C * g.R * g.S, end, 1, 0x80000000u, 31u, begin};  // PLANE 1: fast_div by 1
}
__device__ __forceinline__ GemmShape dgrad_shape(const ConvGeometry& g, unsigned hw_mul, unsigned hw_shift)
{
    return GemmShape{g.N * g.H * g.W, g.C, g.K * g.R * g.S, g.H * g.W, hw_mul, hw_shift};
}

// ---------------------------------------------------------------- kernels by tile configuration
// The forward, 1x1 forward and dgrad kernels of one entry X(BM, BN, THREADS, ...) of a family's
// tile list, on the main loop LOOP<BM, BN, THREADS, ...>(ops, shape, out, bias, flags):
// conv2d_fwd_<variant>_<BM>x<BN>_f32, conv2d_fwd_<variant>_<BM>x<BN>_1x1_f32 and
// conv2d_dgrad_<variant>_<BM>x<BN>_f32.
#define CONV_PASS_KERNELS(variant, LOOP, BM, BN, THREADS, ...)                                                \
    extern "C" __global__ void __launch_bounds__(THREADS) conv2d_fwd_##variant##_##BM##x##BN##_f32(FWD_PARAMS) \
    {                                                                                                       \
        const ConvGeometry geo = CONV_GEOMETRY;                                                             \
        LOOP<BM, BN, THREADS, __VA_ARGS__>(forward_ops<ForwardOps>(x, w, geo), forward_shape(geo), y, bias,  \
                                           flags);                                                          \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                   \
        conv2d_fwd_##variant##_##BM##x##BN##_1x1_f32(FWD_PARAMS)                                            \
    {                                                                                                       \
        const ConvGeometry geo = CONV_GEOMETRY;                                                             \
        LOOP<BM, BN, THREADS, __VA_ARGS__>(forward_ops<OneByOneOps>(x, w, geo), forward_shape(geo), y, bias, \
                                           flags);                                                          \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(THREADS) conv2d_dgrad_##variant##_##BM##x##BN##_f32(DGRAD_PARAMS) \
    {                                                                                                       \
        const ConvGeometry geo = CONV_GEOMETRY;                                                             \
        LOOP<BM, BN, THREADS, __VA_ARGS__>(dgrad_ops(grad_y, y, w, geo, flags, hw_mul, hw_shift, w_mul, w_shift), \
                                           dgrad_shape(geo, hw_mul, hw_shift), grad_x, grad_x, 0);          \
    }
