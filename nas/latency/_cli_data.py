"""Commands for device profiles (``nas devices ...``) and latency data (``nas latency
import|export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nas._cli_utils import console, print_json
from nas.devices import (
    PROVIDERS,
    DeviceProfile,
    add_device,
    device_from_file,
    device_path,
    get_device,
    list_devices,
)
from nas.errors import ConfigError

__all__ = ["register"]

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="NAS_DB_URL",
        help="Latency database: a SQLAlchemy URL (sqlite:///f.sqlite, postgresql+psycopg2://"
        "user:pw@host/db) or a SQLite file path. Default: $NAS_DB_URL, else "
        "latency_db/latency.sqlite.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _provider(value: str | None) -> str | None:
    if value is None:
        return None
    return _PROVIDER_ALIASES.get(value.lower(), value)


def _profile_table(p: DeviceProfile, origin: str) -> Table:
    table = Table(title=f"device {p.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in p.to_dict().items():
        table.add_row(key, "" if value is None else str(value))
    table.add_row("file", origin)
    return table


def _devices_app() -> typer.Typer:
    app = typer.Typer(
        help="Device profiles: how and where latency is measured "
        "(latency_db/devices/*.yaml, plus $NAS_DEVICES_DIR).",
        no_args_is_help=True,
    )

    @app.command("list")
    def list_cmd(json_: JsonOption = False) -> None:
        """List the known device profiles, shipped and user-added."""
        profiles = [get_device(n) for n in list_devices()]
        if json_:
            print_json([p.to_dict() for p in profiles])
            return
        table = Table(title="devices")
        table.add_column("name", no_wrap=True)  # names are copied into commands
        for col in ("provider", "threads", "batch", "precision", "placement", "external"):
            table.add_column(col)
        table.add_column("description", overflow="fold")
        for p in profiles:
            where = p.placement if p.ray_resource is None else f"ray ({p.ray_resource})"
            table.add_row(
                p.name,
                p.provider.removesuffix("ExecutionProvider"),
                f"{p.intra_op_threads}/{p.inter_op_threads}",
                str(p.batch_size),
                p.precision,
                where,
                "yes" if p.external else "",
                p.description,
            )
        console.print(table)

    @app.command("show")
    def show_cmd(
        name: Annotated[str, typer.Argument(help="Device name (see `nas devices list`).")],
        json_: JsonOption = False,
    ) -> None:
        """Show one device profile and the file it comes from."""
        profile = get_device(name)
        origin = str(device_path(name))
        if json_:
            print_json({**profile.to_dict(), "file": origin})
        else:
            console.print(_profile_table(profile, origin))

    @app.command("add")
    def add_cmd(
        name: Annotated[str, typer.Argument(help="New device name (letters, digits, . _ -).")],
        threads: Annotated[
            int | None, typer.Option("--threads", help="Intra-op threads (default: 1).")
        ] = None,
        inter_op_threads: Annotated[
            int | None, typer.Option("--inter-op-threads", help="Inter-op threads (default: 1).")
        ] = None,
        batch_size: Annotated[
            int | None, typer.Option("--batch-size", help="Images per call (default: 1).")
        ] = None,
        precision: Annotated[
            str | None, typer.Option("--precision", help="fp32 or int8 (default: fp32).")
        ] = None,
        provider: Annotated[
            str | None,
            typer.Option(
                "--provider",
                help=f"ONNX Runtime provider: {', '.join(PROVIDERS)} (or cpu, cuda, tensorrt) "
                "(default: CPUExecutionProvider).",
            ),
        ] = None,
        graph_optimization: Annotated[
            str | None,
            typer.Option(
                "--graph-optimization", help="disable, basic, extended or all (default: all)."
            ),
        ] = None,
        execution_mode: Annotated[
            str | None,
            typer.Option("--execution-mode", help="sequential or parallel (default: sequential)."),
        ] = None,
        spinning: Annotated[
            bool | None,
            typer.Option(
                "--spinning/--no-spinning", help="Let idle ORT threads spin (default: spin)."
            ),
        ] = None,
        placement: Annotated[
            str | None,
            typer.Option(
                "--placement",
                help="local or ray (default: ray with --ray-resource, else local).",
            ),
        ] = None,
        ray_resource: Annotated[
            str | None,
            typer.Option(
                "--ray-resource",
                help="Ray custom resource the measurement task requests, e.g. device:pi4.",
            ),
        ] = None,
        external: Annotated[
            bool | None,
            typer.Option(
                "--external/--no-external",
                help="Measurements are imported only, never measured from here.",
            ),
        ] = None,
        description: Annotated[
            str | None, typer.Option("--description", help="Free text shown in lists.")
        ] = None,
        from_file: Annotated[
            Path | None,
            typer.Option(
                "--from-file",
                help="Start from this YAML profile; the options above override its fields.",
            ),
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="Replace an existing device of that name.")
        ] = False,
        json_: JsonOption = False,
    ) -> None:
        """Add a device profile (written to $NAS_DEVICES_DIR or latency_db/devices/).

        Example: nas devices add pi4-4t --threads 4 --ray-resource device:pi4
        """
        fields: dict[str, Any] = device_from_file(from_file).to_dict() if from_file else {}
        given = {
            "intra_op_threads": threads,
            "inter_op_threads": inter_op_threads,
            "batch_size": batch_size,
            "precision": precision,
            "provider": _provider(provider),
            "graph_optimization": graph_optimization,
            "execution_mode": execution_mode,
            "allow_spinning": spinning,
            "placement": placement,
            "ray_resource": ray_resource,
            "external": external,
            "description": description,
        }
        fields.update({k: v for k, v in given.items() if v is not None})
        if ray_resource is not None and placement is None:
            fields["placement"] = "ray"
        fields["name"] = name
        profile = DeviceProfile.from_dict(fields)
        path = add_device(profile, overwrite=overwrite)
        if json_:
            print_json({**profile.to_dict(), "file": str(path)})
        else:
            console.print(f"added device [bold]{profile.name}[/bold] -> {path}")

    return app


def register(root_app: typer.Typer, latency_app: typer.Typer) -> None:
    """Add the ``devices`` group to ``root_app`` and ``import``/``export`` to ``latency_app``."""
    root_app.add_typer(_devices_app(), name="devices")

    @latency_app.command("import")
    def import_cmd(
        file: Annotated[
            Path,
            typer.Argument(
                help='Measurements: .jsonl ({"arch": {...}, "latency_ms": x} per line), '
                ".csv (columns arch or ks,e,d,r, and latency_ms) or .parquet."
            ),
        ],
        device: Annotated[
            str,
            typer.Option(
                "--device",
                help="Device they were measured on; an unknown one is created as an external "
                "profile.",
            ),
        ],
        space: Annotated[str, typer.Option("--space", help="Search space of the architectures.")],
        db: DbOption = None,
        json_: JsonOption = False,
    ) -> None:
        """Import latencies measured elsewhere, all or nothing (source "imported").

        Optional fields: p10, p90, n_runs, status (ok/failed), error, env. A bad record fails
        the whole import with its line number; nothing is written.
        """
        from nas.db import LatencyDB
        from nas.latency._import import import_measurements

        with LatencyDB(db) as store:
            report = import_measurements(store, device, space, file)
            url = store.display_url
        if json_:
            print_json({**report.to_dict(), "db": url})
            return
        console.print(
            f"imported {report.n_rows} measurement(s) of {report.space} on "
            f"[bold]{report.device}[/bold] ({report.n_failed} failed) into {url}"
        )
        if report.device_created:
            console.print(f"created external device {report.device!r} -> {report.profile_path}")

    @latency_app.command("export")
    def export_cmd(
        out: Annotated[
            Path, typer.Option("--out", help="Output file: .csv or .parquet (needs pyarrow).")
        ],
        device: Annotated[
            str | None, typer.Option("--device", help="Only this device (default: all).")
        ] = None,
        space: Annotated[
            str | None, typer.Option("--space", help="Only this search space (default: all).")
        ] = None,
        db: DbOption = None,
        json_: JsonOption = False,
    ) -> None:
        """Export measurements (every status and source) to CSV or Parquet.

        The file can be imported again with `nas latency import`.
        """
        from nas.db import LatencyDB
        from nas.latency._import import export_measurements

        if out.suffix.lower() not in (".csv", ".parquet"):
            raise ConfigError(f"--out must end in .csv or .parquet, got {str(out)!r}")
        with LatencyDB(db) as store:
            n = export_measurements(store, out, device=device, space=space)
            url = store.display_url
        if json_:
            print_json(
                {"path": str(out), "n_rows": n, "device": device, "space": space, "db": url}
            )
            return
        console.print(f"exported {n} measurement(s) from {url} -> {out}")
