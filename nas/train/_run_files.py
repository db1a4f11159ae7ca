"""The files of a training run under its output folder: checkpoints, metrics and config.

::

    config.yaml                  the configuration of the run
    metrics.csv                  one row per epoch: loss, throughput, validation accuracies
    checkpoints/latest.json      which checkpoint pair is the latest (written last)
    checkpoints/<tag>.safetensors + <tag>.state.pt   supernet + optimizer/progress, per epoch
    teacher.safetensors          the supernet after the full phase (the teacher)
    phase-<name>.safetensors     the supernet at the end of each phase
    supernet.safetensors         the final supernet

Every file is written atomically, ``latest.json`` after the pair it names, so a run killed at
any moment resumes from a complete checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from nas._io import atomic_path, atomic_write, read_text
from nas.errors import CheckpointError
from nas.supernet import OFASupernet, load_supernet, save_supernet
from nas.train._config import TrainConfig

__all__ = ["Progress", "RunFiles"]

_KEEP_CHECKPOINTS = 2


@dataclass
class Progress:
    """Where a run is: ``epoch`` epochs of phase ``phase`` are done (``step`` steps overall)."""

    phase: int = 0
    epoch: int = 0
    step: int = 0
    images: int = 0
    seconds: float = 0.0


class RunFiles:
    """Reads and writes the files of the run of ``config`` in ``out`` (see the module
    docstring)."""

    def __init__(self, config: TrainConfig, out: Path) -> None:
        self.config = config
        self.out = out
        self.ckpt_dir = out / "checkpoints"

    # ------------------------------------------------------------------ supernets
    def meta(self, prog: Progress, tag: str) -> dict[str, Any]:
        """What a saved supernet records about the run (its data above all, for proxies)."""
        d = self.config.data
        return {
            "tag": tag, "progress": asdict(prog), "fingerprint": self.config.fingerprint(),
            "data": {"source": d.source, "format": d.format, "val_size": d.val_size,
                     "val_seed": d.val_seed, "train_limit": d.train_limit,
                     "test_limit": d.test_limit},
            "phases": [p.name for p in self.config.phases],
        }

    def save_supernet(self, net: OFASupernet, name: str, prog: Progress, tag: str) -> Path:
        """Save ``net`` as ``out/<name>.safetensors``; returns the path."""
        path = self.out / f"{name}.safetensors"
        save_supernet(net, path, meta=self.meta(prog, tag))
        return path

    # ------------------------------------------------------------------ checkpoints
    def read_latest(self) -> dict[str, Any] | None:
        """``checkpoints/latest.json``, or None when the run has no checkpoint yet."""
        path = self.ckpt_dir / "latest.json"
        if not path.is_file():
            return None
        text = read_text(path, "checkpoint index", error=CheckpointError)
        try:
            latest: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from None
        return latest

    def save_checkpoint(self, net: OFASupernet, opt: torch.optim.Optimizer,
                        prog: Progress) -> None:
        """The supernet and the optimizer state after an epoch; the two newest pairs are kept."""
        tag = f"p{prog.phase:02d}-e{prog.epoch:03d}"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        sn = self.ckpt_dir / f"{tag}.safetensors"
        st = self.ckpt_dir / f"{tag}.state.pt"
        save_supernet(net, sn, meta=self.meta(prog, tag))
        with atomic_path(st) as tmp:
            torch.save({"progress": asdict(prog), "optimizer": opt.state_dict(),
                        "fingerprint": self.config.fingerprint()}, tmp)
        latest = {"tag": tag, "supernet": sn.name, "state": st.name, "progress": asdict(prog),
                  "fingerprint": self.config.fingerprint()}
        atomic_write(self.ckpt_dir / "latest.json", json.dumps(latest, indent=2))
        tags = sorted({p.name.split(".")[0] for p in self.ckpt_dir.glob("p*-e*.safetensors")})
        for old in tags[:-_KEEP_CHECKPOINTS]:
            for p in self.ckpt_dir.glob(f"{old}.*"):
                with contextlib.suppress(OSError):
                    p.unlink()

    def load_checkpoint(
        self, latest: dict[str, Any]
    ) -> tuple[OFASupernet, Progress, dict[str, Any]]:
        """The supernet, the progress and the optimizer state that ``latest`` names."""
        sn = self.ckpt_dir / latest["supernet"]
        st = self.ckpt_dir / latest["state"]
        net = load_supernet(sn, space=self.config.space)
        try:
            state = torch.load(st, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint state {st} is missing") from None
        except Exception as exc:  # torch raises many kinds on a truncated file
            raise CheckpointError(f"checkpoint state {st} is unreadable ({exc})") from None
        prog = Progress(**state["progress"])
        if net.checkpoint_meta.get("progress") != state["progress"]:
            raise CheckpointError(f"{sn} and {st} are from different epochs")
        return net, prog, state

    # ------------------------------------------------------------------ config and metrics
    def write_config(self) -> None:
        atomic_write(self.out / "config.yaml",
                     yaml.safe_dump(self.config.to_dict(), sort_keys=False))

    def columns(self) -> list[str]:
        return (["time", "phase_index", "phase", "task", "epoch", "step", "train_loss", "lr",
                 "epoch_seconds", "images_per_s"]
                + [f"val_acc_{n}" for n in self.config.eval.subnets])

    def load_metrics(self, prog: Progress) -> list[dict[str, Any]]:
        """The rows of ``metrics.csv`` up to ``prog`` (rows past the checkpoint are redone,
        and dropped from the file)."""
        path = self.out / "metrics.csv"
        if not path.is_file():
            return []
        rows: list[dict[str, Any]] = []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = (int(row["phase_index"]), int(row["epoch"]))
                if key <= (prog.phase, prog.epoch):
                    rows.append(row)
        self.write_metrics(rows)
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        s = io.StringIO()
        w = csv.DictWriter(s, fieldnames=self.columns(), extrasaction="ignore",
                           lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow(row)
        atomic_write(self.out / "metrics.csv", s.getvalue())
