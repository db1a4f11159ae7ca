"""The ``nas`` command line.

Each pipeline stage keeps its commands next to its code (``nas/<stage>/_cli.py``) and exposes
``register(app)``; this module only assembles them. A command may import its own package and
the ones below it; what it needs from a package above it (the search's exporter, for
``nas export --study`` and ``nas finetune --study``) this module hands over as the context's
``obj`` (:class:`Wiring`). A ``NASError`` becomes one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import typer

from nas.errors import NASError


class Wiring:
    """What commands get from the packages above their own: ``ctx.obj`` of every command.

    Imports happen on use, so ``nas --help`` stays free of the heavy packages.
    """

    @property
    def export_trials(self) -> Callable[..., list[Path]]:
        """:func:`nas.search.export_trials`: a search's subnets to verified export folders."""
        from nas.search import export_trials

        return export_trials


app = typer.Typer(
    name="nas",
    help="Hardware-aware neural architecture search on once-for-all supernets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"obj": Wiring()},
)


_REGISTERED = False


def _register_all() -> None:
    """Add every package's commands; each package's ``_cli.register(app)`` adds its own."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from nas import _cli_core
    from nas.devices import _cli as devices_cli
    from nas.export import _cli as export_cli
    from nas.latency import _cli as latency_cli
    from nas.proxies import _cli as proxies_cli
    from nas.report import _cli as report_cli
    from nas.search import _cli as search_cli
    from nas.serve import _cli as serve_cli
    from nas.space import _cli as space_cli
    from nas.supernet import _cli as supernet_cli
    from nas.train import _cli as train_cli

    _cli_core.register(app)
    space_cli.register(app)
    supernet_cli.register(app)
    export_cli.register(app)
    devices_cli.register(app)
    latency_cli.register(app)
    train_cli.register(app)
    proxies_cli.register(app)
    search_cli.register(app)
    serve_cli.register(app)
    report_cli.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nas`` script."""
    _register_all()
    try:
        app(args=argv, prog_name="nas")
    except NASError as exc:
        # One line, whatever the message quotes (a path may hold a line break).
        text = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
