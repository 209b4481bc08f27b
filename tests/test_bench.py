"""The benchmark machinery on the CPU: timers on fake clocks and fake CUDA events, rotation,
rows and ratios, the baselines' arithmetic against the reference, and `dlgpu bench --quick`
end to end on the CPU backend."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlgpu.reference as ref
from dlgpu import bench, cases
from dlgpu.bench import ceilings, report, run, timing
from dlgpu.cases import sgd
from dlgpu.errors import ArgumentError
from dlgpu.testing import assert_close
from dlgpu.precision import HALF_DTYPES

REPO = Path(__file__).resolve().parent.parent


# -- statistics and timers ------------------------------------------------------


def test_summarize_gives_median_and_spread():
    t = timing.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (t.median_ms, t.reps) == (3.0, 5)
    assert t.p10_ms == pytest.approx(1.4) and t.p90_ms == pytest.approx(4.6)
    with pytest.raises(ValueError):
        timing.summarize([])


class FakeClock:
    """A clock that advances by the given step every time it is read."""

    def __init__(self, step_s: float):
        self.now = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def test_wall_clock_timer_warms_up_untimed_then_times_each_rep():
    calls = []
    timer = timing.WallClockTimer(budget_s=100.0, clock=FakeClock(0.002))
    samples = timer.measure(calls.append, warmup=2, reps=5)
    assert calls == [0, 1, 2, 3, 4, 5, 6]            # warm-up indices first, then the timed ones
    assert samples == pytest.approx([2.0] * 5)        # each timed rep spans one clock step: 2 ms


def test_wall_clock_timer_stops_at_its_budget_but_not_before_min_reps():
    timer = timing.WallClockTimer(budget_s=0.010, min_reps=3, clock=FakeClock(0.004))
    assert len(timer.measure(lambda i: None, warmup=0, reps=100)) == 3
    slow = timing.WallClockTimer(budget_s=0.001, min_reps=4, clock=FakeClock(1.0))
    assert len(slow.measure(lambda i: None, warmup=0, reps=100)) == 4


class FakeCupy:
    """Just enough of cupy.cuda for CudaEventTimer: events stamped by a fake device clock."""

    def __init__(self):
        fake = self
        self.device_ms = 0.0
        self.log: list[str] = []

        class Event:
            def __init__(self):
                self.t = None

            def record(self):
                self.t = fake.device_ms
                fake.log.append("record")

            def synchronize(self):
                fake.log.append("event-sync")

        class Stream:
            def synchronize(self):
                fake.log.append("stream-sync")

        class Cuda:
            pass

        cuda = Cuda()
        cuda.Event = Event
        cuda.get_current_stream = lambda: Stream()
        cuda.get_elapsed_time = lambda start, stop: stop.t - start.t
        self.cuda = cuda


def test_cuda_event_timer_reads_one_event_pair_per_rep_after_one_sync():
    cp = FakeCupy()
    seen = []

    def work(i):
        seen.append(i)
        cp.device_ms += 0.5 + i      # each launch takes longer: the samples must follow

    samples = timing.CudaEventTimer(cp, spin=False).measure(work, warmup=2, reps=3)
    assert seen == [0, 1, 2, 3, 4]
    assert samples == [2.5, 3.5, 4.5]
    assert cp.log.count("record") == 6
    assert cp.log.count("event-sync") == 1 and cp.log[-1] == "event-sync"   # one sync, at the end
    assert cp.log.index("stream-sync") < cp.log.index("record")             # warm-up finished first


def test_cuda_event_timer_queues_a_spin_long_enough_for_the_host_to_enqueue_every_rep():
    cp = FakeCupy()
    launches = []

    class RawKernel:
        def __init__(self, source, name):
            assert "clock64" in source and name == "dlgpu_bench_spin"

        def __call__(self, grid, block, args):
            launches.append(int(args[0]))
            cp.log.append("spin")

    class Device:
        attributes = {"ClockRate": 1_000_000}          # kHz: 1 GHz

    cp.RawKernel = RawKernel
    cp.cuda.Device = Device
    # the host clock: each read advances 1 ms, so a warm-up call "costs" about 1 ms
    timer = timing.CudaEventTimer(cp, clock=FakeClock(0.001))
    timer.measure(lambda i: None, warmup=3, reps=10)
    assert len(launches) == 1
    assert cp.log.index("spin") < cp.log.index("record")
    # per call ~0.5 ms (1 ms over 2 warm-up calls); 1.5 x 0.5 ms x 10 reps + 1 ms = 8.5 ms at 1 GHz
    assert launches[0] == pytest.approx(8.5e6, rel=1e-6)


def test_cuda_event_timer_times_without_the_spin_when_it_cannot_compile():
    cp = FakeCupy()

    def no_compiler(source, name):
        raise RuntimeError("no NVRTC")

    cp.RawKernel = no_compiler
    samples = timing.CudaEventTimer(cp).measure(lambda i: None, warmup=1, reps=2)
    assert samples == [0.0, 0.0]


@pytest.mark.parametrize(
    ("set_bytes", "cache", "kwargs", "expected"),
    [
        (256 << 20, 50 << 20, {}, 1),            # one set already four times the L2
        (51 << 20, 50 << 20, {}, 4),             # pooling input: about one L2, rotate four
        (1 << 20, 50 << 20, {}, 64),             # tiny sets: capped by max_sets
        (1 << 20, 50 << 20, {"max_total_bytes": 16 << 20}, 16),
        (1 << 30, 50 << 20, {"max_total_bytes": 1 << 20}, 1),
    ],
)
def test_rotation_covers_the_cache_within_bounds(set_bytes, cache, kwargs, expected):
    assert timing.rotation_count(set_bytes, cache, **kwargs) == expected


def test_rotation_sets_together_exceed_the_cache():
    for set_bytes in (7 << 20, 13 << 20, 40 << 20):
        n = timing.rotation_count(set_bytes, 50 << 20)
        assert n * set_bytes >= 4 * (50 << 20)


# -- the registry -------------------------------------------------------------------


def test_every_family_has_cases_and_unknown_families_are_refused():
    # every kernel stem is a family; train has rows of its own (dlgpu.bench.train)
    assert {c.family for c in cases.benchmarks()} == set(bench.FAMILIES) - {"train"} == set(cases.STEMS)
    assert [c.family for c in bench.benchmarks_for(["pool"])] == ["pool", "pool"]
    assert bench.benchmarks_for(["train"]) == []
    assert len(bench.benchmarks_for([])) == len(cases.benchmarks())
    with pytest.raises(ArgumentError, match="unknown family.*'conv'"):
        bench.benchmarks_for(["conv"])


def test_gpu_shapes_are_the_speed_target_sizes():
    shapes = {c.op: c.shape_for("cuda", quick=True) for c in cases.benchmarks()}
    for op in ("relu_forward", "relu_backward", "sgd_step", "bias_grad"):
        assert int(np.prod(shapes[op])) >= 1 << 26, op
    assert shapes["softmax_cross_entropy"] == (65536, 1000)
    assert shapes["max_pool2d"] == (64, 64, 56, 56)


def test_every_case_reads_more_than_a_cpu_l2_even_in_quick_mode():
    """A memory-bound rate from a set the L2 holds would be the cache's. The CPU backend's convolution layers
    (compute-bound, timed at the sizes a network has) are the exception: a LeNet layer's set is smaller."""
    for case in cases.benchmarks():
        inputs = case.make_inputs(np, case.shape_for("cpu", quick=True), 0)
        if case.bound == "compute" and case.variant.endswith("-cpu"):
            assert case.unavailable("cuda") is not None, case.variant  # CPU-only rows, never a GPU rate
            continue
        assert run._set_bytes(inputs) >= 2 << 20, case.op


def test_bytes_moved_count_each_input_read_and_output_written_once():
    by_op = CASE
    n = 1000
    assert by_op["relu_forward"].bytes_moved((n,)) == 8 * n
    assert by_op["relu_backward"].bytes_moved((n,)) == 12 * n
    assert by_op["sgd_step"].bytes_moved((n,)) == 20 * n
    assert by_op["bias_grad"].bytes_moved((2, 3, 4, 5)) == 4 * (120 + 3)
    assert BIAS_RELU.bytes_moved((2, 3, 4, 5)) == 4 * (240 + 3)
    assert by_op["softmax_cross_entropy"].bytes_moved((10, 7)) == 4 * 2 * 70 + 4 * 10
    # 2x3x8x8 input, 3x3 stride 2 padding 1 -> 4x4 output; y and the int32 argmax written
    assert by_op["max_pool2d"].bytes_moved((2, 3, 8, 8)) == 4 * 384 + 8 * 96
    assert by_op["max_pool2d_backward"].bytes_moved((2, 3, 8, 8)) == 8 * 96 + 4 * 384


# -- the baselines compute what the reference computes ---------------------------------


def _small(case, shape) -> dict:
    return case.make_inputs(np, shape, 7)


CASE = {c.op: c for c in cases.benchmarks() if c.variant != "NCHW+relu-mask" and c.dtype == "float32"}
STORAGE = [c for c in cases.benchmarks() if c.dtype != "float32" and c.family != "conv2d"]  # conv: below
BIAS_RELU = next(c for c in cases.benchmarks() if c.variant == "NCHW+relu-mask")


def test_numpy_baselines_match_the_reference():
    d = _small(CASE["relu_forward"], (1001,))
    np.testing.assert_allclose(CASE["relu_forward"].xp_baseline(np, d), ref.relu(d["x"]), rtol=1e-6)

    d = _small(CASE["relu_backward"], (1001,))
    np.testing.assert_allclose(CASE["relu_backward"].xp_baseline(np, d), ref.relu_backward(d["grad_y"], d["y"]),
                               rtol=1e-6)

    d = _small(CASE["bias_grad"], (3, 5, 4, 6))
    np.testing.assert_allclose(CASE["bias_grad"].xp_baseline(np, d),
                               d["grad_y"].astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5)

    d = _small(BIAS_RELU, (3, 5, 4, 6))
    np.testing.assert_allclose(BIAS_RELU.xp_baseline(np, d),
                               (d["grad_y"].astype(np.float64) * (d["y"] > 0)).sum(axis=(0, 2, 3)), rtol=1e-5)

    d = _small(CASE["softmax_cross_entropy"], (33, 17))
    loss, probs = CASE["softmax_cross_entropy"].xp_baseline(np, d)
    ref_loss, ref_probs = ref.softmax_cross_entropy(d["logits"], d["labels"])
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-5, atol=1e-7)

    d = _small(CASE["softmax_cross_entropy_backward"], (33, 17))
    np.testing.assert_allclose(CASE["softmax_cross_entropy_backward"].xp_baseline(np, d),
                               ref.softmax_cross_entropy_backward(d["probs"], d["labels"]), rtol=1e-5, atol=1e-7)


def test_numpy_sgd_baseline_matches_the_reference_rule():
    case = CASE["sgd_step"]
    d = _small(case, (101,))
    e = {k: v.copy() for k, v in d.items()}
    case.xp_baseline(np, d)
    ref.sgd_step(e["param"], e["grad"], e["velocity"], **sgd.SETTINGS)
    np.testing.assert_allclose(d["param"], e["param"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["velocity"], e["velocity"], rtol=1e-5, atol=1e-6)


def test_16_bit_storage_rows_name_their_dtype_count_their_bytes_and_agree_with_dlgpu():
    n = 1000
    assert sorted((c.op, c.dtype) for c in STORAGE) == sorted(
        (op, np.dtype(d).name) for op in ("relu_backward", "relu_forward", "sgd_step") for d in HALF_DTYPES)
    for c in STORAGE:
        assert c.bytes_moved((n,)) == {"relu_forward": 4 * n, "relu_backward": 6 * n, "sgd_step": 20 * n}[c.op]
        d = _small(c, (101,))
        assert {np.dtype(d[k].dtype).name for k in ("param", "grad") if k in d} <= {c.dtype}
        if c.op == "sgd_step":
            e = {k: v.copy() for k, v in d.items()}
            c.xp_baseline(np, d)
            c.run(e)  # dlgpu on the CPU backend
            np.testing.assert_allclose(d["master"], e["master"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(d["velocity"], e["velocity"], rtol=1e-5, atol=1e-6)
            assert np.array_equal(e["param"], e["master"].astype(e["param"].dtype))
        else:
            expected = c.xp_baseline(np, d)
            assert np.dtype(expected.dtype).name == c.dtype and np.array_equal(c.run(d), expected)


# dlgpu/cases/conv2d.py's rows in other storages and layouts, named <layer>-<layout>-<precision>.
CONV_STORED = [c for c in cases.benchmarks()
               if c.family == "conv2d" and re.search(r"-(nhwc|nchw)-(tf32|bf16|fp16)$", c.variant)]


def test_conv2d_rows_name_their_storage_layout_and_precision_and_count_their_bytes():
    """The NHWC and 16-bit rows beside the NCHW float32 ones: every pass of the NHWC kernels in bf16, the forward
    in every precision, 16-bit NCHW forwards; each row's dtype is its precision's storage, and its bytes are
    counted at that width.  All GPU-only."""
    kinds = {(c.op, c.variant.split("-")[-2], c.precision, c.dtype) for c in CONV_STORED}
    assert kinds == {("conv2d", "nhwc", "tf32", "float32"), ("conv2d", "nhwc", "bf16", "bfloat16"),
                     ("conv2d", "nhwc", "fp16", "float16"), ("conv2d_dgrad", "nhwc", "bf16", "bfloat16"),
                     ("conv2d_wgrad", "nhwc", "bf16", "bfloat16"), ("conv2d", "nchw", "bf16", "bfloat16"),
                     ("conv2d", "nchw", "fp16", "float16")}
    assert {c.variant.split("-nhwc")[0] for c in CONV_STORED if "-nhwc-" in c.variant} >= {
        "resnet50-3x3-128", "resnet50-3x3-512-b32", "resnet50-3x3-512-b128"}
    shape = (2, 3, 9, 9, 4, 3, 3, 2, 1)  # x 486, w 108, y 2 x 4 x 5 x 5 = 200 elements
    for c in CONV_STORED:
        assert c.bytes_moved(shape) == np.dtype(c.dtype).itemsize * (486 + 108 + 200) and c.bound == "compute"
        assert c.unavailable("cpu") and c.torch_baseline is not None


@pytest.mark.parametrize("kind", ["nhwc-tf32", "nhwc-bf16", "nchw-bf16"])
def test_conv2d_torch_baselines_compute_the_reference_on_the_stored_layout(kind):
    """On CPU tensors: the baselines read NHWC storage as channels_last tensors (and NCHW as it is) and compute
    what the reference computes, pass by pass."""
    torch = pytest.importorskip("torch")
    shape = (2, 5, 9, 8, 4, 3, 3, 2, 1)
    for c in [c for c in CONV_STORED if c.variant.endswith(kind)]:
        d = c.make_inputs(np, shape, 3)
        nchw = {k: (d[k].transpose(0, 3, 1, 2) if kind.startswith("nhwc") else d[k]).astype(np.float64)
                for k in ("x", "w", "grad_y") if k in d}
        got = c.torch_baseline(torch, d).float().numpy()
        if c.op == "conv2d":
            want = ref.conv2d(nchw["x"], nchw["w"], stride=2, padding=1)
        else:  # the operand a gradient does not read: any values
            x, w = nchw.get("x", np.ones((2, 5, 9, 8))), nchw.get("w", np.ones((4, 5, 3, 3)))
            grads = ref.conv2d_backward(nchw["grad_y"], x, w, stride=2, padding=1)
            want = grads[0] if c.op == "conv2d_dgrad" else grads[1]
        np.testing.assert_allclose(got, want, rtol=0.02, atol=0.05 if c.dtype == "bfloat16" else 1e-4)


@pytest.mark.parametrize("where", [pytest.param("harness", marks=pytest.mark.harness),
                                   pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("kind", sorted({"-".join(c.variant.split("-")[-2:]) + ":" + c.op for c in CONV_STORED}))
def test_conv2d_stored_rows_compute_the_reference(kind, where, request, monkeypatch):
    """Each kind of NHWC / 16-bit row (pass, layout, precision) runs its dlgpu call once at a small odd shape,
    against the reference: on the CPU harness (the launchers' default executor replaced) and on a GPU.  A row
    that timed a wrong computation would be worse than no row."""
    from dlgpu.testing import stored_values, to_numpy

    tail, op = kind.split(":")
    case = next(c for c in CONV_STORED if c.op == op and c.variant.endswith(tail))
    if where == "harness":
        request.getfixturevalue("host_compiler")
        from dlgpu.testing.harness import HarnessExecutor

        xp = np
        monkeypatch.setattr("dlgpu.cuda.executor.default_executor",
                            lambda: HarnessExecutor("plain", multiprocessor_count=1))
    else:
        import cupy as xp

        if case.unavailable("cuda"):
            pytest.skip(case.unavailable("cuda"))
    shape = (2, 16, 9, 7, 24, 3, 3, 2, 1)
    d = case.make_inputs(xp, shape, 5)
    got = to_numpy(case.run(d))
    nhwc = "-nhwc-" in case.variant
    nchw = {k: stored_values(v, case.precision).transpose((0, 3, 1, 2) if nhwc else (0, 1, 2, 3))
            for k, v in d.items() if k in ("x", "w", "grad_y")}
    if op == "conv2d":
        want = ref.conv2d(nchw["x"], nchw["w"], stride=2, padding=1)
    else:  # the operand a gradient does not read: any values
        x, w = nchw.get("x", np.ones((2, 16, 9, 7))), nchw.get("w", np.ones((24, 16, 3, 3)))
        grads = ref.conv2d_backward(nchw["grad_y"], x, w, stride=2, padding=1)
        want = grads[0] if op == "conv2d_dgrad" else grads[1]
    assert_close(got.astype(np.float64).transpose((0, 3, 1, 2) if nhwc else (0, 1, 2, 3)), want, dtype=np.float32,
                 precision=case.precision)


def test_numpy_pooling_baselines_match_the_reference():
    shape = (2, 3, 9, 8)
    d = _small(CASE["max_pool2d"], shape)
    y_ref, argmax_ref = ref.max_pool2d(d["x"], 3, stride=2, padding=1)
    np.testing.assert_array_equal(CASE["max_pool2d"].xp_baseline(np, d), y_ref.astype(np.float32))

    d = _small(CASE["max_pool2d_backward"], shape)
    _, d["argmax"] = ref.max_pool2d(d["x"], 3, stride=2, padding=1)
    np.testing.assert_allclose(CASE["max_pool2d_backward"].xp_baseline(np, d),
                               ref.max_pool2d_backward(d["grad_y"], d["argmax"], shape, 3, 2, 1), rtol=1e-5, atol=1e-6)


# -- rows from a case -----------------------------------------------------------------


class ScriptedTimer:
    """Runs each repetition for real (so the calls are exercised) but reports scripted times."""

    def __init__(self, ms_per_measurement: list[float]):
        self.ms = list(ms_per_measurement)
        self.indices: list[list[int]] = []

    def measure(self, fn, *, warmup, reps):
        seen = []
        for i in range(warmup + reps):
            fn(i)
            seen.append(i)
        self.indices.append(seen)
        return [self.ms.pop(0)] * reps


def _cpu_backend(timer, cache_bytes=1 << 16) -> bench.Machine:
    return bench.Machine(name="cpu", xp=np, timer=timer, cache_bytes=cache_bytes, device={"name": "test"},
                         max_rotation_bytes=1 << 20, warmup=1, reps=3)


def test_run_case_reports_ratio_rate_and_share_of_the_ceiling():
    case = dataclasses.replace(CASE["relu_forward"], shapes={"gpu": (4096,), "cpu": (4096,), "cpu_quick": (4096,)})
    timer = ScriptedTimer([2.0, 4.0, 1.0])      # dlgpu, then reference, then numpy
    ceilings = {"copy": {"gbps": 0.0001}}
    rows = run.run_case(case, _cpu_backend(timer), True, ceilings)
    assert [r["baseline"] for r in rows] == ["reference", "numpy"]
    assert [r["ratio"] for r in rows] == [2.0, 0.5]
    assert all(r["ms"] == 2.0 for r in rows)
    gbps = 8 * 4096 / 2e-3 / 1e9
    assert rows[0]["gbps"] == pytest.approx(gbps)
    assert rows[0]["pct_of_ceiling"] == pytest.approx(100 * gbps / 0.0001)
    assert rows[0]["tflops"] is None
    # 16 KiB sets against a 64 KiB cache: rotate 16 sets, each repetition on the next one
    assert rows[0]["rotation_sets"] == 16
    for key in ("op", "variant", "shape", "dtype", "precision", "ms", "baseline", "baseline_ms", "ratio",
                "gbps", "tflops", "pct_of_ceiling"):
        assert key in rows[0]


def test_run_case_rotates_through_distinct_input_sets():
    used = []
    case = dataclasses.replace(
        CASE["relu_forward"], shapes={"gpu": (1024,), "cpu": (1024,), "cpu_quick": (1024,)},
        run=lambda d: used.append(id(d["x"])), reference=None, xp_baseline=None)
    rows = run.run_case(case, _cpu_backend(ScriptedTimer([1.0]), cache_bytes=4096 * 2), True, {})
    assert rows[0]["rotation_sets"] == 8
    assert len(set(used)) == 4                  # 1 warm-up + 3 reps: four different sets


def test_the_gpu_warms_up_on_every_input_set_before_timing():
    """With warm_every_set (the GPU machine's), no timed repetition meets an input set the warm-up did not:
    a launcher's per-pointer caches (TMA maps) miss before the timing (first GPU record: a wgmma row's
    median was 10x its 10th percentile, its timed repetitions meeting new sets)."""
    case = dataclasses.replace(
        CASE["relu_forward"], shapes={"gpu": (1024,), "cpu": (1024,), "cpu_quick": (1024,)},
        reference=None, xp_baseline=None)
    timer = ScriptedTimer([1.0])
    machine = dataclasses.replace(_cpu_backend(timer, cache_bytes=4096 * 2), warm_every_set=True)
    rows = run.run_case(case, machine, True, {})
    n_sets = rows[0]["rotation_sets"]
    assert n_sets == 8 and len(timer.indices[0]) == n_sets + 3  # 8 warm-up calls, one per set, then 3 timed
    assert rows[0]["baseline"] is None and rows[0]["ratio"] is None


# -- predictions: written before a GPU runs a kernel, judged by the run -----------------------


class _FakeGpu(bench.Machine):
    """A machine that says it is the GPU (rows carry predictions) but runs NumPy on a scripted timer."""

    def synchronize(self) -> None:
        pass

    def release(self) -> None:
        pass


def test_a_prediction_says_below_within_or_above_for_its_own_baseline_only():
    p = cases.case.Prediction("ratio", 0.8, 0.95, why="kernels/gemm_wgmma.cu", baseline="cupy")
    assert [p.verdict({"baseline": "cupy", "ratio": r}) for r in (0.5, 0.8, 0.9, 0.95, 1.2)] == [
        "below", "within", "within", "within", "above"]
    assert p.verdict({"baseline": "torch", "ratio": 0.9}) is None      # another baseline: not this prediction's
    assert p.verdict({"baseline": "cupy", "ratio": None}) is None       # nothing measured
    share = cases.case.Prediction("pct_of_ceiling", 80, 95, why="kernels/elementwise.cu")
    assert share.verdict({"pct_of_ceiling": 70.0}) == "below" and share.describe() == "80-95% of ceiling"
    assert p.describe() == "0.80-0.95x cupy"
    for bad in (dict(measure="ms", low=1, high=2), dict(measure="ratio", low=2, high=1, baseline="cupy"),
                dict(measure="ratio", low=1, high=2), dict(measure="pct_of_ceiling", low=1, high=2, baseline="x")):
        with pytest.raises(AssertionError):
            cases.case.Prediction(why="x", **bad)


@pytest.mark.parametrize(("baseline_ms", "verdict"), ((1.8, "within"), (1.0, "below"), (4.0, "above")))
def test_a_gpu_row_carries_the_prediction_and_its_verdict(baseline_ms, verdict):
    predicted = cases.case.Prediction("ratio", 0.8, 1.2, why="kernels/elementwise.cu", baseline="cupy")
    case = dataclasses.replace(CASE["relu_forward"], shapes={"gpu": (256,), "cpu": (256,), "cpu_quick": (256,)},
                               predicted=predicted)
    gpu = _FakeGpu(name="cuda", xp=np, timer=ScriptedTimer([2.0, baseline_ms]), cache_bytes=1 << 12,
                   device={"name": "fake"}, max_rotation_bytes=1 << 20, warmup=1, reps=3)
    (row,) = run.run_case(case, gpu, True, {})
    assert row["baseline"] == "cupy" and row["ratio"] == pytest.approx(baseline_ms / 2.0)
    assert row["predicted"] == predicted.as_dict() and row["verdict"] == verdict
    # On the CPU a row says nothing of a GPU prediction.
    cpu_rows = run.run_case(case, _cpu_backend(ScriptedTimer([2.0, 1.0, 1.0])), True, {})
    assert all("predicted" not in r and "verdict" not in r for r in cpu_rows)


def test_every_prediction_points_at_the_reasoning_it_came_from():
    """A prediction names the kernel header that argues it (SASS counts, occupancy, bytes), and that header
    still holds a written prediction: a range in the cases is never the only place a number lives."""
    predicted = [case for case in cases.benchmarks() if case.predicted is not None]
    assert {case.family for case in predicted} >= {"gemm", "conv2d"}
    for case in predicted:
        source = REPO / case.predicted.why
        assert source.is_file(), f"{case.name}: {case.predicted.why} does not exist"
        assert "Predicted" in source.read_text(), f"{case.name}: {case.predicted.why} holds no written prediction"


def _runs_on_the_gpu(case) -> bool:
    """Every row but the CPU backend's own layers, which refuse the GPU up front.  A GPU-only row answers "cpu"
    with its reason, so it is never asked about "cuda" (which may need CuPy and a device to answer)."""
    if case.unavailable is None or case.unavailable("cpu") is not None:
        return True
    return case.unavailable("cuda") is None


# GPU rows that have no prediction, each with the reason (a range lives in the cases only beside the kernel header
# that argues it).  Remove a row here when it gains its prediction (the test below insists).
_NOT_PREDICTED: dict[str, str] = {  # GPU rows without a prediction, each with the reason (none today)
}


def test_every_gpu_benchmark_row_has_a_prediction_or_a_stated_reason_not_to():
    """A new GPU benchmark row lands with its predicted rate (the GPU run then confirms or refutes it) or in
    _NOT_PREDICTED with the reason; an exemption whose row has since gained a prediction (or is gone) must go."""
    rows = cases.benchmarks()
    unpredicted = {case.name for case in rows if _runs_on_the_gpu(case) and case.predicted is None}
    assert sorted(unpredicted - set(_NOT_PREDICTED)) == [], "GPU rows without a prediction or a stated reason"
    assert sorted(set(_NOT_PREDICTED) - unpredicted) == [], "exemptions for rows that have a prediction or are gone"
    # Predictions are about GPUs: the CPU backend's own rows carry none.
    assert [case.name for case in rows if not _runs_on_the_gpu(case) and case.predicted is not None] == []


def test_a_failing_dlgpu_call_is_an_error_row_not_a_crash():
    def boom(d):
        raise RuntimeError("kernel exploded")

    case = dataclasses.replace(CASE["relu_forward"], shapes={"gpu": (64,), "cpu": (64,), "cpu_quick": (64,)}, run=boom)
    result = run.run_benchmarks([case], _cpu_backend(ScriptedTimer([3.0, 1.0])), True, ceilings={})
    assert result["rows"][0]["ms"] is None
    assert "kernel exploded" in result["rows"][0]["error"]
    assert result["errors"] == ["relu_forward: dlgpu: RuntimeError: kernel exploded"]


def test_unavailable_case_is_skipped_with_its_reason():
    case = dataclasses.replace(CASE["bias_grad"], unavailable=lambda backend: f"nothing on {backend}")
    (row,) = run.run_case(case, _cpu_backend(ScriptedTimer([])), True, {})
    assert row["skipped"] == "nothing on cpu" and row["ms"] is None


def test_table_cells_show_ratio_rate_and_ceiling_share():
    result = {"rows": [
        {"op": "relu_forward", "variant": "default", "shape": "64", "dtype": "float32", "precision": "ieee",
         "ms": 0.25, "baseline": "cupy", "baseline_ms": 0.3, "ratio": 1.2, "gbps": 2800.0, "tflops": None,
         "pct_of_ceiling": 93.3},
        {"op": "bias_grad", "variant": "NCHW", "shape": "1x2x3x4", "dtype": "float32", "precision": "ieee",
         "ms": None, "skipped": "none", "baseline": None, "baseline_ms": None, "ratio": None, "gbps": None,
         "tflops": None, "pct_of_ceiling": None},
    ]}
    cells = report.table_rows(result)
    assert cells == [["relu_forward\ndefault\n64", "0.250", "cupy\n0.300", "1.20x", "2800 GB/s\n93%"]]
    assert len(report.TABLE_HEADER) == len(cells[0])  # the skipped row is left to the summary lines


def test_plot_writes_a_png_or_says_why_not(tmp_path):
    result = {"device": {"name": "test"}, "rows": [
        {"op": "relu_forward", "shape": "64", "ms": 1.0, "baseline": "numpy", "baseline_ms": 2.0}]}
    path = tmp_path / "b.png"
    why_not = report.write_plot(result, str(path))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib" in why_not and not path.exists()
    else:
        assert why_not is None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cpu_ceilings_are_measured(monkeypatch):
    machine = bench.cpu_machine(quick=True)
    measured = ceilings.measure_ceilings(machine, quick=True)
    assert measured["copy"]["gbps"] > 0 and "bytes read + written" in measured["copy"]["how"]
    assert measured["sgemm"]["tflops"] > 0 and measured["sgemm"]["shape"] == "1024x1024x1024"


# -- dlgpu bench end to end on the CPU ------------------------------------------------------


def test_bench_arguments_parse():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["softmax", "pool", "--quick", "--json", "x.json", "--plot", "x.png"])
    assert (args.families, args.quick, args.json, args.plot) == (["softmax", "pool"], True, "x.json", "x.png")
    assert args.backend is None
    assert parser.parse_args(["--cpu"]).backend == "cpu"  # the deprecated spelling of --backend cpu


@pytest.mark.skipif(bench.gpu_probe()[0], reason="checks the CPU fallback, which a GPU machine does not take")
def test_dlgpu_bench_quick_on_the_cpu_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "dlgpu.cli", "bench", "--quick", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(bench.NO_GPU_MESSAGE)
    result = json.loads(out.read_text())
    assert result["backend"] == "cpu" and result["quick"] is True
    assert result["errors"] == []
    ops = {r["op"] for r in result["rows"]}
    assert ops == {c.op for c in cases.benchmarks()} | {"lenet_step"}
    timed = [r for r in result["rows"] if not r.get("skipped") and r.get("baseline")]
    assert timed and all(r["ms"] > 0 and r["baseline_ms"] > 0 and r["ratio"] > 0 for r in timed)
    assert {"reference", "numpy"} <= {r["baseline"] for r in timed} <= {"reference", "numpy", "torch"}
    if importlib.util.find_spec("torch") is not None:  # the CPU convolutions against PyTorch's, both passes
        against_torch = {r["op"] for r in timed if r["baseline"] == "torch" and r["variant"].endswith("-cpu")}
        assert against_torch == {"conv2d", "conv2d_backward"}
    (train_row,) = [r for r in result["rows"] if r["family"] == "train"]
    assert train_row["variant"] == "eager" and train_row["ms"] > 0
    assert "relu_forward" in proc.stdout and "ratio" in proc.stdout


def test_unknown_family_exits_2(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.main(parser.parse_args(["convolution"])) == 2
    assert "unknown family" in capsys.readouterr().out


# -- on a GPU: the timer, the ceilings and the PyTorch baselines' arithmetic ---------------


@pytest.mark.gpu
def test_cuda_event_timer_on_the_device():
    import cupy

    x = cupy.random.RandomState(0).standard_normal(1 << 24, dtype=cupy.float32)
    timer = timing.CudaEventTimer()
    samples = timer.measure(lambda i: x * 2, warmup=3, reps=5)
    assert len(samples) == 5 and all(s > 0 for s in samples)
    assert timer._spin_ok, "the spin kernel did not compile"


@pytest.mark.gpu
def test_gpu_ceilings_are_measured():
    machine = bench.cuda_machine(quick=True)
    assert machine.cache_bytes >= 1 << 20
    measured = ceilings.measure_ceilings(machine, quick=True)
    assert measured["copy"]["gbps"] > 100
    assert measured["sgemm"]["tflops"] > 1
    assert measured["bf16_gemm"]["tflops"] and measured["bf16_gemm"]["tflops"] > measured["sgemm"]["tflops"]


@pytest.mark.gpu
@pytest.mark.parametrize("op", ["softmax_cross_entropy", "softmax_cross_entropy_backward", "max_pool2d",
                                "max_pool2d_backward"])
def test_torch_baselines_compute_what_the_cupy_baselines_compute(op):
    import cupy

    torch = pytest.importorskip("torch")
    case = CASE[op]
    shape = (37, 19) if case.family == "softmax" else (2, 3, 11, 9)
    d = case.make_inputs(cupy, shape, 3)
    if op == "max_pool2d_backward":
        _, argmax = ref.max_pool2d(cupy.asnumpy(d["x"]), 3, stride=2, padding=1)
        d["argmax"] = cupy.asarray(argmax)
    expected = case.xp_baseline(cupy, d)
    got = case.torch_baseline(torch, d)
    if op == "softmax_cross_entropy":
        np.testing.assert_allclose(float(got[0]), float(expected[0]), rtol=1e-5)
        np.testing.assert_allclose(got[1].cpu().numpy(), cupy.asnumpy(expected[1]), rtol=1e-5, atol=1e-7)
    elif op == "max_pool2d":
        np.testing.assert_array_equal(got[0].cpu().numpy(), cupy.asnumpy(expected))
    else:
        np.testing.assert_allclose(got.cpu().numpy(), cupy.asnumpy(expected), rtol=1e-5, atol=1e-6)


def test_skipped_rows_are_summarized_once_per_op_and_reason():
    from rich.console import Console

    rows = [{"op": "conv2d", "skipped": "GPU-only"}] * 3 + [{"op": "gemm", "skipped": "GPU-only"}]
    result = {"device": {"name": "cpu"}, "backend": "cpu", "quick": True, "ceilings": {}, "errors": [],
              "rows": [dict(r, variant="v", shape="s", dtype="float32", precision="ieee") for r in rows]}
    console = Console(record=True, width=200)
    report.print_result(result, console)
    text = console.export_text()
    assert text.count("skipped 3 conv2d rows: GPU-only") == 1
    assert "skipped 1 gemm row: GPU-only" in text


# -- the tile sweep (dlgpu bench --sweep) ----------------------------------------------------------


def test_every_sweep_row_forces_its_tile_on_its_kernels(monkeypatch):
    """Each sweep row launches its shape on exactly the tile its variant names ('...@128x256' for the wgmma
    GEMM, '...@wgmma:128x64' / '...@tc:64x64' for the convolutions), and together the rows cover every tile
    of those kernels' own lists; no row carries a prediction (it is a measurement of the choice)."""
    from types import SimpleNamespace

    import dlgpu.cuda.gemm as cuda_gemm
    from dlgpu.cuda import conv2d_nhwc, conv2d_wgmma

    calls = []
    monkeypatch.setattr(cuda_gemm, "gemm", lambda *a, **k: calls.append(("gemm", k["variant"], k["config"])))
    for module in (conv2d_nhwc, conv2d_wgmma):
        for name in ("forward", "dgrad"):
            monkeypatch.setattr(module, name, lambda *a, _m=module, _n=name, **k: calls.append((_m, _n, k["config"])))
    rows = cases.sweeps()
    assert len({(row.name, row.shapes["gpu"]) for row in rows}) == len(rows)
    assert all(row.predicted is None for row in rows)
    seen = set()
    for row in rows:
        calls.clear()
        stem, tile = row.variant.split("@")
        if row.family == "gemm":
            row.run({"a": 0, "b": 0, "a16": 0, "b16": 0, "out": 0})
            assert calls == [("gemm", "wgmma", tile)], row.name
            seen.add(("gemm", "forward", tile))
        else:
            kernels, tile = tile.split(":")
            row.run({"shape": row.shapes["gpu"], "x": 0, "w": 0, "grad_y": 0, "out": SimpleNamespace(shape=(1,))})
            pass_ = "dgrad" if row.op == "conv2d_dgrad" else "forward"
            assert calls == [(conv2d_wgmma if kernels == "wgmma" else conv2d_nhwc, pass_, tile)], row.name
            seen.add((kernels, pass_, tile))
        assert row.unavailable("cpu")  # GPU only
    assert {("gemm", "forward", c.name) for c in cuda_gemm.CONFIGS["wgmma"]} <= seen
    assert {("wgmma", p, c.name) for p, configs in conv2d_wgmma.PASS_CONFIGS.items() for c in configs} <= seen
    assert {("tc", "forward", c.name) for c in conv2d_nhwc.CONFIGS} <= seen


def test_bench_sweep_on_the_cpu_skips_every_row_and_says_so(capsys):
    from dlgpu.bench import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.main(parser.parse_args(["gemm", "conv2d", "--sweep", "--backend", "cpu"])) == 1
    out = capsys.readouterr().out
    assert "skipped 12 matmul rows" in out and "nothing ran" in out
    assert len(cli.benchmarks_for(["gemm"], sweep=True)) == 12 and cli.benchmarks_for(["train"], sweep=True) == []


def test_cudnn_baselines_run_with_its_own_autotuning(monkeypatch):
    """On the GPU the PyTorch baseline asks cuDNN to time its algorithms per shape (torch.backends.cudnn
    .benchmark), so the ratio is against cuDNN at its best rather than its first guess."""
    from types import SimpleNamespace

    fake_torch = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True),
                                 backends=SimpleNamespace(cudnn=SimpleNamespace(benchmark=False)))
    monkeypatch.setattr(run, "import_optional", lambda name: fake_torch if name == "torch" else None)
    case = dataclasses.replace(CASE["relu_forward"], torch_baseline=lambda torch, d: None)
    gpu = _FakeGpu(name="cuda", xp=np, timer=ScriptedTimer([]), cache_bytes=1 << 12, device={"name": "fake"},
                   max_rotation_bytes=1 << 20, warmup=1, reps=3)
    assert [b.name for b in run.baselines_for(case, gpu)] == ["torch"]
    assert fake_torch.backends.cudnn.benchmark is True
    fake_torch.backends.cudnn.benchmark = False
    run.baselines_for(case, dataclasses.replace(_cpu_backend(ScriptedTimer([])), xp=np))  # the CPU: left alone
    assert fake_torch.backends.cudnn.benchmark is False


def test_the_result_so_far_follows_every_case():
    """run_benchmarks hands the result so far to ``partial`` after each case (dlgpu bench --json rewrites its
    file then), so a run cut by a time limit keeps the rows it measured; the last result says complete."""
    shapes = {"gpu": (256,), "cpu": (256,), "cpu_quick": (256,)}
    cases_ = [dataclasses.replace(CASE[op], shapes=shapes, reference=None, xp_baseline=None)
              for op in ("relu_forward", "relu_backward")]
    seen = []
    result = run.run_benchmarks(cases_, _cpu_backend(ScriptedTimer([1.0, 2.0])), True, ceilings={},
                                partial=seen.append)
    assert [len(r["rows"]) for r in seen] == [1, 2] and not any(r["complete"] for r in seen)
    assert result["complete"] is True and result["rows"] == seen[-1]["rows"]
