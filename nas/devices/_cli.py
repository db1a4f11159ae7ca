"""``nas devices list|show|add``: the device profiles, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nas._cli_utils import JsonOpt, console, err_console, print_json
from nas.devices import (
    DEVICES,
    PROVIDERS,
    DeviceProfile,
    add_device,
    device_from_file,
    device_path,
    get_device,
    list_devices,
    load_devices,
)
from nas.errors import ConfigError

__all__ = ["register"]

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}

# ---------------------------------------------------------------------------- options of `add`
NewNameArg = Annotated[str, typer.Argument(help="New device name (letters, digits, . _ -).")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="Intra-op threads (default: 1).")
]
InterOpOpt = Annotated[
    int | None, typer.Option("--inter-op-threads", help="Inter-op threads (default: 1).")
]
BatchOpt = Annotated[
    int | None, typer.Option("--batch-size", help="Images per call (default: 1).")
]
PrecisionOpt = Annotated[
    str | None, typer.Option("--precision", help="fp32 or int8 (default: fp32).")
]
ProviderOpt = Annotated[
    str | None,
    typer.Option(
        "--provider",
        help=f"ONNX Runtime provider: {', '.join(PROVIDERS)} (or cpu, cuda, tensorrt) "
        "(default: CPUExecutionProvider).",
    ),
]
GraphOptOpt = Annotated[
    str | None,
    typer.Option("--graph-optimization", help="disable, basic, extended or all (default: all)."),
]
ModeOpt = Annotated[
    str | None,
    typer.Option("--execution-mode", help="sequential or parallel (default: sequential)."),
]
SpinningOpt = Annotated[
    bool | None,
    typer.Option("--spinning/--no-spinning", help="Let idle ORT threads spin (default: spin)."),
]
PlacementOpt = Annotated[
    str | None,
    typer.Option(
        "--placement", help="local or ray (default: ray with --ray-resource, else local)."
    ),
]
RayResourceOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-resource",
        help="Ray custom resource the measurement task requests, e.g. device:pi4.",
    ),
]
ExternalOpt = Annotated[
    bool | None,
    typer.Option(
        "--external/--no-external",
        help="Measurements are imported only, never measured from here.",
    ),
]
PrefillOpt = Annotated[
    int | None,
    typer.Option("--prefill", metavar="P", help=(
        "A language model's profile: each timed call is the prefill of a P-token prompt "
        "(time to the first token).")),
]
DecodeOpt = Annotated[
    int | None,
    typer.Option("--decode", metavar="C", help=(
        "A language model's profile: each timed call decodes one token at context C (the "
        "KV cache holding C - 1 positions).")),
]
RecomputeOpt = Annotated[
    bool,
    typer.Option("--recompute", help=(
        "With --decode: recompute all C positions each token, without a cache (what a "
        "runtime without one pays).")),
]
InputResolutionOpt = Annotated[
    int | None,
    typer.Option("--input-resolution", metavar="SIDE", help=(
        "Image subnets: time every one on SIDE x SIDE inputs instead of its own resolution "
        "(small inputs, where per-operator overhead sets latency).")),
]
DescriptionOpt = Annotated[
    str | None, typer.Option("--description", help="Free text shown in lists.")
]
FromFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-file", help="Start from this YAML profile; the options above override its fields."
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing device of that name.")
]


# ---------------------------------------------------------------------------- helpers
def _provider(value: str | None) -> str | None:
    if value is None:
        return None
    return _PROVIDER_ALIASES.get(value.lower(), value)


def _row(p: DeviceProfile) -> dict[str, Any]:
    """A profile as a JSON row: its fields, with the keys every plug-in listing has (name,
    description, tags) and where it comes from (``nas``, ``user`` or a plug-in package)."""
    return {**p.to_dict(), "description": p.description, "tags": sorted(p.tags),
            "source": DEVICES.source(p.name)}


def _origin(name: str) -> str:
    """The file a device is read from, or the plug-in package that registered it."""
    if DEVICES.source(name) not in ("nas", "user"):
        return f"registered by the plug-in package {DEVICES.source(name)}"
    return str(device_path(name))


def _profile_table(p: DeviceProfile, origin: str) -> Table:
    table = Table(title=f"device {p.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in {**p.to_dict(), "description": p.description}.items():
        table.add_row(key, "" if value is None else str(value))
    table.add_row("file", origin)
    return table


def _devices_table(profiles: list[DeviceProfile]) -> Table:
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
    return table


def _profile_from_options(
    name: str, from_file: Path | None, given: dict[str, Any]
) -> DeviceProfile:
    """The profile ``nas devices add`` describes: the file's fields, then the options given.

    ``given`` maps profile fields to option values, ``None`` for an option not given.
    """
    fields: dict[str, Any] = device_from_file(from_file).to_dict() if from_file else {}
    fields.update({k: v for k, v in given.items() if v is not None})
    if given.get("ray_resource") is not None and given.get("placement") is None:
        fields["placement"] = "ray"  # a Ray resource means a Ray placement
    fields["name"] = name
    return DeviceProfile.from_dict(fields)


# ---------------------------------------------------------------------------- commands
def list_cmd(json_: JsonOpt = False) -> None:
    """List the known device profiles, shipped and user-added (a broken file is reported
    in one line on stderr, and the others are listed)."""
    profiles, errors = load_devices()
    for line in errors:
        err_console.print(f"warning: skipped {line}", markup=False, soft_wrap=True)
    if json_:
        print_json([_row(p) for p in profiles])
    else:
        console.print(_devices_table(profiles))


def show_cmd(
    name: Annotated[str, typer.Argument(help="Device name (see `nas devices list`).")],
    json_: JsonOpt = False,
) -> None:
    """Show one device profile and the file it comes from."""
    profile = get_device(name)
    origin = _origin(name)
    if json_:
        print_json({**_row(profile), "file": origin})
    else:
        console.print(_profile_table(profile, origin))


def add_cmd(
    name: NewNameArg,
    threads: ThreadsOpt = None,
    inter_op_threads: InterOpOpt = None,
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = None,
    provider: ProviderOpt = None,
    graph_optimization: GraphOptOpt = None,
    execution_mode: ModeOpt = None,
    spinning: SpinningOpt = None,
    placement: PlacementOpt = None,
    ray_resource: RayResourceOpt = None,
    external: ExternalOpt = None,
    description: DescriptionOpt = None,
    prefill: PrefillOpt = None,
    decode: DecodeOpt = None,
    recompute: RecomputeOpt = False,
    input_resolution: InputResolutionOpt = None,
    from_file: FromFileOpt = None,
    overwrite: OverwriteOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Add a device profile (written to $NAS_DEVICES_DIR, else ~/.local/share/nas/devices).

    Examples: nas devices add pi4-4t --threads 4 --ray-resource device:pi4;
    nas devices add phone-decode256 --external --decode 256 (a language model's decoding).
    """
    if prefill is not None and decode is not None:
        raise ConfigError("--prefill and --decode: a profile times one workload; add one "
                          "profile for each")
    if recompute and decode is None:
        raise ConfigError("--recompute is for a decode workload: give --decode C too")
    workload = ({"phase": "prefill", "prompt": prefill} if prefill is not None else
                {"phase": "decode", "context": decode,
                 "cache": "recompute" if recompute else "kv"} if decode is not None else None)
    profile = _profile_from_options(name, from_file, {
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
        "workload": workload,
        "input_resolution": input_resolution,
    })
    existed = not overwrite and name in list_devices()
    path = add_device(profile, overwrite=overwrite)
    if json_:
        print_json({**_row(profile), "file": str(path)})
    elif existed:  # add_device refuses a profile with other settings
        console.print(f"device [bold]{profile.name}[/bold] exists with these settings: {path}")
    else:
        console.print(f"added device [bold]{profile.name}[/bold] -> {path}")


def register(app: typer.Typer) -> None:
    """Add the ``devices`` group (``list``, ``show``, ``add``) to the root ``app``."""
    devices = typer.Typer(
        help="Device profiles: how and where latency is measured "
        "(shipped in latency_db/devices/, yours in $NAS_DEVICES_DIR or "
        "~/.local/share/nas/devices).",
        no_args_is_help=True,
    )
    devices.command("list")(list_cmd)
    devices.command("show")(show_cmd)
    devices.command("add")(add_cmd)
    app.add_typer(devices, name="devices")
