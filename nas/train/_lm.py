"""Language-model supernet training (the ``gpt`` family) on the shared training loop.

The step is :class:`~nas.train._loop.TrainingLoop`'s, as for the convolutional supernets:
the sandwich rule (the largest subnet on the next tokens; the smallest and random subnets
distilled in place from the largest's next-token distributions with the loop's KD loss),
gradients accumulated, one optimizer step; optionally the largest alone for the first
``largest_only_steps`` (Once-for-All's order: the full network first). What is the family's:
a batch is random windows of byte-level tokens (:mod:`nas.train._text`), the logits of every
position are predictions, the optimizer is AdamW, and the run is counted in steps. The
loop's "epoch" is here a stretch of ``checkpoint_every`` steps, each ending with a
checkpoint, validation losses and a row of ``metrics.csv``; the learning rate is warmed up
for ``warmup_steps`` and then follows a cosine to 0 over ``steps``.

Files under ``out``::

    config.yaml                  the configuration of the run
    metrics.csv                  a row per checkpoint: step, losses, tokens/s, lr
    checkpoints/latest.json      the latest checkpoint pair (written last)
    checkpoints/s<step>.safetensors + .state.pt   supernet (float32) + optimizer/progress
    supernet.safetensors         the final supernet (float32); ``ship`` gets a float16 copy

Everything random is seeded by (seed, stretch, step), so a resumed run does what the
uninterrupted run would have done from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import yaml

from nas._io import atomic_path, atomic_write, read_text
from nas.errors import CheckpointError, ConfigError, TrainingError
from nas.space import get_family_space
from nas.supernet import GPTSupernet, load_gpt_supernet, save_gpt_supernet
from nas.train._config import DistillConfig, LMTrainConfig, OptimConfig
from nas.train._loop import Schedule, TrainingLoop, make_adamw
from nas.train._run_files import Progress
from nas.train._text import (
    BYTE_VOCAB,
    TextSplits,
    TokenBatches,
    lm_loss,
    load_text_splits,
    windows,
)

__all__ = ["LMTrainResult", "LMTrainer", "train_lm"]

_KEEP = 2
_COLUMNS = ["time", "step", "train_loss", "lr", "tokens_per_s", "seconds", "val_loss_largest",
            "val_loss_smallest"]


@dataclass
class LMTrainResult:
    out: Path
    checkpoint: Path
    progress: Progress
    stopped_early: bool = False
    metrics: list[dict[str, Any]] = field(default_factory=list)


def train_lm(config: LMTrainConfig, out: Path | str | None = None, *, resume: bool = False,
             **kwargs: Any) -> LMTrainResult:
    """Train a language-model supernet in this process (see :class:`LMTrainer`)."""
    return LMTrainer(config, out, **kwargs).run(resume=resume)


def _check_geometry(net: GPTSupernet, want: dict[str, Any], path: Path | str) -> None:
    if net.geometry != want:
        diff = {k: v for k, v in net.geometry.items() if want.get(k) != v}
        raise CheckpointError(f"checkpoint {path} has geometry {diff}, space wants "
                              f"{ {k: want[k] for k in diff} }; it is another model")


class LMTrainer(TrainingLoop):
    """One language-model supernet training run (one process).

    Args:
        config: the run.
        out: output folder (default ``config.out``).
        device: ``"cpu"`` or ``"cuda"``.
        progress: a progress bar per stretch; without one, a plain line every
            ``log_every_s`` seconds.
        budget_minutes: stop after this many minutes of this invocation (default the
            config's); the final supernet is written all the same.
        data: the split corpus, when the caller has it already.
        console: a rich console for messages (default: stdout).
    """

    unit = "tok"

    def __init__(self, config: LMTrainConfig, out: Path | str | None = None, *,
                 device: str | torch.device = "cpu", progress: bool = True,
                 budget_minutes: float | None = None, data: TextSplits | None = None,
                 console: Any = None, log_every_s: float = 60.0) -> None:
        if console is None:
            from rich.console import Console

            console = Console(highlight=False)
        optim = OptimConfig(weight_decay=config.optim.weight_decay, label_smoothing=0.0,
                            grad_clip=config.optim.grad_clip)
        distill = DistillConfig(kd_ratio=config.distill.kd_ratio,
                                temperature=config.distill.temperature)
        super().__init__(seed=config.seed, batch_size=config.batch_size, optim=optim,
                         distill=distill, device=torch.device(device), progress=progress,
                         console=console, log_every_s=log_every_s)
        self.config = config
        self.out = Path(out if out is not None else config.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.space = get_family_space(config.space)
        self.block = config.block
        self.budget_s = 60 * (budget_minutes or config.budget_minutes or float("inf"))
        self._data = data
        self.metrics: list[dict[str, Any]] = []
        self.net: GPTSupernet
        self._t_start = 0.0
        self.stopped_early = False

    # ------------------------------------------------------------------ the family's step
    def _inputs(self, xb: torch.Tensor, yb: torch.Tensor, r: int,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return xb.to(self.device), yb.reshape(-1).to(self.device)  # (b, s), (b*s,)

    def _draw(self, phase: int, rng: np.random.Generator) -> tuple[int, list[dict[str, Any]]]:
        sp = self.space
        rest = [sp.sample(rng).to_dict() for _ in range(self.config.subnets_per_step - 2)]
        if self.progress.step < self.config.largest_only_steps:  # steps done before this one
            return self.block, [sp.largest().to_dict()]
        return self.block, [sp.largest().to_dict(), sp.smallest().to_dict(), *rest]

    def _forward(self, subnet: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        self.net.set_active(subnet)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16):
            logits = self.net(x)  # (b, s, vocab)
        return logits.flatten(0, 1).float()  # type: ignore[union-attr]  # (b*s, vocab)

    def _items(self, batch: int) -> int:
        return batch * self.block

    def make_optimizer(self) -> torch.optim.Optimizer:
        o = self.config.optim
        return make_adamw(self.net, weight_decay=o.weight_decay, betas=(o.beta1, o.beta2))

    def _after_step(self, loss: float) -> None:
        self.progress.step += 1

    def _stop_now(self) -> bool:
        if time.perf_counter() - self._t_start >= self.budget_s:
            self.stopped_early = True
        return self.stopped_early

    def _diverged(self, value: float, where: tuple[int, int, int],
                  subnets: Sequence[Any]) -> NoReturn:
        latest = self._read_latest()
        kept = (f"the last good checkpoint {self.ckpt_dir / latest['supernet']} (step "
                f"{latest['progress']['step']}) is kept; lower optim.lr and run again with "
                "--resume" if latest else "no checkpoint was written yet; lower optim.lr")
        raise TrainingError(f"loss is {value} at step {self.progress.step + 1}; stopped: {kept}")

    # ------------------------------------------------------------------ the run
    def run(self, resume: bool = False) -> LMTrainResult:
        """Train up to ``steps`` (or until the time budget runs out); with ``resume``,
        continue the run in ``out`` from its latest checkpoint.

        Raises:
            ConfigError: ``out`` holds a run and ``resume`` is False, or another config's run.
            CheckpointError: a checkpoint (or ``init``) of another geometry, or unreadable.
            DataError: a missing or corrupt corpus, or a bad split.
            TrainingError: the loss became NaN or infinite.
        """
        cfg = self.config
        latest = self._read_latest()
        if latest is not None and not resume:
            raise ConfigError(f"{self.out} already holds a run (latest checkpoint at step "
                              f"{latest['progress']['step']}); pass --resume to continue it, "
                              "or choose another --out")
        if latest is not None and latest.get("fingerprint") != cfg.fingerprint():
            raise ConfigError(f"the run in {self.out} was made with another configuration "
                              f"(fingerprint {latest.get('fingerprint')} != "
                              f"{cfg.fingerprint()}); restore that configuration or choose "
                              "another --out")
        want = GPTSupernet.from_space(cfg.space).geometry
        if self.space.vocab_size != BYTE_VOCAB:  # type: ignore[attr-defined]
            raise ConfigError(f"space {cfg.space} has a vocabulary of "
                              f"{self.space.vocab_size}; byte-level text needs "  # type: ignore[attr-defined]
                              f"{BYTE_VOCAB} (256 bytes and end-of-text)")
        init = None
        if latest is None and cfg.init:
            init = load_gpt_supernet(cfg.init)
            _check_geometry(init, want, cfg.init)
        data = self._data if self._data is not None else load_text_splits(
            cfg.data.source, cfg.data.val_works, cfg.data.format)
        self.data = data
        self.progress = Progress()
        state: dict[str, Any] | None = None
        if latest is not None:
            net, state = self._load_checkpoint(latest, want)
            self.progress = Progress(**state["progress"])
        elif init is not None:
            net = init
        else:
            torch.manual_seed(cfg.seed)
            net = GPTSupernet.from_space(cfg.space)
        net.space_name = cfg.space
        self.net = net.to(self.device).train()
        self.loader = TokenBatches(  # type: ignore[assignment]  # BatchLoader's interface
            data.train, cfg.batch_size, self.block, cfg.checkpoint_every)
        self.val_windows = windows(data.val, self.block, cfg.eval.tokens)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.metrics = self._load_metrics()
        opt = self.make_optimizer()
        if state is not None:
            opt.load_state_dict(state["optimizer"])
        n_stretch = cfg.steps // cfg.checkpoint_every
        self._say(f"{'resuming' if latest else 'starting'} {cfg.space} language-model supernet "
                  f"training in {self.out}: {data.describe()}; {cfg.steps} steps of "
                  f"{cfg.batch_size} x {self.block} tokens, {cfg.subnets_per_step} subnets per "
                  f"step"
                  + (f" (the largest alone for the first {cfg.largest_only_steps})"
                     if cfg.largest_only_steps else "")
                  + f", on {self.device.type}"
                  + (f"; at step {self.progress.step}" if latest else "")
                  + (f"; time budget {self.budget_s / 60:.1f} min"
                     if self.budget_s != float("inf") else ""))
        schedule = Schedule(cfg.optim.lr, n_stretch, warmup_steps=cfg.warmup_steps)
        self._t_start = time.perf_counter()
        while self.progress.epoch < n_stretch and not self.stopped_early:
            k = self.progress.epoch
            stats = self.train_epoch(opt, phase=0, epoch=k, schedule=schedule,
                                     label=f"steps {k * cfg.checkpoint_every + 1}-"
                                           f"{(k + 1) * cfg.checkpoint_every}/{cfg.steps}",
                                     in_place=True)
            self.progress.seconds += stats.seconds
            self.progress.images += stats.images * self.block
            if self.stopped_early and stats.steps < cfg.checkpoint_every:
                break  # mid-stretch: the last checkpoint stays the one to resume from
            self.progress.epoch = k + 1
            row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": self.progress.step,
                   "train_loss": round(stats.loss, 5), "lr": round(stats.lr, 8),
                   "tokens_per_s": round(stats.images * self.block / stats.seconds, 1),
                   "seconds": round(stats.seconds, 2), **self._validate()}
            self.metrics.append(row)
            self._write_metrics()
            self._save_checkpoint(opt)
            self._say(f"step {row['step']}/{cfg.steps}  loss {row['train_loss']:.4f}  "
                      f"{row['tokens_per_s']:.0f} tok/s  val loss largest "
                      f"{row['val_loss_largest']:.4f} smallest {row['val_loss_smallest']:.4f}")
        final = self.out / "supernet.safetensors"
        meta = self._meta("final")
        save_gpt_supernet(self.net, final, meta=meta, dtype="float32")
        if cfg.ship:
            save_gpt_supernet(self.net, cfg.ship, meta=meta, dtype="float16")
        how = (f"stopped by the time budget at step {self.progress.step}"
               if self.stopped_early else f"{self.progress.step} steps")
        self._say(f"done: {final} ({how}, {self.progress.seconds / 60:.1f} min of training)"
                  + (f"; shipped copy (float16) {cfg.ship}" if cfg.ship else ""))
        return LMTrainResult(self.out, final, self.progress, self.stopped_early,
                             list(self.metrics))

    def _validate(self) -> dict[str, float]:
        ev = self.config.eval
        out = {}
        for name, arch in (("largest", self.space.largest()),
                           ("smallest", self.space.smallest())):
            out[f"val_loss_{name}"] = round(lm_loss(self.net, arch.to_dict(), self.val_windows,
                                                    ev.batch_size, self.device), 5)
        self.net.train()
        return out

    # ------------------------------------------------------------------ files
    def _meta(self, tag: str) -> dict[str, Any]:
        d, data = self.config.data, self.data
        last = self.metrics[-1] if self.metrics else {}
        return {"tag": tag, "progress": asdict(self.progress),
                "fingerprint": self.config.fingerprint(),
                "data": {"source": d.source, "format": d.format, "tokenizer": "bytes",
                         "eot": 256, "val_works": list(data.val_works),
                         "train_works": len(data.train_works)},
                "val_loss_largest": last.get("val_loss_largest"),
                "val_loss_smallest": last.get("val_loss_smallest"),
                "stopped_early": self.stopped_early}

    def _read_latest(self) -> dict[str, Any] | None:
        path = self.ckpt_dir / "latest.json"
        if not path.is_file():
            return None
        try:
            latest: dict[str, Any] = json.loads(read_text(path, "checkpoint index",
                                                          error=CheckpointError))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from None
        return latest

    def _save_checkpoint(self, opt: torch.optim.Optimizer) -> None:
        tag = f"s{self.progress.step:07d}"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        sn, st = self.ckpt_dir / f"{tag}.safetensors", self.ckpt_dir / f"{tag}.state.pt"
        save_gpt_supernet(self.net, sn, meta=self._meta(tag), dtype="float32")
        with atomic_path(st) as tmp:
            torch.save({"progress": asdict(self.progress), "optimizer": opt.state_dict(),
                        "fingerprint": self.config.fingerprint()}, tmp)
        latest = {"tag": tag, "supernet": sn.name, "state": st.name,
                  "progress": asdict(self.progress), "fingerprint": self.config.fingerprint()}
        atomic_write(self.ckpt_dir / "latest.json", json.dumps(latest, indent=2))
        tags = sorted({p.name.split(".")[0] for p in self.ckpt_dir.glob("s*.safetensors")})
        for old in tags[:-_KEEP]:
            for p in self.ckpt_dir.glob(f"{old}.*"):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _load_checkpoint(self, latest: dict[str, Any],
                         want: dict[str, Any]) -> tuple[GPTSupernet, dict[str, Any]]:
        sn, st = self.ckpt_dir / latest["supernet"], self.ckpt_dir / latest["state"]
        net = load_gpt_supernet(sn)
        _check_geometry(net, want, sn)
        try:
            state: dict[str, Any] = torch.load(st, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint state {st} is missing") from None
        except Exception as exc:  # torch raises many kinds on a truncated file
            raise CheckpointError(f"checkpoint state {st} is unreadable ({exc})") from None
        if net.checkpoint_meta.get("progress") != state["progress"]:
            raise CheckpointError(f"{sn} and {st} are from different steps")
        return net, state

    def _load_metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.csv`` up to the checkpoint resumed from."""
        path = self.out / "metrics.csv"
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.progress.step]
        for r in rows:
            for k in _COLUMNS[1:]:
                if r.get(k) not in (None, ""):
                    r[k] = float(r[k]) if k != "step" else int(r[k])
        return rows

    def _write_metrics(self) -> None:
        s = io.StringIO()
        w = csv.DictWriter(s, fieldnames=_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.metrics:
            w.writerow(row)
        atomic_write(self.out / "metrics.csv", s.getvalue())
