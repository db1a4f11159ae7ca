"""Proxies that use the trained supernet: ``inherited`` accuracy and the ``predictor``.

``inherited``
    Validation accuracy (a fraction) of the subnet with the supernet's weights, after its
    BatchNorm statistics are recalibrated on a few training batches. Once-for-All's way of
    ranking subnets; the reference the other proxies are compared with.
``predictor``
    A learned accuracy predictor (``kind=mlp``, OFA's, ``kind=gbdt``, or any other kind in
    :data:`~nas.proxies.ACCURACY_PREDICTORS`) fitted on the
    inherited accuracies of ``n_train`` random subnets (seeded by ``sample_seed``; their
    accuracies are cached like any other score), then asked for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nas.errors import ConfigError
from nas.proxies._base import Proxy, ProxyContext, register_proxy
from nas.space import ArchArrays, Architecture, SearchSpace

if TYPE_CHECKING:  # the predictors are imported when one is used
    from nas.proxies._predictors import AccuracyPredictor

__all__ = ["InheritedProxy", "PredictorProxy"]


@register_proxy
class InheritedProxy(Proxy):
    name = "inherited"
    description = "validation accuracy with inherited weights after BatchNorm recalibration"
    tags = frozenset({"ofa"})
    needs_supernet = True
    needs_data = True
    uses_eval_settings = True

    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        from nas.train import evaluate_subnet

        data = ctx.require_data("proxy 'inherited'")
        pre = ctx.preprocess()
        out = np.empty(len(archs))
        for i, arch in enumerate(archs):
            res = evaluate_subnet(
                ctx.supernet, arch, data, split="val", preprocess=pre,
                bn_batches=ctx.bn_batches, bn_batch_size=ctx.bn_batch_size,
                batch_size=ctx.eval_batch_size, limit=ctx.val_limit, seed=ctx.seed,
                channels_last=ctx.channels_last,
            )
            out[i] = res["acc"]
        return out


@register_proxy
class PredictorProxy(Proxy):
    name = "predictor"
    description = ("learned accuracy predictor (kind: `nas accuracy kinds`) fitted on the "
                   "inherited accuracies of n_train random subnets, or loaded from path=FILE")
    tags = frozenset({"ofa"})
    options: ClassVar[dict[str, Any]] = {"kind": "mlp", "n_train": 100, "sample_seed": 12345,
                                         "path": ""}
    needs_supernet = True
    needs_data = True
    uses_eval_settings = True

    @classmethod
    def option_choices(cls) -> dict[str, tuple[str, ...]]:
        from nas.proxies._predictors import ACCURACY_PREDICTORS

        return {"kind": tuple(ACCURACY_PREDICTORS.names())}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.opts["path"]:
            # a saved predictor needs neither the supernet nor data, and is cheaper than
            # a cache lookup
            self.needs_supernet = False  # type: ignore[misc]
            self.needs_data = False  # type: ignore[misc]
            self.cacheable = False  # type: ignore[misc]

    def _load(self, space: SearchSpace) -> AccuracyPredictor:
        """The saved predictor of ``path=``, checked against ``space``."""
        from nas.proxies._predictors import load_accuracy_predictor

        path = self.opts["path"]
        model = load_accuracy_predictor(path)
        if model.space not in (None, space.name):
            raise ConfigError(f"accuracy predictor {path} is for space {model.space!r}"
                              f", not {space.name!r}")
        model.space = space.name
        want = model.encoding_size()
        if model.n_features_in_ != want:
            raise ConfigError(
                f"accuracy predictor {path} takes {model.n_features_in_} features, not "
                f"the {want} of the {model.encoding} encoding (was it fitted with "
                "zero-cost features? those cannot be used as a proxy)")
        return model

    def array_scorer(self, space: SearchSpace) -> Callable[[ArchArrays], np.ndarray] | None:
        """A saved predictor (``path=``) scores arrays; one fitted on the fly needs the
        supernet and data."""
        if not self.opts["path"]:
            return None
        return self._load(space).predict  # type: ignore[no-any-return]

    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        from nas.proxies._predictors import make_accuracy_predictor

        path = self.opts["path"]
        if path:
            key = ("accuracy_predictor", path)
            if key not in ctx._memo:
                ctx._memo[key] = self._load(ctx.space)
            return ctx._memo[key].predict(list(archs))  # type: ignore[no-any-return]
        train = ctx.space.sample_many(self.opts["n_train"], seed=self.opts["sample_seed"])
        y = InheritedProxy().score(train, ctx)
        model = make_accuracy_predictor(self.opts["kind"], space=ctx.space.name)
        model.fit(train, y)
        return model.predict(list(archs))
