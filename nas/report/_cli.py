"""``nas report``: a search's report as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas._cli_utils import OverwriteOpt, StorageOpt, console, study_option
from nas._outputs import check_output, storage_file

__all__ = ["register"]


def report_cmd(
    study: Annotated[str, study_option()],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"),
    storage: StorageOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a search's report: Pareto front, hypervolume, chosen subnets, predictors.

    One HTML file with everything inline (plotly.js included), so it opens offline. An
    existing --out needs --overwrite; the study's own storage is never written.
    """
    from nas.report import write_report
    from nas.search import default_storage

    check_output(out, inputs=[("--storage", storage_file(storage or default_storage(study)))],
                 overwrite=overwrite, example="report.html")

    path = write_report(study, storage, out)
    console.print(f"report of {study} written to {path} ({path.stat().st_size / 1e6:.1f} MB)")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""
    app.command("report")(report_cmd)
