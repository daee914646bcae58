"""``gatecore check NAME``: run the conformance check on one cell and print the report.

Exit status: 0 when every check passes, 1 when one fails, 2 for an unknown cell or a bad
option (the message lists the registered cells, or the options the cell accepts).
"""

from __future__ import annotations

import ast
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check", help="run the conformance check on a cell (gradients, lengths, directions, ...)",
        description="Run gatecore's conformance check on one registered cell: shapes and dtypes, "
                    "float64 finite-difference gradients, lengths and padding, bidirectional "
                    "consistency, 2 layers, the workspace path.",
    )
    p.add_argument("name", help="registered cell name (see `gatecore cells`)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="cell option, for example -o reset_after=false (repeatable)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random inputs, an integer >= 0 (default 0)")
    p.set_defaults(func=run)


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"option {text!r} is not KEY=VALUE")
    value = value.strip()
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def run(args) -> int:
    from ..errors import UnknownCellError
    from ..testing import check_cell

    try:
        options = dict(_parse_option(o) for o in args.option)
    except ValueError as exc:
        print(f"gatecore check: {exc}", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"gatecore check: --seed must be an integer >= 0, got {args.seed}", file=sys.stderr)
        return 2
    try:
        report = check_cell(args.name, verbose=True, seed=args.seed, **options)
    except (UnknownCellError, TypeError) as exc:
        print(f"gatecore check: {exc}", file=sys.stderr)
        return 2
    return 0 if report.passed else 1
