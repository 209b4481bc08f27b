"""find_tool: NVIDIA's binary utilities found where they are installed, through shutil.which."""

from __future__ import annotations

import os
import sys

import pytest

from dlgpu.cuda import sass


@pytest.fixture
def no_wheels(monkeypatch, tmp_path):
    """Neither cuda-pathfinder nor NVIDIA's wheels know the tool; PATH holds one empty folder."""
    monkeypatch.setitem(sys.modules, "cuda.pathfinder", None)  # the import fails as if absent
    monkeypatch.setattr(sass, "_nvidia_bin_dirs", lambda: [])
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return tmp_path


def _tool(folder, name="cuobjdump", executable=True):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755 if executable else 0o644)
    return path


@pytest.mark.skipif(os.name != "posix", reason="executable bits are POSIX's")
def test_cuda_home_comes_before_path_and_only_executables_count(no_wheels, monkeypatch):
    if os.path.exists("/usr/local/cuda/bin/cuobjdump"):
        pytest.skip("a CUDA toolkit in /usr/local/cuda would be found first")
    assert sass.find_tool("cuobjdump") is None
    on_path = _tool(no_wheels / "bin-on-path")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert sass.find_tool("cuobjdump") == on_path
    home = _tool(no_wheels / "cuda" / "bin")
    monkeypatch.setenv("CUDA_HOME", str(no_wheels / "cuda"))
    assert sass.find_tool("cuobjdump") == home
    home.chmod(0o644)  # not executable: skipped, PATH's is found
    assert sass.find_tool("cuobjdump") == on_path


def test_the_wheels_folders_come_first(no_wheels, monkeypatch):
    wheel = _tool(no_wheels / "wheel" / "bin", "nvdisasm")
    _tool(no_wheels / "bin-on-path", "nvdisasm")
    monkeypatch.setenv("PATH", str(no_wheels / "bin-on-path"))
    monkeypatch.setattr(sass, "_nvidia_bin_dirs", lambda: [wheel.parent])
    assert sass.find_tool("nvdisasm") == wheel
