"""``dlgpu check``: every op, forward and backward, against the float64 reference.

A thin loop over the checks each stem declares (:mod:`dlgpu.cases`): fresh
random inputs (never zeros) on shapes that include 1, primes and sizes that fit
no tile, the op run on the chosen backend with its output poisoned with NaN
where it takes one, and every output compared with ``dlgpu.reference`` under
the tolerance table of ``dlgpu.testing``.  The table lists op, shapes, the
largest relative error, the bound and the verdict; the exit code is 1 if any
check fails.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from dlgpu import arguments, cases
from dlgpu.cases.case import Check, Target, cpu_target, cuda_target
from dlgpu.device import gpu_available
from dlgpu.errors import BackendUnavailableError


@dataclass
class Outcome:
    op: str
    shapes: str
    error: float
    bound: float
    status: str  # "pass", "FAIL", or "not on this backend"


def run_check(check: Check, target: Target, seed: int) -> Outcome:
    """Run one check; the outcome reports the output closest to (or furthest past) its bound."""
    try:
        measured = check.measure(np.random.default_rng(seed), target)
    except BackendUnavailableError:
        return Outcome(check.op, check.label, float("nan"), float("nan"), "not on this backend")
    _, worst, bound = max(measured, key=lambda m: m[1] / m[2])
    return Outcome(check.op, check.label, worst, bound, "pass" if worst <= bound else "FAIL")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("cpu", "cuda"), help="default: cuda when a GPU is found, else cpu")
    parser.add_argument("--quick", action="store_true", help="fewer and smaller shapes")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the inputs and outputs; the CUDA backend computes float32 only "
                        "(default: float32)")
    parser.add_argument("--seed", type=arguments.seed, default=0,
                        help="seed of the random inputs, >= 0; case i draws from seed + i (default: 0)")


def main(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    backend_name = args.backend
    if backend_name is None:
        backend_name = "cuda" if gpu_available() else "cpu"
        if backend_name == "cpu":
            console.print("[bold yellow]no GPU found[/]: checking the CPU backend (numba kernels)")
    elif backend_name == "cuda" and not gpu_available():
        console.print("[bold red]--backend cuda: no GPU found (CuPy missing or no CUDA device)[/]")
        return 1
    if backend_name == "cuda" and args.dtype != "float32":
        console.print(f"[bold red]--backend cuda computes float32 only, not {args.dtype}[/]")
        return 2
    target = cuda_target() if backend_name == "cuda" else cpu_target(args.dtype)
    checks = cases.checks(args.quick)
    outcomes = []
    start = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"checking {len(checks)} cases on {backend_name}", total=len(checks))
        for index, check in enumerate(checks):
            progress.update(task, description=f"{check.op} {check.label}")
            outcomes.append(run_check(check, target, args.seed + index))
            progress.advance(task)
    # No vertical rules and short numeric columns, so op and shapes keep most of an 80-column terminal.
    table = Table(title=f"dlgpu check: {backend_name} backend, {args.dtype}, vs float64 reference",
                  box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("op", no_wrap=True)  # whole names: the shapes fold instead
    table.add_column("shapes", overflow="fold")
    table.add_column("rel. error", justify="right", no_wrap=True)
    table.add_column("bound", justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for o in outcomes:
        style = {"pass": "green", "FAIL": "bold red"}.get(o.status, "yellow")
        error = "-" if np.isnan(o.error) else f"{o.error:.2e}"
        bound = "-" if np.isnan(o.bound) else f"{o.bound:.0e}"
        shown = o.status if o.status in ("pass", "FAIL") else "n/a"  # the line under the table says why
        table.add_row(o.op, o.shapes, error, bound, f"[{style}]{shown}[/]")
    console.print(table)
    console.print("rel. error = ||out - reference|| / ||reference|| of the output nearest its bound; bound: the "
                  "tolerance table's limit for the dtype and precision", markup=False)
    failed = sum(o.status == "FAIL" for o in outcomes)
    missing = sum(o.status not in ("pass", "FAIL") for o in outcomes)
    passed = len(outcomes) - failed - missing
    console.print(
        f"{passed} passed, {failed} failed"
        + (f", {missing} not implemented on the {backend_name} backend yet" if missing else "")
        + f" ({time.perf_counter() - start:.1f} s)"
    )
    return 1 if failed else 0
