"""The few-shot ``transfer`` kind on synthetic devices of the tiny space.

Every device prices a subnet as the sum of a per-layer table: a table shared by all devices
(latency that is not linear in the work: shapes, kernels, caches) times a small per-entry
variation and a scale of its own, plus 1% noise, as devices that run the same operators do.
Nothing is timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from nas.db import LatencyDB
from nas.devices import get_device
from nas.errors import ConfigError
from nas.latency import (
    _cli,
    fit_predictor,
    load_predictor,
    make_predictor,
)
from nas.latency._features import layer_features
from nas.latency._predictors import predictor_from_state
from nas.latency._transfer import TransferPredictor, prior_devices, prior_entry
from nas.measure import regression_metrics
from nas.space import Architecture, get_space

runner = CliRunner()


def _latency_app() -> typer.Typer:
    root = typer.Typer(no_args_is_help=True)
    _cli.register(root)
    app = next(g.typer_instance for g in root.registered_groups if g.name == "latency")
    assert app is not None
    return app

SPACE = "tiny"
PRIORS = {"cpu-1t": 1.0, "cpu-2t": 2.0, "cpu-1t-int8": 0.5}
TARGET = "cpu-1t-b16"
N_POOL = 100


def _device(seed: int, scale: float, shared: np.ndarray, a: Any) -> np.ndarray:
    lf = layer_features(SPACE)
    r = np.random.default_rng(seed)
    table = shared * np.exp(r.normal(0, 0.1, shared.shape))
    y = lf.gather_sum(table, np.full(len(lf.resolutions), 0.5), a)
    return y / y.mean() * scale * r.normal(1, 0.01, len(y))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """400 subnets; the latencies of three prior devices and a target; the priors'
    ``additive`` predictors fitted on the first 100 (the pool the k are drawn from)."""
    sp = get_space(SPACE)
    lf = layer_features(SPACE)
    archs = sp.sample_many(400, seed=0)
    a = sp.to_arrays(archs)
    rng = np.random.default_rng(0)
    work = lf.macs_layer / lf.macs_layer[lf.macs_layer > 0].mean()
    shared = (work + 0.3) * np.exp(rng.normal(0, 0.4, work.shape))
    ys = {d: _device(j + 1, s, shared, a) for j, (d, s) in enumerate(PRIORS.items())}
    ys[TARGET] = _device(10, 3.0, shared, a)
    priors = [prior_entry(d, make_predictor("additive", SPACE).fit(archs[:N_POOL],
                                                                   ys[d][:N_POOL]))
              for d in PRIORS]
    return {"archs": archs, "y": ys, "priors": priors}


def _scores(world: dict[str, Any], k: int, draws: int = 3,
            **kinds: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Mean held-out metrics on the target of each ``name=params`` (``kind`` in params)."""
    archs: list[Architecture] = world["archs"]
    y = world["y"][TARGET]
    test = np.arange(N_POOL, len(archs))
    out: dict[str, list[dict[str, float]]] = {}
    for rep in range(draws):
        tr = np.random.default_rng(rep).choice(N_POOL, k, replace=False)
        for name, params in kinds.items():
            p = dict(params)
            est = make_predictor(p.pop("kind", name), SPACE, **p)
            est.fit([archs[i] for i in tr], y[tr])
            out.setdefault(name, []).append(
                regression_metrics(y[test], est.predict([archs[i] for i in test])))
    return {n: {key: float(np.mean([m[key] for m in ms])) for key in ("spearman_rho", "mape")}
            for n, ms in out.items()}


def test_with_related_devices_transfer_beats_flops_and_additive_at_10(world: dict) -> None:
    s = _scores(world, 10, flops={}, additive={},
                transfer={"priors": world["priors"]},
                one_se={"kind": "transfer", "priors": world["priors"], "selection": "one_se"})
    for mine in ("transfer", "one_se"):
        for other in ("flops", "additive"):
            assert s[mine]["spearman_rho"] > s[other]["spearman_rho"], s
            assert s[mine]["mape"] < s[other]["mape"], s
        assert s[mine]["spearman_rho"] > 0.95, s


def test_without_other_devices_it_is_the_best_single_device_kind(world: dict) -> None:
    archs, y = world["archs"], world["y"][TARGET]
    probe = archs[N_POOL:]
    for k in (10, 30):
        # leave-one-out error on k points picks the worse kind now and then: over 6 draws
        s = _scores(world, k, draws=6, flops={}, structure={}, additive={},
                    transfer={"priors": []})
        single = ("flops", "structure", "additive")
        best = min(s[kind]["mape"] for kind in single)
        assert s["transfer"]["mape"] <= 1.1 * best, (k, s)
        assert s["transfer"]["spearman_rho"] >= max(
            s[kind]["spearman_rho"] for kind in single) - 0.02, (k, s)
        # and it is one of them, exactly: no prior-based model is left without priors
        est = TransferPredictor(space=SPACE).fit(archs[:k], y[:k])
        assert est.model_ in single
        assert est.prior_devices_ == []
        alone = make_predictor(est.model_, SPACE).fit(archs[:k], y[:k])
        np.testing.assert_allclose(est.predict(probe), alone.predict(probe))


def test_json_round_trip_predicts_the_same_without_the_priors_given(world: dict) -> None:
    archs, y = world["archs"], world["y"][TARGET]
    for k in (8, 40):  # a prior-based model, and whatever wins with more measurements
        est = TransferPredictor(space=SPACE, priors=world["priors"]).fit(archs[:k], y[:k])
        params = json.loads(json.dumps(est.json_params()))
        state = json.loads(json.dumps(est.get_state()))
        assert "priors" not in params  # embedded in the state instead
        back = predictor_from_state("transfer", params, state)
        assert back.model_ == est.model_
        assert np.array_equal(back.predict(archs[N_POOL:]), est.predict(archs[N_POOL:]))
        assert set(est.loo_) >= {"prior", "nearest", "flops"}
        assert ("additive" in est.loo_) == (k > 11)  # 9 unpenalised coefficients in tiny, + 2
        assert ("prior+residual" in est.loo_) == (k >= 20)


def test_bad_priors_are_refused_in_one_line(world: dict) -> None:
    archs, y = world["archs"], world["y"][TARGET]
    bad_space = prior_entry("x", make_predictor("flops", "cifar_mbv3").fit(
        get_space("cifar_mbv3").sample_many(5, seed=0), np.arange(1.0, 6.0)))
    gbdt = prior_entry("g", make_predictor("gbdt", SPACE).fit(archs[:20], y[:20]))
    for priors, match in (([{"device": "x"}], r"priors\[0\] must be a mapping"),
                          ([bad_space], r"priors\[0\] \(x\) predicts space 'cifar_mbv3'"),
                          ([gbdt], r"priors\[0\]\.kind = 'gbdt'"),
                          ([world["priors"][0]] * 2, "name a device twice")):
        with pytest.raises(ConfigError, match=match) as exc:
            TransferPredictor(space=SPACE, priors=priors).fit(archs[:10], y[:10])
        assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"models\.0 = 'magic': Input should be 'prior'"):
        TransferPredictor(space=SPACE, models=("magic",)).fit(archs[:10], y[:10])
    with pytest.raises(ConfigError, match="models must be a non-empty subset"):
        TransferPredictor(space=SPACE, models=()).fit(archs[:10], y[:10])
    with pytest.raises(ConfigError, match="selection = 'x': Input should be 'min' or 'one_se'"):
        TransferPredictor(space=SPACE, selection="x").fit(archs[:10], y[:10])


def test_fit_from_the_database_uses_the_other_devices(world: dict, tmp_path: Path) -> None:
    """``fit_predictor(kind="transfer")`` gathers the other devices: a stored predictor
    (not a transfer one), or an additive fitted on 20+ measurements; not a device whose
    resolutions do not cover the space's; and the stored predictor reloads without them."""
    archs, ys = world["archs"], world["y"]
    db = LatencyDB(f"sqlite:///{tmp_path / 'latency.sqlite'}")

    def add(device: str, idx: Any, y: np.ndarray) -> None:
        db.ensure_device(get_device(device))
        db.add_measurements(device, [{"arch": archs[i], "latency_ms": float(y[i]),
                                      "source": "imported"} for i in idx])

    for d in PRIORS:
        add(d, range(N_POOL), ys[d])
    add("cpu-1t-noopt", range(10), ys["cpu-1t"])  # too few to be a prior
    add("note10", range(N_POOL), ys["cpu-1t"])  # its resolutions are not tiny's
    add(TARGET, range(N_POOL, N_POOL + 10), ys[TARGET])
    fit_predictor("cpu-2t", SPACE, "flops", db=db, holdout=0.2)
    fit_predictor("cpu-1t-int8", SPACE, "transfer", db=db, holdout=0)  # never a prior

    entries = prior_devices(db, TARGET, SPACE)
    assert {e["device"]: e["kind"] for e in entries} == {
        "cpu-1t": "additive", "cpu-2t": "flops", "cpu-1t-int8": "additive"}

    est, metrics = fit_predictor(TARGET, SPACE, "transfer", db=db, holdout=0)
    assert metrics["n_train"] == 10
    back = load_predictor(TARGET, SPACE, "transfer", db=db)
    probe = archs[:50]
    assert np.array_equal(back.predict(probe), est.predict(probe))
    rec = db.load_predictor(TARGET, SPACE, "transfer")
    assert rec is not None

    # the CLI fits and predicts it like every kind
    url = f"sqlite:///{tmp_path / 'latency.sqlite'}"
    res = runner.invoke(_latency_app(), ["fit", "--device", TARGET, "--space", SPACE,
                                         "--kind", "transfer", "--holdout", "0", "--db", url,
                                         "--json"])
    assert res.exit_code == 0, res.output
    arch = json.dumps(archs[0].to_dict())
    res = runner.invoke(_latency_app(), ["predict", "--device", TARGET, "--space", SPACE,
                                         "--kind", "transfer", "--arch", arch, "--db", url,
                                         "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["latency_ms"] == pytest.approx(float(est.predict(archs[:1])[0]))
    db.close()
    (tmp_path / "latency.sqlite").unlink()  # the stored state alone predicts
    alone = predictor_from_state("transfer", rec.params, rec.state)
    assert np.array_equal(alone.predict(probe), est.predict(probe))
