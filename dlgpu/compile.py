"""``dlgpu compile``: build every kernel ahead of time, in parallel, into the kernel cache.

Each family (``kernels/<stem>.cu``) x each of its ``// dlgpu-build:``
configurations x each target is one module, compiled by
:func:`dlgpu.cuda.compiler.compile_family`: the same options and the same
cache key as a launch, so the launches that follow (the GPU tests, a
benchmark) find every module in ``$DLGPU_CACHE_DIR`` and compile nothing.

Targets: ``--arch`` (comma-separated), else the target of each GPU CuPy sees
(``sm_90a`` on Hopper: what a launch there compiles for), else every target
the package claims (:data:`dlgpu.cuda.compiler.DEFAULT_ARCHS`).

Modules already in the cache are read in this process; the others are
compiled by ``--jobs`` worker processes (default: every CPU this process may
use), the largest sources first so that the longest compile starts at once.
NVRTC compiles one module on one core, so the wall time is about the longest
module's or the total over the jobs, whichever is larger.  One line goes to
stderr as each module finishes.

Output: a table of kernels under a heading per module (registers, static
shared memory, local memory; with ``--sass`` the counts of the
:data:`dlgpu.cuda.sass.INTERESTING` instructions that occur) that wraps to
fit the terminal (80 columns when piped), or with
``--json`` one JSON object on stdout.  Exit status: 0 when every module
compiled and no kernel spills or has a stack frame (and, with ``--sass``,
every ``// dlgpu-sass:`` requirement holds); 1 otherwise; 2 for an unknown
target or family, or a missing NVRTC or cuobjdump.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from dlgpu import arguments
from dlgpu.cuda import compiler
from dlgpu.errors import BackendUnavailableError, CompileError

JSON_SCHEMA = 1


def default_jobs() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def device_targets() -> list[str]:
    """The compile target of every GPU CuPy sees (as a launch there picks it); [] without CuPy or GPU."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        capabilities = {int(cupy.cuda.Device(i).compute_capability) for i in range(count)}
    except Exception:  # noqa: BLE001 - CuPy missing, or no driver/device: CuPy raises its own error types
        return []
    return [compiler.target_for_device(c) for c in sorted(capabilities)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``dlgpu compile``."""
    parser.add_argument(
        "--arch",
        help="comma-separated targets (default: the GPU's own target when CuPy sees one, "
        f"else {','.join(compiler.DEFAULT_ARCHS)})",
    )
    parser.add_argument(
        "--jobs", "-j", type=arguments.positive_count, default=None, metavar="N",
        help=f"compile N modules at once, one process each (default: all CPUs, here {default_jobs()})",
    )  # fmt: skip
    parser.add_argument(
        "--sass",
        action="store_true",
        help="disassemble with cuobjdump: count interesting instructions and check "
        "each kernel's '// dlgpu-sass:' requirements",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "families", nargs="*", help="kernel families (stems of kernels/*.cu); default: all"
    )


# ---------------------------------------------------------------- the build


@dataclasses.dataclass
class BuildResult:
    """One family x configuration x target of an offline build."""

    family: str
    arch: str
    defines: tuple[tuple[str, str], ...]
    module: compiler.CompiledModule | None = None
    error: str = ""
    sass_counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # wall time of the compile (0 when read from the cache)
    cpu_seconds: float = 0.0  # CPU time of the process that compiled it

    @property
    def config(self) -> str:
        return " ".join(f"{n}={v}" for n, v in self.defines)


@dataclasses.dataclass(frozen=True)
class _Task:
    family: str
    arch: str
    defines: tuple[tuple[str, str], ...]
    sass: bool
    kernels_dir: str
    cache_root: str | None  # None: the worker's default cache (the same $DLGPU_CACHE_DIR)


def _inspect(result: BuildResult, sass: bool, kernels_dir: str) -> BuildResult:
    """Spills and stack frames, and with ``sass`` the SASS counts and requirements, into ``result``.

    A broken ``// dlgpu-sass:`` line is this module's error, not the build's; a missing cuobjdump
    (SassUnavailableError) ends the build.
    """
    from dlgpu.cuda import sass as sass_tools

    try:
        _inspect_module(result, sass, kernels_dir, sass_tools)
    except sass_tools.SassUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _inspect_module(result: BuildResult, sass: bool, kernels_dir: str, sass_tools) -> None:
    module = result.module
    for name, res in sorted(module.resources.items()):
        if res.spill_bytes:
            result.problems.append(f"{name} ({result.arch}): {res.spill_bytes} bytes spilled")
        if res.stack_frame:
            result.problems.append(f"{name} ({result.arch}): {res.stack_frame} bytes stack frame")
    if sass and module.kind == "cubin":
        text = compiler.source_path(result.family, kernels_dir).read_text(encoding="utf-8")
        listing = sass_tools.disassemble(module.image)
        result.sass_counts = {k: sass_tools.count_instructions(ops) for k, ops in listing.items()}
        result.problems += sass_tools.check_sass(sass_tools.parse_sass_requirements(text), listing, result.arch)


def _run_task(task: _Task, cache: compiler.KernelCache | None = None) -> BuildResult:
    """Compile one module (in a worker process or in this one); errors are returned, not raised."""
    if cache is None and task.cache_root is not None:
        cache = compiler.KernelCache(task.cache_root)
    result = BuildResult(task.family, task.arch, task.defines)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result.module = compiler.compile_family(
            task.family, arch=task.arch, defines=task.defines, kernels_dir=task.kernels_dir,
            cache=cache, announce=False,
        )  # fmt: skip
    except CompileError as exc:
        result.error = str(exc)
    if not result.module or not result.module.from_cache:
        result.seconds, result.cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    return result if result.module is None else _inspect(result, task.sass, task.kernels_dir)


def _source_weight(task: _Task) -> int:
    """Bytes of source and headers: the longest compiles are started first."""
    path = compiler.source_path(task.family, task.kernels_dir)
    headers = compiler.included_headers(path, Path(task.kernels_dir))
    return path.stat().st_size + sum(len(data or b"") for _, data in headers)


def build_all(
    family_names: Iterable[str] | None = None,
    archs: Iterable[str] = compiler.DEFAULT_ARCHS,
    *,
    sass: bool = False,
    kernels_dir: str | os.PathLike | None = None,
    cache: compiler.KernelCache | None = None,
    jobs: int = 1,
    progress: Callable[[BuildResult, int, int], None] | None = None,
) -> list[BuildResult]:
    """Compile every configuration of every family for every target; never raises CompileError.

    Results come back in (family, target, configuration) order.  A result's
    ``problems`` lists spills, stack frames and (with ``sass``) broken
    ``// dlgpu-sass:`` requirements; ``error`` holds a failed compile's message.
    ``progress(result, done, total)`` is called as each module finishes.
    With ``jobs`` > 1 the modules not in the cache are compiled in that many
    worker processes (spawned: the parent may hold a CUDA context).
    """
    root = str(compiler.kernels_root(kernels_dir))
    order: list[BuildResult | _Task] = []  # a source that cannot be read is a result at once
    for family in family_names or compiler.families(root):
        try:
            configs = compiler.build_configurations(compiler.source_path(family, root).read_text(encoding="utf-8"))
        except (CompileError, ValueError, OSError) as exc:
            order.append(BuildResult(family, "-", (), error=str(exc)))
            continue
        order += [_Task(family, arch, defines, sass, root, None if cache is None else str(cache.root))
                  for arch in archs for defines in configs]
    results: dict[int, BuildResult] = {}

    def finished(index: int, result: BuildResult) -> None:
        results[index] = result
        if progress is not None:
            progress(result, len(results), len(order))

    pending: list[tuple[int, _Task]] = []
    for index, item in enumerate(order):
        if isinstance(item, BuildResult):
            finished(index, item)
            continue
        hit = _cache_hit(item, cache) if jobs > 1 else None
        if hit is None:
            pending.append((index, item))
        else:
            finished(index, _inspect(BuildResult(item.family, item.arch, item.defines, module=hit), sass, root))

    if jobs <= 1 or len(pending) <= 1:
        for index, task in pending:
            finished(index, _run_task(task, cache))
    else:
        pending.sort(key=lambda item: -_source_weight(item[1]))
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(pending)), mp_context=context) as pool:
            futures = {pool.submit(_run_task, task): index for index, task in pending}
            for future in concurrent.futures.as_completed(futures):
                finished(futures[future], future.result())
    return [results[i] for i in range(len(order))]


def _cache_hit(task: _Task, cache: compiler.KernelCache | None) -> compiler.CompiledModule | None:
    try:
        return compiler.cached_module(task.family, arch=task.arch, defines=task.defines,
                                      kernels_dir=task.kernels_dir, cache=cache)
    except CompileError:
        return None  # compiled in a worker, where the error lands in the result


# ---------------------------------------------------------------- output


def progress_line(result: BuildResult, done: int, total: int) -> str:
    """``[ 3/13] gemm_tc GEMM_TC_PRECISION=1 sm_90a: 12 kernels, 11.8 s``: one finished module."""
    width = len(str(total))
    what = " ".join(part for part in (result.family, result.config, result.arch) if part and part != "-")
    if result.error:
        outcome = "FAILED"
    elif result.module.from_cache:
        outcome = f"{len(result.module.resources)} kernels, from the cache"
    else:
        outcome = f"{len(result.module.resources)} kernels, {result.seconds:.1f} s"
    return f"[{done:>{width}}/{total}] {what}: {outcome}"


def to_json(results: list[BuildResult], *, archs: list[str], jobs: int, seconds: float) -> dict:
    """Everything the build found, as one JSON-ready object (``dlgpu compile --json``)."""
    modules = []
    for r in results:
        entry = {
            "family": r.family, "arch": r.arch, "defines": dict(r.defines),
            "from_cache": bool(r.module and r.module.from_cache),
            "seconds": round(r.seconds, 3), "cpu_seconds": round(r.cpu_seconds, 3),
            "error": r.error or None, "problems": r.problems, "kernels": [],
        }  # fmt: skip
        if r.module is not None:
            entry["kind"] = r.module.kind
            for name, res in sorted(r.module.resources.items()):
                kernel = {
                    "name": name, "registers": res.registers, "shared_static": res.shared_static,
                    "spill_bytes": res.spill_bytes, "stack_frame": res.stack_frame,
                }  # fmt: skip
                if r.sass_counts:
                    kernel["sass"] = r.sass_counts.get(name, {})
                entry["kernels"].append(kernel)
        modules.append(entry)
    built = [r for r in results if r.module is not None]
    return {
        "schema": JSON_SCHEMA,
        "nvrtc": ".".join(map(str, compiler.nvrtc_version())),
        "archs": archs,
        "jobs": jobs,
        "cache_dir": str(compiler.default_cache_dir()),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(sum(r.cpu_seconds for r in results), 3),
        "summary": {
            "modules": len(built),
            "kernels": sum(len(r.module.resources) for r in built),
            "compiled": sum(1 for r in built if not r.module.from_cache),
            "from_cache": sum(1 for r in built if r.module.from_cache),
            "failed": sum(1 for r in results if r.error),
            "problems": sum(len(r.problems) for r in results),
        },
        "modules": modules,
    }


def render_table(results: list[BuildResult], archs: list[str], sass: bool):
    """The kernels as a rich Table: a heading row per module, then its kernels; long names wrap, never cut."""
    from rich.table import Table
    from rich.text import Text

    from dlgpu.cuda import sass as sass_tools

    title = f"dlgpu compile: NVRTC {'.'.join(map(str, compiler.nvrtc_version()))}"
    title += "" if len(archs) > 1 else f", {archs[0]}"
    table = Table(title=title, caption="smem: static, per block; local: spills + stack, per thread", expand=sass)
    # With the SASS column the two text columns share the width 3:2, so that kernel names mostly keep one line.
    table.add_column("module / kernel", overflow="fold", ratio=3 if sass else None)
    for column in ("regs", "smem B", "local B"):
        table.add_column(column, justify="right", no_wrap=True)
    if sass:
        table.add_column("SASS", overflow="fold", ratio=2)
    blank = [""] * (len(table.columns) - 1)
    for result in results:
        heading = Text(result.family, style="bold")
        heading.append("".join(f" {part}" for part in (result.config, result.arch if len(archs) > 1 else "") if part))
        table.add_row(heading, *blank)
        if result.module is None:
            table.add_row(Text("  FAILED", style="red"), *blank, end_section=True)
            continue
        kernels = sorted(result.module.resources.items())
        for position, (name, res) in enumerate(kernels):
            local = res.spill_bytes + res.stack_frame
            row = [Text("  " + name), str(res.registers), str(res.shared_static),
                   Text(str(local), style="red" if local else "")]
            if sass:
                counts = result.sass_counts.get(name, {})
                row.append(", ".join(f"{i} {counts[i]}" for i in sass_tools.INTERESTING if counts.get(i)))
            table.add_row(*row, end_section=position == len(kernels) - 1)
    return table


# ---------------------------------------------------------------- the command


def main(args: argparse.Namespace) -> int:
    """Body of ``dlgpu compile`` (see the module's docstring)."""
    from rich.console import Console
    from rich.text import Text

    from dlgpu.cuda import sass as sass_tools

    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)

    def fail(message: str) -> int:
        err.print(Text(message, style="red"))  # plain text: "[cuda13]" in a hint is not markup
        return 2

    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        return fail(f"dlgpu compile: --jobs must be at least 1, got {jobs}")
    try:
        if args.arch:
            archs = [a.strip() for a in str(args.arch).split(",") if a.strip()]
            origin = "--arch"
        else:
            archs = device_targets()
            origin = "this machine's GPU" if archs else "no GPU seen: every target the package claims"
            archs = archs or list(compiler.DEFAULT_ARCHS)
        for arch in archs:
            compiler.parse_arch(arch)
        chosen = list(args.families) or compiler.families()
        for family in chosen:
            compiler.source_path(family)
    except (CompileError, BackendUnavailableError, FileNotFoundError) as exc:
        return fail(str(exc))

    err.print(f"dlgpu compile: {len(chosen)} families for {', '.join(archs)} ({origin}), {jobs} jobs, "
              f"cache {compiler.default_cache_dir()}")
    start = time.perf_counter()
    try:
        results = build_all(chosen, archs, sass=bool(args.sass), jobs=jobs,
                            progress=lambda r, done, total: print(progress_line(r, done, total), file=sys.stderr,
                                                                  flush=True))
    except sass_tools.SassUnavailableError as exc:
        return fail(str(exc))
    seconds = time.perf_counter() - start

    failures = [r for r in results if r.error]
    problems = [p for r in results for p in r.problems]
    if args.json:
        print(json.dumps(to_json(results, archs=archs, jobs=jobs, seconds=seconds), indent=2))
    else:
        out.print(render_table(results, archs, bool(args.sass)))
        for result in failures:
            out.print(Text(f"{result.family} ({result.arch}) failed:", style="red"))
            out.print(Text(result.error))
        for problem in problems:
            out.print(Text("problem: ", style="red") + Text(problem))
        built = [r.module for r in results if r.module is not None]
        compiled = sum(1 for m in built if not m.from_cache)
        out.print(
            f"{len(built)} modules, {sum(len(m.resources) for m in built)} kernels, {seconds:.1f} s: "
            f"{compiled} compiled, {len(built) - compiled} cached, {len(failures)} failed, {len(problems)} problems"
        )
    return 1 if failures or problems else 0
