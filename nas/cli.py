"""The ``nas`` command line.

Each pipeline stage keeps its commands next to its code (``nas/<stage>/_cli.py``) and exposes
``register(app)``; this module only assembles them. A command may import its own package and
the ones below it; what it needs from a package above it (the search's exporter, for
``nas export --study`` and ``nas finetune --study``) this module hands over as the context's
``obj`` (:class:`Wiring`). A ``NASError``, and click's own usage errors, become one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from nas.errors import NASError

#: the exceptions of the click that typer runs on (its own copy in recent versions)
_click: Any = importlib.import_module(typer.BadParameter.__module__)


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


def _one_line(text: str) -> str:
    # One line, whatever the message quotes (a path may hold a line break).
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _shown(value: Any) -> str:
    """A value from the command line as a message shows it: numbers bare, text quoted."""
    text = str(value)
    try:
        float(text)
    except ValueError:
        return repr(value)
    return text


def _usage_error(exc: Any) -> str:
    """Click's usage error (a bad, missing or unknown option) as the text of one line.

    A bad value names the option and the value (``--n = -1: must be greater than or equal to
    0``), as a ``NASError`` does; the rest say where ``--help`` is.
    """
    if isinstance(exc, typer.BadParameter) and not isinstance(exc, _click.MissingParameter) \
            and exc.param is not None:
        param = exc.param
        name = (param.opts[0] if param.param_type_name == "option" and param.opts
                else (param.name or "value").upper())
        message = exc.message
        cause = exc.__cause__
        value: Any = None
        if cause is not None and type(cause).__name__ == "ValidationError":
            # typer checks types and bounds with pydantic, which keeps the value it refused
            errors = cause.errors()  # type: ignore[attr-defined]
            if errors:
                value = errors[0].get("input")
                message = str(errors[0].get("msg", message))
        if message.startswith("Input should be "):
            message = "must be " + message[len("Input should be "):]
        return f"{name}: {message}" if value is None else f"{name} = {_shown(value)}: {message}"
    text = exc.format_message().rstrip(".")
    text = text[:1].lower() + text[1:]
    if exc.ctx is not None:
        text += f" (see `{exc.ctx.command_path} --help`)"
    return text


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``nas`` script.

    Bad input, whether our own (a ``NASError``) or click's (a missing argument, an unknown
    option, a value of the wrong type or out of range), is one ``error: ...`` line on stderr and
    exit code 2. ``--help`` and the exit codes of the commands are click's.
    """
    _register_all()
    try:
        # standalone_mode=False: click's usage errors come here instead of typer's box
        code = app(args=argv, prog_name="nas", standalone_mode=False)
    except NASError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except getattr(_click, "NoArgsIsHelpError", ()):
        sys.exit(2)  # the help is printed already (`nas`, `nas spaces`)
    except _click.UsageError as exc:
        print(f"error: {_one_line(_usage_error(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except _click.ClickException as exc:
        print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    # without standalone mode, click returns the code of a `typer.Exit` (0 for --help) and
    # leaves the exit to us: SystemExit always, as in standalone mode
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
