"""``nas report``: a search's report as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas._cli_utils import StorageOpt, console, study_option

__all__ = ["register"]


def report_cmd(
    study: Annotated[str, study_option()],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"),
    storage: StorageOpt = None,
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
