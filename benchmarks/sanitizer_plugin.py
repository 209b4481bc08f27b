"""pytest plugin for runs under compute-sanitizer (benchmarks/gpu_run.sh loads it with -p).

CuPy's memory pool hands out slices of large blocks, so a kernel writing past
the end of one array lands in memory the pool owns and memcheck stays silent.
With the pool off, every array is its own cudaMalloc and memcheck sees its
true bounds.
"""

from __future__ import annotations


def pytest_configure(config):
    try:
        import cupy
    except ImportError:
        return
    cupy.cuda.set_allocator(None)
    cupy.cuda.set_pinned_memory_allocator(None)
