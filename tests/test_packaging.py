"""The wheel carries the kernel sources, and an installed (non-editable) package finds them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import dlgpu

ROOT = Path(__file__).resolve().parent.parent


# What a fresh clone does not have.  An editable install leaves dlgpu.egg-info/SOURCES.txt
# behind, and setuptools adds every file listed there to the next build: a wheel built in
# a used checkout carries files that a wheel built from a clean clone (or an sdist) lacks.
_NOT_IN_A_CLEAN_CLONE = ("*.egg-info", "build", "dist", ".venv", ".cache", ".git", "__pycache__", ".*_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("clean") / "dlgpu"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_IN_A_CLEAN_CLONE))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("dlgpu-*.whl")
    return path


def test_wheel_contains_every_kernel_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = dlgpu.kernel_sources()
    assert sources, "kernels/ holds no sources"
    for source in sources:
        assert f"dlgpu/kernels/{source.name}" in names


def test_wheel_carries_every_module_header_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "dlgpu"
    expected = [path for pattern in ("*.py", "*.h", "py.typed") for path in package.rglob(pattern)]
    missing = [
        str(path.relative_to(ROOT)) for path in expected
        if "__pycache__" not in path.parts and path.relative_to(ROOT).as_posix() not in names
    ]
    assert not missing, f"the wheel lacks {missing}: add their package to pyproject.toml's packages / package-data"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), "the wheel carries no LICENSE"


def test_python_dash_m_dlgpu_runs_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "dlgpu", "--version"], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == f"dlgpu {dlgpu.__version__}"


def test_installed_wheel_finds_its_kernels_from_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300
    )
    # dlgpu's top-level import needs no third-party package, so --no-deps suffices here;
    # run from an empty folder so the checkout cannot be imported instead.
    # The harness header ships too: an installed package can run kernels on the CPU.
    probe = (
        "import dlgpu, pathlib; print(dlgpu.kernels_dir()); print(dlgpu.kernels_sha256()); "
        "print(pathlib.Path(dlgpu.__file__).with_name('testing') / 'cuda_host.h')"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60, env=env
    )
    found_dir, digest, header = result.stdout.split()
    assert Path(found_dir).is_relative_to(venv), f"kernels found outside the venv: {found_dir}"
    assert Path(header).is_relative_to(venv) and Path(header).is_file(), f"no harness header at {header}"
    assert digest == dlgpu.kernels_sha256()


def _extra_requirements(extras: dict, name: str) -> list:
    """The requirements an extra brings, with self-references ("dlgpu[compile]") expanded."""
    from packaging.requirements import Requirement

    result = []
    for text in extras[name]:
        requirement = Requirement(text)
        if requirement.name == "dlgpu":
            for inner in sorted(requirement.extras):
                result += _extra_requirements(extras, inner)
        else:
            result.append(requirement)
    return result


@pytest.mark.parametrize("gpu_extra, major", [("cuda12", 12), ("cuda13", 13)])
@pytest.mark.parametrize("tool_extra", ["compile", "test"])
def test_each_cuda_extra_combines_with_compile_and_test_on_one_nvrtc_major(gpu_extra, major, tool_extra):
    """`pip install ".[cuda12,test]"` must resolve, and to CUDA 12's NVRTC only.

    cuda-bindings and the cuda-toolkit metapackage (which brings NVRTC) must each admit a
    release of the GPU extra's CUDA major and none of another, once both extras' pins meet.
    """
    import tomllib

    from packaging.version import Version

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    requirements = _extra_requirements(extras, gpu_extra) + _extra_requirements(extras, tool_extra)
    candidates = [Version(f"{m}.{minor}") for m in (11, 12, 13, 14) for minor in (0, 8, 9)]
    for package in ("cuda-bindings", "cuda-toolkit"):
        specifiers = [r.specifier for r in requirements if r.name == package]
        assert specifiers, f"{gpu_extra} + {tool_extra} do not pin {package}"
        allowed = {v.major for v in candidates if all(v in s for s in specifiers)}
        assert allowed == {major}, f"{gpu_extra} + {tool_extra} admit {package} majors {sorted(allowed)}"
    assert not any(r.name.startswith("nvidia-cuda-nvrtc") for r in requirements), (
        "NVRTC must come only through cuda-toolkit[nvrtc], whose major the extras agree on"
    )


@pytest.mark.parametrize("extra", ["cuda12", "cuda13", "compile", "examples"])
def test_install_hints_name_the_extra_and_its_packages(extra):
    """dlgpu is not on PyPI: an error's hint says how a checkout installs the extra, and which packages it is
    (read from the installed metadata, so they follow pyproject.toml)."""
    import tomllib

    from dlgpu.errors import install_hint

    hint = install_hint(extra)
    assert f"pip install -e '.[{extra}]'" in hint and "dlgpu[" not in hint
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for requirement in _extra_requirements(extras, extra):
        assert f"'{requirement}'" in hint.replace(" ", "") or requirement.name in hint, (requirement, hint)
