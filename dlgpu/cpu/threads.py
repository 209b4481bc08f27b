"""The CPU backend's threads: one OpenMP pool, shared with torch, never BLAS's.

    start_pool()     load numba's threading layer (dlgpu.cpu calls it once, when it is first imported)
    thread_info()    the thread configuration of this process, as a dict (tests, bench rows, bug reports)
    launch(kernel, serial, *args)   run a parallel kernel, on the calling thread alone if serial
    SERIAL_ELEMENTS, SERIAL_MACS    the sizes below which work is run serially, per pass and per product

Every op of the CPU backend runs its parallel loops on numba's threading
layer and nowhere else: its products are numba kernels (tile.py), none calls
BLAS.  What made threads fight, measured on a 2-core machine (issue 18;
"burnt" is the CPU time a process used in the 100 ms after one call, while
its main thread slept):
  * OpenBLAS (NumPy's) spins with sched_yield after each multithreaded call
    (27-40 ms burnt), and synchronizes its threads many times inside one
    product: with other busy processes on the machine, a LeNet convolution
    through sgemm took 20 ms with two BLAS threads and 1.2 ms with one.
  * OpenMP workers spin after every parallel loop unless told otherwise:
    libgomp spins about 300,000 rounds (7.5 ms burnt) before sleeping, so a
    pool that ran last held a core while another pool (BLAS's) needed it.

In every import order, numba and torch end up on ONE OpenMP runtime, so
their loops take turns on the same threads (checked by tests/test_cpu_threads.py):
  * torch imported first: torch loads its bundled libgomp.so.1 into the global
    symbol scope; numba's omppool, loaded later, names the system's
    libgomp.so.1.0.0, but its OpenMP calls bind to the global copy, torch's.
  * dlgpu's pool started first: numba loads the system's libgomp (soname
    libgomp.so.1); torch, imported later, asks for libgomp.so.1 and the
    dynamic loader hands it the copy already loaded.
What differs by order is that runtime's wait policy, which libgomp reads
once, when it loads.  start_pool sets OMP_WAIT_POLICY=PASSIVE while it loads
the runtime (unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT) and then
restores the environment, so a pool dlgpu starts sleeps when idle and leaves
a busy machine's cores to others.  If torch came first, the pool is torch's
and keeps the policy torch's runtime read: by default its workers spin a few
milliseconds after each loop, ours included.  Spinning within one pool costs
no oversubscription of its own (nothing else of ours waits for those cores),
but on a machine other processes keep busy it is ruinous for both libraries:
measured with a load of 5-9 on 2 cores, LeNet c1's forward pass took torch
24-47 ms and dlgpu 15-31 ms on a spinning pool, 0.8 and 0.5-0.7 ms on a
passive one.  To have the same policy in both orders (PASSIVE on a shared
machine), set OMP_WAIT_POLICY before starting Python.
If numba's threads were started before dlgpu's CPU backend was imported (a
parallel numba function of the user's), start_pool leaves them as they are
and thread_info says so.
"""

from __future__ import annotations

import os
import sys

import numba
from numba.np.ufunc import parallel as _numba_parallel

_OPENMP_PREFIXES = ("libgomp", "libiomp", "libomp")

# What start_pool found and did, for thread_info.
_state: dict = {}


def _openmp_runtimes() -> list[str]:
    """Paths of the OpenMP runtimes loaded in this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if ".so" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith(_OPENMP_PREFIXES))


def start_pool() -> None:
    """Load numba's threading layer, its own runtime asleep-when-idle unless the user chose a policy."""
    if _state:
        return
    loaded = _openmp_runtimes()
    if getattr(_numba_parallel, "_is_initialized", False):  # private, so read defensively
        _state["wait_policy"] = "unknown: numba's threads started before dlgpu's CPU backend was imported"
    elif "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        _state["wait_policy"] = "the user's (OMP_WAIT_POLICY / GOMP_SPINCOUNT)"
    elif loaded:
        _state["wait_policy"] = f"that of {loaded[0]}, loaded before dlgpu's pool started (by torch?)"
    else:
        _state["wait_policy"] = "passive"
    if _state["wait_policy"] != "passive":
        numba.get_num_threads()  # loads the threading layer
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        numba.get_num_threads()  # loads the threading layer; libgomp reads the policy as it loads
    finally:
        del os.environ["OMP_WAIT_POLICY"]


def thread_info() -> dict:
    """numba's threading layer, thread count and wait policy, the OpenMP runtimes loaded, torch's threads."""
    start_pool()
    info = {
        "threading_layer": numba.threading_layer(),
        "numba_threads": numba.get_num_threads(),
        "wait_policy": _state["wait_policy"],
        "openmp_runtimes": _openmp_runtimes(),
    }
    torch = sys.modules.get("torch")  # reported, never imported here
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


# Below these sizes a kernel's parallel loop runs on the calling thread alone:
# waking and joining the pool costs about what the split saves, on an idle
# machine (tens of microseconds), and far more on a busy one: measured on a
# 2-core machine shared with other work, a tiny loop took 0.7 ms through the
# pool and 9 us without it, and LeNet's 8x8 digits trained at 2-5 s an epoch
# with every op through the pool.  2^16 elements are 30-60 us of one core in
# a pass over memory; 2^22 multiply-adds 50-100 us in the register tiles.
SERIAL_ELEMENTS = 1 << 16
SERIAL_MACS = 1 << 22


def launch(kernel, serial: bool, *args):
    """kernel(*args), its parallel loops on the calling thread alone if ``serial``.

    Set from Python, not inside the kernels: numba cannot cache a function
    that calls set_num_threads itself (it holds a pointer into the threading
    layer), and recompiling every kernel in every process costs seconds.
    """
    if not serial:
        return kernel(*args)
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(before)
