"""The ``dlgpu`` command: info, check, bench, compile.

Each subcommand lives in its own module, imported only when it runs, so
``dlgpu info`` stays quick and needs neither CuPy nor NVRTC.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, function adding its arguments, function running it, help)
SUBCOMMANDS = {
    "info": ("dlgpu.info", "add_arguments", "main", "versions, device, NVRTC, cache folder, kernel hash"),
    "check": ("dlgpu.check", "add_arguments", "main", "every op against the float64 reference; exit 1 on failure"),
    "bench": ("dlgpu.bench.cli", "add_arguments", "main", "benchmarks against cuBLAS/cuDNN/CuPy (or the CPU backend)"),
    "train": ("dlgpu.train.cli", "add_arguments", "main", "a LeNet or MLP fits the 8x8 digits, or Figure 1's net two classes (GPU or CPU)"),
    "compile": ("dlgpu.compile", "add_arguments", "main", "build every kernel ahead of time, in parallel"),
}


def build_parser() -> argparse.ArgumentParser:
    from dlgpu import __version__

    parser = argparse.ArgumentParser(prog="dlgpu", description="dlgpu: CUDA kernels for the core of deep learning")
    parser.add_argument("--version", action="version", version=f"dlgpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, add_arguments, _, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        getattr(importlib.import_module(module), add_arguments)(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, _, run, _ = SUBCOMMANDS[args.command]
    return getattr(importlib.import_module(module), run)(args)


if __name__ == "__main__":
    sys.exit(main())
