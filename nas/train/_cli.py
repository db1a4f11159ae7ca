"""``nas train``: supernet training from an experiment's YAML configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas._cli_utils import JsonOpt, console, print_json

__all__ = ["register"]


def train_cmd(
    config: Annotated[Path, typer.Option(
        "--config", "-c", help="Experiment configuration (YAML): space, data, phases; see "
        "experiments/cifar10_supernet/config.yaml.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder (default: the config's `out`).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out after an interruption (loses at most the "
        "epoch in progress); starts it when there is none.")] = False,
    device: Annotated[str, typer.Option(
        "--device", help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(
        "--workers", "-w", min=1, help="Data-parallel workers on Ray Train (gloo on CPU, NCCL "
        "on GPU); 1 trains in this process.")] = 1,
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster to run the workers on (default $RAY_ADDRESS, else a "
        "local Ray instance). Implies Ray even with --workers 1.")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="torch CPU threads (per worker with --workers).")] = None,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Show a progress bar per epoch (without one: a plain "
        "progress line every 5 minutes, for logs).")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Train a once-for-all supernet (progressive shrinking or the sandwich rule).

    Runs the config's phases: the full network, then elastic kernel, depth and expand ratio
    with distillation from the full network (Once-for-All), or the sandwich rule.
    Checkpoints after every epoch (under OUT/checkpoints), metrics in OUT/metrics.csv, the
    final supernet in OUT/supernet.safetensors. A NaN loss stops the run and keeps the last
    good checkpoint.
    """
    import torch

    from nas.train import load_config, train_distributed, train_supernet

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"must be cpu or cuda, got {device!r}", param_hint="--device")
    cfg = load_config(config)
    if workers > 1 or address is not None:
        result = train_distributed(cfg, out, workers=workers, address=address, device=device,
                                   resume=resume, cpus_per_worker=threads, progress=progress)
    else:
        if threads:
            torch.set_num_threads(threads)
        result = train_supernet(cfg, out, resume=resume, device=device, progress=progress,
                                console=console)
    if json_out:
        from dataclasses import asdict

        print_json({"out": str(result.out), "checkpoint": str(result.checkpoint),
                    "progress": asdict(result.progress),
                    "last_epoch": result.metrics[-1] if result.metrics else None})


def register(app: typer.Typer) -> None:
    """Add ``train`` to the root app."""
    app.command("train")(train_cmd)
