"""``dlgpu info``: what is installed, what device is there, and which kernels these are."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
from pathlib import Path

import dlgpu
from dlgpu.cuda.compiler import default_cache_dir
from dlgpu.device import gpu_unavailable_reason
from dlgpu.errors import DlgpuError


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cupy_version() -> str | None:
    for name in ("cupy-cuda13x", "cupy-cuda12x", "cupy"):
        version = _version(name)
        if version:
            return f"{version} ({name})"
    return None


def _nvrtc_version() -> str:
    from dlgpu.cuda.compiler import nvrtc_version

    try:
        major, minor = nvrtc_version()
    except (DlgpuError, RuntimeError) as exc:  # bindings missing, or the library would not load
        return f"unavailable ({exc})"
    return f"{major}.{minor}"


def _gpu() -> str:
    reason = gpu_unavailable_reason()
    if reason is not None:
        return f"none ({reason})"
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        driver = cupy.cuda.runtime.driverGetVersion()
        runtime = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:  # CuPy raises its own CUDARuntimeError when no driver is present
        return f"none ({type(exc).__name__}: {exc})"
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return (
        f"{name} (sm_{props['major']}{props['minor']}, {count} device(s)); "
        f"driver API {driver // 1000}.{driver % 1000 // 10}, runtime {runtime // 1000}.{runtime % 1000 // 10}"
    )


def newest_record(results_dir: Path | None = None) -> tuple[Path, dict] | None:
    """The newest GPU run record (by its date field), in a source checkout's benchmarks/results."""
    results_dir = results_dir or dlgpu.kernels_dir().parent / "benchmarks" / "results"
    records = []
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "kernels_sha256" in record:
            records.append((str(record.get("date", "")), path, record))
    if not records:
        return None
    _, path, record = max(records, key=lambda item: (item[0], item[1].name))
    return path, record


def collect() -> dict[str, str]:
    sources = dlgpu.kernel_sources()
    digest = dlgpu.kernels_sha256()
    found = newest_record()
    if found is None:
        record = "none found (not yet run on a GPU, or not a source checkout)"
    else:
        path, data = found
        verdict = "matches these kernels" if data["kernels_sha256"] == digest else "made with other kernels"
        tests = data.get("tests", {})
        record = f"{path.name}: {data.get('device', '?')}, {tests.get('passed', '?')} passed, " \
                 f"{tests.get('failed', '?')} failed; {verdict}"
    return {
        "dlgpu": dlgpu.__version__,
        "python": platform.python_version(),
        "numpy": _version("numpy") or "missing",
        "numba": _version("numba") or "missing",
        "rich": _version("rich") or "missing",
        "cupy": _cupy_version() or "not installed (CPU backend only)",
        "cuda-bindings": _version("cuda-bindings") or "not installed",
        "NVRTC": _nvrtc_version(),
        "GPU": _gpu(),
        "kernel cache": str(default_cache_dir()),
        "kernel sources": f"{len(sources)} files in {dlgpu.kernels_dir()}",
        "kernels sha256": digest,
        "newest GPU record": record,
        "default precision": dlgpu.get_default_precision(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args: argparse.Namespace) -> int:
    facts = collect()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="dlgpu info", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in facts.items():
        table.add_row(key, Text(value))  # plain text: "[cuda13]" in a hint is not markup
    Console().print(table)
    return 0
