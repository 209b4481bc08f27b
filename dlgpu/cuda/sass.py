"""What a compiled kernel costs: ptxas's resource report and SASS instruction counts.

Both work on a machine without a GPU.  The resource report comes from the log
NVRTC returns when ptxas runs verbosely (``-Xptxas=-v``); the SASS comes from
``cuobjdump -sass`` (PyPI: ``nvidia-cuda-cuobjdump``, which needs ``nvdisasm``
from ``nvidia-cuda-nvdisasm`` beside it or on PATH).

A kernel source states what its SASS must show with comment lines::

    // dlgpu-sass: <kernel-glob> [arch=sm_90a,...] INSTR ... [!INSTR ...]

Every kernel whose name matches the glob (``fnmatch``; ``relu_*``) must
contain each ``INSTR`` at least once and none of the ``!INSTR`` (``INSTR$``: that
opcode exactly, no further modifiers); a kernel named
by such a line must in any case use no local memory (no LDL/STL).  With
``arch=`` the line applies only to those targets (HGMMA exists only on
sm_90a).  A line whose glob matches no kernel is itself an error, so a renamed
kernel cannot silently escape its check.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dlgpu.errors import install_hint

# The instructions ``dlgpu compile --sass`` counts, in the order it prints them.
INTERESTING = ("LDG.E.128", "STG.E.128", "LDL", "STL", "HMMA", "HGMMA", "LDSM", "LDGSTS", "BAR")

# Local memory: a hot kernel must not touch it (spills, or arrays indexed at run time).
LOCAL_MEMORY = ("LDL", "STL")


# ---------------------------------------------------------------- ptxas resource report


@dataclass(frozen=True)
class KernelResources:
    """ptxas's verdict on one entry function for one target."""

    name: str
    registers: int = 0
    spill_stores: int = 0  # bytes
    spill_loads: int = 0  # bytes
    stack_frame: int = 0  # bytes
    shared_static: int = 0  # bytes of __shared__ arrays (dynamic shared memory is not counted)
    barriers: int = 0

    @property
    def spill_bytes(self) -> int:
        return self.spill_stores + self.spill_loads


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_USED = re.compile(r"Used (\d+) registers")
_BARRIERS = re.compile(r"used (\d+) barriers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log: str) -> dict[str, KernelResources]:
    """Resources per entry function, read from a verbose ptxas log.

    ptxas prints, per entry: "Compiling entry function 'k'", then "Function
    properties for k" followed by the stack/spill line, then "Used N
    registers, ..., M bytes smem".  Non-entry functions (not inlined device
    functions) also get a properties block; they are not kernels and are
    left out.
    """
    fields: dict[str, dict[str, int]] = {}
    entry = None
    properties_of = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            entry = m.group(1)
            fields.setdefault(entry, {})
            continue
        if m := _PROPERTIES.search(line):
            properties_of = m.group(1)
            continue
        if (m := _FRAME.search(line)) and properties_of in fields:
            fields[properties_of].update(
                stack_frame=int(m.group(1)),
                spill_stores=int(m.group(2)),
                spill_loads=int(m.group(3)),
            )
            continue
        if (m := _USED.search(line)) and entry is not None:
            found = fields[entry]
            found["registers"] = int(m.group(1))
            if b := _BARRIERS.search(line):
                found["barriers"] = int(b.group(1))
            if s := _SMEM.search(line):
                found["shared_static"] = int(s.group(1))
    return {name: KernelResources(name=name, **values) for name, values in fields.items()}


# ---------------------------------------------------------------- cuobjdump


def _nvidia_bin_dirs() -> list[Path]:
    """bin/ folders of NVIDIA's PyPI wheels (nvidia/cu13/bin, nvidia/cuda_*/bin)."""
    try:
        import nvidia  # namespace package of NVIDIA's wheels
    except ImportError:
        return []
    found = []
    for root in map(Path, getattr(nvidia, "__path__", [])):
        found.extend(sorted(root.glob("*/bin")))
    return found


def find_tool(name: str) -> Path | None:
    """``cuobjdump`` or ``nvdisasm``: cuda-pathfinder, NVIDIA's wheels, CUDA_HOME, then PATH."""
    try:
        from cuda.pathfinder import find_nvidia_binary_utility

        found = find_nvidia_binary_utility(name)
    except Exception:  # pathfinder missing, too old, or it does not know the tool
        found = None
    if found and os.access(found, os.X_OK):
        return Path(found)
    # The folders PATH does not list, searched first, then PATH: shutil.which does the looking
    # (executable files only, and PATHEXT's .exe on Windows).
    folders = [*_nvidia_bin_dirs()]
    folders += [Path(os.environ[var]) / "bin" for var in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(var)]
    folders.append(Path("/usr/local/cuda/bin"))
    found = shutil.which(name, path=os.pathsep.join(map(str, folders))) or shutil.which(name)
    return Path(found) if found else None


class SassUnavailableError(RuntimeError):
    """cuobjdump (or the nvdisasm it runs) is not installed."""


_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)")
# "/*0050*/   @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;" -> "LDG.E.128"
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-fA-F]+\*/\s+(?:@!?\w+\s+)?([A-Z][A-Z0-9_.]*)")


def disassemble(cubin: bytes) -> dict[str, list[str]]:
    """The SASS opcodes of every kernel in a cubin, in program order."""
    cuobjdump = find_tool("cuobjdump")
    nvdisasm = find_tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:
        missing = "cuobjdump" if cuobjdump is None else "nvdisasm"
        raise SassUnavailableError(
            f"dlgpu: {missing} not found; {install_hint('compile')}; or set CUDA_HOME"
        )
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(nvdisasm.parent), env.get("PATH", "")])
    env["NVDISASM_PATH"] = str(nvdisasm.parent)
    with tempfile.TemporaryDirectory(prefix="dlgpu-sass-") as tmp:
        path = Path(tmp) / "module.cubin"
        path.write_bytes(cubin)
        done = subprocess.run(
            [str(cuobjdump), "-sass", str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        raise SassUnavailableError(
            f"dlgpu: cuobjdump -sass failed ({done.returncode}): {done.stderr.strip()}"
        )
    return parse_sass(done.stdout)


def parse_sass(listing: str) -> dict[str, list[str]]:
    """Opcodes per function from ``cuobjdump -sass`` output."""
    kernels: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        if m := _FUNCTION.match(line):
            current = kernels.setdefault(m.group(1), [])
        elif current is not None and (m := _INSTRUCTION.match(line)):
            current.append(m.group(1))
    return kernels


def opcode_matches(opcode: str, pattern: str) -> bool:
    """Whether a SASS opcode is an instance of ``pattern``.

    The first dot-separated part must be equal and every other part of the
    pattern must appear among the opcode's modifiers, so "LDG.E.128" matches
    "LDG.E.128", "LDG.E.128.CONSTANT" and "LDG.E.EL.128" but not "LDG.E.64",
    and "BAR" matches "BAR.SYNC.DEFER_BLOCKING".  A pattern ending in "$" matches only
    that opcode exactly: "STG.E$" is a 32-bit store, not "STG.E.128" or "STG.E.U16".
    """
    if pattern.endswith("$"):
        return opcode == pattern[:-1]
    head, *mods = pattern.split(".")
    op_head, *op_mods = opcode.split(".")
    return head == op_head and set(mods) <= set(op_mods)


def count_instructions(opcodes: list[str], patterns=INTERESTING) -> dict[str, int]:
    return {p: sum(opcode_matches(op, p) for op in opcodes) for p in patterns}


# ---------------------------------------------------------------- // dlgpu-sass: requirements


@dataclass(frozen=True)
class SassRequirement:
    kernel_glob: str
    required: tuple[str, ...]
    forbidden: tuple[str, ...]
    archs: tuple[str, ...] = ()  # empty: every target
    line: int = 0  # 1-based line of the marker in its source

    def applies_to(self, arch: str) -> bool:
        return not self.archs or arch in self.archs


_SASS_MARKER = re.compile(r"^\s*//\s*dlgpu-sass:(.*)$")


def parse_sass_requirements(source: str) -> list[SassRequirement]:
    """The ``// dlgpu-sass:`` lines of a kernel source."""
    found = []
    for number, line in enumerate(source.splitlines(), start=1):
        m = _SASS_MARKER.match(line)
        if not m:
            continue
        tokens = m.group(1).split()
        if not tokens:
            raise ValueError(f"line {number}: '// dlgpu-sass:' names no kernel")
        glob, rest = tokens[0], tokens[1:]
        archs: tuple[str, ...] = ()
        required, forbidden = [], []
        for token in rest:
            if token.startswith("arch="):
                archs = tuple(a for a in token[len("arch=") :].split(",") if a)
            elif token.startswith("!"):
                forbidden.append(token[1:])
            else:
                required.append(token)
        for token in LOCAL_MEMORY:
            if token not in forbidden:
                forbidden.append(token)
        found.append(SassRequirement(glob, tuple(required), tuple(forbidden), archs, number))
    return found


def check_sass(
    requirements: list[SassRequirement], sass: dict[str, list[str]], arch: str
) -> list[str]:
    """Problems (one sentence each) where the SASS of ``arch`` breaks a requirement."""
    problems = []
    for req in requirements:
        if not req.applies_to(arch):
            continue
        names = [k for k in sass if fnmatch.fnmatchcase(k, req.kernel_glob)]
        if not names:
            problems.append(
                f"dlgpu-sass line {req.line}: no kernel matches {req.kernel_glob!r} for {arch}"
            )
        for name in sorted(names):
            counts = count_instructions(sass[name], req.required + req.forbidden)
            for instr in req.required:
                if counts[instr] == 0:
                    problems.append(f"{name} ({arch}): no {instr} in its SASS")
            for instr in req.forbidden:
                if counts[instr]:
                    problems.append(f"{name} ({arch}): {counts[instr]} x {instr} in its SASS")
    return problems
