"""Fine-tuning an exported subnet as a standalone network, distilled from its supernet.

Once-for-All fine-tunes every subnet it ships: inherited weights are a good start, not the
end. :func:`finetune` reads an export folder (what ``nas export`` writes), trains its static
subnet for a few epochs on the given data, with knowledge distillation from the largest
subnet of the supernet it came from (the checkpoint the manifest names, or ``teacher``), and
writes a new verified export whose manifest records what was done (``extra.finetune``).

Everything that can be wrong with the input (a tampered export, a teacher of another space, a
dataset with another number of classes, a missing teacher, no epochs) is refused in one line
before anything is written. The run keeps its state in a work folder beside the output
(``<out>.finetune/``: ``checkpoint.pt`` after every epoch, written atomically, and
``metrics.csv``), so ``resume`` after a crash loses at most the epoch in progress; batches,
augmentation and dropout are seeded by (seed, epoch, step), so a resumed run does what the
uninterrupted one would have done.

The training itself is supernet training's loop (:mod:`nas.train._loop`: the same optimizer,
learning-rate schedule, distillation loss and steps), run as one phase whose one subnet is the
static student: fine-tuning a subnet and a supernet run that trains only that subnet, with
the same weights, settings and seed, end with the same weights.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import torch
from pydantic import Field
from torch import nn

from nas._config import ConfigModel
from nas._io import atomic_path, atomic_write
from nas._outputs import check_output
from nas.errors import ConfigError, DataError, ExportError, TrainingError
from nas.space import get_space
from nas.train._config import DataFormatName, DistillConfig, OptimConfig
from nas.train._data import BatchLoader, DataSplits, Preprocess, load_dataset
from nas.train._eval import evaluate, recalibrate_bn
from nas.train._loop import Schedule, TrainingLoop

__all__ = ["QUIET", "FinetuneConfig", "FinetuneResult", "FinetuneWatch", "finetune",
           "work_dir_for"]

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.csv"
_CKPT_FORMAT = "nas.finetune/1"
METRICS_COLUMNS = ("epoch", "train_loss", "val_acc", "val_loss", "lr", "seconds")


class FinetuneConfig(ConfigModel):
    """How a subnet is fine-tuned (every field has a default but ``epochs``).

    Attributes:
        epochs: passes over the training set (at least 1).
        lr: peak learning rate of SGD (Nesterov momentum), decayed to 0 by a cosine over all
            steps; a fine-tuned network starts trained, so it is lower than from scratch.
        kd: distil from the teacher (loss ``CE + kd_ratio * soft-CE(student, teacher / T)``).
        val_size, val_seed: the validation slice held out of the training images; default
            the supernet checkpoint's own (so the slice is one it never trained on), else
            5000 and 0.
        train_limit, test_limit: use at most this many training / test images.
        bn_batches: training batches that recalibrate the teacher's BatchNorm statistics
            at the student's resolution before it teaches.
        test: also measure accuracy on the test split, before and after.
        device: the torch device that trains (``cpu``, ``cuda``, ``cuda:N``); a run may
            resume on another.
    """

    what = "finetune"

    epochs: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)] = 0.01
    batch_size: Annotated[int, Field(ge=1)] = 64
    kd: bool = True
    kd_ratio: Annotated[float, Field(gt=0)] = 1.0
    temperature: Annotated[float, Field(gt=0)] = 1.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 4e-5
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.1
    crop_padding: Annotated[int, Field(ge=0)] = 4
    flip: bool = True
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    data_format: DataFormatName = "auto"
    val_size: Annotated[int, Field(ge=0)] | None = None
    val_seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    train_limit: Annotated[int, Field(ge=1)] | None = None
    test_limit: Annotated[int, Field(ge=1)] | None = None
    bn_batches: Annotated[int, Field(ge=1)] = 8
    eval_batch_size: Annotated[int, Field(ge=1)] = 256
    test: bool = False
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:[0-9]{1,3})?)$")] = "cpu"

    def optim_config(self) -> OptimConfig:
        """The optimizer settings of supernet training that these fields are."""
        return OptimConfig(momentum=self.momentum, nesterov=True,
                           weight_decay=self.weight_decay, no_decay_bn_bias=True,
                           label_smoothing=self.label_smoothing, grad_clip=None)

    def distill_config(self) -> DistillConfig:
        """The distillation settings of supernet training that these fields are (a ratio of
        0 without ``kd``)."""
        return DistillConfig(kd_ratio=self.kd_ratio if self.kd else 0.0,
                             temperature=self.temperature)


@dataclass
class FinetuneResult:
    """What :func:`finetune` wrote: the new export, its manifest, and the per-epoch rows."""

    out: Path
    work: Path
    manifest: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def record(self) -> dict[str, Any]:
        """The manifest's ``extra.finetune`` entry."""
        return dict(self.manifest.get("extra", {}).get("finetune", {}))


def work_dir_for(out: Path | str) -> Path:
    """The work folder of a fine-tuning run writing ``out``: ``<out>.finetune`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".finetune")


class _Static:
    """Stands in for a supernet in :func:`nas.export.export_subnet`: its one subnet."""

    def __init__(self, space: Any, arch: Any, module: nn.Module) -> None:
        self.space, self._arch, self._module = space, arch, module

    def extract(self, arch: Any) -> nn.Module:
        if arch.hash != self._arch.hash or arch.r != self._arch.r:  # a bug, not user input
            raise ExportError(f"fine-tuned subnet is {self._arch.hash}, not {arch.hash}")
        return self._module


@dataclass(frozen=True)
class FinetuneWatch:
    """How a fine-tuning run reports: a progress bar per epoch (without one: a plain progress
    line every 5 minutes), a console for its lines (None: silent), and a callback with each
    epoch's metrics row after its checkpoint is written."""

    progress: bool = True
    console: Any = None
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None


#: a run that shows nothing
QUIET = FinetuneWatch(progress=False)


@dataclass
class _Plan:
    """A fine-tuning run, every input checked: what :func:`finetune` trains and writes."""

    cfg: FinetuneConfig
    source: Path
    out: Path
    work: Path
    student: nn.Module
    manifest: dict[str, Any]
    space: Any
    arch: Any
    teacher_path: Path | None
    teacher_net: Any
    ck_meta: dict[str, Any]
    splits: DataSplits
    device: torch.device
    fingerprint: str
    state: dict[str, Any] | None


def finetune(
    source: Path | str,
    out: Path | str,
    config: FinetuneConfig | dict[str, Any],
    *,
    data: DataSplits | str | Path | None = None,
    teacher: Path | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    work: Path | str | None = None,
    origin: dict[str, Any] | None = None,
    watch: FinetuneWatch = FinetuneWatch(),
) -> FinetuneResult:
    """Fine-tune the subnet of the export ``source`` and write a new verified export ``out``.

    Example:
        >>> finetune("export/trial-0012-ab34", "export/ft-0012", {"epochs": 3, "test": True},
        ...          data="../shared/data/cifar10-jpeg.tar.gz").record["after"]
        {'val_acc': 0.91, 'val_loss': 0.31, 'test_acc': 0.905, ...}

    Args:
        source: an export folder (``model.onnx``, ``weights.safetensors``,
            ``manifest.json``); it is verified (checksums, ONNX against torch) first.
        out: the new export folder (missing or empty, unless ``overwrite``); never the
            source, inside it, or the work folder.
        config: a :class:`FinetuneConfig` or its fields as a dict (``device``, ``test``
            included).
        data: a source for :func:`nas.train.load_dataset` (folder, archive, ``.npz``, CIFAR-10
            folder, ``"digits"``) or loaded splits; default the data the teacher checkpoint
            was trained on.
        teacher: supernet checkpoint whose largest subnet teaches; default the checkpoint
            the manifest names. Needed unless ``config.kd`` is False.
        resume: continue the run in the work folder (a fresh start when there is none).
        overwrite: replace ``out`` if it is an export folder and, without ``resume``, start
            a run found in the work folder over.
        work: the work folder (default :func:`work_dir_for` ``(out)``); apart from ``out``
            and the source.
        origin: how ``source`` was obtained (e.g. ``{"study": ..., "trial": ...}``), recorded.
        watch: how the run reports (:class:`FinetuneWatch`; :data:`QUIET` shows nothing).

    Raises:
        ConfigError: bad options, no epochs, a teacher or data that do not fit the export,
            a run in the work folder without ``resume``, or a finished one with other options.
        ExportError: ``source`` is missing, not an export or fails verification; ``out`` is
            not empty, is or holds an input.
        CheckpointError: the teacher checkpoint is missing or corrupt.
        DataError: the data cannot be read.
        TrainingError: the loss became NaN or infinite (the last checkpoint is kept).
    """
    cfg: FinetuneConfig = (config if isinstance(config, FinetuneConfig)
                           else FinetuneConfig.from_dict(dict(config)))
    t_start = time.perf_counter()
    plan = _plan(cfg, Path(source), Path(out), data=data, teacher=teacher, resume=resume,
                 overwrite=overwrite, work=work)
    # everything the user gave was checked: from here on, files are written
    run = _Run(cfg, plan.student, plan.arch, plan.space, plan.splits, plan.device,
               plan.teacher_net, watch.progress, watch.console)
    before, metrics = _train(run, plan, watch)
    after = run.accuracy(cfg.test)
    record = _record(plan, run, before, after, metrics, origin,
                     seconds=round(time.perf_counter() - t_start, 2))
    extra = {k: v for k, v in (plan.manifest.get("extra") or {}).items() if k != "finetune"}
    previous = (plan.manifest.get("extra") or {}).get("finetune")
    if previous:
        record["previous"] = previous
    extra["finetune"] = record
    from nas.export import export_subnet

    final = run.student.to("cpu").eval()
    tp = plan.teacher_path
    res = export_subnet(_Static(plan.space, plan.arch, final), plan.arch, plan.out,
                        overwrite=overwrite, extra=extra,
                        checkpoint=tp if tp is not None and tp.is_file() else None)
    run.say(f"done: {plan.out}/ (verified); val acc {before['val_acc']:.4f} -> "
            f"{after['val_acc']:.4f}"
            + (f", test acc {before['test_acc']:.4f} -> {after['test_acc']:.4f}" if cfg.test
               else ""))
    return FinetuneResult(res.out, plan.work, res.manifest, metrics)


def _check_places(source: Path, out: Path, work: Path, teacher: Path | str | None,
                  overwrite: bool) -> None:
    """The output and the work folder, checked against the inputs before anything is read:
    neither may be the source export, lie inside it or hold it, nor each other; ``out``
    must be new, empty, or (with ``overwrite``) an export folder."""
    from nas.export import check_export_out

    if not source.is_dir():
        raise ExportError(f"export folder not found: {source}")
    check_output(out, "--out", inputs=[("the source export", source), ("--work", work),
                                       ("--teacher", teacher)],
                 overwrite=overwrite, folder=True, error=ExportError)
    check_export_out(out, overwrite)  # --overwrite replaces an export folder only
    # a run in the work folder is resume's business: an existing one is no error here
    check_output(work, "--work", inputs=[("the source export", source), ("--out", out),
                                         ("--teacher", teacher)],
                 overwrite=True, folder=True)


def _plan(cfg: FinetuneConfig, source: Path, out: Path, *,
          data: DataSplits | str | Path | None, teacher: Path | str | None, resume: bool,
          overwrite: bool, work: Path | str | None) -> _Plan:
    """Check everything a run needs and load it; nothing is written."""
    from nas.export import load_export, verify_export

    work_dir = Path(work) if work is not None else work_dir_for(out)
    _check_places(source, out, work_dir, teacher, overwrite)
    verify_export(source)  # checksums and ONNX against torch: a tampered export stops here
    student, manifest = load_export(source)
    space = get_space(manifest["space"])
    arch = space.parse(manifest["arch"], off_grid=True)

    teacher_path = _teacher_path(teacher, manifest, source, cfg.kd)
    teacher_net, ck_meta = _load_teacher(teacher_path, space.name, cfg.kd)
    splits = _load_data(data, cfg, ck_meta, space, teacher_path)
    _check_splits(splits, cfg, space)
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch sees no CUDA device; use "
                          "--torch-device cpu")
    fingerprint = _fingerprint(cfg, manifest, splits, teacher_path)
    state = _read_checkpoint(work_dir, fingerprint, resume, overwrite)
    return _Plan(cfg, source, out, work_dir, student, manifest, space, arch, teacher_path,
                 teacher_net, ck_meta, splits, dev, fingerprint, state)


def _check_splits(splits: DataSplits, cfg: FinetuneConfig, space: Any) -> None:
    if splits.num_classes != space.spec.num_classes:
        raise ConfigError(
            f"data {splits.source} has {splits.num_classes} classes but space {space.name} "
            f"(the export's) has {space.spec.num_classes}; fine-tune on data of the same "
            "classes"
        )
    if cfg.test and (splits.test is None or len(splits.test) == 0):
        raise DataError(f"--test: {splits.source} has no test split")
    if len(splits.val) == 0:
        raise DataError(f"{splits.source}: the validation slice is empty (val_size 0); the "
                        "before and after accuracy need one")
    if len(splits.train) // cfg.batch_size == 0:
        raise ConfigError(f"batch_size = {cfg.batch_size}: larger than the training set "
                          f"({len(splits.train)} images); lower it")


def _train(run: _Run, plan: _Plan, watch: FinetuneWatch
           ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The epochs still to do, a checkpoint and ``metrics.csv`` after each; returns the
    accuracy before and the metrics rows of every epoch."""
    cfg, state = plan.cfg, plan.state
    if state is None:
        before = run.accuracy(cfg.test)
        start, metrics = 0, []
        run.say(f"fine-tuning {plan.space.name}:{plan.arch.hash} r={plan.arch.r} from "
                f"{plan.source} for {cfg.epochs} epochs on {plan.splits.describe()}; "
                + (f"teacher: largest subnet of {plan.teacher_path}" if run.teacher is not None
                   else "no distillation") + f"; before: val acc {before['val_acc']:.4f}")
    else:
        run.load(state)
        before, start, metrics = state["before"], int(state["epoch"]), list(state["metrics"])
        run.say(f"resuming the fine-tuning in {plan.work} after epoch {start}/{cfg.epochs}")
    for epoch in range(start, cfg.epochs):
        row = run.epoch(epoch)
        metrics.append(row)
        _save_checkpoint(plan.work, {
            "format": _CKPT_FORMAT, "fingerprint": plan.fingerprint, "epoch": epoch + 1,
            "before": before, "metrics": metrics, "model": run.student.state_dict(),
            "optimizer": run.opt.state_dict(),
        })
        _write_metrics(plan.work / METRICS_FILE, metrics)
        run.say(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  val acc "
                f"{row['val_acc']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.1f}s")
        if watch.on_epoch_end is not None:
            watch.on_epoch_end(row)
    return before, metrics


def _record(plan: _Plan, run: _Run, before: dict[str, Any], after: dict[str, Any],
            metrics: list[dict[str, Any]], origin: dict[str, Any] | None, *,
            seconds: float) -> dict[str, Any]:
    """The manifest's ``extra.finetune``: what was done, from what, with what result."""
    cfg, manifest, splits, tp = plan.cfg, plan.manifest, plan.splits, plan.teacher_path
    teacher_sha = _sha256(tp) if tp is not None else None
    exported_from = manifest.get("checkpoint")
    if not isinstance(exported_from, dict):
        exported_from = {}
    return {
        "source": {"folder": str(plan.source), "arch_hash": manifest.get("arch_hash"),
                   "weights_sha256": manifest["files"]["weights.safetensors"]["sha256"],
                   **({"origin": origin} if origin else {})},
        "data": {"source": splits.source, "format": splits.format, "key": splits.key,
                 "classes": splits.num_classes, "train": len(splits.train),
                 "val": len(splits.val),
                 "test": len(splits.test) if splits.test is not None else None,
                 "val_size": len(splits.val), "val_seed": _val_seed(cfg, plan.ck_meta)},
        "epochs": cfg.epochs,
        "teacher": ({"checkpoint": str(tp), "sha256": teacher_sha,
                     # the supernet the export's weights came from, or another one
                     "same_as_export": teacher_sha == exported_from.get("sha256"),
                     "subnet": "largest", "kd_ratio": cfg.kd_ratio,
                     "temperature": cfg.temperature}
                    if run.teacher is not None and tp is not None else None),
        "lr": cfg.lr, "schedule": "cosine", "optimizer": "sgd-nesterov",
        "config": cfg.model_dump(mode="json", exclude={"device", "test"}),
        "device": plan.device.type,
        "before": before, "after": after,
        "metrics": metrics,
        "seconds": seconds,
        "work": str(plan.work),
    }


# ---------------------------------------------------------------------- inputs
def _teacher_path(teacher: Path | str | None, manifest: dict[str, Any], source: Path,
                  kd: bool) -> Path | None:
    """The teacher checkpoint: ``teacher``, else the manifest's (None without distillation
    when neither names one)."""
    if teacher is not None:
        path = Path(teacher)
        if not path.is_file():
            raise ConfigError(f"--teacher {path}: no such checkpoint file")
        return path
    entry = manifest.get("checkpoint")
    named = entry.get("path") if isinstance(entry, dict) else None
    if isinstance(named, str) and named:
        path = Path(named)
        if path.is_file():
            return path
        if kd:
            raise ConfigError(f"the teacher {path} named in {source}/manifest.json is missing; "
                              "pass --teacher CKPT (the supernet the export came from) or "
                              "--no-kd")
        return None
    if kd:
        raise ConfigError(f"{source}/manifest.json names no supernet checkpoint to distil "
                          "from; pass --teacher CKPT or --no-kd")
    return None


def _load_teacher(path: Path | None, space: str, kd: bool) -> tuple[Any, dict[str, Any]]:
    """The teacher supernet (None without one or without distillation) and its checkpoint's
    metadata (which names the data it was trained on)."""
    if path is None:
        return None, {}
    from nas.supernet import load_supernet, read_checkpoint_meta

    meta = read_checkpoint_meta(path)
    if meta.get("space") != space:
        raise ConfigError(f"teacher {path} is a supernet of space {meta.get('space')!r} but "
                          f"the export is of space {space!r}; pass the export's own supernet "
                          "with --teacher")
    extra = dict(meta.get("extra") or {})
    return (load_supernet(path, space=space) if kd else None), extra


def _sha256(path: Path) -> str:
    from nas.export import sha256_file

    return sha256_file(path)


def _val_seed(cfg: FinetuneConfig, ck_meta: dict[str, Any]) -> int:
    if cfg.val_seed is not None:
        return cfg.val_seed
    return int((ck_meta.get("data") or {}).get("val_seed", 0))


def _load_data(data: DataSplits | str | Path | None, cfg: FinetuneConfig,
               ck_meta: dict[str, Any], space: Any, teacher: Path | None) -> DataSplits:
    if isinstance(data, DataSplits):
        return data
    trained_on = dict(ck_meta.get("data") or {})
    if data is None:
        data = trained_on.get("source")
        if not data:
            raise ConfigError("no data: pass --data (an image folder, archive, .npz, CIFAR-10 "
                              "folder or 'digits')"
                              + ("" if teacher is None
                                 else f"; the checkpoint {teacher} does not name its own"))
    same = trained_on.get("source") == str(data)
    val_size = cfg.val_size if cfg.val_size is not None \
        else int(trained_on.get("val_size", 5000))
    return load_dataset(
        data, format=cfg.data_format if cfg.data_format != "auto" or not same
        else trained_on.get("format", "auto"),
        val_size=val_size, val_seed=_val_seed(cfg, ck_meta), train_limit=cfg.train_limit,
        test_limit=cfg.test_limit, image_size=max(space.resolutions),
    )


def _fingerprint(cfg: FinetuneConfig, manifest: dict[str, Any], data: DataSplits,
                 teacher: Path | None) -> str:
    """Hash of what changes the run (options, source weights, data, teacher)."""
    # where it trains is no option of the run (a run may resume on another device); --test
    # is, once given (the accuracies before hold the test split's then)
    d = {"config": {**cfg.model_dump(mode="json", exclude={"device", "test"}),
                    **({"test": True} if cfg.test else {})},
         "weights": manifest["files"]["weights.safetensors"]["sha256"],
         "arch": manifest.get("arch_hash"), "resolution": manifest["resolution"],
         "data": data.key, "teacher": str(teacher) if teacher is not None else None}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- the work folder
def _read_checkpoint(work: Path, fingerprint: str, resume: bool,
                     overwrite: bool) -> dict[str, Any] | None:
    """The state to resume from (None: start over; ``overwrite`` without ``resume`` starts
    over a run that is there)."""
    path = work / CHECKPOINT_FILE
    if not path.is_file() or (overwrite and not resume):
        return None
    if not resume:
        raise ConfigError(f"{work} holds a fine-tuning run; pass --resume to continue it, "
                          "--overwrite to start it over, or choose another --out (or --work)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a truncated file
        raise TrainingError(f"cannot resume: {path} is unreadable ({type(exc).__name__}); "
                            "delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != _CKPT_FORMAT:
        raise TrainingError(f"cannot resume: {path} is not a fine-tuning checkpoint")
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(f"the run in {work} was made with other options, source or data "
                          f"(fingerprint {state.get('fingerprint')} != {fingerprint}); use "
                          "the same ones, or choose another --out (or --work)")
    return state


def _save_checkpoint(work: Path, state: dict[str, Any]) -> None:
    with atomic_path(work / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(METRICS_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


# ---------------------------------------------------------------------- training
class _Run(TrainingLoop):
    """The student, its teacher and optimizer, and one epoch of training at a time: phase 0
    of the supernet training loop, whose one subnet is the static student."""

    def __init__(self, cfg: FinetuneConfig, student: nn.Module, arch: Any, space: Any,
                 data: DataSplits, device: torch.device, teacher_net: Any, progress: bool,
                 console: Any) -> None:
        super().__init__(seed=cfg.seed, batch_size=cfg.batch_size, optim=cfg.optim_config(),
                         distill=cfg.distill_config(), device=device, progress=progress,
                         console=console)
        self.cfg, self.arch, self.space, self.data = cfg, arch, space, data
        self.student = self.net = student.to(device)
        self.pre = Preprocess.for_space(space, crop_padding=cfg.crop_padding, flip=cfg.flip,
                                        channels_last=False, device=device)
        self.pre_eval = Preprocess.for_space(space, channels_last=False, device=device)
        self.loader = BatchLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                  drop_last=True)
        self.teacher: nn.Module | None = None
        if teacher_net is not None and cfg.kd:
            self.teacher = self._make_teacher(teacher_net)
        self.opt = self.make_optimizer()

    def _make_teacher(self, net: Any) -> nn.Module:
        """The supernet's largest subnet at the student's resolution, BatchNorm recalibrated
        there (the statistics a supernet holds are those of whatever subnet ran last)."""
        big = self.space.parse({**self.space.largest().to_dict(), "r": self.arch.r},
                               off_grid=True)
        teacher: nn.Module = net.extract(big).to(self.device)
        loader = BatchLoader(self.data.train, self.cfg.batch_size, shuffle=True,
                             seed=self.cfg.seed)
        recalibrate_bn(teacher, big, loader.epoch(0), self.cfg.bn_batches,
                       preprocess=self.pre_eval)
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher.eval()

    def load(self, state: dict[str, Any]) -> None:
        self.student.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])

    # ------------------------------------------------------------------ the loop's hooks
    def _draw(self, phase: int, rng: np.random.Generator) -> tuple[int, list[None]]:
        return self.arch.r, [None]  # the student, at its resolution

    def _forward(self, subnet: None, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)  # type: ignore[no-any-return]

    def _diverged(self, value: float, where: tuple[int, int, int],
                  subnets: Sequence[Any]) -> NoReturn:
        _phase, epoch, b = where
        raise TrainingError(
            f"loss is {value} at epoch {epoch + 1} step {b + 1}; stopped (the checkpoint of "
            "the last finished epoch is kept): lower --lr and run again with --resume")

    def epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        stats = self.train_epoch(self.opt, phase=0, epoch=epoch,
                                 schedule=Schedule(cfg.lr, cfg.epochs),
                                 label=f"fine-tune {epoch + 1}/{cfg.epochs}",
                                 teacher=self.teacher)
        val = evaluate(self.student, self.data.val, self.arch.r, self.pre_eval,
                       batch_size=cfg.eval_batch_size)
        return {"epoch": epoch + 1, "train_loss": round(stats.loss, 5),
                "val_acc": round(val["acc"], 5), "val_loss": round(val["loss"], 5),
                "lr": round(stats.lr, 8), "seconds": round(stats.seconds, 2)}

    def accuracy(self, test: bool) -> dict[str, float]:
        """Accuracy and loss of the student as it is, on the validation slice (and test)."""
        res = {}
        splits = [("val", self.data.val)]
        if test and self.data.test is not None:
            splits.append(("test", self.data.test))
        for name, images in splits:
            r = evaluate(self.student, images, self.arch.r, self.pre_eval,
                         batch_size=self.cfg.eval_batch_size)
            res[f"{name}_acc"], res[f"{name}_loss"] = round(r["acc"], 5), round(r["loss"], 5)
        return res

    def say(self, message: str) -> None:
        self._say(message)
