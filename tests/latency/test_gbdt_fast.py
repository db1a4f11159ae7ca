"""The gbdt kind's compiled trees (issue 27, "a prediction in microseconds"): a small batch is
predicted from the fitted trees as flat arrays, not by scikit-learn's ``predict`` (milliseconds
a call whatever the batch); the predictions are the very floats scikit-learn gives, on
architectures, on edge values of the features, and after a store and load (a re-fit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import _kinds as kinds
from nas.latency import fit_predictor, load_predictor, make_predictor
from nas.latency._kinds import _Trees
from nas.space import get_space

DECODE = "cpu-1t-decode256"


def _fitted(space: str, n: int = 150) -> tuple[Any, list[Any], np.ndarray]:
    """A gbdt fitted on a made-up latency (MACs, a step in them, noise)."""
    sp: Any = get_space(space)
    archs = sp.sample_many(n, seed=0)
    macs = np.asarray(sp.costs(archs)["macs"], dtype=float)
    z = macs / macs.mean()
    rng = np.random.default_rng(1)
    y = (z + 0.2 + 0.3 * (z > 1.1)) * rng.normal(1.0, 0.05, n)
    device = DECODE if space.startswith("gpt") else None
    return make_predictor("gbdt", space, device=device).fit(archs, y), archs, y


def _sklearn(est: Any, a: Any) -> np.ndarray:
    """The prediction as scikit-learn's own ``predict`` of the trees makes it."""
    X, log_base = est._X(a)
    out = est.model_.predict(X)
    out = np.exp(out + log_base) if log_base is not None else np.exp(out)
    return np.maximum(out, est.floor_)  # as predict() does


@pytest.mark.parametrize("space", ["ofa_mbv3", "tiny", "gpt_shakespeare"])
def test_compiled_trees_predict_what_sklearn_predicts(space: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    est, _, _ = _fitted(space)
    assert est.trees_ is not None  # compiled on this scikit-learn: the fast path is taken
    sp: Any = get_space(space)
    archs = sp.sample_many(300, seed=7)
    a = sp.to_arrays(archs)
    X, _ = est._X(a)
    np.testing.assert_array_equal(est.trees_.predict(X), est.model_.predict(X))
    want = _sklearn(est, a)
    ones = np.concatenate([est.predict([arch]) for arch in archs[:60]])
    np.testing.assert_allclose(ones, want[:60], rtol=1e-12, atol=0)
    batch = est.predict(archs)
    np.testing.assert_allclose(batch, want, rtol=1e-12, atol=0)
    assert len(archs) * est.trees_.n_nodes <= kinds._TREE_CELLS  # the compiled trees, so far
    # a batch past the compiled trees' size goes through scikit-learn: the same floats
    monkeypatch.setattr(kinds, "_TREE_CELLS", 0)
    np.testing.assert_array_equal(est.predict(archs), batch)


def _model(X: np.ndarray, y: np.ndarray, **params: Any) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=60, max_leaf_nodes=8, random_state=0,
                                         early_stopping=False, **params).fit(X, y)


def test_missing_infinite_and_threshold_values_go_where_sklearn_sends_them() -> None:
    """NaN goes where each split learned (missing values in training, or none: the larger
    child), infinities past every threshold, and a value equal to a threshold to the left."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + (X[:, 2] > 0.5) + rng.normal(0, 0.1, 400)
    X_missing = X.copy()
    X_missing[rng.random(X.shape) < 0.15] = np.nan  # splits learn where NaN goes
    for model in (_model(X, y), _model(X_missing, y)):
        trees = _Trees.of(model)
        assert trees is not None
        thresholds = trees.threshold[trees.left != np.arange(trees.n_nodes)]
        probe = rng.normal(size=(300, 5))
        probe[rng.random(probe.shape) < 0.2] = np.nan
        probe[rng.random(probe.shape) < 0.05] = np.inf
        probe[rng.random(probe.shape) < 0.05] = -np.inf
        at = rng.random(probe.shape) < 0.2  # exactly on some split's threshold
        probe[at] = rng.choice(thresholds, int(at.sum()))
        probe[-1] = np.nan  # a row of nothing known
        np.testing.assert_array_equal(trees.predict(probe), model.predict(probe))
        for row in probe[:40]:
            np.testing.assert_array_equal(trees.predict(row[None]), model.predict(row[None]))


def test_trees_that_are_not_plain_numeric_splits_are_left_to_sklearn() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 4, 200), rng.normal(size=200)]).astype(float)
    y = X[:, 0] + rng.normal(0, 0.1, 200)
    assert _Trees.of(_model(X, y, categorical_features=[0])) is None
    assert _Trees.of(_model(X, np.exp(y), loss="poisson")) is None  # a log link


def test_a_stored_gbdt_loads_back_compiled_and_predicts_the_same(tmp_path: Path) -> None:
    """Stored as JSON (parameters, measurement ids, probe predictions; never a pickle) and
    restored by a re-fit, after which the trees are compiled again."""
    _, archs, y = _fitted("gpt_shakespeare", 60)
    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    db.ensure_device(get_device(DECODE))
    db.add_measurements(DECODE, [{"arch": a, "latency_ms": float(v), "source": "imported"}
                                 for a, v in zip(archs, y, strict=True)])
    fitted, _ = fit_predictor(DECODE, "gpt_shakespeare", "gbdt", db=db, holdout=0.0)
    loaded = load_predictor(DECODE, "gpt_shakespeare", "gbdt", db=db)
    assert loaded.trees_ is not None
    test = get_space("gpt_shakespeare").sample_many(80, seed=11)
    np.testing.assert_array_equal(loaded.predict(test), fitted.predict(test))
    np.testing.assert_array_equal(
        np.concatenate([loaded.predict([a]) for a in test[:20]]), fitted.predict(test[:20]))
    a = get_space("gpt_shakespeare").to_arrays(test)
    np.testing.assert_allclose(loaded.predict(test), _sklearn(loaded, a), rtol=1e-12, atol=0)
