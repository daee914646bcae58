"""Sub-commands of the ``gatecore`` console script, one module each.

Each module defines ``add_parser(subparsers)``; the order here is the order in ``--help``.
"""

from . import cells, check, demo, predict, train

COMMANDS = [train, predict, demo, cells, check]
