"""``dlgpu bench``: the command line over every stem's benchmarks (and the training step)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from dlgpu import arguments, cases
from dlgpu.bench import train
from dlgpu.bench.ceilings import measure_ceilings
from dlgpu.bench.machines import cpu_machine, cuda_machine, import_optional, run_metadata
from dlgpu.bench.report import print_result, write_plot
from dlgpu.bench.run import run_benchmarks
from dlgpu.cases.case import Benchmark
from dlgpu.device import gpu_probe
from dlgpu.errors import ArgumentError, install_hint

# Every kernel stem's benchmarks, then the whole training step.
FAMILIES = (*cases.STEMS, train.FAMILY)
NO_GPU_MESSAGE = "no GPU found: benchmarking the CPU backend against the reference"


def benchmarks_for(families, sweep: bool = False) -> list[Benchmark]:
    """The benchmarks of the named families (every family when empty), or with ``sweep`` their sweep rows;
    the train family has rows of its own."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ArgumentError(f"bench: unknown famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                            f"known: {', '.join(FAMILIES)}")
    stems = [f for f in families or FAMILIES if f in cases.STEMS]
    if not stems:
        return []
    return cases.sweeps(stems) if sweep else cases.benchmarks(stems)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("families", nargs="*", metavar="FAMILY",
                        help=f"families to benchmark: kernel stems and train (default: all of {', '.join(FAMILIES)})")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (GPU: same sizes; CPU: smaller sizes) for a fast pass")
    parser.add_argument("--json", metavar="FILE", type=arguments.output_file,
                        help="write the rows, the ceilings and the run's metadata (date, versions, commit, "
                        "kernel hash, machine) as JSON")
    parser.add_argument("--plot", metavar="FILE.png", type=arguments.output_file,
                        help="draw the times as a PNG (needs matplotlib)")
    parser.add_argument("--sweep", action="store_true",
                        help="instead of the benchmarks, their target rows once per tile configuration (GEMM and "
                        "convolution; GPU only), to see which tile each shape wants; no training rows")
    parser.add_argument("--backend", choices=("cuda", "cpu"),
                        help="default: cuda when a GPU is found, else cpu (the CPU backend against the reference)")
    # the old spelling, kept so scripts that pass it still run
    parser.add_argument("--cpu", dest="backend", action="store_const", const="cpu",
                        help="deprecated: same as --backend cpu")


def _pyplot_missing() -> str | None:
    """Why --plot cannot draw here (matplotlib missing), asked before any benchmark runs."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"dlgpu bench: --plot needs matplotlib, which is not importable here ({exc}); " \
               + install_hint("examples")
    return None


def main(args: argparse.Namespace) -> int:
    """Run ``dlgpu bench``: 0 when every case ran; 1 when a dlgpu call failed, when nothing could run here
    (every row skipped, e.g. GPU-only families on a CPU) or when a needed package or the GPU is missing;
    2 on bad arguments."""
    from rich.console import Console
    from rich.progress import Progress

    # Piped into a file the table keeps rich's 80 columns (or $COLUMNS): the columns fold to fit.
    console = Console()
    try:
        sweep = getattr(args, "sweep", False)
        benchmarks = benchmarks_for(args.families, sweep)
    except ArgumentError as exc:
        console.print(str(exc), markup=False)
        return 2
    if args.plot and (why_not := _pyplot_missing()):
        console.print(why_not, markup=False)
        return 1
    with_train = (not args.families or train.FAMILY in args.families) and not sweep
    quick = bool(args.quick)
    backend = getattr(args, "backend", None)
    has_gpu, why = (False, None) if backend == "cpu" else gpu_probe()
    if backend == "cuda" and not has_gpu:
        console.print(f"dlgpu bench: --backend cuda, but no GPU found ({why})", markup=False)
        return 1
    if has_gpu:
        machine = cuda_machine(quick)
        console.print(f"benchmarking the CUDA backend on {machine.device['name']}", markup=False)
    elif backend == "cpu":
        against = "PyTorch and the reference" if import_optional("torch") else "the reference"
        console.print(f"benchmarking the CPU backend against {against} (--backend cpu)", markup=False)
        machine = cpu_machine(quick)
    else:
        print(NO_GPU_MESSAGE, flush=True)
        console.print(f"({why})", markup=False)
        machine = cpu_machine(quick)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ceilings", total=len(benchmarks) + 1 + with_train)
        ceilings = measure_ceilings(machine, quick)
        progress.advance(task)

        def step(benchmark: Benchmark) -> None:
            progress.update(task, advance=1, description=benchmark.name)

        meta = run_metadata(machine)  # once: the partial files and the final result carry the same

        def partial(so_far: dict) -> None:  # a step cut by its time limit keeps what it measured
            _write_json(args.json, {**so_far, "meta": meta})

        result = run_benchmarks(benchmarks, machine, quick, ceilings=ceilings, progress=step,
                                partial=partial if args.json else None)
        if with_train:
            progress.update(task, description="train")
            train_rows = train.rows(machine, quick)
            result["rows"] += train_rows
            result["errors"] += [f"{r['op']}: {r['error']}" for r in train_rows if r.get("error")]
            progress.advance(task)
    result["meta"] = meta
    print_result(result, console)
    if args.json:
        _write_json(args.json, result)
        console.print(f"wrote {args.json}", markup=False)
    ran = [r for r in result["rows"] if not r.get("skipped")]
    if args.plot and ran:
        why_not = write_plot(result, args.plot)
        console.print(why_not or f"wrote {args.plot}", markup=False)
    if not ran:
        # Decided: a run that measured nothing fails, so a script never mistakes it for a result.
        console.print(f"nothing ran: every row of {', '.join(args.families) or 'these families'} was skipped on "
                      f"the {machine.name} backend (see the reasons above); exit status 1", markup=False)
        return 1
    return 1 if result["errors"] else 0


def _write_json(path, result: dict) -> None:
    """The result as JSON, replacing ``path`` at once (a reader never sees half a file)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    os.replace(partial, target)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    return str(value)

