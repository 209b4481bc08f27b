"""The GPU run's record: probe the device, then turn what the run left into one JSON record.

benchmarks/gpu_run.sh calls it:

    python benchmarks/make_record.py probe WORK
        writes WORK/device.json; exit 0 when CuPy sees a GPU, 3 when it does not
    python benchmarks/make_record.py build WORK --started ISO [--partial] [--results-dir DIR] [--out-dir DIR]
        reads what the run left in WORK and writes <date>-<device>.json (the date is --started,
        so each call rewrites the same file) into both folders, with the run's per-test results
        and a tarball of every log into --out-dir; exit 0 only when everything passed.
        --partial: the run is still going (the script writes a record after every step, so a
        run killed from outside still leaves one, marked incomplete).

WORK holds, by name, what each step left (a step that was cut or never ran leaves less):
  device.json (the probe), run.json (the run's settings: budget, workers, per-test timeout,
  Hypothesis examples and seed, which compute-sanitizer and host compiler were found),
  steps.tsv (step, exit code, seconds), info.log, compile.json + compile.log,
  tests.jsonl (benchmarks/results_plugin.py) + tests.junit.xml + tests.log,
  <tool>.jsonl/.junit.xml/.log for memcheck, racecheck and initcheck,
  bench.json + bench.log + bench.png, train.json + train.log, sweep.json + sweep.log (optional).

Per-test results come from the JSON lines, written as each test finishes, so a step cut
by its timeout still counts what ran; the junit file (written at the end) is the
fallback.  Every failing test is listed with what a replay on the CPU harness needs:
its id, the seed the ``rng`` fixture gave it, its parameters (variant, precision,
shape ...), and Hypothesis's falsifying example for a property test.

The record says "passed" only when a GPU was found, the kernels compiled, GPU tests
passed and none failed, errored, crashed or was cut off, memcheck and racecheck were
clean (initcheck too, when it ran), and both benchmarks ran every case on the GPU.
Every reason it is not a pass is listed in "failures"; "notes" says what is worth
knowing but no failure (a tool the machine lacks that only some tests need).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = REPO / "benchmarks" / "results"
SCHEMA = 2

# compute-sanitizer's exit code when it found errors (gpu_run.sh passes it as --error-exitcode).
SANITIZER_ERROR_EXITCODE = 86
# gpu_run.sh's exit code for a tool it did not find (the shell's "command not found").
ABSENT_EXIT_CODE = 127
TIMEOUT_EXIT_CODES = (124, 137)
SANITIZERS = ("memcheck", "racecheck", "initcheck")
# initcheck runs when the time allows: it fails a run only by what it finds, not by missing or being cut.
REQUIRED_SANITIZERS = ("memcheck", "racecheck")
# Steps that inform and never fail a run: the tile sweep (dlgpu bench --sweep) says which configuration each
# target shape wants; its rows go into the record as they are, its errors and its absence into the notes.
INFORMATIONAL_STEPS = ("sweep",)
FINDINGS = ("errors", "hazards", "tests failed")
# What the output folder gets besides the record (the device tool brings back at most 8 files).
OUT_FILES = ("tests.jsonl", "bench.png")
LOGS_TARBALL = "logs.tar.gz"
MAX_OUT_FILES = 8
# A run where everything fails must still give a record one can read.
MAX_FAILED_TESTS = 100
SLOWEST_TESTS = 15


# ---------------------------------------------------------------------------
# probe
# ---------------------------------------------------------------------------


def _nvidia_smi_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else ""
    return line or None


def probe_device() -> dict:
    """What the GPU run runs on: {"gpu": bool, "reason" or the device's name, driver, runtime, ...}."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - any import failure means no usable GPU
        return {"gpu": False, "reason": f"CuPy is not importable ({type(exc).__name__}: {exc})"}
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return {"gpu": False, "reason": "CuPy sees no CUDA device"}
        props = cupy.cuda.runtime.getDeviceProperties(0)
        driver_api = cupy.cuda.runtime.driverGetVersion()
        runtime = cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:  # noqa: BLE001
        return {"gpu": False, "reason": f"CuPy sees no CUDA device ({type(exc).__name__}: {exc})"}
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info = {
        "gpu": True,
        "name": name,
        "count": int(count),
        "compute_capability": f"{props['major']}{props['minor']}",
        "driver": _nvidia_smi_driver(),
        "cuda_driver_api": f"{driver_api // 1000}.{driver_api % 1000 // 10}",
        "cuda_runtime": f"{runtime // 1000}.{runtime % 1000 // 10}",
        "cupy": cupy.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except Exception:  # noqa: BLE001 - torch is optional
        info["torch"] = None
    return info


# ---------------------------------------------------------------------------
# per-test results
# ---------------------------------------------------------------------------

_COUNT_KEYS = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "crashed", "unfinished",
               "not_started", "total")
# Outcomes that keep a run from passing, and are listed with their replay information.
BAD_OUTCOMES = ("failed", "errors", "crashed", "unfinished")


def _empty_counts() -> dict:
    return dict.fromkeys(_COUNT_KEYS, 0)


@functools.lru_cache(maxsize=1)
def _registry_names() -> tuple[frozenset[str], frozenset[str]]:
    """(variant names, precision names) from dlgpu's registries; empty where dlgpu does not import."""
    sys.path.insert(0, str(REPO))
    try:
        # the attribute dlgpu.cuda.conv2d is the backend function; the registries live in the modules
        gemm = importlib.import_module("dlgpu.cuda.gemm")
        conv2d = importlib.import_module("dlgpu.cuda.conv2d")
        precisions = importlib.import_module("dlgpu.precision").PRECISIONS
        return frozenset(gemm.VARIANTS) | frozenset(conv2d.VARIANTS), frozenset(precisions)
    except Exception:  # noqa: BLE001 - the record is still written; the fields stay None
        return frozenset(), frozenset()


def replay_fields(nodeid: str, params: dict) -> dict:
    """variant, precision and shape of a test: from its parameters, else from the tokens of its id."""
    variants, precisions = _registry_names()
    tokens = re.split(r"[\[\]\-]", nodeid.split("::")[-1])
    fields = {}
    for key, known in (("variant", variants), ("precision", precisions)):
        value = params.get(key)
        fields[key] = value if value is not None else next((t for t in tokens if t in known), None)
    fields["shape"] = next((params[k] for k in ("shape", "config", "case", "n") if k in params), None)
    return fields


def read_results_jsonl(path: Path, keep: Callable[[str], bool] | None = None) -> dict | None:
    """Counts, failing tests (with replay information) and the slowest tests from a results file.

    ``keep(nodeid)`` picks the tests to count (default: all).  None when the file is missing or
    has no session line.  A test that started and has no final report is "unfinished" (running
    when the step was cut, or in a worker that died); a collected test that never started is
    "not_started".
    """
    if not path.is_file():
        return None
    keep = keep or (lambda nodeid: True)
    collected: list[str] | None = None
    started: dict[str, None] = {}
    reports: dict[str, list[dict]] = {}
    finished = None
    session = False
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill
        kind = event.get("event")
        if kind == "session":
            session = True
        elif kind == "collected" and collected is None:
            collected = [n for n in event.get("nodeids") or [] if keep(n)]
        elif kind == "finish":
            finished = event.get("exitstatus")
        elif kind in ("start", "report") and not keep(event.get("nodeid", "")):
            continue
        elif kind == "start":
            started.setdefault(event["nodeid"], None)
        elif kind == "report":
            reports.setdefault(event["nodeid"], []).append(event)
    if not session:
        return None

    counts = _empty_counts()
    failing: list[dict] = []
    durations: list[tuple[float, str]] = []
    for nodeid in dict.fromkeys([*(collected or []), *started, *reports]):
        outcome, report = _outcome(reports.get(nodeid, []), nodeid in started)
        counts[outcome] += 1
        call = next((r for r in reports.get(nodeid, []) if r.get("when") == "call"), None)
        if call is not None:
            durations.append((float(call.get("duration") or 0.0), nodeid))
        if outcome in BAD_OUTCOMES:
            replay = dict((report or {}).get("replay") or {"test": nodeid})
            replay.update({k: v for k, v in replay_fields(nodeid, replay.get("params") or {}).items()
                           if replay.get(k) is None})
            failing.append({"test": nodeid, "outcome": outcome, "message": (report or {}).get("message"),
                            "worker": (report or {}).get("worker"), "replay": replay})
    counts["total"] = len(collected) if collected is not None else sum(counts[k] for k in _COUNT_KEYS[:-2])
    durations.sort(reverse=True)
    return {
        **counts,
        "finished": finished is not None,
        "exitstatus": finished,
        "failed_tests": failing[:MAX_FAILED_TESTS],
        "failed_tests_left_out": max(0, len(failing) - MAX_FAILED_TESTS),
        "slowest": [{"test": n, "seconds": round(s, 3)} for s, n in durations[:SLOWEST_TESTS]],
    }


def _outcome(reports: list[dict], started: bool) -> tuple[str, dict | None]:
    """One test's outcome from its report lines (setup, call, teardown; '???' for an xdist crash)."""
    if not reports:
        return ("unfinished" if started else "not_started"), None
    for r in reports:
        if r.get("outcome") == "failed" and r.get("when") not in ("setup", "call", "teardown"):
            return "crashed", r  # xdist: the worker died while running it
    for r in reports:
        if r.get("outcome") == "failed" and r.get("when") in ("setup", "teardown"):
            return "errors", r
    call = next((r for r in reports if r.get("when") == "call"), None)
    if call is not None:
        if call.get("outcome") == "failed":
            return "failed", call
        if call.get("outcome") == "skipped":
            return ("xfailed" if call.get("xfail") else "skipped"), call
        return ("xpassed" if call.get("xfail") else "passed"), call
    setup_skip = next((r for r in reports if r.get("when") == "setup" and r.get("outcome") == "skipped"), None)
    if setup_skip is not None:
        return "skipped", setup_skip
    return "unfinished", reports[-1]  # the call never reported: cut during it


def parse_junit(path: Path, *, nodeid_contains: str | None = None) -> dict | None:
    """Counts from pytest's --junitxml (the fallback when there is no results file); None when missing or torn."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    counts = _empty_counts()
    failing = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if nodeid_contains and nodeid_contains not in name:
            continue
        counts["total"] += 1
        tags = {child.tag for child in case}
        outcome = ("failed" if "failure" in tags else "errors" if "error" in tags
                   else "skipped" if "skipped" in tags else "passed")
        counts[outcome] += 1
        if outcome in BAD_OUTCOMES:
            failing.append({"test": name, "outcome": outcome, "message": None, "replay": {"test": name}})
    return {**counts, "finished": True, "exitstatus": None, "failed_tests": failing[:MAX_FAILED_TESTS],
            "failed_tests_left_out": max(0, len(failing) - MAX_FAILED_TESTS), "slowest": []}


def step_results(work: Path, name: str, contains: str | None = None) -> dict | None:
    """A pytest step's results (only the tests whose id contains ``contains``, if given):
    its JSON lines, else its junit file, else None."""
    keep = None if contains is None else (lambda nodeid: contains in nodeid)
    return (read_results_jsonl(work / f"{name}.jsonl", keep)
            or parse_junit(work / f"{name}.junit.xml", nodeid_contains=contains))


# ---------------------------------------------------------------------------
# steps, sanitizers, benchmarks
# ---------------------------------------------------------------------------


def read_steps(path: Path) -> dict[str, dict]:
    """steps.tsv -> {step: {"rc": int, "seconds": int}}; later lines for a step win."""
    steps: dict[str, dict] = {}
    if not path.is_file():
        return steps
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            seconds = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            steps[parts[0]] = {"rc": int(parts[1]), "seconds": seconds}
    return steps


_ERROR_SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+)\s+error")
_RACECHECK_SUMMARY = re.compile(
    r"RACECHECK SUMMARY:\s*(\d+)\s+hazards? displayed\s*\((\d+)\s+errors?,\s*(\d+)\s+warnings?\)")


def sanitizer_summary(log_text: str) -> dict:
    """The numbers compute-sanitizer printed at the end: errors (and racecheck's hazards)."""
    out: dict = {"errors": None}
    matches = _ERROR_SUMMARY.findall(log_text)
    if matches:
        out["errors"] = int(matches[-1])
    race = _RACECHECK_SUMMARY.findall(log_text)
    if race:
        hazards, errors, warnings = (int(v) for v in race[-1])
        out.update(hazards=hazards, race_errors=errors, race_warnings=warnings)
        # racecheck may print only its own summary line; its errors are the tool's errors.
        out["errors"] = max(out["errors"] or 0, errors)
    return out


def sanitizer_verdict(tool: str, rc: int | None, work: Path) -> dict:
    """{"verdict": "clean" | "errors" | "hazards" | "timed out" | "tests failed" | "no tests ran" |
    "failed" | "absent" | "not run", ...}: clean only when the tool finished, reported zero errors,
    and the tests it watched passed; absent when the machine has no compute-sanitizer."""
    detail: dict = {"exit_code": rc}
    log_path = work / f"{tool}.log"
    if rc == ABSENT_EXIT_CODE:
        return {**detail, "verdict": "absent"}
    if rc is None or not log_path.is_file():
        return {**detail, "verdict": "not run"}
    summary = sanitizer_summary(log_path.read_text(errors="replace"))
    detail.update(summary)
    tests = step_results(work, tool)
    detail["tests"] = None if tests is None else {k: tests[k] for k in _COUNT_KEYS}
    if tests is not None and tests["failed_tests"]:
        detail["failed_tests"] = tests["failed_tests"]
    if rc in TIMEOUT_EXIT_CODES:
        verdict = "timed out"
    elif rc == SANITIZER_ERROR_EXITCODE or (summary["errors"] or 0) > 0:
        verdict = "errors"
    elif tool == "racecheck" and (summary.get("hazards") or 0) > 0:
        verdict = "hazards"
    elif summary["errors"] is None:
        verdict = "failed"          # the tool never printed its summary: it did not finish
    elif tests is None:
        verdict = "failed"
    elif any(tests[k] for k in BAD_OUTCOMES):
        verdict = "tests failed"
    elif tests["passed"] == 0:
        verdict = "no tests ran"
    elif rc != 0:
        verdict = "failed"
    else:
        verdict = "clean"
    return {**detail, "verdict": verdict}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def compile_summary(data: dict | None) -> dict | None:
    """``dlgpu compile --json``, shortened: totals, and the slowest modules (what bounds the build's wall time)."""
    if not isinstance(data, dict):
        return None
    modules = data.get("modules", [])
    slowest = sorted(modules, key=lambda m: -(m.get("seconds") or 0))[:5]
    return {
        "archs": data.get("archs"), "jobs": data.get("jobs"), "nvrtc": data.get("nvrtc"),
        "seconds": data.get("seconds"), "cpu_seconds": data.get("cpu_seconds"), **data.get("summary", {}),
        "slowest": [{"module": " ".join(filter(None, [m["family"], *(f"{k}={v}" for k, v in m["defines"].items()),
                                                      m["arch"]])),
                     "seconds": m.get("seconds"), "cpu_seconds": m.get("cpu_seconds")} for m in slowest],
        "errors": [f"{m['family']} {m['arch']}: {m['error'].splitlines()[0]}" for m in modules if m.get("error")],
    }  # fmt: skip


def train_rows(data: dict | None) -> list[dict]:
    """The training-step rows from pytest-benchmark's JSON (benchmarks/bench_train.py)."""
    rows = []
    for bench in (data or {}).get("benchmarks", []):
        extra = bench.get("extra_info", {})
        rows.append({"name": bench.get("name"), "group": bench.get("group"), "framework": extra.get("framework"),
                     "ms_per_step": extra.get("ms_per_step"), "speedup_vs_torch": extra.get("speedup_vs_torch")})
    return rows


def _kernels_sha256() -> str | None:
    sys.path.insert(0, str(REPO))
    try:
        import dlgpu

        return dlgpu.kernels_sha256()
    except Exception:  # noqa: BLE001 - reported as a failure by the caller
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit_info() -> tuple[str, bool | None]:
    """(commit, dirty): $DLGPU_COMMIT when given (the device machine's copy has no .git), else git."""
    given = os.environ.get("DLGPU_COMMIT", "").strip()
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if head else None
    dirty = None if status is None else bool(status)
    return (given or head or "unknown"), dirty


# ---------------------------------------------------------------------------
# the record
# ---------------------------------------------------------------------------


def build_record(work: Path, *, now: _dt.datetime | None = None, kernels_sha256: str | None = None,
                 commit: tuple[str, bool | None] | None = None, partial: bool = False) -> dict:
    """Everything the run left in ``work`` as one record; ``status`` is "passed" only if nothing failed."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    failures: list[str] = []
    notes: list[str] = []
    steps = read_steps(work / "steps.tsv")
    run = _read_json(work / "run.json") or {}

    device = _read_json(work / "device.json") or {"gpu": False, "reason": "not probed"}
    gpu = bool(device.get("gpu"))
    if not gpu:
        failures.append(f"no GPU found: {device.get('reason', 'unknown reason')}")
    if partial:
        last = next(reversed(steps), "none")
        failures.append(f"incomplete: the run stopped after step {last} (killed from outside, or still running)")

    for name, step in steps.items():
        if name in INFORMATIONAL_STEPS:
            continue
        if step["rc"] in TIMEOUT_EXIT_CODES and (name not in SANITIZERS or name in REQUIRED_SANITIZERS):
            failures.append(f"step {name} timed out (exit {step['rc']} after {step['seconds']} s)")

    info_rc = steps.get("info", {}).get("rc")
    if gpu and info_rc not in (None, 0):
        failures.append(f"dlgpu info failed (exit {info_rc})")

    compiled = compile_summary(_read_json(work / "compile.json"))
    if gpu:
        compile_rc = steps.get("compile", {}).get("rc")
        if compiled is None:
            failures.append(f"dlgpu compile wrote no JSON (exit {compile_rc})")
        elif compiled.get("failed") or compiled.get("problems"):
            failures.append(f"dlgpu compile: {compiled.get('failed')} modules failed, "
                            f"{compiled.get('problems')} problems")

    tests = step_results(work, "tests")
    crosscheck = step_results(work, "tests", contains="harness")
    if gpu:
        tests_rc = steps.get("tests", {}).get("rc")
        if tests is None:
            failures.append(f"the GPU tests left no results (exit {tests_rc})")
        else:
            bad = {k: tests[k] for k in BAD_OUTCOMES if tests[k]}
            if bad:
                failures.append("GPU tests: " + ", ".join(f"{n} {k}" for k, n in bad.items()))
            if tests["not_started"]:
                failures.append(f"GPU tests: {tests['not_started']} of {tests['total']} never started")
            if tests["passed"] == 0:
                failures.append("no GPU test passed (all skipped or none collected)")
            if tests_rc not in (0, None) and not bad and tests_rc not in TIMEOUT_EXIT_CODES:
                failures.append(f"pytest exited {tests_rc} on the GPU tests")
        if not run.get("host_compiler"):
            notes.append("no host C++ compiler: the harness cross-checks were skipped")

    sanitizer: dict = {}
    details: dict = {}
    for tool in SANITIZERS:
        d = sanitizer_verdict(tool, steps.get(tool, {}).get("rc"), work)
        sanitizer[tool] = d["verdict"]
        details[tool] = d
        if not gpu or d["verdict"] == "clean":
            continue
        if d["verdict"] == "absent":
            if tool in REQUIRED_SANITIZERS:
                failures.append(f"{tool}: absent (no compute-sanitizer on this machine), not checked")
        elif tool in REQUIRED_SANITIZERS or d["verdict"] in FINDINGS:
            failures.append(f"{tool}: {d['verdict']} (exit {d['exit_code']}, errors {d.get('errors')})")
    sanitizer["details"] = details

    bench = _read_json(work / "bench.json")
    train = _read_json(work / "train.json")
    if gpu:
        bench_rc = steps.get("bench", {}).get("rc")
        if not isinstance(bench, dict):
            failures.append(f"dlgpu bench wrote no JSON (exit {bench_rc})")
        else:
            if bench.get("backend") != "cuda":
                failures.append(f"dlgpu bench ran on the {bench.get('backend')} backend, not the GPU")
            failures.extend(f"bench {err}" for err in bench.get("errors", []))
            if bench.get("complete") is False:  # rewritten after every case: a cut run keeps its rows
                failures.append(f"dlgpu bench stopped early: {len(bench.get('rows', []))} rows measured")
            if bench_rc not in (0, None) and not bench.get("errors"):
                failures.append(f"dlgpu bench exited {bench_rc}")
        train_rc = steps.get("train", {}).get("rc")
        if not isinstance(train, dict):
            failures.append(f"the training-step benchmark wrote no JSON (exit {train_rc})")
        elif train_rc not in (0, None):
            failures.append(f"the training-step benchmark exited {train_rc}")
    bench = bench if isinstance(bench, dict) else {}
    sweep = _read_json(work / "sweep.json")
    sweep = sweep if isinstance(sweep, dict) else {}
    if gpu and "sweep" in steps:
        if not sweep:
            notes.append(f"the tile sweep wrote no JSON (exit {steps['sweep']['rc']})")
        elif sweep.get("complete") is False:
            notes.append(f"the tile sweep stopped early: {len(sweep.get('rows', []))} rows measured")
        notes.extend(f"sweep {err}" for err in sweep.get("errors", []))

    sha = kernels_sha256 if kernels_sha256 is not None else _kernels_sha256()
    if sha is None:
        failures.append("could not compute dlgpu.kernels_sha256()")
    commit_id, dirty = commit if commit is not None else commit_info()

    summary = {k: v for k, v in (tests or {}).items() if k not in ("failed_tests", "failed_tests_left_out", "slowest")}
    for failed in (tests or {}).get("failed_tests", []):
        if failed["replay"].get("hypothesis"):  # a property test: its examples came from the run's seed
            failed["replay"]["hypothesis_seed"] = run.get("hypothesis_seed")
    return {
        "schema": SCHEMA,
        "status": "failed" if failures else "passed",
        "complete": not partial,
        "failures": failures,
        "notes": notes,
        "date": now.isoformat(timespec="seconds"),
        "device": device.get("name"),
        "driver": device.get("driver") or device.get("cuda_driver_api"),
        "cuda_driver_api": device.get("cuda_driver_api"),
        "cuda_runtime": device.get("cuda_runtime"),
        "compute_capability": device.get("compute_capability"),
        "cupy": device.get("cupy"),
        "torch": device.get("torch"),
        "commit": commit_id,
        "commit_dirty": dirty,
        "kernels_sha256": sha,
        "run": run,
        "compile": compiled,
        "tests": summary or _empty_counts(),
        "failed_tests": (tests or {}).get("failed_tests", []),
        "failed_tests_left_out": (tests or {}).get("failed_tests_left_out", 0),
        "slowest_tests": (tests or {}).get("slowest", []),
        "harness_crosscheck": {k: (crosscheck or {}).get(k, 0) for k in _COUNT_KEYS},
        "sanitizer": sanitizer,
        "ceilings": bench.get("ceilings", {}),
        "rows": bench.get("rows", []),
        "bench": {k: bench.get(k) for k in ("quick", "backend", "device", "errors")},
        "train": train_rows(train if isinstance(train, dict) else None),
        "sweep": sweep.get("rows", []),
        "steps": steps,
    }


def record_filename(record: dict) -> str:
    """<date>-<device>.json, e.g. 2026-11-26T1402Z-nvidia-h100-80gb-hbm3.json."""
    when = _dt.datetime.fromisoformat(record["date"]).astimezone(_dt.timezone.utc)
    slug = re.sub(r"[^a-z0-9]+", "-", (record.get("device") or "no-gpu").lower()).strip("-") or "device"
    return f"{when:%Y-%m-%dT%H%MZ}-{slug}.json"


def _logs_tarball(work: Path) -> bytes:
    """Every log and artifact of the run's work folder, gzipped (one file of the device tool's eight)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(work.iterdir()):
            if path.is_file():
                tar.add(path, arcname=f"gpu-run/{path.name}")
    return buffer.getvalue()


def write_record(record: dict, work: Path, results_dir: Path | None, out_dir: Path | None) -> list[Path]:
    """Write the record into both folders; the output folder also gets the per-test results and the logs."""
    text = json.dumps(record, indent=2, sort_keys=False) + "\n"
    name = record_filename(record)
    written = []
    for folder in (results_dir, out_dir):
        if folder is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)  # a reader (or a kill) never sees half a record
        written.append(folder / name)
    if out_dir is not None:
        extra = [n for n in OUT_FILES if (work / n).is_file()][: MAX_OUT_FILES - 2]
        for file_name in extra:
            (out_dir / file_name).write_bytes((work / file_name).read_bytes())
        (out_dir / LOGS_TARBALL).write_bytes(_logs_tarball(work))
    return written


def summary_lines(record: dict) -> list[str]:
    t = record["tests"]
    san = record["sanitizer"]
    lines = [
        f"status: {record['status'].upper()}" + ("" if record.get("complete", True) else " (incomplete)"),
        f"device: {record['device']}  driver {record['driver']}  CUDA runtime {record['cuda_runtime']}",
        f"commit: {record['commit']}  kernels_sha256: {record['kernels_sha256']}",
        "tests: " + ", ".join(f"{t.get(k, 0)} {k}" for k in _COUNT_KEYS if t.get(k)) if any(t.values())
        else "tests: none ran",
        "sanitizer: " + ", ".join(f"{tool} {san.get(tool)}" for tool in SANITIZERS),
    ]
    if record.get("compile"):
        c = record["compile"]
        lines.append(f"compile: {c.get('modules')} modules in {c.get('seconds')} s with {c.get('jobs')} jobs "
                     f"({c.get('compiled')} compiled, {c.get('from_cache')} cached)")
    for failed in record.get("failed_tests", [])[:20]:
        r = failed["replay"]
        lines.append(f"  {failed['outcome']}: {failed['test']}  seed={r.get('seed')} variant={r.get('variant')} "
                     f"precision={r.get('precision')} shape={r.get('shape')}")
    for key, c in record["ceilings"].items():
        value = f"{c['gbps']:.0f} GB/s" if c.get("gbps") else (
            f"{c['tflops']:.1f} TFLOP/s" if c.get("tflops") else "unavailable")
        lines.append(f"ceiling {key}: {value} ({c.get('how')})")
    for r in record["rows"]:
        ratio = (f"{r['ratio']:.2f}x vs {r['baseline']}" if r.get("ratio")
                 else (r.get("skipped") or r.get("error") or "-"))
        pct = f"{r['pct_of_ceiling']:.0f}% of copy" if r.get("pct_of_ceiling") else ""
        ms = f"{r['ms']:.3f} ms" if r.get("ms") else "-"
        op = r["op"] if r.get("variant", "default") == "default" else f"{r['op']} [{r['variant']}]"
        predicted = ""
        if r.get("predicted"):
            predicted = f"  predicted {r['predicted'].get('text')}" + (f": {r['verdict']}" if r.get("verdict") else "")
        lines.append(f"  {op:<34} {r['shape']:<22} {ms:>11}  {ratio}  {pct}{predicted}")
    for r in record.get("train", []):
        speedup = f"  {r['speedup_vs_torch']:.2f}x vs torch" if r.get("speedup_vs_torch") else ""
        per_step = f"{r['ms_per_step']:.3f} ms/step" if r.get("ms_per_step") else "-"
        lines.append(f"  train {r.get('framework') or r.get('name')}: {per_step}{speedup}")
    sweep = [r for r in record.get("sweep", []) if r.get("ms")]
    if record.get("sweep"):
        lines.append(f"sweep: {len(sweep)} of {len(record['sweep'])} rows timed; the fastest tile of each shape:")
    for (op, shape), best in _fastest_tiles(sweep).items():
        ratio = f"  {best['ratio']:.2f}x vs {best['baseline']}" if best.get("ratio") else ""
        lines.append(f"  {op:<24} {shape:<30} {best['variant']:<40} {best['ms']:.3f} ms{ratio}")
    lines.extend(f"NOTE: {n}" for n in record.get("notes", []))
    lines.extend(f"FAILURE: {f}" for f in record["failures"])
    return lines


def _fastest_tiles(rows: list[dict]) -> dict:
    """(op, shape with the variant's stem) -> the fastest sweep row; a sweep variant is '<stem>@<tile>'."""
    best: dict = {}
    for r in rows:
        key = (r["op"], f"{r['shape']} {r['variant'].split('@')[0]}")
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_probe = sub.add_parser("probe", help="write WORK/device.json; exit 3 when no GPU is found")
    p_probe.add_argument("work", type=Path)
    p_build = sub.add_parser("build", help="write the record; exit 0 only when everything passed")
    p_build.add_argument("work", type=Path)
    p_build.add_argument("--started", help="the run's start (ISO 8601): the record's date and file name")
    p_build.add_argument("--partial", action="store_true", help="the run is not over: mark the record incomplete")
    p_build.add_argument("--quiet", action="store_true", help="print nothing")
    p_build.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    p_build.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.command == "probe":
        args.work.mkdir(parents=True, exist_ok=True)
        device = probe_device()
        (args.work / "device.json").write_text(json.dumps(device, indent=2) + "\n")
        print(f"GPU: {device['name']}" if device["gpu"] else f"no GPU found: {device['reason']}")
        return 0 if device["gpu"] else 3

    now = _dt.datetime.fromisoformat(args.started) if args.started else None
    record = build_record(args.work, now=now, partial=args.partial)
    written = write_record(record, args.work, args.results_dir, args.out_dir)
    if not args.quiet:
        for path in written:
            print(f"wrote {path}")
        print("\n".join(summary_lines(record)))
    return 0 if record["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
