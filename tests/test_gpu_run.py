"""The GPU run's logic on the CPU: the per-test results plugin, the record builder on fake logs,
the sanitizer selection, and the script itself on fake steps.

benchmarks/gpu_run.sh leaves its artifacts in a work folder; make_record.py turns them into the
record.  These tests lay down fake artifacts (per-test JSON lines, junit XML, compute-sanitizer
logs, bench JSON) for passing, failing and cut runs and check that only a fully clean GPU run is
recorded as passed, that a killed pytest still yields per-test results, and that each failing
test comes with what its replay on the CPU harness needs.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_run.sh"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


mr = _load("make_record", REPO / "benchmarks" / "make_record.py")
sanitizer_plugin = _load("sanitizer_plugin", REPO / "benchmarks" / "sanitizer_plugin.py")

NOW = dt.datetime(2026, 11, 26, 14, 2, tzinfo=dt.timezone.utc)
SHA = "ab" * 32


def junit(cases: list[tuple[str, str, str | None]]) -> str:
    """pytest-style junit XML; each case is (classname, name, None | 'failure' | 'error' | 'skipped')."""
    body = []
    for classname, name, outcome in cases:
        inner = f'<{outcome} message="x">details</{outcome}>' if outcome else ""
        body.append(f'<testcase classname="{classname}" name="{name}" time="0.1">{inner}</testcase>')
    return ('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
            f'tests="{len(cases)}">' + "".join(body) + "</testsuite></testsuites>")


def jsonl(cases: list[tuple[str, str | None]], *, collected: list[str] | None = None, finished: bool = True) -> str:
    """results_plugin-style lines; each case is (nodeid, outcome) with outcome None for 'started, no report',
    'passed', 'failed' (a call failure with replay information), 'error' (setup), 'skipped' or 'crashed'."""
    lines = [{"event": "session", "xdist": True}]
    ids = collected if collected is not None else [nodeid for nodeid, _ in cases]
    lines.append({"event": "collected", "count": len(ids), "nodeids": ids})
    for nodeid, outcome in cases:
        lines.append({"event": "start", "nodeid": nodeid})
        when = {"error": "setup", "crashed": "???"}.get(outcome, "call")
        report = {"event": "report", "nodeid": nodeid, "when": when, "duration": 0.5, "worker": "gw3",
                  "outcome": {"error": "failed", "crashed": "failed"}.get(outcome, outcome)}
        if outcome in ("failed", "error", "crashed"):
            report["message"] = f"AssertionError: {nodeid} is wrong"
            report["replay"] = {"test": nodeid, "seed": 1234, "params": {"variant": "tc", "precision": "bf16",
                                                                         "config": "64x64"}}
        if outcome is not None:
            lines.append(report)
    if finished:
        lines.append({"event": "finish", "exitstatus": 1})
    return "".join(json.dumps(line) + "\n" for line in lines)


PASSING_TESTS = [
    ("tests.test_elementwise", "test_relu_gpu[1]", None),
    ("tests.test_elementwise", "test_relu_gpu[1048577]", None),
    ("tests.test_kernels_harness", "test_harness_matches_gpu[relu]", None),
    ("tests.test_pool", "test_pool_gpu_large", "skipped"),
]

MEMCHECK_CLEAN = "========= COMPUTE-SANITIZER\n....\n3 passed in 12.0s\n========= ERROR SUMMARY: 0 errors\n"
MEMCHECK_DIRTY = ("========= COMPUTE-SANITIZER\n========= Invalid __global__ write of size 4 bytes\n"
                  "=========     at relu_forward_f32+0x1d0\n3 passed in 12.0s\n========= ERROR SUMMARY: 1 error\n")
RACECHECK_CLEAN = ("========= COMPUTE-SANITIZER\n3 passed\n"
                   "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n")
RACECHECK_HAZARD = ("========= COMPUTE-SANITIZER\n========= Error: Race reported between Write access at ...\n"
                    "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)\n")

BENCH = {
    "schema": 1, "backend": "cuda", "quick": True, "device": {"name": "NVIDIA H100 80GB HBM3"},
    "ceilings": {"copy": {"gbps": 3000.0, "how": "cudaMemcpyAsync"}, "sgemm": {"tflops": 50.0, "how": "cupy"}},
    "rows": [{"op": "relu_forward", "variant": "default", "shape": "67108864", "dtype": "float32",
              "precision": "ieee", "ms": 0.19, "baseline": "cupy", "baseline_ms": 0.2, "ratio": 1.05,
              "gbps": 2825.0, "tflops": None, "pct_of_ceiling": 94.2}],
    "errors": [],
}
COMPILE = {
    "schema": 1, "nvrtc": "13.0", "archs": ["sm_90a"], "jobs": 16, "seconds": 12.5, "cpu_seconds": 49.0,
    "summary": {"modules": 2, "kernels": 3, "compiled": 2, "from_cache": 0, "failed": 0, "problems": 0},
    "modules": [
        {"family": "gemm", "arch": "sm_90a", "defines": {}, "seconds": 9.1, "cpu_seconds": 8.9, "error": None,
         "problems": [], "kernels": []},
        {"family": "gemm_tc", "arch": "sm_90a", "defines": {"GEMM_TC_PRECISION": "1"}, "seconds": 6.0,
         "cpu_seconds": 6.2, "error": None, "problems": [], "kernels": []},
    ],
}
TRAIN = {"benchmarks": [
    {"name": f"test_gpu_lenet_step[{mode}]", "group": "train step: lenet, batch 128, GPU",
     "extra_info": {"framework": framework, "ms_per_step": ms, **({"speedup_vs_torch": 2.0 / ms} if ms < 2 else {})}}
    for mode, framework, ms in (("torch", "torch", 2.0), ("eager", "dlgpu-eager", 1.6), ("graph", "dlgpu-graph", 0.8))
]}
RUN = {"budget_s": 330, "jobs": 16, "xdist": "worksteal", "test_timeout_s": 60, "hypothesis_examples": 200,
       "hypothesis_seed": 1764165720, "compute_sanitizer": "/usr/local/cuda/bin/compute-sanitizer",
       "host_compiler": "/usr/bin/g++"}


def make_work(tmp_path: Path, *, gpu=True, tests=PASSING_TESTS, tests_jsonl=None, tests_rc=0,
              memcheck=MEMCHECK_CLEAN, memcheck_rc=0, racecheck=RACECHECK_CLEAN, racecheck_rc=0,
              initcheck=MEMCHECK_CLEAN, initcheck_rc=0, sanitizer_tests=None, bench=BENCH, bench_rc=0,
              compile_json=COMPILE, compile_rc=0, train=TRAIN, train_rc=0, info_rc=0, run=RUN) -> Path:
    """A work folder as gpu_run.sh leaves it; None for an artifact means the step left none."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    device = ({"gpu": True, "name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "cuda_driver_api": "13.0",
               "cuda_runtime": "13.0", "compute_capability": "90", "cupy": "14.2.0", "torch": "2.11.0"}
              if gpu else {"gpu": False, "reason": "CuPy is not importable"})
    (work / "device.json").write_text(json.dumps(device))
    (work / "run.json").write_text(json.dumps(run))
    steps = [("info", info_rc), ("compile", compile_rc), ("tests", tests_rc), ("memcheck", memcheck_rc),
             ("racecheck", racecheck_rc), ("initcheck", initcheck_rc), ("bench", bench_rc), ("train", train_rc)]
    (work / "steps.tsv").write_text("".join(f"{name}\t{rc}\t5\n" for name, rc in steps if rc is not None))
    (work / "info.log").write_text("dlgpu info\n")
    if compile_json is not None:
        (work / "compile.json").write_text(json.dumps(compile_json))
    if tests is not None:
        (work / "tests.junit.xml").write_text(junit(tests))
        (work / "tests.log").write_text("pytest output\n")
    if tests_jsonl is not None:
        (work / "tests.jsonl").write_text(tests_jsonl)
    sanitizer_tests = sanitizer_tests if sanitizer_tests is not None else PASSING_TESTS[:3]
    for tool, log in (("memcheck", memcheck), ("racecheck", racecheck), ("initcheck", initcheck)):
        if log is not None:
            (work / f"{tool}.log").write_text(log)
            (work / f"{tool}.junit.xml").write_text(junit(sanitizer_tests))
    if bench is not None:
        (work / "bench.json").write_text(json.dumps(bench))
        (work / "bench.log").write_text("table\n")
    if train is not None:
        (work / "train.json").write_text(json.dumps(train))
    return work


def build(work: Path, **kwargs) -> dict:
    return mr.build_record(work, now=NOW, kernels_sha256=SHA, commit=("c0ffee", False), **kwargs)


# -- parsing ----------------------------------------------------------------


def test_parse_junit_counts_each_outcome(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(junit([("a", "t1", None), ("a", "t2", "failure"), ("a", "t3", "error"),
                           ("a", "t4", "skipped"), ("b", "t5", None)]))
    counts = mr.parse_junit(path)
    assert {k: counts[k] for k in ("passed", "failed", "errors", "skipped", "total")} == \
        {"passed": 2, "failed": 1, "errors": 1, "skipped": 1, "total": 5}
    assert [(f["test"], f["outcome"]) for f in counts["failed_tests"]] == [("a::t2", "failed"), ("a::t3", "errors")]
    only_b = mr.parse_junit(path, nodeid_contains="b::")
    assert (only_b["passed"], only_b["total"]) == (1, 1)


def test_parse_junit_missing_or_torn_file_is_none(tmp_path):
    assert mr.parse_junit(tmp_path / "absent.xml") is None
    torn = tmp_path / "torn.xml"
    torn.write_text("<testsuites><testsuite><testcase")
    assert mr.parse_junit(torn) is None


def test_results_lines_of_a_cut_run_count_what_ran_and_what_did_not(tmp_path):
    ids = [f"tests/test_gemm_gpu.py::test_product[tc-bf16-64x64-{layout}]" for layout in ("nn", "nt", "tn", "tt")]
    path = tmp_path / "tests.jsonl"
    text = jsonl([(ids[0], "passed"), (ids[1], "failed"), (ids[2], None)], collected=ids, finished=False)
    path.write_text(text + '{"event": "report", "nodeid": "torn')  # the kill cut the last line
    results = mr.read_results_jsonl(path)
    assert {k: results[k] for k in ("passed", "failed", "unfinished", "not_started", "total")} == \
        {"passed": 1, "failed": 1, "unfinished": 1, "not_started": 1, "total": 4}
    assert results["finished"] is False
    failed, unfinished = results["failed_tests"]
    assert (failed["test"], failed["outcome"], unfinished["test"], unfinished["outcome"]) == \
        (ids[1], "failed", ids[2], "unfinished")
    replay = failed["replay"]
    assert (replay["seed"], replay["variant"], replay["precision"], replay["shape"]) == (1234, "tc", "bf16", "64x64")
    # a test cut before any report: its variant and precision are read off its id
    assert (unfinished["replay"]["variant"], unfinished["replay"]["precision"]) == ("tc", "bf16")


def test_results_lines_tell_errors_crashes_skips_and_expected_failures_apart(tmp_path):
    path = tmp_path / "tests.jsonl"
    lines = jsonl([("t::a", "error"), ("t::b", "crashed"), ("t::c", "skipped"), ("t::d", "passed")])
    lines += json.dumps({"event": "report", "nodeid": "t::e", "when": "call", "outcome": "skipped", "xfail": True})
    path.write_text(lines + "\n")
    results = mr.read_results_jsonl(path)
    assert {k: results[k] for k in ("errors", "crashed", "skipped", "passed", "xfailed")} == \
        {"errors": 1, "crashed": 1, "skipped": 1, "passed": 1, "xfailed": 1}
    assert mr.read_results_jsonl(tmp_path / "absent.jsonl") is None


def test_sanitizer_summaries_are_read_from_the_log():
    assert mr.sanitizer_summary(MEMCHECK_CLEAN)["errors"] == 0
    assert mr.sanitizer_summary(MEMCHECK_DIRTY)["errors"] == 1
    race = mr.sanitizer_summary(RACECHECK_HAZARD)
    assert (race["hazards"], race["race_errors"], race["race_warnings"]) == (1, 1, 0)
    assert mr.sanitizer_summary("Segmentation fault\n")["errors"] is None


@pytest.mark.parametrize(
    ("tool", "log", "rc", "tests", "verdict"),
    [
        ("memcheck", MEMCHECK_CLEAN, 0, PASSING_TESTS[:3], "clean"),
        ("racecheck", RACECHECK_CLEAN, 0, PASSING_TESTS[:3], "clean"),
        ("memcheck", MEMCHECK_DIRTY, 86, PASSING_TESTS[:3], "errors"),
        ("memcheck", MEMCHECK_DIRTY, 0, PASSING_TESTS[:3], "errors"),      # summary counts even if rc lies
        ("racecheck", RACECHECK_HAZARD, 86, PASSING_TESTS[:3], "errors"),
        ("racecheck", RACECHECK_CLEAN.replace("0 hazards displayed (0 errors, 0 warnings)",
                                              "2 hazards displayed (0 errors, 2 warnings)"), 0,
         PASSING_TESTS[:3], "hazards"),
        ("memcheck", "========= COMPUTE-SANITIZER\nkilled\n", 124, PASSING_TESTS[:3], "timed out"),
        ("memcheck", "========= COMPUTE-SANITIZER\nSegmentation fault\n", 139, PASSING_TESTS[:3], "failed"),
        ("memcheck", MEMCHECK_CLEAN, 1, [("a", "t", "failure")], "tests failed"),
        ("memcheck", MEMCHECK_CLEAN, 5, [("a", "t", "skipped")], "no tests ran"),
        ("memcheck", MEMCHECK_CLEAN, 0, [], "no tests ran"),
        ("initcheck", None, 127, [], "absent"),
    ],
)
def test_sanitizer_verdicts(tmp_path, tool, log, rc, tests, verdict):
    if log is not None:
        (tmp_path / f"{tool}.log").write_text(log)
        (tmp_path / f"{tool}.junit.xml").write_text(junit(tests))
    assert mr.sanitizer_verdict(tool, rc, tmp_path)["verdict"] == verdict


def test_sanitizer_not_run_when_no_log(tmp_path):
    assert mr.sanitizer_verdict("memcheck", None, tmp_path)["verdict"] == "not run"


def test_sanitizer_results_lines_win_over_junit_and_name_the_failing_test(tmp_path):
    (tmp_path / "memcheck.log").write_text(MEMCHECK_CLEAN)
    (tmp_path / "memcheck.junit.xml").write_text(junit(PASSING_TESTS[:3]))
    (tmp_path / "memcheck.jsonl").write_text(jsonl([("t::a", "passed"), ("t::b", "failed")]))
    detail = mr.sanitizer_verdict("memcheck", 1, tmp_path)
    assert detail["verdict"] == "tests failed" and detail["failed_tests"][0]["test"] == "t::b"


def test_steps_file_keeps_exit_codes_and_seconds(tmp_path):
    path = tmp_path / "steps.tsv"
    path.write_text("info\t0\t2\ntests\t124\t180\nbroken line\n")
    assert mr.read_steps(path) == {"info": {"rc": 0, "seconds": 2}, "tests": {"rc": 124, "seconds": 180}}


# -- the record ---------------------------------------------------------------


def _sweep_row(variant, ms, shape="4096x4096x4096", ratio=None):
    return {"op": "matmul", "variant": variant, "shape": shape, "ms": ms, "baseline": "cupy",
            "baseline_ms": 0.2 if ratio else None, "ratio": ratio}


def test_the_sweep_informs_and_never_fails_the_run(tmp_path):
    """The sweep's rows go into the record and its summary names the fastest tile per shape; an error or a
    timeout of the sweep is a note, never a failure."""
    work = make_work(tmp_path)
    rows = [_sweep_row("wgmma-fp16@128x256", 0.25, ratio=0.8), _sweep_row("wgmma-fp16@128x128", 0.21, ratio=0.95),
            _sweep_row("wgmma-bf16@128x256", 0.19), {**_sweep_row("wgmma-bf16@128x128", None), "error": "boom"}]
    (work / "sweep.json").write_text(json.dumps({**BENCH, "rows": rows, "errors": ["matmul: dlgpu: boom"]}))
    with (work / "steps.tsv").open("a") as steps:
        steps.write("sweep\t124\t60\n")
    record = build(work)
    assert record["status"] == "passed", record["failures"]
    assert record["sweep"] == rows and record["notes"] == ["sweep matmul: dlgpu: boom"]
    lines = mr.summary_lines(record)
    assert "sweep: 3 of 4 rows timed; the fastest tile of each shape:" in lines
    fastest = sorted(line for line in lines if "@128x" in line)  # one line per (op, shape, stem)
    assert len(fastest) == 2 and "wgmma-bf16@128x256" in fastest[0]
    assert "wgmma-fp16@128x128" in fastest[1] and "0.95x vs cupy" in fastest[1]
    (work / "sweep.json").write_text(json.dumps({**BENCH, "rows": rows[:1], "complete": False}))
    assert build(work)["notes"] == ["the tile sweep stopped early: 1 rows measured"]
    (work / "sweep.json").unlink()
    assert build(work)["notes"] == ["the tile sweep wrote no JSON (exit 124)"]


def test_a_cut_bench_keeps_its_rows_and_fails_the_run(tmp_path):
    work = make_work(tmp_path, bench={**BENCH, "complete": False}, bench_rc=124)
    record = build(work)
    assert record["rows"] == BENCH["rows"]
    assert "dlgpu bench stopped early: 1 rows measured" in record["failures"]


def test_clean_run_is_recorded_as_passed(tmp_path):
    record = build(make_work(tmp_path))
    assert record["status"] == "passed", record["failures"]
    assert record["failures"] == [] and record["notes"] == [] and record["complete"] is True
    assert {k: record["tests"][k] for k in ("passed", "failed", "skipped")} == {"passed": 3, "failed": 0, "skipped": 1}
    assert record["harness_crosscheck"]["passed"] == 1
    assert [record["sanitizer"][tool] for tool in ("memcheck", "racecheck", "initcheck")] == ["clean"] * 3
    assert record["device"] == "NVIDIA H100 80GB HBM3"
    assert record["driver"] == "580.159.04" and record["cuda_runtime"] == "13.0"
    assert record["kernels_sha256"] == SHA and record["commit"] == "c0ffee"
    assert record["ceilings"]["copy"]["gbps"] == 3000.0
    assert record["rows"][0]["ratio"] == 1.05
    assert [r["framework"] for r in record["train"]] == ["torch", "dlgpu-eager", "dlgpu-graph"]
    assert record["train"][2]["speedup_vs_torch"] == 2.5
    assert record["compile"]["seconds"] == 12.5 and record["compile"]["slowest"][0]["module"] == "gemm sm_90a"
    assert record["run"]["hypothesis_seed"] == RUN["hypothesis_seed"]
    required = {"date", "device", "driver", "cuda_runtime", "commit", "kernels_sha256", "tests", "sanitizer",
                "ceilings", "rows", "failed_tests", "train", "compile", "run"}
    assert required <= set(record)
    json.dumps(record)  # serializable as it stands


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"gpu": False, "tests": None, "memcheck": None, "racecheck": None, "bench": None}, "no GPU found"),
        ({"tests": PASSING_TESTS + [("tests.test_pool", "test_pool_gpu[7]", "failure")], "tests_rc": 1},
         "GPU tests: 1 failed"),
        ({"tests": PASSING_TESTS + [("tests.test_pool", "test_collect", "error")], "tests_rc": 1}, "1 errors"),
        ({"tests": [("tests.test_pool", "test_pool_gpu", "skipped")]}, "no GPU test passed"),
        ({"tests": None, "tests_rc": 124}, "timed out"),
        ({"tests": None, "tests_rc": 2}, "left no results"),
        ({"tests_jsonl": jsonl([("t::a", "passed"), ("t::b", None)], collected=["t::a", "t::b", "t::c"],
                               finished=False), "tests_rc": 124}, "1 unfinished"),
        ({"tests_jsonl": jsonl([("t::a", "passed")], collected=["t::a", "t::b"], finished=False), "tests_rc": 124},
         "1 of 2 never started"),
        ({"tests_jsonl": jsonl([("t::a", "passed"), ("t::b", "crashed")])}, "1 crashed"),
        ({"memcheck": MEMCHECK_DIRTY, "memcheck_rc": 86}, "memcheck: errors"),
        ({"racecheck": RACECHECK_HAZARD, "racecheck_rc": 86}, "racecheck: errors"),
        ({"racecheck": None, "racecheck_rc": None}, "racecheck: not run"),
        ({"initcheck": MEMCHECK_DIRTY, "initcheck_rc": 86}, "initcheck: errors"),
        ({"memcheck": None, "memcheck_rc": 127, "racecheck": None, "racecheck_rc": 127, "initcheck": None,
          "initcheck_rc": 127}, "memcheck: absent"),
        ({"compile_json": None, "compile_rc": 124}, "dlgpu compile wrote no JSON"),
        ({"compile_json": {**COMPILE, "summary": {**COMPILE["summary"], "failed": 1}}, "compile_rc": 1},
         "dlgpu compile: 1 modules failed"),
        ({"bench": None, "bench_rc": 1}, "wrote no JSON"),
        ({"bench": {**BENCH, "backend": "cpu"}}, "not the GPU"),
        ({"bench": {**BENCH, "errors": ["relu_forward: dlgpu: CompileError: boom"]}, "bench_rc": 1}, "CompileError"),
        ({"train": None, "train_rc": 124}, "training-step benchmark wrote no JSON"),
        ({"train_rc": 1}, "training-step benchmark exited 1"),
        ({"info_rc": 1}, "dlgpu info failed"),
    ],
)
def test_any_failure_is_recorded_as_failed(tmp_path, changes, expected):
    record = build(make_work(tmp_path, **changes))
    assert record["status"] == "failed"
    assert any(expected in f for f in record["failures"]), record["failures"]


def test_initcheck_is_optional_but_memcheck_is_not(tmp_path):
    record = build(make_work(tmp_path / "a", initcheck=None, initcheck_rc=None))
    assert record["status"] == "passed" and record["sanitizer"]["initcheck"] == "not run"
    record = build(make_work(tmp_path / "c", initcheck="========= COMPUTE-SANITIZER\n", initcheck_rc=124))
    assert record["status"] == "passed" and record["sanitizer"]["initcheck"] == "timed out"
    record = build(make_work(tmp_path / "b", memcheck=None, memcheck_rc=None))
    assert record["status"] == "failed" and any("memcheck: not run" in f for f in record["failures"])


def test_absent_sanitizer_and_host_compiler_are_said_plainly(tmp_path):
    absent = {f"{tool}{suffix}": value for tool in ("memcheck", "racecheck", "initcheck")
              for suffix, value in (("", None), ("_rc", 127))}
    record = build(make_work(tmp_path, run={**RUN, "compute_sanitizer": None, "host_compiler": None}, **absent))
    assert [record["sanitizer"][tool] for tool in ("memcheck", "racecheck", "initcheck")] == ["absent"] * 3
    assert "memcheck: absent (no compute-sanitizer on this machine), not checked" in record["failures"]
    assert record["notes"] == ["no host C++ compiler: the harness cross-checks were skipped"]


def test_failing_tests_are_listed_with_their_replay(tmp_path):
    cases = [("tests/test_gemm_gpu.py::test_backward_passes[tc-bf16-64x64]", "failed"),
             ("tests/test_cuda_gpu.py::test_sgd_step[0.9-0.0-1-7]", "passed"),
             ("tests/test_conv2d_gpu.py::test_forward[tc-fp16-64x32-x1x1x29x31-w1x1x3x3-s11-p11-d11]", None)]
    record = build(make_work(tmp_path, tests_jsonl=jsonl(cases, finished=False), tests_rc=124))
    assert record["tests"]["failed"] == 1 and record["tests"]["unfinished"] == 1
    failed, cut = record["failed_tests"]
    assert failed["test"] == cases[0][0] and failed["message"].startswith("AssertionError")
    assert {k: failed["replay"][k] for k in ("test", "seed", "variant", "precision", "shape")} == {
        "test": cases[0][0], "seed": 1234, "variant": "tc", "precision": "bf16", "shape": "64x64"}
    assert (cut["outcome"], cut["replay"]["variant"], cut["replay"]["precision"]) == ("unfinished", "tc", "fp16")
    lines = "\n".join(mr.summary_lines(record))
    assert f"failed: {cases[0][0]}  seed=1234 variant=tc precision=bf16 shape=64x64" in lines


def test_a_partial_record_is_marked_incomplete(tmp_path):
    work = make_work(tmp_path, bench=None, bench_rc=None, train=None, train_rc=None)
    record = build(work, partial=True)
    assert record["complete"] is False and record["status"] == "failed"
    assert any(f.startswith("incomplete: the run stopped after step initcheck") for f in record["failures"])


def test_missing_kernel_hash_is_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "_kernels_sha256", lambda: None)
    record = mr.build_record(make_work(tmp_path), now=NOW, commit=("c0ffee", False))
    assert record["status"] == "failed"
    assert any("kernels_sha256" in f for f in record["failures"])


def test_record_filename_names_date_and_device(tmp_path):
    record = build(make_work(tmp_path))
    assert mr.record_filename(record) == "2026-11-26T1402Z-nvidia-h100-80gb-hbm3.json"
    assert mr.record_filename({**record, "device": None}) == "2026-11-26T1402Z-no-gpu.json"


def test_write_record_puts_the_record_in_both_folders_and_the_logs_in_one_tarball(tmp_path):
    work = make_work(tmp_path, tests_jsonl=jsonl([("t::a", "passed")]))
    for extra in ("bench.png", "racecheck.junit.xml.bak", "stray.txt"):
        (work / extra).write_text("x")
    record = build(work)
    results, out = tmp_path / "results", tmp_path / "out"
    written = mr.write_record(record, work, results, out)
    name = mr.record_filename(record)
    assert written == [results / name, out / name]
    assert json.loads((results / name).read_text())["status"] == "passed"
    assert sorted(p.name for p in out.iterdir()) == sorted([name, "tests.jsonl", "bench.png", "logs.tar.gz"])
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"gpu-run/tests.log", "gpu-run/memcheck.log", "gpu-run/steps.tsv", "gpu-run/stray.txt"} <= names
    mr.write_record(record, work, results, out)  # a later call rewrites the same files
    assert len(list(out.iterdir())) == 4 <= mr.MAX_OUT_FILES


def test_build_command_exits_nonzero_on_failure_and_zero_on_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "_kernels_sha256", lambda: SHA)
    monkeypatch.setenv("DLGPU_COMMIT", "c0ffee")
    good = make_work(tmp_path / "good")
    assert mr.main(["build", str(good), "--results-dir", str(tmp_path / "r1")]) == 0
    bad = make_work(tmp_path / "bad", memcheck=MEMCHECK_DIRTY, memcheck_rc=86)
    started = "2026-11-26T14:02:00+00:00"
    for partial in (["--partial"], []):  # the run's record after a step, then its last: one file
        assert mr.main(["build", str(bad), "--started", started, "--results-dir", str(tmp_path / "r2"),
                        *partial]) == 1
    (record_path,) = (tmp_path / "r2").iterdir()
    assert record_path.name.startswith("2026-11-26T1402Z")
    assert json.loads(record_path.read_text())["complete"] is True


def test_probe_without_gpu_exits_3(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "probe_device", lambda: {"gpu": False, "reason": "CuPy is not importable"})
    assert mr.main(["probe", str(tmp_path)]) == 3
    assert json.loads((tmp_path / "device.json").read_text())["gpu"] is False


# -- the per-test results plugin ------------------------------------------------------

DEMO_TESTS = '''
import os
import signal

import pytest
from hypothesis import given, settings, strategies as st


def test_passes():
    pass


@pytest.fixture
def seeded(request):
    request.node.user_properties.append(("seed", 4321))  # as tests/conftest.py's rng fixture does


@pytest.mark.parametrize("variant,precision,shape", [("simt", "ieee", (3, 5)), ("tc", "bf16", (36, 20, 12))])
def test_product(seeded, variant, precision, shape):
    assert variant == "simt", "wrong numbers"


@pytest.fixture
def broken():
    raise RuntimeError("setup broke")


def test_setup_fails(broken):
    pass


@settings(max_examples=50, database=None)
@given(st.integers(0, 100))
def test_property(n):
    assert n < 50


def test_kills_its_process():
    os.kill(os.getpid(), signal.SIGKILL)


def test_never_reached():
    pass
'''


def _xdist() -> bool:
    return importlib.util.find_spec("xdist") is not None


@pytest.mark.parametrize("workers", [None, pytest.param(2, marks=pytest.mark.skipif(
    not _xdist(), reason="pytest-xdist is not installed (the GPU machine has it)"))])
def test_a_killed_pytest_still_leaves_its_per_test_results(tmp_path, workers):
    (tmp_path / "test_demo.py").write_text(DEMO_TESTS)
    results = tmp_path / "results.jsonl"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
            "-p", "benchmarks.results_plugin", "--results-jsonl", str(results), str(tmp_path / "test_demo.py")]
    if workers:
        argv += ["-n", str(workers), "-p", "no:randomly"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    counts = mr.read_results_jsonl(results)
    by_test = {f["test"].split("::")[-1]: f for f in counts["failed_tests"]}
    assert counts["passed"] >= 2, proc.stdout  # test_passes and test_product[simt...]
    assert (counts["failed"], counts["errors"]) == (2, 1)
    replay = by_test["test_product[tc-bf16-shape1]"]["replay"]
    assert (replay["seed"], replay["variant"], replay["precision"], replay["shape"]) == (4321, "tc", "bf16",
                                                                                         "(36, 20, 12)")
    assert any(re.search(r"n=50", line) for line in by_test["test_property"]["replay"]["hypothesis"])
    assert by_test["test_setup_fails"]["message"] == "RuntimeError: setup broke"
    if workers:
        # xdist reports the dead worker's test as crashed, starts another worker and finishes the run
        assert proc.returncode == 1 and counts["finished"] and by_test["test_kills_its_process"]["outcome"] == "crashed"
    else:
        assert proc.returncode == -signal.SIGKILL and not counts["finished"]
        assert by_test["test_kills_its_process"]["outcome"] == "unfinished"
        assert counts["not_started"] == 1 and counts["total"] == 7


# -- the sanitizer selection ------------------------------------------------------------


def test_the_sanitizer_selection_covers_every_family_and_variant():
    from dlgpu.cuda import compiler, conv2d_wgmma, gemm, gemm_wgmma

    conv = importlib.import_module("dlgpu.cuda.conv2d")
    cases = sanitizer_plugin.SANITIZER_TESTS
    assert {c.family for c in cases} == set(compiler.families())
    assert gemm_wgmma.VARIANT is gemm.VARIANTS["wgmma"]
    variants = [*gemm.VARIANTS.values(), conv2d_wgmma.VARIANT, *conv.VARIANTS.values()]
    assert {(v.family, v.name) for v in variants} <= {(c.family, c.variant) for c in cases}
    # each precision of the mma.sync variants is its own build (a -D define): each is watched (wgmma's one
    # build holds all three)
    seen = {(c.family, c.variant, c.precision) for c in cases}
    assert {(v.family, name, p) for name, v in gemm.VARIANTS.items() if name != "wgmma" for p in v.precisions} <= seen
    assert {(v.family, name, p) for name, v in conv.VARIANTS.items() for ps in v.passes.values() for p in ps} <= seen
    passes = {(c.variant, c.pass_) for c in cases if c.family.startswith("conv2d")}
    assert {(name, p) for name, v in conv.VARIANTS.items() for p in v.passes} <= passes
    for case in cases:  # the labels say what the ids run
        params = re.split(r"[\[\]\-]", case.test.split("::")[1])
        if case.variant not in ("-", "wgmma"):  # the wgmma test has one variant and precision: no ids for them
            assert case.variant in params and case.precision in params, case
        if case.pass_:
            assert case.pass_ in params or f"::test_{case.pass_}" in case.test, case
    assert len(cases) == len({c.test for c in cases}) <= 30  # short: each runs under three tools


def test_every_sanitizer_test_id_names_a_collected_test():
    ids = [case.test for case in sanitizer_plugin.SANITIZER_TESTS]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *ids],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected == ids


def test_the_sanitizer_plugin_prints_the_selection():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sanitizer_plugin.py")], capture_output=True,
                          text=True, check=True)
    assert proc.stdout.splitlines() == [case.test for case in sanitizer_plugin.SANITIZER_TESTS]


@pytest.mark.parametrize("tool", ["memcheck", "racecheck", "initcheck"])
def test_each_sanitizer_gets_its_own_selection(tool):
    """gpu_run.sh asks per tool: initcheck leaves out the TMA-store tests (wgmma), the others run all."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sanitizer_plugin.py"), tool],
                          capture_output=True, text=True, check=True)
    ids = proc.stdout.splitlines()
    everything = [case.test for case in sanitizer_plugin.SANITIZER_TESTS]
    left_out = [test for test in everything if test not in ids]
    assert ids and set(ids) <= set(everything)  # never empty: an empty list would run the whole suite
    if tool == "initcheck":
        assert left_out and all("wgmma" in test for test in left_out)
    else:
        assert left_out == []


# -- the harness cross-checks where no host compiler exists ---------------------------------

FAKE_CUPY = '''
__version__ = "0.0-fake"
class _Runtime:
    def getDeviceCount(self): return 1
    def getDeviceProperties(self, i): return {"name": b"Fake GPU", "major": 9, "minor": 0}
    def driverGetVersion(self): return 13000
    def runtimeGetVersion(self): return 13000
class cuda:
    runtime = _Runtime()
    set_allocator = set_pinned_memory_allocator = staticmethod(lambda allocator: None)
'''


def fake_cupy(tmp_path: Path) -> Path:
    """A folder holding a `cupy` that reports one GPU (and can do nothing else)."""
    folder = tmp_path / "fake"
    (folder / "cupy").mkdir(parents=True)
    (folder / "cupy" / "__init__.py").write_text(FAKE_CUPY)
    return folder


def test_harness_cross_checks_skip_where_no_host_compiler_exists(tmp_path):
    """A GPU machine without g++: the harness half of a cross-check cannot run, so the test skips."""
    crosschecks = ["tests/test_gemm.py::test_harness_agrees_with_the_gpu",
                   "tests/test_conv2d.py::test_harness_agrees_with_the_device",
                   "tests/test_elementwise.py::test_harness_agrees_with_the_gpu_through_the_launchers",
                   "tests/test_softmax.py::test_harness_agrees_with_the_gpu_through_the_launchers",
                   "tests/test_pool.py::test_harness_agrees_with_the_gpu_through_the_launchers",
                   "tests/test_bias_grad.py::test_harness_agrees_with_the_gpu_through_the_launcher",
                   "tests/test_harness.py::test_harness_agrees_with_the_gpu"]
    empty = tmp_path / "no-compilers"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CXX")}
    env.update(PATH=str(empty), PYTHONPATH=os.pathsep.join([str(fake_cupy(tmp_path)), str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *crosschecks],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=+ \d+ skipped in .*", summary), summary
    assert "no C++ compiler found" in proc.stdout


# -- the script itself ----------------------------------------------------------


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def _gpu_present() -> bool:
    from dlgpu.bench import gpu_probe

    return gpu_probe()[0]


@pytest.mark.skipif(_gpu_present(), reason="this checks the run's answer where no GPU exists")
def test_script_without_gpu_fails_loudly_and_records_the_failure(tmp_path):
    env = {**os.environ, "DLGPU_PYTHON": sys.executable, "DLGPU_RESULTS_DIR": str(tmp_path / "results"),
           "DLGPU_COMMIT": "c0ffee"}
    env.pop("OUT", None)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert "GPU RUN FAILED" in proc.stdout
    (record_path,) = (tmp_path / "results").iterdir()
    record = json.loads(record_path.read_text())
    assert record["status"] == "failed" and record["complete"] is True
    assert any(f.startswith("no GPU found") for f in record["failures"])
    assert record["commit"] == "c0ffee"
    assert len(record["kernels_sha256"]) == 64
    files = list(out.iterdir())
    assert record_path.name in {p.name for p in files}
    assert len(files) <= 8



# -- README's performance table from the newest record ----------------------------------


def _load_perf_table():
    spec = importlib.util.spec_from_file_location("perf_table", REPO / "tools" / "perf_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pt = _load_perf_table()

README = """# dlgpu

Intro text.

<!-- perf-table:start -->
old table
<!-- perf-table:end -->

More text after.
"""


def _results_with_two_records(tmp_path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    old = build(make_work(tmp_path / "old"))
    old["date"] = "2026-11-25T10:00:00+00:00"
    old["rows"][0] = {**old["rows"][0], "ms": 9.999}
    (results / "2026-11-25T1000Z-nvidia-h100-80gb-hbm3.json").write_text(json.dumps(old))
    new = build(make_work(tmp_path / "new"))
    (results / mr.record_filename(new)).write_text(json.dumps(new))
    (results / "README.md").write_text("not a record")
    (results / "broken.json").write_text("{")
    return results


def test_perf_table_picks_the_newest_record(tmp_path):
    path, record = pt.newest_record(_results_with_two_records(tmp_path))
    assert path.name == "2026-11-26T1402Z-nvidia-h100-80gb-hbm3.json"
    assert record["rows"][0]["ms"] == 0.19


def test_perf_table_passes_over_a_newer_record_without_rows(tmp_path):
    """A run of the sanitizers alone (no bench step) is newer but leaves the table to the last benchmarked run."""
    results = _results_with_two_records(tmp_path)
    bare = build(make_work(tmp_path / "bare"))
    bare["date"], bare["rows"] = "2026-11-27T10:00:00+00:00", []
    (results / "2026-11-27T1000Z-nvidia-h100-80gb-hbm3.json").write_text(json.dumps(bare))
    path, record = pt.newest_record(results)
    assert path.name == "2026-11-26T1402Z-nvidia-h100-80gb-hbm3.json" and record["rows"]
    for name in ("2026-11-25T1000Z-nvidia-h100-80gb-hbm3.json", "2026-11-26T1402Z-nvidia-h100-80gb-hbm3.json"):
        (results / name).unlink()
    assert pt.newest_record(results)[0].name == "2026-11-27T1000Z-nvidia-h100-80gb-hbm3.json"  # none has rows


def test_perf_table_renders_the_rows_status_and_hash_match(tmp_path):
    path, record = pt.newest_record(_results_with_two_records(tmp_path))
    body = pt.render(record, path.name, SHA)
    assert "| relu_forward | default | 67108864 | float32 | 0.190 | cupy | 0.200 | 1.05× | 2825 GB/s | 94% |" in body
    assert "kernels identical to this checkout" in body
    assert "**passed**" in body and "memcheck clean" in body
    assert "device copy 3000 GB/s" in body
    assert "kernels changed" in pt.render(record, path.name, "0" * 64)


def test_perf_table_sets_each_row_beside_its_prediction(tmp_path):
    path, record = pt.newest_record(_results_with_two_records(tmp_path))
    predicted = {"measure": "ratio", "low": 0.8, "high": 0.95, "baseline": "cupy", "text": "0.80-0.95x cupy"}
    first = {**record["rows"][0], "predicted": predicted, "verdict": "above"}
    unjudged = {**record["rows"][0], "predicted": predicted, "verdict": None, "ms": None, "error": "boom"}
    record = {**record, "rows": [first, unjudged, record["rows"][0]]}
    body = pt.render(record, path.name, SHA)
    assert "| 1.05× | 2825 GB/s | 94% | 0.80-0.95x cupy: **above** |" in body
    assert "| error | cupy |" in body and body.count("| 0.80-0.95x cupy |") == 1  # no verdict without a time
    assert "1 above, 1 not judged, 1 no prediction" in body
    lines = mr.summary_lines({**build(make_work(tmp_path / "s")), "rows": [first]})
    assert any("predicted 0.80-0.95x cupy: above" in line for line in lines)


def test_perf_table_rewrites_only_the_marked_span_and_is_idempotent(tmp_path):
    results = _results_with_two_records(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert pt.main(["--results-dir", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# dlgpu\n\nIntro text.\n\n<!-- perf-table:start -->\n")
    assert text.endswith("<!-- perf-table:end -->\n\nMore text after.\n")
    assert "old table" not in text and "| relu_forward |" in text and "0.190" in text
    assert pt.main(["--results-dir", str(results), "--readme", str(readme), "--check"]) == 0
    assert readme.read_text() == text
    readme.write_text(README)
    assert pt.main(["--results-dir", str(results), "--readme", str(readme), "--check"]) == 1
    assert readme.read_text() == README        # --check never writes


def test_perf_table_refuses_a_readme_without_markers_and_an_empty_results_folder(tmp_path):
    results = _results_with_two_records(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert pt.main(["--results-dir", str(results), "--readme", str(readme)]) == 2
    assert readme.read_text() == "# no markers\n"
    with pytest.raises(pt.PerfTableError, match="exactly one"):
        pt.replace_span(README + README, "x")
    (tmp_path / "empty").mkdir()
    assert pt.main(["--results-dir", str(tmp_path / "empty")]) == 2



# Stand-ins for the interpreter (DLGPU_PYTHON) and compute-sanitizer: the run's heavy steps are replaced by
# fast fakes (demo pytest sessions instead of the GPU tests and the sanitizer selection, canned JSON for
# compile, bench and the training step); everything else -- the probe against a fake CuPy, the plugins,
# the record -- runs for real.
FAKE_PYTHON = '''#!/usr/bin/env bash
real={python}
args=" $* "
case "$args" in
  *" -m dlgpu.cli compile "*) echo '{compile}' ;;
  *" -m dlgpu.cli bench "*)
    while [ $# -gt 0 ]; do [ "$1" = --json ] && echo '{bench}' > "$2"; shift; done ;;
  *" -m pytest "*"bench_train.py"*)
    while [ $# -gt 0 ]; do [ "$1" = --benchmark-json ] && echo '{train}' > "$2"; shift; done ;;
  *" -p benchmarks.sanitizer_plugin "*)
    keep=()
    for arg in "$@"; do [[ "$arg" == *::* ]] || keep+=("$arg"); done
    exec "$real" "${{keep[@]}}" {sanitized} ;;
  *" -m pytest "*" -m gpu tests "*)
    keep=()
    while [ $# -gt 0 ]; do
      case "$1" in -m) shift 2 ;; tests) keep+=({demo}); shift ;; *) keep+=("$1"); shift ;; esac
    done
    exec "$real" -m pytest "${{keep[@]}}" ;;
  *) exec "$real" "$@" ;;
esac
'''

FAKE_SANITIZER = '''#!/usr/bin/env bash
tool=""
while [ $# -gt 0 ]; do case "$1" in --tool) tool=$2; shift 2 ;; --*) shift 2 ;; *) break ;; esac; done
"$@"
rc=$?
if [ "$tool" = racecheck ]; then echo "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
else echo "========= ERROR SUMMARY: 0 errors"; fi
exit $rc
'''

HANGING_TESTS = '''
import os
import time
from pathlib import Path

import pytest


def test_passes():
    pass


@pytest.mark.parametrize("variant,precision", [("tc", "fp16")])
def test_fails(variant, precision):
    assert False, "wrong numbers"


def test_hangs():
    if os.environ.get("HANG_MARKER"):
        Path(os.environ["HANG_MARKER"]).write_text("hanging")
    time.sleep(600)
'''


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_run_env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a run on fake steps (see FAKE_PYTHON) against a fake one-GPU CuPy."""
    demo = tmp_path / "demo" / "test_hang.py"
    demo.parent.mkdir()
    demo.write_text(HANGING_TESTS)
    sanitized = tmp_path / "demo" / "test_small.py"
    sanitized.write_text("def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    fake_python = _executable(tmp_path / "python", FAKE_PYTHON.format(
        python=sys.executable, compile=json.dumps(COMPILE), bench=json.dumps(BENCH), train=json.dumps(TRAIN),
        demo=demo, sanitized=sanitized))
    return {**os.environ, "DLGPU_PYTHON": str(fake_python), "DLGPU_RESULTS_DIR": str(tmp_path / "results"),
            "PYTHONPATH": str(fake_cupy(tmp_path)), "DLGPU_COMMIT": "c0ffee",
            "DLGPU_COMPUTE_SANITIZER": str(_executable(tmp_path / "compute-sanitizer", FAKE_SANITIZER)),
            "DLGPU_TEST_TIMEOUT": "300", "DLGPU_JOBS": "2", **extra}


@pytest.mark.slow  # waits out the test step's 25-s limit
def test_script_cut_in_its_test_step_still_records_each_test_and_runs_the_sanitizers(tmp_path):
    env = fake_run_env(tmp_path, DLGPU_T_TESTS="25")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "GPU: Fake GPU" in proc.stdout and "GPU RUN FAILED" in proc.stdout
    (record_path,) = (tmp_path / "results").iterdir()
    record = json.loads(record_path.read_text())
    assert record["complete"] and record["device"] == "Fake GPU"
    assert record["steps"]["tests"]["rc"] == 124 and "step tests timed out" in " ".join(record["failures"])
    tests = record["tests"]
    assert (tests["passed"], tests["failed"], tests["unfinished"]) == (1, 1, 1)
    by_name = {f["test"].split("::")[-1]: f for f in record["failed_tests"]}
    assert by_name["test_hangs"]["outcome"] == "unfinished"
    replay = by_name["test_fails[tc-fp16]"]["replay"]
    assert (replay["variant"], replay["precision"]) == ("tc", "fp16")
    for tool in ("memcheck", "racecheck", "initcheck"):  # the three ran side by side, each on the selection
        assert record["sanitizer"][tool] == "clean", record["sanitizer"]["details"][tool]
        assert record["sanitizer"]["details"][tool]["tests"]["passed"] == 2
    assert record["run"]["hypothesis_examples"] == 33  # 25 s * 4/3
    assert record["rows"] == BENCH["rows"] and len(record["train"]) == 3
    assert {"compile", "bench", "train"} <= set(record["steps"])
    assert sorted(p.name for p in out.iterdir()) == sorted([record_path.name, "tests.jsonl", "logs.tar.gz"])
    assert mr.read_results_jsonl(out / "tests.jsonl")["unfinished"] == 1


@pytest.mark.slow  # several Python start-ups, a pytest session among them
def test_script_stopped_from_outside_still_writes_its_record(tmp_path):
    """TERM in the middle of the test step: the trap stops the step and writes the record, marked incomplete."""
    marker = tmp_path / "hanging"
    env = fake_run_env(tmp_path, DLGPU_T_TESTS="150", HANG_MARKER=str(marker))
    proc = subprocess.Popen(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(1200):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the demo's hanging test never started"
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "GPU RUN FAILED" in stdout, stdout
    (record_path,) = (tmp_path / "results").iterdir()
    record = json.loads(record_path.read_text())
    assert record["complete"] is False and record["tests"]["unfinished"] == 1 and record["tests"]["passed"] == 1
    assert any(f.startswith("incomplete: the run stopped after step compile") for f in record["failures"])
    assert (tmp_path / "out" / record_path.name).is_file()


def test_script_with_its_time_budget_spent_runs_no_step_and_records_timeouts(tmp_path):
    """A GPU that answers the probe, but no time left: every step is skipped as timed out.

    10 s is less than the last step's floor and timeout's 5 s of grace, however fast the probe runs."""
    env = {**os.environ, "DLGPU_PYTHON": sys.executable, "DLGPU_RESULTS_DIR": str(tmp_path / "results"),
           "DLGPU_BUDGET": "10", "PYTHONPATH": str(fake_cupy(tmp_path)), "DLGPU_COMMIT": "c0ffee",
           "DLGPU_COMPUTE_SANITIZER": "none"}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "GPU: Fake GPU" in proc.stdout
    assert proc.stdout.count("not run, the time budget is spent") == 6
    (record_path,) = (tmp_path / "results").iterdir()
    record = json.loads(record_path.read_text())
    assert record["status"] == "failed" and record["device"] == "Fake GPU"
    assert {name for name, step in record["steps"].items() if step["rc"] == 124} == \
        {"info", "compile", "tests", "bench", "train", "sweep"}
    assert record["sanitizer"]["memcheck"] == "absent" and record["run"]["compute_sanitizer"] is None
    assert any("step tests timed out" in f for f in record["failures"])
    assert not any("sweep" in f for f in record["failures"])  # informational
    assert len(list((tmp_path / "out").iterdir())) <= 8


def test_poisoned_arrays_are_never_a_written_value():
    """The poisoned ``empty`` of the harness (NumPy) and of the GPU tests (CuPy, the same class) for every
    storage the launchers allocate: NaN for floats, and for the uint16/uint32 that hold bf16/fp16/f32 bits
    a pattern that decodes to NaN (the first GPU run found the GPU tests' -7, which NumPy 2 refuses as a
    uint16); the rest of the module forwarded."""
    import ml_dtypes
    import numpy as np

    from dlgpu.testing.harness import PoisonedArrays

    xp = PoisonedArrays(np)
    assert np.isnan(xp.empty((2, 3))).all() and xp.empty((2, 3)).shape == (2, 3)
    assert np.isnan(xp.empty(4, np.float16)).all() and np.isnan(xp.empty_like(np.zeros((2, 2), np.float32))).all()
    bits16 = xp.empty(5, np.uint16)
    assert np.isnan(bits16.view(np.float16)).all() and np.isnan(bits16.view(ml_dtypes.bfloat16).astype(np.float32)).all()
    assert np.isnan(xp.empty(3, np.uint32).view(np.float32)).all()
    assert (xp.empty(3, np.int32) == -1).all() and xp.empty_like(np.zeros(2, np.int64), shape=(4,)).shape == (4,)
    assert xp.ascontiguousarray is np.ascontiguousarray and xp.zeros is np.zeros
    assert np.isnan(xp.empty(3, ml_dtypes.bfloat16).astype(np.float32)).all()  # 16-bit storage itself
    assert np.isnan(xp.empty((4, 6), np.float32)[:, ::2]).all()
