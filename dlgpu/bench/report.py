"""Output of ``dlgpu bench``: the printed table, the ceilings line, and the PNG."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _variant(r: dict[str, Any]) -> str:
    """The variant, with the dtype and precision where they are not the default float32/ieee."""
    parts = [r.get("variant", "")]
    if r.get("dtype", "float32") != "float32":
        parts.append(r["dtype"])
    if r.get("precision", "ieee") != "ieee" and r["precision"] not in parts[0]:
        parts.append(r["precision"])
    return " ".join(p for p in parts if p)


def _rate(r: dict[str, Any]) -> str:
    if r.get("tflops"):
        return f"{r['tflops']:.1f} TF/s" if r["tflops"] >= 0.1 else f"{1e3 * r['tflops']:.1f} GF/s"
    if r.get("gbps"):
        return f"{r['gbps']:.0f} GB/s" if r["gbps"] >= 100 else f"{r['gbps']:.1f} GB/s"
    return "-"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The printed table's cells, one list per row that ran (tested without rich).

    Cells stack what belongs together -- a case is its op, variant and shape,
    a baseline its name and time, a rate its value and share of the ceiling --
    so five columns fit an 80-column terminal.  Skipped rows are left out:
    :func:`print_result` sums them up, one line per op and reason.
    """
    out = []
    for r in result["rows"]:
        if r.get("skipped"):
            continue
        baseline = f"{r['baseline']}\n{_fmt(r.get('baseline_ms'), '.3f')}" if r.get("baseline") else "-"
        share = _fmt(r.get("pct_of_ceiling"), ".0f") + ("%" if r.get("pct_of_ceiling") is not None else "")
        out.append([
            f"{r['op']}\n{_variant(r)}\n{r['shape']}",
            "error" if r.get("error") else _fmt(r.get("ms"), ".3f"),
            baseline,
            _fmt(r.get("ratio"), ".2f") + ("x" if r.get("ratio") is not None else ""),
            f"{_rate(r)}\n{share}",
        ])
    return out


TABLE_HEADER = ["op / variant / shape", "dlgpu ms", "baseline / ms", "ratio", "rate / % ceil"]
_FOLDED_COLUMNS = ("op / variant / shape",)
EXPLANATION = (
    "ratio = baseline ms / dlgpu ms (above 1: dlgpu is faster).  % ceil = the rate as a share of the measured "
    "ceiling below: GB/s against the copy bandwidth for memory-bound ops, TFLOP/s against the matrix product "
    "of the same precision for compute-bound ones ('-' where none of that precision was measured); above "
    "100%, the op outran the measured copy (on the CPU the backend's loops use every core, numpy.copyto one; "
    "or data left in a cache)."
)


def ceiling_lines(ceilings: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for key, c in ceilings.items():
        if c.get("gbps") is not None:
            lines.append(f"{key}: {c['gbps']:.1f} GB/s ({c['how']})")
        elif c.get("tflops") is not None:
            lines.append(f"{key}: {c['tflops']:.2f} TFLOP/s, {c.get('shape', '')} ({c['how']})")
        else:
            lines.append(f"{key}: unavailable")
    return lines


def print_result(result: dict[str, Any], console) -> None:
    from rich import box
    from rich.table import Table

    dev = result["device"]
    title = f"dlgpu bench on {dev.get('name')} ({result['backend']}{', quick' if result['quick'] else ''})"
    cells = table_rows(result)
    if cells:
        table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), show_lines=True)
        for col in TABLE_HEADER:
            if col in _FOLDED_COLUMNS:
                table.add_column(col, justify="left", overflow="fold")
            else:
                table.add_column(col, justify="right", no_wrap=True)
        for row in cells:
            table.add_row(*row)
        console.print(table)
        console.print(EXPLANATION, markup=False)
    else:
        console.print(f"{title}: no row ran", markup=False)
    console.print("measured ceilings: " + "; ".join(ceiling_lines(result["ceilings"])), markup=False)
    # one line per op and reason, not one per row: the CPU run skips dozens of GPU-only rows
    skipped = Counter((r["op"], r["skipped"]) for r in result["rows"] if r.get("skipped"))
    for (op, why), count in skipped.items():
        console.print(f"skipped {count} {op} row{'s' if count > 1 else ''}: {why}", markup=False)
    for r in result["rows"]:
        if r.get("baseline_error"):
            console.print(f"baseline {r['baseline']} of {r['op']} failed: {r['baseline_error']}", markup=False)
    for err in result["errors"]:
        console.print(f"error {err}", markup=False)


def plot_figure(result: dict[str, Any], plt):
    """The --plot figure: one horizontal pair of bars per row that ran, dlgpu's and its baseline's time.

    Horizontal bars put each case's label on its own line of the y axis, so
    labels never overlap however many rows there are; the time axis is
    logarithmic, because the cases span microseconds to seconds.
    """
    rows = [r for r in result["rows"] if r.get("ms")]
    labels = [f"{r['op']} {_variant(r)} {r['shape']}  vs {r.get('baseline') or '-'}" for r in rows]
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.32 * max(len(rows), 1)))
    ax.barh(y - 0.2, [r["ms"] for r in rows], 0.4, label="dlgpu")
    ax.barh(y + 0.2, [r.get("baseline_ms") or np.nan for r in rows], 0.4, label="baseline")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()  # the first row on top, as in the table
    ax.set_xscale("log")
    ax.set_xlabel("ms (median, log scale)")
    ax.set_title(f"dlgpu bench: {result['device'].get('name')}")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes, never over a bar
    fig.tight_layout()
    return fig


def write_plot(result: dict[str, Any], path: str) -> str | None:
    """Draw dlgpu and baseline times per case; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        return f"--plot needs matplotlib, which is not importable here ({type(exc).__name__}); no PNG written"
    fig = plot_figure(result, plt)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
