"""Training configuration: frozen pydantic models read from an experiment's YAML file.

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

A bad value raises one :class:`~nas.errors.ConfigError` line in the shared format of
:mod:`nas._config` (``file: field = value: what is allowed``)::

    c.yaml: phases.0.lr = -1: Input should be greater than 0
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    ValidationError,
    field_validator,
)
from pydantic import model_validator as _model_validator
from pydantic_core import PydanticCustomError

from nas._config import ConfigModel
from nas.space import get_space
from nas.train._formats import DATA_FORMATS

__all__ = [
    "TASKS",
    "AugmentConfig",
    "DataConfig",
    "DataFormatName",
    "DistillConfig",
    "EvalConfig",
    "LMDataConfig",
    "LMEvalConfig",
    "LMOptimConfig",
    "LMTrainConfig",
    "OptimConfig",
    "PhaseConfig",
    "TrainConfig",
    "config_from_dict",
    "is_lm_config",
    "load_any_config",
    "load_config",
]

#: Phase tasks. ``full``: the largest subnet only. ``kernel``, ``depth``, ``expand``:
#: Once-for-All's progressive shrinking (each makes one more dimension elastic, keeping the
#: earlier ones). ``sandwich``: every dimension elastic, largest + smallest + random subnets
#: per step with in-place distillation from the largest (BigNAS / AttentiveNAS).
TASKS = ("full", "kernel", "depth", "expand", "sandwich")
Task = Literal["full", "kernel", "depth", "expand", "sandwich"]
SubnetName = Literal["largest", "smallest", "middle"]

# YAML gives real types: no text for numbers, no numbers for booleans
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Float = Annotated[float, Strict()]
#: NumPy's and torch's generators take seeds of 0 .. 2**32 - 1
Seed = Annotated[Int, Field(ge=0, le=2**32 - 1)]


def _registered_format(value: str) -> str:
    """``value`` if it is ``auto`` or the name of a registered data format (a plug-in's
    too: the registry is read when a config is checked)."""
    allowed = ["auto", *DATA_FORMATS.names()]
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)}")
    return value


#: a data format in a config: ``auto`` (detected from the source) or one of
#: :data:`~nas.train.DATA_FORMATS`
DataFormatName = Annotated[str, Strict(), AfterValidator(_registered_format)]


def _listed(value: Any) -> Any:
    """A single value where a list is expected is a list of one (``depths: 4``)."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [value]
    return value


def _defaults(value: Any) -> Any:
    """``augment:`` with nothing after it (None) means every default."""
    return {} if value is None else value


IntChoices = Annotated[tuple[Int, ...], BeforeValidator(_listed)]


def _fail(loc: tuple[str | int, ...], value: Any, message: str) -> ValidationError:
    """A validation error at ``loc`` (a check of several fields, reported at the one that
    must change, in the shared one-line format)."""
    return ValidationError.from_exception_data("config", [
        {"type": PydanticCustomError("value_error", message.replace("{", "{{")
                                     .replace("}", "}}")),
         "loc": loc, "input": value}])


class _Part(ConfigModel):
    what = "config file"  # "config file not found: x.yaml", as before the shared format


class DataConfig(_Part):
    """Where the images come from and how the validation slice is cut.

    Attributes:
        source: an image folder, a ``.tar.gz`` of one, a CIFAR-10 python/binary folder or
            archive, an ``.npz`` file, or ``"digits"`` (scikit-learn's bundled 8x8 digits).
        format: ``auto`` or one of :data:`nas.train.DATA_FORMATS` (a plug-in's too).
        val_size: images of the training set held out as the validation slice (what searches
            and proxies see); the test set is kept for final numbers.
        val_seed: seed of that slice (fixed, so every stage sees the same slice).
        train_limit: use at most this many training images (after the validation slice is
            cut), e.g. for smoke runs. ``test_limit``: the same for the test set.
        cache_dir: where decoded arrays are cached (default ``$NAS_CACHE_DIR/data`` or
            ``~/.cache/nas/data``).
    """

    source: Str
    format: DataFormatName = "auto"
    val_size: Annotated[Int, Field(ge=0)] = 5000
    val_seed: Seed = 0
    train_limit: Annotated[Int, Field(ge=1)] | None = None
    test_limit: Annotated[Int, Field(ge=1)] | None = None
    cache_dir: Str | None = None


class AugmentConfig(_Part):
    """Training augmentation, done on tensors: random crop with padding, horizontal flip."""

    crop_padding: Annotated[Int, Field(ge=0)] = 4
    flip: Bool = True


class OptimConfig(_Part):
    """SGD with Nesterov momentum, cosine learning rate per phase (Once-for-All's recipe)."""

    momentum: Annotated[Float, Field(ge=0)] = 0.9
    nesterov: Bool = True
    weight_decay: Annotated[Float, Field(ge=0)] = 4e-5
    #: no weight decay on BatchNorm parameters and biases (OFA's ``no_decay_keys``)
    no_decay_bn_bias: Bool = True
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = 0.1
    grad_clip: Float | None = None


class DistillConfig(_Part):
    """Knowledge distillation: ``loss = CE + kd_ratio * soft-CE(student, teacher / T)``.

    Progressive-shrinking phases distil from a frozen copy of the largest subnet taken after
    the ``full`` phase; ``sandwich`` phases distil in place from the largest subnet of the step.
    ``kd_ratio: 0`` turns distillation off.
    """

    kd_ratio: Annotated[Float, Field(ge=0)] = 1.0
    temperature: Annotated[Float, Field(gt=0)] = 1.0


class EvalConfig(_Part):
    """Validation after each epoch: subnets evaluated after BatchNorm recalibration.

    Attributes:
        subnets: any of ``largest``, ``smallest``, ``middle`` (each dimension's middle choice).
        val_limit: evaluate on at most this many validation images (None: all).
        bn_batches: training batches used to recalibrate BatchNorm statistics.
    """

    subnets: Annotated[tuple[SubnetName, ...], BeforeValidator(_listed)] = (
        "largest", "smallest")
    val_limit: Int | None = 2000
    bn_batches: Annotated[Int, Field(ge=1)] = 8
    batch_size: Annotated[Int, Field(ge=1)] = 256


class PhaseConfig(_Part):
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

    task: Task
    epochs: Annotated[Int, Field(ge=0)]
    lr: Annotated[Float, Field(gt=0)]
    subnets_per_step: Int = 1
    warmup_epochs: Annotated[Float, Field(ge=0)] = 0.0
    kernel_sizes: IntChoices | None = None
    depths: IntChoices | None = None
    expand_ratios: IntChoices | None = None
    name: Str = ""

    @_model_validator(mode="after")
    def _consistent(self) -> PhaseConfig:
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise _fail(("warmup_epochs",), self.warmup_epochs,
                        f"must be < epochs ({self.epochs})")
        lo = 2 if self.task == "sandwich" else 1
        if self.subnets_per_step < lo:
            raise _fail(("subnets_per_step",), self.subnets_per_step,
                        f"must be >= {lo} for task {self.task!r}")
        if self.task == "full" and self.subnets_per_step != 1:
            raise _fail(("subnets_per_step",), self.subnets_per_step,
                        "must be 1 for task 'full' (it trains the largest subnet only)")
        return self


class TrainConfig(_Part):
    """A supernet training run (see the module docstring for the YAML form).

    Attributes:
        elastic_resolution: each batch uses a resolution drawn from the space's (OFA);
            otherwise the largest resolution throughout.
        channels_last: NHWC memory format (2.5-3x faster on CPUs for depthwise convolutions).
        init: a supernet checkpoint of the same space whose weights start the run instead of
            a random initialisation: more epochs on a trained supernet, or fine-tuning one on
            other data of the same classes (a resumed run continues from its own checkpoint).
    """

    space: Str
    data: Annotated[DataConfig, BeforeValidator(_defaults)]
    phases: Annotated[tuple[PhaseConfig, ...], Field(min_length=1)]
    out: Str = "runs/train"
    init: Str | None = None
    seed: Seed = 0
    batch_size: Annotated[Int, Field(ge=1)] = 128
    elastic_resolution: Bool = True
    channels_last: Bool = True
    augment: Annotated[AugmentConfig, BeforeValidator(_defaults)] = AugmentConfig()
    optim: Annotated[OptimConfig, BeforeValidator(_defaults)] = OptimConfig()
    distill: Annotated[DistillConfig, BeforeValidator(_defaults)] = DistillConfig()
    eval: Annotated[EvalConfig, BeforeValidator(_defaults)] = EvalConfig()

    @field_validator("space")
    @classmethod
    def _known_space(cls, name: str) -> str:
        get_space(name)  # UnknownNameError lists the known spaces
        return name

    @field_validator("phases")
    @classmethod
    def _named_phases(cls, phases: tuple[PhaseConfig, ...]) -> tuple[PhaseConfig, ...]:
        seen: set[str] = set()
        for i, p in enumerate(phases):
            if p.name and p.name in seen:
                raise _fail((i, "name"), p.name, "is used twice")  # under "phases"
            seen.add(p.name)
        return tuple(p if p.name else p.model_copy(update={"name": f"{i}-{p.task}"})
                     for i, p in enumerate(phases))

    @_model_validator(mode="after")
    def _phases_fit_the_space(self) -> TrainConfig:
        space = get_space(self.space)
        for i, p in enumerate(self.phases):
            for key, choices in (("kernel_sizes", space.kernel_sizes),
                                 ("depths", space.depths),
                                 ("expand_ratios", space.expand_ratios)):
                sub = getattr(p, key)
                if sub is not None and (not sub or any(v not in choices for v in sub)):
                    raise _fail(("phases", i, key), list(sub),
                                f"must be a non-empty subset of {list(choices)} "
                                f"(space {space.name})")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples), as ``config.yaml`` of a run holds it."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """Hash of everything that changes what is trained (not ``out`` nor evaluation)."""
        d = self.to_dict()
        d.pop("out", None)
        d.pop("eval", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)


# ---------------------------------------------------------------------- language models
class LMDataConfig(_Part):
    """A text corpus and its split by whole works.

    Attributes:
        source: a folder or a ``.tar``/``.tar.gz`` of ``.txt`` files, one per work.
        format: ``auto`` or a registered data format of text (``lm-text``).
        val_works: the works (file names without ``.txt``) held out for validation; every
            other work trains.
    """

    source: Str
    format: DataFormatName = "auto"
    val_works: Annotated[tuple[Str, ...], BeforeValidator(_listed), Field(min_length=1)]


class LMOptimConfig(_Part):
    """AdamW; no weight decay on LayerNorm parameters and biases."""

    lr: Annotated[Float, Field(gt=0)] = 1e-3
    beta1: Annotated[Float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[Float, Field(ge=0, lt=1)] = 0.95
    weight_decay: Annotated[Float, Field(ge=0)] = 0.1
    grad_clip: Annotated[Float, Field(gt=0)] | None = 1.0


class LMEvalConfig(_Part):
    """Validation loss of the largest and the smallest subnet at every checkpoint, on the
    first ``tokens`` tokens of the validation works."""

    tokens: Annotated[Int, Field(ge=1)] = 32768
    batch_size: Annotated[Int, Field(ge=1)] = 16


class LMTrainConfig(_Part):
    """A language-model supernet training run (a space of the ``gpt`` family): the sandwich
    rule at every step (the largest subnet on the next tokens, the smallest and random
    subnets distilled in place from it), AdamW, a linear warm-up then a cosine to 0 over
    ``steps``, a checkpoint every ``checkpoint_every`` steps.

    Attributes:
        context: tokens per training window (default: the space's ``n_ctx``).
        subnets_per_step: largest + smallest + the rest random.
        bf16: forward passes under bfloat16 autocast (losses in float32).
        ship: at the end, also write the supernet here in float16 (the shipped copy).
        budget_minutes: stop cleanly after this much training in one invocation (the final
            supernet is still written); ``--budget-minutes`` overrides it.
        init: a GPT supernet checkpoint of the same geometry whose weights start the run.
        largest_only_steps: the first steps train the largest subnet alone, on the next
            tokens (Once-for-All's first phase: the full network before the others are
            distilled from it); the sandwich rule from then on. 0: the sandwich throughout.
    """

    space: Str
    data: LMDataConfig
    steps: Annotated[Int, Field(ge=1)]
    out: Str = "runs/lm"
    init: Str | None = None
    seed: Seed = 0
    batch_size: Annotated[Int, Field(ge=1)] = 32
    context: Annotated[Int, Field(ge=1)] | None = None
    warmup_steps: Annotated[Int, Field(ge=0)] = 0
    checkpoint_every: Annotated[Int, Field(ge=1)] = 100
    subnets_per_step: Annotated[Int, Field(ge=2)] = 4
    largest_only_steps: Annotated[Int, Field(ge=0)] = 0
    bf16: Bool = False
    optim: Annotated[LMOptimConfig, BeforeValidator(_defaults)] = LMOptimConfig()
    distill: Annotated[DistillConfig, BeforeValidator(_defaults)] = DistillConfig()
    eval: Annotated[LMEvalConfig, BeforeValidator(_defaults)] = LMEvalConfig()
    ship: Str | None = None
    budget_minutes: Annotated[Float, Field(gt=0)] | None = None

    @field_validator("space")
    @classmethod
    def _gpt_space(cls, name: str) -> str:
        from nas.space import get_family_space

        sp = get_family_space(name)  # UnknownNameError lists the known spaces
        if sp.family != "gpt":
            raise ValueError(f"must be a space of the gpt family, got {name!r} of family "
                             f"{sp.family!r}")
        return name

    @_model_validator(mode="after")
    def _consistent(self) -> LMTrainConfig:
        from nas.space import get_family_space

        n_ctx = int(get_family_space(self.space).n_ctx)  # type: ignore[attr-defined]
        if self.context is not None and self.context > n_ctx:
            raise _fail(("context",), self.context,
                        f"must be <= {n_ctx} (the context of space {self.space})")
        if self.steps % self.checkpoint_every:
            raise _fail(("checkpoint_every",), self.checkpoint_every,
                        f"must divide steps ({self.steps})")
        if self.warmup_steps >= self.steps:
            raise _fail(("warmup_steps",), self.warmup_steps, f"must be < steps ({self.steps})")
        if self.largest_only_steps >= self.steps:
            raise _fail(("largest_only_steps",), self.largest_only_steps,
                        f"must be < steps ({self.steps}): the other subnets need steps too")
        return self

    @property
    def block(self) -> int:
        """Tokens per training window."""
        from nas.space import get_family_space

        return int(self.context or get_family_space(self.space).n_ctx)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """Hash of everything that changes what is trained (not where it is written, the
        evaluation, the shipped copy nor the time budget)."""
        d = self.to_dict()
        for k in ("out", "eval", "ship", "budget_minutes"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def is_lm_config(raw: Any) -> bool:
    """Whether parsed YAML is a language-model run (its space is of the gpt family)."""
    from nas.space import get_family_space

    if not isinstance(raw, dict) or not isinstance(raw.get("space"), str):
        return False
    try:
        return get_family_space(raw["space"]).family == "gpt"
    except Exception:  # an unknown space is the config model's one-line error
        return False


def load_any_config(path: Path | str) -> TrainConfig | LMTrainConfig:
    """A training configuration of either kind: :class:`LMTrainConfig` when its space is of
    the gpt family, else :class:`TrainConfig`."""
    from nas._io import read_yaml

    # bounded (an endless file is one line), duplicate keys refused: the loader of every config
    raw = read_yaml(path, TrainConfig.what)
    if is_lm_config(raw):
        lm: LMTrainConfig = LMTrainConfig.from_dict(raw, where=str(path))
        return lm
    return load_config(path)


# ---------------------------------------------------------------------- loading
def load_config(path: Path | str) -> TrainConfig:
    """Read and validate a training configuration file.

    Raises:
        ConfigError: missing file, bad YAML, unknown or missing keys, bad values; one line
            naming the file and the key.
        UnknownNameError: the space is not registered (listing the known ones).
    """
    cfg: TrainConfig = TrainConfig.load(path)
    return cfg


def config_from_dict(raw: Any, where: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from plain data (e.g. parsed YAML)."""
    cfg: TrainConfig = TrainConfig.from_dict(raw, where=where)
    return cfg
