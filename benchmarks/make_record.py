"""The GPU run's record: probe the device, then turn the run's logs into one JSON record.

benchmarks/gpu_run.sh calls this twice:

    python benchmarks/make_record.py probe WORK
        writes WORK/device.json; exit 0 when CuPy sees a GPU, 3 when it does not
    python benchmarks/make_record.py build WORK [--results-dir DIR] [--out-dir DIR]
        reads what the run left in WORK, writes <date>-<device>.json into both
        folders (and the logs into --out-dir); exit 0 only when everything passed

WORK holds, by name: device.json, steps.tsv (step, exit code, seconds),
info.log, tests.junit.xml + tests.log, memcheck.junit.xml + memcheck.log,
racecheck.junit.xml + racecheck.log, bench.json + bench.log, bench.png.

The record never says "passed" unless a GPU was found, at least one GPU test
passed and none failed, both sanitizers finished with zero errors on a
selection where tests passed, and the benchmark ran every case on the GPU.
Every reason it is not a pass is listed in "failures".
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = REPO / "benchmarks" / "results"

# compute-sanitizer's exit code when it found errors (gpu_run.sh passes it as --error-exitcode).
SANITIZER_ERROR_EXITCODE = 86
TIMEOUT_EXIT_CODES = (124, 137)
SANITIZERS = ("memcheck", "racecheck")
# What goes into the extra output folder besides the record (the device tool brings back at most 8 files).
OUT_DIR_LOGS = ("info.log", "tests.log", "tests.junit.xml", "memcheck.log", "racecheck.log", "bench.log", "bench.png")
MAX_OUT_FILES = 8


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
# parsing the run's artifacts
# ---------------------------------------------------------------------------


def parse_junit(path: Path, *, classname_contains: str | None = None) -> dict | None:
    """Counts from pytest's --junitxml: passed, failed, errors, skipped, total; None when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "total": 0}
    failed_names = []
    for case in root.iter("testcase"):
        if classname_contains and classname_contains not in (case.get("classname") or ""):
            continue
        counts["total"] += 1
        tags = {child.tag for child in case}
        if "failure" in tags:
            counts["failed"] += 1
            failed_names.append(f"{case.get('classname')}::{case.get('name')}")
        elif "error" in tags:
            counts["errors"] += 1
            failed_names.append(f"{case.get('classname')}::{case.get('name')} (error)")
        elif "skipped" in tags:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    if failed_names:
        counts["failed_tests"] = failed_names[:50]
    return counts


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
_RACECHECK_SUMMARY = re.compile(r"RACECHECK SUMMARY:\s*(\d+)\s+hazards? displayed\s*\((\d+)\s+errors?,\s*(\d+)\s+warnings?\)")


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


def sanitizer_verdict(tool: str, rc: int | None, log_path: Path, junit_path: Path) -> dict:
    """{"verdict": "clean" | "errors" | "hazards" | "timed out" | "tests failed" | "no tests ran" |
    "failed" | "not run", ...}: clean only when the tool finished, reported zero errors, and the
    tests it watched passed."""
    detail: dict = {"exit_code": rc}
    if rc is None or not log_path.is_file():
        return {**detail, "verdict": "not run"}
    summary = sanitizer_summary(log_path.read_text(errors="replace"))
    detail.update(summary)
    tests = parse_junit(junit_path)
    detail["tests"] = tests
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
    elif tests["failed"] or tests["errors"]:
        verdict = "tests failed"
    elif tests["passed"] == 0:
        verdict = "no tests ran"
    elif rc != 0:
        verdict = "failed"
    else:
        verdict = "clean"
    return {**detail, "verdict": verdict}


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
                 commit: tuple[str, bool | None] | None = None) -> dict:
    """Everything the run left in ``work`` as one record; ``status`` is "passed" only if nothing failed."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    failures: list[str] = []
    steps = read_steps(work / "steps.tsv")

    device_path = work / "device.json"
    device = json.loads(device_path.read_text()) if device_path.is_file() else {"gpu": False, "reason": "not probed"}
    if not device.get("gpu"):
        failures.append(f"no GPU found: {device.get('reason', 'unknown reason')}")

    for name, step in steps.items():
        if step["rc"] in TIMEOUT_EXIT_CODES:
            failures.append(f"step {name} timed out (exit {step['rc']} after {step['seconds']} s)")

    info_rc = steps.get("info", {}).get("rc")
    if device.get("gpu") and info_rc not in (None, 0):
        failures.append(f"dlgpu info failed (exit {info_rc})")

    tests = parse_junit(work / "tests.junit.xml")
    # the GPU-marked tests of the harness test files: harness and device on the same inputs
    crosscheck = parse_junit(work / "tests.junit.xml", classname_contains="harness")
    if device.get("gpu"):
        tests_rc = steps.get("tests", {}).get("rc")
        if tests is None:
            failures.append(f"the GPU tests left no junit report (exit {tests_rc})")
        else:
            if tests["failed"] or tests["errors"]:
                failures.append(f"{tests['failed']} GPU tests failed and {tests['errors']} errored")
            if tests["passed"] == 0:
                failures.append("no GPU test passed (all skipped or none collected)")
            if tests_rc not in (0, None) and not (tests["failed"] or tests["errors"]):
                failures.append(f"pytest exited {tests_rc} on the GPU tests")

    sanitizer: dict = {}
    details: dict = {}
    for tool in SANITIZERS:
        d = sanitizer_verdict(tool, steps.get(tool, {}).get("rc"), work / f"{tool}.log", work / f"{tool}.junit.xml")
        sanitizer[tool] = d["verdict"]
        details[tool] = d
        if device.get("gpu") and d["verdict"] != "clean":
            failures.append(f"{tool}: {d['verdict']} (exit {d['exit_code']}, errors {d.get('errors')})")
    sanitizer["details"] = details

    bench_path = work / "bench.json"
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
    if device.get("gpu"):
        bench_rc = steps.get("bench", {}).get("rc")
        if bench is None:
            failures.append(f"dlgpu bench wrote no JSON (exit {bench_rc})")
        else:
            if bench.get("backend") != "cuda":
                failures.append(f"dlgpu bench ran on the {bench.get('backend')} backend, not the GPU")
            failures.extend(f"bench {err}" for err in bench.get("errors", []))
            if bench_rc not in (0, None) and not bench.get("errors"):
                failures.append(f"dlgpu bench exited {bench_rc}")

    sha = kernels_sha256 if kernels_sha256 is not None else _kernels_sha256()
    if sha is None:
        failures.append("could not compute dlgpu.kernels_sha256()")
    commit_id, dirty = commit if commit is not None else commit_info()

    empty = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "total": 0}
    return {
        "schema": 1,
        "status": "failed" if failures else "passed",
        "failures": failures,
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
        "tests": tests or empty,
        "harness_crosscheck": crosscheck or empty,
        "sanitizer": sanitizer,
        "ceilings": (bench or {}).get("ceilings", {}),
        "rows": (bench or {}).get("rows", []),
        "bench": {k: (bench or {}).get(k) for k in ("quick", "backend", "device", "errors")},
        "steps": steps,
    }


def record_filename(record: dict) -> str:
    """<date>-<device>.json, e.g. 2026-11-26T1402Z-nvidia-h100-80gb-hbm3.json."""
    when = _dt.datetime.fromisoformat(record["date"]).astimezone(_dt.timezone.utc)
    slug = re.sub(r"[^a-z0-9]+", "-", (record.get("device") or "no-gpu").lower()).strip("-") or "device"
    return f"{when:%Y-%m-%dT%H%MZ}-{slug}.json"


def write_record(record: dict, work: Path, results_dir: Path | None, out_dir: Path | None) -> list[Path]:
    """Write the record into the results folder and the output folder (with the logs, at most 8 files)."""
    text = json.dumps(record, indent=2, sort_keys=False) + "\n"
    name = record_filename(record)
    written = []
    for folder in (results_dir, out_dir):
        if folder is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        written.append(folder / name)
    if out_dir is not None:
        budget = MAX_OUT_FILES - sum(1 for p in out_dir.iterdir() if p.is_file())
        for log in OUT_DIR_LOGS:
            if budget <= 0:
                break
            src = work / log
            if src.is_file() and not (out_dir / log).exists():
                shutil.copyfile(src, out_dir / log)
                budget -= 1
    return written


def summary_lines(record: dict) -> list[str]:
    t = record["tests"]
    lines = [
        f"status: {record['status'].upper()}",
        f"device: {record['device']}  driver {record['driver']}  CUDA runtime {record['cuda_runtime']}",
        f"commit: {record['commit']}  kernels_sha256: {record['kernels_sha256']}",
        f"tests: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped",
        f"sanitizer: memcheck {record['sanitizer']['memcheck']}, racecheck {record['sanitizer']['racecheck']}",
    ]
    for key, c in record["ceilings"].items():
        value = f"{c['gbps']:.0f} GB/s" if c.get("gbps") else (
            f"{c['tflops']:.1f} TFLOP/s" if c.get("tflops") else "unavailable")
        lines.append(f"ceiling {key}: {value} ({c.get('how')})")
    for r in record["rows"]:
        ratio = f"{r['ratio']:.2f}x vs {r['baseline']}" if r.get("ratio") else (r.get("skipped") or r.get("error") or "-")
        pct = f"{r['pct_of_ceiling']:.0f}% of copy" if r.get("pct_of_ceiling") else ""
        ms = f"{r['ms']:.3f} ms" if r.get("ms") else "-"
        op = r["op"] if r.get("variant", "default") == "default" else f"{r['op']} [{r['variant']}]"
        lines.append(f"  {op:<34} {r['shape']:<22} {ms:>11}  {ratio}  {pct}")
    lines.extend(f"FAILURE: {f}" for f in record["failures"])
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_probe = sub.add_parser("probe", help="write WORK/device.json; exit 3 when no GPU is found")
    p_probe.add_argument("work", type=Path)
    p_build = sub.add_parser("build", help="write the record; exit 0 only when everything passed")
    p_build.add_argument("work", type=Path)
    p_build.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    p_build.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.command == "probe":
        args.work.mkdir(parents=True, exist_ok=True)
        device = probe_device()
        (args.work / "device.json").write_text(json.dumps(device, indent=2) + "\n")
        print(f"GPU: {device['name']}" if device["gpu"] else f"no GPU found: {device['reason']}")
        return 0 if device["gpu"] else 3

    record = build_record(args.work)
    for path in write_record(record, args.work, args.results_dir, args.out_dir):
        print(f"wrote {path}")
    print("\n".join(summary_lines(record)))
    return 0 if record["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
