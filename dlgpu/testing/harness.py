"""Run the kernels of ``kernels/*.cu`` on the CPU: the execution harness, plain or sanitized.

``HarnessExecutor(mode)`` is an executor for :class:`dlgpu.cuda.launch.Launch` with
``xp = numpy``: a launcher given ``executor=HarnessExecutor("asan")`` allocates NumPy
outputs and its launch runs the family's .cu, compiled by the host C++ compiler
(``$CXX``, else g++, else clang++; C++20) after ``cuda_host.h``, which supplies
CUDA's built-ins (see that header for the execution model: every CUDA thread a
real thread, a real ``__syncthreads`` barrier, per-block shared memory, warp
collectives through a per-warp buffer, atomics, half types, and the PTX wrappers
of ``kernels/ptx.cuh`` implemented from the PTX ISA's fragment layouts).

Modes:
  plain  a shared object loaded with ctypes; the launch runs in this process on
         the arrays themselves.  Fast; a wild pointer crashes the process (use asan).
  asan   ``-fsanitize=address,alignment``: a runner executable in a child process.
         Every array argument is copied into a malloc'd block of exactly its size
         (arrays that overlap share one block, so in-place calls keep aliasing), so
         an out-of-bounds read or write of global memory is an ASan report; static
         ``__shared__`` arrays are globals with redzones and the dynamic shared buffer
         is poisoned past the launch's size.  Misaligned vector accesses are UBSan
         reports.
  tsan   ``-fsanitize=thread``, the same runner: a shared-memory write and another
         thread's read with no ``__syncthreads`` between them is a data race report.
Sanitizer runtimes are not loaded into Python (preloading them into the
interpreter is fragile): the child is an executable linked with them, fed the
launch through a file and writing the buffers back through another.  A report,
a harness check (mismatched warp masks, a collective naming a lane that has
returned, misaligned cp.async, a deadlock) or a non-zero exit raises
:class:`HarnessError`, an AssertionError, so a test fails with the report.

``extern __shared__ T name[];`` is rewritten (text, same line) into a pointer to
the launch's dynamic shared buffer, and ``__shared__ alignas(n)`` into
``alignas(n) __shared__``; nothing else in the source is touched.  The kernels a
family exports are found by name in its preprocessed source (:func:`family_kernels`),
where the tile-configuration lists have expanded into named kernels.
Compiled objects are cached under ``$DLGPU_CACHE_DIR/harness`` (the compiler's
cache folder) by SHA-256 of the generated translation unit (the source and its
exports), every header it includes (recursively), cuda_host.h, the flags and the
compiler's version: editing one family's header rebuilds only the families using it.

Not modelled: timing, memory coalescing, bank conflicts, the real warp scheduler
and independent thread scheduling, blocks running concurrently (they run one after
another), the GPU's weak memory model, the tensor cores' internal accumulation
order, and the 48 KB dynamic shared memory opt-in.  :func:`cross_check` compares
the harness with the GPU on the same launch where a GPU is at hand.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dlgpu.cuda import compiler
from dlgpu.cuda.launch import Launch
from dlgpu.device import is_cupy
from dlgpu.kernels_dir import included_headers
from dlgpu.errors import ArgumentError, BackendUnavailableError, CompileError, DeviceError, LayoutError

MODES = ("plain", "asan", "tsan")
HEADER = Path(__file__).with_name("cuda_host.h")

_COMMON_FLAGS = ("-std=c++20", "-pthread", "-fvisibility=hidden", "-ffp-contract=off", "-DDLGPU_HOST_HARNESS=1")
_MODE_FLAGS = {
    "plain": ("-O1", "-fPIC", "-shared"),
    "asan": ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,alignment", "-fno-sanitize-recover=all",
             "-DDLGPU_RUNNER_MAIN=1"),
    "tsan": ("-O1", "-g", "-fsanitize=thread", "-DDLGPU_RUNNER_MAIN=1"),
}
_SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "TSAN_OPTIONS": "halt_on_error=0:exitcode=66",
}
_REPORT_MARKERS = ("ERROR: AddressSanitizer", "WARNING: ThreadSanitizer", "runtime error:", "dlgpu harness:")
# CUDA headers a kernel may include: the harness header already supplies their contents.
_STUB_HEADERS = ("cuda_fp16.h", "cuda_bf16.h", "cuda_runtime.h", "cuda.h", "math_constants.h")
_STUB_TEXT = "#pragma once  // supplied by dlgpu/testing/cuda_host.h\n"

_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\("
)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:(?:alignas|__align__)\s*\([^)]*\)\s*)?(?P<type>[^;\[\]]*?)\s*(?P<name>\w+)\s*\[\s*\]\s*;"
)
_SHARED_ALIGNAS = re.compile(r"__shared__\s+(alignas\s*\([^)]*\))")


class HarnessError(AssertionError):
    """A kernel misbehaved under the harness: a sanitizer report or a failed harness check."""

    def __init__(self, message: str, report: str = ""):
        super().__init__(message if not report else f"{message}\n{report}")
        self.report = report


def kernel_names(source: str) -> list[str]:
    """The ``extern "C" __global__`` kernels a .cu text defines, in order (comments ignored)."""
    return _KERNEL.findall(_COMMENT.sub(" ", source))


def _source_flags(source: Path, defines, kernels_dir, cache_dir) -> tuple[list[str], list[str]]:
    """(-D flags, -I flags) of a family's build: the harness header, the stub CUDA headers (made
    here, in the cache folder) and the kernel folders."""
    folder = Path(cache_dir) if cache_dir else compiler.default_cache_dir() / "harness"
    stubs = folder / "include"
    stubs.mkdir(parents=True, exist_ok=True)
    for stub in _STUB_HEADERS:
        if not (stubs / stub).exists():
            (stubs / stub).write_text(_STUB_TEXT)
    define_flags = [f"-D{name}={value}" for name, value in defines]
    include_flags = [f"-I{HEADER.parent}", f"-I{stubs}", *(f"-I{d}" for d in _include_dirs(source, kernels_dir))]
    return define_flags, include_flags


def _include_dirs(source: Path, kernels_dir) -> list[Path]:
    # A planted kernel in a test folder may still include the package's headers (ptx.cuh).
    return list(dict.fromkeys([source.parent, compiler.kernels_root(kernels_dir), compiler.kernels_root()]))


def _preprocessed_kernel_names(cxx: str, source: Path, flags) -> list[str]:
    """The kernels of ``source`` once the preprocessor has run: a family's tile-configuration
    list (an X-macro) expands into its named kernels only there."""
    result = subprocess.run([cxx, "-E", "-P", "-x", "c++", *flags, str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"dlgpu harness: {cxx} could not preprocess {source}", result.stderr[-20000:])
    return kernel_names(result.stdout)


def family_kernels(family: str, defines=None, kernels_dir=None, cache_dir=None) -> list[str]:
    """Every kernel a family's .cu defines, by name, with the build ``defines`` (None: the
    source's first ``// dlgpu-build:`` configuration): what the harness can launch."""
    source = compiler.source_path(family, kernels_dir)
    if defines is None:
        defines = compiler.build_configurations(source.read_text())[0]
    define_flags, include_flags = _source_flags(source, compiler.normalize_defines(defines), kernels_dir, cache_dir)
    return _preprocessed_kernel_names(find_compiler(), source, [*_COMMON_FLAGS, *define_flags, *include_flags])


def find_compiler() -> str:
    """The host C++ compiler: ``$CXX``, else g++, else clang++."""
    for candidate in (os.environ.get("CXX"), "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise BackendUnavailableError("dlgpu harness: no C++ compiler found (set CXX, or install g++)")


@functools.lru_cache(maxsize=None)
def _compiler_identity(cxx: str) -> str:
    return cxx + "\n" + subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def _dynamic_shared_pointer(match: re.Match) -> str:
    kind = match["type"].strip()
    return f"{kind}* const {match['name']} = reinterpret_cast<{kind}*>(::dlgpu_host::dynamic_shared());"


def translation_unit(source_path: Path, names: list[str] | None = None) -> tuple[str, list[str]]:
    """The C++ that g++ compiles for a family: the rewritten source and one export per kernel
    (``names``: the family's kernels; None reads them from the source text)."""
    text = source_path.read_text()
    names = kernel_names(text) if names is None else names
    if not names:
        raise CompileError(f'dlgpu harness: {source_path} defines no extern "C" __global__ kernel')
    text = _SHARED_ALIGNAS.sub(r"\1 __shared__", _EXTERN_SHARED.sub(_dynamic_shared_pointer, text))
    rows = ['#include "cuda_host.h"', f'#line 1 "{source_path}"', text]
    rows.append('#line 1 "<dlgpu harness exports>"')
    rows += [f"DLGPU_EXPORT_KERNEL({name})" for name in names]
    rows.append("#ifdef DLGPU_RUNNER_MAIN")
    rows.append("static const dlgpu_host::KernelEntry dlgpu_kernels[] = {")
    rows += [f'    {{"{name}", dlgpu_launch_{name}}},' for name in names]
    rows.append("};")
    rows.append("int main(int argc, char** argv)")
    rows.append("{ return dlgpu_host::runner_main(argc, argv, dlgpu_kernels, sizeof dlgpu_kernels / sizeof *dlgpu_kernels); }")
    rows.append("#endif")
    return "\n".join(rows) + "\n", names


class _Build:
    def __init__(self, path: Path, names: list[str], mode: str):
        self.path, self.names, self.mode = path, names, mode
        self.library = ctypes.CDLL(str(path)) if mode == "plain" else None


_builds: dict[tuple, _Build] = {}
_build_lock = threading.Lock()
_launch_lock = threading.Lock()


def build(family: str, defines=(), mode: str = "plain", kernels_dir=None, cache_dir=None) -> _Build:
    """Compile ``family`` for ``mode`` (or find it in the cache): a shared object or a runner."""
    if mode not in MODES:
        raise ArgumentError(f"dlgpu harness: mode must be one of {MODES}, got {mode!r}")
    defines = compiler.normalize_defines(defines)
    source = compiler.source_path(family, kernels_dir)
    include_dirs = _include_dirs(source, kernels_dir)
    # The kernel's headers, and those cuda_host.h itself includes (cuda_host_sm90.h).
    headers = sorted({path for root, folders in ((source, include_dirs), (HEADER, [HEADER.parent]))
                      for path in included_headers(root, folders).values() if path is not None})
    # An edited source or header (its mtime) makes a new build, within one process too.
    stamps = tuple((str(path), path.stat().st_mtime_ns) for path in (source, HEADER, *headers))
    key_in_memory = (stamps, defines, mode, str(cache_dir))
    with _build_lock:
        if key_in_memory in _builds:
            return _builds[key_in_memory]
        cxx = find_compiler()
        folder = Path(cache_dir) if cache_dir else compiler.default_cache_dir() / "harness"
        define_flags, include_flags = _source_flags(source, defines, kernels_dir, cache_dir)
        names = _preprocessed_kernel_names(cxx, source, [*_COMMON_FLAGS, *define_flags, *include_flags])
        unit, names = translation_unit(source, names)
        flags = [*_COMMON_FLAGS, *_MODE_FLAGS[mode], *define_flags, *include_flags]
        digest = hashlib.sha256()
        # The unit carries the source and the generated exports; the flags, everything else.
        for part in (_compiler_identity(cxx), " ".join(flags), unit, HEADER.read_text(), _STUB_TEXT):
            digest.update(part.encode() + b"\0")
        for header in headers:
            digest.update(str(header).encode() + b"\0" + header.read_bytes() + b"\0")
        stem = f"{family}-{mode}-{digest.hexdigest()[:24]}"
        target = folder / (stem + (".so" if mode == "plain" else ".exe"))
        if not target.exists():
            _compile(cxx, flags, unit, folder, stem, target, family, mode)
        result = _Build(target, names, mode)
        _builds[key_in_memory] = result
        return result


def _compile(cxx, flags, unit, folder: Path, stem: str, target: Path, family: str, mode: str) -> None:
    with tempfile.TemporaryDirectory(dir=folder, prefix=stem + ".") as work:
        unit_path = Path(work) / f"{stem}.cpp"
        unit_path.write_text(unit)
        output = Path(work) / target.name
        result = subprocess.run([cxx, *flags, str(unit_path), "-o", str(output)], capture_output=True, text=True)
        if result.returncode != 0:
            raise CompileError(f"dlgpu harness: {cxx} could not build {family} ({mode})", result.stderr[-20000:])
        os.replace(output, target)  # atomic: a concurrent build of the same key is harmless


# ---------------------------------------------------------------- arguments


def _argument_codes(args, where: str) -> str:
    """What the launch passes, in cuda_host.h's codes: p (array), i4, u8, f4, b1, ..."""
    codes = []
    for position, arg in enumerate(args):
        if isinstance(arg, np.ndarray):
            if not arg.flags.c_contiguous:
                raise LayoutError(f"dlgpu harness: launch of {where}: argument {position} is not C-contiguous")
            codes.append("p")
        elif isinstance(arg, np.generic) and arg.dtype.kind in "biuf":
            codes.append(f"{arg.dtype.kind}{arg.dtype.itemsize}")
        elif is_cupy(arg):
            raise DeviceError(f"dlgpu harness: launch of {where}: argument {position} is a CuPy array; "
                              "the CPU harness takes NumPy arrays")
        else:
            raise ArgumentError(f"dlgpu harness: launch of {where}: argument {position} is {type(arg).__name__}; "
                                "pass NumPy arrays and NumPy scalars of the parameter's C type (np.int32(n))")
    return ",".join(codes)


def _run_in_process(build: _Build, launch: Launch, codes: str, where: str) -> None:
    function = getattr(build.library, f"dlgpu_launch_{launch.kernel}")
    function.restype = ctypes.c_int
    storage = []
    for arg in launch.args:
        if isinstance(arg, np.ndarray):
            storage.append(ctypes.c_void_p(arg.ctypes.data))
        else:
            storage.append(ctypes.create_string_buffer(arg.tobytes(), 16))
    pointers = (ctypes.c_void_p * max(1, len(storage)))(*[ctypes.addressof(s) for s in storage])
    grid = (ctypes.c_uint * 3)(*launch.grid)
    block = (ctypes.c_uint * 3)(*launch.block)
    error = ctypes.create_string_buffer(1024)
    with _launch_lock:
        status = function(codes.encode(), grid, block, ctypes.c_size_t(launch.shared_mem), pointers, error,
                          ctypes.c_size_t(len(error)))
    if status != 0:
        raise HarnessError(f"dlgpu harness: {where} (plain): {error.value.decode()}")


def _pack_launch(launch: Launch, codes: str) -> tuple[bytes, list[tuple[int, int]]]:
    """The runner's input file, and the (address, size) of each buffer to copy back.

    Arrays whose memory overlaps (``out`` is ``x``, or views of one base) become one
    buffer, so aliasing survives the copy.
    """
    arrays = [a for a in launch.args if isinstance(a, np.ndarray)]
    spans = sorted({(a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays})
    buffers: list[list[int]] = []
    for start, end in spans:
        if buffers and start < buffers[-1][1] and end > start:
            buffers[-1][1] = max(buffers[-1][1], end)
        else:
            buffers.append([start, end])
    u64 = struct.Struct("<Q").pack
    out = [u64(len(launch.kernel)), launch.kernel.encode(), u64(len(codes)), codes.encode()]
    out += [u64(int(v)) for v in (*launch.grid, *launch.block, launch.shared_mem)]
    out.append(u64(len(buffers)))
    for start, end in buffers:
        out += [u64(end - start), ctypes.string_at(start, end - start)]
    out.append(u64(len(launch.args)))
    for arg in launch.args:
        if isinstance(arg, np.ndarray):
            address = arg.ctypes.data
            index = next(i for i, (s, e) in enumerate(buffers) if s <= address and (address < e or s == e == address))
            out += [u64(0), u64(index), u64(address - buffers[index][0])]
        else:
            out += [u64(1), u64(arg.dtype.itemsize), u64(int.from_bytes(arg.tobytes().ljust(8, b"\0"), "little"))]
    return b"".join(out), [(s, e - s) for s, e in buffers]


def _run_in_child(build: _Build, launch: Launch, codes: str, where: str) -> None:
    payload, buffers = _pack_launch(launch, codes)
    env = dict(os.environ)
    for name, value in _SANITIZER_ENV.items():  # the user's own options come last and win
        env[name] = value + (":" + os.environ[name] if os.environ.get(name) else "")
    with tempfile.TemporaryDirectory(prefix="dlgpu-harness-") as work:
        launch_file, result_file = Path(work) / "launch.bin", Path(work) / "result.bin"
        launch_file.write_bytes(payload)
        command = [str(build.path), str(launch_file), str(result_file)]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0 and "unexpected memory mapping" in result.stderr and shutil.which("setarch"):
            # Older TSan runtimes cannot map their shadow under high ASLR entropy.
            result = subprocess.run(["setarch", os.uname().machine, "-R", *command], capture_output=True,
                                    text=True, env=env)
        report = result.stderr
        if result.returncode != 0 or any(marker in report for marker in _REPORT_MARKERS):
            head = report if len(report) <= 12000 else report[:12000] + "\n[... report truncated]"
            raise HarnessError(f"dlgpu harness: {where} ({build.mode}) failed with exit code {result.returncode}", head)
        data = result_file.read_bytes()
    offset = 0
    for address, size in buffers:
        ctypes.memmove(address, data[offset:offset + size], size)
        offset += size


# ---------------------------------------------------------------- the executor


def _poison(array: np.ndarray) -> np.ndarray:
    array.fill(np.frombuffer(b"\xff" * array.dtype.itemsize, array.dtype)[0])
    return array


class _PoisonedNumpy:
    """NumPy, except that ``empty``/``empty_like`` fill with 0xFF bytes (NaN, -1), so that
    an element no kernel writes shows in the result."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float, order="C"):
        return _poison(np.empty(shape, dtype, order))

    @staticmethod
    def empty_like(prototype, dtype=None, order="K", subok=True, shape=None):
        return _poison(np.empty_like(prototype, dtype, order, subok, shape))


class HarnessExecutor:
    """Carries out launches on NumPy arrays by running the kernels on the CPU.

    ``xp`` is NumPy with poisoned ``empty`` (see :class:`_PoisonedNumpy`).
    ``multiprocessor_count`` (None: the launchers' fallback) is what launchers that
    size grids by the device see; a small one makes grid-stride loops take several trips.
    ``launched`` collects (family, kernel) of every launch made, so that a test can
    prove which kernels it exercised.
    """

    def __init__(self, mode: str = "plain", *, kernels_dir=None, cache_dir=None, multiprocessor_count=None):
        if mode not in MODES:
            raise ArgumentError(f"dlgpu harness: mode must be one of {MODES}, got {mode!r}")
        self.xp: Any = _PoisonedNumpy()
        self.mode = mode
        self.multiprocessor_count = multiprocessor_count
        self._kernels_dir = kernels_dir
        self._cache_dir = cache_dir
        self.launched: set[tuple[str, str]] = set()

    def launch(self, launch: Launch) -> None:
        where = f"{launch.family}.{launch.kernel}"
        for name, dims in (("grid", launch.grid), ("block", launch.block)):
            if len(dims) != 3 or any(int(d) < 1 for d in dims):
                raise ArgumentError(f"dlgpu harness: launch of {where}: {name} must be 3 positive ints, got {dims}")
        if launch.shared_mem < 0:
            raise ArgumentError(f"dlgpu harness: launch of {where}: shared_mem={launch.shared_mem} is negative")
        codes = _argument_codes(launch.args, where)
        built = build(launch.family, launch.defines, self.mode, self._kernels_dir, self._cache_dir)
        if launch.kernel not in built.names:
            raise ArgumentError(f"dlgpu harness: {launch.family}.cu has no kernel {launch.kernel!r}; "
                                f"it has {', '.join(built.names)}")
        if self.mode == "plain":
            _run_in_process(built, launch, codes, where)
        else:
            _run_in_child(built, launch, codes, where)
        self.launched.add((launch.family, launch.kernel))


def cross_check(run: Callable[[Any], Any], *, mode: str = "plain", tolerance: float = 1e-5) -> list[float]:
    """Run the same launches on the GPU and on the harness, and compare what they return.

    ``run(executor)`` makes its inputs from a fixed seed, moves them to
    ``executor.xp``, calls launchers with ``executor=executor`` and returns an array
    or a tuple of arrays.  Floating outputs must agree to ``tolerance`` in relative
    Frobenius error (the harness rounds like the device, but g++ does not contract
    a*b+c into FMA as nvcc does); integer outputs exactly.  Returns the errors;
    raises AssertionError on a disagreement.  Needs CuPy and a GPU.
    """
    from dlgpu.cuda.executor import CupyExecutor
    from dlgpu.testing import rel_error, to_numpy

    as_tuple = lambda out: out if isinstance(out, tuple) else (out,)  # noqa: E731
    gpu = CupyExecutor()
    device = [to_numpy(o) for o in as_tuple(run(gpu))]
    sms = gpu.xp.cuda.Device().attributes["MultiProcessorCount"]  # the same grids on both
    host = [to_numpy(o) for o in as_tuple(run(HarnessExecutor(mode, multiprocessor_count=sms)))]
    errors = []
    for index, (d, h) in enumerate(zip(device, host, strict=True)):
        if d.dtype.kind == "f":
            errors.append(rel_error(h, d))
        else:
            errors.append(0.0 if np.array_equal(h, d) else float("inf"))
        assert errors[-1] <= tolerance, f"cross_check: output {index} differs, harness vs GPU: {errors[-1]:.3e}"
    return errors
