"""``nas supernet ...``: create and inspect supernet checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nas._cli_utils import JsonOpt, SpaceOpt, console, print_json, seed_option

__all__ = ["register"]

supernet_app = typer.Typer(help="Create and inspect supernet checkpoints.", no_args_is_help=True)


@supernet_app.command("init")
def supernet_init(
    space: SpaceOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write "
                                      "(.safetensors).")],
    seed: Annotated[int, seed_option("Random seed of the initialisation")] = 0,
    calibrate: Annotated[bool, typer.Option(help="Set BatchNorm statistics from random inputs "
                                            "so eval outputs are of order 1.")] = True,
) -> None:
    """Write a randomly initialised supernet checkpoint."""
    import torch

    from nas.supernet import OFASupernet, save_supernet

    torch.manual_seed(seed)
    net = OFASupernet(space)
    if calibrate:
        net.calibrate_random(seed=seed)
    save_supernet(net, out, meta={"init": "random", "seed": seed, "calibrated": calibrate})
    n = sum(p.numel() for p in net.parameters())
    console.print(f"wrote {out} (space {net.space.name}, {n / 1e6:.2f}M supernet parameters)")


@supernet_app.command("info")
def supernet_info(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file.")], json_out: JsonOpt = False
) -> None:
    """Show a checkpoint's space and metadata."""
    from nas.supernet import read_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint)
    if json_out:
        print_json(meta)
    else:
        console.print(f"{checkpoint}: space {meta['space']}, format {meta['format']} "
                      f"v{meta['version']}, {json.dumps(meta['extra'])}")



def register(app: typer.Typer) -> None:
    """Add ``nas supernet`` to the root app."""
    app.add_typer(supernet_app, name="supernet")
