"""Accuracy proxies (higher = predicted better) and learned accuracy predictors.

Example:
    >>> from nas.proxies import ProxyContext, get_proxy, list_proxies
    >>> ctx = ProxyContext.build("cifar_mbv3", checkpoint="runs/x/supernet.safetensors",
    ...                          data="../shared/data/cifar10-jpeg.tar.gz")
    >>> scores = {name: get_proxy(name).score(archs, ctx) for name in list_proxies()}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.proxies._base import (
        PROXIES,
        Proxy,
        ProxyContext,
        get_proxy,
        list_proxies,
        proxy_class,
        register_proxy,
    )
    from nas.proxies._cache import ProxyCache, checkpoint_sha256, default_cache_path
    from nas.proxies._inherited import InheritedProxy, PredictorProxy
    from nas.proxies._lm import NonEmbeddingParamsProxy, PerplexityProxy, score_of_perplexity
    from nas.proxies._metrics import (
        bootstrap_ci,
        kendall_tau,
        rank_metrics,
        spearman_rho,
        tau_by_bins,
    )
    from nas.proxies._predictors import (
        ACCURACY_PREDICTORS,
        AccuracyPredictor,
        GBDTAccuracyPredictor,
        MLPAccuracyPredictor,
        accuracy_features,
        accuracy_predictor_from_state,
        accuracy_predictor_state,
        load_accuracy_predictor,
        make_accuracy_predictor,
        save_accuracy_predictor,
    )
    from nas.proxies._zero_cost import MacsProxy, NaswotProxy, ParamsProxy, SynflowProxy, ZicoProxy

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.proxies._base": [
            "PROXIES",
            "Proxy",
            "ProxyContext",
            "get_proxy",
            "list_proxies",
            "proxy_class",
            "register_proxy",
        ],
        "nas.proxies._cache": [
            "ProxyCache",
            "checkpoint_sha256",
            "default_cache_path",
        ],
        "nas.proxies._inherited": [
            "InheritedProxy",
            "PredictorProxy",
        ],
        "nas.proxies._lm": [
            "NonEmbeddingParamsProxy",
            "PerplexityProxy",
            "score_of_perplexity",
        ],
        "nas.proxies._metrics": [
            "bootstrap_ci",
            "kendall_tau",
            "rank_metrics",
            "spearman_rho",
            "tau_by_bins",
        ],
        "nas.proxies._predictors": [
            "ACCURACY_PREDICTORS",
            "AccuracyPredictor",
            "GBDTAccuracyPredictor",
            "MLPAccuracyPredictor",
            "accuracy_features",
            "accuracy_predictor_from_state",
            "accuracy_predictor_state",
            "load_accuracy_predictor",
            "make_accuracy_predictor",
            "save_accuracy_predictor",
        ],
        "nas.proxies._zero_cost": [
            "MacsProxy",
            "NaswotProxy",
            "ParamsProxy",
            "SynflowProxy",
            "ZicoProxy",
        ],
    },
)
