"""The root of the ``nas`` command line: ``--version``, ``nas demo`` and ``nas plugins list``.

Every other command lives beside its code, in ``nas/<package>/_cli.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas._cli_utils import (
    MAX_ARCHS,
    MAX_WORKERS,
    JsonOpt,
    console,
    err_console,
    print_json,
    seed_option,
)
from nas._outputs import check_apart, check_output

__all__ = ["register"]


def demo_cmd(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its files (a rerun "
                                          "reuses its measurements).")] = Path("runs/demo"),
    checkpoint: Annotated[Path | None, typer.Option(
        help="Supernet checkpoint (default: the shipped tiny supernet trained on digits).")
    ] = None,
    data: Annotated[str, typer.Option(help="Data for the accuracy proxy.")] = "digits",
    device: Annotated[str, typer.Option(help="Device profile to measure and search for.")
                      ] = "cpu-1t",
    n_latency: Annotated[int, typer.Option(
        "--n-latency", min=4, max=MAX_ARCHS,
        help="Subnets to measure for the latency predictor.")] = 80,
    n_trials: Annotated[int, typer.Option("--n-trials", min=1, max=1_000_000,
                                          help="Search budget.")] = 60,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS,
                                         help="Ray actors of the search.")] = 2,
    seed: Annotated[int, seed_option("Seed of the samples and the sampler.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """The main job on the embedded default, end to end, with a summary.

    Measures a sample of the shipped supernet's subnets on the device in ONNX Runtime, fits
    a latency predictor, runs a constrained accuracy/latency search on a local Ray (budget:
    the median subnet's predicted latency), exports and verifies the chosen subnet, and
    checks its predicted latency against a measurement.
    """
    from nas.demo import run_demo

    # a rerun reuses what the folder holds: an existing one is fine, a file is not
    check_output(workdir, "--workdir", overwrite=True, folder=True, example="runs/demo")
    check_apart(workdir, "--workdir", [("--checkpoint", checkpoint)])
    summary = run_demo(workdir=workdir, checkpoint=checkpoint, data=data, device=device,
                       n_latency=n_latency, n_trials=n_trials, workers=workers, seed=seed,
                       progress=not json_out)
    if json_out:
        print_json(summary)


def plugins_list_cmd(
    registry: Annotated[list[str] | None, typer.Option(
        "--registry", "-r", help="Only this registry (repeatable): spaces, latency-kinds, "
        "devices, data-formats, proxies, accuracy-predictors, samplers, engines.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the plug-ins of every registry: built-in, a user's device files, and those other
    packages add by a `nas.plugins` entry point (one warning line each for those that fail
    to load; they are skipped)."""
    from nas._plugin import list_plugins, loaded_entry_points

    rows, warnings = list_plugins(registry or None)
    reported = set(loaded_entry_points()[1])  # the loader printed these when they failed
    for line in warnings:
        if line not in reported:
            err_console.print(line, markup=False, soft_wrap=True)
    if json_out:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("registry", "name", "description", "tags", "source", title="plug-ins")
    for r in rows:
        table.add_row(r["registry"], r["name"], r["description"], ", ".join(r["tags"]),
                      r["source"])
    console.print(table)


def _version(value: bool) -> None:
    if value:
        import nas

        print(f"nas {nas.__version__}")
        raise typer.Exit()


def register(app: typer.Typer) -> None:
    """The root callback (``--version``) and ``nas demo``."""
    @app.callback()
    def _root(
        version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")] = False,
    ) -> None:
        """Hardware-aware neural architecture search on once-for-all supernets."""

    app.command("demo")(demo_cmd)
    plugins = typer.Typer(help="The plug-ins of every registry (spaces, latency kinds, "
                          "devices, data formats, proxies, samplers, engines...).",
                          no_args_is_help=True)
    plugins.command("list")(plugins_list_cmd)
    app.add_typer(plugins, name="plugins")
