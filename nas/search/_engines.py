"""The search engines, registered by name: what runs a search once its config is checked.

An engine is one class: a name, a one-line description, its config model (a
:class:`~nas.search.SearchConfig` subclass holding the settings the engine uses, and only
those), where it scores subnets, whether it can run a config, and how it runs one. Registering
it puts its model in the discriminated union of search configs
(:func:`~nas.search.search_config_type`: YAML files, ``nas search`` flags and the service's
``POST /searches`` all go through it), its name in ``nas search --help`` and the API schema,
and makes it a choice of ``engine: auto``::

    class GridOptions(ConfigModel):
        cells: int = 10

    class GridSearchConfig(GridOptions, SearchConfig):
        engine: Literal["grid"] = "grid"

    @ENGINES.register
    class Grid(SearchEngine):
        name = "grid"
        description = "every subnet of a small space, in this process"
        Options = GridOptions
        config = GridSearchConfig
        where = "in this process"

        @classmethod
        def run(cls, cfg, **how):
            ...

Two engines ship: ``predictor`` (vectorised NSGA-II in this process, when every objective and
constraint is a predictor) and ``ray`` (an Optuna sampler asks, Ray actors score: any proxy).

This module imports neither Ray nor Optuna: the CLI lists the names for ``--help``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from nas._plugin import Plugin
from nas._registry import Registry
from nas.errors import ConfigError
from nas.search._config import (
    AUTO,
    PredictorOptions,
    PredictorSearchConfig,
    RayOptions,
    RaySearchConfig,
    SearchConfig,
)

if TYPE_CHECKING:
    from nas.search._results import SearchResult

__all__ = ["ENGINES", "SearchEngine", "choose_engine"]


class SearchEngine(Plugin):
    """Base of the registered engines (plug-ins: :mod:`nas._plugin`'s contract).

    Attributes:
        name: the ``engine`` a config names.
        description: one line for ``--help`` and the API schema.
        Options: the engine's own settings (every one with a default).
        config: the engine's config model: :class:`SearchConfig`'s settings and
            ``Options``'; the engine's own are refused in the other engines' configs.
        where: where it scores subnets (``"in this process"``), for the line that says which
            engine runs a search.
        rank: ``engine: auto`` runs the first engine by rank (lowest first) that can run the
            config.
        suits: why ``auto`` chose it when it is the first by rank.
        remedy: what to do instead, after the reason it refuses a config.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    config: ClassVar[type[SearchConfig]]
    where: ClassVar[str]
    rank: ClassVar[int] = 100
    suits: ClassVar[str] = "it can run any search"
    remedy: ClassVar[str] = ""

    @classmethod
    def refuses(cls, cfg: SearchConfig) -> str | None:
        """Why the engine cannot run ``cfg`` (None: it can)."""
        return None

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        """Refuse, before anything starts, what the engine cannot run (e.g. a search too
        large for its memory); ``cfg`` is the engine's config."""

    @classmethod
    def run(cls, cfg: SearchConfig, *, resume: bool, progress: bool,
            stop: threading.Event | None, on_trial: Callable[[int, int], None] | None,
            on_start: Callable[[], None] | None) -> SearchResult:
        """Run (or resume) the search ``cfg`` (the engine's config) and store it; see
        :func:`~nas.search.run_search` for the arguments."""
        raise NotImplementedError


def check_config_model(engine: type[SearchEngine]) -> None:
    """The engine's config model is a :class:`SearchConfig` whose ``engine`` is the
    engine's name and whose own settings are exactly its ``Options``' fields (the contract
    check of this registry, run by :mod:`nas.testing`)."""
    config = getattr(engine, "config", None)
    if not (isinstance(config, type) and issubclass(config, SearchConfig)):
        raise AssertionError(f"{engine!r}: config must be a SearchConfig subclass, got "
                             f"{config!r}")
    if config._engine_name() != engine.name:
        raise AssertionError(f"{engine!r}: {config.__name__}.engine defaults to "
                             f"{config._engine_name()!r}, not {engine.name!r}")
    own, options = set(config.own_settings()), set(engine.Options.model_fields)
    if own != options:
        raise AssertionError(f"{engine!r}: the settings of {config.__name__} beyond "
                             f"SearchConfig's ({sorted(own)}) are not its Options' "
                             f"({sorted(options)})")


#: this registry's own checks (beyond the contract every plug-in passes)
ENGINE_CHECKS = (check_config_model,)

#: The registered engines, by name.
ENGINES: Registry[type[SearchEngine]] = Registry(
    "search engine", checks="nas.search._engines:ENGINE_CHECKS")


def _ranked() -> list[type[SearchEngine]]:
    return sorted((engine for _, engine in ENGINES.items()), key=lambda e: e.rank)


@ENGINES.register
class PredictorEngine(SearchEngine):
    name = "predictor"
    description = ("vectorised NSGA-II in this process, about a second; every objective "
                   "and constraint a predictor (ofa-imagenet, nonembedding-params, latency, "
                   "macs, params)")
    Options = PredictorOptions
    config = PredictorSearchConfig
    where = "in this process"
    rank = 0
    suits = "every objective and constraint is a predictor"
    remedy = ("use engine 'auto' or 'ray', or a predictor proxy (ofa-imagenet, "
              "predictor:path=FILE, macs, params; nonembedding-params for a gpt space)")

    @classmethod
    def refuses(cls, cfg: SearchConfig) -> str | None:
        from nas.search._fast import needs_model

        return needs_model(cfg)

    @classmethod
    def check(cls, cfg: SearchConfig) -> None:
        from nas.search._fast import check_effort

        check_effort(PredictorSearchConfig.of(cfg))

    @classmethod
    def run(cls, cfg: SearchConfig, *, resume: bool, progress: bool,
            stop: threading.Event | None, on_trial: Callable[[int, int], None] | None,
            on_start: Callable[[], None] | None) -> SearchResult:
        from nas.search._fast import run_predictor_search

        return run_predictor_search(PredictorSearchConfig.of(cfg), resume=resume,
                                    progress=progress, stop=stop, on_trial=on_trial,
                                    on_start=on_start)


@ENGINES.register
class RayEngine(SearchEngine):
    name = "ray"
    description = ("an Optuna sampler asks, Ray actors score the subnets: any proxy, those "
                   "that need the supernet included")
    Options = RayOptions
    config = RaySearchConfig
    where = "on Ray actors"
    rank = 10

    @classmethod
    def run(cls, cfg: SearchConfig, *, resume: bool, progress: bool,
            stop: threading.Event | None, on_trial: Callable[[int, int], None] | None,
            on_start: Callable[[], None] | None) -> SearchResult:
        from nas.search._driver import RaySearch

        return RaySearch(RaySearchConfig.of(cfg), resume=resume, progress=progress,
                         stop=stop, on_trial=on_trial, on_start=on_start).run()


def choose_engine(cfg: SearchConfig) -> tuple[str, str]:
    """The engine that runs ``cfg`` and why: ``(name, why)``.

    A config that names its engine (or whose settings chose it) gets that engine, if the
    engine can run it; an ``auto`` config gets the first engine by rank that can: the
    predictor engine when every objective and constraint is a predictor, Ray otherwise.

    Raises:
        ConfigError: the config's engine cannot run it (e.g. the predictor engine and a proxy
            that scores subnets with a model), in one line.
    """
    if cfg.engine != AUTO:
        engine = ENGINES.get(cfg.engine)
        chosen = [k for k in cfg.own_settings() if k in cfg.model_fields_set]
        implied = "engine" not in cfg.model_fields_set and chosen
        reason = engine.refuses(cfg)
        if reason is not None and implied:
            raise ConfigError(f"{chosen[0]} = {getattr(cfg, chosen[0])!r}: a setting of engine "
                              f"{engine.name!r}, which cannot run this search: {reason}; "
                              f"leave out {', '.join(chosen)}, or {engine.remedy}")
        if reason is not None:
            raise ConfigError(f"engine = {engine.name!r}: {reason}; {engine.remedy}")
        if implied:
            return engine.name, f"chosen by {', '.join(chosen)}"
        return engine.name, f"engine {engine.name!r} asked for"
    refusals: list[str] = []
    for engine in _ranked():
        reason = engine.refuses(cfg)
        if reason is None:
            return engine.name, "; ".join(refusals) or engine.suits
        refusals.append(reason)
    raise ConfigError(f"no search engine can run this search: {'; '.join(refusals)}")
