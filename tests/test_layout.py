"""The layout the project promises: one stem names a kernel family's every file.

For every kernels/<stem>.cu (tensor-core and other variant files, kernels/<stem>_<what>.cu,
belong to their stem): a launcher dlgpu/cuda/<stem>.py, a case module
dlgpu/cases/<stem>.py, a benchmark shim benchmarks/bench_<stem>.py, and
tests/test_<stem>.py, which runs the stem's kernels on the harness (dlgpu.testing.suites).  Also the machinery the
stem tests share: the Hypothesis profiles.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import types
from pathlib import Path

import pytest
from hypothesis import settings

from dlgpu import cases
from dlgpu.kernel_files import families, stem_families, stem_of
from dlgpu.testing.properties import GPU_EXAMPLES, OP_SETTINGS, PROFILE

ROOT = Path(__file__).resolve().parent.parent
STEMS = sorted({stem_of(family) for family in families()})


def test_tensor_core_files_belong_to_their_stem():
    assert stem_of("gemm_tc") == "gemm" and stem_of("conv2d_tc") == "conv2d"
    assert stem_of("bias_grad") == "bias_grad" and stem_of("gemm_cast") == "gemm"
    assert stem_families("gemm")[0] == "gemm" and {"gemm_cast", "gemm_tc"} <= set(stem_families("gemm"))
    assert STEMS == sorted(cases.STEMS)


def _packages():
    import dlgpu

    yield dlgpu
    for info in pkgutil.walk_packages(dlgpu.__path__, "dlgpu."):
        if info.ispkg:
            yield importlib.import_module(info.name)


def test_no_package_attribute_shadows_its_submodule():
    """`import dlgpu.x.y as m` binds the package's attribute y: a function named like its module would come back
    instead of the module (the clash that once forced importlib in tests)."""
    clashes = []
    for package in _packages():
        for info in pkgutil.iter_modules(package.__path__):
            value = getattr(package, info.name, None)
            if value is not None and not isinstance(value, types.ModuleType):
                clashes.append(f"{package.__name__}.{info.name} is a {type(value).__name__}")
    assert clashes == []


@pytest.mark.parametrize("stem", STEMS)
def test_every_stem_has_its_launcher_cases_benchmark_and_tests(stem):
    for path in (f"dlgpu/cuda/{stem}.py", f"dlgpu/cases/{stem}.py", f"benchmarks/bench_{stem}.py"):
        assert (ROOT / path).is_file(), f"{path} is missing"
    tests = ROOT / "tests" / f"test_{stem}.py"
    assert tests.is_file(), f"tests/test_{stem}.py is missing"
    assert f'kernel_tests("{stem}", ' in tests.read_text(), "its kernels are not run on the harness"
    assert f'benchmark_tests("{stem}")' in (ROOT / "benchmarks" / f"bench_{stem}.py").read_text()


def test_profile_is_chosen_by_the_environment():
    assert settings.get_profile("ci").max_examples >= 25
    assert settings.get_profile("gpu").max_examples == GPU_EXAMPLES
    assert GPU_EXAMPLES >= 200 or "DLGPU_HYPOTHESIS_EXAMPLES" in os.environ
    assert OP_SETTINGS.max_examples == settings.get_profile(PROFILE).max_examples
