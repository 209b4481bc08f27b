"""The device's measured limits, against which every row states its share.

A large device-to-device copy (bytes read + written per second), a large SGEMM
through cuBLAS (CuPy), and a BF16 product (CuPy if it has bfloat16, else
PyTorch, else fp16 through CuPy, named so); on the CPU, numpy.copyto (the
faster of one large copy and rotated 4 MiB copies, as the rows stream) and
NumPy's BLAS.  Measured once per run on the same device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlgpu.bench.machines import Machine, import_optional
from dlgpu.bench.timing import Timing, rotation_count, summarize
from dlgpu.cases.case import randn


def measure_ceilings(machine: Machine, quick: bool) -> dict[str, dict[str, Any]]:
    """The device's measured limits: copy bandwidth and matrix-product rates."""
    xp = machine.xp
    ceilings: dict[str, dict[str, Any]] = {}

    def timed(fn, warmup=3, reps=10) -> Timing:
        return summarize(machine.timer.measure(fn, warmup=warmup, reps=reps))

    # A copy much larger than any cache: bytes read plus bytes written.
    nbytes = (1 << 30 if not quick else 512 << 20) if machine.name == "cuda" else (64 << 20)
    src = randn(xp, (nbytes // 4,), 1)
    dst = xp.empty_like(src)
    if machine.name == "cuda":
        how = f"cudaMemcpyAsync device-to-device, {nbytes >> 20} MiB"

        def copy(_i):
            dst.data.copy_from_device_async(src.data, nbytes)
    else:
        how = f"numpy.copyto, {nbytes >> 20} MiB"

        def copy(_i):
            np.copyto(dst, src)
    t = timed(copy)
    ceilings["copy"] = {"gbps": 2 * nbytes / (t.median_ms * 1e-3) / 1e9, "ms": t.median_ms,
                        "bytes": 2 * nbytes, "how": how + ", bytes read + written"}
    del src, dst
    if machine.name == "cpu":
        rotated = _rotated_cpu_copy(machine, timed)
        if rotated["gbps"] > ceilings["copy"]["gbps"]:
            ceilings["copy"] = rotated

    n = (8192 if not quick else 4096) if machine.name == "cuda" else (1024 if quick else 2048)
    a = randn(xp, (n, n), 2)
    b = randn(xp, (n, n), 3)
    t = timed(lambda _i: xp.matmul(a, b), warmup=2, reps=5 if quick else 10)
    lib = "cuBLAS through cupy.matmul" if machine.name == "cuda" else "numpy.matmul (BLAS)"
    ceilings["sgemm"] = {"tflops": 2 * n**3 / (t.median_ms * 1e-3) / 1e12, "ms": t.median_ms,
                         "shape": f"{n}x{n}x{n}", "how": f"float32 {lib}"}
    del a, b
    if machine.name == "cuda":
        ceilings["bf16_gemm"] = _half_gemm_ceiling(machine, n, quick, timed)
    machine.release()
    return ceilings


_CPU_COPY_CHUNK = 4 << 20


def _rotated_cpu_copy(machine: Machine, timed) -> dict[str, Any]:
    """numpy.copyto of 4 MiB arrays, rotated through as many sets as a benchmark row would use.

    The rows stream sets of a few MiB in rotation; one copy of a 64 MiB array
    is a different access pattern, and on the 2-core EPYC VM this project is
    developed on it ran at about 14 GB/s while the rotated copies (and NumPy's
    own relu, rotated the same way) ran at 21-25 GB/s, so every memory-bound
    row read 200-280% of the large-copy ceiling.  The CPU ceiling is the
    faster of the two copies.
    """
    xp = machine.xp
    n_sets = rotation_count(2 * _CPU_COPY_CHUNK, machine.cache_bytes, max_total_bytes=machine.max_rotation_bytes)
    sources = [randn(xp, (_CPU_COPY_CHUNK // 4,), 10 + i) for i in range(n_sets)]
    targets = [xp.zeros_like(a) for a in sources]  # written once: no first-touch page faults in the timing
    t = timed(lambda i: np.copyto(targets[i % n_sets], sources[i % n_sets]), warmup=n_sets, reps=max(10, 2 * n_sets))
    return {"gbps": 2 * _CPU_COPY_CHUNK / (t.median_ms * 1e-3) / 1e9, "ms": t.median_ms, "bytes": 2 * _CPU_COPY_CHUNK,
            "how": f"numpy.copyto of {_CPU_COPY_CHUNK >> 20} MiB arrays rotated through {n_sets} sets, "
                   "bytes read + written"}


def _half_gemm_ceiling(machine: Machine, n: int, quick: bool, timed) -> dict[str, Any]:
    """BF16 product through CuPy if it can, else PyTorch, else fp16 through CuPy (named so)."""
    cp = machine.xp
    reps = 5 if quick else 10
    attempts = []
    ml_dtypes = import_optional("ml_dtypes")
    if ml_dtypes is not None:
        def cupy_bf16():
            a = cp.asarray(randn(np, (n, n), 2, ml_dtypes.bfloat16))
            b = cp.asarray(randn(np, (n, n), 3, ml_dtypes.bfloat16))
            return (lambda _i: cp.matmul(a, b)), "bf16", "bfloat16 cuBLAS through cupy.matmul"
        attempts.append(cupy_bf16)
    torch = import_optional("torch")
    if torch is not None:
        def torch_bf16():
            a = torch.from_dlpack(randn(cp, (n, n), 2)).to(torch.bfloat16)
            b = torch.from_dlpack(randn(cp, (n, n), 3)).to(torch.bfloat16)
            return (lambda _i: torch.matmul(a, b)), "bf16", "bfloat16 cuBLAS through torch.matmul"
        attempts.append(torch_bf16)

    def cupy_fp16():
        a = randn(cp, (n, n), 2, np.float16)
        b = randn(cp, (n, n), 3, np.float16)
        return (lambda _i: cp.matmul(a, b)), "fp16", "float16 cuBLAS through cupy.matmul (no bfloat16 available)"
    attempts.append(cupy_fp16)

    # Measure every way that works and keep the fastest: a library that accepts bfloat16
    # but lacks a tensor-core path for it must not set a low ceiling.
    measured, errors = [], []
    for attempt in attempts:
        if measured and attempt is cupy_fp16:
            break                         # fp16 only stands in when no bf16 product ran
        try:
            fn, dtype, how = attempt()
            t = timed(fn, warmup=2, reps=reps)
        except Exception as exc:  # noqa: BLE001 - try the next way
            errors.append(f"{attempt.__name__}: {type(exc).__name__}: {exc}")
            continue
        measured.append({"tflops": 2 * n**3 / (t.median_ms * 1e-3) / 1e12, "ms": t.median_ms,
                         "shape": f"{n}x{n}x{n}", "dtype": dtype, "how": how})
    if not measured:
        return {"tflops": None, "how": "unavailable", "errors": errors}
    best = max(measured, key=lambda m: m["tflops"])
    others = [f"{m['how']}: {m['tflops']:.1f} TFLOP/s" for m in measured if m is not best]
    return {**best, **({"also_measured": others} if others else {})}
