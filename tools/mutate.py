#!/usr/bin/env python3
"""Mutation testing of the kernel tests: plant one plausible bug at a time, see whether a test fails.

Each mutant is a text edit of one file in kernels/ (a search text that must occur exactly once,
its replacement, and why the edit is a bug a kernel author could make).  For each mutant the tool
copies kernels/ to a scratch folder, applies the edit there, points the package at it
($DLGPU_KERNELS_DIR) and runs the tests that cover the mutant's kernel family (TESTS below),
stopping at the first failure.  A mutant is killed when a test fails, survives when every test
passes; a run that errors (pytest cannot collect, or runs past --timeout) is reported apart.

    python tools/mutate.py                      every mutant, a summary table
    python tools/mutate.py --family softmax     one family
    python tools/mutate.py --only NAME ...      named mutants
    python tools/mutate.py --list               the mutants, no runs
    python tools/mutate.py --json out.json      also a machine-readable record
    python tools/mutate.py --repo PATH          another checkout's kernels and tests (its own
                                                harness; test files it lacks are skipped)

It is slow (every mutant rebuilds its family for the harness, plain and sanitized, and runs the
family's tests): run it under `nice`, one at a time.  Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tests that cover each kernel family, as pytest arguments (a file, or a file and a -k
# expression), cheapest and likeliest to fail first; a run stops at the first failure.  The one
# place to update when test files move.
TESTS: dict[str, list[list[str]]] = {
    "elementwise": [
        ["tests/test_mutation_killers.py", "-k", "elementwise"],
        ["tests/test_elementwise.py", "-k", "harness or kernels_match"],
    ],
    "sgd": [
        ["tests/test_mutation_killers.py", "-k", "sgd"],
        ["tests/test_sgd.py", "-k", "harness or kernels_match"],
    ],
    "bias_grad": [
        ["tests/test_mutation_killers.py", "-k", "bias_grad"],
        ["tests/test_bias_grad.py", "-k", "harness or kernels_match"],
    ],
    "softmax": [
        ["tests/test_mutation_killers.py", "-k", "softmax"],
        ["tests/test_softmax.py", "-k", "harness or kernels_match"],
    ],
    "mse": [
        ["tests/test_mse.py", "-k", "harness or kernels_match"],
    ],
    "pool": [
        ["tests/test_mutation_killers.py", "-k", "pool"],
        ["tests/test_pool.py", "-k", "harness or kernels_match"],
    ],
    "gemm_simt": [
        ["tests/test_gemm.py", "-k", "simt and not kernels_match"],
        ["tests/test_mutation_killers.py", "-k", "gemm_simt"],
        ["tests/test_gemm.py", "-k", "kernels_match and gemm_simt"],
    ],
    "gemm_tc": [
        ["tests/test_gemm.py", "-k", "(tc- or tc_) and not kernels_match"],
        ["tests/test_mutation_killers.py", "-k", "gemm_tc"],
        ["tests/test_gemm.py", "-k", "kernels_match and gemm_tc"],
    ],
    "conv2d_simt": [
        ["tests/test_conv2d.py", "-k", "simt and not kernels_match"],
        ["tests/test_mutation_killers.py", "-k", "conv2d_simt"],
        ["tests/test_conv2d.py", "-k", "kernels_match and conv2d_simt"],
    ],
    "conv2d_tc": [
        ["tests/test_conv2d.py", "-k", "taps_step_across"],
        ["tests/test_conv2d.py", "-k", "tc- and not kernels_match"],
        ["tests/test_conv2d.py", "-k", "nhwc and not kernels_match and not gpu"],
        ["tests/test_mutation_killers.py", "-k", "conv2d_tc"],
        ["tests/test_conv2d.py", "-k", "kernels_match and conv2d_tc"],
    ],
    "conv2d_wgrad": [
        ["tests/test_conv2d.py", "-k", "wgrad and not kernels_match"],
        ["tests/test_mutation_killers.py", "-k", "wgrad"],
        ["tests/test_conv2d.py", "-k", "kernels_match and (conv2d_simt or conv2d_tc)"],
    ],
    "gemm_wgmma": [
        ["tests/test_gemm_wgmma.py"],
    ],
    "conv2d_wgmma": [
        ["tests/test_conv2d_wgmma.py", "-k", "matches_the_reference or take_this_variant"],
        ["tests/test_conv2d.py", "-k", "kernels_match and conv2d_wgmma"],
    ],
    "ptx": [
        ["tests/test_harness.py", "-k", "mma or ldmatrix or cp_async"],
        ["tests/test_gemm.py", "-k", "tc-"],
        ["tests/test_conv2d.py", "-k", "tc-"],
    ],
}


@dataclass(frozen=True)
class Mutant:
    name: str
    family: str  # a key of TESTS
    file: str    # in kernels/
    search: str  # occurs exactly once in the file
    replace: str
    why: str

    def apply(self, kernels: Path) -> None:
        """Edit the copy of kernels/ in `kernels` (raises if the search text is not there once)."""
        path = Path(kernels) / self.file
        text = path.read_text()
        count = text.count(self.search)
        if count != 1:
            raise ValueError(f"mutant {self.name}: its search text occurs {count} times in {self.file}")
        path.write_text(text.replace(self.search, self.replace))


M = Mutant


def _in_each_ring(name: str, text: str, replacement: str, why: str) -> tuple[Mutant, ...]:
    """One mutant of kernels/wgmma_tile.cuh's shared ring per family built on it (gemm_wgmma, conv2d_wgmma)."""
    return tuple(M(f"{prefix}_{name}", family, "wgmma_tile.cuh", text, replacement, why)
                 for prefix, family in (("wgmma", "gemm_wgmma"), ("conv_wgmma", "conv2d_wgmma")))


MUTANTS: tuple[Mutant, ...] = (
    # ---------------------------------------------------------------- the shared main loop (mainloop.cuh)
    M("gemm_simt_refill_before_barrier", "gemm_simt", "mainloop.cuh",
      "    for (int t = 0; t < tiles; ++t) {\n        const int next = t + STAGES - 1;\n"
      "        if (next < tiles) issue(next, next % STAGES);\n        if constexpr (kAsync) ptx::cp_async_commit();\n"
      "        compute(t % STAGES);\n"
      "        // Registers -> the stage tile t - 1 occupied (every thread left it before the last barrier).\n"
      "        if (next < tiles) store(next % STAGES);\n",
      "    if (STAGES - 1 < tiles) issue(STAGES - 1, STAGES - 1);\n    for (int t = 0; t < tiles; ++t) {\n"
      "        const int next = t + STAGES - 1;\n        if constexpr (kAsync) ptx::cp_async_commit();\n"
      "        compute(t % STAGES);\n        if (next < tiles) store(next % STAGES);\n"
      "        if (next + 1 < tiles) issue(next + 1, (next + 1) % STAGES);\n",
      "the next refill issued before the barrier that frees its stage (issue 13's case, in the shared loop)"),
    M("mainloop_wait_group", "gemm_tc", "mainloop.cuh",
      "        if constexpr (kAsync) ptx::cp_async_wait<STAGES - 2>();\n        if (t + 1 < tiles) landed(",
      "        if constexpr (kAsync) ptx::cp_async_wait<STAGES - 1>();\n        if (t + 1 < tiles) landed(",
      "a wrong wait_group count: the tile about to be read may still be in flight"),
    M("mainloop_dropped_barrier", "gemm_simt", "mainloop.cuh",
      "        if (t + 1 < tiles) landed((t + 1) % STAGES);\n        __syncthreads();\n    }\n",
      "        if (t + 1 < tiles) landed((t + 1) % STAGES);\n    }\n",
      "a dropped barrier: a tile is read before other threads' stores are visible, a stage refilled while read"),
    M("mainloop_dropped_prologue_barrier", "conv2d_simt", "mainloop.cuh",
      "    if (0 < tiles) landed(0);\n    __syncthreads();\n    // ---- main loop",
      "    if (0 < tiles) landed(0);\n    // ---- main loop",
      "the prologue's barrier dropped: the first tile is read before every thread stored its part"),
    # ---------------------------------------------------------------- gemm, CUDA cores
    M("gemm_simt_quadrant_offset", "gemm_simt", "gemm.cu",
      "fma_tile<BK, SA, SB, 16, 32>(acc, a_tiles[stage] + wm, b_tiles[stage] + wn)",
      "fma_tile<BK, SA, SB, 8, 32>(acc, a_tiles[stage] + wm, b_tiles[stage] + wn)",
      "the thread tile's second A quadrant read from the wrong rows"),
    M("gemm_simt_epilogue_guard", "gemm_simt", "gemm.cu",
      "        if (m >= M) continue;\n        DLGPU_UNROLL\n        for (int half = 0; half < 2; ++half) {",
      "        if (m > M) continue;\n        DLGPU_UNROLL\n        for (int half = 0; half < 2; ++half) {",
      "a bounds guard off by one: row M of C is written"),
    M("gemm_simt_padding", "gemm_simt", "gemm.cu",
      "#define SIMT_PAD 4", "#define SIMT_PAD 2",
      "padding that breaks the rows' 16-byte alignment (float4 and cp.async need it)"),
    M("gemm_tile_row_guard", "gemm_simt", "gemm_tile.cuh",
      "const bool row_ok = global_row < rows;", "const bool row_ok = global_row <= rows;",
      "the operand loader's row guard off by one: a row past the matrix is loaded"),
    M("gemm_raster_order", "gemm_simt", "gemm_tile.cuh",
      "tile_n = in_band / band_rows;", "tile_n = in_band / GEMM_GROUP_ROWS;",
      "the grouped raster order divides by the full band in a short last band: tiles computed twice or never"),
    # ---------------------------------------------------------------- gemm, tensor cores (tc_tile.cuh's main loop)
    M("gemm_tc_b_registers_swapped", "gemm_tc", "tc_tile.cuh",
      "            bf[j][1] = r[1];\n            bf[j + 1][0] = r[2];\n",
      "            bf[j][1] = r[2];\n            bf[j + 1][0] = r[1];\n",
      "two 16-bit B fragment registers from ldmatrix.x4 swapped"),
    M("gemm_tc_swizzle", "gemm_tc", "tc_tile.cuh",
      "return row * kRowBytes + ((chunk ^ ((row / kPhase) & kMask)) * 16);",
      "return row * kRowBytes + ((chunk | ((row / kPhase) & kMask)) * 16);",
      "a wrong swizzle (OR for XOR): two chunks of a row land in one place"),
    M("gemm_tc_epilogue_row", "gemm_tc", "tc_tile.cuh",
      "(kPermA ? 2 * g + h : g + 8 * h);", "(kPermA ? 2 * g + h : 2 * g + h);",
      "the accumulator-to-row mapping of the mma fragment wrong"),
    M("gemm_tc_k_step", "gemm_tc", "tc_tile.cuh",
      "for (int ks = 0; ks < Op::kBK; ks += ptx::mma_k<P>) {",
      "for (int ks = 0; ks < Op::kBK; ks += 2 * ptx::mma_k<P>) {",
      "the k loop steps over every other mma: half the reduction is skipped"),
    # ---------------------------------------------------------------- conv2d, CUDA cores
    M("conv_padding_sign", "conv2d_simt", "conv2d_common.cuh",
      "        h0 = p * g.stride_h - g.pad_h;", "        h0 = p * g.stride_h + g.pad_h;",
      "a padding sign: the receptive field shifted down instead of up"),
    M("conv_stride_axis", "conv2d_simt", "conv2d_common.cuh",
      "        w0 = q * g.stride_w - g.pad_w;", "        w0 = q * g.stride_h - g.pad_w;",
      "a stride on the wrong axis"),
    M("conv_tc_wgrad_cursor_padding", "conv2d_tc", "conv2d_common.cuh",
      "at.h0 = p * g.stride_h - g.pad_h;", "at.h0 = p * g.stride_h + g.pad_h;",
      "the tensor-core wgrad's pixel cursor starts with the padding's sign flipped"),
    M("conv_b_guard", "conv2d_simt", "conv2d_common.cuh",
      "held[j] = col < shape.COLS && kk < shape.RED ? ops.b(kk, col) : 0.0f;",
      "held[j] = col <= shape.COLS && kk < shape.RED ? ops.b(kk, col) : 0.0f;",
      "a bounds guard off by one: a filter column past K is loaded"),
    M("conv_simt_vector_store", "conv2d_simt", "conv2d.cu",
      "const bool vector_out = shape.PLANE % 4 == 0 && address_of(out) % 16 == 0;",
      "const bool vector_out = shape.PLANE % 2 == 0 && address_of(out) % 16 == 0;",
      "float4 output stores when a quad of pixels may straddle two images"),
    M("conv_simt_row_gap", "conv2d_simt", "conv2d.cu",
      "fma_tile<BK, SA, SB, BM / 2, BN / 2>(acc, a_tiles[stage] + tm * 4, b_tiles[stage] + tn * 4);",
      "fma_tile<BK, SA, SB, BM / 4, BN / 2>(acc, a_tiles[stage] + tm * 4, b_tiles[stage] + tn * 4);",
      "the thread tile's second row half read from the wrong rows"),
    M("conv_dgrad_stride_test", "conv2d_simt", "conv2d_common.cuh",
      "if (p < 0 || q < 0 || p % g.stride_h != 0 || q % g.stride_w != 0) return 0.0f;",
      "if (p < 0 || q < 0 || p % g.stride_h != 0 || q % g.stride_h != 0) return 0.0f;",
      "dgrad's stride divisibility test on the wrong axis"),
    M("conv_dilation_axis", "conv2d_simt", "conv2d_common.cuh",
      "const int h = h0 + r * g.dil_h, w = w0 + s * g.dil_w;", "const int h = h0 + r * g.dil_h, w = w0 + s * g.dil_h;",
      "a dilation on the wrong axis"),
    # ---------------------------------------------------------------- conv2d wgrad (split reduction)
    M("wgrad_finish_dropped_split", "conv2d_wgrad", "conv2d.cu",
      "for (int z = 0; z < splits; ++z) sum += partial[z * count + i];",
      "for (int z = 0; z < splits - 1; ++z) sum += partial[z * count + i];",
      "a dropped split in the wgrad sum"),
    M("wgrad_simt_split_overlap", "conv2d_wgrad", "conv2d.cu",
      "const int end = M - begin < pixels_per_split ? M : begin + pixels_per_split;",
      "const int end = M - begin < pixels_per_split ? M : begin + pixels_per_split + 1;",
      "a split's pixel range runs one pixel into the next split's"),
    M("wgrad_tc_split_slot", "conv2d_wgrad", "conv2d_tc.cu",
      "float* const out = partial + (long long)blockIdx.z * K * C * R * S;",
      "float* const out = partial + (long long)blockIdx.z * K * C * R;",
      "a split's partial sums written at the wrong offset"),
    # ---------------------------------------------------------------- conv2d, tensor cores
    M("conv_tc_epilogue_guard", "conv2d_tc", "conv2d_tc.cu",
      "                    if (col < shape.COLS)\n                        pixel[",
      "                    if (col <= shape.COLS)\n                        pixel[",
      "the epilogue's column guard off by one: channel K is written"),
    M("conv_tc_k_step", "conv2d_tc", "conv2d_tc.cu",
      "for (int ks = 0; ks < BK; ks += ptx::mma_k<P>) {", "for (int ks = 0; ks < BK; ks += 2 * ptx::mma_k<P>) {",
      "the k loop steps over every other mma: half the taps are skipped"),
    M("conv_tc_a_rows", "conv2d_tc", "conv2d_tc.cu",
      "return as[(wm0 + i * 16 + r) * ST + ks + k];", "return as[(wm0 + i * 8 + r) * ST + ks + k];",
      "a warp's second mma tile of A read from overlapping rows"),
    M("conv_tc_tap_table_slot", "conv2d_tc", "conv2d_tc.cu",
      "decode_taps(tile + 1);", "decode_taps(tile + 2);",
      "the NCHW tap table's next tile decoded into the slot still being read: stale and raced taps"),
    M("conv_tc_wgrad_pixel_wrap", "conv2d_tc", "conv2d_common.cuh",
      "if (at.w0 >= at.w_end) {", "if (at.w0 > at.w_end) {",
      "the NCHW wgrad's pixel cursor carries from q into p one pixel late"),
    M("conv_tc_dgrad_remainders", "conv2d_tc", "conv2d_common.cuh",
      "dr.quot, ds.quot, dr.rem + g.stride_h * ds.rem};", "dr.quot, ds.quot, dr.rem + g.stride_w * ds.rem};",
      "the NCHW dgrad tap's stride remainders combined with the wrong stride: rows meet the wrong taps"),
    M("conv_tc_dgrad_b_carry", "conv2d_tc", "conv2d_common.cuh",
      "if (at.rs >= RS) {  // one more output channel", "if (at.rs > RS) {  // one more output channel",
      "the NCHW dgrad's weight cursor carries into the next output channel one tap late"),
    M("conv_nhwc_dgrad_rewind", "conv2d_tc", "conv2d_tc.cu",
      "wr[i].add(rewind, g.stride_w);", "wr[i].add(right, g.stride_w);",
      "the NHWC dgrad's w coordinate steps back one tap, not to s = 0, at a new filter row"),
    M("conv_nhwc_wgrad_carry", "conv2d_tc", "conv2d_tc.cu",
      "if (wb[i] >= w_end) {", "if (wb[i] > w_end) {",
      "the NHWC wgrad's pixel stepping carries from q into p one pixel late"),
    # ---------------------------------------------------------------- elementwise (and the vector driver)
    M("elementwise_float4_tail", "elementwise", "storage.cuh",
      "const long long chunks = (n - head) / MAP_CHUNK;",
      "const long long chunks = (n - head + MAP_CHUNK - 1) / MAP_CHUNK;",
      "the vector body rounds its chunk count up: the last chunk runs past the end"),
    M("elementwise_tail_start", "elementwise", "storage.cuh",
      "for (long long i = tail_start + tid; i < n; i += stride) scalar(i);",
      "for (long long i = tail_start + 1 + tid; i < n; i += stride) scalar(i);",
      "the scalar tail skips its first element"),
    M("elementwise_relu_nan", "elementwise", "elementwise.cu",
      "return x < 0.0f ? 0.0f : x;", "return x > 0.0f ? x : 0.0f;",
      "ReLU that turns NaN into 0 (the contract: NaN passes)"),
    M("elementwise_tanh_backward", "elementwise", "elementwise.cu",
      "return g * ((1.0f - y) * (1.0f + y));", "return g * (1.0f - y * y);",
      "tanh' as 1 - y*y: cancellation near |y| = 1"),
    M("elementwise_sigmoid_overflow", "elementwise", "elementwise.cu",
      "return 1.0f / (1.0f + expf(-x));", "return expf(x) / (1.0f + expf(x));",
      "sigmoid as e^x / (1 + e^x): inf / inf = NaN for large x"),
    # ---------------------------------------------------------------- sgd
    M("sgd_vector_guard", "sgd", "storage.cuh",
      "for (; j + (BATCH - 1) * stride < chunks; j += BATCH * stride) {",
      "for (; j + (BATCH - 1) * stride <= chunks; j += BATCH * stride) {",
      "the vector batch's guard off by one: a chunk past the body is read and written"),
    M("sgd_plain_decay", "sgd", "sgd.cu",
      "return a[0] - lr * (a[1] * unscale + weight_decay * a[0]);", "return a[0] - lr * (a[1] * unscale);",
      "plain SGD drops the weight decay"),
    M("sgd_momentum_order", "sgd", "sgd.cu",
      "        r[1] = velocity(a);\n        r[0] = a[0] - lr * r[1];\n    }\n",
      "        r[0] = a[0] - lr * a[2];\n        r[1] = velocity(a);\n    }\n",
      "the parameter updated with last step's velocity"),
    # ---------------------------------------------------------------- bias_grad
    M("bias_grad_dropped_barrier", "bias_grad", "bias_grad.cu",
      "        column_sums[warp][slot] = acc[k];\n    }\n    __syncthreads();\n",
      "        column_sums[warp][slot] = acc[k];\n    }\n",
      "a dropped barrier before the warps' column sums are combined"),
    M("bias_grad_row_guard", "bias_grad", "bias_grad.cu",
      "for (long long r = row_begin + warp; r < row_end; r += BIAS_GRAD_WARPS) {",
      "for (long long r = row_begin + warp; r <= row_end; r += BIAS_GRAD_WARPS) {",
      "the scalar path's row guard off by one: the next chunk's first row counted twice"),
    M("bias_grad_finish_stride", "bias_grad", "bias_grad.cu",
      "sum += partial[chunk * row_len + channel];", "sum += partial[chunk * spatial + channel];",
      "the finishing pass strides over chunks by the wrong length"),
    # ---------------------------------------------------------------- softmax
    M("softmax_no_max", "softmax", "softmax.cu",
      "v[k] = column < classes ? expf(v[k] - row_max) : 0.0f;", "v[k] = column < classes ? expf(v[k]) : 0.0f;",
      "softmax without its max subtraction"),
    M("mse_backward_sign", "mse", "mse.cu",
      "r[0] = (a[0] - a[1]) * scale;", "r[0] = (a[1] - a[0]) * scale;",
      "the squared error's gradient points the wrong way"),
    M("mse_partial_forgets_the_run", "mse", "mse.cu",
      "run += d * d;", "run = d * d;",
      "each thread's partial sum keeps only its last element"),
    M("mse_finish_drops_a_block", "mse", "mse.cu",
      "for (int b = threadIdx.x; b < blocks; b += blockDim.x) run += (double)partial[b];",
      "for (int b = threadIdx.x; b < blocks - 1; b += blockDim.x) run += (double)partial[b];",
      "the loss leaves out the last block's partial sum"),
    M("softmax_label_guard", "softmax", "softmax.cu",
      "if (label < 0 || label >= (Label)classes) {\n        report_bad_index(error, DLGPU_ERROR_SOFTMAX_LABEL,",
      "if (label < 0 || label > (Label)classes) {\n        report_bad_index(error, DLGPU_ERROR_SOFTMAX_LABEL,",
      "the label guard off by one: label == classes reads past the row"),
    M("softmax_backward_onehot", "softmax", "softmax.cu",
      "(p[e] - (PV * j + e == hot ? 1.0f : 0.0f)) * inv_rows",
      "(p[e] - (PV * j + e + 1 == hot ? 1.0f : 0.0f)) * inv_rows",
      "the vector path's one-hot lands on the wrong column"),
    M("softmax_mean_batch_index", "softmax", "softmax.cu",
      "batch[k] = row_loss[r + k * blockDim.x];", "batch[k] = row_loss[r + k];",
      "the mean's batched loads read neighbouring rows, not one block apart: rows summed twice, others never"),
    M("common_warp_sum_half", "softmax", "common.cuh",
      "for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(DLGPU_FULL_WARP, v, offset);",
      "for (int offset = 8; offset > 0; offset >>= 1) v += __shfl_xor_sync(DLGPU_FULL_WARP, v, offset);",
      "the warp sum's butterfly starts at 8: only half the warp is summed"),
    # ---------------------------------------------------------------- pool
    M("pool_padding_sign", "pool", "pool.cu",
      "const int h0 = p * sh - ph;", "const int h0 = p * sh + ph;",
      "a padding sign in the forward window"),
    M("pool_tie_break", "pool", "pool.cu",
      "(best == best && !(v <= best))", "(best == best && !(v < best))",
      "ties go to the last element, not the first (the reference's argmax)"),
    M("pool_planes_dropped_syncwarp", "pool", "pool.cu",
      "            if (leader) gx[target] += same;\n            // The next round may update the same element "
      "from another lane.\n            __syncwarp();\n",
      "            if (leader) gx[target] += same;\n",
      "a dropped __syncwarp between rounds that update the same gradient element"),
    M("pool_backward_window", "pool", "pool.cu",
      "const int p_last = min(fast_div(h + ph, sh_mul, sh_shift), P - 1);",
      "const int p_last = min(fast_div(h + ph, sh_mul, sh_shift), P - 2);",
      "the backward's last window row off by one"),
    M("pool_forward_column", "pool", "pool.cu",
      "const int q = o - p * Q;", "const int q = o - p * P;",
      "the forward's column from the output's row count: right only for square outputs"),
    M("pool_backward_divisor", "pool", "pool.cu",
      "const int p_last = min(fast_div(h + ph, sh_mul, sh_shift), P - 1);",
      "const int p_last = min(fast_div(h + ph, sw_mul, sw_shift), P - 1);",
      "the backward's window rows divided by the column stride: right only for square strides"),
    M("pool_backward_x_stride", "pool", "pool.cu",
      "            gx[me] = from_float<T>(sum);\n        }\n",
      "            gx[me] = from_float<T>(sum);\n            me += step;\n        }\n",
      "the backward's x loop steps twice: a plane wider than the grid leaves elements unwritten"),
    M("pool_plane_stride", "pool", "pool.cu",
      "        T* gx = grad_x + plane * per_plane;\n",
      "        T* gx = grad_x + plane * per_plane;\n        if (plane > blockIdx.y) break;\n",
      "the backward leaves after its first plane: planes beyond gridDim.y are never written"),
    # ---------------------------------------------------------------- gemm, wgmma + TMA (sm_90a)
    # ---------------------------------------------------------------- conv2d on wgmma (sm_90a)
    M("conv_wgmma_noinc_count", "conv2d_wgmma", "conv2d_wgmma.cu",
      "static constexpr int kArrivals = CONV_WGMMA_PRODUCER_THREADS + 1;",
      "static constexpr int kArrivals = CONV_WGMMA_PRODUCER_THREADS;",
      "the forward's `full` barrier expects one arrival too few: a stage completes before the last copies land"),
    M("conv_wgmma_padding_not_zero", "conv2d_wgmma", "conv2d_wgmma.cu",
      "ok ? x + (corner[i] + offset) : x, ok ? 16u : 0u", "ok ? x + (corner[i] + offset) : x, 16u",
      "a padding tap copies x's first chunk instead of zeros"),
    M("conv_wgmma_dgrad_b_trans", "conv2d_wgmma", "conv2d_wgmma.cu",
      "Gather::kBNMajor ? 1 : 0>", "0>",
      "dgrad's N-major B tile read as K-major"),
    M("conv_wgmma_dgrad_k_tail", "conv2d_wgmma", "conv2d_wgmma.cu",
      "const bool ok = c < g.C && tap.c + first + i * kStepB < g.K;", "const bool ok = c < g.C;",
      "dgrad reads filters past K in a partial block of output channels (the next tap's rows, or past w)"),
    M("conv_wgmma_no_proxy_fence", "conv2d_wgmma", "conv2d_wgmma.cu",
      "            ptx::fence_proxy_async_shared();  // the producers' cp.async writes, visible to wgmma's reads\n", "",
      "the consumers' wgmma reads the gathered stage with no fence.proxy.async after the cp.async writes"),
    M("wgmma_split_no_writer_fence", "gemm_wgmma", "gemm_wgmma.cu",
      "    for (int i = 0; i < BN / 2; ++i) mine[i * 32 + lane] = acc[i];\n    __threadfence();\n",
      "    for (int i = 0; i < BN / 2; ++i) mine[i * 32 + lane] = acc[i];\n",
      "split-K: a warp counts itself in before its partial sums are ordered before the count"),
    M("wgmma_store_no_proxy_fence", "gemm_wgmma", "wgmma_tile.cuh",
      "        ptx::fence_proxy_async_shared();  // each writer's stores, visible to the TMA unit\n", "",
      "the epilogue's TMA store reads the staging box with no fence.proxy.async after the stores"),
    # The ring's steps (StageRing) are shared by gemm_wgmma.cu and conv2d_wgmma.cu: each bug in them is
    # planted once per family (_in_each_ring), as each family's tests must catch it.
    *_in_each_ring("no_mbarrier_init_fence", "        ptx::fence_mbarrier_init();\n", "",
                   "the ring's mbarrier inits are not published before TMA (and the peer CTA) signal them"),
    *_in_each_ring("empty_parity", "ptx::mbarrier_wait(&empty[stage], phase ^ 1);",
                   "ptx::mbarrier_wait(&empty[stage], phase);",
                   "the producer waits on the wrong parity of the stage's empty barrier"),
    *_in_each_ring("release_current_stage", "if (has_previous && releases) release(previous);",
                   "if (has_previous && releases) release(stage);",
                   "a consumer releases the stage its in-flight wgmma still reads"),
    *_in_each_ring("wait_count", "        ptx::wgmma_commit();\n        ptx::wgmma_wait<1>();\n",
                   "        ptx::wgmma_commit();\n        ptx::wgmma_wait<2>();\n",
                   "a wrong wgmma.wait_group count: the released stage may still be read"),
    *_in_each_ring("release_own_cta_only",
                   "for (int r = 0; r < CLUSTER; ++r) ptx::mbarrier_arrive_cluster(&empty[s], r);",
                   "ptx::mbarrier_arrive(&empty[s]);",
                   "a clustered consumer releases the stage in its own CTA only: the peer's producer never "
                   "refills it"),
    # ---------------------------------------------------------------- ptx wrappers (the generic part)
    M("ptx_pack_half2_order", "ptx", "ptx.cuh",
      "if constexpr (P == Precision::bf16) return pack_bf16x2(lo, hi);",
      "if constexpr (P == Precision::bf16) return pack_bf16x2(hi, lo);",
      "the bf16 pair packed high half first"),
    M("ptx_mma_precision", "ptx", "ptx.cuh",
      "else if constexpr (P == Precision::bf16) mma_m16n8k16_bf16(d, a, b, d);",
      "else if constexpr (P == Precision::bf16) mma_m16n8k16_fp16(d, a, b, d);",
      "bf16 operands fed to the fp16 mma"),
    M("ptx_a_fragment_swap", "ptx", "ptx.cuh",
      "        const int row = g + 8 * (r % 2);\n", "        const int row = g + 8 * (r / 2);\n",
      "two A fragment registers swapped (rows g + 8 and columns k + 4 / k + 8 exchanged)"),
    M("ptx_b_half_order", "ptx", "ptx.cuh",
      "return pack_half2<P>(at(k, g), at(k + 1, g));", "return pack_half2<P>(at(k + 1, g), at(k, g));",
      "the two 16-bit halves of a B register in the wrong order"),
)


def mutant(name: str) -> Mutant:
    """The mutant called `name`."""
    for m in MUTANTS:
        if m.name == name:
            return m
    raise KeyError(f"no mutant {name!r}")


@dataclass
class Result:
    name: str
    family: str
    status: str  # killed, survived, error
    seconds: float
    killed_by: str = ""  # the pytest arguments of the run that failed
    detail: str = ""     # the first FAILED line, or what went wrong


def _pytest(repo: Path, args: list[str], env: dict, timeout: float) -> tuple[int, str]:
    """pytest's exit code (negative: the signal that killed it; None: it ran past `timeout`) and output."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    try:
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return None, f"timed out after {timeout:.0f} s: {exc}"
    return done.returncode, done.stdout + done.stderr


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line[:300]
    return output.strip().splitlines()[-1][:300] if output.strip() else ""


def run_mutant(m: Mutant, repo: Path, cache: Path, timeout: float, keep: bool = False) -> Result:
    start = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=f"dlgpu-mutant-{m.name}-"))
    try:
        kernels = scratch / "kernels"
        shutil.copytree(repo / "kernels", kernels)
        m.apply(kernels)
        env = dict(os.environ, DLGPU_KERNELS_DIR=str(kernels), DLGPU_CACHE_DIR=str(cache))
        for args in TESTS[m.family]:
            if not (repo / args[0]).exists():
                continue
            code, output = _pytest(repo, args, env, timeout)
            if code == 1:
                return Result(m.name, m.family, "killed", time.monotonic() - start, " ".join(args),
                              _first_failure(output))
            if code is None:  # a hang: on a device it would be one too, but say so
                return Result(m.name, m.family, "killed", time.monotonic() - start, " ".join(args), output[:300])
            if code < 0:  # the test process died of a signal (a plain-mode kernel wrote past its arrays): red CI
                return Result(m.name, m.family, "killed", time.monotonic() - start, " ".join(args),
                              f"the test process crashed (signal {-code})")
            if code not in (0, 5):  # 5: nothing selected
                return Result(m.name, m.family, "error", time.monotonic() - start, " ".join(args),
                              _first_failure(output))
        return Result(m.name, m.family, "survived", time.monotonic() - start)
    finally:
        if keep:
            print(f"  kept {scratch}", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def check_baseline(repo: Path, cache: Path, families: list[str], timeout: float) -> list[str]:
    """The selections must pass on the unmutated kernels, or every mutant would look killed."""
    env = dict(os.environ, DLGPU_KERNELS_DIR=str(repo / "kernels"), DLGPU_CACHE_DIR=str(cache))
    failing = []
    for args in {tuple(a) for family in families for a in TESTS[family]}:
        if (repo / args[0]).exists():
            code, output = _pytest(repo, list(args), env, timeout)
            if code not in (0, 5):
                failing.append(f"{' '.join(args)}: {_first_failure(output)}")
    return failing


def summary(results: list[Result]) -> str:
    rows = ["family           mutants  killed  survived  error", "-" * 50]
    for family in TESTS:
        mine = [r for r in results if r.family == family]
        if mine:
            counts = [sum(r.status == s for r in mine) for s in ("killed", "survived", "error")]
            rows.append(f"{family:<16} {len(mine):>7}  {counts[0]:>6}  {counts[1]:>8}  {counts[2]:>5}")
    killed = sum(r.status == "killed" for r in results)
    scored = sum(r.status != "error" for r in results)
    rows.append("-" * 50)
    rows.append(f"kill rate: {killed}/{scored} = {100.0 * killed / max(1, scored):.1f}% "
                f"({len(results) - scored} errors not scored)")
    for r in results:
        if r.status != "killed":
            rows.append(f"  {r.status}: {r.name} -- {mutant(r.name).why}" + (f" [{r.detail}]" if r.detail else ""))
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", choices=sorted(TESTS), help="only these families")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose kernels and tests to use")
    parser.add_argument("--cache", type=Path, help="harness build cache (default: a folder under the repo's .cache)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per pytest run")
    parser.add_argument("--skip-baseline", action="store_true", help="do not first run the tests unmutated")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    args = parser.parse_args(argv)

    chosen = [m for m in MUTANTS
              if (not args.family or m.family in args.family) and (not args.only or m.name in args.only)]
    repo = args.repo.resolve()
    missing = [m.name for m in chosen if not (repo / "kernels" / m.file).exists()]
    if missing:  # a family this checkout does not have (an older one): nothing to mutate
        print(f"not applicable here (no such kernel file): {', '.join(missing)}", flush=True)
        chosen = [m for m in chosen if m.name not in missing]
    for m in chosen:  # every edit must apply to this checkout before anything runs
        text = (repo / "kernels" / m.file).read_text()
        if text.count(m.search) != 1:
            print(f"mutant {m.name}: search text occurs {text.count(m.search)} times in {m.file}", file=sys.stderr)
            return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:<34} {m.family:<13} {m.file:<18} {m.why}")
        return 0
    where = subprocess.run([sys.executable, "-c", "import dlgpu; print(dlgpu.__file__)"], cwd=repo,
                           capture_output=True, text=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(repo):
        print(f"dlgpu imports from {where}, not from {repo}", file=sys.stderr)
        return 2
    cache = (args.cache or repo / ".cache" / "mutate").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    families = sorted({m.family for m in chosen})
    if not args.skip_baseline:
        print(f"baseline: the tests of {', '.join(families)} on the unmutated kernels ...", flush=True)
        failing = check_baseline(repo, cache, families, args.timeout)
        if failing:
            print("the tests fail without any mutant:\n  " + "\n  ".join(failing), file=sys.stderr)
            return 2
    results = []
    for index, m in enumerate(chosen, 1):
        print(f"[{index}/{len(chosen)}] {m.name} ({m.family}) ...", end=" ", flush=True)
        result = run_mutant(m, repo, cache, args.timeout, args.keep)
        results.append(result)
        print(f"{result.status} in {result.seconds:.0f} s" + (f" by {result.killed_by}" if result.killed_by else ""),
              flush=True)
        if args.json:  # written as it goes: a long run interrupted keeps what it has
            args.json.write_text(json.dumps({"repo": str(repo), "results": [asdict(r) for r in results]}, indent=1))
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
