"""The GPU run's logic on the CPU: the record builder on fake logs, and the script without a GPU.

benchmarks/gpu_run.sh leaves its artifacts in a work folder; make_record.py turns them
into the record.  These tests lay down fake artifacts (junit XML, compute-sanitizer logs,
a bench JSON) for passing and failing runs and check that only a fully clean GPU run is
recorded as passed.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_run.sh"


def _load_make_record():
    spec = importlib.util.spec_from_file_location("make_record", REPO / "benchmarks" / "make_record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mr = _load_make_record()

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


def make_work(tmp_path: Path, *, gpu=True, tests=PASSING_TESTS, tests_rc=0, memcheck=MEMCHECK_CLEAN,
              memcheck_rc=0, racecheck=RACECHECK_CLEAN, racecheck_rc=0, sanitizer_tests=None,
              bench=BENCH, bench_rc=0, info_rc=0) -> Path:
    """A work folder as gpu_run.sh leaves it; None for an artifact means the step left none."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    device = ({"gpu": True, "name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "cuda_driver_api": "13.0",
               "cuda_runtime": "13.0", "compute_capability": "90", "cupy": "14.2.0", "torch": "2.11.0"}
              if gpu else {"gpu": False, "reason": "CuPy is not importable"})
    (work / "device.json").write_text(json.dumps(device))
    steps = [("info", info_rc), ("tests", tests_rc), ("memcheck", memcheck_rc), ("racecheck", racecheck_rc),
             ("bench", bench_rc)]
    (work / "steps.tsv").write_text("".join(f"{name}\t{rc}\t5\n" for name, rc in steps if rc is not None))
    (work / "info.log").write_text("dlgpu info\n")
    if tests is not None:
        (work / "tests.junit.xml").write_text(junit(tests))
        (work / "tests.log").write_text("pytest output\n")
    sanitizer_tests = sanitizer_tests if sanitizer_tests is not None else PASSING_TESTS[:3]
    for tool, log in (("memcheck", memcheck), ("racecheck", racecheck)):
        if log is not None:
            (work / f"{tool}.log").write_text(log)
            (work / f"{tool}.junit.xml").write_text(junit(sanitizer_tests))
    if bench is not None:
        (work / "bench.json").write_text(json.dumps(bench))
        (work / "bench.log").write_text("table\n")
    return work


def build(work: Path) -> dict:
    return mr.build_record(work, now=NOW, kernels_sha256=SHA, commit=("c0ffee", False))


# -- parsing ----------------------------------------------------------------


def test_parse_junit_counts_each_outcome(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(junit([("a", "t1", None), ("a", "t2", "failure"), ("a", "t3", "error"),
                           ("a", "t4", "skipped"), ("b", "t5", None)]))
    counts = mr.parse_junit(path)
    assert {k: counts[k] for k in ("passed", "failed", "errors", "skipped", "total")} == \
        {"passed": 2, "failed": 1, "errors": 1, "skipped": 1, "total": 5}
    assert counts["failed_tests"] == ["a::t2", "a::t3 (error)"]
    only_b = mr.parse_junit(path, classname_contains="b")
    assert (only_b["passed"], only_b["total"]) == (1, 1)


def test_parse_junit_missing_or_torn_file_is_none(tmp_path):
    assert mr.parse_junit(tmp_path / "absent.xml") is None
    torn = tmp_path / "torn.xml"
    torn.write_text("<testsuites><testsuite><testcase")
    assert mr.parse_junit(torn) is None


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
    ],
)
def test_sanitizer_verdicts(tmp_path, tool, log, rc, tests, verdict):
    (tmp_path / "s.log").write_text(log)
    (tmp_path / "s.xml").write_text(junit(tests))
    assert mr.sanitizer_verdict(tool, rc, tmp_path / "s.log", tmp_path / "s.xml")["verdict"] == verdict


def test_sanitizer_not_run_when_no_log(tmp_path):
    assert mr.sanitizer_verdict("memcheck", None, tmp_path / "none.log", tmp_path / "none.xml")["verdict"] == "not run"


def test_steps_file_keeps_exit_codes_and_seconds(tmp_path):
    path = tmp_path / "steps.tsv"
    path.write_text("info\t0\t2\ntests\t124\t180\nbroken line\n")
    assert mr.read_steps(path) == {"info": {"rc": 0, "seconds": 2}, "tests": {"rc": 124, "seconds": 180}}


# -- the record ---------------------------------------------------------------


def test_clean_run_is_recorded_as_passed(tmp_path):
    record = build(make_work(tmp_path))
    assert record["status"] == "passed", record["failures"]
    assert record["failures"] == []
    assert {k: record["tests"][k] for k in ("passed", "failed", "skipped")} == {"passed": 3, "failed": 0, "skipped": 1}
    assert record["harness_crosscheck"]["passed"] == 1
    assert record["sanitizer"]["memcheck"] == "clean" and record["sanitizer"]["racecheck"] == "clean"
    assert record["device"] == "NVIDIA H100 80GB HBM3"
    assert record["driver"] == "580.159.04" and record["cuda_runtime"] == "13.0"
    assert record["kernels_sha256"] == SHA and record["commit"] == "c0ffee"
    assert record["ceilings"]["copy"]["gbps"] == 3000.0
    assert record["rows"][0]["ratio"] == 1.05
    required = {"date", "device", "driver", "cuda_runtime", "commit", "kernels_sha256", "tests", "sanitizer",
                "ceilings", "rows"}
    assert required <= set(record)
    json.dumps(record)  # serializable as it stands


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"gpu": False, "tests": None, "memcheck": None, "racecheck": None, "bench": None}, "no GPU found"),
        ({"tests": PASSING_TESTS + [("tests.test_pool", "test_pool_gpu[7]", "failure")], "tests_rc": 1},
         "GPU tests failed"),
        ({"tests": PASSING_TESTS + [("tests.test_pool", "test_collect", "error")], "tests_rc": 1}, "errored"),
        ({"tests": [("tests.test_pool", "test_pool_gpu", "skipped")]}, "no GPU test passed"),
        ({"tests": None, "tests_rc": 124}, "timed out"),
        ({"tests": None, "tests_rc": 2}, "left no junit report"),
        ({"memcheck": MEMCHECK_DIRTY, "memcheck_rc": 86}, "memcheck: errors"),
        ({"racecheck": RACECHECK_HAZARD, "racecheck_rc": 86}, "racecheck: errors"),
        ({"racecheck": None, "racecheck_rc": None}, "racecheck: not run"),
        ({"bench": None, "bench_rc": 1}, "wrote no JSON"),
        ({"bench": {**BENCH, "backend": "cpu"}}, "not the GPU"),
        ({"bench": {**BENCH, "errors": ["relu_forward: dlgpu: CompileError: boom"]}, "bench_rc": 1}, "CompileError"),
        ({"info_rc": 1}, "dlgpu info failed"),
    ],
)
def test_any_failure_is_recorded_as_failed(tmp_path, changes, expected):
    record = build(make_work(tmp_path, **changes))
    assert record["status"] == "failed"
    assert any(expected in f for f in record["failures"]), record["failures"]


def test_missing_kernel_hash_is_a_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "_kernels_sha256", lambda: None)
    record = mr.build_record(make_work(tmp_path), now=NOW, commit=("c0ffee", False))
    assert record["status"] == "failed"
    assert any("kernels_sha256" in f for f in record["failures"])


def test_record_filename_names_date_and_device(tmp_path):
    record = build(make_work(tmp_path))
    assert mr.record_filename(record) == "2026-11-26T1402Z-nvidia-h100-80gb-hbm3.json"
    assert mr.record_filename({**record, "device": None}) == "2026-11-26T1402Z-no-gpu.json"


def test_write_record_puts_the_record_in_both_folders_and_at_most_eight_files_out(tmp_path):
    work = make_work(tmp_path)
    for extra in ("bench.png", "racecheck.junit.xml.bak", "stray.txt"):
        (work / extra).write_text("x")
    record = build(work)
    results, out = tmp_path / "results", tmp_path / "out"
    written = mr.write_record(record, work, results, out)
    name = mr.record_filename(record)
    assert written == [results / name, out / name]
    assert json.loads((results / name).read_text())["status"] == "passed"
    out_files = sorted(p.name for p in out.iterdir())
    assert len(out_files) <= mr.MAX_OUT_FILES
    assert {name, "tests.log", "tests.junit.xml", "memcheck.log", "racecheck.log", "bench.log"} <= set(out_files)
    assert "stray.txt" not in out_files


def test_build_command_exits_nonzero_on_failure_and_zero_on_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "_kernels_sha256", lambda: SHA)
    monkeypatch.setenv("DLGPU_COMMIT", "c0ffee")
    good = make_work(tmp_path / "good")
    assert mr.main(["build", str(good), "--results-dir", str(tmp_path / "r1")]) == 0
    bad = make_work(tmp_path / "bad", memcheck=MEMCHECK_DIRTY, memcheck_rc=86)
    assert mr.main(["build", str(bad), "--results-dir", str(tmp_path / "r2")]) == 1
    (record_path,) = (tmp_path / "r2").iterdir()
    assert json.loads(record_path.read_text())["status"] == "failed"


def test_probe_without_gpu_exits_3(tmp_path, monkeypatch):
    monkeypatch.setattr(mr, "probe_device", lambda: {"gpu": False, "reason": "CuPy is not importable"})
    assert mr.main(["probe", str(tmp_path)]) == 3
    assert json.loads((tmp_path / "device.json").read_text())["gpu"] is False


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
    assert record["status"] == "failed"
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


def test_perf_table_renders_the_rows_status_and_hash_match(tmp_path):
    path, record = pt.newest_record(_results_with_two_records(tmp_path))
    body = pt.render(record, path.name, SHA)
    assert "| relu_forward | default | 67108864 | float32 | 0.190 | cupy | 0.200 | 1.05× | 2825 GB/s | 94% |" in body
    assert "kernels identical to this checkout" in body
    assert "**passed**" in body and "memcheck clean" in body
    assert "device copy 3000 GB/s" in body
    assert "kernels changed" in pt.render(record, path.name, "0" * 64)


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


FAKE_CUPY = '''
__version__ = "0.0-fake"
class _Runtime:
    def getDeviceCount(self): return 1
    def getDeviceProperties(self, i): return {"name": b"Fake GPU", "major": 9, "minor": 0}
    def driverGetVersion(self): return 13000
    def runtimeGetVersion(self): return 13000
class cuda:
    runtime = _Runtime()
'''


def test_script_with_its_time_budget_spent_runs_no_step_and_records_timeouts(tmp_path):
    """A GPU that answers the probe, but no time left: every step is skipped as timed out."""
    fake = tmp_path / "fake"
    (fake / "cupy").mkdir(parents=True)
    (fake / "cupy" / "__init__.py").write_text(FAKE_CUPY)
    env = {**os.environ, "DLGPU_PYTHON": sys.executable, "DLGPU_RESULTS_DIR": str(tmp_path / "results"),
           "DLGPU_BUDGET": "26", "PYTHONPATH": str(fake), "DLGPU_COMMIT": "c0ffee"}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "GPU: Fake GPU" in proc.stdout
    assert proc.stdout.count("not run, the time budget is spent") == 5
    (record_path,) = (tmp_path / "results").iterdir()
    record = json.loads(record_path.read_text())
    assert record["status"] == "failed" and record["device"] == "Fake GPU"
    assert {name for name, step in record["steps"].items() if step["rc"] == 124} == \
        {"info", "tests", "memcheck", "racecheck", "bench"}
    assert record["sanitizer"]["memcheck"] == "timed out"
    assert any("step tests timed out" in f for f in record["failures"])
    assert len(list((tmp_path / "out").iterdir())) <= 8
