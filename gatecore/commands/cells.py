"""``gatecore cells``: list the registered cells, the plugin that provides each, and plugin errors."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("cells", help="list registered cells, their plugins and plugin errors")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..registry.manager import get_registry

    reg = get_registry()
    cells = sorted(reg.cells().items())
    rows = [("CELL", "PLUGIN", "DESCRIPTION")]
    for name, entry in cells:
        spec = entry.spec
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.option_defaults.items())
        text = spec.description + (f" [options: {opts}]" if opts else "")
        rows.append((name, entry.plugin, text))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip())
    errors = reg.errors()
    if errors:
        print(f"\n{len(errors)} plugin error(s); the cells above are unaffected:")
        for plugin, reason in errors:
            print(f"  {plugin}: {reason}")
    return 0
