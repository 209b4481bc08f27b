"""pytest plugin for the GPU run: one JSON line per test event, written and flushed as it happens.

benchmarks/gpu_run.sh loads it with ``-p benchmarks.results_plugin --results-jsonl FILE``.
pytest's --junitxml is written once, at the end, so a step cut by its timeout leaves
none; these lines survive the cut, and benchmarks/make_record.py reads them: which
tests passed and failed, which were running when the step was cut (a hang, or a
crash that took a worker down), which never started.  Under pytest-xdist the
controller writes the file (it sees every worker's reports); where the test runs, a
failing report gets what its replay on the CPU harness needs.

One JSON object per line, by "event":
  session    {"xdist": bool}: the file's first line for this pytest run
  collected  {"count", "nodeids"}: what the run will execute (after -m/-k)
  start      {"nodeid"}: a test began
  report     {"nodeid", "when" (setup/call/teardown), "outcome", "duration", "worker"?,
              and for a failure "message", "longrepr_tail", "replay"}
  finish     {"exitstatus"}: pytest ended on its own (absent when it was killed)

"replay" holds the test id, the seed the ``rng`` fixture drew from it (tests/conftest.py
records it as the user property "seed"), the test's parameters (repr'd: variant,
precision, shape ...), and Hypothesis's falsifying example and reproduce blob when the
failure came from a property test.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

# A failure's text is kept short: a run where everything fails must still give a small record.
LONGREPR_TAIL_CHARS = 1500
MESSAGE_CHARS = 300
PARAM_REPR_CHARS = 200
HYPOTHESIS_LINES = 40

# Where Hypothesis's report of a failing example begins (its wording varies between versions); pytest
# prints the exception's notes with an "E" margin.
_HYPOTHESIS_START = re.compile(r"^(Falsifying (explicit )?example|Failing test case|Draw \d+:|@reproduce_failure|"
                               r"You can reproduce this example)")
_MARGIN = re.compile(r"^E\s+")


def pytest_addoption(parser):
    parser.addoption("--results-jsonl", metavar="FILE", default=None,
                     help="append one JSON line per test event to FILE, flushed as it happens (the GPU run)")


def pytest_configure(config):
    path = config.getoption("results_jsonl")
    # xdist workers hand their reports to the controller, which writes for everyone.
    if path and not hasattr(config, "workerinput"):
        writer = _Writer(path, xdist=bool(getattr(config.option, "numprocesses", None)))
        config.pluginmanager.register(writer, "dlgpu_results_writer")


def param_reprs(item) -> dict[str, str]:
    """A parametrized test's arguments as short strings (JSON- and xdist-safe): strings as they are, others repr'd."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return {}
    return {name: _short(value if isinstance(value, str) else repr(value)) for name, value in callspec.params.items()}


def hypothesis_excerpt(text: str) -> list[str]:
    """The lines of a failure that say which example Hypothesis found and how to reproduce it."""
    lines = [_MARGIN.sub("", line).rstrip() for line in text.splitlines()]
    for start, line in enumerate(lines):
        if _HYPOTHESIS_START.match(line.strip()):
            return [ln for ln in lines[start:] if ln.strip()][:HYPOTHESIS_LINES]
    return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where the test ran (a worker, or this process): a failing report carries the test's parameters."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        # A new list: TestReport shares item.user_properties, and the next phase's report must not inherit this.
        report.user_properties = [*report.user_properties, ("params", param_reprs(item))]


class _Writer:
    def __init__(self, path: str, *, xdist: bool):
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole session
        self.collected = False
        self.write(event="session", xdist=xdist, pid=os.getpid())

    def write(self, **fields) -> None:
        fields["time"] = round(time.time(), 3)
        self.file.write(json.dumps(fields, default=str) + "\n")
        self.file.flush()

    def _collected(self, nodeids: list[str]) -> None:
        if not self.collected:
            self.collected = True
            self.write(event="collected", count=len(nodeids), nodeids=nodeids)

    def pytest_collection_finish(self, session):
        self._collected([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self._collected(list(ids))

    def pytest_runtest_logstart(self, nodeid, location):
        self.write(event="start", nodeid=nodeid)

    def pytest_runtest_logreport(self, report):
        if report.passed and report.when != "call":
            return  # a passing setup or teardown says nothing the call's line does not
        line = {"event": "report", "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
                "duration": round(report.duration, 4)}
        node = getattr(report, "node", None)  # xdist: the worker that ran it
        if node is not None and getattr(node, "gateway", None) is not None:
            line["worker"] = node.gateway.id
        if hasattr(report, "wasxfail"):
            line["xfail"] = True
        if report.failed or report.skipped:
            line["message"] = _message(report)
        if report.failed:
            text = report.longreprtext or ""
            line["longrepr_tail"] = text[-LONGREPR_TAIL_CHARS:]
            properties = dict(report.user_properties)
            replay = {"test": report.nodeid, "seed": properties.get("seed"), "params": properties.get("params", {})}
            excerpt = hypothesis_excerpt(text)
            if excerpt:
                replay["hypothesis"] = excerpt
            line["replay"] = replay
        self.write(**line)

    def pytest_sessionfinish(self, session, exitstatus):
        self.write(event="finish", exitstatus=int(exitstatus))

    def pytest_unconfigure(self, config):
        self.file.close()


def _message(report) -> str:
    """One line: the crash message of a failure, the reason of a skip."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        return _short(str(longrepr[2]), MESSAGE_CHARS)
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return _short(crash.message, MESSAGE_CHARS)
    text = (report.longreprtext or "").strip().splitlines()
    return _short(text[-1] if text else "", MESSAGE_CHARS)


def _short(text: str, limit: int = PARAM_REPR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
