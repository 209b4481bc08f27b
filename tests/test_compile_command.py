"""``dlgpu compile`` (dlgpu/compile.py) without a GPU: the parallel build, its progress lines, its
JSON and its table, the cache it shares with the launches, and its errors.

The kernels are small ones written into a temporary kernels folder (tests/test_kernels_compile.py
builds the real ones); NVRTC compiles them, so these tests need cuda-bindings' NVRTC (a test extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace

import pytest

from dlgpu import compile as compile_command
from dlgpu.cuda import compiler

HEADER = """\
#pragma once
__device__ inline float twice(float x) { return 2.0f * x; }
"""

# Two build configurations, an included header and a SASS requirement.
DEMO = """\
// dlgpu-build: VEC=4
// dlgpu-build: VEC=2
// dlgpu-sass: block_sum_with_a_long_name_that_does_not_fit_in_a_narrow_column BAR
#include "header.cuh"
extern "C" __global__ void scale(const float* a, float* b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) b[i] = twice(a[i]) * VEC;
}
extern "C" __global__ void
block_sum_with_a_long_name_that_does_not_fit_in_a_narrow_column(const float* x, float* y) {
    __shared__ float s[256];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int k = 0; k < 256; ++k) t += s[k];
        y[0] = t;
    }
}
"""

# A run-time index into a per-thread array forces it into local memory: a stack frame.
LOCAL = """\
extern "C" __global__ void local_array(float* x, int i, int n) {
    float a[256];
    for (int k = 0; k < 256; ++k) a[k] = x[k * blockDim.x + threadIdx.x];
    for (int k = 0; k < n; ++k) a[(i + 7 * k) & 255] += a[(i + k) & 255];
    x[threadIdx.x] = a[i & 255];
}
"""

BROKEN = """\
extern "C" __global__ void broken(float* x) { x[threadIdx.x] = undeclared_name; }
"""

SCALAR = """\
// dlgpu-sass: copy1 LDG.E.128
extern "C" __global__ void copy1(const float* a, float* b) { b[threadIdx.x] = a[threadIdx.x]; }
"""


@pytest.fixture
def kdir(tmp_path, monkeypatch):
    folder = tmp_path / "kernels"
    folder.mkdir()
    (folder / "header.cuh").write_text(HEADER)
    (folder / "demo.cu").write_text(DEMO)
    monkeypatch.setenv("DLGPU_KERNELS_DIR", str(folder))
    monkeypatch.setenv("DLGPU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COLUMNS", raising=False)  # piped output: rich's 80 columns
    monkeypatch.setattr(compiler, "_CACHES", {})
    return folder


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="dlgpu compile")
    compile_command.add_arguments(parser)
    code = compile_command.main(parser.parse_args(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_parallel_build_reports_every_module_and_fills_the_cache_a_launch_reads(kdir, capsys):
    code, out, err = run(["--arch", "sm_80,sm_90a", "--jobs", "2", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)  # stdout is the JSON alone: progress goes to stderr
    assert report["archs"] == ["sm_80", "sm_90a"] and report["jobs"] == 2
    assert report["summary"] == {"modules": 4, "kernels": 8, "compiled": 4, "from_cache": 0, "failed": 0,
                                 "problems": 0}
    modules = {(m["arch"], m["defines"]["VEC"]): m for m in report["modules"]}
    assert set(modules) == {(a, v) for a in ("sm_80", "sm_90a") for v in ("4", "2")}
    assert all(m["seconds"] > 0 and not m["from_cache"] for m in modules.values())
    assert {k["name"] for k in modules["sm_90a", "2"]["kernels"]} == {
        "scale", "block_sum_with_a_long_name_that_does_not_fit_in_a_narrow_column"}
    progress = [line for line in err.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and progress[-1].startswith("[4/4] demo VEC=")
    # The workers wrote where the launches look: the same key, found without compiling.
    module = compiler.compile_family("demo", arch="sm_90a", defines={"VEC": 2}, announce=False)
    assert module.from_cache and set(module.resources) == {k["name"] for k in modules["sm_90a", "2"]["kernels"]}
    code, out, err = run(["--arch", "sm_80,sm_90a", "--jobs", "2", "--json"], capsys)
    assert json.loads(out)["summary"]["from_cache"] == 4 and "from the cache" in err


def test_one_job_and_two_jobs_build_the_same_modules(kdir, tmp_path, monkeypatch, capsys):
    reports = []
    for jobs in ("1", "2"):
        monkeypatch.setenv("DLGPU_CACHE_DIR", str(tmp_path / f"cache-{jobs}"))
        code, out, _ = run(["--arch", "sm_90a", "--jobs", jobs, "--json"], capsys)
        assert code == 0
        reports.append([(m["defines"], m["kernels"]) for m in json.loads(out)["modules"]])
    assert reports[0] == reports[1]


def first_column(table: str) -> str:
    """The table's first column, its wrapped lines joined: names read whole again."""
    return "".join(line.split("│")[1].strip() for line in table.splitlines() if line.count("│") > 2)


def test_table_fits_80_columns_and_wraps_long_names(kdir, capsys):
    code, out, _ = run(["--arch", "sm_80,sm_90a", "--sass"], capsys)
    assert code == 0, out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out  # wrapped, never cut
    names = first_column(out)
    assert "block_sum_with_a_long_name_that_does_not_fit_in_a_narrow_column" in names
    assert "demoVEC=4sm_90a" in names.replace(" ", "") and "BAR" in out
    assert "4 modules, 8 kernels" in out and "0 failed, 0 problems" in out


def test_local_memory_and_broken_sources_fail_the_build(kdir, capsys):
    (kdir / "local.cu").write_text(LOCAL)
    code, out, _ = run(["--arch", "sm_80", "local"], capsys)
    assert code == 1
    assert "local_array (sm_80):" in out and "bytes stack frame" in out

    (kdir / "broken.cu").write_text(BROKEN)
    code, out, _ = run(["--arch", "sm_80", "--jobs", "2", "broken", "demo"], capsys)
    assert code == 1
    assert "FAILED" in out and "undeclared_name" in out
    code, out, err = run(["--arch", "sm_80", "--json", "broken"], capsys)
    (module,) = json.loads(out)["modules"]
    assert code == 1 and "undeclared_name" in module["error"] and "FAILED" in err


def test_sass_markers_are_checked_only_with_sass(kdir, capsys):
    (kdir / "scalar.cu").write_text(SCALAR)
    code, _, _ = run(["--arch", "sm_90a", "scalar"], capsys)
    assert code == 0
    code, out, _ = run(["--arch", "sm_90a", "--sass", "scalar"], capsys)
    assert code == 1
    assert "copy1 (sm_90a): no LDG.E.128 in its SASS" in out


def test_unknown_targets_families_and_job_counts_are_refused(kdir, capsys):
    code, _, err = run(["--arch", "sm_42"], capsys)
    assert code == 2 and "sm_42" in err
    code, _, err = run(["nosuchfamily"], capsys)
    assert code == 2 and "nosuchfamily" in err
    with pytest.raises(SystemExit) as stopped:  # a count is checked at parse time, before anything is built
        run(["--jobs", "0"], capsys)
    assert stopped.value.code == 2 and "argument --jobs/-j: must be >= 1" in capsys.readouterr().err


def test_the_install_hint_keeps_its_extras_when_nvrtc_is_missing(kdir, monkeypatch, capsys):
    import cuda.bindings

    # `from cuda.bindings import nvrtc` fails as if it were not installed
    monkeypatch.delattr(cuda.bindings, "nvrtc", raising=False)
    monkeypatch.setitem(sys.modules, "cuda.bindings.nvrtc", None)
    monkeypatch.setattr(compiler, "_SUPPORTED", None)
    monkeypatch.setattr(compiler, "_VERSION", None)
    code, out, err = run(["--arch", "sm_90a"], capsys)
    assert code == 2 and out == ""
    said = " ".join(err.split())  # rich wraps the line; its markup must not eat "[cuda13]"
    assert "pip install -e '.[cuda13]'" in said and "'cupy-cuda13x>=13.6'" in said and "extra cuda12" in said


def test_the_default_target_is_the_gpus_own_else_every_claimed_one(kdir, monkeypatch, capsys):
    fake = SimpleNamespace(cuda=SimpleNamespace(
        runtime=SimpleNamespace(getDeviceCount=lambda: 3),
        Device=lambda i: SimpleNamespace(compute_capability=("90", "80", "90")[i])))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert compile_command.device_targets() == ["sm_80", "sm_90a"]  # what a launch on each device compiles for

    chosen = []
    monkeypatch.setattr(compile_command, "build_all", lambda families, archs, **kw: chosen.append(archs) or [])
    monkeypatch.setattr(compile_command, "device_targets", lambda: ["sm_90a"])
    code, out, err = run(["--json"], capsys)
    assert code == 0 and chosen[-1] == ["sm_90a"] and "this machine's GPU" in err
    monkeypatch.setattr(compile_command, "device_targets", lambda: [])
    code, out, err = run(["--json"], capsys)
    assert code == 0 and chosen[-1] == list(compiler.DEFAULT_ARCHS) and "no GPU seen" in err


def test_without_cupy_there_is_no_device_target(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert compile_command.device_targets() == []


def test_the_cli_dispatches_to_the_command(kdir, capsys):
    from dlgpu.cli import main

    assert main(["compile", "--arch", "sm_90a", "--json", "--jobs", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["modules"] == 2
