"""Search configuration: a validated pydantic model read from YAML and overridden by flags.

Example (``experiments/search_cifar.yaml``)::

    space: cifar_mbv3
    checkpoint: runs/cifar10_supernet/supernet.safetensors
    data: ../shared/data/cifar10-jpeg.tar.gz
    proxy: inherited
    objectives: [accuracy, latency:cpu-1t]
    constraints: {latency:cpu-1t: 4.0}
    sampler: tpe
    n_trials: 200
    workers: 2

Objectives are ``accuracy`` (the accuracy proxy, maximised), ``latency:<device>`` (predicted
latency in ms, minimised), ``macs`` and ``params`` (minimised). Constraints are upper bounds on
``latency:<device>``, ``macs`` or ``params``. A search with one objective returns the best
feasible subnet; with several, the feasible Pareto front.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from nas._config import ConfigModel
from nas._io import read_yaml
from nas.errors import ConfigError
from nas.search._samplers import SAMPLERS

__all__ = [
    "SAMPLERS",
    "Objective",
    "OneOf",
    "ProxyOptions",
    "SearchConfig",
    "default_storage",
    "parse_metric",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: a device name is also a file name (``latency_db/devices/<name>.yaml``): no separators
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_METRICS = ("accuracy", "macs", "params")


class OneOf:
    """Pydantic metadata for a ``str`` that must be one of a registry's names.

    The names are read when a value is checked and when the JSON schema is built (its
    ``enum``, so OpenAPI lists them), never copied by hand::

        sampler: Annotated[str, OneOf(SAMPLERS.names)] = "tpe"

    Args:
        names: returns the allowed names (e.g. ``registry.names`` or ``lambda: list(reg)``).
    """

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self.names = names

    def _check(self, value: str) -> str:
        allowed = list(self.names())
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        out = dict(handler(schema))
        out["enum"] = list(self.names())
        return out


def default_storage(study: str) -> str:
    """Where a study is stored when no storage is given: a journal file under ``runs/``."""
    return str(Path("runs") / "studies" / f"{study}.journal")


def parse_metric(text: str) -> tuple[str, str | None]:
    """``"accuracy"`` -> ("accuracy", None); ``"latency:cpu-1t"`` -> ("latency", "cpu-1t")."""
    name, sep, device = str(text).strip().partition(":")
    if name == "latency":
        if not sep or not device:
            raise ConfigError(f"objective/constraint {text!r}: latency needs a device, e.g. "
                              "'latency:cpu-1t'")
        if not _DEVICE_RE.match(device) or ".." in device:
            raise ConfigError(f"objective/constraint {text!r}: {device!r} is not a device "
                              "name (letters, digits, '_', '.', '-'; `nas devices list`)")
        return "latency", device
    if name in _METRICS and not sep:
        return name, None
    raise ConfigError(f"unknown objective/constraint {text!r}; allowed: accuracy, macs, params, "
                      "latency:<device>")


class Objective(BaseModel):
    """One objective of the study: its key (``accuracy``, ``latency:cpu-1t``...), direction
    and a label for tables and plots."""

    model_config = ConfigDict(frozen=True)

    name: str
    direction: Literal["maximize", "minimize"]
    metric: str
    device: str | None = None

    @property
    def label(self) -> str:
        if self.metric == "latency":
            return f"latency {self.device} (ms)"
        return {"accuracy": "accuracy", "macs": "MACs", "params": "params"}[self.metric]

    @classmethod
    def from_text(cls, text: str) -> Objective:
        metric, device = parse_metric(text)
        key = f"latency:{device}" if device else metric
        return cls(name=key, metric=metric, device=device,
                   direction="maximize" if metric == "accuracy" else "minimize")


def _space_names() -> list[str]:
    from nas.space import SPACES

    return SPACES.names()


def _latency_kinds() -> list[str]:
    from nas.latency import PREDICTORS

    return list(PREDICTORS)


class ProxyOptions(ConfigModel):
    """Settings of the accuracy proxy's context (:class:`~nas.proxies.ProxyContext`), as
    ``proxy_options`` of a search config. Strict types: ``"yes"`` is not a boolean, ``5.0``
    not a count.

    Attributes:
        seed: fixes the batches and initial weights zero-cost proxies use.
        channels_last: run the supernet in channels-last memory format.
        val_limit: score ``inherited`` on at most this many validation images (None: all).
        bn_batches, bn_batch_size: BatchNorm recalibration before ``inherited``.
        eval_batch_size: images per evaluation batch.
        device: torch device of the proxy (``cpu``, ``cuda``, ``cuda:1``...).
        cache: keep scores in the proxy cache (off e.g. to time evaluations).
    """

    what = "proxy options"

    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    channels_last: StrictBool = True
    val_limit: StrictInt | None = Field(default=None, ge=1)
    bn_batches: StrictInt = Field(default=8, ge=0, le=100_000)
    bn_batch_size: StrictInt = Field(default=128, ge=1, le=65_536)
    eval_batch_size: StrictInt = Field(default=256, ge=1, le=65_536)
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:[0-9]{1,2})?|mps)$")
    cache: StrictBool = True


class SearchConfig(ConfigModel):
    """Everything a search needs; see the module docstring for the YAML form.

    Attributes:
        space: search space name.
        checkpoint: trained supernet (needed by proxies that use weights and by export).
        data: data for the accuracy proxy (``inherited``...): an image folder, archive,
            ``.npz``, CIFAR-10 folder or ``digits``.
        proxy: accuracy proxy spec, e.g. ``inherited`` or ``predictor:kind=mlp`` (read by
            ``nas.proxies``' one spec parser where it is used: the driver's
            :func:`~nas.search.check_config` and the service; not here, so that reading a
            stored config does not import torch).
        proxy_options: ProxyContext settings (``val_limit``, ``bn_batches``...).
        objectives: see the module docstring.
        constraints: upper bounds, e.g. ``{"latency:cpu-1t": 4.0, "params": 3e6}``.
        latency_kind: predictor kind per device (None: the best stored kind).
        db: latency database URL (default: ``NAS_DB_URL`` or ``latency_db/latency.sqlite``).
        sampler: a name in :data:`~nas.search.SAMPLERS`.
        n_trials: trial budget (completed trials, failed evaluations included; trials lost to
            a dead worker are re-run and do not count).
        workers: Ray actors evaluating architectures.
        batch_size: architectures per actor call.
        worker_threads: torch threads per actor.
        seed: seed of the sampler.
        study: study name (default: derived from space, objectives and seed).
        storage: Optuna storage URL or journal file (default ``runs/studies/<study>.journal``).
        address: Ray cluster address (default: ``RAY_ADDRESS``, else a local Ray).
        population: population size of ``nsga2`` and ``evolution`` (default 20) and of the
            predictor engine's evolution (default 100).
        engine: ``auto`` (the default) searches at predictor speed, in this process, when
            every objective and constraint is a predictor (an accuracy predictor such as
            ``ofa-imagenet``, latency predictors, MACs, params), and on Ray actors otherwise;
            ``predictor`` insists on the first (an error says what needs a model), ``ray``
            on the second (e.g. to use an Optuna sampler).
        generations: generations of the predictor engine (``population`` subnets each).
        interpolate: let a search that prices a device with a fixed set of resolutions (a
            lookup table such as ``note10``) pick the space's resolutions in between, priced
            by interpolation (``nas latency kinds``: ``table``).
    """

    what = "search config"

    space: Annotated[str, OneOf(_space_names)]
    checkpoint: str | None = None
    data: str | None = None
    proxy: str = "inherited"
    proxy_options: dict[str, Any] = Field(default_factory=dict)
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "latency:cpu-1t"])
    constraints: dict[str, float] = Field(default_factory=dict)
    latency_kind: Annotated[str, OneOf(_latency_kinds)] | None = None
    db: str | None = None
    sampler: Annotated[str, OneOf(SAMPLERS.names)] = "tpe"
    n_trials: int = Field(default=100, ge=1, le=1_000_000)
    workers: int = Field(default=1, ge=1, le=1024)
    batch_size: int = Field(default=4, ge=1, le=4096)
    worker_threads: int = Field(default=1, ge=1, le=256)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    study: str | None = None
    storage: str | None = None
    address: str | None = None
    population: int | None = Field(default=None, ge=2, le=100_000)
    engine: Literal["auto", "predictor", "ray"] = "auto"
    generations: int = Field(default=300, ge=1, le=100_000)
    interpolate: bool = False

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one objective is needed")
        keys = [Objective.from_text(x).name for x in v]
        if len(set(keys)) != len(keys):
            raise ValueError(f"objectives repeat: {v}")
        return keys

    @field_validator("proxy_options")
    @classmethod
    def _proxy_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        # checked by a strict model, but kept as given (only the keys set): the workers
        # pass them on to ProxyContext, whose defaults rule otherwise
        opts: ProxyOptions = ProxyOptions.model_validate(v)
        return opts.model_dump(exclude_unset=True)

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: dict[str, float]) -> dict[str, float]:
        out = {}
        for key, bound in v.items():
            metric, device = parse_metric(key)
            if metric == "accuracy":
                raise ValueError("accuracy cannot be a constraint (constraints are upper bounds "
                                 "on latency:<device>, macs or params)")
            if not bound > 0:  # NaN and inf are refused before (allow_inf_nan=False)
                raise ValueError(f"{key}: the bound must be > 0, got {bound}")
            out[f"latency:{device}" if device else metric] = float(bound)
        return out

    @field_validator("study")
    @classmethod
    def _study(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.match(v):
            raise ValueError(f"{v!r}: use letters, digits, '_', '.', '-' (at most 100, not "
                             "starting with a symbol)")
        return v

    @model_validator(mode="after")
    def _sampler_fits_objectives(self) -> SearchConfig:
        SAMPLERS.get(self.sampler).check_objectives(len(self.objectives))
        return self

    # ------------------------------------------------------------------ derived
    @property
    def objective_list(self) -> list[Objective]:
        return [Objective.from_text(x) for x in self.objectives]

    @property
    def devices(self) -> list[str]:
        """Every device an objective or constraint prices, in first-mention order."""
        keys = [*self.objectives, *self.constraints]
        return list(dict.fromkeys(k.split(":", 1)[1] for k in keys if k.startswith("latency:")))

    @property
    def study_name(self) -> str:
        if self.study:
            return self.study
        objs = "-".join(o.replace(":", "_") for o in self.objectives)
        return f"{self.space}-{objs}-{self.sampler}-s{self.seed}"

    @property
    def storage_url(self) -> str:
        """The Optuna storage: a URL, or a journal file path (default under ``runs/``)."""
        return self.storage or default_storage(self.study_name)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> SearchConfig:
        """Read ``path`` (YAML) if given, apply ``overrides`` that are not None, validate.

        Raises:
            ConfigError: one line naming the field, its value and what is allowed (or the
                file that cannot be read).
        """
        raw: dict[str, Any] = {}
        where = str(path) if path is not None else cls.what
        if path is not None:
            loaded = read_yaml(path, cls.what)
            if not isinstance(loaded, dict):
                raise ConfigError(f"{cls.what} {path} must be a mapping of fields, got "
                                  f"{type(loaded).__name__}")
            raw.update(loaded)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        result: SearchConfig = cls.from_dict(raw, where=where)
        return result
