"""What the CLI modules share: the option types that several commands take.

Each pipeline package keeps its commands in its own ``_cli.py`` with ``register(app)``;
:mod:`nas.cli` assembles them. Library modules never import this module (an import-linter
contract in ``pyproject.toml``).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from nas._term import console, err_console, print_json
from nas.errors import ConfigError

__all__ = [
    "MAX_ARCHS",
    "MAX_MODELS",
    "MAX_WORKERS",
    "SEED_MAX",
    "ArchOpt",
    "CheckpointOpt",
    "DbOpt",
    "DeviceOpt",
    "JsonOpt",
    "OldTorchDeviceOpt",
    "OverwriteOpt",
    "SpaceOpt",
    "StorageOpt",
    "StudyOpt",
    "TorchDeviceOpt",
    "console",
    "err_console",
    "print_json",
    "require_torch_device",
    "seed_option",
    "storage_option",
    "study_option",
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
#: ``--overwrite`` of a command writing ``--out``: without it an existing output is refused
#: (``nas._outputs.check_output``)
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")]
#: ``--device`` is always a device profile; a torch device is ``--torch-device``
#: (:data:`TorchDeviceOpt`)
DeviceOpt = Annotated[
    str, typer.Option("--device", "-d", help="Device profile name (`nas devices list`).")
]


#: the largest seed: NumPy's and torch's generators take 0 .. 2**32 - 1 everywhere
SEED_MAX = 2**32 - 1

# Caps on counts, so that a typo (`--n 1000000000`) is one line, not a run until killed. Each
# is far above any real use and documented in the option's help through click's range.
#: architectures one command samples, scores or measures (`nas spaces sample --n`, `nas
#: latency measure --n`, `nas accuracy fit --n-train`): minutes of work each at most
MAX_ARCHS = 100_000
#: models a measurement kit holds (`nas latency kit --n`): each is an ONNX file to copy
MAX_MODELS = 10_000
#: processes or threads one command starts (`--workers`, `--threads`)
MAX_WORKERS = 1024


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


# ---------------------------------------------------------------------- torch device
_TORCH_DEVICE_RE = re.compile(r"^(cpu|cuda(:[0-9]{1,3})?)$")
#: where the old spelling's value waits for --torch-device's check (``ctx.meta``)
_LEGACY_KEY = "nas.legacy_torch_device"


def _check_torch_device(ctx: typer.Context, param: typer.CallbackParam, value: str) -> Any:
    name = param.opts[0] if param.opts else "--torch-device"
    note = " (a torch device; a device profile is --device)"
    legacy = ctx.meta.get(_LEGACY_KEY)
    if legacy is not None:  # the old --device spelling was given (and warned about)
        source = ctx.get_parameter_source(param.name or "")
        if source is not None and source.name != "DEFAULT":
            raise ConfigError(f"--device {legacy!r} and {name} {value!r}: give {name} only "
                              "(--device is its old name)")
        value, name, note = legacy, f"--device (now {name})", ""
    if not _TORCH_DEVICE_RE.match(value):
        raise ConfigError(f"{name} = {value!r}: must be cpu, cuda or cuda:N{note}")
    return value


def _old_torch_device(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> Any:
    if value is not None:
        typer.echo("warning: --device is now --torch-device (a profile name elsewhere)",
                   err=True)
        ctx.meta[_LEGACY_KEY] = value
    return value


#: A torch device: ``cpu``, ``cuda`` or ``cuda:N``, checked here; ``--device`` is a device
#: profile everywhere (:data:`DeviceOpt`).
TorchDeviceOpt = Annotated[str, typer.Option(
    "--torch-device", help="Torch device: cpu, cuda or cuda:N.",
    callback=_check_torch_device)]

def require_torch_device(device: str, torch: ModuleType) -> None:
    """Refuse a GPU that torch does not see here (a :data:`TorchDeviceOpt` used in this process).

    Not part of the option's check: a GPU on the workers of a Ray cluster need not be here.

    Args:
        device: the checked value of a :data:`TorchDeviceOpt`.
        torch: the ``torch`` module, imported by the caller (this module may not: the commands
            of ``nas.space`` import it, and the space knows no torch).

    Raises:
        ConfigError: ``cuda`` or ``cuda:N`` without CUDA, or N past the devices torch sees.
    """
    if device == "cpu":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(device.partition(":")[2] or 0) >= count:
        seen = f"{count} CUDA device(s), cuda:0..cuda:{count - 1}" if count else "no CUDA device"
        raise ConfigError(f"--torch-device = {device!r}: torch sees {seen} here")


#: The old spelling of :data:`TorchDeviceOpt` (``--device cpu|cuda`` of ``nas train``, ``nas
#: finetune`` and the proxies' commands), still taken for one release: hidden from ``--help``,
#: it warns and hands its value to ``--torch-device``. A command with a ``TorchDeviceOpt``
#: adds ``old_device: OldTorchDeviceOpt = None`` (the function never sees a value).
OldTorchDeviceOpt = Annotated[str | None, typer.Option(
    "--device", hidden=True, expose_value=False, callback=_old_torch_device,
    is_eager=True)]  # eager: checked before --torch-device, whatever the order given


# ---------------------------------------------------------------------- searches
#: a study written by ``nas search``: its own name or one derived from the config's
_STUDY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STUDY_HELP = "Study name of the search"
_STORAGE_HELP = ("Optuna storage of the searches: a journal file, sqlite:///FILE or "
                 "postgresql://...")


def _check_study(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> Any:
    if value is not None and not _STUDY_RE.match(value):
        raise ConfigError(f"--study = {value!r}: use letters, digits, '_', '.', '-' (not "
                          "starting with a symbol)")
    return value


def _check_storage(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> Any:
    # an empty value (`--storage "$UNSET"`) is the default, as it always was
    return value or None


def study_option(note: str = "") -> Any:
    """The ``--study`` option (``Annotated[str | None, study_option()]``): a search's name.

    Args:
        note: what the command does with it, appended to the shared help text.
    """
    return typer.Option("--study", help=_STUDY_HELP + (f" {note}" if note else "") + ".",
                        callback=_check_study)


def storage_option(default: str = "runs/studies/<study>.journal") -> Any:
    """The ``--storage`` option (``Annotated[str | None, storage_option()]``): a search's storage.

    Args:
        default: where the command looks without it, for the help text.
    """
    return typer.Option("--storage", help=f"{_STORAGE_HELP} (default {default}).",
                        callback=_check_storage)


#: ``--study NAME`` of a search, optional
StudyOpt = Annotated[str | None, study_option()]
#: ``--storage`` of a search (default ``runs/studies/<study>.journal``)
StorageOpt = Annotated[str | None, storage_option()]
