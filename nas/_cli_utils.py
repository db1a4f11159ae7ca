"""What the CLI modules share: the option types that several commands take.

Each pipeline package keeps its commands in its own ``_cli.py`` with ``register(app)``;
:mod:`nas.cli` assembles them. Library modules never import this module (an import-linter
contract in ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas._term import console, err_console, print_json

__all__ = [
    "ArchOpt",
    "CheckpointOpt",
    "DbOpt",
    "DeviceOpt",
    "JsonOpt",
    "SpaceOpt",
    "console",
    "err_console",
    "print_json",
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
SpaceOpt = Annotated[
    str, typer.Option("--space", "-s", help="Search space name (`nas spaces list`).")
]
ArchOpt = Annotated[
    str,
    typer.Option("--arch", "-a", help='Architecture in OFA format: JSON text '
                 '\'{"ks": [...], "e": [...], "d": [...], "r": 224}\' or @file.json.'),
]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", "-c", help="Trained supernet (.safetensors); needed by inherited, "
    "predictor and weights=inherited.")]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Latency database: SQLAlchemy URL or SQLite file "
                 "(default: $NAS_DB_URL, else latency_db/latency.sqlite)."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", "-d", help="Device profile name (`nas devices list`).")
]
