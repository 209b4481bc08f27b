"""Run the kernels of ``kernels/*.cu`` on the CPU: the execution harness, plain or sanitized.

``HarnessExecutor(mode)`` is an executor for :class:`dlgpu.cuda.launch.Launch` with
``xp = numpy``: a launcher given ``executor=HarnessExecutor("asan")`` allocates NumPy
outputs and its launch runs the family's .cu, compiled by the host C++ compiler
(``$CXX``, else g++, else clang++; C++20) after ``cuda_host.h``, which supplies
CUDA's built-ins (see that header for the execution model: every CUDA thread a
real thread, blocks two at a time in a shuffled order, ``__syncthreads`` barriers
tagged with their call site, per-block poisoned shared memory, warp collectives
that are no memory fences, the device's launch limits, atomics, half types, and
the PTX wrappers of ``kernels/ptx.cuh`` implemented from the PTX ISA's fragment
layouts).

Modes:
  plain  a shared object loaded with ctypes; the launch runs in this process on
         the arrays themselves.  Fast; a wild pointer crashes the process (use asan).
  asan   ``-fsanitize=address,alignment``: a runner executable in a child process.
         Every array argument is copied into a malloc'd block of exactly its size
         (arrays that overlap share one block, so in-place calls keep aliasing), so
         an out-of-bounds read or write of global memory is an ASan report; so is
         one of shared memory (each block's arrays and dynamic buffer are
         allocations of exactly their size).  Misaligned vector accesses are UBSan
         reports.
  tsan   ``-fsanitize=thread``, the same runner: a shared-memory write and another
         thread's read with no ``__syncthreads`` (or ``__syncwarp``) between them,
         a cp.async refill racing the stage's readers, or two blocks touching one
         global element without atomics is a data race report.
Sanitizer runtimes are not loaded into Python (preloading them into the
interpreter is fragile): the child is an executable linked with them, fed the
launch through a file and writing the buffers back through another.  A report,
a harness check (a launch past the kernel's or the device's limits, barriers from
two call sites, a deadlock, a mask naming lanes that do not exist or have
returned, misaligned cp.async) or a non-zero exit raises :class:`HarnessError`,
an AssertionError, so a test fails with the report; its message names the block
order's seed (``$DLGPU_HARNESS_SEED`` repeats a run).

``__shared__`` declarations of the source and of every header it includes are
rewritten (text, same lines; :func:`rewrite_shared`) into references to the
running block's copies; the headers are compiled from rewritten copies beside
the unit.  Nothing else in the source is touched.  The kernels a family exports
(and their ``__launch_bounds__``) are found by name in its preprocessed source
(:func:`family_kernels`), where the tile-configuration lists have expanded into
named kernels.
Compiled objects are cached under ``$DLGPU_CACHE_DIR/harness`` (the compiler's
cache folder) by SHA-256 of the generated translation unit (the source and its
exports), every header it includes (recursively, as rewritten), cuda_host.h, the
flags and the compiler's version: editing one family's header rebuilds only the
families using it.

Not modelled (cuda_host.h's header says more): timing, memory coalescing, bank
conflicts, the real warp scheduler and independent thread scheduling, more than
two blocks at once, the GPU's weak memory model, and the tensor cores' internal
accumulation order.  :func:`cross_check` compares the harness with the GPU on the
same launch where a GPU is at hand.
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
from dlgpu.cuda.launch import SHARED_STATIC_LIMIT, Launch, check_shared_memory, shared_memory_limit
from dlgpu.device import is_cupy
from dlgpu.kernel_files import included_headers
from dlgpu.errors import ArgumentError, BackendUnavailableError, CompileError, DeviceError, LayoutError

MODES = ("plain", "asan", "tsan")
HEADER = Path(__file__).with_name("cuda_host.h")
# The block order's seed when neither the executor nor $DLGPU_HARNESS_SEED gives one: fixed, so
# that a run repeats; any seed must pass.
DEFAULT_SEED = 1
# Blocks of a grid that run at once: two is enough for ThreadSanitizer to see blocks race, and
# keeps the thread count (and the cost on a small CI machine) near one block's.
RESIDENT_BLOCKS = 2

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
# CUDA headers a kernel may include: the harness header already supplies their contents, the
# bfloat16 names in a namespace that only <cuda_bf16.h> opens (NVRTC 13.0's cuda_fp16.h lacks them).
_STUB_TEXT = "#pragma once  // supplied by dlgpu/testing/cuda_host.h\n"
_STUBS = {name: _STUB_TEXT for name in ("cuda_fp16.h", "cuda_runtime.h", "cuda.h", "math_constants.h")}
_STUBS["cuda_bf16.h"] = _STUB_TEXT + "using namespace dlgpu_cuda_bf16;\n"

# A kernel's attributes, __launch_bounds__ and __cluster_dims__, before or after `void`.
_ATTRIBUTES = (r"(?:__launch_bounds__\s*\((?P<bounds_{0}>[^)]*)\)\s*"
               r"|__cluster_dims__\s*\((?P<cluster_{0}>[^)]*)\)\s*)*")
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+' + _ATTRIBUTES.format("before") + r"void\s+" +
                     _ATTRIBUTES.format("after") + r"(?P<name>\w+)\s*\(")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_ALIGN = r"(?:alignas|__align__)\s*\((?P<{}>[^)]*)\)\s*"
# One pass over a source: comments are kept as they are; `extern __shared__ T name[];` and
# `__shared__ [alignas(n)] T name[dims];` (alignas before or after __shared__) are rewritten.
_SHARED = re.compile(
    r"(?P<comment>//[^\n]*|/\*.*?\*/)"
    r"|(?P<extern>extern\s+__shared__\s+(?:" + _ALIGN.format("extern_align") + r")?"
    r"(?P<extern_type>[^;\[\]]*?)\s*(?P<extern_name>\w+)\s*\[\s*\]\s*;)"
    r"|(?P<static>(?:" + _ALIGN.format("align_before") + r")?__shared__\s+(?:" + _ALIGN.format("align_after") + r")?"
    r"(?P<type>[A-Za-z_][\w:<>,\s*]*?)\s+(?P<name>\w+)\s*(?P<dims>(?:\[[^\];]*\]\s*)*);)",
    re.S,
)


class HarnessError(AssertionError):
    """A kernel misbehaved under the harness: a sanitizer report or a failed harness check."""

    def __init__(self, message: str, report: str = ""):
        super().__init__(message if not report else f"{message}\n{report}")
        self.report = report


def kernel_names(source: str) -> list[str]:
    """The ``extern "C" __global__`` kernels a .cu text defines, in order (comments ignored)."""
    return list(launch_bounds(source))


def launch_bounds(source: str) -> dict[str, str]:
    """Each kernel's largest block (the first argument of its ``__launch_bounds__``, as C++
    text), or "0" for a kernel without one; in order of definition, comments ignored."""
    bounds = {}
    for match in _KERNEL.finditer(_COMMENT.sub(" ", source)):
        text = match["bounds_before"] or match["bounds_after"]
        bounds[match["name"]] = text.split(",")[0].strip() if text else "0"
    return bounds


def cluster_dims(source: str) -> dict[str, tuple[int, int, int]]:
    """Each kernel's ``__cluster_dims__`` as integers (x, y, z), (1, 1, 1) for one without; the
    preprocessed source's (its macros expanded to literals)."""
    dims = {}
    for match in _KERNEL.finditer(_COMMENT.sub(" ", source)):
        text = match["cluster_before"] or match["cluster_after"]
        values = [int(v) for v in text.split(",")] if text else []
        dims[match["name"]] = tuple(values + [1] * (3 - len(values)))
    return dims


def _source_flags(source: Path, defines, kernels_dir, cache_dir) -> tuple[list[str], list[str]]:
    """(-D flags, -I flags) of a family's build: the harness header, the stub CUDA headers (made
    here, in the cache folder) and the kernel folders."""
    folder = Path(cache_dir) if cache_dir else compiler.default_cache_dir() / "harness"
    stubs = folder / "include"
    stubs.mkdir(parents=True, exist_ok=True)
    for stub, text in _STUBS.items():
        path = stubs / stub
        if not path.exists() or path.read_text() != text:  # atomically: other workers may be compiling
            partial = path.with_name(f"{stub}.{os.getpid()}.tmp")
            partial.write_text(text)
            os.replace(partial, path)
    define_flags = [f"-D{name}={value}" for name, value in defines]
    include_flags = [f"-I{HEADER.parent}", f"-I{stubs}", *(f"-I{d}" for d in _include_dirs(source, kernels_dir))]
    return define_flags, include_flags


def _include_dirs(source: Path, kernels_dir) -> list[Path]:
    # A planted kernel in a test folder may still include the package's headers (ptx.cuh).
    return list(dict.fromkeys([source.parent, compiler.kernels_root(kernels_dir), compiler.kernels_root()]))


def _preprocessed(cxx: str, source: Path, flags) -> str:
    """``source`` once the preprocessor has run: a family's tile-configuration list (an X-macro)
    expands into its named kernels only there."""
    result = subprocess.run([cxx, "-E", "-P", "-x", "c++", *flags, str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"dlgpu harness: {cxx} could not preprocess {source}", result.stderr[-20000:])
    return result.stdout


def family_kernels(family: str, defines=None, kernels_dir=None, cache_dir=None) -> list[str]:
    """Every kernel a family's .cu defines, by name, with the build ``defines`` (None: the
    source's first ``// dlgpu-build:`` configuration): what the harness can launch."""
    source = compiler.source_path(family, kernels_dir)
    if defines is None:
        defines = compiler.build_configurations(source.read_text())[0]
    define_flags, include_flags = _source_flags(source, compiler.normalize_defines(defines), kernels_dir, cache_dir)
    return list(launch_bounds(_preprocessed(find_compiler(), source, [*_COMMON_FLAGS, *define_flags, *include_flags])))


def find_compiler() -> str:
    """The host C++ compiler: ``$CXX``, else g++, else clang++."""
    for candidate in (os.environ.get("CXX"), "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise BackendUnavailableError("dlgpu harness: no C++ compiler found (set CXX, or install g++)")


@functools.lru_cache(maxsize=None)
def _compiler_identity(cxx: str) -> str:
    return cxx + "\n" + subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def _rewrite_shared(match: re.Match) -> str:
    if match["comment"]:
        return match["comment"]
    # The same lines, so that diagnostics point right; inside a macro, continued lines stay continued.
    newlines = ("\\\n" if "\\\n" in match.group(0) else "\n") * match.group(0).count("\n")
    one_line = lambda text: " ".join(text.replace("\\\n", " ").split())  # noqa: E731
    if match["extern"]:
        kind = one_line(match["extern_type"])
        name = match["extern_name"]
        return f"{kind}* const {name} = reinterpret_cast<{kind}*>(::dlgpu_host::dynamic_shared());{newlines}"
    kind = one_line(f"{match['type']} {match['dims']}")
    align = one_line(match["align_before"] or match["align_after"] or "0")
    name = match["name"]
    return (f"static ::dlgpu_host::SharedSite dlgpu_shared_{name}; "
            f"auto& {name} = ::dlgpu_host::static_shared<{kind}, (size_t)({align})>(dlgpu_shared_{name});{newlines}")


def rewrite_shared(text: str) -> str:
    """Kernel source with its ``__shared__`` declarations made per block (see cuda_host.h).

    ``extern __shared__ T name[];`` becomes a pointer to the running block's dynamic buffer;
    ``__shared__ T name[dims];`` a reference to the running block's own copy of the array.
    Lines keep their numbers; comments are left alone.
    """
    return _SHARED.sub(_rewrite_shared, text)


def _kernel_headers(source: Path, include_dirs) -> dict[str, Path]:
    """The kernel headers ``source`` reaches, each by its path relative to the first include folder
    holding it: where its rewritten copy goes, beside the unit, for ``#include "..."`` to find."""
    headers = {}
    for path in included_headers(source, include_dirs).values():
        if path is None:
            continue  # found nowhere: the compiler will say so
        folder = next((d for d in include_dirs if path.is_relative_to(Path(d).resolve())), None)
        if folder is None:
            raise CompileError(f"dlgpu harness: {source} includes {path}, outside its kernel folders "
                               f"({', '.join(map(str, include_dirs))})")
        headers.setdefault(str(path.relative_to(Path(folder).resolve())), path)
    return headers


def translation_unit(source_path: Path, bounds: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """The C++ that g++ compiles for a family: the rewritten source and one export per kernel
    (``bounds``: the family's kernels and their launch bounds; None reads them from the source text)."""
    text = source_path.read_text()
    bounds = launch_bounds(text) if bounds is None else bounds
    names = list(bounds)
    if not names:
        raise CompileError(f'dlgpu harness: {source_path} defines no extern "C" __global__ kernel')
    rows = ['#include "cuda_host.h"', f'#line 1 "{source_path}"', rewrite_shared(text)]
    rows.append('#line 1 "<dlgpu harness exports>"')
    rows += [f"DLGPU_EXPORT_KERNEL({name}, {bounds[name]})" for name in names]
    rows.append("#ifdef DLGPU_RUNNER_MAIN")
    rows.append("static const dlgpu_host::KernelEntry dlgpu_kernels[] = {")
    rows += [f'    {{"{name}", dlgpu_launch_{name}}},' for name in names]
    rows.append("};")
    rows.append("int main(int argc, char** argv)")
    rows.append("{ return dlgpu_host::runner_main(argc, argv, dlgpu_kernels, sizeof dlgpu_kernels / sizeof *dlgpu_kernels); }")
    rows.append("#endif")
    return "\n".join(rows) + "\n", names


class _Build:
    def __init__(self, path: Path, names: list[str], mode: str, clusters: dict[str, tuple[int, int, int]]):
        self.path, self.names, self.mode, self.clusters = path, names, mode, clusters
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
    headers = _kernel_headers(source, include_dirs)
    # The headers cuda_host.h itself includes (cuda_host_sm90.h): part of the key, used as they are.
    host_headers = sorted(p for p in included_headers(HEADER, [HEADER.parent]).values() if p is not None)
    # An edited source or header (its mtime) makes a new build, within one process too.
    stamps = tuple((str(path), path.stat().st_mtime_ns) for path in (source, HEADER, *headers.values(), *host_headers))
    key_in_memory = (stamps, defines, mode, str(cache_dir))
    with _build_lock:
        if key_in_memory in _builds:
            return _builds[key_in_memory]
        cxx = find_compiler()
        folder = Path(cache_dir) if cache_dir else compiler.default_cache_dir() / "harness"
        define_flags, include_flags = _source_flags(source, defines, kernels_dir, cache_dir)
        expanded = _preprocessed(cxx, source, [*_COMMON_FLAGS, *define_flags, *include_flags])
        unit, names = translation_unit(source, launch_bounds(expanded))
        flags = [*_COMMON_FLAGS, *_MODE_FLAGS[mode], *define_flags, *include_flags]
        # The included headers are rewritten like the source and compiled from copies beside the
        # unit, where #include "..." looks first.
        rewritten = {name: f'#line 1 "{path}"\n' + rewrite_shared(path.read_text()) for name, path in headers.items()}
        digest = hashlib.sha256()
        # The unit carries the source and the generated exports; the flags, everything else.
        for part in (_compiler_identity(cxx), " ".join(flags), unit, HEADER.read_text(), *_STUBS.values()):
            digest.update(part.encode() + b"\0")
        for name in sorted(rewritten):
            digest.update(name.encode() + b"\0" + rewritten[name].encode() + b"\0")
        for path in host_headers:
            digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
        stem = f"{family}-{mode}-{digest.hexdigest()[:24]}"
        target = folder / (stem + (".so" if mode == "plain" else ".exe"))
        if not target.exists():
            _compile(cxx, flags, unit, rewritten, folder, stem, target, family, mode)
        result = _Build(target, names, mode, cluster_dims(expanded))
        _builds[key_in_memory] = result
        return result


def _compile(cxx, flags, unit, headers: dict[str, str], folder: Path, stem: str, target: Path, family: str,
             mode: str) -> None:
    with tempfile.TemporaryDirectory(dir=folder, prefix=stem + ".") as work:
        unit_path = Path(work) / f"{stem}.cpp"
        unit_path.write_text(unit)
        for name, text in headers.items():
            copy = (Path(work) / name).resolve()
            if not copy.is_relative_to(Path(work).resolve()):
                raise CompileError(f'dlgpu harness: #include "{name}" leaves the source folder; include by name')
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(text)
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


def _run_in_process(build: _Build, launch: Launch, codes: str, where: str, options: tuple[int, ...]) -> None:
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
    error = ctypes.create_string_buffer(2048)
    launch_options = (ctypes.c_ulonglong * len(options))(*options)
    with _launch_lock:
        status = function(codes.encode(), grid, block, ctypes.c_size_t(launch.shared_mem), launch_options, pointers,
                          error, ctypes.c_size_t(len(error)))
    if status != 0:
        raise HarnessError(f"dlgpu harness: {where} (plain, block order seed {options[0]}): {error.value.decode()}")


def _pack_launch(launch: Launch, codes: str, options: tuple[int, ...]) -> tuple[bytes, list[tuple[int, int]]]:
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
    out += [u64(int(v)) for v in (*launch.grid, *launch.block, launch.shared_mem, *options)]
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


def _run_in_child(build: _Build, launch: Launch, codes: str, where: str, options: tuple[int, ...]) -> None:
    payload, buffers = _pack_launch(launch, codes, options)
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
            raise HarnessError(f"dlgpu harness: {where} ({build.mode}, block order seed {options[0]}) failed with "
                               f"exit code {result.returncode}", head)
        data = result_file.read_bytes()
    offset = 0
    for address, size in buffers:
        ctypes.memmove(address, data[offset:offset + size], size)
        offset += size


# ---------------------------------------------------------------- the executor


class PoisonedArrays:
    """An array module -- NumPy for the harness, CuPy for the GPU tests -- except that ``empty`` and
    ``empty_like`` fill every byte with 0xFF -- NaN for the floats and for the unsigned integers that carry
    bf16/fp16/f32 bits, -1 for signed integers -- so that an element no kernel writes shows in the
    result.  The launchers allocate through ``executor.xp``."""

    def __init__(self, xp):
        self._xp = xp

    def __getattr__(self, name):
        return getattr(self._xp, name)

    def empty(self, shape, dtype=float, order="C"):
        return _poison(self._xp.empty(shape, dtype, order))

    def empty_like(self, prototype, dtype=None, order="K", shape=None):
        return _poison(self._xp.empty_like(prototype, dtype=dtype, order=order, shape=shape))


def _poison(array):
    """Every byte of ``array`` 0xFF, written through an unsigned view of its bits: no conversion of a
    NaN into a dtype the array module may not convert to (ml_dtypes' bfloat16 on CuPy)."""
    size = array.dtype.itemsize
    if size in (1, 2, 4, 8):
        array.view(np.dtype(f"u{size}")).fill(np.iinfo(f"u{size}").max)
    else:  # no unsigned type that wide (complex128): the pattern read back as the array's own dtype
        array.fill(np.frombuffer(b"\xff" * size, array.dtype)[0])
    return array


class HarnessExecutor:
    """Carries out launches on NumPy arrays by running the kernels on the CPU.

    ``xp`` is NumPy with poisoned ``empty`` (see :class:`PoisonedArrays`).
    ``multiprocessor_count`` (None: the launchers' fallback) is what launchers that
    size grids by the device see; a small one makes grid-stride loops take several trips.
    ``compute_capability`` (None: any) is the device the launchers plan for: 90 makes them pick
    the sm_90-only variants (wgmma) as they would on an H100, 80 rules those out.
    ``seed`` (None: ``$DLGPU_HARNESS_SEED``, else :data:`DEFAULT_SEED`) shuffles the order in
    which every launch's blocks start; a failure names it, so the run can be repeated.
    ``resident_blocks`` blocks run at the same time (ThreadSanitizer sees races between them).
    ``launched`` collects (family, kernel) of every launch made, so that a test can
    prove which kernels it exercised.
    """

    def __init__(self, mode: str = "plain", *, kernels_dir=None, cache_dir=None, multiprocessor_count=None,
                 seed: int | None = None, resident_blocks: int = RESIDENT_BLOCKS, compute_capability=None):
        if mode not in MODES:
            raise ArgumentError(f"dlgpu harness: mode must be one of {MODES}, got {mode!r}")
        if resident_blocks < 1:
            raise ArgumentError(f"dlgpu harness: resident_blocks must be >= 1, got {resident_blocks}")
        self.xp: Any = PoisonedArrays(np)
        self.mode = mode
        self.multiprocessor_count = multiprocessor_count
        self.compute_capability = compute_capability
        self.seed = int(os.environ.get("DLGPU_HARNESS_SEED", DEFAULT_SEED)) if seed is None else int(seed)
        self.resident_blocks = resident_blocks
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
        check_shared_memory(launch, f"dlgpu harness: launch of {where}")
        codes = _argument_codes(launch.args, where)
        built = build(launch.family, launch.defines, self.mode, self._kernels_dir, self._cache_dir)
        if launch.kernel not in built.names:
            raise ArgumentError(f"dlgpu harness: {launch.family}.cu has no kernel {launch.kernel!r}; "
                                f"it has {', '.join(built.names)}")
        declared = built.clusters.get(launch.kernel, (1, 1, 1))
        if tuple(int(c) for c in launch.cluster) != declared:
            raise ArgumentError(f"dlgpu harness: launch of {where}: cluster {tuple(launch.cluster)}, but the kernel "
                                f"declares __cluster_dims__{declared}")
        # cuda_host.h's LaunchOptions, in order.
        options = (self.seed % 2**64, shared_memory_limit(launch), SHARED_STATIC_LIMIT, self.resident_blocks,
                   *declared)
        if self.mode == "plain":
            _run_in_process(built, launch, codes, where, options)
        else:
            _run_in_child(built, launch, codes, where, options)
        self.launched.add((launch.family, launch.kernel))


class RecordingExecutor:
    """Any executor, keeping every :class:`Launch` it passes on: which kernels ran and on which arrays, so
    that a test can prove an operand was read where it lies (no copy) or that a pass ran once."""

    def __init__(self, executor):
        self.executor, self.launches = executor, []

    def __getattr__(self, name):
        return getattr(self.executor, name)

    def launch(self, launch: Launch) -> None:
        self.launches.append(launch)
        self.executor.launch(launch)

    def of(self, family: str) -> list[Launch]:
        return [launch for launch in self.launches if launch.family == family]


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
