"""Latency predictors on the gpt family (issue 26 item 3): the features of one call under a
device's workload, the kinds on features alone (flops, additive, gbdt) fitted per workload
and stored, the table kinds refused in one line. Latencies here are synthetic (exact
functions of the architecture), so nothing depends on timing; ranks on measured subnets are
RESULTS.md's benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.db import LatencyDB
from nas.devices import get_device
from nas.errors import ConfigError
from nas.latency import fit_predictor, load_predictor, make_predictor, predictor_from_state
from nas.latency._gpt_features import GPT_FEATURES, gpt_features
from nas.space import get_space

SPACE = "gpt_shakespeare"  # context 256: every shipped language-model profile fits
DECODE, PREFILL = "cpu-1t-decode256", "cpu-1t-prefill128"


def _archs(n: int, seed: int) -> list:
    return get_space(SPACE).sample_many(n, seed=seed)


def _features(device: str, archs: list) -> np.ndarray:
    return gpt_features(get_space(SPACE), get_device(device).workload).transform(archs)


def test_a_decode_step_s_macs_are_the_space_s_macs_per_token_at_that_context() -> None:
    sp, archs = get_space(SPACE), _archs(20, 0)
    f = gpt_features(sp, get_device(DECODE).workload)
    assert (f.tokens, f.positions) == (1, 256)
    np.testing.assert_allclose(f.macs(archs) * 1e6, sp.costs(archs, context=256)["macs"])
    # weights: every parameter once, in float32; the cache: 255 positions read, 256 written
    x = f.transform(archs)
    params = sp.costs(archs)["params"]
    np.testing.assert_allclose(x[:, GPT_FEATURES.index("weight_mb")] * 1e6, 4 * params)
    att = np.array([sum(a.n_head) * sp.spec.head_dim for a in archs])
    np.testing.assert_allclose(x[:, GPT_FEATURES.index("cache_mb")] * 1e6,
                               4 * 2 * (256 + 255) * att)
    assert (x[:, GPT_FEATURES.index("blocks")] == [a.n_layer for a in archs]).all()


def test_prefill_does_the_work_of_its_prompt_and_decode_reads_its_cache() -> None:
    archs = _archs(10, 1)
    pre, dec = _features(PREFILL, archs), _features(DECODE, archs)
    lin, cache = GPT_FEATURES.index("linear_mmacs"), GPT_FEATURES.index("cache_mb")
    np.testing.assert_allclose(pre[:, lin], 128 * dec[:, lin])  # 128 tokens, one call
    assert (dec[:, cache] > pre[:, cache]).all()  # 256 positions against 128


@pytest.mark.parametrize("kind", ["flops", "additive", "gbdt"])
def test_each_feature_kind_fits_a_gpt_workload_and_round_trips(kind: str) -> None:
    train, test = _archs(60, 2), _archs(20, 3)
    true = np.array([0.02, 0.001, 0.05, 0.01, 0.03, 0.002, 0.05])  # ms per unit of each
    y, y_test = _features(DECODE, train) @ true, _features(DECODE, test) @ true
    est = make_predictor(kind, SPACE, device=DECODE)
    assert est.get_params()["workload"] == {"phase": "decode", "context": 256, "cache": "kv"}
    est.fit(train, y)
    pred = est.predict(test)
    rho = np.corrcoef(np.argsort(np.argsort(pred)), np.argsort(np.argsort(y_test)))[0, 1]
    assert rho > 0.9
    if kind == "additive":  # the generating model is in its family: recovered exactly
        np.testing.assert_allclose(pred, y_test, rtol=1e-5)  # up to the ridge's jitter
    if kind != "gbdt":  # gbdt restores by re-fitting on its stored measurements
        back = predictor_from_state(kind, est.json_params(), est.get_state())
        np.testing.assert_array_equal(back.predict(test), pred)


def test_a_gpt_predictor_needs_its_device_s_workload() -> None:
    with pytest.raises(ConfigError, match="priced per workload: fit the predictor for a "
                                          "device whose profile says prefill or decode"):
        make_predictor("additive", SPACE).fit(_archs(5, 0), np.ones(5))
    with pytest.raises(ConfigError, match="device 'cpu-1t' has no workload; space "
                                          "'gpt_shakespeare' of the 'gpt' family"):
        make_predictor("additive", SPACE, device="cpu-1t")
    with pytest.raises(ConfigError, match="workload: space 'tiny' is an image space"):
        make_predictor("additive", "tiny", workload={"phase": "decode", "context": 8}).fit(
            get_space("tiny").sample_many(5, seed=0), np.ones(5))


def test_fitted_from_the_database_per_workload_and_loaded_back(tmp_path: Path) -> None:
    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    archs = _archs(40, 4)
    for device, scale in ((DECODE, 1.0), (PREFILL, 3.0)):
        db.ensure_device(get_device(device))
        y = scale * (_features(device, archs) @ np.array([0.02, 0.001, 0.05, 0.01, 0.03,
                                                          0.002, 0.05]))
        db.add_measurements(device, [{"arch": a, "latency_ms": float(v), "source": "imported"}
                                     for a, v in zip(archs, y, strict=True)])
        est, metrics = fit_predictor(device, SPACE, "additive", db=db, holdout=0.25)
        assert metrics["test"]["spearman_rho"] > 0.99
        assert metrics["flops"]["n"] == metrics["test"]["n"]  # the baseline on the same split
        loaded = load_predictor(device, SPACE, db=db)
        assert loaded.get_params()["workload"] == get_device(device).workload.model_dump(
            exclude_none=True)
        np.testing.assert_array_equal(loaded.predict(archs[:5]), est.predict(archs[:5]))


def test_transfer_prices_a_new_workload_from_ten_measurements_and_the_other_devices(
        tmp_path: Path) -> None:
    """Few-shot on a language model: INT8 decode from 10 measurements, with fp32 decode and
    prefill in the database (another workload, a column like any other device's)."""
    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    archs, new = _archs(60, 5), _archs(40, 6)
    true = np.array([0.02, 0.001, 0.05, 0.01, 0.03, 0.002, 0.05])
    for device in (DECODE, PREFILL):
        db.ensure_device(get_device(device))
        db.add_measurements(device, [
            {"arch": a, "latency_ms": float(v), "source": "imported"}
            for a, v in zip(archs, _features(device, archs) @ true, strict=True)])
        fit_predictor(device, SPACE, "additive", db=db, holdout=0.25)
    int8 = "cpu-1t-decode256-int8"

    def target(xs: list, noise: float = 0.0) -> np.ndarray:  # 0.7x fp32 decode, 3% noise
        z = np.random.default_rng(7).normal(1.0, noise, len(xs))
        return np.asarray(0.7 * (_features(DECODE, xs) @ true) * z)

    db.ensure_device(get_device(int8))
    db.add_measurements(int8, [{"arch": a, "latency_ms": float(v), "source": "imported"}
                               for a, v in zip(archs[:10], target(archs[:10], 0.03),
                                               strict=True)])
    est, _ = fit_predictor(int8, SPACE, "transfer", db=db, holdout=0.0)
    assert est.get_params()["workload"] == get_device(int8).workload.model_dump(
        exclude_none=True)
    assert sorted(e["device"] for e in est.get_params()["priors"]) == [DECODE, PREFILL]
    assert est.model_ in ("prior", "nearest", "prior+residual")  # the other devices help
    pred, y = est.predict(new), target(new)
    assert np.median(np.abs(pred / y - 1)) < 0.05
    loaded = load_predictor(int8, SPACE, "transfer", db=db)  # stored, and restored alone
    np.testing.assert_allclose(loaded.predict(new), pred)


@pytest.mark.parametrize("kind", ["lut", "hybrid"])
def test_a_table_kind_refuses_a_gpt_space_in_one_line(tmp_path: Path, kind: str) -> None:
    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    with pytest.raises(ConfigError) as info:
        fit_predictor(DECODE, SPACE, kind, db=db)
    assert "\n" not in str(info.value)
    assert str(info.value) == (f"kind {kind!r} does not price space 'gpt_shakespeare' (the "
                               "'gpt' family); kinds that do: additive, flops, gbdt, structure, "
                               "transfer")


def test_a_stored_gbdt_loads_back_after_later_measurements_move_the_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gbdt is restored by re-fitting on its measurements; measurements taken since (a
    check, noise repeats) move the device's scale, and the re-fit is on the scale it was
    fitted on, so it reproduces the stored predictions instead of refusing to load."""
    from nas.devices import DeviceProfile, add_device
    from nas.measure import TimingConfig, device_scale, measure_architectures

    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    sp = get_space("gpt_tiny")
    device = DeviceProfile("t-decode32", workload={"phase": "decode", "context": 32})
    add_device(device)
    relative = TimingConfig.quick().replace(reference=True)
    archs = sp.sample_many(24, seed=5)
    measure_architectures(device, sp, archs[:16], db, progress=False, config=relative)
    est, _ = fit_predictor(device, sp.name, "gbdt", db=db, holdout=0.25,
                           params={"min_samples_leaf": 2})
    scale_before = load_predictor(device, sp.name, "gbdt", db=db).predict(archs)
    np.testing.assert_array_equal(scale_before, est.predict(archs))
    # later checks in which the machine ran slower: their reference blocks move the scale
    # (stored as a check would store them, the reference timed at twice the scale)
    before = device_scale(device, sp, db)
    assert before is not None
    rec = next(r for r in db.measurements(device.name, sp.name) if r.source == "measured")
    env = {**rec.env, "reference": {**rec.env["reference"],
                                    "reference_median_ms": 2 * before.ms}}
    db.add_measurements(device.name, [{"arch": a, "latency_ms": 2 * rec.latency_ms,
                                       "source": "check", "env": env} for a in archs[16:]] * 4)
    after = device_scale(device, sp, db)
    assert after is not None
    assert after.ms > 1.5 * before.ms
    np.testing.assert_allclose(load_predictor(device, sp.name, "gbdt", db=db).predict(archs),
                               est.predict(archs), rtol=1e-6)


def test_the_cli_fits_every_kind_that_prices_the_space_and_refuses_the_rest(
        tmp_path: Path, run_nas) -> None:
    import json

    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    archs = _archs(30, 6)
    db.ensure_device(get_device(DECODE))
    y = _features(DECODE, archs) @ np.array([0.02, 0.001, 0.05, 0.01, 0.03, 0.002, 0.05])
    db.add_measurements(DECODE, [{"arch": a, "latency_ms": float(v), "source": "imported"}
                                 for a, v in zip(archs, y, strict=True)])
    url = f"sqlite:///{tmp_path / 'lat.sqlite'}"
    code, out, err = run_nas(["latency", "fit", "--device", DECODE, "--space", SPACE,
                              "--kind", "all", "--db", url, "--json"])
    assert code == 0, err
    assert set(json.loads(out)["predictors"]) == {"flops", "additive", "gbdt", "structure",
                                                  "transfer"}
    for argv, words in (
            (["--device", DECODE, "--kind", "lut"], "kind 'lut' does not price space "
             "'gpt_shakespeare' (the 'gpt' family); kinds that do: additive, flops, gbdt, "
             "structure, transfer"),
            (["--device", "cpu-1t", "--kind", "additive"], "device 'cpu-1t' has no workload; "
             "space 'gpt_shakespeare' of the 'gpt' family")):
        code, _, err = run_nas(["latency", "fit", "--space", SPACE, "--db", url, *argv])
        assert code == 2
        assert err.startswith("error: ")
        assert words in err
        assert err.count("\n") == 1
