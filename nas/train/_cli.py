"""``nas train`` (supernet training from an experiment's YAML configuration) and ``nas finetune``
(an exported subnet trained standalone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas._cli_utils import (
    MAX_WORKERS,
    JsonOpt,
    OldTorchDeviceOpt,
    StorageOpt,
    TorchDeviceOpt,
    console,
    print_json,
    require_torch_device,
    seed_option,
    study_option,
)
from nas._outputs import check_apart, check_output
from nas.errors import ConfigError

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
    device: TorchDeviceOpt = "cpu",
    old_device: OldTorchDeviceOpt = None,
    workers: Annotated[int, typer.Option(
        "--workers", "-w", min=1, max=MAX_WORKERS,
        help="Data-parallel workers on Ray Train (gloo on CPU, NCCL "
        "on GPU); 1 trains in this process.")] = 1,
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster to run the workers on (default $RAY_ADDRESS, else a "
        "local Ray instance). Implies Ray even with --workers 1.")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, max=MAX_WORKERS,
        help="torch CPU threads (per worker with --workers).")] = None,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Show a progress bar per epoch (without one: a plain "
        "progress line every 5 minutes, for logs).")] = True,
    budget_minutes: Annotated[float | None, typer.Option(
        "--budget-minutes", min=0.01, help="Language models (a gpt space): stop cleanly after "
        "this many minutes of training, still writing the final supernet (default: the "
        "config's budget_minutes).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a once-for-all supernet (progressive shrinking or the sandwich rule), or a
    language-model supernet when the config's space is of the gpt family.

    Runs the config's phases: the full network, then elastic kernel, depth and expand ratio
    with distillation from the full network (Once-for-All), or the sandwich rule.
    Checkpoints after every epoch (under OUT/checkpoints), metrics in OUT/metrics.csv, the
    final supernet in OUT/supernet.safetensors. A NaN loss stops the run and keeps the last
    good checkpoint.
    """
    import torch

    from nas.train import LMTrainConfig, load_any_config, train_distributed, train_supernet

    distributed = workers > 1 or address is not None
    if distributed and device not in ("cpu", "cuda"):
        raise ConfigError(f"--torch-device = {device!r} with Ray workers: must be cpu or cuda "
                          "(each worker gets a GPU of its own)")
    if not distributed:
        require_torch_device(device, torch)
    any_cfg = load_any_config(config)
    if isinstance(any_cfg, LMTrainConfig):
        _train_lm(any_cfg, config, out, resume, device, workers, address, threads, progress,
                  budget_minutes, json_out)
        return
    cfg = any_cfg
    # a run never writes over or into what it reads (the existing run in --out is --resume's
    # rule; a config kept in --out, the run's own config.yaml, is fine)
    data = cfg.data.source if Path(cfg.data.source).exists() else None  # not "digits"
    check_apart(out or cfg.out, "--out", [("--config", config), ("the config's init", cfg.init),
                                          ("the config's data", data)])
    if distributed:
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


def _train_lm(cfg: object, config: Path, out: Path | None, resume: bool, device: str,
              workers: int, address: str | None, threads: int | None, progress: bool,
              budget_minutes: float | None, json_out: bool) -> None:
    import torch

    from nas.train import LMTrainConfig, train_lm

    assert isinstance(cfg, LMTrainConfig)
    if workers > 1 or address is not None:
        raise ConfigError("--workers/--address: a language-model supernet trains in this "
                          "process only")
    require_torch_device(device, torch)
    data = cfg.data.source if Path(cfg.data.source).exists() else None
    check_apart(out or cfg.out, "--out", [("--config", config), ("the config's init", cfg.init),
                                          ("the config's data", data)])
    if threads:
        torch.set_num_threads(threads)
    result = train_lm(cfg, out, resume=resume, device=device, progress=progress,
                      budget_minutes=budget_minutes, console=console)
    if json_out:
        from dataclasses import asdict

        print_json({"out": str(result.out), "checkpoint": str(result.checkpoint),
                    "progress": asdict(result.progress), "stopped_early": result.stopped_early,
                    "last": result.metrics[-1] if result.metrics else None})


def finetune_cmd(
    ctx: typer.Context,
    source: Annotated[Path | None, typer.Argument(
        help="Export folder to fine-tune (what `nas export` writes); or use --study/--trial.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="New export folder to write (missing or empty, unless "
        "--overwrite). The run's checkpoint and metrics.csv go to OUT.finetune/ beside it.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", "-e", help="Passes over the training set (at least 1).")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", "-d", help="Dataset: image folder, .tar/.tar.gz, CIFAR-10 folder/archive, "
        ".npz or 'digits' (default: the one the teacher checkpoint was trained on).")] = None,
    study: Annotated[str | None, study_option("to fine-tune a subnet of (with --trial)")
                     ] = None,
    trial: Annotated[int | None, typer.Option(
        "--trial", "-t", help="Trial number of --study.")] = None,
    storage: StorageOpt = None,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="With --study: the supernet checkpoint (default the "
        "search's); it is also the teacher.")] = None,
    teacher: Annotated[Path | None, typer.Option(
        "--teacher", help="Supernet checkpoint whose largest subnet teaches (default: the "
        "checkpoint the export's manifest names).")] = None,
    kd: Annotated[bool, typer.Option(
        "--kd/--no-kd", help="Distil from the teacher (CE + kd-ratio x soft cross-entropy).")
    ] = True,
    kd_ratio: Annotated[float, typer.Option("--kd-ratio", help="Weight of the distillation "
                                            "loss.")] = 1.0,
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 1.0,
    lr: Annotated[float, typer.Option(
        "--lr", help="Peak learning rate (SGD, Nesterov momentum 0.9, cosine to 0).")] = 0.01,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.")] = 64,
    device: TorchDeviceOpt = "cpu",
    old_device: OldTorchDeviceOpt = None,
    test: Annotated[bool, typer.Option(
        "--test", help="Also measure accuracy on the test split, before and after.")] = False,
    val_size: Annotated[int | None, typer.Option(
        "--val-size", help="Training images held out as the validation slice (default: the "
        "teacher checkpoint's, else 5000).")] = None,
    train_limit: Annotated[int | None, typer.Option(
        "--train-limit", help="Train on at most this many images.")] = None,
    test_limit: Annotated[int | None, typer.Option(
        "--test-limit", help="Test on at most this many images.")] = None,
    seed: Annotated[int, seed_option("Seed of batch order, augmentation, dropout")] = 0,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in OUT.finetune/ after an interruption (loses at "
        "most the epoch in progress); starts it when there is none.")] = False,
    overwrite: Annotated[bool, typer.Option(
        help="Replace --out if it is an export folder.")] = False,
    work: Annotated[Path | None, typer.Option(
        "--work", help="Work folder for the checkpoint and metrics.csv (default "
        "OUT.finetune).")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, max=MAX_WORKERS, help="torch CPU threads.")] = None,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Show a progress bar per epoch (without one: a plain "
        "progress line every 5 minutes, for logs).")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune an exported subnet as a standalone network; write a new verified export.

    Starts from the subnet's inherited weights and trains it for --epochs on --data with the
    training pipeline's augmentation (random crop, flip), SGD with a cosine schedule, and
    knowledge distillation from the largest subnet of its supernet (--no-kd: plain labels).
    Accuracy on the validation slice is measured before and after (and on the test split
    with --test). The output is an export like `nas export`'s (model.onnx,
    weights.safetensors, manifest.json, verified against torch) whose manifest's
    extra.finetune records the source, data, epochs, teacher, learning rate and the
    accuracies. A subnet of a search (--study with --trial) is exported first, with inherited
    weights and recalibrated BatchNorm, as `nas export --study` does. Bad input (a tampered
    export, a teacher or data that do not fit it, no epochs) is refused before anything is
    written.

    Example: nas finetune export/trial-0012-ab34 --out export/ft --epochs 3 --test
    """
    import shutil
    import tempfile

    import torch

    from nas.train import FinetuneConfig, FinetuneWatch, finetune, work_dir_for

    if out is None:
        raise ConfigError("missing --out: the new export folder to write")
    if epochs is None:
        raise ConfigError("missing --epochs: how many passes over the training set")
    cfg = FinetuneConfig.from_dict({
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "kd": kd, "kd_ratio": kd_ratio,
        "temperature": temperature, "seed": seed, "val_size": val_size,
        "train_limit": train_limit, "test_limit": test_limit, "test": test, "device": device},
        where="nas finetune")
    require_torch_device(device, torch)
    if threads:
        torch.set_num_threads(threads)
    watch = FinetuneWatch(progress=progress and not json_out,
                          console=None if json_out else console)
    # the outputs first: a run that could not be written is refused before it starts
    work_dir = work if work is not None else work_dir_for(out)
    check_output(out, inputs=[("the source export", source), ("--work", work_dir),
                              ("--teacher", teacher), ("--checkpoint", checkpoint)],
                 overwrite=overwrite, folder=True)
    check_output(work_dir, "--work", inputs=[("the source export", source), ("--out", out)],
                 overwrite=True, folder=True)
    tmp: Path | None = None
    origin = None
    try:
        if study is not None:
            if source is not None:
                raise ConfigError("give an export folder or --study with --trial, not both")
            if trial is None:
                raise ConfigError("--study needs --trial N (the subnet to fine-tune)")
            # The search sits above training: `nas.cli` hands its exporter over (`ctx.obj`).
            export_trials = ctx.obj.export_trials
            tmp = Path(tempfile.mkdtemp(prefix="nas-finetune-"))
            source = export_trials(study, storage, tmp, [trial],
                                   checkpoint=str(checkpoint) if checkpoint else None,
                                   progress=False)[0]
            teacher = teacher or checkpoint
            origin = {"study": study, "trial": trial, "storage": storage}
        elif source is None:
            raise ConfigError("say what to fine-tune: an export folder, or --study NAME "
                              "--trial N")
        elif checkpoint is not None or trial is not None:
            raise ConfigError("--checkpoint and --trial go with --study; for an export "
                              "folder, name the teacher with --teacher")
        res = finetune(source, out, cfg, data=data, teacher=teacher, resume=resume,
                       overwrite=overwrite, work=work, origin=origin, watch=watch)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if json_out:
        rec = res.record
        print_json({"out": str(res.out), "work": str(res.work), "space": res.manifest["space"],
                    "arch_hash": res.manifest.get("arch_hash"), "epochs": rec["epochs"],
                    "teacher": rec["teacher"], "before": rec["before"],
                    "after": rec["after"], "seconds": rec["seconds"],
                    "metrics": res.metrics, "verification": res.manifest["verification"]})


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``finetune`` to the root app."""
    app.command("train")(train_cmd)
    app.command("finetune")(finetune_cmd)
