"""scikit-learn's estimator protocol without scikit-learn (``nas._estimator``): what
``BaseEstimator`` and ``RegressorMixin`` give, the same, so that ``clone``, the tags, ``score``
and model selection take the latency and accuracy predictors as before, while loading one
imports no scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin, clone, is_regressor
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils import get_tags

from nas._estimator import RegressorEstimator
from nas.latency import make_predictor
from nas.space import get_space


class Ours(RegressorEstimator):
    """A ridge line through the origin, on the protocol."""

    def __init__(self, *, alpha: float = 1.0, inner: Any = None, name: str = "x",
                 nan: float = float("nan")) -> None:
        self.alpha = alpha
        self.inner = inner
        self.name = name
        self.nan = nan

    def fit(self, X: Any, y: Any) -> Ours:
        x = np.asarray(X, dtype=float)[:, 0]
        self.coef_ = float(x @ np.asarray(y) / (x @ x + self.alpha))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=float)[:, 0] * self.coef_


class Theirs(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """The same estimator on scikit-learn's own bases: the reference."""

    __init__ = Ours.__init__  # type: ignore[assignment]
    fit = Ours.fit
    predict = Ours.predict


@pytest.mark.parametrize("kw", [{}, {"alpha": 2.5}, {"name": "y", "inner": Ours(alpha=3.0)},
                                {"nan": 1.0}])
def test_params_and_repr_as_scikit_learns(kw: dict[str, Any]) -> None:
    ours, theirs = Ours(**kw), Theirs(**kw)
    for deep in (False, True):
        assert ours.get_params(deep=deep).keys() == theirs.get_params(deep=deep).keys()
    def bare(text: str) -> str:
        return text.replace("Ours", "E").replace("Theirs", "E")

    assert bare(repr(ours)) == bare(repr(theirs))


def test_set_params_nested_and_unknown() -> None:
    est = Ours(inner=Ours())
    assert est.set_params(alpha=0.5, inner__alpha=7.0) is est
    assert est.alpha == 0.5
    assert est.inner.alpha == 7.0
    assert est.get_params()["inner__alpha"] == 7.0
    with pytest.raises(ValueError, match="Invalid parameter 'beta' for estimator"):
        est.set_params(beta=1)
    with pytest.raises(ValueError, match="Invalid parameter"):
        Theirs().set_params(beta=1)  # the same error type as scikit-learn's


def test_clone_tags_score_and_model_selection() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1))
    y = 3.0 * X[:, 0] + rng.normal(0, 0.1, 60)
    est = Ours(alpha=0.1).fit(X, y)
    twin = clone(est)
    assert type(twin) is Ours
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "coef_")
    assert is_regressor(est)
    assert get_tags(est) == get_tags(Theirs())
    assert est.score(X, y) == pytest.approx(Theirs(alpha=0.1).fit(X, y).score(X, y), abs=0)
    np.testing.assert_array_equal(cross_val_score(Ours(), X, y, cv=3),
                                  cross_val_score(Theirs(), X, y, cv=3))
    grid = GridSearchCV(Ours(), {"alpha": [0.0, 1e4]}, cv=3).fit(X, y)
    assert grid.best_params_ == {"alpha": 0.0}


def test_a_latency_kind_in_scikit_learns_model_selection() -> None:
    sp = get_space("tiny")
    archs = sp.sample_many(60, seed=0)
    y = np.asarray(sp.costs(archs)["macs"], dtype=float) / 1e6 + 1.0
    est = make_predictor("flops", "tiny")
    scores = cross_val_score(est, archs, y, cv=3)
    assert scores.shape == (3,)
    assert np.all(scores > 0.9)  # latency linear in MACs, exactly
    assert repr(est) == "FlopsPredictor(space='tiny')"
