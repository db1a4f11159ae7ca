"""Numbers that agree: the scale of relative measurements comes from the whole campaign, and
fresh measurements agree with predictions within the noise floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import check_agreement, fit_predictor, training_data
from nas.measure import (
    device_scale,
    measure_architectures,
    noise_floor_from_db,
    sample_for_measurement,
)
from nas.space import get_space


@pytest.fixture
def db(tmp_path: Path) -> LatencyDB:
    return LatencyDB(f"sqlite:///{tmp_path / 'latency.sqlite'}")


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
    assert scale is not None and scale.n == 45 and scale.anchor_ms == pytest.approx(5.3)
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
    assert scale is not None and scale.n == 1 and scale.ms == 4.0 and scale.anchor_ms is None
    y = dict(zip(*(lambda t: (t.archs, t.y))(training_data("cpu-1t", "tiny", db)), strict=True))
    assert y == {a: 2.0, b: 4.0, c: 3.0, d: 7.0, e: 7.0, f: 2.0}
    assert device_scale("cpu-2t", sp, db) is None


def test_fresh_measurements_agree_with_predictions_within_the_noise_floor(
        db: LatencyDB) -> None:
    sp = get_space("tiny")
    measure_architectures("cpu-1t", sp, sample_for_measurement(sp, 30, seed=3), db,
                          progress=False)
    fit_predictor("cpu-1t", "tiny", "additive", db=db, holdout=0.0)
    res = check_agreement("cpu-1t", sp, db, n=8, seed=4, noise=8, progress=False)
    assert len(res.hashes) == 8 and res.kind == "additive"
    assert res.noise is not None and res.noise.n >= 8
    # held out: none of the checked subnets was measured before
    trained = {a.hash for a in training_data("cpu-1t", "tiny", db).archs}
    assert not trained & set(res.hashes)
    assert abs(res.median_error) <= res.noise.p90, res.to_dict()
    assert res.within_noise
    assert res.spearman is not None and res.spearman > 0.7
    # the check's timings are stored as such, never trained on, and join the scale
    checks = db.measurements("cpu-1t", "tiny", source="check")
    assert {r.arch.hash for r in checks} == set(res.hashes)
    assert len(training_data("cpu-1t", "tiny", db)) == 30
    again = noise_floor_from_db("cpu-1t", sp, db)
    assert again is not None and again.n == res.noise.n
    assert again.p90 == pytest.approx(res.noise.p90, rel=1e-6)
    scale = device_scale("cpu-1t", sp, db)
    assert scale is not None and scale.n == 5 + 30 + res.noise.n + 8


def test_cli_check_reports_and_refuses(tmp_path: Path, run_nas) -> None:
    url = f"sqlite:///{tmp_path / 'latency.sqlite'}"
    db = LatencyDB(url)
    sp = get_space("tiny")
    base = ["latency", "check", "--device", "cpu-1t", "--space", "tiny", "--db", url,
            "--no-progress"]
    code, _, err = run_nas(base)
    assert code != 0 and "nas latency fit" in err
    measure_architectures("cpu-1t", sp, sample_for_measurement(sp, 12, seed=5), db,
                          progress=False)
    fit_predictor("cpu-1t", "tiny", "flops", db=db, holdout=0.0)
    code, out, err = run_nas([*base, "--n", "3", "--noise", "4", "--json"])
    assert code == 0, err
    got = json.loads(out)
    assert got["kind"] == "flops" and len(got["subnets"]) == 3
    assert got["noise"]["n"] >= 4 and got["scale"]["n"] > 12
    assert all(r["measured_ms"] > 0 for r in got["subnets"])
    arch = tmp_path / "a.json"
    arch.write_text(sp.largest().to_json())
    code, out, err = run_nas([*base, "--arch", f"@{arch}"])
    assert code == 0, err
    assert sp.largest().hash in out and "noise floor over" in out
    code, _, err = run_nas(["latency", "check", "--device", "note10", "--space", "ofa_mbv3",
                            "--db", url])
    assert code != 0 and "external" in err and len(err.strip().splitlines()) == 1
