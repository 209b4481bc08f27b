"""README's quick start and examples stay true: its Python blocks run, its commands exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_example_runs(index):
    code = _blocks("python")[index]
    if "import torch" in code:
        pytest.importorskip("torch")  # optional extra; CI installs it, so there this block runs
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme_example"})


def test_readme_has_examples_of_the_functional_api_and_of_a_layer():
    code = "\n".join(_blocks("python"))
    assert "dlgpu.functional" in code
    assert "from dlgpu import nn" in code and "model.backward(" in code


def test_quick_start_opens_the_readme_with_the_two_commands():
    first_block = _blocks("bash")[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    main_job, tests = commands
    assert "dlgpu check" in main_job and "dlgpu bench --quick" in main_job
    assert '".[test]"' in tests and tests.endswith("python -m pytest -n auto")
    ci_script = (README.parent / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -n auto" in ci_script, ".ci/run must call README's test command"
    assert '.venv/bin/pip install --quiet -e ".[test]"' in ci_script


def test_commands_named_in_the_readme_exist():
    from dlgpu.cli import SUBCOMMANDS

    for command in re.findall(r"`dlgpu (\w+)", README.read_text()):
        assert command in SUBCOMMANDS, f"README names `dlgpu {command}`, which the CLI lacks"
    for line in _blocks("bash")[0].splitlines():
        if line and not line.startswith("#"):
            shlex.split(line)  # well-formed shell quoting
