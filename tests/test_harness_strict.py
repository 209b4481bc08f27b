"""The CPU harness is as strict as the hardware: one planted bug per rule a kernel may break.

Each kernel below (test-local .cu text, never in kernels/) is wrong in one way that the
device punishes -- sometimes, on some GPU, under some timing -- and that an earlier, kinder
harness let pass: a cp.async refill racing its readers, static shared memory read before it
is written or left over from another block, a kernel relying on block order, a warp exchange
through shared memory with no __syncwarp, divergent or impossible barriers, masks naming lanes
that do not exist or have returned, and launches past the kernel's or the device's limits.
Each test shows the harness now catches it, and runs the correct twin where there is one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlgpu.cuda import compiler
from dlgpu.cuda import gemm as cuda_gemm
from dlgpu.cuda.launch import SHARED_DEFAULT_LIMIT, SHARED_OPT_IN_LIMIT, Launch
from dlgpu.errors import ArgumentError
from dlgpu.testing import assert_close, random_array
from dlgpu.testing.harness import HarnessError, HarnessExecutor

STRICT = r"""
#include "ptx.cuh"

// ---- 1. cp.async: 16 threads stream `tiles` tiles of 64 floats through two shared stages; all
// 64 threads read every tile.  refill_early: the next tile is issued before the barrier that
// frees its stage (a write-after-read race with the threads still reading it).
extern "C" __global__ void pipeline(const float* src, float* out, int tiles, int refill_early)
{
    extern __shared__ __align__(16) float stages[];  // 2 x 64 floats
    const int t = threadIdx.x;
    auto issue = [&](int tile) {
        if (tile < tiles && t < 16) ptx::cp_async_16(stages + 64 * (tile & 1) + 4 * t, src + 64 * tile + 4 * t);
    };
    issue(0);
    ptx::cp_async_commit();
    float acc = 0.0f;
    for (int k = 0; k < tiles; ++k) {
        ptx::cp_async_wait<0>();
        if (refill_early) issue(k + 1);
        __syncthreads();
        if (!refill_early) issue(k + 1);
        ptx::cp_async_commit();
        const float* tile = stages + 64 * (k & 1);
        for (int i = 0; i < 64; ++i) acc += tile[(i + t) % 64];
    }
    out[t] = acc;
}

// ---- 2. static __shared__: a sum never zeroed, and a value only block 0 writes
extern "C" __global__ void accumulate_unzeroed(const float* x, float* y)
{
    __shared__ float sums[32];
    sums[threadIdx.x] += x[blockIdx.x * 32 + threadIdx.x];  // the bug: sums was never zeroed
    __syncthreads();
    y[blockIdx.x * 32 + threadIdx.x] = sums[threadIdx.x];
}

extern "C" __global__ void shared_across_blocks(float* y)
{
    __shared__ float carried;
    if (blockIdx.x == 0 && threadIdx.x == 0) carried = 42.0f;  // the other blocks never write it
    __syncthreads();
    if (threadIdx.x == 0) y[blockIdx.x] = carried;
}

// ---- 3. block order: block b continues what block b - 1 left (a running sum across blocks)
extern "C" __global__ void chain_by_block_order(const float* x, float* y)
{
    if (threadIdx.x == 0) y[blockIdx.x] = (blockIdx.x ? y[blockIdx.x - 1] : 0.0f) + x[blockIdx.x];
}

extern "C" __global__ void record_block_order(int* order, int* counter)
{
    if (threadIdx.x == 0) order[atomicAdd(counter, 1)] = blockIdx.x;
}

// ---- 4. a warp exchange through shared memory: a shuffle between the store and the load is no
// memory fence; with_syncwarp adds the one that is.
extern "C" __global__ void exchange_through_shared(const float* x, float* y, int with_syncwarp)
{
    __shared__ float buffer[32];
    const int lane = threadIdx.x;
    buffer[lane] = x[lane];
    const float neighbour = __shfl_xor_sync(0xffffffffu, x[lane], 1);
    if (with_syncwarp) __syncwarp();
    y[lane] = buffer[lane ^ 1] - neighbour;  // 0 when the exchange worked
}

// ---- 5. barriers: two call sites pairing up, and a barrier that can never complete
extern "C" __global__ void divergent_barriers(float* y)
{
    if (threadIdx.x < 32) {
        y[threadIdx.x] = 1.0f;
        __syncthreads();
    } else {
        y[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}

extern "C" __global__ void barrier_never_completes(float* y)
{
    // Lanes 16-31 wait in __syncwarp for lanes 0-15, which wait below for them.
    if (threadIdx.x >= 16 && threadIdx.x < 32) __syncwarp();
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}

// ---- 6. masks: a full mask in a partial warp; what __activemask() says after lanes returned
extern "C" __global__ void full_mask_in_partial_warp(const float* x, float* y)
{
    y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
}

extern "C" __global__ void active_lanes(unsigned* out)
{
    if (threadIdx.x >= 24) return;
    __syncthreads();  // completes once the returned lanes no longer count: they are gone
    out[threadIdx.x] = __activemask();
    out[32 + threadIdx.x] = __ballot_sync(0x00ffffffu, threadIdx.x % 3 == 0);
}

// ---- 7. resource limits
extern "C" __global__ void __launch_bounds__(64) bounded(float* y) { y[threadIdx.x] = 1.0f; }

extern "C" __global__ void big_static(float* y)
{
    __shared__ float big[13 * 1024];  // 52 KB: over the 48 KB of static shared memory
    big[threadIdx.x] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = big[threadIdx.x];
}

extern "C" __global__ void static_plus_dynamic(float* y)
{
    __shared__ float fixed[8 * 1024];  // 32 KB, plus the launch's dynamic bytes
    extern __shared__ float extra[];
    fixed[threadIdx.x] = 1.0f;
    extra[threadIdx.x] = 2.0f;
    __syncthreads();
    y[threadIdx.x] = fixed[threadIdx.x] + extra[threadIdx.x];
}
"""

# every test here runs kernels on the CPU harness (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("host_compiler")


@pytest.fixture(scope="module")
def sources() -> Path:
    """The planted kernels in a stable folder (the compiled objects stay cached), with ptx.cuh."""
    folder = compiler.default_cache_dir() / "harness-strict-sources"
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, text in (("h_strict.cu", STRICT), ("ptx.cuh", (compiler.kernels_root() / "ptx.cuh").read_text())):
        path = folder / file_name
        if not path.exists() or path.read_text() != text:
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(text)
            os.replace(temporary, path)
    return folder


def run(sources, mode, kernel, grid, block, *args, shared_mem=0, shared_opt_in=False, **executor_options):
    executor = HarnessExecutor(mode, kernels_dir=sources, **executor_options)
    executor.launch(Launch("h_strict", kernel, grid, block, tuple(args), shared_mem, (), shared_opt_in))


def line_of(text: str, after: str = "") -> int:
    """The line of h_strict.cu where `text` first occurs after `after`."""
    return STRICT[:STRICT.index(text, STRICT.index(after))].count("\n") + 1


# ---------------------------------------------------------------- 1. cp.async


def test_a_cp_async_refill_before_the_barrier_races_its_readers(sources, rng):
    src = random_array(rng, (5, 64))
    out = np.full(64, np.nan, np.float32)
    run(sources, "tsan", "pipeline", (1, 1, 1), (64, 1, 1), src, out, np.int32(5), np.int32(0), shared_mem=512)
    np.testing.assert_allclose(out, np.full(64, src.astype(np.float64).sum()), rtol=1e-5)
    with pytest.raises(HarnessError, match="data race"):
        run(sources, "tsan", "pipeline", (1, 1, 1), (64, 1, 1), src, out, np.int32(5), np.int32(1), shared_mem=512)


def _mutate_module():
    path = Path(__file__).resolve().parents[1] / "tools" / "mutate.py"
    spec = importlib.util.spec_from_file_location("dlgpu_tools_mutate", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gemm_refill_moved_above_its_barrier_fails(tmp_path, rng):
    """The case that opened the issue: gemm.cu's cp.async refill above the __syncthreads that
    frees its stage, on a scratch copy of kernels/ (tools/mutate.py's mutant of that name)."""
    mutate = _mutate_module()
    mutant = mutate.mutant("gemm_simt_refill_before_barrier")
    scratch = tmp_path / "kernels"
    shutil.copytree(compiler.kernels_root(), scratch)
    mutant.apply(scratch)
    # nn: B reaches shared memory by cp.async; K = 52 is 7 k-tiles, so the ring refills.
    m, n, k = 36, 20, 52
    a, b = random_array(rng, (m, k)), random_array(rng, (k, n))
    # The original shares the usual cache's build; the mutant (a new path every run) builds in tmp_path.
    for kernels_dir, cache_dir, caught in ((None, None, False), (scratch, tmp_path / "cache", True)):
        executor = HarnessExecutor("tsan", kernels_dir=kernels_dir, cache_dir=cache_dir)
        call = lambda: cuda_gemm.gemm(a, b, variant="simt", config="64x64", executor=executor)  # noqa: E731
        if caught:
            with pytest.raises(HarnessError, match="data race"):
                call()
        else:
            assert_close(call(), a.astype(np.float64) @ b)


# ---------------------------------------------------------------- 2. static shared memory


@pytest.mark.parametrize("blocks", [1, 3])
def test_static_shared_memory_is_poisoned_for_every_block(sources, rng, blocks):
    x = random_array(rng, 32 * blocks)
    y = np.zeros(32 * blocks, np.float32)
    run(sources, "plain", "accumulate_unzeroed", (blocks, 1, 1), (32, 1, 1), x, y)
    assert np.isnan(y).all()  # not x (zero-initialized), not a sum with an earlier block's values


def test_a_block_never_sees_another_blocks_shared_memory(sources):
    y = np.zeros(6, np.float32)
    run(sources, "plain", "shared_across_blocks", (6, 1, 1), (32, 1, 1), y)
    assert y[0] == 42.0 and np.isnan(y[1:]).all()


# ---------------------------------------------------------------- 3. block order


def test_blocks_do_not_run_in_grid_order(sources, rng):
    x = random_array(rng, 64)
    y = np.zeros(64, np.float32)
    run(sources, "plain", "chain_by_block_order", (64, 1, 1), (32, 1, 1), x, y)
    assert not np.allclose(y, np.cumsum(x), equal_nan=False)


def test_blocks_that_read_each_others_results_race_under_tsan(sources, rng):
    x, y = random_array(rng, 64), np.zeros(64, np.float32)
    with pytest.raises(HarnessError, match="block order seed 5") as caught:
        run(sources, "tsan", "chain_by_block_order", (64, 1, 1), (32, 1, 1), x, y, seed=5)
    assert "data race" in str(caught.value)


def test_the_block_order_is_a_seeded_shuffle(sources):
    def order(seed):
        out, counter = np.full(50, -1, np.int32), np.zeros(1, np.int32)
        run(sources, "plain", "record_block_order", (50, 1, 1), (32, 1, 1), out, counter, seed=seed,
            resident_blocks=1)
        return out

    first = order(7)
    assert sorted(first) == list(range(50))  # every block once
    assert list(first) != list(range(50))
    np.testing.assert_array_equal(order(7), first)  # a seed repeats its order
    assert list(order(8)) != list(first)


def test_a_failure_names_the_seed(sources):
    y = np.zeros(64, np.float32)
    with pytest.raises(HarnessError, match="block order seed 1234"):
        run(sources, "plain", "divergent_barriers", (1, 1, 1), (64, 1, 1), y, seed=1234)


# ---------------------------------------------------------------- 4. warp collectives are no fences


def test_a_shuffle_is_no_memory_fence(sources, rng):
    x = random_array(rng, 32)
    y = np.full(32, np.nan, np.float32)
    run(sources, "tsan", "exchange_through_shared", (1, 1, 1), (32, 1, 1), x, y, np.int32(1))
    np.testing.assert_array_equal(y, 0.0)
    with pytest.raises(HarnessError, match="data race"):
        run(sources, "tsan", "exchange_through_shared", (1, 1, 1), (32, 1, 1), x, y, np.int32(0))


# ---------------------------------------------------------------- 5. barriers


def test_barriers_from_two_call_sites_do_not_pair_up(sources):
    y = np.zeros(64, np.float32)
    first = line_of("__syncthreads", after="y[threadIdx.x] = 1.0f;")
    second = line_of("__syncthreads", after="y[threadIdx.x] = 2.0f;")
    with pytest.raises(HarnessError, match="different places") as caught:
        run(sources, "plain", "divergent_barriers", (1, 1, 1), (64, 1, 1), y)
    assert f"h_strict.cu:{first}" in str(caught.value) and f"h_strict.cu:{second}" in str(caught.value)


def test_a_barrier_that_cannot_complete_fails_at_once_naming_the_threads(sources):
    y = np.zeros(64, np.float32)
    start = time.monotonic()
    with pytest.raises(HarnessError, match="deadlock") as caught:
        run(sources, "plain", "barrier_never_completes", (1, 1, 1), (64, 1, 1), y)
    assert time.monotonic() - start < 60  # the old harness waited 300 s
    message = str(caught.value)
    syncwarp = line_of("__syncwarp();", after="barrier_never_completes")
    barrier = line_of("__syncthreads", after="barrier_never_completes")
    assert f"threads 0-15, 32-63 wait in __syncthreads at h_strict.cu:{barrier}" in message
    assert f"threads 16-31 wait in __syncwarp at h_strict.cu:{syncwarp} (mask 0xffffffff)" in message
    assert "of block (0,0,0)" in message


# ---------------------------------------------------------------- 6. masks


def test_a_mask_naming_lanes_that_do_not_exist_fails(sources, rng):
    x, y = random_array(rng, 20), np.zeros(20, np.float32)
    with pytest.raises(HarnessError, match="names lanes 0xfff00000 that do not exist"):
        run(sources, "plain", "full_mask_in_partial_warp", (1, 1, 1), (20, 1, 1), x, y)
    x, y = random_array(rng, 32), np.zeros(32, np.float32)
    run(sources, "plain", "full_mask_in_partial_warp", (1, 1, 1), (32, 1, 1), x, y)
    np.testing.assert_array_equal(y, x[np.arange(32) ^ 1])


def test_activemask_leaves_out_lanes_that_returned(sources):
    out = np.zeros(64, np.uint32)
    run(sources, "plain", "active_lanes", (1, 1, 1), (32, 1, 1), out)
    np.testing.assert_array_equal(out[:24], 0x00FFFFFF)
    np.testing.assert_array_equal(out[32:56], sum(1 << lane for lane in range(0, 24, 3)))


# ---------------------------------------------------------------- 7. launch limits


def test_launch_bounds_are_enforced(sources):
    y = np.zeros(128, np.float32)
    run(sources, "plain", "bounded", (1, 1, 1), (64, 1, 1), y)
    with pytest.raises(HarnessError, match=r"128 threads exceeds the kernel's __launch_bounds__\(64\)"):
        run(sources, "plain", "bounded", (1, 1, 1), (128, 1, 1), y)


def test_static_shared_memory_is_limited_to_48_kb(sources):
    y = np.zeros(32, np.float32)
    with pytest.raises(HarnessError, match="static __shared__ arrays of 53248 B exceed the 49152 B"):
        run(sources, "plain", "big_static", (1, 1, 1), (32, 1, 1), y)


def test_static_plus_dynamic_shared_memory_needs_the_opt_in_past_48_kb(sources):
    y = np.zeros(32, np.float32)
    run(sources, "plain", "static_plus_dynamic", (1, 1, 1), (32, 1, 1), y, shared_mem=16 * 1024)
    np.testing.assert_array_equal(y, 3.0)
    with pytest.raises(HarnessError, match=r"32768 B static \+ 20480 B dynamic exceeds this launch's 49152 B"):
        run(sources, "plain", "static_plus_dynamic", (1, 1, 1), (32, 1, 1), y, shared_mem=20 * 1024)
    y[:] = 0
    run(sources, "plain", "static_plus_dynamic", (1, 1, 1), (32, 1, 1), y, shared_mem=20 * 1024, shared_opt_in=True)
    np.testing.assert_array_equal(y, 3.0)


def test_dynamic_shared_memory_past_48_kb_needs_the_opt_in(sources):
    y = np.zeros(32, np.float32)
    with pytest.raises(ArgumentError, match="does not opt in"):
        run(sources, "plain", "static_plus_dynamic", (1, 1, 1), (32, 1, 1), y, shared_mem=SHARED_DEFAULT_LIMIT + 16)
    with pytest.raises(ArgumentError, match="no device grants more"):
        run(sources, "plain", "static_plus_dynamic", (1, 1, 1), (32, 1, 1), y, shared_mem=SHARED_OPT_IN_LIMIT + 16,
            shared_opt_in=True)


def test_a_launcher_that_forgets_the_opt_in_fails(rng):
    """gemm_tc 128x128 at tf32 needs 60 KB of shared memory: the launcher opts in; a launch
    of the same kernel without the opt-in is refused."""
    plan = cuda_gemm.choose(128, 128, 32, transpose_a=False, transpose_b=False, precision="tf32", masked=False,
                            aligned=True, sms=1, config="128x128")
    assert plan.shared_mem > SHARED_DEFAULT_LIMIT
    a, b = random_array(rng, (128, 32)), random_array(rng, (32, 128))
    c = np.full((128, 128), np.nan, np.float32)
    args = (a, b, c, a, c, np.int32(128), np.int32(128), np.int32(32), np.int32(0))
    executor = HarnessExecutor("plain")
    with pytest.raises(ArgumentError, match="does not opt in"):
        executor.launch(Launch("gemm_tc", plan.kernel, plan.grid, plan.block, args, plan.shared_mem, plan.defines))
    out = cuda_gemm.gemm(a, b, precision="tf32", variant="tc", config="128x128", executor=executor)
    assert_close(out, a.astype(np.float64) @ b, precision="tf32")


def test_every_mutant_applies_once_to_todays_kernels():
    """tools/mutate.py is not run in CI, so a kernel edit that moves a mutant's search text would
    break the tool unseen: each mutant's text must occur exactly once in its kernel file."""
    mutate = _mutate_module()
    root = compiler.kernels_root()
    counts = {m.name: (root / m.file).read_text().count(m.search) for m in mutate.MUTANTS if (root / m.file).exists()}
    assert len(counts) >= 30
    assert {name: n for name, n in counts.items() if n != 1} == {}
