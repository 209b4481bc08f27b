"""Bad indices found on the device, reported where the caller synchronizes anyway; and the debug mode.

Two ops take indices: the class labels of ``softmax_cross_entropy`` (and its
backward), and the argmax of ``max_pool2d_backward``.  Checking that they lie
in range on the host would read them back: two reductions and a copy to the
host per call, which waits for the device -- an accelerated op must not do
that.  So on the CUDA backend the kernels check them.  A kernel never uses a
bad index (the row's loss or gradient is NaN; a bad argmax routes nothing) and
records the first one in its device's error flag: a few words of device
memory, written with one atomic and never read by an op.

:func:`check_errors` reads the flag and raises the recorded error as an
``ArgumentError`` naming the op, the index, its bound and its position.  It
reads where waiting costs nothing more: in :func:`synchronize`, at the end of
each epoch of ``dlgpu train`` (after the epoch's loss is read), and wherever a
caller adds it next to their own synchronization (``loss.item()`` in a PyTorch
loop: dlgpu cannot see PyTorch's synchronizations).  The flag is a fixed
device buffer, so steps captured into a CUDA graph report through it too.

Debug mode (``DLGPU_DEBUG=1`` in the environment, or ``with dlgpu.debug():``)
checks the indices on the host before each launch instead, so a bad one
raises at the call that passed it, at the cost of a synchronization per call.
While a CUDA graph is being captured the host cannot read, and the flag
reports as in the default mode.

The CPU backend always checks on the host before any work: there is no device
to wait for.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys

from dlgpu.device import gpu_available
from dlgpu.errors import ArgumentError

__all__ = ["check_errors", "debug", "debug_enabled", "synchronize"]

ENVIRONMENT_VARIABLE = "DLGPU_DEBUG"
_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")

# Set by debug(): True or False inside a `with`, None outside (the environment decides).
_forced: contextvars.ContextVar[bool | None] = contextvars.ContextVar("dlgpu_debug", default=None)


def debug_enabled() -> bool:
    """Whether indices are checked on the host before each launch (see the module's docstring)."""
    forced = _forced.get()
    if forced is not None:
        return forced
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ArgumentError(f"dlgpu: {ENVIRONMENT_VARIABLE}={value!r}; use 1 to check indices on the host, 0 not to")


@contextlib.contextmanager
def debug(enabled: bool = True):
    """Debug mode inside the ``with`` (``enabled=False``: off, whatever ``DLGPU_DEBUG`` says).

    It belongs to the calling thread (and asyncio task), like a context variable.
    """
    token = _forced.set(bool(enabled))
    try:
        yield
    finally:
        _forced.reset(token)


def check_errors() -> None:
    """Raise the first bad index a kernel has reported since the last check, if any.

    Reads the error flag of the current GPU (a small copy to the host, which
    waits for the work queued on the current stream) and the CPU harness's,
    and clears the one it raises.  Returns at once when no kernel that reports
    has run, and skips a GPU whose current stream is being captured into a
    CUDA graph (nothing may be read back then).
    """
    flags = sys.modules.get("dlgpu.cuda.error_flag")
    if flags is not None:  # imported by the first launch of a kernel that reports
        flags.raise_reported()


def synchronize() -> None:
    """Wait for all work on the current GPU, then :func:`check_errors`.

    Without CuPy imported there is no GPU work to wait for (a CuPy array
    imports it), and only the CPU harness's flag is read.
    """
    cupy = sys.modules.get("cupy")
    if cupy is not None and gpu_available():
        cupy.cuda.Device().synchronize()
    check_errors()
