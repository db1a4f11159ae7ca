"""The search strategies: Optuna samplers, registered by name.

A search strategy is an Optuna sampler (``optuna.samplers.BaseSampler``); what this module
adds is one small registered class per strategy that says how its sampler is built from a
search configuration (seed, number of objectives, population, workers). A strategy is a
plug-in (:mod:`nas._plugin`): a name, a one-line description, ``Options`` (``NoOptions``: the
settings it reads, such as the population, are the search config's own) and ``tags`` (empty:
every space). Adding one is one class and a decorator; the configuration, the CLI help and
``nas samplers list``, the service's API schema and the checks of :mod:`nas.search._checks`
(``nas.testing.parametrize_with_checks``) all list names from :data:`SAMPLERS`::

    @SAMPLERS.register
    class QMC(SearchSampler):
        name = "qmc"
        description = "Optuna's quasi-Monte Carlo sampler"

        @classmethod
        def make(cls, cfg, n_objectives):
            from optuna.samplers import QMCSampler
            return QMCSampler(seed=cfg.seed)

Constraints reach every sampler through the trials themselves (``trial.set_constraint``,
Optuna's way since 5.0), so no sampler takes a ``constraints_func``.

This module imports no Optuna at import time: the CLI lists the names for ``--help``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from nas._config import ConfigModel
from nas._plugin import NoOptions, Plugin
from nas._registry import Registry
from nas.errors import ConfigError

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from nas.search._config import RaySearchConfig

__all__ = ["SAMPLERS", "SearchSampler"]


class SearchSampler(Plugin):
    """Base of the registered strategies (plug-ins: :mod:`nas._plugin`'s contract): how one
    Optuna sampler is built for a search.

    Attributes:
        name: the name a configuration gives (``sampler: tpe``).
        description: one line for ``--help`` and the API schema.
        Options: ``NoOptions``: what a sampler reads (seed, population, workers) is the
            search config's.
        tags: empty: a sampler works on the parameters of any space.
        multi_objective: whether the sampler handles several objectives; a configuration
            with several objectives and a sampler that does not is refused.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[ConfigModel]] = NoOptions
    tags: ClassVar[frozenset[str]] = frozenset()
    multi_objective: ClassVar[bool] = True

    @classmethod
    def create(cls, cfg: RaySearchConfig, n_objectives: int | None = None) -> BaseSampler:
        """The seeded sampler for ``cfg``.

        Raises:
            ConfigError: several objectives for a single-objective sampler.
        """
        n = len(cfg.objectives) if n_objectives is None else n_objectives
        cls.check_objectives(n)
        return cls.make(cfg, n)

    @classmethod
    def check_objectives(cls, n_objectives: int) -> None:
        """Refuse ``n_objectives`` objectives when the sampler cannot handle them."""
        if n_objectives > 1 and not cls.multi_objective:
            multi = [n for n, c in SAMPLERS.items() if c.multi_objective]
            raise ConfigError(f"sampler {cls.name!r} handles one objective, not "
                              f"{n_objectives}; with several use one of {', '.join(multi)}")

    @classmethod
    def make(cls, cfg: RaySearchConfig, n_objectives: int) -> BaseSampler:
        """Build the sampler (``n_objectives`` is already checked)."""
        raise NotImplementedError


#: The registered strategies, by name.
SAMPLERS: Registry[type[SearchSampler]] = Registry(
    "sampler", checks="nas.search._checks:SAMPLER_CHECKS")


@SAMPLERS.register
class TPE(SearchSampler):
    name = "tpe"
    description = ("Optuna's tree-structured Parzen estimator (multivariate; a constant liar "
                   "when several workers ask at once)")

    @classmethod
    def make(cls, cfg: RaySearchConfig, n_objectives: int) -> BaseSampler:
        from optuna.samplers import TPESampler

        return TPESampler(seed=cfg.seed, multivariate=True, constant_liar=cfg.workers > 1)


@SAMPLERS.register
class NSGA2(SearchSampler):
    name = "nsga2"
    description = "Optuna's NSGA-II genetic algorithm (its population: the config's population)"

    @classmethod
    def make(cls, cfg: RaySearchConfig, n_objectives: int) -> BaseSampler:
        from optuna.samplers import NSGAIISampler

        return NSGAIISampler(seed=cfg.seed, population_size=cfg.population or 20)


@SAMPLERS.register
class Random(SearchSampler):
    name = "random"
    description = "uniform random sampling (the baseline)"

    @classmethod
    def make(cls, cfg: RaySearchConfig, n_objectives: int) -> BaseSampler:
        from optuna.samplers import RandomSampler

        return RandomSampler(seed=cfg.seed)


@SAMPLERS.register
class GP(SearchSampler):
    name = "gp"
    description = ("Optuna's Gaussian-process sampler; suits small spaces (about a minute per "
                   "trial on cifar_mbv3's 46 parameters here)")

    @classmethod
    def make(cls, cfg: RaySearchConfig, n_objectives: int) -> BaseSampler:
        from optuna.samplers import GPSampler

        return GPSampler(seed=cfg.seed)


@SAMPLERS.register
class Evolution(SearchSampler):
    name = "evolution"
    description = "Once-for-All's evolutionary search (its population: the config's population)"

    @classmethod
    def make(cls, cfg: RaySearchConfig, n_objectives: int) -> BaseSampler:
        from nas.search._evolution import EvolutionSampler

        return EvolutionSampler(seed=cfg.seed, population=cfg.population or 20)
