"""Output of ``dlgpu bench``: the printed table, the ceilings line, and the PNG."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The printed table's cells, one list per row (tested without rich)."""
    out = []
    for r in result["rows"]:
        rate = f"{r['tflops']:.2f} TFLOP/s" if r.get("tflops") else (
            f"{r['gbps']:.1f} GB/s" if r.get("gbps") else "-")
        out.append([
            r["op"], r["variant"], r["shape"], f"{r['dtype']}/{r['precision']}",
            "error" if r.get("error") else ("skipped" if r.get("skipped") else _fmt(r.get("ms"), ".3f")),
            r.get("baseline") or "-", _fmt(r.get("baseline_ms"), ".3f"),
            _fmt(r.get("ratio"), ".2f") + ("x" if r.get("ratio") is not None else ""),
            rate, _fmt(r.get("pct_of_ceiling"), ".0f") + ("%" if r.get("pct_of_ceiling") is not None else ""),
        ])
    return out


TABLE_HEADER = ["op", "variant", "shape", "dtype", "dlgpu ms", "baseline", "baseline ms", "ratio", "rate",
                "% ceiling"]


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
    from rich.table import Table

    dev = result["device"]
    title = f"dlgpu bench on {dev.get('name')} ({result['backend']}{', quick' if result['quick'] else ''})"
    table = Table(title=title)
    for col in TABLE_HEADER:
        table.add_column(col, justify="left" if col in ("op", "variant", "shape", "dtype", "baseline") else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    console.print(table)
    console.print("ratio = baseline ms / dlgpu ms (above 1: dlgpu is faster)")
    console.print("measured ceilings: " + "; ".join(ceiling_lines(result["ceilings"])))
    # one line per op and reason, not one per row: the CPU run skips dozens of GPU-only rows
    skipped = Counter((r["op"], r["skipped"]) for r in result["rows"] if r.get("skipped"))
    for (op, why), count in skipped.items():
        console.print(f"skipped {count} {op} row{'s' if count > 1 else ''}: {why}", markup=False)
    for r in result["rows"]:
        if r.get("baseline_error"):
            console.print(f"baseline {r['baseline']} of {r['op']} failed: {r['baseline_error']}", markup=False)
    for err in result["errors"]:
        console.print(f"error {err}", markup=False)


def write_plot(result: dict[str, Any], path: str) -> str | None:
    """Draw dlgpu and baseline times per case; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        return f"--plot needs matplotlib, which is not importable here ({type(exc).__name__}); no PNG written"
    rows = [r for r in result["rows"] if r.get("ms")]
    labels = [f"{r['op']}\n{r['shape']}\nvs {r.get('baseline') or '-'}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(rows)), 4.5))
    ax.bar(x - 0.2, [r["ms"] for r in rows], 0.4, label="dlgpu")
    ax.bar(x + 0.2, [r.get("baseline_ms") or 0 for r in rows], 0.4, label="baseline")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("ms (median)")
    ax.set_title(f"dlgpu bench: {result['device'].get('name')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
