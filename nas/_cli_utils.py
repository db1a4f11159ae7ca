"""What the CLI modules share: the option types that several commands take.

Each pipeline package keeps its commands in its own ``_cli.py`` with ``register(app)``;
:mod:`nas.cli` assembles them. Library modules never import this module (an import-linter
contract in ``pyproject.toml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nas._term import console, err_console, print_json
from nas.errors import ConfigError

__all__ = [
    "SEED_MAX",
    "ArchOpt",
    "CheckpointOpt",
    "DbOpt",
    "DeviceOpt",
    "JsonOpt",
    "SpaceOpt",
    "console",
    "err_console",
    "print_json",
    "seed_option",
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


#: the largest seed: NumPy's and torch's generators take 0 .. 2**32 - 1 everywhere
SEED_MAX = 2**32 - 1


def _check_seed(ctx: typer.Context, param: typer.CallbackParam, value: int | None) -> Any:
    # A NASError, not click's BadParameter: the user sees the one `error:` line every other
    # bad value gets.
    if value is not None and not 0 <= value <= SEED_MAX:
        name = param.opts[0] if param.opts else "--seed"
        raise ConfigError(f"{name} = {value}: must be an integer in 0..{SEED_MAX} (2**32 - 1)")
    return value


def seed_option(help_text: str, *param_decls: str) -> Any:
    """A ``--seed`` option bounded to 0..2**32 - 1 (``Annotated[int, seed_option("...")]``).

    Args:
        help_text: what the seed seeds.
        param_decls: other option names (default ``--seed``).
    """
    return typer.Option(*param_decls, help=f"{help_text} (0..2**32 - 1)", callback=_check_seed)
