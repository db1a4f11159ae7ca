"""Accuracy predictors: the scikit-learn estimator protocol, and that they learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from nas.errors import ConfigError, NotFittedError
from nas.proxies import (
    GBDTAccuracyPredictor,
    MLPAccuracyPredictor,
    accuracy_features,
    kendall_tau,
    make_accuracy_predictor,
)
from nas.space import get_space

SP = get_space("tiny")


def synthetic(n, seed):
    """Architectures with an accuracy that grows with kernel size, expand ratio and depth."""
    archs = SP.sample_many(n, seed=seed)
    a = SP.to_arrays(archs)
    y = 0.5 + 0.01 * a.ks.sum(1) + 0.02 * a.e.sum(1) + 0.001 * a.r
    return archs, y + np.random.default_rng(seed).normal(0, 0.003, n)


@pytest.mark.parametrize("cls", [MLPAccuracyPredictor, GBDTAccuracyPredictor])
def test_estimator_protocol(cls):
    est = cls(space="tiny")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        est.predict(SP.sample_many(2, seed=0))
    params = est.get_params()
    assert params["space"] == "tiny"
    assert "random_state" in params
    c = clone(est)
    assert c.get_params() == params
    assert not hasattr(c, "n_train_")
    with pytest.raises(TypeError):
        cls("tiny")  # keyword-only hyper-parameters


@pytest.mark.parametrize("cls,kw", [(MLPAccuracyPredictor, {"epochs": 200}),
                                    (GBDTAccuracyPredictor, {})])
def test_predictors_learn_a_ranking(cls, kw):
    train, y = synthetic(120, 0)
    test, yt = synthetic(60, 1)
    est = cls(space="tiny", **kw)
    assert est.fit(train, y) is est
    pred = est.predict(test)
    assert pred.shape == (60,)
    assert kendall_tau(yt, pred) > 0.5
    assert est.n_train_ == 120
    assert est.n_features_in_ == SP.encoding_size(est.encoding)


def test_gbdt_takes_zero_cost_scores_as_extra_features():
    archs, y = synthetic(80, 2)
    signal = {"zc": y * 10 + 1}  # a perfect extra feature
    X = accuracy_features(SP, archs, kind="ordinal", extra=signal)
    assert X.shape == (80, SP.encoding_size("ordinal") + 1)
    est = GBDTAccuracyPredictor().fit(X[:60], y[:60])
    assert kendall_tau(y[60:], est.predict(X[60:])) > 0.8
    with pytest.raises(ConfigError, match="set space= to pass architectures"):
        GBDTAccuracyPredictor().fit(archs, y)
    assert cross_val_score(GBDTAccuracyPredictor(n_estimators=20), X, y, cv=3).shape == (3,)


def test_feature_count_mismatch_and_factory():
    archs, y = synthetic(20, 3)
    est = make_accuracy_predictor("gbdt", space="tiny", n_estimators=10).fit(archs, y)
    with pytest.raises(Exception, match="features"):
        est.predict(np.zeros((2, 3), np.float32))
    from nas.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="known: gbdt, mlp"):
        make_accuracy_predictor("svm")


@pytest.mark.parametrize("kind", ["mlp", "gbdt"])
def test_saved_predictor_predicts_the_same_and_serves_as_a_proxy(kind, tmp_path):
    from nas.proxies import (
        ProxyContext,
        get_proxy,
        load_accuracy_predictor,
        save_accuracy_predictor,
    )

    archs, y = synthetic(80, seed=3)
    est = make_accuracy_predictor(kind, space="tiny", **({"epochs": 50} if kind == "mlp"
                                                          else {}))
    est.fit(archs, y)
    path = save_accuracy_predictor(est, tmp_path / "acc.json", note="test")
    assert b"pickle" not in path.read_bytes()[:50]
    back = load_accuracy_predictor(path)
    probe = SP.sample_many(50, seed=9)
    np.testing.assert_allclose(back.predict(probe), est.predict(probe), rtol=1e-6, atol=1e-9)
    # as a search's accuracy proxy: needs neither a supernet nor data
    ctx = ProxyContext.build("tiny", cache=False)
    proxy = get_proxy(f"predictor:path={path}")
    np.testing.assert_allclose(proxy.score(probe, ctx), est.predict(probe), rtol=1e-6)
    with pytest.raises(ConfigError, match="is for space 'tiny', not 'cifar_mbv3'"):
        proxy.score(get_space("cifar_mbv3").sample_many(2, seed=0),
                    ProxyContext.build("cifar_mbv3", cache=False))


def test_loading_a_missing_or_foreign_file_says_what_to_do(tmp_path):
    from nas.errors import NASError
    from nas.proxies import load_accuracy_predictor

    with pytest.raises(ConfigError, match="nas accuracy fit"):
        load_accuracy_predictor(tmp_path / "none.json")
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(NASError, match="not a saved accuracy predictor"):
        load_accuracy_predictor(tmp_path / "x.json")
