"""Search configuration: one validated pydantic model per search engine, read from YAML and
overridden by flags.

Example (``experiments/search/cifar10.yaml``)::

    space: cifar_mbv3
    checkpoint: runs/cifar10_supernet/supernet.safetensors
    data: ../shared/data/cifar10-jpeg.tar.gz
    proxy: inherited
    objectives: [accuracy, latency:cpu-1t]
    constraints: {latency:cpu-1t: 4.0}
    engine: ray
    sampler: tpe
    n_trials: 200
    workers: 2

Objectives are ``accuracy`` (the accuracy proxy, maximised), ``latency:<device>`` (predicted
latency in ms, minimised), ``macs``, ``params`` and, on a space that counts memory (the ``gpt``
family), ``memory`` (minimised). Constraints are upper bounds on ``latency:<device>``,
``macs``, ``params`` or ``memory``. A search with one objective returns the best feasible
subnet; with several, the feasible Pareto front.

Memory is exact, in MiB (2**20 bytes): the subnet's weights plus its KV cache holding the
space's context (``n_ctx`` positions), generating one sequence in float32
(:meth:`~nas.space.GPTSpace.memory`); ``memory:<C>`` counts the cache at ``C`` positions
instead (``memory:128``). A memory budget below the smallest subnet's memory is refused when
the config is read, in one line naming both.

Engines. :class:`SearchConfig` holds the settings every engine uses; each engine registered in
:data:`~nas.search.ENGINES` has a model of its own that adds its settings
(:class:`RaySearchConfig`: ``sampler``, ``workers``, ``batch_size``, ``worker_threads``,
``address``; :class:`PredictorSearchConfig`: ``generations``). The models form a pydantic
discriminated union on ``engine``, and a setting the engine does not use is refused in one
line, never ignored::

    search config: workers = 4: not a setting of engine 'predictor' (settings of the ray engine)

Without ``engine`` (or with ``engine: auto``) the settings given choose: a setting of one
engine (``workers: 4``, ``sampler: nsga2``; ``generations: 500``) means that engine, as a user
who sets it expects; with none, the engine is chosen when the search runs
(:func:`~nas.search.choose_engine`: the predictor engine when every objective and constraint
is a predictor, Ray otherwise). Settings of two engines without ``engine`` are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, Union, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from nas._config import ConfigModel
from nas._io import read_yaml
from nas.errors import ConfigError, NASError
from nas.search._samplers import SAMPLERS

if TYPE_CHECKING:
    import numpy as np
    from optuna.samplers import BaseSampler

__all__ = [
    "AUTO",
    "SAMPLERS",
    "Objective",
    "OneOf",
    "PredictorOptions",
    "PredictorSearchConfig",
    "ProxyOptions",
    "RayOptions",
    "RaySearchConfig",
    "SearchConfig",
    "default_storage",
    "is_memory",
    "memory_context",
    "memory_mib",
    "parse_metric",
    "search_config_type",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
#: a device name is also a file name (``latency_db/devices/<name>.yaml``): no separators
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_METRICS = ("accuracy", "macs", "params", "memory")
#: memory objectives and constraints are in MiB
MIB = 2 ** 20
_CONTEXT_RE = re.compile(r"^[0-9]{1,9}$")
_ALLOWED = "accuracy, macs, params, memory, memory:<context>, latency:<device>"


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
    """``"accuracy"`` -> ("accuracy", None); ``"latency:cpu-1t"`` -> ("latency", "cpu-1t");
    ``"memory:512"`` -> ("memory", "512") (the context of the KV cache)."""
    name, sep, device = str(text).strip().partition(":")
    if name == "memory" and sep:
        if not _CONTEXT_RE.match(device) or int(device) < 1:
            raise ConfigError(f"objective/constraint {text!r}: memory:<context> takes the KV "
                              "cache's positions, a whole number >= 1, e.g. 'memory:512'")
        return "memory", str(int(device))
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
    raise ConfigError(f"unknown objective/constraint {text!r}; allowed: {_ALLOWED}")


def memory_context(key: str) -> int | None:
    """The KV cache's context of a ``memory`` key: ``C`` of ``memory:<C>``, None for
    ``memory`` (the space's own context)."""
    _, qualifier = parse_metric(key)
    return None if qualifier is None else int(qualifier)


def is_memory(key: str) -> bool:
    """Whether ``key`` is a ``memory`` objective or constraint."""
    return key == "memory" or key.startswith("memory:")


def memory_mib(space: Any, batch: Any, key: str) -> np.ndarray:
    """``memory`` (or ``memory:<C>``) of a batch of ``space``'s architectures, in MiB: the
    weights plus the KV cache at the key's context, one sequence, float32 (exact)."""
    m = space.memory(batch, context=memory_context(key))
    out: np.ndarray = m["total"] / MIB  # int64 / int: float64, exact below 2**53 bytes
    return out


def _latency_unit(device: str | None) -> str:
    """``ms``; for a language model's profile, what one timed call is: ``ms per token,
    decode at context 256 (KV cache)`` or ``ms, prefill 128 tokens``."""
    from nas.devices import DEVICES

    try:
        workload = DEVICES.get(str(device)).workload if device in DEVICES else None
    except NASError:  # a broken profile file: its own commands say why
        workload = None
    if workload is None:
        return "ms"
    if workload.phase == "decode":
        return f"ms per token, {workload.describe()}"
    return f"ms, {workload.describe()}"


class Objective(BaseModel):
    """One objective of the study: its key (``accuracy``, ``latency:cpu-1t``...), direction
    and a label for tables and plots."""

    model_config = ConfigDict(frozen=True)

    name: str
    direction: Literal["maximize", "minimize"]
    metric: str
    device: str | None = None

    @property
    def context(self) -> int | None:
        """The KV cache's context of ``memory:<C>`` (None otherwise: ``memory`` counts it at
        the space's)."""
        return memory_context(self.name) if self.metric == "memory" else None

    @property
    def label(self) -> str:
        if self.metric == "latency":
            return f"latency {self.device} ({_latency_unit(self.device)})"
        if self.metric == "memory":
            return ("memory (MiB)" if self.context is None
                    else f"memory at context {self.context} (MiB)")
        return {"accuracy": "accuracy", "macs": "MACs", "params": "params"}[self.metric]

    @classmethod
    def from_text(cls, text: str) -> Objective:
        metric, qualifier = parse_metric(text)
        key = f"{metric}:{qualifier}" if qualifier else metric
        device = qualifier if metric == "latency" else None
        return cls(name=key, metric=metric, device=device,
                   direction="maximize" if metric == "accuracy" else "minimize")


def _space_names() -> list[str]:
    """The spaces a search runs on: every registered space, of every family (the search
    reaches a space only through its family's interface). What a space cannot be searched
    with is refused at its own field (:func:`_latency_kinds_for`)."""
    from nas.space import SPACES

    return list(SPACES.names())


def _latency_kinds() -> list[str]:
    from nas.latency import PREDICTORS

    return list(PREDICTORS)


def _latency_kinds_for(space: Any) -> list[str] | None:
    """The latency predictor kinds that price ``space`` (their ``tags`` apply to it, e.g. to
    its family); None when ``space`` is not a known space's name (refused at ``space``)."""
    from nas._plugin import applies_to
    from nas.latency import PREDICTORS
    from nas.space import SPACES

    if not isinstance(space, str) or space not in SPACES:
        return None
    sp = SPACES.get(space)
    return [name for name, cls in PREDICTORS.items() if applies_to(cls, sp.family, sp.name)]


def _check_latency_priced(keys: Iterable[str], info: ValidationInfo) -> None:
    """Refuse ``latency:<device>`` among ``keys`` when no latency predictor kind prices the
    config's space, or when the device's workload is not one the space runs (a language
    model's prefill or decode on an image space, an image device on a ``gpt`` space)."""
    latency = [k for k in keys if str(k).startswith("latency:")]
    if not latency:
        return
    space = info.data.get("space")
    kinds = _latency_kinds_for(space)
    if kinds is None:
        return
    from nas.space import get_space

    sp = get_space(str(space))
    if not kinds:
        raise ValueError(f"{latency[0]}: no latency predictor prices space {space!r} of the "
                         f"{sp.family!r} family yet; allowed for it: accuracy, macs, params")
    from nas.devices import DEVICES

    for key in latency:  # a device whose workload the space cannot run (a decode profile
        try:  # on an image space, an image one on a gpt space)
            device = parse_metric(str(key))[1]
        except ConfigError:  # a malformed key: refused where keys are parsed
            continue
        if device is not None and device in DEVICES:
            try:
                sp.check_workload(DEVICES.get(device).workload, device)
            except ConfigError as exc:
                raise ValueError(f"{key}: {exc}") from None


def _check_memory(keys: Iterable[str], info: ValidationInfo,
                  bounds: dict[str, float] | None = None) -> None:
    """Refuse ``memory`` among ``keys`` on a space that does not count memory, at a context
    the space does not have, or (``bounds``: constraints) with a budget below the smallest
    subnet's memory (memory grows with every choice, so no subnet would fit)."""
    keys = [k for k in keys if is_memory(str(k))]
    space = info.data.get("space")
    if not keys:
        return
    from nas.space import SPACES, get_space

    if not isinstance(space, str) or space not in SPACES:  # refused at space
        return

    sp = get_space(str(space))
    if not sp.counts_memory:
        raise ValueError(f"{keys[0]}: space {space!r} of the {sp.family!r} family does not "
                         "count memory (weights and KV cache, the 'gpt' family's); allowed for "
                         "it: accuracy, macs, params, latency:<device>")
    small = sp.smallest()
    for key in keys:
        ctx = memory_context(key)
        try:
            m = sp.memory([small], context=ctx)
        except NASError as exc:
            raise ValueError(f"{key}: {exc}") from None
        bound = (bounds or {}).get(key)
        total = int(m["total"][0])
        if bound is not None and bound < total / MIB:
            at = (f"at context {ctx}" if ctx is not None
                  else f"at context {getattr(sp, 'n_ctx', '')} (the space's)")
            raise ValueError(
                f"{key} <= {bound:g} MiB cannot be met: the smallest subnet of space {space} "
                f"takes {total / MIB:.6g} MiB ({total:,} bytes: weights "
                f"{int(m['weights'][0]) / MIB:.4g} MiB + KV cache {at} "
                f"{int(m['cache'][0]) / MIB:.4g} MiB, one sequence, float32)")


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


#: the ``engine`` of a config whose engine is chosen when the search runs
AUTO = "auto"


def _engine_names() -> list[str]:
    from nas.search._engines import ENGINES

    return [AUTO, *ENGINES.names()]


class SearchConfig(ConfigModel):
    """The settings every engine uses; validating a config gives the engine's own model.

    ``SearchConfig.from_dict``, ``SearchConfig.load`` and ``SearchConfig.model_validate``
    validate the discriminated union of every engine's model (:func:`search_config_type`):
    the result is a :class:`RaySearchConfig`, a :class:`PredictorSearchConfig` (or another
    registered engine's), or a plain :class:`SearchConfig` when no engine is given and no
    engine's own setting either, whose engine is chosen when it runs (``engine == "auto"``).
    ``SearchConfig(...)`` itself builds only the last kind; ``RaySearchConfig(...)`` and
    ``PredictorSearchConfig(...)`` build theirs.

    Attributes:
        engine: ``auto`` or a name in :data:`~nas.search.ENGINES` (``nas search --help``
            lists them). Without it, a setting of one engine chooses that engine; with
            neither, :func:`~nas.search.choose_engine` chooses when the search runs: the
            predictor engine when every objective and constraint is a predictor (an accuracy
            predictor such as ``ofa-imagenet``, latency predictors, MACs, params), Ray
            otherwise.
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
        constraints: upper bounds, e.g. ``{"latency:cpu-1t": 4.0, "params": 3e6}``
            (``memory`` in MiB: ``{"memory:512": 300}``).
        latency_kind: predictor kind per device (None: the best stored kind).
        db: latency database URL (default: ``NAS_DB_URL`` or ``latency_db/latency.sqlite``).
        n_trials: trial budget on Ray (completed trials, failed evaluations included; trials
            lost to a dead worker are re-run and do not count); the trials the predictor
            engine stores (the front and a sample of what it scored).
        seed: seed of the sampler or of the evolution.
        study: study name (default: derived from space, objectives, seed and the sampler, or
            ``predictor`` for the predictor engine).
        storage: Optuna storage URL or journal file (default ``runs/studies/<study>.journal``).
        population: population size of the ``nsga2`` and ``evolution`` samplers (default 20)
            and of the predictor engine's evolution (default 100).
        interpolate: let a search that prices a device with a fixed set of resolutions (a
            lookup table such as ``note10``) pick the space's resolutions in between, priced
            by interpolation (``nas latency kinds``: ``table``).
    """

    what = "search config"
    #: what a resumed search takes from the new configuration (the rest is the stored one)
    run_fields: ClassVar[tuple[str, ...]] = ("n_trials",)

    engine: Annotated[str, OneOf(_engine_names)] = AUTO
    space: Annotated[str, OneOf(_space_names)]
    checkpoint: str | None = None
    data: str | None = None
    proxy: str = "inherited"
    proxy_options: dict[str, Any] = Field(default_factory=dict)
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "latency:cpu-1t"])
    constraints: dict[str, float] = Field(default_factory=dict)
    latency_kind: Annotated[str, OneOf(_latency_kinds)] | None = None
    db: str | None = None
    n_trials: int = Field(default=100, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    study: str | None = None
    storage: str | None = None
    population: int | None = Field(default=None, ge=2, le=100_000)
    interpolate: bool = False

    @model_validator(mode="before")
    @classmethod
    def _settings_of_this_engine(cls, data: Any) -> Any:
        """Refuse another engine's setting in one line naming it and its engine."""
        if isinstance(data, dict):
            owners = _owners()
            for key, value in data.items():
                if key not in cls.model_fields and key in owners:
                    raise _not_a_setting(cls, key, value, data)
        return data

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        if v != cls._engine_name():
            from nas.search._engines import ENGINES

            model = ENGINES.get(v).config.__name__
            raise ValueError(f"engine {v!r} has settings of its own: build a {model}, or "
                             "validate with SearchConfig.from_dict")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if not v:
            raise ValueError("at least one objective is needed")
        keys = [Objective.from_text(x).name for x in v]
        if len(set(keys)) != len(keys):
            raise ValueError(f"objectives repeat: {v}")
        _check_latency_priced(keys, info)
        _check_memory(keys, info)
        return keys

    @field_validator("proxy_options")
    @classmethod
    def _proxy_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        # checked by a strict model, but kept as given (only the keys set): the workers
        # pass them on to ProxyContext, whose defaults rule otherwise
        opts: ProxyOptions = ProxyOptions.model_validate(v)
        return opts.model_dump(exclude_unset=True)

    @field_validator("latency_kind")
    @classmethod
    def _latency_kind(cls, v: str | None, info: ValidationInfo) -> str | None:
        kinds = _latency_kinds_for(info.data.get("space"))
        if v is not None and kinds is not None and v not in kinds:
            space = info.data["space"]
            allowed = ", ".join(kinds) if kinds else "none yet"
            raise ValueError(f"kind {v!r} does not price space {space!r}; the kinds that do: "
                             f"{allowed}")
        return v

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        out = {}
        for key, bound in v.items():
            metric, device = parse_metric(key)
            if metric == "accuracy":
                raise ValueError("accuracy cannot be a constraint (constraints are upper bounds "
                                 "on latency:<device>, macs, params or memory)")
            if not bound > 0:  # NaN and inf are refused before (allow_inf_nan=False)
                raise ValueError(f"{key}: the bound must be > 0, got {bound}")
            out[f"{metric}:{device}" if device else metric] = float(bound)
        _check_latency_priced(out, info)
        _check_memory(out, info, bounds=out)
        return out

    @field_validator("study")
    @classmethod
    def _study(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.match(v):
            raise ValueError(f"{v!r}: use letters, digits, '_', '.', '-' (at most 100, not "
                             "starting with a symbol)")
        return v

    # ------------------------------------------------------------------ the engine
    @classmethod
    def _engine_name(cls) -> str:
        """The engine this model is the config of (``auto`` for this base)."""
        return str(cls.model_fields["engine"].default)

    @classmethod
    def own_settings(cls) -> tuple[str, ...]:
        """The settings this model adds to the common ones (its engine's own)."""
        return tuple(k for k in cls.model_fields if k not in SearchConfig.model_fields)

    @classmethod
    def of(cls, cfg: SearchConfig) -> Self:
        """``cfg`` as this model: itself when it is one, an ``auto`` config given this
        model's engine.

        Raises:
            ConfigError: a setting of ``cfg`` is not one of this model's engine.
        """
        if isinstance(cfg, cls):
            return cfg
        raw = {**cfg.model_dump(exclude={"engine"}), "engine": cls._engine_name()}
        return cls.from_dict(raw, where=cfg.what)

    def for_engine(self, name: str) -> SearchConfig:
        """This config as engine ``name``'s (see :meth:`of`)."""
        from nas.search._engines import ENGINES

        return ENGINES.get(name).config.of(self)

    def optuna_sampler(self, n_objectives: int | None = None) -> BaseSampler | None:
        """The sampler of the Optuna study that stores this search (None: Optuna's default,
        for an engine that adds its trials itself)."""
        return None

    def run_settings(self) -> dict[str, Any]:
        """The settings a resumed search takes from this config (:attr:`run_fields`)."""
        return {k: getattr(self, k) for k in self.run_fields}

    @property
    def _study_tag(self) -> str:
        """What names the study besides space, objectives and seed: the engine's (an
        ``auto`` config's is that of the engine it will run on)."""
        from nas.search._engines import choose_engine

        return self.for_engine(choose_engine(self)[0])._study_tag

    @property
    def strategy(self) -> str:
        """How the search searches, in a few words (for reports)."""
        return f"engine {self.engine}"

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
        return f"{self.space}-{objs}-{self._study_tag}-s{self.seed}"

    @property
    def storage_url(self) -> str:
        """The Optuna storage: a URL, or a journal file path (default under ``runs/``)."""
        return self.storage or default_storage(self.study_name)

    # ------------------------------------------------------------------ loading
    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Pydantic's ``model_validate``; on :class:`SearchConfig` itself, through the union
        of every engine's model (the result is the engine's model)."""
        if cls is not SearchConfig:
            return super().model_validate(obj, **kwargs)
        return cast(Self, _adapter().validate_python(obj, **kwargs))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> Self:
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
        return cls.from_dict(raw, where=where)


class RayOptions(ConfigModel):
    """The Ray engine's own settings (its plug-in ``Options``; every one has a default).

    Attributes:
        sampler: a name in :data:`~nas.search.SAMPLERS`.
        workers: Ray actors evaluating architectures.
        batch_size: architectures per actor call.
        worker_threads: torch threads per actor.
        address: Ray cluster address (default: ``RAY_ADDRESS``, else a local Ray).
    """

    what = "ray engine options"

    sampler: Annotated[str, OneOf(SAMPLERS.names)] = "tpe"
    workers: int = Field(default=1, ge=1, le=1024)
    batch_size: int = Field(default=4, ge=1, le=4096)
    worker_threads: int = Field(default=1, ge=1, le=256)
    address: str | None = None


class RaySearchConfig(RayOptions, SearchConfig):
    """A search on Ray: an Optuna sampler asks, Ray actors score the subnets
    (:func:`~nas.search.run_search`). Any proxy works, those that need the supernet included.
    The common settings, and :class:`RayOptions`.
    """

    what = "search config"
    run_fields = (*SearchConfig.run_fields, "workers", "batch_size", "worker_threads",
                  "address")

    engine: Literal["ray"] = "ray"

    @model_validator(mode="after")
    def _sampler_fits_objectives(self) -> Self:
        SAMPLERS.get(self.sampler).check_objectives(len(self.objectives))
        return self

    def optuna_sampler(self, n_objectives: int | None = None) -> BaseSampler:
        """The configured sampler, seeded (constraints come from the trials themselves).

        Raises:
            ConfigError: several objectives for a single-objective sampler.
        """
        return SAMPLERS.get(self.sampler).create(self, n_objectives)

    @property
    def _study_tag(self) -> str:
        return self.sampler

    @property
    def strategy(self) -> str:
        return f"sampler {self.sampler}"


class PredictorOptions(ConfigModel):
    """The predictor engine's own settings (its plug-in ``Options``).

    Attributes:
        generations: generations of the evolution (``population`` subnets each).
    """

    what = "predictor engine options"

    generations: int = Field(default=300, ge=1, le=100_000)


class PredictorSearchConfig(PredictorOptions, SearchConfig):
    """A search at predictor speed, in this process: vectorised NSGA-II scores whole
    generations with one call per predictor (:func:`~nas.search.run_predictor_search`).
    Every objective and constraint must be a predictor. The common settings, and
    :class:`PredictorOptions`.
    """

    what = "search config"

    engine: Literal["predictor"] = "predictor"

    @property
    def _study_tag(self) -> str:
        return "predictor"

    @property
    def strategy(self) -> str:
        return f"predictor engine (NSGA-II, {self.generations} generations)"


# ---------------------------------------------------------------------- the union
def _models() -> dict[str, type[SearchConfig]]:
    """The config model of ``auto`` and of every registered engine, by engine name."""
    from nas.search._engines import ENGINES

    ranked = sorted(ENGINES.items(), key=lambda item: item[1].rank)
    return {AUTO: SearchConfig, **{name: engine.config for name, engine in ranked}}


def _owners() -> dict[str, str]:
    """Each engine's own setting -> that engine's name."""
    return {key: name for name, model in _models().items() for key in model.own_settings()}


def _implied(raw: dict[str, Any]) -> str:
    """The engine of ``raw``: its ``engine``, else the first engine (by rank) whose own
    setting it gives, else ``auto``. An engine that is not registered reads as ``auto``,
    whose model refuses it in one line."""
    engine = raw.get("engine")
    models = _models()
    if engine is None or engine == AUTO:
        for name, model in models.items():
            if set(model.own_settings()) & raw.keys():
                return name
        return AUTO
    return engine if isinstance(engine, str) and engine in models else AUTO


def _tag(value: Any) -> str | None:
    """The discriminator: the union member that validates ``value``."""
    if isinstance(value, SearchConfig):
        return value.engine
    if isinstance(value, dict):
        return _implied(value)
    return None


def _not_a_setting(model: type[SearchConfig], key: str, value: Any,
                   data: dict[str, Any]) -> ValidationError:
    """``key = value: not a setting of engine 'x' (settings of the y engine)``, at ``key``."""
    mine = model._engine_name()
    owner = _owners()[key]
    why = f"not a setting of engine {mine!r}"
    chosen = [k for k in model.own_settings() if k in data]
    if "engine" not in data and chosen:  # the engine was implied by its settings
        why += f", which {', '.join(chosen)} chose"
    message = f"{why} (settings of the {owner} engine)"
    return ValidationError.from_exception_data(model.__name__, [InitErrorDetails(
        type=PydanticCustomError("engine_setting", message), loc=(key,), input=value)])


#: every field of the search config before each engine had a model of its own: a config
#: stored then holds them all (the predictor engine's and Ray's settings side by side)
_BEFORE_ENGINES = frozenset({
    "space", "checkpoint", "data", "proxy", "proxy_options", "objectives", "constraints",
    "latency_kind", "db", "sampler", "n_trials", "workers", "batch_size", "worker_threads",
    "seed", "study", "storage", "address", "population", "engine", "generations",
    "interpolate",
})


def _from_before_engines(raw: dict[str, Any]) -> dict[str, Any]:
    """A config stored before the engines had models of their own, as its engine's model
    reads it: the settings of the engines it did not name are dropped (those the old union
    ignored). With ``engine: auto``, only the settings at their default are dropped, so that
    one changed on purpose still chooses its engine (the first by rank when several do)."""
    if not _BEFORE_ENGINES <= raw.keys():
        return raw
    engine = raw.get("engine")
    out = dict(raw)
    kept: str | None = None
    for name, model in _models().items():
        if name in (AUTO, engine):
            continue
        for key in model.own_settings():
            default = model.model_fields[key].default
            if key in out and (engine != AUTO or kept is not None or out[key] == default):
                del out[key]
        if engine == AUTO and set(model.own_settings()) & out.keys():
            kept = name
    return out


def _dispatch(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Around the union: read an old stored config, let the settings choose the engine when
    none is given, and report errors at the field (without the union's tag in front)."""
    if isinstance(value, dict):
        value = _from_before_engines(value)
        if value.get("engine") in (None, AUTO) and _implied(value) != AUTO:
            value = {k: v for k, v in value.items() if k != "engine"}
    try:
        return handler(value)
    except ValidationError as exc:
        tags = set(_models())
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if loc and loc[0] in tags:
                loc = loc[1:]
            errors.append(InitErrorDetails(type=PydanticCustomError(err["type"], err["msg"]),
                                           loc=loc, input=err.get("input")))
        raise ValidationError.from_exception_data(exc.title, errors) from None


def search_config_type() -> Any:
    """The discriminated union of the config models of ``auto`` and every registered engine,
    on ``engine``: the type of a search config in a request body (its OpenAPI schema lists
    each engine's model) and what :meth:`SearchConfig.model_validate` validates."""
    members = tuple(Annotated[model, Tag(name)] for name, model in _models().items())
    tag = Discriminator(_tag, custom_error_type="config_mapping",
                        custom_error_message="a search config must be a mapping of fields")
    return Annotated[Union[members],  # noqa: UP007
                     tag, WrapValidator(_dispatch)]


_ADAPTERS: dict[tuple[str, ...], TypeAdapter[Any]] = {}


def _adapter() -> TypeAdapter[Any]:
    """The union's validator, built again when an engine is registered."""
    key = tuple(_models())
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(search_config_type())
    return _ADAPTERS[key]
