"""Benchmarks into rows: rotated inputs, the dlgpu call and each baseline timed, rates and ratios.

Rows: family, op, variant, shape, dtype, precision, backend, bytes, flops, ms
(median) with p10/p90, baseline, baseline_ms, ratio (baseline_ms / ms: above
1 means dlgpu is faster), gbps, tflops, pct_of_ceiling; on the GPU, the
case's prediction (``predicted``) and whether the row fell below, within or
above it (``verdict``).  A failing call is an
error row, never a crash; a benchmark the machine cannot run is a skipped row
with its reason.  A benchmark never asserts a speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dlgpu.bench.ceilings import measure_ceilings
from dlgpu.bench.machines import Machine, import_optional
from dlgpu.bench.timing import Timing, rotation_count, summarize
from dlgpu.cases.case import Benchmark


@dataclass
class Baseline:
    name: str
    fn: Callable[[dict], Any]


def baselines_for(case: Benchmark, machine: Machine) -> list[Baseline]:
    """The baselines a case is compared with on this machine, the preferred one first.

    GPU: PyTorch where the case has a PyTorch version and torch sees the GPU,
    else the CuPy expression.  CPU: PyTorch's CPU kernels where torch is installed and the case
    has a float32 PyTorch version, then dlgpu.reference, and the NumPy expression where the case
    has one.
    """
    xp = machine.xp
    torch = import_optional("torch") if case.torch_baseline is not None else None
    if machine.name == "cuda":
        torch_runs = torch is not None and torch.cuda.is_available()
    else:
        # PyTorch's CPU kernels are the bar the CPU backend is held to (issue 18), in float32 only: the
        # CPU backend has no 16-bit or TF32 modes of its own to compare.
        torch_runs = torch is not None and case.precision in (None, "ieee") and case.dtype == "float32"
    out = [Baseline("torch", lambda d, t=torch: case.torch_baseline(t, d))] if torch_runs else []
    if torch_runs and machine.name == "cuda":
        # cuDNN at its best: it times its algorithms on the first call of each shape (in the warm-up), as
        # PyTorch users with fixed shapes ask it to; left to its heuristics, the first H100 record's
        # channels_last bf16 dgrad baselines ran at a third of our kernels' speed.
        torch.backends.cudnn.benchmark = True
    if machine.name == "cuda":
        if not out and case.xp_baseline is not None:
            out.append(Baseline("cupy", lambda d: case.xp_baseline(xp, d)))
    else:
        if case.reference is not None:
            out.append(Baseline("reference", case.reference))
        if case.xp_baseline is not None:
            out.append(Baseline("numpy", lambda d: case.xp_baseline(np, d)))
    return out


def _set_bytes(inputs: dict) -> int:
    return sum(int(v.nbytes) for v in inputs.values() if hasattr(v, "nbytes"))


# The measured matrix-product ceiling of each precision.  TF32 has none: measured against the float32
# (non-tensor-core) product its rows read several times 100%, so they show no share rather than a wrong one.
_GEMM_CEILING = {"ieee": "sgemm", "bf16": "bf16_gemm", "fp16": "bf16_gemm"}


def _rate_fields(case: Benchmark, shape: tuple, ms: float | None, ceilings: dict) -> dict[str, Any]:
    if ms is None or ms <= 0:
        return {"gbps": None, "tflops": None, "pct_of_ceiling": None}
    seconds = ms * 1e-3
    nbytes = case.bytes_moved(shape)
    gbps = nbytes / seconds / 1e9
    tflops = case.flops(shape) / seconds / 1e12 if case.flops else None
    pct = None
    if case.bound == "memory":
        ceiling = (ceilings.get("copy") or {}).get("gbps")
        if ceiling:
            pct = 100.0 * gbps / ceiling
    elif tflops is not None and case.precision in _GEMM_CEILING:
        ceiling = (ceilings.get(_GEMM_CEILING[case.precision]) or {}).get("tflops")
        if ceiling:
            pct = 100.0 * tflops / ceiling
    return {"gbps": gbps, "tflops": tflops, "pct_of_ceiling": pct}


def _base_row(case: Benchmark, machine: Machine, shape: tuple) -> dict[str, Any]:
    row = {
        "family": case.family, "op": case.op, "variant": case.variant, "shape": case.label(shape),
        "dtype": case.dtype, "precision": case.precision, "backend": machine.name,
        "bytes": case.bytes_moved(shape), "flops": case.flops(shape) if case.flops else None,
    }
    if case.note:
        row["note"] = case.note
    if case.predicted is not None and machine.name == "cuda":  # predictions are about GPUs
        row["predicted"] = case.predicted.as_dict()
    return row


_EMPTY_RESULT = {"ms": None, "baseline": None, "baseline_ms": None, "ratio": None,
                 "gbps": None, "tflops": None, "pct_of_ceiling": None}


def prepare_inputs(case: Benchmark, machine: Machine, shape: tuple) -> list[dict]:
    """The rotation: enough input sets, each made from its own seed, to exceed the machine's cache."""
    first = case.make_inputs(machine.xp, shape, 0)
    n_sets = rotation_count(_set_bytes(first), machine.cache_bytes, max_total_bytes=machine.max_rotation_bytes)
    sets = [first] + [case.make_inputs(machine.xp, shape, 1000 * k) for k in range(1, n_sets)]
    machine.synchronize()
    return sets


def time_case(case: Benchmark, machine: Machine, shape: tuple, sets: list[dict],
              ceilings: dict) -> list[dict[str, Any]]:
    """Time the dlgpu call and each baseline over the rotated ``sets``; one row per baseline."""
    n_sets = len(sets)
    warmup = max(machine.warmup, n_sets) if machine.warm_every_set else machine.warmup

    def timed(fn) -> Timing:
        return summarize(machine.timer.measure(lambda i: fn(sets[i % n_sets]), warmup=warmup, reps=machine.reps))

    row = {**_base_row(case, machine, shape), "rotation_sets": n_sets}
    try:
        t = timed(case.run)
        row.update(ms=t.median_ms, p10_ms=t.p10_ms, p90_ms=t.p90_ms, reps=t.reps)
    except Exception as exc:  # noqa: BLE001 - one failing op must not hide the others
        row.update(ms=None, error=f"dlgpu: {type(exc).__name__}: {exc}")
    row.update(_rate_fields(case, shape, row.get("ms"), ceilings))

    rows = []
    for baseline in baselines_for(case, machine) or [None]:
        r = dict(row)
        r.update(baseline=None, baseline_ms=None, ratio=None)
        if baseline is not None:
            r["baseline"] = baseline.name
            try:
                bt = timed(baseline.fn)
                r["baseline_ms"] = bt.median_ms
                if r.get("ms"):
                    r["ratio"] = bt.median_ms / r["ms"]
            except Exception as exc:  # noqa: BLE001
                r["baseline_error"] = f"{type(exc).__name__}: {exc}"
        if "predicted" in r:
            r["verdict"] = case.predicted.verdict(r)
        rows.append(r)
    return rows


def run_case(case: Benchmark, machine: Machine, quick: bool, ceilings: dict) -> list[dict[str, Any]]:
    """Make the inputs, time the dlgpu call and each baseline; one row per baseline (at least one)."""
    shape = case.shape_for(machine.name, quick)
    why_not = case.unavailable(machine.name) if case.unavailable else None
    if why_not:
        return [{**_base_row(case, machine, shape), **_EMPTY_RESULT, "skipped": why_not}]
    try:
        sets = prepare_inputs(case, machine, shape)
    except Exception as exc:  # noqa: BLE001
        return [{**_base_row(case, machine, shape), **_EMPTY_RESULT,
                 "error": f"inputs: {type(exc).__name__}: {exc}"}]
    try:
        return time_case(case, machine, shape, sets, ceilings)
    finally:
        del sets
        machine.release()


def run_benchmarks(cases: Sequence[Benchmark], machine: Machine, quick: bool, *, ceilings: dict | None = None,
                   progress: Callable[[Benchmark], None] | None = None,
                   partial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure ceilings (unless given) and every case; the whole result as one JSON-ready dict.

    ``partial`` gets the result so far (``"complete": False``) after every case, so that a run cut
    from outside (a GPU lease's time limit) still leaves the rows it measured."""
    if ceilings is None:
        ceilings = measure_ceilings(machine, quick)
    rows: list[dict[str, Any]] = []
    for case in cases:
        rows.extend(run_case(case, machine, quick, ceilings))
        if progress is not None:
            progress(case)
        if partial is not None:
            partial(_result(machine, quick, ceilings, rows, complete=False))
    return _result(machine, quick, ceilings, rows, complete=True)


def _result(machine: Machine, quick: bool, ceilings: dict, rows: list[dict[str, Any]], *,
            complete: bool) -> dict[str, Any]:
    return {
        "schema": 1,
        "backend": machine.name,
        "quick": quick,
        "complete": complete,
        "device": machine.device,
        "ceilings": ceilings,
        "rows": list(rows),
        # one line per failed dlgpu call (a case has one row per baseline, all sharing that call)
        "errors": list(dict.fromkeys(f"{r['op']}: {r['error']}" for r in rows if r.get("error"))),
    }
