"""The ``nas`` command line.

Each pipeline stage keeps its commands next to its code (``nas/<stage>/_cli.py``) and exposes
``register(app)``; this module only assembles them. A ``NASError`` becomes one line on stderr
and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from nas.errors import NASError

app = typer.Typer(
    name="nas",
    help="Hardware-aware neural architecture search on once-for-all supernets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


_REGISTERED = False


def _register_all() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from nas import _cli_core

    _cli_core.register(app)

    latency_app = typer.Typer(
        help="Measure latencies, import and export them, fit and query predictors.",
        no_args_is_help=True,
    )
    app.add_typer(latency_app, name="latency")
    from nas.latency import _cli_data

    _cli_data.register(app, latency_app)
    from nas.latency import _cli as _cli_latency

    _cli_latency.register(latency_app)
    from nas.train._cli import register as register_train

    register_train(app)
    from nas.proxies._cli import register as register_proxies

    register_proxies(app)
    from nas.search._cli import register as register_search

    register_search(app)
    from nas.serve._cli import register as register_serve

    register_serve(app)
    from nas.report._cli import register as register_report

    register_report(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nas`` script."""
    _register_all()
    try:
        app(args=argv, prog_name="nas")
    except NASError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
