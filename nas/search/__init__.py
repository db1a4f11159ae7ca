"""Hardware-aware search: an Optuna study driven here, architectures scored by Ray actors.

Example:
    >>> from nas.search import SearchConfig, run_search, load_results
    >>> cfg = SearchConfig.load("experiments/search_demo.yaml", n_trials=50)
    >>> result = run_search(cfg)
    >>> [t.arch_hash for t in result.front]

The search engines are registered in :data:`ENGINES` (``ray``: an Optuna sampler asks, Ray
actors score; ``predictor``: vectorised NSGA-II in this process), each with a config model
holding the settings it uses (:class:`RaySearchConfig`, :class:`PredictorSearchConfig`; the
common ones in :class:`SearchConfig`). The Ray engine's search strategies are Optuna samplers
registered in :data:`SAMPLERS` (one class and a decorator each; see
:mod:`nas.search._samplers`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.search._config import (
        Objective,
        OneOf,
        PredictorSearchConfig,
        RaySearchConfig,
        SearchConfig,
        default_storage,
        parse_metric,
        search_config_type,
    )
    from nas.search._driver import (
        check_config,
        load_latency_predictors,
        make_sampler,
        run_search,
    )
    from nas.search._engines import ENGINES, SearchEngine, choose_engine
    from nas.search._evolution import EvolutionSampler, nondomination_rank
    from nas.search._fast import (
        Specialization,
        run_predictor_search,
        search_resolutions,
        specialize,
    )
    from nas.search._params import arch_from_params, distributions, params_from_arch
    from nas.search._pareto import hypervolume, pareto_mask
    from nas.search._results import (
        SearchResult,
        TrialRecord,
        load_results,
        load_study,
        open_storage,
    )
    from nas.search._samplers import SAMPLERS, SearchSampler
    from nas.search._ship import export_trials, verify_trials
    from nas.search._table import front_summary, front_table
    from nas.search._worker import Evaluator

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.search._config": ["Objective", "OneOf", "PredictorSearchConfig",
                               "RaySearchConfig", "SearchConfig", "default_storage",
                               "parse_metric", "search_config_type"],
        "nas.search._driver": ["check_config", "load_latency_predictors", "make_sampler",
                               "run_search"],
        "nas.search._engines": ["ENGINES", "SearchEngine", "choose_engine"],
        "nas.search._evolution": ["EvolutionSampler", "nondomination_rank"],
        "nas.search._fast": ["Specialization", "run_predictor_search", "search_resolutions",
                             "specialize"],
        "nas.search._pareto": ["hypervolume", "pareto_mask"],
        "nas.search._params": ["arch_from_params", "distributions", "params_from_arch"],
        "nas.search._results": ["SearchResult", "TrialRecord", "load_results", "load_study",
                                "open_storage"],
        "nas.search._samplers": ["SAMPLERS", "SearchSampler"],
        "nas.search._ship": ["export_trials", "verify_trials"],
        "nas.search._table": ["front_summary", "front_table"],
        "nas.search._worker": ["Evaluator"],
    },
)
