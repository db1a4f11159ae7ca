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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nas.errors import ConfigError

__all__ = ["SAMPLERS", "Objective", "SearchConfig", "default_storage", "parse_metric"]

#: Samplers: Optuna's TPE, NSGA-II, random and Gaussian-process samplers, and Once-for-All's
#: evolutionary search as a baseline.
SAMPLERS = ("tpe", "nsga2", "random", "gp", "evolution")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_METRICS = ("accuracy", "macs", "params")


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


class SearchConfig(BaseModel):
    """Everything a search needs; see the module docstring for the YAML form.

    Attributes:
        space: search space name.
        checkpoint: trained supernet (needed by proxies that use weights and by export).
        data: data for the accuracy proxy (``inherited``...): an image folder, archive,
            ``.npz``, CIFAR-10 folder or ``digits``.
        proxy: accuracy proxy spec, e.g. ``inherited`` or ``predictor:kind=mlp``.
        proxy_options: ProxyContext settings (``val_limit``, ``bn_batches``...).
        objectives: see the module docstring.
        constraints: upper bounds, e.g. ``{"latency:cpu-1t": 4.0, "params": 3e6}``.
        latency_kind: predictor kind per device (None: the best stored kind).
        db: latency database URL (default: ``NAS_DB_URL`` or ``latency_db/latency.sqlite``).
        sampler: one of :data:`SAMPLERS`.
        n_trials: trial budget (completed trials, failed evaluations included; trials lost to
            a dead worker are re-run and do not count).
        workers: Ray actors evaluating architectures.
        batch_size: architectures per actor call.
        worker_threads: torch threads per actor.
        seed: seed of the sampler.
        study: study name (default: derived from space, objectives and seed).
        storage: Optuna storage URL or journal file (default ``runs/studies/<study>.journal``).
        address: Ray cluster address (default: ``RAY_ADDRESS``, else a local Ray).
        population: population size of ``nsga2`` and ``evolution``.
    """

    model_config = ConfigDict(extra="forbid")

    space: str
    checkpoint: str | None = None
    data: str | None = None
    proxy: str = "inherited"
    proxy_options: dict[str, Any] = Field(default_factory=dict)
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "latency:cpu-1t"])
    constraints: dict[str, float] = Field(default_factory=dict)
    latency_kind: str | None = None
    db: str | None = None
    sampler: str = "tpe"
    n_trials: int = Field(default=100, ge=1, le=1_000_000)
    workers: int = Field(default=1, ge=1, le=1024)
    batch_size: int = Field(default=4, ge=1, le=4096)
    worker_threads: int = Field(default=1, ge=1, le=256)
    seed: int = 0
    study: str | None = None
    storage: str | None = None
    address: str | None = None
    population: int = Field(default=20, ge=2, le=100_000)

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"must be one of {', '.join(SAMPLERS)}, got {v!r}")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one objective is needed")
        keys = [Objective.from_text(x).name for x in v]
        if len(set(keys)) != len(keys):
            raise ValueError(f"objectives repeat: {v}")
        return keys

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: dict[str, float]) -> dict[str, float]:
        out = {}
        for key, bound in v.items():
            metric, device = parse_metric(key)
            if metric == "accuracy":
                raise ValueError("accuracy cannot be a constraint (constraints are upper bounds "
                                 "on latency:<device>, macs or params)")
            if not bound > 0:
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
            ConfigError: one line naming the field, its value and what is allowed.
        """
        raw: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"search config {p} does not exist")
            try:
                loaded = yaml.safe_load(p.read_text())
            except yaml.YAMLError as exc:
                raise ConfigError(f"search config {p} is not valid YAML: {exc}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"search config {p} must be a mapping of fields")
            raw.update(loaded)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw, where=str(path) if path else "search config")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "search config") -> SearchConfig:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "(root)"
            msg = str(err["msg"]).removeprefix("Value error, ")
            value = err.get("input")
            shown = "" if err["type"] == "missing" else f" = {value!r}"
            raise ConfigError(f"{where}: {field}{shown}: {msg}") from None
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
