"""``dlgpu check``: every op, forward and backward, against the float64 reference.

Each case draws fresh random inputs (never zeros) on shapes that include 1,
primes and sizes that fit no tile, runs the op on the chosen backend with
its output poisoned with NaN where the op takes ``out=``, and compares every
output with ``dlgpu.reference`` under the tolerance table of
``dlgpu.testing``.  The table lists op, shapes, the largest relative error,
the bound and the verdict; the exit code is 1 if any case fails.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import dlgpu.functional as F
import dlgpu.reference as R
from dlgpu.device import gpu_available
from dlgpu.errors import BackendUnavailableError
from dlgpu.testing import random_array, rel_error, tolerance


@dataclass
class Outcome:
    op: str
    shapes: str
    error: float
    bound: float
    status: str  # "pass", "FAIL", or "not on this backend"


class Backend:
    """Moves test data to the backend's arrays and back."""

    def __init__(self, name: str, dtype):
        self.name = name
        self.dtype = np.dtype(dtype)
        if name == "cuda":
            import cupy

            self.xp = cupy
        else:
            self.xp = np

    def array(self, host: np.ndarray):
        return self.xp.asarray(host)

    def poisoned(self, shape):
        return self.xp.full(shape, np.nan, dtype=self.dtype)


# A case returns (label, out, ref, elementwise) triples for every output it checks.
Result = tuple[str, object, np.ndarray, bool]
Case = tuple[str, str, Callable[[np.random.Generator, Backend], list[Result]]]


def _matmul_cases(quick: bool) -> list[Case]:
    sizes = [(1, 1, 1), (7, 13, 5), (33, 65, 31)] + ([] if quick else [(64, 64, 64), (127, 1, 67), (1, 257, 3)])
    cases = []
    for m, n, k in sizes:
        for ta in (False, True):
            for tb in (False, True):
                def run(rng, be, m=m, n=n, k=k, ta=ta, tb=tb):
                    a = random_array(rng, (k, m) if ta else (m, k), be.dtype)
                    b = random_array(rng, (n, k) if tb else (k, n), be.dtype)
                    g = random_array(rng, (m, n), be.dtype)
                    out = F.matmul(be.array(a), be.array(b), transpose_a=ta, transpose_b=tb, out=be.poisoned((m, n)))
                    ga, gb = F.matmul_backward(be.array(g), be.array(a), be.array(b), transpose_a=ta, transpose_b=tb)
                    ra, rb = R.matmul_backward(g, a, b, transpose_a=ta, transpose_b=tb)
                    return [
                        ("c", out, R.matmul(a, b, transpose_a=ta, transpose_b=tb), False),
                        ("grad_a", ga, ra, False),
                        ("grad_b", gb, rb, False),
                    ]

                flags = ("T" if ta else "N") + ("T" if tb else "N")
                cases.append(("matmul", f"{m}x{n}x{k} {flags}", run))
    return cases


def _linear_cases(quick: bool) -> list[Case]:
    sizes = [(1, 1, 1), (5, 13, 7), (33, 31, 65)] + ([] if quick else [(64, 784, 10)])
    cases = []
    for batch, fin, fout in sizes:
        for bias in (False, True):
            for act in (None, "relu"):
                def run(rng, be, batch=batch, fin=fin, fout=fout, bias=bias, act=act):
                    x = random_array(rng, (batch, fin), be.dtype)
                    w = random_array(rng, (fout, fin), be.dtype)
                    b = random_array(rng, (fout,), be.dtype) if bias else None
                    g = random_array(rng, (batch, fout), be.dtype)
                    y = F.linear(be.array(x), be.array(w), None if b is None else be.array(b), activation=act,
                                 out=be.poisoned((batch, fout)))
                    ref_y = R.linear(x, w, b, activation=act)
                    y_saved = ref_y.astype(be.dtype)
                    grads = F.linear_backward(be.array(g), be.array(x), be.array(w), y=be.array(y_saved), activation=act)
                    refs = R.linear_backward(g, x, w, y=y_saved, activation=act)
                    return [("y", y, ref_y, False)] + [
                        (name, out, ref, False) for name, out, ref in zip(("grad_x", "grad_w", "grad_b"), grads, refs)
                    ]

                label = f"{batch}x{fin}->{fout}" + (" +bias" if bias else "") + (" relu" if act else "")
                cases.append(("linear", label, run))
    return cases


def _conv_cases(quick: bool) -> list[Case]:
    #        N  C   H   W   K  R  S  stride pad dil
    configs = [
        (1, 1, 7, 7, 1, 3, 3, 1, 0, 1),
        (2, 3, 11, 13, 5, 3, 3, 2, 1, 1),
        (1, 2, 13, 13, 4, 3, 3, 3, 1, 2),
        (2, 5, 8, 8, 3, 1, 1, 1, 0, 1),
    ]
    if not quick:
        configs += [
            (2, 4, 9, 10, 3, 5, 5, 1, 2, 1),
            (1, 3, 15, 15, 4, 7, 7, 2, 3, 1),
            (3, 6, 14, 14, 16, 5, 5, 1, 0, 1),
        ]
    cases = []
    for n, c, h, w, k, r, s, stride, pad, dil in configs:
        for act in (None, "relu"):
            def run(rng, be, n=n, c=c, h=h, w=w, k=k, r=r, s=s, stride=stride, pad=pad, dil=dil, act=act):
                x = random_array(rng, (n, c, h, w), be.dtype)
                wt = random_array(rng, (k, c, r, s), be.dtype)
                b = random_array(rng, (k,), be.dtype)
                geometry = dict(stride=stride, padding=pad, dilation=dil)
                ref_y = R.conv2d(x, wt, b, activation=act, **geometry)
                y = F.conv2d(be.array(x), be.array(wt), be.array(b), activation=act, out=be.poisoned(ref_y.shape),
                             **geometry)
                g = random_array(rng, ref_y.shape, be.dtype)
                y_saved = ref_y.astype(be.dtype)
                grads = F.conv2d_backward(be.array(g), be.array(x), be.array(wt), y=be.array(y_saved), activation=act,
                                          **geometry)
                refs = R.conv2d_backward(g, x, wt, y=y_saved, activation=act, **geometry)
                return [("y", y, ref_y, False)] + [
                    (name, out, ref, False) for name, out, ref in zip(("grad_x", "grad_w", "grad_b"), grads, refs)
                ]

            label = f"{n}x{c}x{h}x{w} * {k}x{c}x{r}x{s} s{stride} p{pad} d{dil}" + (" relu" if act else "")
            cases.append(("conv2d", label, run))
    return cases


def _activation_cases(quick: bool) -> list[Case]:
    sizes = [(1,), (13,), (5, 7, 3)] + ([] if quick else [(1 << 16) + 3])
    cases = []
    for name in ("relu", "tanh", "sigmoid"):
        forward, backward = getattr(F, name), getattr(F, f"{name}_backward")
        ref_forward, ref_backward = getattr(R, name), getattr(R, f"{name}_backward")
        for shape in sizes:
            def run(rng, be, shape=shape, forward=forward, backward=backward, ref_forward=ref_forward,
                    ref_backward=ref_backward):
                shape = shape if isinstance(shape, tuple) else (shape,)
                x = random_array(rng, shape, be.dtype, scale=3.0)
                g = random_array(rng, shape, be.dtype)
                y_saved = ref_forward(x).astype(be.dtype)
                y = forward(be.array(x), out=be.poisoned(shape))
                gx = backward(be.array(g), be.array(y_saved), out=be.poisoned(shape))
                return [("y", y, ref_forward(x), True), ("grad_x", gx, ref_backward(g, y_saved), True)]

            cases.append((name, "x".join(map(str, shape if isinstance(shape, tuple) else (shape,))), run))
    return cases


def _pool_cases(quick: bool) -> list[Case]:
    configs = [((2, 3, 7, 9), 3, 2, 1), ((1, 1, 5, 5), 2, 2, 0), ((2, 4, 13, 11), 3, 1, 1)]
    if not quick:
        configs += [((4, 8, 56, 56), 3, 2, 1)]
    cases = []
    for shape, kernel, stride, pad in configs:
        def run(rng, be, shape=shape, kernel=kernel, stride=stride, pad=pad):
            x = random_array(rng, shape, be.dtype)
            y, argmax = F.max_pool2d(be.array(x), kernel, stride=stride, padding=pad)
            ref_y, ref_argmax = R.max_pool2d(x, kernel, stride=stride, padding=pad)
            g = random_array(rng, ref_y.shape, be.dtype)
            gx = F.max_pool2d_backward(be.array(g), be.array(ref_argmax), shape)
            argmax_match = np.array_equal(_host(argmax), ref_argmax)
            return [
                ("y", y, ref_y, True),
                # argmax must match exactly: report 0 when it does, inf when not
                ("argmax", np.zeros(1) if argmax_match else np.full(1, np.inf), np.zeros(1), True),
                ("grad_x", gx, R.max_pool2d_backward(g, ref_argmax, shape), True),
            ]

        cases.append(("max_pool2d", f"{'x'.join(map(str, shape))} k{kernel} s{stride} p{pad}", run))
    return cases


def _softmax_cases(quick: bool) -> list[Case]:
    configs = [(1, 1, 1.0), (5, 3, 1.0), (7, 10, 1e4), (64, 1000, 3.0)] + ([] if quick else [(1021, 10, 10.0)])
    cases = []
    for rows, classes, scale in configs:
        def run(rng, be, rows=rows, classes=classes, scale=scale):
            logits = random_array(rng, (rows, classes), be.dtype, scale=scale)
            labels = rng.integers(0, classes, size=rows).astype(np.int64)
            loss, probs = F.softmax_cross_entropy(be.array(logits), be.array(labels))
            ref_loss, ref_probs = R.softmax_cross_entropy(logits, labels)
            grad = F.softmax_cross_entropy_backward(be.array(ref_probs.astype(be.dtype)), be.array(labels))
            return [
                ("loss", _host(loss).reshape(1), np.reshape(ref_loss, 1), True),
                ("probs", probs, ref_probs, True),
                ("grad", grad, R.softmax_cross_entropy_backward(ref_probs.astype(be.dtype), labels), True),
            ]

        cases.append(("softmax_cross_entropy", f"{rows}x{classes} scale {scale:g}", run))
    return cases


def _sgd_cases(quick: bool) -> list[Case]:
    configs = [((17,), 0.0, 0.0), ((33, 65), 0.9, 0.0), ((5, 3, 7), 0.9, 1e-2)]
    cases = []
    for shape, momentum, decay in configs:
        def run(rng, be, shape=shape, momentum=momentum, decay=decay):
            param, grad, velocity = (random_array(rng, shape, be.dtype) for _ in range(3))
            ref_param, ref_velocity = param.astype(np.float64), velocity.astype(np.float64)
            R.sgd_step(ref_param, grad, ref_velocity, lr=0.1, momentum=momentum, weight_decay=decay)
            dev_param, dev_velocity = be.array(param), be.array(velocity)
            F.sgd_step(dev_param, be.array(grad), dev_velocity, lr=0.1, momentum=momentum, weight_decay=decay)
            return [("param", dev_param, ref_param, True), ("velocity", dev_velocity, ref_velocity, True)]

        cases.append(("sgd_step", f"{'x'.join(map(str, shape))} momentum {momentum:g} wd {decay:g}", run))
    return cases


def all_cases(quick: bool) -> list[Case]:
    builders = (_matmul_cases, _linear_cases, _conv_cases, _activation_cases, _pool_cases, _softmax_cases, _sgd_cases)
    return [case for build in builders for case in build(quick)]


def _host(array) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def run_case(case: Case, backend: Backend, seed: int) -> Outcome:
    op, shapes, run = case
    rng = np.random.default_rng(seed)
    try:
        results = run(rng, backend)
    except BackendUnavailableError:
        return Outcome(op, shapes, float("nan"), float("nan"), "not on this backend")
    # report the output that comes closest to (or furthest past) its bound
    errors = [(rel_error(out, ref), tolerance(backend.dtype, "ieee", elementwise)) for _, out, ref, elementwise in results]
    worst, bound = max(errors, key=lambda pair: pair[0] / pair[1])
    return Outcome(op, shapes, worst, bound, "pass" if worst <= bound else "FAIL")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("cpu", "cuda"), help="default: cuda when a GPU is found, else cpu")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller shapes")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    backend_name = args.backend
    if backend_name is None:
        backend_name = "cuda" if gpu_available() else "cpu"
        if backend_name == "cpu":
            console.print("[bold yellow]no GPU found[/]: checking the CPU backend (NumPy BLAS + numba)")
    elif backend_name == "cuda" and not gpu_available():
        console.print("[bold red]--backend cuda: no GPU found (CuPy missing or no CUDA device)[/]")
        return 1
    backend = Backend(backend_name, args.dtype)
    cases = all_cases(args.quick)
    outcomes = []
    start = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"checking {len(cases)} cases on {backend_name}", total=len(cases))
        for index, case in enumerate(cases):
            progress.update(task, description=f"{case[0]} {case[1]}")
            outcomes.append(run_case(case, backend, args.seed + index))
            progress.advance(task)
    table = Table(title=f"dlgpu check: {backend_name} backend, {args.dtype}, vs float64 reference")
    table.add_column("op", no_wrap=True)
    table.add_column("shapes", overflow="fold")
    table.add_column("max rel. error", justify="right", no_wrap=True)
    table.add_column("tolerance", justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for o in outcomes:
        style = {"pass": "green", "FAIL": "bold red"}.get(o.status, "yellow")
        error = "-" if np.isnan(o.error) else f"{o.error:.2e}"
        bound = "-" if np.isnan(o.bound) else f"{o.bound:.0e}"
        table.add_row(o.op, o.shapes, error, bound, f"[{style}]{o.status}[/]")
    console.print(table)
    failed = sum(o.status == "FAIL" for o in outcomes)
    missing = sum(o.status not in ("pass", "FAIL") for o in outcomes)
    passed = len(outcomes) - failed - missing
    console.print(
        f"{passed} passed, {failed} failed"
        + (f", {missing} not implemented on the {backend_name} backend yet" if missing else "")
        + f" ({time.perf_counter() - start:.1f} s)"
    )
    return 1 if failed else 0
