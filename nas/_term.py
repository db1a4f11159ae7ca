"""Terminal output shared by the library and the CLI: consoles, JSON output, progress bars.

Long library work (measuring, training, searching) reports progress through
:func:`progress_bar`, which draws on stderr so that ``--json`` output on stdout stays clean.
The command-line layer (``nas.cli`` and each package's ``_cli.py``) builds on this module;
the library never imports the CLI.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

__all__ = ["console", "err_console", "print_json", "progress_bar"]

# soft_wrap: a long line (a path, an error) is left whole for the terminal to fold, never
# broken by rich at 80 columns when the output is a pipe or a file that scripts read
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    """Machine-readable output: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool = True, console: Console | None = None,
    fields: dict[str, Any] | None = None, field_format: str = "", transient: bool = False,
) -> Iterator[Callable[..., None]]:
    """A rich progress bar with count, elapsed time and ETA; yields ``advance(**fields)``.

    Args:
        fields: extra per-task fields and their initial values, shown with ``field_format``
            (e.g. ``"loss {task.fields[loss]:.4f}"``).
        enabled: when False, ``advance`` does nothing and nothing is drawn.
    """
    if not enabled:
        yield lambda **_: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    if field_format:
        columns.append(TextColumn(field_format))
    with Progress(*columns, console=console or err_console, transient=transient) as prog:
        task = prog.add_task(description, total=total, **(fields or {}))

        def advance(**values: Any) -> None:
            prog.update(task, advance=1, **values)

        yield advance
