"""``dlgpu bench`` as a user meets it: the table fits the terminal, skipped rows are summed up once, a run
that measured nothing fails, --plot is checked before any work, and the JSON says what was measured with.

Through ``dlgpu.cli.main([...])`` and capsys.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest
from rich.console import Console

import dlgpu
from dlgpu.bench import cli as bench_cli
from dlgpu.bench import report
from dlgpu.cli import main as cli_main


def _row(op, variant, shape, **fields):
    row = {"op": op, "variant": variant, "shape": shape, "dtype": "float32", "precision": "ieee", "ms": None,
           "baseline": None, "baseline_ms": None, "ratio": None, "gbps": None, "tflops": None,
           "pct_of_ceiling": None}
    return {**row, **fields}


RESULT = {
    "device": {"name": "AMD EPYC"}, "backend": "cpu", "quick": True, "errors": [],
    "ceilings": {"copy": {"gbps": 12.5, "how": "numpy.copyto, 64 MiB, bytes read + written"}},
    "rows": [
        _row("conv2d_forward_bias_relu", "implicit-gemm-tc-bf16-nhwc", "64x256x56x56 k256 r3x3 s1 p1",
             ms=12.345, baseline="torch", baseline_ms=10.0, ratio=0.81, tflops=123.45, precision="bf16",
             pct_of_ceiling=64.0),
        _row("relu_forward", "default", "16777216", ms=0.25, baseline="numpy", baseline_ms=0.3, ratio=1.2,
             gbps=2800.0, pct_of_ceiling=93.3),
        *[_row("matmul", f"tc-{p}", "8192x8192x8192", skipped="GPU-only: cuBLAS") for p in ("tf32", "bf16")],
    ],
}


@pytest.mark.parametrize("width", [80, 100])
def test_the_table_fits_the_terminal_and_sums_up_skipped_rows_once(width):
    console = Console(record=True, width=width)
    report.print_result(RESULT, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, "\n".join(lines)
    assert "conv2d_forward_bias_relu" in text and "relu_forward" in text and "implicit-gemm" in text  # folded, not cut
    assert "123.5 TF/s" in text and "2800 GB/s" in text and "64%" in text
    assert "8192x8192x8192" not in text  # the skipped rows are not in the table ...
    assert text.count("skipped 2 matmul rows: GPU-only: cuBLAS") == 1  # ... but summed up once
    assert "% ceil = " in text and "ceiling" in text and "copy bandwidth" in text  # the column is explained


def test_a_tf32_row_gets_no_share_of_the_float32_ceiling():
    from dlgpu.bench import run

    assert "tf32" not in run._GEMM_CEILING and run._GEMM_CEILING["ieee"] == "sgemm"


@pytest.fixture(scope="module")
def gemm_on_the_cpu(tmp_path_factory):
    """``dlgpu bench gemm --backend cpu --quick --json F``: every gemm row needs a GPU."""
    path = tmp_path_factory.mktemp("bench") / "gemm.json"
    out = io.StringIO()  # capsys is function-scoped: one run for the module's tests, captured by hand
    with contextlib.redirect_stdout(out):
        status = cli_main(["bench", "gemm", "--backend", "cpu", "--quick", "--json", str(path)])
    return status, out.getvalue(), json.loads(path.read_text())


def test_a_run_where_every_row_is_skipped_says_so_and_exits_1(gemm_on_the_cpu):
    status, out, result = gemm_on_the_cpu
    assert status == 1, out
    assert "no row ran" in out and "nothing ran: every row of gemm was skipped on the cpu backend" in out
    assert result["rows"] and all(r.get("skipped") for r in result["rows"])
    assert "no GPU found" not in out  # --backend cpu asked for the CPU
    reasons = {(r["op"], r["skipped"]) for r in result["rows"]}
    assert sum(line.startswith("skipped ") for line in out.splitlines()) == len(reasons)  # once per op and reason


def test_the_json_says_when_with_what_code_and_on_what_machine(gemm_on_the_cpu):
    meta = gemm_on_the_cpu[2]["meta"]
    assert meta["dlgpu"] == dlgpu.__version__ and meta["kernels_sha256"] == dlgpu.kernels_sha256()
    assert meta["date"].endswith("+00:00") and meta["date"][:4].isdigit()
    assert meta["cpu"]["name"] and meta["cpu"]["count"] >= 1 and meta["cpu"]["largest_cache_bytes"] > 0
    assert "commit" in meta and meta["device"]["backend"] == "cpu"


def test_plot_without_matplotlib_fails_before_any_benchmark(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(bench_cli, "measure_ceilings", lambda *a: pytest.fail("benchmarked before failing"))
    status = cli_main(["bench", "elementwise", "--backend", "cpu", "--plot", str(tmp_path / "b.png")])
    out = capsys.readouterr().out
    assert status == 1 and "--plot needs matplotlib" in out and ".[examples]" in out


def test_json_into_a_missing_folder_is_refused_at_parse_time(capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["bench", "--json", str(tmp_path / "missing" / "b.json")])
    assert stopped.value.code == 2 and "argument --json: the folder" in capsys.readouterr().err


def test_backend_cuda_without_a_gpu_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(bench_cli, "gpu_probe", lambda: (False, "CuPy is not importable"))
    monkeypatch.setattr(bench_cli, "measure_ceilings", lambda *a: pytest.fail("benchmarked without a GPU"))
    assert cli_main(["bench", "elementwise", "--backend", "cuda"]) == 1
    assert "--backend cuda, but no GPU found (CuPy is not importable)" in capsys.readouterr().out


def test_the_plot_has_a_log_time_axis_and_labels_that_do_not_overlap():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [_row(f"op{i}_with_a_long_name", "variant", "1024x1024x1024", ms=10.0 ** (i - 3), baseline="numpy",
                 baseline_ms=2 * 10.0 ** (i - 3)) for i in range(12)]
    fig = report.plot_figure({"device": {"name": "test"}, "rows": rows}, plt)
    try:
        (ax,) = fig.axes
        assert ax.get_xscale() == "log"
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [label.get_window_extent(renderer) for label in ax.get_yticklabels()]
        assert len(boxes) == 12
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    finally:
        plt.close(fig)


class _Scripted:
    """Runs every repetition, reports scripted times: one per measurement, in order."""

    def __init__(self, ms):
        self.ms, self.calls = list(ms), []

    def measure(self, fn, *, warmup, reps):
        for i in range(warmup + reps):
            fn(i)
        self.calls.append(warmup + reps)
        return [self.ms.pop(0)] * reps


@pytest.mark.parametrize(("rotated_ms", "expected"), [(0.5, "rotated through 4 sets"), (5.0, "64 MiB")])
def test_the_cpu_copy_ceiling_is_the_faster_of_one_large_and_rotated_copies(rotated_ms, expected):
    import numpy as np

    from dlgpu.bench import ceilings
    from dlgpu.bench.machines import Machine

    # large copy: 128 MiB in 10 ms (13.4 GB/s); rotated: 8 MiB in rotated_ms (16.8 or 1.7 GB/s); then sgemm
    timer = _Scripted([10.0, rotated_ms, 50.0])
    machine = Machine(name="cpu", xp=np, timer=timer, cache_bytes=8 << 20, device={"name": "test"},
                      max_rotation_bytes=32 << 20, warmup=1, reps=3)
    copy = ceilings.measure_ceilings(machine, quick=True)["copy"]
    assert expected in copy["how"] and "bytes read + written" in copy["how"]
    assert copy["gbps"] == pytest.approx(max(2 * (64 << 20) / 10e-3, 2 * (4 << 20) / (rotated_ms * 1e-3)) / 1e9)
