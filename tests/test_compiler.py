"""The compile pipeline without a GPU: NVRTC, the disk cache, the resource and SASS
reports, and the CuPy executor against a stand-in for CuPy (``dlgpu compile`` itself:
tests/test_compile_command.py).

Kernels here are small ones written into a temporary kernels folder, so these
tests do not depend on what kernels/ holds (tests/test_kernels_compile.py
checks those).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dlgpu.cuda import compiler, executor, sass
from dlgpu.cuda.launch import Launch
from dlgpu.errors import ArgumentError, BackendUnavailableError, CompileError, DeviceError

INNER = """\
#pragma once
__device__ inline float scale_of() { return 2.0f; }
"""

COMMON = """\
#pragma once
#include "inner.cuh"
__device__ inline float twice(float x) { return scale_of() * x; }
"""

DEMO = """\
// demo: a vectorized copy and a block sum, for the compiler's tests
// dlgpu-build: VEC=4
// dlgpu-build: VEC=2
// dlgpu-sass: copy4 LDG.E.128 STG.E.128
// dlgpu-sass: block_sum BAR
#include "common.cuh"
extern "C" __global__ void copy4(const float4* __restrict__ a, float4* __restrict__ b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { float4 v = a[i]; v.x = twice(v.x); b[i] = v; }
}
extern "C" __global__ void block_sum(const float* x, float* y) {
    __shared__ float s[256];
    s[threadIdx.x] = x[threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int k = 0; k < 256; ++k) t += s[k];
        y[0] = t * VEC;
    }
}
"""

BROKEN_LINE = 4
BROKEN = """\
// a kernel with a type error on line 4
extern "C" __global__ void broken(float* x) {
    int i = threadIdx.x;
    x[i] = undeclared_name * 2.0f;
}
"""


@pytest.fixture
def kdir(tmp_path) -> Path:
    folder = tmp_path / "kernels"
    folder.mkdir()
    (folder / "inner.cuh").write_text(INNER)
    (folder / "common.cuh").write_text(COMMON)
    (folder / "demo.cu").write_text(DEMO)
    return folder


@pytest.fixture
def cache(tmp_path) -> compiler.KernelCache:
    return compiler.KernelCache(tmp_path / "cache")


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each test sees the once-per-process messages as not yet given."""
    monkeypatch.setattr(compiler, "_ANNOUNCED", set())
    monkeypatch.setattr(compiler, "_READONLY_WARNED", False)
    monkeypatch.setattr(compiler, "_CACHES", {})


def build(kdir, cache, family="demo", arch="sm_90a", defines=(("VEC", "4"),), **kw):
    return compiler.compile_family(
        family, arch=arch, defines=defines, kernels_dir=kdir, cache=cache, announce=False, **kw
    )


# ---------------------------------------------------------------- compile and cache


def test_compile_reports_resources_per_kernel(kdir, cache):
    module = build(kdir, cache)
    assert module.kind == "cubin" and module.image[:4] == b"\x7fELF"
    assert module.kernels == ["block_sum", "copy4"]
    assert module.resources["block_sum"].shared_static == 1024
    assert module.resources["block_sum"].barriers == 1
    assert module.resources["copy4"].registers > 0
    assert all(r.spill_bytes == 0 and r.stack_frame == 0 for r in module.resources.values())
    assert "--gpu-architecture=sm_90a" in module.options and "-DVEC=4" in module.options
    assert "-lineinfo" in module.options and "-std=c++17" in module.options


def test_cache_miss_then_hit_without_nvrtc(kdir, cache, monkeypatch):
    first = build(kdir, cache)
    assert not first.from_cache
    assert cache.path(first.key).is_file()

    def no_compile(*args, **kwargs):
        raise AssertionError("a cache hit must not run NVRTC")

    monkeypatch.setattr(compiler, "_nvrtc_compile", no_compile)
    second = build(kdir, cache)
    assert second.from_cache
    assert second.key == first.key and second.image == first.image
    assert second.resources == first.resources and second.log == first.log


def test_key_covers_defines_arch_and_source(kdir, cache):
    base = build(kdir, cache)
    assert build(kdir, cache, defines={"VEC": 2}).key != base.key
    assert build(kdir, cache, arch="sm_80").key != base.key
    (kdir / "demo.cu").write_text(DEMO + "\n// an edit\n")
    edited = build(kdir, cache)
    assert edited.key != base.key and not edited.from_cache


@pytest.mark.parametrize(
    "header, old, new",
    [("common.cuh", "scale_of() * x", "scale_of() * x + 1.0f"), ("inner.cuh", "2.0f", "3.0f")],
)
def test_key_changes_when_an_included_header_changes(kdir, cache, header, old, new):
    before = build(kdir, cache)
    path = kdir / header
    path.write_text(path.read_text().replace(old, new))
    after = build(kdir, cache)
    assert after.key != before.key
    assert not after.from_cache
    assert after.image != before.image  # the new constant reached the cubin


def test_included_headers_are_found_recursively(kdir):
    found = dict(compiler.included_headers(kdir / "demo.cu", kdir))
    assert set(found) == {str(kdir / "common.cuh"), str(kdir / "inner.cuh")}
    assert found[str(kdir / "inner.cuh")] == INNER.encode()


def _truncate_half(blob):
    return blob[: len(blob) // 2]


def _truncate_into_header(blob):
    return blob[:10]


def _empty(blob):
    return b""


def _flip_payload_byte(blob):
    at = len(blob) - 100
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


def _flip_digest_byte(blob):
    return blob[:20] + bytes([blob[20] ^ 0x80]) + blob[21:]


def _append_garbage(blob):
    return blob + b"\0\0\0"


@pytest.mark.parametrize(
    "damage",
    [_truncate_half, _truncate_into_header, _empty, _flip_payload_byte, _flip_digest_byte, _append_garbage],
)
def test_damaged_entry_is_detected_deleted_and_rebuilt(kdir, cache, damage):
    good = build(kdir, cache)
    path = cache.path(good.key)
    sound = path.read_bytes()
    damaged = damage(sound)
    assert damaged != sound

    path.write_bytes(damaged)
    assert cache.load(good.key) is None
    assert not path.exists()  # the damaged entry was removed, not left to fail again

    path.write_bytes(damaged)
    rebuilt = build(kdir, cache)
    assert not rebuilt.from_cache
    assert rebuilt.image == good.image
    assert compiler._unseal(path.read_bytes()) is not None  # a sound entry again
    assert build(kdir, cache).from_cache


def _deny_writes(monkeypatch, cache):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(compiler.tempfile, "mkstemp", refuse)


def _uncreatable(monkeypatch, cache):
    cache.root.parent.mkdir(parents=True, exist_ok=True)
    cache.root.write_text("a file where the cache folder should be")


@pytest.mark.parametrize("make_unwritable", [_deny_writes, _uncreatable])
def test_unwritable_cache_falls_back_to_memory_with_one_warning(
    kdir, cache, monkeypatch, make_unwritable
):
    make_unwritable(monkeypatch, cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = build(kdir, cache)
        other = build(kdir, cache, defines={"VEC": 2})
        again = build(kdir, cache)
        second_cache = compiler.KernelCache(cache.root)  # another cache, same process
        compiler.compile_family(
            "demo", arch="sm_80", defines={"VEC": 4}, kernels_dir=kdir, cache=second_cache, announce=False
        )
    ours = [w for w in caught if "kernel cache folder" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert str(cache.folder) in str(ours[0].message)
    assert not first.from_cache and not other.from_cache
    assert again.from_cache and again.image == first.image
    assert not cache.disk and first.key in cache.memory


def _compile_in_child(kdir, cache_root, barrier, results):
    """Runs in a spawned process: compile the same key as its sibling, at the same moment."""
    barrier.wait()
    module = compiler.compile_family(
        "demo", arch="sm_90a", defines={"VEC": 4}, kernels_dir=kdir,
        cache=compiler.KernelCache(cache_root), announce=False,
    )  # fmt: skip
    results.put((module.key, hashlib.sha256(module.image).hexdigest()))


def _store_in_child(cache_root, key, fill, rounds, barrier):
    barrier.wait()
    cache = compiler.KernelCache(cache_root)
    payload = bytes([fill]) * (4 << 20)
    for _ in range(rounds):
        cache.store(key, payload)


def test_two_processes_compiling_one_key_leave_one_sound_entry(kdir, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    root = tmp_path / "shared-cache"
    procs = [ctx.Process(target=_compile_in_child, args=(kdir, root, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outcomes[0][0] == outcomes[1][0]
    key = outcomes[0][0]
    entries = list((root / "nvrtc").iterdir())
    assert [e.name for e in entries] == [f"{key}.bin"]  # no temporary file left behind
    payload = compiler._unseal(entries[0].read_bytes())
    assert payload is not None
    image, kind, _ = compiler._unpack(payload)
    assert kind == "cubin"
    assert hashlib.sha256(image).hexdigest() in {digest for _, digest in outcomes}


def test_concurrent_writers_never_expose_a_torn_entry(tmp_path):
    """Two processes rewrite one key with different 4 MiB payloads while we read it."""
    ctx = multiprocessing.get_context("spawn")
    root, key = tmp_path / "cache", "k" * 64
    barrier = ctx.Barrier(3)
    writers = [
        ctx.Process(target=_store_in_child, args=(root, key, fill, 15, barrier)) for fill in (0xAA, 0x55)
    ]
    for w in writers:
        w.start()
    barrier.wait()
    path = root / "nvrtc" / f"{key}.bin"
    reads = 0
    while any(w.is_alive() for w in writers):
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            continue
        payload = compiler._unseal(blob)
        assert payload is not None, "a reader saw a torn entry"
        assert payload in (b"\xaa" * (4 << 20), b"\x55" * (4 << 20))
        reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads > 0
    assert sorted(p.name for p in (root / "nvrtc").iterdir()) == [f"{key}.bin"]


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DLGPU_CACHE_DIR", str(tmp_path / "explicit"))
    assert compiler.default_cache_dir() == tmp_path / "explicit"
    assert compiler.default_cache().root == tmp_path / "explicit"
    monkeypatch.delenv("DLGPU_CACHE_DIR")
    import platformdirs

    assert compiler.default_cache_dir() == Path(platformdirs.user_cache_dir("dlgpu", appauthor=False))
    if not sys.platform.startswith("linux"):
        return
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compiler.default_cache_dir() == tmp_path / "xdg" / "dlgpu"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compiler.default_cache_dir() == tmp_path / "home" / ".cache" / "dlgpu"


def test_kernels_dir_from_the_environment(monkeypatch, kdir, tmp_path):
    monkeypatch.setenv("DLGPU_KERNELS_DIR", str(kdir))
    monkeypatch.setenv("DLGPU_CACHE_DIR", str(tmp_path / "env-cache"))
    assert compiler.families() == ["demo"]
    module = compiler.compile_family("demo", arch="sm_80", defines={"VEC": 4}, announce=False)
    assert module.source == kdir / "demo.cu"
    assert (tmp_path / "env-cache" / "nvrtc" / f"{module.key}.bin").is_file()


# ---------------------------------------------------------------- errors and messages


def test_compile_error_names_the_real_file_and_line(kdir, cache):
    (kdir / "broken.cu").write_text(BROKEN)
    with pytest.raises(CompileError) as info:
        build(kdir, cache, family="broken", defines=())
    message = str(info.value)
    assert f"{kdir / 'broken.cu'}({BROKEN_LINE})" in message
    assert "undeclared_name" in message
    assert "undeclared_name" in info.value.log
    assert not cache.folder.exists() or not any(cache.folder.iterdir())  # nothing cached


def test_compile_error_in_a_header_names_the_header(kdir, cache):
    (kdir / "inner.cuh").write_text(INNER + "__device__ int bad() { return not_declared; }\n")
    with pytest.raises(CompileError) as info:
        build(kdir, cache)
    assert f"{kdir / 'inner.cuh'}(3)" in str(info.value)


def test_unknown_family_and_bad_targets_are_refused(kdir, cache):
    with pytest.raises(CompileError, match="no kernel family 'nope'"):
        build(kdir, cache, family="nope")
    with pytest.raises(CompileError, match="sm_XX"):
        build(kdir, cache, arch="hopper")
    with pytest.raises(CompileError, match="cannot target 'sm_42'"):
        build(kdir, cache, arch="sm_42")
    with pytest.raises(CompileError, match="given twice"):
        compiler.normalize_defines([("A", 1), ("A", 2)])
    with pytest.raises(CompileError, match="C identifier"):
        compiler.normalize_defines({"1X": 0})


def test_first_compile_of_a_family_says_so_once(kdir, cache, capsys):
    (kdir / "other.cu").write_text('extern "C" __global__ void k(float* x) { x[0] = 1.0f; }\n')
    for defines in ({"VEC": 4}, {"VEC": 2}, {"VEC": 4}):
        compiler.compile_family("demo", arch="sm_80", defines=defines, kernels_dir=kdir, cache=cache)
    compiler.compile_family("other", arch="sm_80", kernels_dir=kdir, cache=cache)
    compiler.compile_family("other", arch="sm_86", kernels_dir=kdir, cache=cache)
    err = capsys.readouterr().err.splitlines()
    assert err == ["dlgpu: compiling demo for sm_80 ...", "dlgpu: compiling other for sm_80 ..."]


# ---------------------------------------------------------------- targets


@pytest.mark.parametrize("arch", compiler.DEFAULT_ARCHS)
def test_every_claimed_target_builds_with_vector_loads(kdir, cache, arch):
    module = build(kdir, cache, arch=arch)
    assert module.kernels == ["block_sum", "copy4"]
    assert f"for '{arch}'" in module.log
    listing = sass.disassemble(module.image)
    assert set(listing) == {"block_sum", "copy4"}
    requirements = sass.parse_sass_requirements(DEMO)
    assert sass.check_sass(requirements, listing, arch) == []


def test_target_for_device(recwarn):
    assert compiler.target_for_device(90) == "sm_90a"
    assert compiler.target_for_device(86) == "sm_86"
    assert compiler.target_for_device(80) == "sm_80"
    assert not recwarn.list
    unknown = max(compiler.supported_archs()) + 5
    with pytest.warns(RuntimeWarning, match="compiling PTX"):
        target = compiler.target_for_device(unknown)
    assert target == f"compute_{max(compiler.supported_archs())}"
    with pytest.raises(BackendUnavailableError, match="compute capability 6.0"):
        compiler.target_for_device(60)


def test_ptx_fallback_compiles_loadable_ptx(kdir, cache):
    module = build(kdir, cache, arch="compute_90")
    assert module.kind == "ptx"
    assert module.image.startswith(b"//") and module.image.endswith(b"\0")
    assert b".entry copy4" in module.image and b".target sm_90" in module.image
    assert module.resources == {}
    assert "-Xptxas=-v" not in module.options
    assert build(kdir, cache, arch="compute_90").from_cache


# ---------------------------------------------------------------- reports and markers


PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'spilly' for 'sm_80'
ptxas info    : Function properties for spilly
ptxas         .     48 bytes stack frame, 40 bytes spill stores, 36 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 4096 bytes smem, 368 bytes cmem[0]
ptxas info    : Function properties for _Z6helperv
ptxas         .     16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'clean' for 'sm_80'
ptxas info    : Function properties for clean
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
"""


def test_parse_ptxas_log():
    found = sass.parse_ptxas_log(PTXAS_LOG)
    assert set(found) == {"spilly", "clean"}
    spilly = found["spilly"]
    assert (spilly.registers, spilly.spill_stores, spilly.spill_loads) == (255, 40, 36)
    assert (spilly.stack_frame, spilly.shared_static, spilly.barriers) == (48, 4096, 1)
    assert spilly.spill_bytes == 76
    assert found["clean"] == sass.KernelResources("clean", registers=12)


def test_build_configurations():
    assert compiler.build_configurations(DEMO) == [(("VEC", "4"),), (("VEC", "2"),)]
    assert compiler.build_configurations("// no markers\n") == [()]
    text = "// dlgpu-build: TILE_M=64 TILE_N=128\n"
    assert compiler.build_configurations(text) == [(("TILE_M", "64"), ("TILE_N", "128"))]
    with pytest.raises(CompileError, match="NAME=VALUE"):
        compiler.build_configurations("// dlgpu-build: JUSTANAME\n")


def test_sass_requirement_markers():
    reqs = sass.parse_sass_requirements(
        "// dlgpu-sass: relu_* LDG.E.128 STG.E.128\n"
        "int x;\n"
        "// dlgpu-sass: gemm_tc arch=sm_90a HGMMA !HMMA\n"
    )
    assert reqs[0] == sass.SassRequirement("relu_*", ("LDG.E.128", "STG.E.128"), ("LDL", "STL"), (), 1)
    assert reqs[1].archs == ("sm_90a",) and reqs[1].forbidden == ("HMMA", "LDL", "STL")
    assert reqs[1].line == 3
    listing = {
        "relu_fwd": ["LDG.E.128.CONSTANT", "FMNMX", "STG.E.128"],
        "relu_bwd": ["LDG.E", "STL", "STG.E.128"],
        "gemm_tc": ["HMMA.16816.F32"],
    }
    problems = sass.check_sass(reqs, listing, "sm_90a")
    assert "relu_bwd (sm_90a): no LDG.E.128 in its SASS" in problems
    assert "relu_bwd (sm_90a): 1 x STL in its SASS" in problems
    assert "gemm_tc (sm_90a): no HGMMA in its SASS" in problems
    assert "gemm_tc (sm_90a): 1 x HMMA in its SASS" in problems
    assert not any(p.startswith("relu_fwd") for p in problems)
    assert len(problems) == 4
    assert not any("gemm_tc" in p for p in sass.check_sass(reqs, listing, "sm_80"))
    assert sass.check_sass(reqs, {"other": []}, "sm_80") == [
        "dlgpu-sass line 1: no kernel matches 'relu_*' for sm_80"
    ]


@pytest.mark.parametrize(
    "opcode, pattern, expected",
    [
        ("LDG.E.128", "LDG.E.128", True),
        ("LDG.E.128.CONSTANT", "LDG.E.128", True),
        ("LDG.E.EL.128", "LDG.E.128", True),
        ("LDG.E.64", "LDG.E.128", False),
        ("LDGSTS.E.BYPASS.128", "LDG.E.128", False),
        ("BAR.SYNC.DEFER_BLOCKING", "BAR", True),
        ("LDL.LU", "LDL", True),
        ("LDS", "LDL", False),
        ("HGMMA.64x128x16.F32", "HMMA", False),
        ("STG.E", "STG.E$", True),  # "$": exactly this opcode, a 32-bit store
        ("STG.E.128", "STG.E$", False),
        ("STG.E.U16", "STG.E$", False),
        ("STG.E.128", "STG.E", True),
    ],
)
def test_opcode_matches(opcode, pattern, expected):
    assert sass.opcode_matches(opcode, pattern) is expected


def test_parse_sass_listing():
    listing = """
        Function : copy4
        /*0000*/                   LDC R1, c[0x0][0x28] ;              /* 0x00000a00ff017b82 */
                                                                       /* 0x000fe20000000800 */
        /*0050*/              @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;    /* 0x0000000602047981 */
        /*0060*/               @P1 BRA 0x110 ;
        Function : other
        /*0000*/                   EXIT ;
    """
    assert sass.parse_sass(listing) == {"copy4": ["LDC", "LDG.E.128", "BRA"], "other": ["EXIT"]}


# ---------------------------------------------------------------- the CuPy executor


def test_importing_the_pipeline_does_not_import_cupy():
    code = (
        "import sys; import dlgpu.cuda.executor, dlgpu.cuda.compiler, dlgpu.cuda.sass; "
        "assert 'cupy' not in sys.modules, 'cupy imported'; "
        "assert 'cuda.bindings.nvrtc' not in sys.modules, 'nvrtc imported'"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_default_executor_without_cupy(monkeypatch):
    monkeypatch.setattr(executor, "_DEFAULT", None)
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendUnavailableError, match="needs CuPy"):
        executor.default_executor()


class FakeCupy:
    """Just enough of CuPy's surface for the executor: devices, modules, launches."""

    def __init__(self, capabilities=("90",), device_count=None):
        fake = self
        self.capabilities = capabilities
        self.current = 0
        self.loaded = []  # (device, image)
        self.calls = []  # (kernel, grid, block, args, shared_mem, stream)
        self.attributes = []  # (kernel, attribute, value)

        class ndarray:
            def __init__(self, device=0):
                self.device = SimpleNamespace(id=device)

        class Function:
            def __init__(self, name):
                self.name, self.ptr = name, name

            def __call__(self, grid, block, args, shared_mem=0, stream=None):
                fake.calls.append((self.name, grid, block, args, shared_mem, stream))

        class Module:
            def load(self, image):
                fake.loaded.append((fake.current, image))

            def get_function(self, name):
                return Function(name)

        class Device:
            def __init__(self, index):
                self.index = index
                self.compute_capability = fake.capabilities[index]

            def __enter__(self):
                self.previous, fake.current = fake.current, self.index

            def __exit__(self, *exc):
                fake.current = self.previous

        count = len(capabilities) if device_count is None else device_count
        self.ndarray = ndarray
        self.cuda = SimpleNamespace(
            Device=Device,
            function=SimpleNamespace(Module=Module),
            runtime=SimpleNamespace(getDevice=lambda: fake.current, getDeviceCount=lambda: count),
            get_current_stream=lambda: f"stream-of-{fake.current}",
            driver=SimpleNamespace(
                CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES=8,
                funcSetAttribute=lambda ptr, attr, value: fake.attributes.append((ptr, attr, value)),
            ),
        )


@pytest.fixture
def fake_cupy(monkeypatch, kdir, cache):
    fake = FakeCupy(capabilities=("90", "86"))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    run = executor.CupyExecutor(kernels_dir=kdir, cache=cache)
    return fake, run


def demo_launch(*args, defines=(("VEC", "4"),), shared_mem=0, kernel="copy4", shared_opt_in=False):
    return Launch("demo", kernel, (3, 1, 1), (128, 1, 1), args, shared_mem, defines, shared_opt_in)


def test_executor_compiles_for_the_device_and_caches_per_device(fake_cupy):
    fake, run = fake_cupy
    assert run.xp is fake
    x = fake.ndarray(0)
    run.launch(demo_launch(x, x, np.int32(5)))
    run.launch(demo_launch(x, x, np.int32(6)))
    assert len(fake.loaded) == 1
    module, compiled = run.module("demo", {"VEC": 4}, 0)
    assert compiled.arch == "sm_90a" and fake.loaded[0] == (0, compiled.image)
    assert fake.calls[0] == ("copy4", (3, 1, 1), (128, 1, 1), (x, x, np.int32(5)), 0, "stream-of-0")
    assert fake.calls[1][3][2] == np.int32(6)

    run.launch(demo_launch(x, x, np.int32(5), defines=(("VEC", "2"),)))
    assert len(fake.loaded) == 2  # other defines, other module

    fake.current = 1
    y = fake.ndarray(1)
    run.launch(demo_launch(y, y, np.int32(5)))
    assert len(fake.loaded) == 3
    assert fake.loaded[2][0] == 1
    assert run.module("demo", {"VEC": 4}, 1)[1].arch == "sm_86"
    assert fake.calls[-1][5] == "stream-of-1"


def test_executor_falls_back_to_raw_module_from_a_file(monkeypatch, kdir, cache):
    fake = FakeCupy()
    module_class = fake.cuda.function.Module
    opened = []

    class RawModule:
        def __init__(self, path):
            opened.append(Path(path).read_bytes())

        def get_function(self, name):
            return module_class().get_function(name)

    fake.RawModule = RawModule
    fake.cuda.function = SimpleNamespace()  # a CuPy whose function module has no Module
    monkeypatch.setitem(sys.modules, "cupy", fake)
    run = executor.CupyExecutor(kernels_dir=kdir, cache=cache)
    x = fake.ndarray(0)
    run.launch(demo_launch(x, x, np.int32(3)))
    assert opened == [run.module("demo", {"VEC": 4})[1].image]
    assert fake.loaded == []  # nothing went through Module.load
    assert fake.calls[0][:2] == ("copy4", (3, 1, 1))


def test_executor_checks_arguments_before_launching(fake_cupy):
    fake, run = fake_cupy
    x = fake.ndarray(0)
    with pytest.raises(DeviceError, match="argument 1 is a NumPy array"):
        run.launch(demo_launch(x, np.zeros(4, np.float32), np.int32(1)))
    with pytest.raises(ArgumentError, match="argument 2 is int"):
        run.launch(demo_launch(x, x, 5))
    with pytest.raises(DeviceError, match="argument 0 lives on device 1"):
        run.launch(demo_launch(fake.ndarray(1), x, np.int32(1)))
    with pytest.raises(ArgumentError, match="'no_such_kernel' is not in demo.cu"):
        run.launch(demo_launch(x, x, np.int32(1), kernel="no_such_kernel"))
    with pytest.raises(ArgumentError, match="grid"):
        run.launch(Launch("demo", "copy4", (0, 1, 1), (128, 1, 1), (x,), 0, (("VEC", "4"),)))
    assert fake.calls == []


def test_executor_opts_in_to_large_dynamic_shared_memory(fake_cupy):
    fake, run = fake_cupy
    x = fake.ndarray(0)
    run.launch(demo_launch(x, x, shared_mem=16 * 1024, kernel="block_sum"))
    assert fake.attributes == []
    # Past 48 KB only a launch that says so: the device would refuse the others.
    with pytest.raises(ArgumentError, match="does not opt in"):
        run.launch(demo_launch(x, x, shared_mem=100 * 1024, kernel="block_sum"))
    run.launch(demo_launch(x, x, shared_mem=100 * 1024, kernel="block_sum", shared_opt_in=True))
    run.launch(demo_launch(x, x, shared_mem=64 * 1024, kernel="block_sum", shared_opt_in=True))
    assert fake.attributes == [("block_sum", 8, 100 * 1024)]
    with pytest.raises(ArgumentError, match="no device grants more"):
        run.launch(demo_launch(x, x, shared_mem=228 * 1024, kernel="block_sum", shared_opt_in=True))
    assert [c[4] for c in fake.calls] == [16 * 1024, 100 * 1024, 64 * 1024]


def test_default_executor_is_one_per_process_and_needs_a_gpu(monkeypatch, kdir, tmp_path):
    monkeypatch.setenv("DLGPU_KERNELS_DIR", str(kdir))
    monkeypatch.setattr(executor, "_DEFAULT", None)
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy(device_count=0))
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU"):
        executor.default_executor()
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy())
    first = executor.default_executor()
    assert executor.default_executor() is first
