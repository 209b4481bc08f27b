"""The wheel carries the kernel sources, and an installed (non-editable) package finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import dlgpu

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
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


def test_wheel_contains_every_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in sorted((ROOT / "dlgpu").rglob("__init__.py")):
        relative = init.relative_to(ROOT).as_posix()
        assert relative in names, f"{relative} is not in the wheel: add its package to pyproject.toml"


def test_installed_wheel_finds_its_kernels_from_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300
    )
    # dlgpu's top-level import needs no third-party package, so --no-deps suffices here;
    # run from an empty folder so the checkout cannot be imported instead.
    probe = "import dlgpu; print(dlgpu.kernels_dir()); print(dlgpu.kernels_sha256())"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60, env=env
    )
    found_dir, digest = result.stdout.split()
    assert Path(found_dir).is_relative_to(venv), f"kernels found outside the venv: {found_dir}"
    assert digest == dlgpu.kernels_sha256()
