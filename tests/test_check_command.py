"""``dlgpu check``'s table as a user meets it: it fits an 80-column pipe and explains its columns."""

from __future__ import annotations

from dlgpu.cli import main as cli_main


def test_the_check_table_fits_80_columns_with_whole_op_names(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")  # what rich gives a pipe
    assert cli_main(["check", "--backend", "cpu", "--quick"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    # the longest op name stays on one line; the shapes fold instead
    assert any(line.split()[:1] == ["softmax_cross_entropy_backward"] for line in lines if line.strip()), out
    assert "rel. error = ||out - reference|| / ||reference||" in out and "0 failed" in out
