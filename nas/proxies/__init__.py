"""Accuracy proxies (higher = predicted better) and learned accuracy predictors.

Example:
    >>> from nas.proxies import ProxyContext, get_proxy, list_proxies
    >>> ctx = ProxyContext.build("cifar_mbv3", checkpoint="runs/x/supernet.safetensors",
    ...                          data="../shared/data/cifar10-jpeg.tar.gz")
    >>> scores = {name: get_proxy(name).score(archs, ctx) for name in list_proxies()}
"""

from nas.proxies._base import (
    Proxy,
    ProxyContext,
    get_proxy,
    list_proxies,
    proxy_class,
    register_proxy,
)
from nas.proxies._cache import ProxyCache, checkpoint_sha256, default_cache_path
from nas.proxies._inherited import InheritedProxy, PredictorProxy
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
    make_accuracy_predictor,
)
from nas.proxies._zero_cost import MacsProxy, NaswotProxy, ParamsProxy, SynflowProxy, ZicoProxy

__all__ = [
    "ACCURACY_PREDICTORS",
    "AccuracyPredictor",
    "GBDTAccuracyPredictor",
    "InheritedProxy",
    "MLPAccuracyPredictor",
    "MacsProxy",
    "NaswotProxy",
    "ParamsProxy",
    "PredictorProxy",
    "Proxy",
    "ProxyCache",
    "ProxyContext",
    "SynflowProxy",
    "ZicoProxy",
    "accuracy_features",
    "bootstrap_ci",
    "checkpoint_sha256",
    "default_cache_path",
    "get_proxy",
    "kendall_tau",
    "list_proxies",
    "make_accuracy_predictor",
    "proxy_class",
    "rank_metrics",
    "register_proxy",
    "spearman_rho",
    "tau_by_bins",
]
