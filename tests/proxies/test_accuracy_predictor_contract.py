"""What every registered accuracy predictor must do, run against each of them.

Parametrized from the registry: a new kind (one class with ``@ACCURACY_PREDICTORS.register``)
is tested by adding it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from nas.errors import NotFittedError, UnknownNameError
from nas.proxies import (
    ACCURACY_PREDICTORS,
    AccuracyPredictor,
    get_proxy,
    load_accuracy_predictor,
    make_accuracy_predictor,
    save_accuracy_predictor,
)
from nas.space import get_space

KINDS = ACCURACY_PREDICTORS.names()
SP = get_space("tiny")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def data() -> tuple[list, np.ndarray, list]:
    archs = SP.sample_many(40, seed=0)
    a = SP.to_arrays(archs)
    y = 0.5 + 0.01 * a.ks.sum(1) + 0.02 * a.e.sum(1) + 0.001 * a.r
    return archs, y, SP.sample_many(10, seed=1)


def test_there_are_kinds_to_test() -> None:
    assert {"mlp", "gbdt"} <= set(KINDS)
    with pytest.raises(UnknownNameError, match="known: " + ", ".join(KINDS)):
        make_accuracy_predictor("no-such-kind")


def test_kind_is_registered_and_the_predictor_proxy_offers_it(kind: str) -> None:
    cls = ACCURACY_PREDICTORS.get(kind)
    assert issubclass(cls, AccuracyPredictor) and cls.kind == kind
    assert kind in get_proxy("predictor").option_choices()["kind"]
    assert get_proxy(f"predictor:kind={kind}").opts["kind"] == kind


def test_estimator_protocol(kind: str, data) -> None:
    est = make_accuracy_predictor(kind, space="tiny")
    with pytest.raises(NotFittedError):
        est.predict(data[2])
    params = est.get_params()
    assert params["space"] == "tiny"
    assert clone(est).get_params() == params


def test_fit_and_predict_shapes(kind: str, data) -> None:
    archs, y, probe = data
    est = make_accuracy_predictor(kind, space="tiny")
    assert est.fit(archs, y) is est
    pred = est.predict(probe)
    assert pred.shape == (10,) and pred.dtype == np.float64 and np.all(np.isfinite(pred))
    assert est.n_train_ == 40 and est.n_features_in_ == est.encoding_size()
    X = est.encode(probe)
    np.testing.assert_allclose(est.predict(X), pred)
    assert est.predict([]).shape == (0,)


def test_save_load_round_trip_predicts_the_same(kind: str, data, tmp_path: Path) -> None:
    archs, y, probe = data
    est = make_accuracy_predictor(kind, space="tiny").fit(archs, y)
    path = save_accuracy_predictor(est, tmp_path / f"{kind}.json", note="contract")
    back = load_accuracy_predictor(path)
    assert type(back) is type(est) and back.get_params() == est.get_params()
    np.testing.assert_allclose(back.predict(probe), est.predict(probe), rtol=1e-6, atol=1e-9)
    with pytest.raises(NotFittedError):
        save_accuracy_predictor(make_accuracy_predictor(kind), tmp_path / "unfitted.json")
