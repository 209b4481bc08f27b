"""Carry out a :class:`~dlgpu.cuda.launch.Launch` on a GPU with CuPy.

The module compiled by :func:`dlgpu.cuda.compiler.compile_family` for the
current device's target is loaded from its bytes (``cuModuleLoadData``,
what ``cupy.RawModule(path=...)`` does with a file) and kept per (family,
defines, device); kernels are launched on CuPy's current stream.  CuPy is
imported only when an executor is made, so importing this module needs
neither CuPy nor a GPU.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from dlgpu.cuda import compiler
from dlgpu.cuda.launch import Launch, check_shared_memory
from dlgpu.device import gpu_unavailable_reason
from dlgpu.errors import ArgumentError, BackendUnavailableError, DeviceError, install_hint

_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


def _import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"dlgpu: the CUDA backend needs CuPy; {install_hint('cuda13')} (extra cuda12 for a CUDA 12 driver)"
        ) from exc
    if cupy is None:  # a test or a user blocked it through sys.modules
        raise BackendUnavailableError("dlgpu: the CUDA backend needs CuPy, which is not importable")
    return cupy


class CupyExecutor:
    """Compiles (through the kernel cache), loads and launches kernels with CuPy."""

    def __init__(self, *, kernels_dir=None, cache: compiler.KernelCache | None = None):
        self.xp: Any = _import_cupy()
        self._kernels_dir = kernels_dir
        self._cache = cache
        self._modules: dict[tuple, Any] = {}
        self._functions: dict[tuple, Any] = {}
        self._shared_opt_in: dict[tuple, int] = {}
        self._files: Path | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ modules

    def device_target(self, device_id: int) -> str:
        """The NVRTC target for a device: its own sm_XX (sm_90a on Hopper), or PTX."""
        capability = int(self.xp.cuda.Device(device_id).compute_capability)
        return compiler.target_for_device(capability)

    def module(self, family: str, defines=(), device_id: int | None = None):
        """The loaded CUDA module of ``family`` with ``defines`` on a device (default: current)."""
        cupy = self.xp
        device_id = cupy.cuda.runtime.getDevice() if device_id is None else device_id
        defines = compiler.normalize_defines(defines)
        key = (family, defines, device_id)
        with self._lock:
            if key in self._modules:
                return self._modules[key]
        compiled = compiler.compile_family(
            family,
            arch=self.device_target(device_id),
            defines=defines,
            kernels_dir=self._kernels_dir,
            cache=self._cache,
        )
        with cupy.cuda.Device(device_id):
            module = self._load(compiled)
        with self._lock:
            self._modules.setdefault(key, (module, compiled))
            return self._modules[key]

    def _load(self, compiled: compiler.CompiledModule):
        """Load an image into the current device's context.

        From bytes (cuModuleLoadData) where this CuPy exposes its Module
        class; otherwise through the public ``cupy.RawModule(path=...)`` on a
        file written beside nothing else, kept for the process's lifetime
        (RawModule loads lazily).
        """
        cupy = self.xp
        module_class = getattr(getattr(cupy.cuda, "function", None), "Module", None)
        if module_class is not None and hasattr(module_class, "load"):
            module = module_class()
            module.load(compiled.image)
            return module
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="dlgpu-modules-"))
        path = self._files / f"{compiled.key}.{compiled.kind}"
        path.write_bytes(compiled.image.rstrip(b"\0") if compiled.kind == "ptx" else compiled.image)
        return cupy.RawModule(path=str(path))

    def function(self, family: str, kernel: str, defines=(), device_id: int | None = None):
        """The launchable kernel ``kernel`` of ``family`` (cached)."""
        cupy = self.xp
        device_id = cupy.cuda.runtime.getDevice() if device_id is None else device_id
        defines = compiler.normalize_defines(defines)
        key = (family, defines, device_id, kernel)
        with self._lock:
            if key in self._functions:
                return self._functions[key]
        module, compiled = self.module(family, defines, device_id)
        if compiled.kind == "cubin" and kernel not in compiled.resources:
            raise ArgumentError(
                f"dlgpu: kernel {kernel!r} is not in {compiled.source.name} "
                f"(its kernels: {', '.join(compiled.kernels)})"
            )
        function = module.get_function(kernel)
        with self._lock:
            self._functions.setdefault(key, function)
            return self._functions[key]

    # ------------------------------------------------------------ launch

    def launch(self, launch: Launch) -> None:
        cupy = self.xp
        device_id = cupy.cuda.runtime.getDevice()
        where = f"{launch.family}.{launch.kernel}"
        for name, dims in (("grid", launch.grid), ("block", launch.block)):
            if len(dims) != 3 or any(int(d) < 1 for d in dims):
                raise ArgumentError(f"dlgpu: launch of {where}: {name} must be 3 positive ints, got {dims}")
        if launch.shared_mem < 0:
            raise ArgumentError(f"dlgpu: launch of {where}: shared_mem={launch.shared_mem} is negative")
        # The kernel's own __cluster_dims__ shape the launch; the driver refuses a grid of partial clusters.
        if any(int(g) % int(c) for g, c in zip(launch.grid, launch.cluster)):
            raise ArgumentError(f"dlgpu: launch of {where}: grid {launch.grid} is not whole clusters {launch.cluster}")
        check_shared_memory(launch, f"dlgpu: launch of {where}")
        self._check_args(launch, where, device_id)
        function = self.function(launch.family, launch.kernel, launch.defines, device_id)
        if launch.shared_opt_in:
            self._allow_shared(function, launch, device_id)
        function(
            tuple(int(g) for g in launch.grid),
            tuple(int(b) for b in launch.block),
            launch.args,
            shared_mem=int(launch.shared_mem),
            stream=cupy.cuda.get_current_stream(),
        )

    def _check_args(self, launch: Launch, where: str, device_id: int) -> None:
        cupy = self.xp
        for position, arg in enumerate(launch.args):
            if isinstance(arg, cupy.ndarray):
                if arg.device.id != device_id:
                    raise DeviceError(
                        f"dlgpu: launch of {where}: argument {position} lives on device "
                        f"{arg.device.id}, the current device is {device_id}"
                    )
            elif isinstance(arg, np.ndarray):
                raise DeviceError(
                    f"dlgpu: launch of {where}: argument {position} is a NumPy array; "
                    "GPU kernels take CuPy arrays"
                )
            elif not isinstance(arg, np.generic):
                raise ArgumentError(
                    f"dlgpu: launch of {where}: argument {position} is {type(arg).__name__}; "
                    "scalars must be NumPy scalars whose type is the C parameter's (np.int32(n))"
                )

    def _allow_shared(self, function, launch: Launch, device_id: int) -> None:
        key = (launch.family, launch.defines, device_id, launch.kernel)
        if self._shared_opt_in.get(key, 0) >= launch.shared_mem:
            return
        driver = self.xp.cuda.driver
        attribute = getattr(
            driver,
            "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES",
            _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        )
        driver.funcSetAttribute(function.ptr, attribute, int(launch.shared_mem))
        self._shared_opt_in[key] = int(launch.shared_mem)


_DEFAULT: CupyExecutor | None = None
_DEFAULT_LOCK = threading.Lock()


def default_executor() -> CupyExecutor:
    """The process-wide CuPy executor; BackendUnavailableError without CuPy or a GPU."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _import_cupy()  # its own message names the missing package
            reason = gpu_unavailable_reason()
            if reason is not None:
                raise BackendUnavailableError(f"dlgpu: no CUDA GPU to run on ({reason}); the CUDA backend needs one")
            _DEFAULT = CupyExecutor()
        return _DEFAULT


def resolve_executor(executor):
    """``executor``, or the process-wide CuPy executor when it is None (what every launcher calls first)."""
    return default_executor() if executor is None else executor
