"""The command line's arguments: every option explained, and bad values refused at parse time, before any work.

Through ``dlgpu.cli.main([...])`` as a user would type them; argparse reports a
refused value on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse

import pytest

from dlgpu import arguments
from dlgpu.cli import build_parser
from dlgpu.cli import main as cli_main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_of_every_subcommand_has_help_text():
    missing = []
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"dlgpu {name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_every_subcommand_names_its_backend_option_the_same():
    """One flag name: every subcommand that picks a backend takes --backend with the same choices."""
    found = {}
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if "--backend" in action.option_strings:
                found[name] = tuple(sorted(action.choices))
    assert {"check", "bench", "train"} <= set(found), found
    assert set(found.values()) == {("cpu", "cuda")}, found


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "--seed", "-5"], "argument --seed: a seed must be >= 0"),
        (["check", "--seed", "x"], "argument --seed: expected an integer"),
        (["train", "--lr", "-1"], "argument --lr: must be > 0"),
        (["train", "--momentum", "inf"], "argument --momentum: expected a finite number"),
        (["train", "--seed", "-5"], "argument --seed: a seed must be >= 0"),
        (["train", "--plot", "missing-folder/x.png"], "argument --plot: the folder 'missing-folder' does not exist"),
    ],
)
def test_bad_values_exit_2_at_parse_time_with_the_reason(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        cli_main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"dlgpu {argv[0]}: error: " in err and message in err, err


def test_the_types_accept_what_they_should(tmp_path):
    assert arguments.count("0") == 0 and arguments.positive_count("3") == 3 and arguments.seed("7") == 7
    assert arguments.positive_float("1e-3") == 1e-3 and arguments.non_negative_float("0") == 0.0
    target = tmp_path / "out.json"
    assert arguments.output_file(str(target)) == str(target)
    assert arguments.output_file("here.json") == "here.json"  # the current folder
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        arguments.output_file(str(tmp_path))
