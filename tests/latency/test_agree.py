"""Numbers that agree: the scale of relative measurements comes from the whole campaign, and
``check_agreement`` / ``nas latency check`` put a predictor beside fresh timings and the noise
floor.

Every assertion here holds whatever the machine's speed. That a good predictor agrees with
fresh timings is a claim about a quiet machine: it is measured by
``experiments/benchmarks/latency_agreement.py`` (RESULTS.md, "Predictions against timings taken
later"), not asserted by a test that a busy neighbour could fail."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import (
    Agreement,
    check_agreement,
    fit_predictor,
    make_predictor,
    training_data,
)
from nas.measure import (
    METRIC_NAMES,
    NoiseFloor,
    device_scale,
    measure_architectures,
    noise_floor_from_db,
    sample_for_measurement,
)
from nas.space import get_space

#: Subnets of tiny the shared database has timed on cpu-1t.
N_MEASURED = 30


@pytest.fixture
def db(tmp_path: Path) -> LatencyDB:
    return LatencyDB(f"sqlite:///{tmp_path / 'latency.sqlite'}")


@pytest.fixture(scope="module")
def measured_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file: 30 subnets of tiny timed on cpu-1t with the default (relative)
    protocol, and an additive predictor fitted on all of them."""
    path = tmp_path_factory.mktemp("agree") / "latency.sqlite"
    sp = get_space("tiny")
    with LatencyDB(f"sqlite:///{path}") as db:
        measure_architectures("cpu-1t", sp, sample_for_measurement(sp, N_MEASURED, seed=3), db,
                              progress=False)
        fit_predictor("cpu-1t", "tiny", "additive", db=db, holdout=0.0)
    return path


@pytest.fixture
def measured(measured_file: Path, tmp_path: Path) -> str:
    """The URL of a copy of that database, for one test to change."""
    path = tmp_path / "latency.sqlite"
    shutil.copyfile(measured_file, path)
    return f"sqlite:///{path}"


def _relative(db: LatencyDB, arch: object, ratio: float, ref_ms: float, anchor_ms: float,
              ref_hash: str, source: str = "measured") -> int:
    """A relative measurement as the protocol stores it: ratio x the anchor of the moment."""
    env = {"reference": {"arch": ref_hash, "anchor_ms": anchor_ms, "ratio": ratio,
                         "raw_median_ms": ratio * ref_ms, "reference_median_ms": ref_ms}}
    return db.add_measurement("cpu-1t", arch, latency_ms=ratio * anchor_ms, n_runs=10,
                              source=source, env=env)


def test_one_slow_moment_does_not_set_the_scale(db: LatencyDB) -> None:
    sp = get_space("tiny")
    ref = sp.middle()
    db.ensure_device(get_device("cpu-1t"))
    # the anchor sessions caught a slow minute (5.3 ms); the reference's blocks during the
    # campaign say 4.5 ms, with a wander of +-25% around it
    for v in (5.2, 5.3, 5.4, 5.3, 5.35):
        db.add_measurement("cpu-1t", ref, latency_ms=v, n_runs=10, source="reference")
    rng = np.random.default_rng(0)
    archs = sample_for_measurement(sp, 40, seed=1)
    ratios = rng.uniform(0.4, 1.6, len(archs))
    blocks = 4.5 * rng.uniform(0.75, 1.25, len(archs))
    for a, r, b in zip(archs, ratios, blocks, strict=True):
        _relative(db, a, float(r), float(b), 5.3, ref.hash)
    scale = device_scale("cpu-1t", sp, db)
    assert scale is not None
    assert scale.n == 45
    assert scale.anchor_ms == pytest.approx(5.3)
    assert scale.ms == pytest.approx(float(np.median([5.2, 5.3, 5.4, 5.3, 5.35, *blocks])))
    assert abs(scale.ms / 4.5 - 1) < 0.06  # not the anchor's 5.3
    data = training_data("cpu-1t", "tiny", db)
    want = dict(zip(archs, ratios * scale.ms, strict=True))
    np.testing.assert_allclose(data.y, [want[a] for a in data.archs], rtol=1e-9)


def test_absolute_and_foreign_latencies_pass_through(db: LatencyDB) -> None:
    sp = get_space("tiny")
    db.ensure_device(get_device("cpu-1t"))
    a, b, c, d, e, f = sample_for_measurement(sp, 6, seed=2)
    db.add_measurement("cpu-1t", a, latency_ms=2.0, source="imported")  # absolute
    _relative(db, b, 1.0, 4.0, 8.0, sp.middle().hash)                  # on the scale: 4.0
    _relative(db, c, 1.0, 400.0, 3.0, "another-reference")             # not this space's
    # imported relative rows are put on the scale but do not set it
    _relative(db, f, 0.5, 900.0, 8.0, sp.middle().hash, source="imported")
    # hostile environments: unusable numbers leave the stored latency as it is
    for arch, bad in ((d, "x"), (e, float("inf"))):
        db.add_measurement("cpu-1t", arch, latency_ms=7.0, source="measured",
                           env={"reference": {"arch": sp.middle().hash, "anchor_ms": bad,
                                              "reference_median_ms": 4.0}})
    scale = device_scale("cpu-1t", sp, db)
    assert scale is not None
    assert scale.n == 1
    assert scale.ms == 4.0
    assert scale.anchor_ms is None
    y = dict(zip(*(lambda t: (t.archs, t.y))(training_data("cpu-1t", "tiny", db)), strict=True))
    assert y == {a: 2.0, b: 4.0, c: 3.0, d: 7.0, e: 7.0, f: 2.0}
    assert device_scale("cpu-2t", sp, db) is None


def _check_noise_floor_structure(nf: NoiseFloor, n: int) -> None:
    """What a noise floor of ``n`` pairs is, however noisy the machine: relative differences
    ``|a - b| / mean(a, b)`` lie in [0, 2], ordered median <= p90 <= max."""
    assert nf.n == n == len(nf.rel_diffs)
    assert all(0 <= d <= 2 for d in nf.rel_diffs)
    assert 0 <= nf.median <= nf.p90 <= nf.max <= 2
    assert nf.max == pytest.approx(max(nf.rel_diffs))
    assert set(nf.metrics) == {"n", *METRIC_NAMES}
    assert nf.metrics["n"] == n


def test_check_puts_predictions_beside_fresh_timings_and_the_noise_floor(
        measured: str) -> None:
    sp = get_space("tiny")
    with LatencyDB(measured) as db:
        res = check_agreement("cpu-1t", sp, db, n=8, seed=4, noise=8, progress=False)
        assert isinstance(res, Agreement)
        assert len(res.hashes) == 8
        assert res.kind == "additive"
        # held out: none of the checked subnets was measured before
        trained = {a.hash for a in training_data("cpu-1t", "tiny", db).archs}
        assert len(trained) == N_MEASURED
        assert not trained & set(res.hashes)
        # both sides reported, one positive latency per subnet
        assert res.predicted.shape == res.measured.shape == (8,)
        assert np.all(np.isfinite(res.predicted) & (res.predicted > 0))
        assert np.all(np.isfinite(res.measured) & (res.measured > 0))
        np.testing.assert_allclose(res.errors, res.predicted / res.measured - 1)
        assert res.median_error == pytest.approx(float(np.median(res.errors)))
        assert res.spearman is not None
        assert -1 <= res.spearman <= 1
        # the noise floor: 8 repeats of measured subnets in fresh sessions
        assert res.noise is not None
        _check_noise_floor_structure(res.noise, 8)
        assert res.within_noise == (abs(res.median_error) <= res.noise.p90)
        out = res.to_dict()
        assert [r["hash"] for r in out["subnets"]] == list(res.hashes)
        assert all(r["predicted_ms"] > 0 and r["measured_ms"] > 0 for r in out["subnets"])
        assert out["within_noise"] is res.within_noise
        assert json.loads(json.dumps(out)) == out
        # the check's timings are stored as such, never trained on, and join the scale
        checks = db.measurements("cpu-1t", "tiny", source="check")
        assert {r.arch.hash for r in checks} == set(res.hashes)
        assert len(training_data("cpu-1t", "tiny", db)) == N_MEASURED
        again = noise_floor_from_db("cpu-1t", sp, db)
        assert again is not None
        assert again.n == res.noise.n
        assert again.p90 == pytest.approx(res.noise.p90, rel=1e-6)
        scale = device_scale("cpu-1t", sp, db)
        assert scale is not None
        assert scale.n == 5 + N_MEASURED + res.noise.n + 8
        # with enough repeats stored, a second check times no more of them
        res2 = check_agreement("cpu-1t", sp, db, n=1, seed=5, noise=8, progress=False)
        assert res2.noise is not None
        assert res2.noise.n == 8


def _store_off_by(db: LatencyDB, factor: float) -> None:
    """A flops predictor fitted on ``factor`` times the measured latencies, stored as the
    device's flops predictor: every prediction is about ``factor`` times the truth."""
    data = training_data("cpu-1t", "tiny", db)
    off = make_predictor("flops", "tiny").fit(data.archs, factor * data.y)
    db.save_predictor("cpu-1t", "tiny", "flops", params=off.json_params(),
                      state=off.get_state(), metrics={}, measurement_ids=data.flat_ids())


def test_strict_fails_a_predictor_ten_times_off(measured: str, run_nas) -> None:
    """Ten times off is an error of about +900%; a noise floor's p90 is at most 200% (a
    relative difference |a - b| / mean(a, b) cannot exceed 2), so the verdict is certain."""
    with LatencyDB(measured) as db:
        _store_off_by(db, 10.0)
    base = ["latency", "check", "--device", "cpu-1t", "--space", "tiny", "--db", measured,
            "--kind", "flops", "--n", "3", "--noise", "4", "--no-progress", "--json"]
    code, out, err = run_nas([*base, "--strict"])
    assert code == 1, err
    got = json.loads(out)
    assert got["kind"] == "flops"
    assert len(got["subnets"]) == 3
    assert got["median_error"] > 2 >= got["noise"]["p90"]
    assert got["within_noise"] is False
    assert all(r["predicted_ms"] > r["measured_ms"] > 0 for r in got["subnets"])
    # without --strict the same verdict is a report, not a failure
    code, out, err = run_nas(base)
    assert code == 0, err
    assert json.loads(out)["within_noise"] is False


def test_cli_check_reports_and_refuses(tmp_path: Path, measured: str, run_nas) -> None:
    sp = get_space("tiny")
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    LatencyDB(empty).close()
    base = ["latency", "check", "--device", "cpu-1t", "--space", "tiny", "--no-progress"]
    code, _, err = run_nas([*base, "--db", empty])
    assert code != 0
    assert "nas latency fit" in err
    fit_predictor("cpu-1t", "tiny", "flops", db=measured, holdout=0.0)
    code, out, err = run_nas([*base, "--db", measured, "--kind", "flops", "--n", "3",
                              "--noise", "4", "--json"])
    assert code == 0, err
    got = json.loads(out)
    assert got["kind"] == "flops"
    assert len(got["subnets"]) == 3
    assert got["noise"]["n"] >= 4
    assert got["scale"]["n"] > N_MEASURED
    assert all(r["measured_ms"] > 0 and r["predicted_ms"] > 0 for r in got["subnets"])
    assert isinstance(got["within_noise"], bool)
    assert math.isfinite(got["median_error"])
    arch = tmp_path / "a.json"
    arch.write_text(sp.largest().to_json())
    code, out, err = run_nas([*base, "--db", measured, "--arch", f"@{arch}"])
    assert code == 0, err
    assert sp.largest().hash in out
    assert "noise floor over" in out
    code, _, err = run_nas(["latency", "check", "--device", "note10", "--space", "ofa_mbv3",
                            "--db", measured])
    assert code != 0
    assert "external" in err
    assert len(err.strip().splitlines()) == 1
