"""The command line: info reports the facts, check compares every op and fails loudly."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

import dlgpu
from dlgpu import check, info
from dlgpu.cli import main


def test_info_json_reports_versions_and_the_kernel_hash(capsys):
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["dlgpu"] == dlgpu.__version__
    assert facts["numpy"] == np.__version__
    assert facts["kernels sha256"] == dlgpu.kernels_sha256()
    assert facts["kernel sources"].startswith(f"{len(dlgpu.kernel_sources())} files")


def test_info_table_runs_as_a_console_command():
    result = subprocess.run([sys.executable, "-m", "dlgpu.cli", "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "kernels sha256" in result.stdout


def test_newest_record_is_chosen_by_date_and_compared_with_the_kernels(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"date": "2026-01-02", "kernels_sha256": "x", "device": "old"}))
    (tmp_path / "b.json").write_text(json.dumps({"date": "2026-03-04", "kernels_sha256": "y", "device": "new"}))
    (tmp_path / "broken.json").write_text("{not json")
    path, record = info.newest_record(tmp_path)
    assert path.name == "b.json" and record["device"] == "new"
    assert info.newest_record(tmp_path / "missing") is None


def test_check_quick_passes_on_the_cpu_backend(capsys):
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    assert check.main(parser.parse_args(["--backend", "cpu", "--quick"])) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "conv2d" in out and "softmax_cross_entropy" in out


def test_check_fails_when_an_op_is_wrong(monkeypatch, capsys):
    import dlgpu.cpu

    real_relu = dlgpu.cpu.BACKEND.relu

    def broken_relu(x, out):
        result = real_relu(x, out)
        result.reshape(-1)[-1] += 1.0  # one wrong element is enough to fail
        return result

    monkeypatch.setattr(dlgpu.cpu.BACKEND, "relu", broken_relu)
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    assert check.main(parser.parse_args(["--backend", "cpu", "--quick"])) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_without_a_gpu_says_so(monkeypatch, capsys):
    monkeypatch.setattr(check, "gpu_available", lambda: False)
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    assert check.main(parser.parse_args(["--backend", "cuda"])) == 1
    assert "no GPU found" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["nonsense"], ["check", "--backend", "tpu"]])
def test_bad_command_lines_exit_with_usage(argv):
    with pytest.raises(SystemExit) as info_:
        main(argv)
    assert info_.value.code == 2


def test_info_table_prints_bracketed_hints_verbatim(monkeypatch, capsys):
    monkeypatch.setattr(info, "collect", lambda: {"NVRTC": "pip install 'dlgpu[cuda13]' (or [cuda12])"})
    assert main(["info"]) == 0
    assert "dlgpu[cuda13]" in capsys.readouterr().out
