"""Training configuration: frozen dataclasses read from an experiment's YAML file.

Example (``experiments/<name>/config.yaml``)::

    space: cifar_mbv3
    out: runs/cifar10_supernet
    data: {source: ../shared/data/cifar10-jpeg.tar.gz, val_size: 5000}
    batch_size: 128
    phases:
      - {task: full, epochs: 8, lr: 0.1}
      - {task: kernel, epochs: 2, lr: 0.03}
      - {task: depth, epochs: 1, lr: 0.01, subnets_per_step: 2, depths: [3, 4]}
      - {task: depth, epochs: 2, lr: 0.01, subnets_per_step: 2}
      - {task: expand, epochs: 1, lr: 0.01, subnets_per_step: 2, expand_ratios: [4, 6]}
      - {task: expand, epochs: 2, lr: 0.01, subnets_per_step: 2}

Relative paths (``data.source``, ``data.cache_dir``, ``out``, ``init``) are relative to the working
directory, i.e. to the repository root when commands are run from there.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError
from nas.space import get_space

__all__ = [
    "TASKS",
    "AugmentConfig",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "OptimConfig",
    "PhaseConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
]

#: Phase tasks. ``full``: the largest subnet only. ``kernel``, ``depth``, ``expand``:
#: Once-for-All's progressive shrinking (each makes one more dimension elastic, keeping the
#: earlier ones). ``sandwich``: every dimension elastic, largest + smallest + random subnets
#: per step with in-place distillation from the largest (BigNAS / AttentiveNAS).
TASKS = ("full", "kernel", "depth", "expand", "sandwich")


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how the validation slice is cut.

    Attributes:
        source: an image folder, a ``.tar.gz`` of one, a CIFAR-10 python/binary folder or
            archive, an ``.npz`` file, or ``"digits"`` (scikit-learn's bundled 8x8 digits).
        format: ``auto`` or one of :data:`nas.train.FORMATS`.
        val_size: images of the training set held out as the validation slice (what searches
            and proxies see); the test set is kept for final numbers.
        val_seed: seed of that slice (fixed, so every stage sees the same slice).
        train_limit: use at most this many training images (after the validation slice is
            cut), e.g. for smoke runs. ``test_limit``: the same for the test set.
        cache_dir: where decoded arrays are cached (default ``$NAS_CACHE_DIR/data`` or
            ``~/.cache/nas/data``).
    """

    source: str
    format: str = "auto"
    val_size: int = 5000
    val_seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation, done on tensors: random crop with padding, horizontal flip."""

    crop_padding: int = 4
    flip: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """SGD with Nesterov momentum, cosine learning rate per phase (Once-for-All's recipe)."""

    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5
    #: no weight decay on BatchNorm parameters and biases (OFA's ``no_decay_keys``)
    no_decay_bn_bias: bool = True
    label_smoothing: float = 0.1
    grad_clip: float | None = None


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: ``loss = CE + kd_ratio * soft-CE(student, teacher / T)``.

    Progressive-shrinking phases distil from a frozen copy of the largest subnet taken after
    the ``full`` phase; ``sandwich`` phases distil in place from the largest subnet of the step.
    ``kd_ratio: 0`` turns distillation off.
    """

    kd_ratio: float = 1.0
    temperature: float = 1.0


@dataclass(frozen=True)
class EvalConfig:
    """Validation after each epoch: subnets evaluated after BatchNorm recalibration.

    Attributes:
        subnets: any of ``largest``, ``smallest``, ``middle`` (each dimension's middle choice).
        val_limit: evaluate on at most this many validation images (None: all).
        bn_batches: training batches used to recalibrate BatchNorm statistics.
    """

    subnets: tuple[str, ...] = ("largest", "smallest")
    val_limit: int | None = 2000
    bn_batches: int = 8
    batch_size: int = 256


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase.

    Attributes:
        task: one of :data:`TASKS`.
        epochs: passes over the training set.
        lr: peak learning rate (cosine decay to 0 within the phase, after ``warmup_epochs``
            of linear warm-up).
        subnets_per_step: subnets whose gradients are accumulated before each optimizer step
            (OFA's ``dynamic_batch_size``; sandwich: largest + smallest + the rest random).
        kernel_sizes, depths, expand_ratios: restrict an elastic dimension to these choices
            (OFA's depth phase ``[3, 4]`` then ``[2, 3, 4]``); default: all of the space's.
        name: label in logs and checkpoint names (default ``<index>-<task>``).
    """

    task: str
    epochs: int
    lr: float
    subnets_per_step: int = 1
    warmup_epochs: float = 0.0
    kernel_sizes: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    expand_ratios: tuple[int, ...] | None = None
    name: str = ""


@dataclass(frozen=True)
class TrainConfig:
    """A supernet training run (see the module docstring for the YAML form).

    Attributes:
        elastic_resolution: each batch uses a resolution drawn from the space's (OFA);
            otherwise the largest resolution throughout.
        channels_last: NHWC memory format (2.5-3x faster on CPUs for depthwise convolutions).
        init: a supernet checkpoint of the same space whose weights start the run instead of
            a random initialisation: more epochs on a trained supernet, or fine-tuning one on
            other data of the same classes (a resumed run continues from its own checkpoint).
    """

    space: str
    data: DataConfig
    phases: tuple[PhaseConfig, ...]
    out: str = "runs/train"
    init: str | None = None
    seed: int = 0
    batch_size: int = 128
    elastic_resolution: bool = True
    channels_last: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def fingerprint(self) -> str:
        """Hash of everything that changes what is trained (not ``out`` nor evaluation)."""
        d = self.to_dict()
        d.pop("out", None)
        d.pop("eval", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)


# ---------------------------------------------------------------------- loading
def load_config(path: Path | str) -> TrainConfig:
    """Read and validate a training configuration file.

    Raises:
        ConfigError: missing file, bad YAML, unknown or missing keys, bad values; the message
            names the file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    return config_from_dict(raw, where=str(path))


def config_from_dict(raw: Any, where: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from plain data (e.g. parsed YAML)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got "
                          f"{type(raw).__name__}")
    cfg = _build(TrainConfig, raw, where)
    _validate(cfg, where)
    # name the phases
    phases = tuple(
        p if p.name else _replace(p, name=f"{i}-{p.task}") for i, p in enumerate(cfg.phases)
    )
    return _replace(cfg, phases=phases)


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    kwargs = {}
    for name, f in known.items():
        if name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{where}: missing key {name!r}")
            continue
        kwargs[name] = _convert(hints[name], raw[name], f"{where}: {name}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where)
    if is_dataclass(tp):
        return _build(tp, {} if value is None else value, where)  # type: ignore[arg-type]
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(tp)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module


def _validate(cfg: TrainConfig, where: str) -> None:
    space = get_space(cfg.space)  # UnknownNameError lists the known spaces
    if not cfg.phases:
        raise ConfigError(f"{where}: phases must list at least one phase")
    if cfg.batch_size < 1:
        raise ConfigError(f"{where}: batch_size must be >= 1, got {cfg.batch_size}")
    d = cfg.data
    from nas.train._data import FORMATS

    if d.format not in ("auto", *FORMATS):
        raise ConfigError(f"{where}: data.format must be 'auto' or one of {list(FORMATS)}, got "
                          f"{d.format!r}")
    if d.val_size < 0:
        raise ConfigError(f"{where}: data.val_size must be >= 0, got {d.val_size}")
    for key in ("train_limit", "test_limit"):
        v = getattr(d, key)
        if v is not None and v < 1:
            raise ConfigError(f"{where}: data.{key} must be >= 1 or null, got {v}")
    if cfg.augment.crop_padding < 0:
        raise ConfigError(f"{where}: augment.crop_padding must be >= 0")
    if not 0.0 <= cfg.optim.label_smoothing < 1.0:
        raise ConfigError(f"{where}: optim.label_smoothing must be in [0, 1), got "
                          f"{cfg.optim.label_smoothing}")
    if cfg.optim.weight_decay < 0 or cfg.optim.momentum < 0:
        raise ConfigError(f"{where}: optim.weight_decay and optim.momentum must be >= 0")
    if cfg.distill.kd_ratio < 0 or cfg.distill.temperature <= 0:
        raise ConfigError(f"{where}: distill.kd_ratio must be >= 0 and distill.temperature > 0")
    ev = cfg.eval
    allowed_eval = ("largest", "smallest", "middle")
    for s in ev.subnets:
        if s not in allowed_eval:
            raise ConfigError(f"{where}: eval.subnets entries must be one of {list(allowed_eval)}"
                              f", got {s!r}")
    if ev.bn_batches < 1 or ev.batch_size < 1:
        raise ConfigError(f"{where}: eval.bn_batches and eval.batch_size must be >= 1")
    names: set[str] = set()
    for i, p in enumerate(cfg.phases):
        at = f"{where}: phases[{i}]"
        if p.task not in TASKS:
            raise ConfigError(f"{at}.task must be one of {list(TASKS)}, got {p.task!r}")
        if p.epochs < 0:
            raise ConfigError(f"{at}.epochs must be >= 0, got {p.epochs}")
        if not p.lr > 0:
            raise ConfigError(f"{at}.lr must be > 0, got {p.lr}")
        if p.warmup_epochs < 0 or (p.epochs and p.warmup_epochs >= p.epochs):
            raise ConfigError(f"{at}.warmup_epochs must be >= 0 and < epochs, got "
                              f"{p.warmup_epochs}")
        lo = 2 if p.task == "sandwich" else 1
        if p.subnets_per_step < lo:
            raise ConfigError(f"{at}.subnets_per_step must be >= {lo} for task {p.task!r}, got "
                              f"{p.subnets_per_step}")
        if p.task == "full" and p.subnets_per_step != 1:
            raise ConfigError(f"{at}.subnets_per_step must be 1 for task 'full' (it trains "
                              "the largest subnet only)")
        for key, choices in (("kernel_sizes", space.kernel_sizes), ("depths", space.depths),
                             ("expand_ratios", space.expand_ratios)):
            sub = getattr(p, key)
            if sub is None:
                continue
            bad = [v for v in sub if v not in choices]
            if bad or not sub:
                raise ConfigError(f"{at}.{key} must be a non-empty subset of {list(choices)} "
                                  f"(space {space.name}), got {list(sub)}")
        if p.name:
            if p.name in names:
                raise ConfigError(f"{at}.name {p.name!r} is used twice")
            names.add(p.name)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
