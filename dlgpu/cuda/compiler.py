"""The one place kernel sources are read and compiled: NVRTC -> cubin, with a disk cache.

``compile_family("elementwise", arch="sm_90a", defines={"BLOCK": 256})``
reads ``kernels/elementwise.cu``, compiles it with NVRTC
(``cuda.bindings.nvrtc``) and returns a :class:`CompiledModule`: the cubin,
ptxas's resource report per kernel and NVRTC's log.  The same call serves a
launch on a GPU (:mod:`dlgpu.cuda.executor`) and the offline build
``dlgpu compile`` on a machine without one.

Options, always: ``-std=c++17 --gpu-architecture=<arch> -lineinfo
-Xptxas=-v --include-path=<kernels dir>`` and one ``-DNAME=VALUE`` per
define; plus ``--include-path=<toolkit include>`` when the CUDA runtime's
headers (``cuda_fp16.h``, ``cuda_bf16.h``) are found by cuda-pathfinder (a
wheel, $CUDA_HOME, or a system toolkit), for ``#include <...>``.  The source
is prefixed with ``#line 1 "<absolute path>"`` so NVRTC's errors name the real
file and line; a failed compile raises
:class:`dlgpu.errors.CompileError` carrying NVRTC's log.  Targets are
``sm_XX`` (a cubin; ``sm_90a`` for Hopper's wgmma) or ``compute_XX`` (PTX,
the fallback when this NVRTC does not know the device: see
:func:`target_for_device`).

Where sources come from: the ``kernels_dir`` argument, else
``$DLGPU_KERNELS_DIR``, else :func:`dlgpu.kernels_dir` (the package's own).

Disk cache: ``$DLGPU_CACHE_DIR``, else the user cache folder platformdirs
names (Linux: ``$XDG_CACHE_HOME/dlgpu``, else ``~/.cache/dlgpu``; macOS:
``~/Library/Caches/dlgpu``; Windows: ``%LOCALAPPDATA%\\dlgpu\\Cache``);
entries live in its ``nvrtc/`` folder.  The key is a
SHA-256 over the .cu bytes (with its ``#line`` prefix), every header it
includes with ``#include "..."`` (recursively, found next to the including
file or in the kernels folder), the options, the target and the NVRTC
version.  Each entry carries a checksum of its payload: a truncated or
corrupt entry is deleted and rebuilt, never trusted.  Entries are written to
a temporary file in the same folder and renamed into place, so concurrent
compiles of one key never leave a torn file.  A cache folder that cannot be
created or written falls back to memory, with one warning per process.

The first compile of a family in a process prints one line to stderr,
``dlgpu: compiling <family> for <arch> ...``.

Build configurations (for ``dlgpu compile`` and the CI compile tests): a
family whose kernels need ``-D`` defines declares each configuration it is
built with on a comment line of its own::

    // dlgpu-build: BLOCK=256 VEC=4
    // dlgpu-build: BLOCK=128 VEC=4

A family without such a line is built once with no defines.  What the SASS
of a kernel must show is declared with ``// dlgpu-sass:`` lines
(:mod:`dlgpu.cuda.sass`).

The command ``dlgpu compile`` (:mod:`dlgpu.compile`) builds every
configuration ahead of time through :func:`compile_family`, so it fills the
same cache the launches read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from dlgpu.cuda.sass import KernelResources, parse_ptxas_log
from dlgpu.errors import BackendUnavailableError, CompileError, install_hint
from dlgpu.kernel_files import included_headers as header_paths

# The targets the package claims: built and checked in CI for each of them.
DEFAULT_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90a")

BASE_OPTIONS = ("-std=c++17", "-lineinfo")

_CACHE_FORMAT = 1  # bump when the entry layout or the key's recipe changes


# ---------------------------------------------------------------- NVRTC


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackendUnavailableError(
            f"dlgpu: compiling kernels needs NVRTC from cuda-python; {install_hint('cuda13')} "
            "(extra cuda12 for a CUDA 12 driver, compile without a GPU)"
        ) from exc
    return nvrtc


def _check(result, what: str):
    """Unpack a cuda.bindings return tuple, raising on a non-success code."""
    nvrtc = _nvrtc()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise CompileError(f"dlgpu: {what} failed: {err.name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


_VERSION: tuple[int, int] | None = None
_SUPPORTED: tuple[int, ...] | None = None


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library in use."""
    global _VERSION
    if _VERSION is None:
        _VERSION = tuple(_check(_nvrtc().nvrtcVersion(), "nvrtcVersion"))
    return _VERSION


def supported_archs() -> tuple[int, ...]:
    """The SM numbers this NVRTC can emit cubins for (80 for sm_80, 90 for sm_90, ...)."""
    global _SUPPORTED
    if _SUPPORTED is None:
        _SUPPORTED = tuple(_check(_nvrtc().nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))
    return _SUPPORTED


_ARCH = re.compile(r"^(sm|compute)_(\d+)([af]?)$")


def parse_arch(arch: str) -> tuple[str, int, str]:
    """``"sm_90a"`` -> ("sm", 90, "a"); rejects anything NVRTC would not take."""
    m = _ARCH.match(arch)
    if not m:
        raise CompileError(
            f"dlgpu: target {arch!r} is not of the form sm_XX, sm_XXa or compute_XX"
        )
    kind, number, suffix = m.group(1), int(m.group(2)), m.group(3)
    if number not in supported_archs():
        known = ", ".join(f"sm_{n}" for n in supported_archs())
        raise CompileError(
            f"dlgpu: NVRTC {'.'.join(map(str, nvrtc_version()))} cannot target {arch!r}; "
            f"it knows {known}"
        )
    return kind, number, suffix


def target_for_device(compute_capability: int) -> str:
    """The target to compile for a device of this compute capability (90 for 9.0).

    A cubin for the device's own SM when NVRTC knows it (Hopper gets
    ``sm_90a``, so kernels may use wgmma).  Otherwise PTX for the newest
    virtual architecture NVRTC knows that the device can run, which the
    driver compiles at load time; that is slower to load and never checked
    in CI, hence a warning.
    """
    known = supported_archs()
    if compute_capability in known:
        return "sm_90a" if compute_capability == 90 else f"sm_{compute_capability}"
    older = [n for n in known if n <= compute_capability]
    if not older:
        raise BackendUnavailableError(
            f"dlgpu: this NVRTC cannot compile for compute capability "
            f"{compute_capability // 10}.{compute_capability % 10} (oldest known: sm_{known[0]})"
        )
    target = f"compute_{max(older)}"
    warnings.warn(
        f"dlgpu: NVRTC {'.'.join(map(str, nvrtc_version()))} does not know sm_{compute_capability}; "
        f"compiling PTX for {target}, which the driver translates at load time",
        RuntimeWarning,
        stacklevel=2,
    )
    return target


# ---------------------------------------------------------------- sources


def kernels_root(kernels_dir: str | os.PathLike | None = None) -> Path:
    """The folder of .cu sources: the argument, $DLGPU_KERNELS_DIR, or the package's."""
    if kernels_dir is not None:
        return Path(kernels_dir).resolve()
    if os.environ.get("DLGPU_KERNELS_DIR"):
        return Path(os.environ["DLGPU_KERNELS_DIR"]).resolve()
    from dlgpu.kernel_files import kernels_dir as package_kernels_dir

    return package_kernels_dir().resolve()


def families(kernels_dir: str | os.PathLike | None = None) -> list[str]:
    """Every kernel family: the stems of kernels/*.cu, sorted."""
    return sorted(p.stem for p in kernels_root(kernels_dir).glob("*.cu"))


def source_path(family: str, kernels_dir: str | os.PathLike | None = None) -> Path:
    root = kernels_root(kernels_dir)
    path = root / f"{family}.cu"
    if not re.fullmatch(r"[A-Za-z0-9_]+", family) or not path.is_file():
        raise CompileError(
            f"dlgpu: no kernel family {family!r}: {path} does not exist "
            f"(families: {', '.join(families(root)) or 'none'})"
        )
    return path


def included_headers(path: Path, kernels_dir: Path) -> list[tuple[str, bytes | None]]:
    """Every header ``path`` reaches through ``#include "..."`` (next to the including file, then in the
    kernels folder, as NVRTC's ``--include-path``), with its bytes; None for a header found nowhere."""
    headers = header_paths(path, [kernels_dir])
    return sorted((key, None if header is None else header.read_bytes()) for key, header in headers.items())


_BUILD_MARKER = re.compile(r"^\s*//\s*dlgpu-build:(.*)$", re.MULTILINE)


def build_configurations(source: str) -> list[tuple[tuple[str, str], ...]]:
    """The define sets of a source's ``// dlgpu-build:`` lines; ``[()]`` when it has none."""
    configs = []
    for body in _BUILD_MARKER.findall(source):
        pairs = []
        for token in body.split():
            name, sep, value = token.partition("=")
            if not sep or not name:
                raise CompileError(
                    f"dlgpu: '// dlgpu-build:' wants NAME=VALUE pairs, got {token!r}"
                )
            pairs.append((name, value))
        configs.append(normalize_defines(pairs))
    return configs or [()]


def normalize_defines(defines) -> tuple[tuple[str, str], ...]:
    """Defines as sorted (name, value-string) pairs; a mapping or pairs are accepted."""
    items = defines.items() if isinstance(defines, Mapping) else defines
    result: dict[str, str] = {}
    for name, value in items:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)):
            raise CompileError(f"dlgpu: define name {name!r} is not a C identifier")
        if name in result:
            raise CompileError(f"dlgpu: define {name!r} given twice")
        result[name] = str(value)
    return tuple(sorted(result.items()))


# ---------------------------------------------------------------- the compiled module


@dataclasses.dataclass(frozen=True)
class CompiledModule:
    """One family compiled for one target with one set of defines."""

    family: str
    arch: str  # "sm_90a" (cubin) or "compute_90" (PTX)
    defines: tuple[tuple[str, str], ...]
    options: tuple[str, ...]
    image: bytes  # the cubin, or NUL-terminated PTX when kind == "ptx"
    kind: str  # "cubin" or "ptx"
    log: str  # NVRTC's log, with ptxas's verbose report for a cubin
    resources: dict[str, KernelResources]  # per entry function; empty for PTX
    source: Path
    key: str
    from_cache: bool = False

    @property
    def kernels(self) -> list[str]:
        return sorted(self.resources)


# ---------------------------------------------------------------- disk cache


def default_cache_dir() -> Path:
    """$DLGPU_CACHE_DIR, else the platform's user cache folder for dlgpu (platformdirs)."""
    if os.environ.get("DLGPU_CACHE_DIR"):
        return Path(os.environ["DLGPU_CACHE_DIR"])
    import platformdirs

    # appauthor=False: no vendor folder on Windows (%LOCALAPPDATA%\dlgpu\Cache)
    return Path(platformdirs.user_cache_dir("dlgpu", appauthor=False))


_MAGIC = b"DLGPUKC\x01"
_HEADER = struct.Struct(">8sQ32s")  # magic, payload length, sha256(payload)
_READONLY_WARNED = False
_WARN_LOCK = threading.Lock()


def _warn_memory_only(folder: Path, exc: OSError) -> None:
    global _READONLY_WARNED
    with _WARN_LOCK:
        if _READONLY_WARNED:
            return
        _READONLY_WARNED = True
    warnings.warn(
        f"dlgpu: kernel cache folder {folder} is not writable ({exc.strerror or exc}); "
        "compiled kernels are kept in memory for this process only "
        "(set DLGPU_CACHE_DIR to a writable folder)",
        RuntimeWarning,
        stacklevel=4,
    )


class KernelCache:
    """Compiled images on disk, keyed by content; memory when the disk cannot be written."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.folder = self.root / "nvrtc"
        self.memory: dict[str, bytes] = {}
        self.disk = True

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.bin"

    def load(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or None (a damaged entry is deleted)."""
        if key in self.memory:
            return self.memory[key]
        path = self.path(key)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        payload = _unseal(blob)
        if payload is None:
            try:
                path.unlink()
            except OSError:
                pass
        return payload

    def store(self, key: str, payload: bytes) -> None:
        if self.disk:
            try:
                self._write(key, _seal(payload))
                return
            except OSError as exc:
                self.disk = False
                _warn_memory_only(self.folder, exc)
        self.memory[key] = payload

    def _write(self, key: str, blob: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _seal(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


def _unseal(blob: bytes) -> bytes | None:
    if len(blob) < _HEADER.size:
        return None
    magic, length, digest = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size :]
    if magic != _MAGIC or length != len(payload) or hashlib.sha256(payload).digest() != digest:
        return None
    return payload


_CACHES: dict[Path, KernelCache] = {}


def default_cache() -> KernelCache:
    """The process's cache for the current $DLGPU_CACHE_DIR (one object per folder)."""
    root = default_cache_dir()
    if root not in _CACHES:
        _CACHES[root] = KernelCache(root)
    return _CACHES[root]


def _pack(image: bytes, kind: str, log: str) -> bytes:
    meta = json.dumps({"kind": kind, "log": log}).encode()
    return struct.pack(">I", len(meta)) + meta + image


def _unpack(payload: bytes) -> tuple[bytes, str, str]:
    (n,) = struct.unpack_from(">I", payload)
    meta = json.loads(payload[4 : 4 + n])
    return payload[4 + n :], meta["kind"], meta["log"]


# ---------------------------------------------------------------- compile


_ANNOUNCED: set[str] = set()
_ANNOUNCE_LOCK = threading.Lock()


def _announce(family: str, arch: str) -> None:
    with _ANNOUNCE_LOCK:
        if family in _ANNOUNCED:
            return
        _ANNOUNCED.add(family)
    print(f"dlgpu: compiling {family} for {arch} ...", file=sys.stderr, flush=True)


_TOOLKIT_INCLUDE: list[str] | None = None


def toolkit_include_dirs() -> list[str]:
    """The CUDA runtime's header folder, when one is installed (for cuda_fp16.h and kin)."""
    global _TOOLKIT_INCLUDE
    if _TOOLKIT_INCLUDE is None:
        _TOOLKIT_INCLUDE = []
        try:
            from cuda.pathfinder import find_nvidia_header_directory

            found = find_nvidia_header_directory("cudart")
        except Exception:  # pathfinder missing or too old: angle includes just fail in NVRTC
            found = None
        if found and (Path(found) / "cuda_fp16.h").is_file():
            _TOOLKIT_INCLUDE.append(str(Path(found).resolve()))
    return _TOOLKIT_INCLUDE


def compile_options(arch: str, defines, kernels_dir: Path, extra: Iterable[str] = ()) -> tuple[str, ...]:
    kind, _, _ = parse_arch(arch)
    options = [*BASE_OPTIONS, f"--gpu-architecture={arch}", f"--include-path={kernels_dir}"]
    options += [f"--include-path={folder}" for folder in toolkit_include_dirs()]
    if kind == "sm":
        options.append("-Xptxas=-v")  # the resource report; ptxas runs only for a cubin
    options += [f"-D{name}={value}" for name, value in defines]
    options += list(extra)
    return tuple(options)


def cache_key(source: bytes, headers, options, arch: str) -> str:
    digest = hashlib.sha256()

    def part(data: bytes) -> None:
        digest.update(struct.pack(">Q", len(data)))
        digest.update(data)

    part(f"dlgpu-cache-{_CACHE_FORMAT}".encode())
    part(".".join(map(str, nvrtc_version())).encode())
    part(arch.encode())
    part(source)
    for name, data in headers:
        part(name.encode())
        part(b"\0missing" if data is None else data)
    for option in options:
        part(option.encode())
    return digest.hexdigest()


def compile_family(
    family: str,
    *,
    arch: str,
    defines=(),
    kernels_dir: str | os.PathLike | None = None,
    extra_options: Iterable[str] = (),
    cache: KernelCache | None = None,
    announce: bool = True,
) -> CompiledModule:
    """Compile ``kernels/<family>.cu`` for ``arch`` (``sm_XX`` -> cubin, ``compute_XX`` -> PTX).

    ``defines`` (mapping or (name, value) pairs) become ``-DNAME=VALUE``.
    Served from the cache when source, headers, options, target and NVRTC
    are unchanged.  Raises :class:`CompileError` with NVRTC's log.
    """
    request = _Request(family, arch, defines, kernels_dir, extra_options)
    cache = cache if cache is not None else default_cache()
    cached = request.from_cache(cache)
    if cached is not None:
        return cached

    if announce:
        _announce(family, arch)
    image, log = _nvrtc_compile(request.text, request.path, request.options, request.kind,
                                what=f"{family} for {arch}")
    cache.store(request.key, _pack(image, request.kind, log))
    return request.module(image, request.kind, log, from_cache=False)


def cached_module(
    family: str,
    *,
    arch: str,
    defines=(),
    kernels_dir: str | os.PathLike | None = None,
    extra_options: Iterable[str] = (),
    cache: KernelCache | None = None,
) -> CompiledModule | None:
    """What :func:`compile_family` would return from the cache, or None when it would have to compile."""
    request = _Request(family, arch, defines, kernels_dir, extra_options)
    return request.from_cache(cache if cache is not None else default_cache())


class _Request:
    """One family x target x defines: its source text, options and cache key."""

    def __init__(self, family: str, arch: str, defines, kernels_dir, extra_options: Iterable[str]):
        root = kernels_root(kernels_dir)
        self.family, self.arch = family, arch
        self.path = source_path(family, root)
        self.defines = normalize_defines(defines)
        self.options = compile_options(arch, self.defines, root, extra_options)
        self.kind = "ptx" if arch.startswith("compute_") else "cubin"
        # The #line prefix is part of the source NVRTC sees, so of the key as well.
        self.text = f'#line 1 "{_c_string(str(self.path))}"\n'.encode() + self.path.read_bytes()
        self.key = cache_key(self.text, included_headers(self.path, root), self.options, arch)

    def module(self, image: bytes, kind: str, log: str, *, from_cache: bool) -> CompiledModule:
        return CompiledModule(
            self.family, self.arch, self.defines, self.options, image, kind, log,
            parse_ptxas_log(log), self.path, self.key, from_cache=from_cache,
        )  # fmt: skip

    def from_cache(self, cache: KernelCache) -> CompiledModule | None:
        payload = cache.load(self.key)
        if payload is None:
            return None
        image, kind, log = _unpack(payload)
        return self.module(image, kind, log, from_cache=True)


def _c_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _nvrtc_compile(
    source: bytes, path: Path, options: tuple[str, ...], kind: str, what: str
) -> tuple[bytes, str]:
    nvrtc = _nvrtc()
    prog = _check(nvrtc.nvrtcCreateProgram(source, str(path).encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        encoded = [o.encode() for o in options]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(encoded), encoded)
        size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buffer = b" " * size
        _check(nvrtc.nvrtcGetProgramLog(prog, buffer), "nvrtcGetProgramLog")
        log = buffer.rstrip(b"\0").decode(errors="replace").strip()
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CompileError(
                f"dlgpu: NVRTC could not compile {path} ({what}; {status.name}); "
                f"options: {' '.join(options)}",
                log,
            )
        if kind == "cubin":
            size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
            image = b" " * size
            _check(nvrtc.nvrtcGetCUBIN(prog, image), "nvrtcGetCUBIN")
        else:
            size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
            image = b" " * size
            _check(nvrtc.nvrtcGetPTX(prog, image), "nvrtcGetPTX")
        return image, log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
