"""The ``gatecore`` console command (argparse).

Sub-commands live in :mod:`gatecore.commands`, one module each, with
``add_parser(subparsers)`` that registers the sub-command and sets ``func(args) -> int``.
Errors that are the user's (bad file, bad option) print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import COMMANDS

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="gatecore",
        description="gatecore: gated recurrent networks (LSTM, GRU, plugin cells) on Numba kernels",
    )
    parser.add_argument("--version", action="version", version=f"gatecore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gatecore`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
