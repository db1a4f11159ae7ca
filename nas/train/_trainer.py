"""Supernet training: Once-for-All's progressive shrinking, or the sandwich rule.

A run is a list of phases (:class:`~nas.train.PhaseConfig`). Progressive shrinking (Cai et
al., ICLR 2020) trains the full network (``full``), then makes the kernel size elastic
(``kernel``), then the depth (``depth``), then the expand ratio (``expand``, after sorting the
hidden channels by importance), distilling each sampled subnet from a frozen copy of the
largest subnet taken after the ``full`` phase. The ``sandwich`` alternative (BigNAS,
AttentiveNAS) trains the largest, the smallest and random subnets at every step, the others
distilled in place from the largest. Each step draws a resolution from the space's (elastic
resolution) and accumulates the gradients of several subnets before the optimizer step.

The files a run writes under ``out`` are described in :mod:`nas.train._run_files`.

Every epoch ends with a checkpoint, so ``resume`` loses at most the epoch in progress; the
order of batches, resolutions, subnets and augmentations is seeded by (seed, phase, epoch,
step), so a resumed run does what the uninterrupted run would have done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from nas.errors import ConfigError, TrainingError
from nas.space import Architecture, get_space
from nas.supernet import OFASupernet, load_supernet
from nas.train._config import PhaseConfig, TrainConfig
from nas.train._data import BatchLoader, DataSplits, Preprocess, load_dataset
from nas.train._eval import evaluate_subnet, subnet_by_name
from nas.train._loop import Schedule, TrainingLoop
from nas.train._run_files import Progress, RunFiles

__all__ = ["Progress", "TrainResult", "Trainer", "load_data", "train_supernet"]


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    progress: Progress
    metrics: list[dict[str, Any]] = field(default_factory=list)


def load_data(config: TrainConfig) -> DataSplits:
    """The dataset of a training configuration (decoded once, then read from the cache)."""

    d = config.data
    return load_dataset(
        d.source, format=d.format, val_size=d.val_size, val_seed=d.val_seed,
        train_limit=d.train_limit, test_limit=d.test_limit, cache_dir=d.cache_dir,
        image_size=max(get_space(config.space).resolutions),
    )


def train_supernet(
    config: TrainConfig, out: Path | str | None = None, *, resume: bool = False, **kwargs: Any
) -> TrainResult:
    """Train in this process (see :class:`Trainer` for the keyword arguments)."""
    return Trainer(config, out, **kwargs).run(resume=resume)


class Trainer(TrainingLoop):
    """One training run of a supernet (one process, or one rank of a data-parallel group).

    The epoch and step loop, the optimizer, the learning-rate schedule and the distillation
    loss are :class:`~nas.train._loop.TrainingLoop`'s, shared with fine-tuning; a step here
    draws a resolution and the subnets of its phase.

    Args:
        config: the run.
        out: output folder (default ``config.out``).
        device: ``"cpu"`` or ``"cuda"`` (or a ``torch.device``).
        rank, world_size: this process's place in a data-parallel group; gradients are
            averaged over the group with ``torch.distributed`` (initialised by the caller).
            Only rank 0 writes files, evaluates and shows progress.
        progress: show a rich progress bar (rank 0). Without one, rank 0 prints a plain line
            (step, loss, images/s, time left in the epoch) every ``log_every_s`` seconds, so
            the log of a run in the background shows it moving between epochs.
        log_every_s: seconds between those lines (0: every step).
        data: the dataset, when the caller has loaded it already.
        on_epoch_end: called with each epoch's metrics row (on every rank).
        console: a rich console for messages (default: stdout).
    """

    def __init__(
        self, config: TrainConfig, out: Path | str | None = None, *,
        device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
        progress: bool = True, data: DataSplits | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
        console: Any = None, log_every_s: float = 300.0,
    ) -> None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but torch sees no CUDA device; use "
                              "--torch-device cpu")
        if console is None:
            from rich.console import Console

            console = Console(highlight=False)
        super().__init__(seed=config.seed, batch_size=config.batch_size, optim=config.optim,
                         distill=config.distill, device=dev, rank=rank, world_size=world_size,
                         progress=progress, console=console, log_every_s=log_every_s)
        self.config = config
        self.out = Path(out if out is not None else config.out)
        self.files = RunFiles(config, self.out)
        self.ckpt_dir = self.files.ckpt_dir
        self._data = data
        self.on_epoch_end = on_epoch_end
        self.net: OFASupernet
        self.teacher: nn.Module | None = None
        self.metrics: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ public
    def run(self, resume: bool = False) -> TrainResult:
        """Train all phases; with ``resume``, continue the run in ``out`` if there is one.

        Raises:
            ConfigError: ``out`` holds a run and ``resume`` is False, or the run was made
                with another configuration.
            TrainingError: the loss became NaN or infinite (the last good checkpoint is
                kept and named in the message).
        """
        latest = self._previous_run(resume)
        progress, state = self._setup(latest)
        for pi in range(progress.phase, len(self.config.phases)):
            state = self._run_phase(pi, state)
        final = self.out / "supernet.safetensors"
        if self.main:
            self.files.save_supernet(self.net, "supernet", progress, "final")
            self._say(f"done: {final} ({progress.step} steps, "
                      f"{progress.seconds / 60:.1f} min of training)")
        self._barrier()
        return TrainResult(self.out, final, progress, list(self.metrics))

    def _previous_run(self, resume: bool) -> dict[str, Any] | None:
        """The latest checkpoint of the run in ``out`` when it may be resumed."""
        cfg = self.config
        latest = self.files.read_latest()
        if latest is not None and not resume:
            raise ConfigError(
                f"{self.out} already holds a run (latest checkpoint {latest['tag']}); pass "
                "--resume to continue it, or choose another --out"
            )
        if latest is not None and latest.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(
                f"the run in {self.out} was made with another configuration (fingerprint "
                f"{latest.get('fingerprint')} != {cfg.fingerprint()}); restore that "
                "configuration or choose another --out"
            )
        return latest

    def _setup(self, latest: dict[str, Any] | None) -> tuple[Progress, dict[str, Any] | None]:
        """Data, supernet, preprocessing and batches; the progress and optimizer state to
        resume from."""
        cfg = self.config
        # a bad `init` checkpoint fails before minutes of loading data, not after
        init_net = (load_supernet(cfg.init, space=cfg.space)
                    if latest is None and cfg.init else None)
        data = self._data if self._data is not None else load_data(cfg)
        self.data = data
        outputs = get_space(cfg.space).spec.num_classes
        if data.num_classes > outputs:
            raise ConfigError(
                f"the data has {data.num_classes} classes but space {cfg.space} has "
                f"{outputs} outputs"
            )
        progress = Progress()
        state: dict[str, Any] | None = None
        if latest is not None:
            net, progress, state = self.files.load_checkpoint(latest)
        elif init_net is not None:
            net = init_net.train()
        else:
            torch.manual_seed(cfg.seed)
            net = OFASupernet(cfg.space)
        self.net = net.to(self.device)
        if cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._broadcast_weights()
        self.pre = Preprocess.for_space(
            net.space, crop_padding=cfg.augment.crop_padding, flip=cfg.augment.flip,
            channels_last=cfg.channels_last, device=self.device,
        )
        self.loader = BatchLoader(
            data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
            rank=self.rank, world_size=self.world_size,
        )
        if len(self.loader) == 0:
            raise ConfigError(
                f"batch_size {cfg.batch_size} is larger than the training set per worker "
                f"({len(data.train) // self.world_size} images); lower batch_size"
            )
        self.progress = progress
        if self.main:
            self._start_files(latest)
        return progress, state

    def _start_files(self, latest: dict[str, Any] | None) -> None:
        cfg, progress = self.config, self.progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.files.write_config()
        self.metrics = self.files.load_metrics(progress)
        verb = "resuming" if latest is not None else "starting"
        self._say(
            f"{verb} {cfg.space} supernet training in {self.out}: {self.data.describe()}; "
            f"{len(cfg.phases)} phases, {cfg.total_epochs()} epochs, "
            f"{len(self.loader)} steps/epoch x {self.world_size} worker(s) on "
            f"{self.device.type}"
            + (f"; at phase {progress.phase} epoch {progress.epoch}" if latest else "")
            + (f"; weights from {cfg.init}" if cfg.init and not latest else "")
        )

    def _run_phase(self, pi: int, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """The remaining epochs of phase ``pi``; returns the optimizer state still to load
        (that of a later phase, when resuming past this one)."""
        phase, progress = self.config.phases[pi], self.progress
        if pi > progress.phase:
            progress.phase, progress.epoch = pi, 0
        if phase.epochs == 0:
            return state
        if progress.epoch < phase.epochs:
            if progress.epoch == 0:
                self._begin_phase(pi)
                state = None
            self._ensure_teacher(pi)
            opt = self.make_optimizer()
            if state is not None and state.get("optimizer") is not None \
                    and state["progress"]["phase"] == pi:
                opt.load_state_dict(state["optimizer"])
            state = None
            for epoch in range(progress.epoch, phase.epochs):
                self._train_epoch(pi, epoch, opt)
        self._end_phase(pi)
        return state

    # ------------------------------------------------------------------ phases
    def _begin_phase(self, pi: int) -> None:
        phase = self.config.phases[pi]
        if phase.task == "expand":
            # OFA sorts hidden channels by importance before each expand phase; the
            # argument counts the expand phases done already (nested channel groups)
            stage = sum(1 for p in self.config.phases[:pi] if p.task == "expand" and p.epochs)
            self.net.reorder_channels(stage)
            if self.main:
                self._say(f"phase {phase.name}: channels reordered by importance "
                          f"(stage {stage})")

    def _needs_teacher(self, pi: int) -> bool:
        task = self.config.phases[pi].task
        return self.config.distill.kd_ratio > 0 and task in ("kernel", "depth", "expand")

    def _ensure_teacher(self, pi: int) -> None:
        if not self._needs_teacher(pi) or self.teacher is not None:
            return
        path = self.out / "teacher.safetensors"
        if path.is_file():
            src = load_supernet(path, space=self.config.space)
        else:
            # no full phase before this one: the teacher is the largest subnet as it is now
            src = self.net
            if self.main:
                self.files.save_supernet(self.net, "teacher", self.progress, "teacher")
            self._barrier()
        teacher = src.extract(src.space.largest()).to(self.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if self.config.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.teacher = teacher

    def _end_phase(self, pi: int) -> None:
        phase = self.config.phases[pi]
        if self.main and phase.epochs:
            if not (self.out / f"phase-{phase.name}.safetensors").is_file():
                self.files.save_supernet(self.net, f"phase-{phase.name}", self.progress,
                                         phase.name)
            if phase.task == "full" and not (self.out / "teacher.safetensors").is_file():
                self.files.save_supernet(self.net, "teacher", self.progress, "teacher")
        if phase.task == "full":
            self.teacher = None  # the next phase reads the (new) teacher file
        self._barrier()

    # ------------------------------------------------------------------ sampling
    def _choices(self, phase: PhaseConfig) -> tuple[list[int], list[int], list[int]]:
        sp = self.net.space
        t = phase.task
        ks = list(phase.kernel_sizes or sp.kernel_sizes) if t != "full" else [max(sp.kernel_sizes)]
        d = list(phase.depths or sp.depths) if t in ("depth", "expand", "sandwich") \
            else [max(sp.depths)]
        e = list(phase.expand_ratios or sp.expand_ratios) if t in ("expand", "sandwich") \
            else [max(sp.expand_ratios)]
        return ks, d, e

    def _sample_archs(self, phase: PhaseConfig, r: int,
                      rng: np.random.Generator) -> list[Architecture]:
        sp = self.net.space
        ks, d, e = self._choices(phase)

        def rand() -> Architecture:
            return sp.arch([int(v) for v in rng.choice(ks, sp.n_layers)],
                           [int(v) for v in rng.choice(e, sp.n_layers)],
                           [int(v) for v in rng.choice(d, sp.n_stages)], r)

        if phase.task == "sandwich":
            big = sp.arch([max(ks)] * sp.n_layers, [max(e)] * sp.n_layers,
                          [max(d)] * sp.n_stages, r)
            small = sp.arch([min(ks)] * sp.n_layers, [min(e)] * sp.n_layers,
                            [min(d)] * sp.n_stages, r)
            return [big, small] + [rand() for _ in range(phase.subnets_per_step - 2)]
        return [rand() for _ in range(phase.subnets_per_step)]

    def _resolution(self, rng: np.random.Generator) -> int:
        res = self.net.space.resolutions
        return int(rng.choice(res)) if self.config.elastic_resolution else max(res)

    def _draw(self, phase: int, rng: np.random.Generator) -> tuple[int, list[Architecture]]:
        r = self._resolution(rng)
        return r, self._sample_archs(self.config.phases[phase], r, rng)

    def _forward(self, subnet: Architecture, x: torch.Tensor) -> torch.Tensor:
        self.net.set_active(subnet)
        return self._logits(x)

    def _after_step(self, loss: float) -> None:
        self.progress.step += 1

    # ------------------------------------------------------------------ an epoch
    def _train_epoch(self, pi: int, epoch: int, opt: torch.optim.Optimizer) -> None:
        phase, prog = self.config.phases[pi], self.progress
        # the frozen teacher of progressive shrinking; sandwich distils in place instead
        teacher = self.teacher if phase.task in ("kernel", "depth", "expand") else None
        stats = self.train_epoch(opt, phase=pi, epoch=epoch, schedule=Schedule.of(phase),
                                 label=f"{phase.name} {epoch + 1}/{phase.epochs}",
                                 teacher=teacher, in_place=phase.task == "sandwich")
        seconds = stats.seconds
        prog.epoch, prog.images, prog.seconds = epoch + 1, prog.images + stats.images, \
            prog.seconds + seconds
        row: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "phase_index": pi, "phase": phase.name,
            "task": phase.task, "epoch": epoch + 1, "step": prog.step,
            "train_loss": round(stats.loss, 5), "lr": round(stats.lr, 7),
            "epoch_seconds": round(seconds, 2), "images_per_s": round(stats.images / seconds, 1),
        }
        if self.main:
            row.update(self._validate())
        # a checkpoint after the metrics row: on resume rows past the checkpoint are dropped
        if self.main:
            self.metrics.append(row)
            self.files.write_metrics(self.metrics)
            self.files.save_checkpoint(self.net, opt, self.progress)
            accs = " ".join(f"{k.removeprefix('val_acc_')}={v:.4f}" for k, v in row.items()
                            if k.startswith("val_acc_"))
            self._say(
                f"[{phase.name}] epoch {epoch + 1}/{phase.epochs}  loss {row['train_loss']:.4f}"
                f"  {row['images_per_s']:.0f} img/s  {seconds:.0f}s  {accs}"
            )
        self._barrier()
        if self.on_epoch_end is not None:
            self.on_epoch_end(row)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The active subnet's logits ``(b, classes)`` (a seam for tests that inject faults)."""
        return self.net(x)  # type: ignore[no-any-return]

    def _diverged(self, value: float, where: tuple[int, int, int],
                  subnets: Sequence[Architecture]) -> NoReturn:
        pi, epoch, b = where
        latest = self.files.read_latest()
        kept = (f"the last good checkpoint {self.ckpt_dir / latest['supernet']} (phase "
                f"{latest['progress']['phase']}, {latest['progress']['epoch']} epochs done) "
                "is kept; lower the learning rate and run again with --resume"
                if latest else "no checkpoint was written yet; lower the learning rate")
        raise TrainingError(
            f"loss is {value} at phase {self.config.phases[pi].name} epoch {epoch + 1} step "
            f"{b + 1} (subnets {', '.join(a.hash for a in subnets)}); stopped: {kept}"
        )

    # ------------------------------------------------------------------ validation
    def _validate(self) -> dict[str, float]:
        ev = self.config.eval
        if len(self.data.val) == 0 or not ev.subnets:
            return {}
        out: dict[str, float] = {}
        for name in ev.subnets:
            arch = subnet_by_name(self.net.space, name)
            res = evaluate_subnet(
                self.net, arch, self.data, preprocess=self._eval_pre(),
                bn_batches=ev.bn_batches, bn_batch_size=self.config.batch_size,
                batch_size=ev.batch_size, limit=ev.val_limit, seed=self.config.seed,
                channels_last=self.config.channels_last,
            )
            out[f"val_acc_{name}"] = round(res["acc"], 5)
        self.net.train()
        return out

    def _eval_pre(self) -> Preprocess:
        return Preprocess.for_space(self.net.space, channels_last=self.config.channels_last,
                                    device=self.device)
