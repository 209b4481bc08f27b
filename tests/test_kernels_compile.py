"""Every kernel in kernels/ builds for every claimed target, lean, without a GPU.

For each family (kernels/*.cu), each of its ``// dlgpu-build:`` configurations
and each target in ``compiler.DEFAULT_ARCHS``: NVRTC compiles it through the
same path a launch uses; ptxas reports no spills and no stack frame for any
kernel; cuobjdump's SASS shows what the family's ``// dlgpu-sass:`` lines
require (128-bit global loads/stores in the memory-bound kernels) and no
local memory (LDL/STL) anywhere.
"""

from __future__ import annotations

import functools

import pytest

from dlgpu.cuda import compiler, sass

ARCHS = compiler.DEFAULT_ARCHS
FAMILIES = compiler.families()

# The memory-bound families (issue 3) and the vector accesses their markers must demand,
# so that deleting a marker cannot quietly drop the check.
MEMORY_BOUND = {
    "elementwise": {"LDG.E.128", "STG.E.128"},
    "sgd": {"LDG.E.128", "STG.E.128"},
    "bias_grad": {"LDG.E.128"},
}


@functools.lru_cache(maxsize=None)
def built(family: str, arch: str) -> tuple[compiler.CompiledModule, ...]:
    text = compiler.source_path(family).read_text(encoding="utf-8")
    return tuple(
        compiler.compile_family(family, arch=arch, defines=defines, announce=False)
        for defines in compiler.build_configurations(text)
    )


def describe(module: compiler.CompiledModule) -> str:
    config = " ".join(f"{n}={v}" for n, v in module.defines)
    return f"{module.family} [{config or 'no defines'}] for {module.arch}"


def test_the_kernel_families_are_there():
    assert set(MEMORY_BOUND) <= set(FAMILIES)
    assert {"softmax", "pool"} <= set(FAMILIES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_compiles_without_spills_or_stack(family, arch):
    for module in built(family, arch):
        assert module.kind == "cubin"
        assert module.resources, f"{describe(module)}: ptxas reported no kernel"
        heavy = {
            name: (r.spill_stores, r.spill_loads, r.stack_frame)
            for name, r in module.resources.items()
            if r.spill_bytes or r.stack_frame
        }
        assert not heavy, f"{describe(module)}: (spill stores, spill loads, stack) = {heavy}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_sass_meets_the_family_markers(family, arch):
    requirements = sass.parse_sass_requirements(compiler.source_path(family).read_text())
    for module in built(family, arch):
        listing = sass.disassemble(module.image)
        assert set(listing) == set(module.resources), describe(module)
        problems = sass.check_sass(requirements, listing, arch)
        for name, opcodes in sorted(listing.items()):
            local = sass.count_instructions(opcodes, sass.LOCAL_MEMORY)
            if any(local.values()):
                problems.append(f"{name}: local memory {local}")
        assert not problems, f"{describe(module)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("family", sorted(MEMORY_BOUND))
def test_memory_bound_families_demand_vector_access(family):
    requirements = sass.parse_sass_requirements(compiler.source_path(family).read_text())
    demanded = {instr for req in requirements for instr in req.required}
    assert MEMORY_BOUND[family] <= demanded, (
        f"kernels/{family}.cu: its '// dlgpu-sass:' lines demand {sorted(demanded)}, "
        f"expected at least {sorted(MEMORY_BOUND[family])}"
    )
