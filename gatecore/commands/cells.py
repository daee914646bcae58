"""``gatecore cells``: list the registered cells and the plugin that provides each."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("cells", help="list registered cells and their plugins")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..registry.manager import get_registry

    reg = get_registry()
    cells = reg.cells()
    width = max((len(n) for n in cells), default=4)
    for name, entry in sorted(cells.items()):
        opts = ", ".join(f"{k}={v!r}" for k, v in entry.spec.option_defaults.items())
        print(f"{name:<{width}}  {entry.plugin:<28} {entry.spec.description}"
              + (f"  [options: {opts}]" if opts else ""))
    for plugin, reason in reg.errors():
        print(f"error: plugin {plugin}: {reason}")
    return 0
