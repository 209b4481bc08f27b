"""benchmarks/bench_<stem>.py under pytest-benchmark: the same benchmarks, rows in ``extra_info``.

Only the benchmark shims import this module (it imports pytest); nothing in
dlgpu's import path does.
"""

from __future__ import annotations

from typing import Any

import pytest

from dlgpu.bench.ceilings import measure_ceilings
from dlgpu.bench.machines import cpu_machine, cuda_machine
from dlgpu.bench.run import prepare_inputs, time_case
from dlgpu.cases.case import Benchmark
from dlgpu.device import gpu_probe

_CEILINGS_BY_BACKEND: dict[tuple[str, bool], dict] = {}


def pytest_benchmark_case(benchmark, case: Benchmark, backend_name: str, *, quick: bool = True) -> dict[str, Any]:
    """Benchmark one case under pytest-benchmark; returns the row it put in ``extra_info``.

    pytest-benchmark times with the host clock.  A GPU call returns as soon as
    its kernel is queued, so ``benchmark(fn)`` alone would time the launch, not
    the kernel.  We use ``benchmark.pedantic`` on a call that synchronizes the
    stream (a host-side view: kernel + launch + about 10 us of synchronization),
    and put the device time from CUDA events -- the number the speed targets
    are judged by, measured exactly as ``dlgpu bench`` does -- into
    ``extra_info`` together with GB/s, the baseline's time and the ratio.
    """
    if backend_name == "cuda":
        has_gpu, why = gpu_probe()
        if not has_gpu:
            pytest.skip(f"gpu benchmark: {why}")
        machine = cuda_machine(quick)
    else:
        machine = cpu_machine(quick)
    why_not = case.unavailable(machine.name) if case.unavailable else None
    if why_not:
        pytest.skip(why_not)
    key = (machine.name, quick)
    if key not in _CEILINGS_BY_BACKEND:
        _CEILINGS_BY_BACKEND[key] = measure_ceilings(machine, quick)
    ceilings = _CEILINGS_BY_BACKEND[key]
    shape = case.shape_for(machine.name, quick)
    sets = prepare_inputs(case, machine, shape)
    try:
        rows = time_case(case, machine, shape, sets, ceilings)
        if rows[0].get("error"):
            pytest.fail(f"{case.name}: {rows[0]['error']}")
        counter = iter(range(1 << 62))

        def synchronized_call():
            case.run(sets[next(counter) % len(sets)])
            machine.synchronize()

        benchmark.pedantic(synchronized_call, rounds=20 if machine.name == "cuda" else 5, warmup_rounds=2)
    finally:
        del sets
        machine.release()
    row = rows[0]
    benchmark.extra_info.update({
        "timing": "cuda-events" if machine.name == "cuda" else "wall-clock",
        "device": machine.device.get("name"),
        "shape": row["shape"], "dtype": row["dtype"], "precision": row["precision"],
        "ms": row["ms"], "p10_ms": row.get("p10_ms"), "p90_ms": row.get("p90_ms"),
        "gbps": row["gbps"], "tflops": row["tflops"], "pct_of_ceiling": row["pct_of_ceiling"],
        "copy_ceiling_gbps": (ceilings.get("copy") or {}).get("gbps"),
        "baselines": {r["baseline"]: {"ms": r["baseline_ms"], "ratio": r["ratio"]}
                      for r in rows if r.get("baseline")},
        "baseline": row["baseline"], "baseline_ms": row["baseline_ms"], "ratio": row["ratio"],
    })
    return row


def benchmark_tests(family: str):
    """(test_gpu, test_cpu): pytest-benchmark tests over every benchmark of ``family``, for a shim to bind.

    The CPU half leaves out the benchmarks that run on the GPU only.
    """
    from dlgpu import cases

    everything = cases.benchmarks([family])
    on_cpu = [b for b in everything if not (b.unavailable and b.unavailable("cpu"))]

    def case_id(case: Benchmark) -> str:
        return f"{case.id}-{case.label(case.shape_for('cuda', True))}"

    @pytest.mark.gpu
    @pytest.mark.parametrize("case", everything, ids=case_id)
    def test_gpu(benchmark, case):
        pytest_benchmark_case(benchmark, case, "cuda")

    @pytest.mark.parametrize("case", on_cpu, ids=case_id)
    def test_cpu(benchmark, case):
        pytest_benchmark_case(benchmark, case, "cpu")

    return test_gpu, test_cpu
