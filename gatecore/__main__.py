"""``python -m gatecore``: the same as the ``gatecore`` console command (:mod:`gatecore.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
