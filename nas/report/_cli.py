"""``nas report``: a search's report as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas._cli_utils import console

__all__ = ["register"]


def report_cmd(
    study: Annotated[str, typer.Option("--study", help="Study name of the search.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"),
    storage: Annotated[str | None, typer.Option(
        "--storage", help="The search's Optuna storage URL or journal file (default: "
        "runs/studies/<study>.journal).")] = None,
) -> None:
    """Write a search's report: Pareto front, hypervolume, chosen subnets, predictors.

    One HTML file with everything inline (plotly.js included), so it opens offline.
    """
    from nas.report import write_report

    path = write_report(study, storage, out)
    console.print(f"report of {study} written to {path} ({path.stat().st_size / 1e6:.1f} MB)")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""
    app.command("report")(report_cmd)
