"""The CPU backend beside PyTorch: one pool of threads in either import order (dlgpu/cpu/threads.py).

Each scenario runs in a fresh interpreter (the order of imports is the point),
runs dlgpu and torch convolutions, and reports which OS threads did the work,
read from /proc/self/task/*/schedstat, plus the CPU the process burns while it
sleeps right after a dlgpu op (a spinning pool burns milliseconds).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numba
import numpy as np
import pytest

import dlgpu.functional as F
from dlgpu.cpu.threads import SERIAL_ELEMENTS

if not sys.platform.startswith("linux"):
    pytest.skip("reads per-thread CPU time from /proc", allow_module_level=True)


def thread_times() -> dict[int, int]:
    """Nanoseconds each thread of this process has spent on a CPU, by thread id."""
    times = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                times[int(tid)] = int(f.read().split()[0])
        except OSError:  # the thread ended
            pass
    return times


def threads_that_ran(fn, repeats=10) -> list[int]:
    """The ids of the threads that ran while ``fn`` was called ``repeats`` times."""
    # A thread's count is brought up to date when it leaves the CPU: so sleep before reading.
    time.sleep(0.05)
    before = thread_times()
    for _ in range(repeats):
        fn()
    time.sleep(0.05)
    after = thread_times()
    return sorted(t for t in after if after[t] > before.get(t, 0))


# The probes get the same two functions, pasted in.
_HELPERS = "import os, time\n" + inspect.getsource(thread_times) + inspect.getsource(threads_that_ran)

_PROBE = _HELPERS + textwrap.dedent(
    """
    import json, sys
    import numpy as np

    def burnt_while_asleep(fn):
        fn()
        start = time.process_time()
        time.sleep(0.2)
        return (time.process_time() - start) * 1e3

    x = np.random.default_rng(0).standard_normal((8, 16, 48, 48)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    scenario = sys.argv[1]
    if scenario == "torch-first":
        import torch
        import dlgpu.functional as F
    elif scenario == "dlgpu-first":  # the usual script: both imported, then the first op
        import dlgpu.functional as F
        import torch
    else:  # "dlgpu-pool-first": a dlgpu op runs before torch is imported
        import dlgpu.functional as F
        F.conv2d(x, w, padding=1)
        import torch
    from dlgpu.cpu.threads import thread_info

    dlgpu_op = lambda: F.conv2d(x, w, padding=1)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    torch_op = lambda: torch.nn.functional.conv2d(xt, wt, padding=1)
    dlgpu_op(), torch_op()
    report = dict(
        info=thread_info(),
        dlgpu_threads=threads_that_ran(dlgpu_op),
        torch_threads=threads_that_ran(torch_op),
        burnt_ms=min(burnt_while_asleep(dlgpu_op) for _ in range(3)),
        wait_policy_left_set="OMP_WAIT_POLICY" in os.environ,
    )
    print(json.dumps(report))
    """
)


@functools.lru_cache(maxsize=None)
def _probe(scenario: str) -> dict:
    """The probe's report for one import order, in a fresh interpreter without the user's thread settings."""
    drop = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")
    env = {name: value for name, value in os.environ.items() if name not in drop}
    done = subprocess.run([sys.executable, "-c", _PROBE, scenario], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("scenario", ["torch-first", "dlgpu-first", "dlgpu-pool-first"])
def test_dlgpu_and_torch_share_one_pool_in_every_import_order(scenario):
    pytest.importorskip("torch")
    report = _probe(scenario)
    info = report["info"]
    assert info["numba_threads"] == info["torch_threads"]
    # dlgpu's ops run on at most numba's threads (no BLAS pool, no second OpenMP team) ...
    assert 1 <= len(report["dlgpu_threads"]) <= info["numba_threads"]
    # ... and on the threads torch's ops run on: one pool, taking turns.
    assert set(report["dlgpu_threads"]) <= set(report["torch_threads"])
    assert not report["wait_policy_left_set"]


def test_a_pool_dlgpu_starts_sleeps_when_idle():
    pytest.importorskip("torch")
    report = _probe("dlgpu-pool-first")
    assert report["info"]["wait_policy"] == "passive"
    # A spinning libgomp pool burns ~7 ms after each loop; a passive one nothing.
    assert report["burnt_ms"] < 2.0


def test_small_work_runs_on_the_calling_thread_alone():
    small = np.random.default_rng(0).standard_normal(SERIAL_ELEMENTS // 4).astype(np.float32)
    large = np.random.default_rng(1).standard_normal(SERIAL_ELEMENTS * 64).astype(np.float32)
    F.relu(small), F.relu(large)  # compiled before the counting starts
    threads = numba.get_num_threads()
    assert threads_that_ran(lambda: F.relu(small), repeats=200) == [threading.get_native_id()]
    assert numba.get_num_threads() == threads
    if threads > 1:  # and large work does use the pool
        assert len(threads_that_ran(lambda: F.relu(large), repeats=50)) > 1
