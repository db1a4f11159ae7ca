"""Latency predictors: the estimator protocol, JSON storage, vectorised features, accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone

from nas.db import LatencyDB
from nas.devices import get_device
from nas.errors import ArchitectureError, NASError, NotFittedError, UnknownNameError
from nas.latency import (
    PREDICTORS,
    AdditivePredictor,
    FlopsPredictor,
    fit_predictor,
    load_predictor,
    make_predictor,
    predictor_from_state,
)
from nas.latency._features import layer_features
from nas.latency._lut import lut_grid, lut_keys
from nas.measure import (
    TimingConfig,
    measure_architectures,
    regression_metrics,
    sample_for_measurement,
)
from nas.space import ArchArrays, get_space


def _fake_table(space: str) -> dict[str, Any]:
    """A lookup table with made-up, size-dependent entries: no timing needed."""
    rng = np.random.default_rng(0)
    entries = {}
    for key, spec in lut_keys(space, lut_grid(space, None)).items():
        size = float(np.prod(spec["shape"]))
        entries[key] = 1e-5 * size * (1 + 0.1 * rng.random()) + 0.01
    return {"version": 1, "device": "fake", "space": space,
            "resolutions": lut_grid(space, None), "overhead_ms": 0.005, "entries": entries}


def _synthetic(space: str, n: int, seed: int = 0) -> tuple[list[Any], np.ndarray]:
    """Architectures and an additive 'latency': every kind of work (1x1 and depthwise MACs
    per stage and kernel, activation traffic, operator count) at its own random rate."""
    sp = get_space(space)
    archs = sp.sample_many(n, seed=seed)
    lf = layer_features(sp)
    rng = np.random.default_rng(42)
    stage = np.asarray([g == "stage" for g in lf.groups])
    rate = np.where(stage, rng.uniform(0.01, 0.05, len(stage)), 0.0)
    rate[lf.names.index("const")] = 0.05
    y = lf.transform(sp.to_arrays(archs)) @ rate
    return archs, y


def _kind_params(kind: str, space: str) -> dict[str, Any]:
    return {"table": _fake_table(space)} if PREDICTORS.get(kind).needs_table else {}


@pytest.mark.parametrize("kind", list(PREDICTORS))
def test_predict_before_fit_raises(kind: str) -> None:
    est = make_predictor(kind, "tiny")
    with pytest.raises(NotFittedError, match="fit"):
        est.predict([get_space("tiny").smallest()])


@pytest.mark.parametrize("kind", list(PREDICTORS))
def test_sklearn_clone_and_get_params(kind: str) -> None:
    est = make_predictor(kind, "tiny", **_kind_params(kind, "tiny"))
    params = est.get_params()
    assert params["space"] == "tiny"
    twin = clone(est)
    assert type(twin) is type(est)
    assert twin.get_params().keys() == params.keys()
    archs, y = _synthetic("tiny", 30)
    est.fit(archs, y)
    fresh = clone(est)
    assert not hasattr(fresh, "n_train_")  # clone copies hyper-parameters, not state
    with pytest.raises(NotFittedError):
        fresh.predict(archs)


@pytest.mark.parametrize("kind", list(PREDICTORS))
def test_json_round_trip_gives_identical_predictions(kind: str) -> None:
    archs, y = _synthetic("cifar_mbv3", 60)
    est = make_predictor(kind, "cifar_mbv3", **_kind_params(kind, "cifar_mbv3"))
    est.fit(archs, y)
    params = json.loads(json.dumps(est.json_params()))
    state = json.loads(json.dumps(est.get_state()))
    back = predictor_from_state(kind, params, state, refit_data=(archs, y))
    test = get_space("cifar_mbv3").sample_many(50, seed=9)
    assert np.array_equal(back.predict(test), est.predict(test))


def test_gbdt_refit_that_does_not_reproduce_is_refused() -> None:
    archs, y = _synthetic("tiny", 40)
    est = make_predictor("gbdt", "tiny").fit(archs, y)
    state = est.get_state()
    state["probe_predictions"] = [v * 1.5 for v in state["probe_predictions"]]
    with pytest.raises(NASError, match="did not reproduce"):
        predictor_from_state("gbdt", est.json_params(), state, refit_data=(archs, y))
    with pytest.raises(NASError, match="re-fitting"):
        predictor_from_state("gbdt", est.json_params(), est.get_state())


def test_additive_recovers_an_additive_latency() -> None:
    archs, y = _synthetic("ofa_mbv3", 300)
    est = AdditivePredictor(space="ofa_mbv3").fit(archs[:200], y[:200])
    m = regression_metrics(y[200:], est.predict(archs[200:]))
    base = regression_metrics(y[200:], FlopsPredictor(space="ofa_mbv3")
                              .fit(archs[:200], y[:200]).predict(archs[200:]))
    assert m["mape"] < 0.01
    assert m["kendall_tau"] > 0.95
    assert m["mape"] < base["mape"]


def test_batched_prediction_is_vectorised_over_arch_arrays() -> None:
    sp = get_space("ofa_mbv3")
    archs, y = _synthetic("ofa_mbv3", 80)
    est = AdditivePredictor(space="ofa_mbv3").fit(archs, y)
    batch = sp.sample_many(500, seed=3)
    arrays = sp.to_arrays(batch)
    assert isinstance(arrays, ArchArrays)
    assert np.allclose(est.predict(arrays), est.predict(batch))
    assert np.allclose(est.predict(batch[:1]), est.predict([batch[0].to_dict()]))
    # 100k rows in one call: no per-architecture Python work (timed by the benchmark)
    big = ArchArrays(np.repeat(arrays.ks, 200, 0), np.repeat(arrays.e, 200, 0),
                     np.repeat(arrays.d, 200, 0), np.repeat(arrays.r, 200, 0))
    out = est.predict(big)
    assert out.shape == (100_000,)
    assert np.allclose(out[::200], est.predict(arrays))


def test_feature_macs_match_the_space() -> None:
    for name in ("tiny", "cifar_mbv3", "ofa_mbv3"):
        sp = get_space(name)
        a = sp.to_arrays(sp.sample_many(50, seed=1))
        assert np.allclose(layer_features(sp).macs(a) * 1e6, sp.costs(a)["macs"])


def test_inputs_from_another_space_are_refused() -> None:
    archs, y = _synthetic("tiny", 20)
    est = FlopsPredictor(space="tiny").fit(archs, y)
    with pytest.raises(ArchitectureError, match="cifar_mbv3"):
        est.predict([get_space("cifar_mbv3").smallest()])
    bad = get_space("tiny").to_arrays(archs[:2])
    bad = ArchArrays(bad.ks, bad.e, bad.d, np.array([16, 99]))
    with pytest.raises(ArchitectureError, match="r must be one of"):
        est.predict(bad)
    with pytest.raises(UnknownNameError, match="known kinds"):
        make_predictor("nope", "tiny")


@pytest.mark.parametrize("kind", [k for k in PREDICTORS if not PREDICTORS.get(k).needs_table])
def test_each_kind_fits_a_known_latency(kind: str) -> None:
    """On a latency made of every kind of work at its own rate, with 5% noise per subnet, each
    kind fitted on 60 subnets ranks 40 others and comes within 15% on average."""
    archs, y = _synthetic("cifar_mbv3", 100, seed=3)
    y = y * np.random.default_rng(7).normal(1.0, 0.05, len(y))
    est = make_predictor(kind, "cifar_mbv3").fit(archs[:60], y[:60])
    m = regression_metrics(y[60:], est.predict(archs[60:]))
    assert m["kendall_tau"] > 0.6, m
    assert m["mape"] < 0.15, m


# ---------------------------------------------------------------------- measured data
@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> LatencyDB:
    """40 cifar_mbv3 subnets spread over the MAC range, timed with the quick protocol."""
    path = tmp_path_factory.mktemp("latency") / "latency.sqlite"
    db = LatencyDB(f"sqlite:///{path}")
    archs = sample_for_measurement("cifar_mbv3", 40, seed=0, uniform_share=0.0)
    measure_architectures("cpu-1t", "cifar_mbv3", archs, db, progress=False,
                          config=TimingConfig.quick())
    return db


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in PREDICTORS  # those fitted on measurements
                                  if PREDICTORS.get(k).check_fit_ok(get_device("cpu-1t"))])
def test_each_kind_fits_real_measurements_and_loads_back(measured: LatencyDB, kind: str) -> None:
    params = ({"lut_timing": "quick", "lut_resolutions": None}
              if PREDICTORS.get(kind).needs_table else None)
    est, metrics = fit_predictor("cpu-1t", "cifar_mbv3", kind, db=measured, holdout=0.3,
                                 params=params)
    test = metrics["test"]
    assert metrics["n_test"] == 12
    assert metrics["n_train"] == 28
    # Real timings (the quick protocol) on a shared machine move with the neighbours' load
    # (a run beside two busy workers put every kind's MAPE at 0.5-0.67): how well a kind
    # ranks them is a benchmark (RESULTS.md's predictor tables, on quiet-machine
    # measurements), not a test (issue 23: no test asserts what timing can break). How
    # closely each kind fits without timing noise is test_each_kind_fits_a_known_latency.
    # What timing cannot break: the split, every metric a number, and the stored predictor
    # the fitted one.
    assert all(np.isfinite(v) for v in test.values()), test
    loaded = load_predictor("cpu-1t", "cifar_mbv3", kind, db=measured)
    archs = get_space("cifar_mbv3").sample_many(20, seed=5)
    assert np.array_equal(loaded.predict(archs), est.predict(archs))


@pytest.mark.slow
def test_load_without_kind_takes_the_best_held_out(measured: LatencyDB) -> None:
    fit_predictor("cpu-1t", "cifar_mbv3", "flops", db=measured)
    _, m = fit_predictor("cpu-1t", "cifar_mbv3", "additive", db=measured)
    best = load_predictor("cpu-1t", "cifar_mbv3", db=measured)
    stored = {k: r.metrics["test"]["mape"] for k in PREDICTORS
              if (r := measured.load_predictor("cpu-1t", "cifar_mbv3", k))}
    assert best.kind == min(stored, key=stored.__getitem__)
    assert m["flops"]["n"] == m["test"]["n"]  # the baseline is scored on the same split


def test_no_measurements_says_which_command_to_run(tmp_path: Path) -> None:
    db = LatencyDB(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(NASError, match="nas latency measure --device cpu-1t --space tiny"):
        fit_predictor("cpu-1t", "tiny", "additive", db=db)
    with pytest.raises(NASError, match="nas latency fit"):
        load_predictor("cpu-1t", "tiny", db=db)


@pytest.mark.parametrize("trailing", [(), (3,), (88,)])
def test_one_take_of_a_prediction_equals_the_per_slot_gather(
        trailing: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """A few architectures are priced by one take of every slot (fast per call); a large
    batch slot by slot (less memory): the same sums."""
    import nas.latency._features as features

    sp, lf = get_space("ofa_mbv3"), layer_features("ofa_mbv3")
    a = sp.to_arrays(sp.sample_many(50, seed=3))
    rng = np.random.default_rng(0)
    table = rng.normal(size=lf.layer.shape[:4] + trailing)
    fixed = rng.normal(size=(lf.layer.shape[0], *trailing))
    one_take = lf.gather_sum(table, fixed, a)
    monkeypatch.setattr(features, "_ONE_TAKE", -1)
    per_slot = lf.gather_sum(table, fixed, a)
    assert one_take.shape == per_slot.shape == (50, *trailing)
    np.testing.assert_allclose(one_take, per_slot, rtol=1e-12, atol=1e-12)
