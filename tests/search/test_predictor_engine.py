"""The predictor engine: vectorised NSGA-II in this process when every objective is a
predictor (no Ray), its genomes, its ranking, and what it stores and answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nas.db import LatencyDB
from nas.devices import get_device
from nas.errors import ConfigError
from nas.latency import fit_predictor, load_predictor
from nas.search import (
    SearchConfig,
    check_config,
    choose_engine,
    load_results,
    nondomination_rank,
    run_search,
    specialize,
)
from nas.search._evolve import Evolution, GenomeCodec, nondominated_ranks
from nas.space import SPACES, get_space

NOTE10_RES = [160, 176, 192, 208, 224]


# ---------------------------------------------------------------------- the parts
@given(st.integers(1, 3), st.lists(st.integers(0, 4), min_size=0, max_size=90))
def test_fast_ranks_equal_peeling_fronts(m: int, flat: list[int]) -> None:
    F = np.asarray(flat[: len(flat) // m * m], np.float64).reshape(-1, m)
    # the definition: peel off the non-dominated rows, again and again
    want = np.full(len(F), -1)
    left = list(range(len(F)))
    level = 0
    while left:
        front = [i for i in left if not any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i])
                                            for j in left)]
        want[front] = level
        left = [i for i in left if i not in front]
        level += 1
    assert nondominated_ranks(F).tolist() == want.tolist()
    assert nondomination_rank is nondominated_ranks  # the evolution sampler's name for it


@pytest.mark.parametrize("name", [n for n in SPACES.names() if get_space(n).family == "ofa"])
def test_genomes_round_trip_every_space(name: str) -> None:
    sp = get_space(name)
    codec = GenomeCodec(sp)
    X = codec.random(200, np.random.default_rng(0))
    a = codec.decode(X)
    archs = [sp.arch(ks=np.where(a.ks[i] > 0, a.ks[i], min(sp.kernel_sizes)).tolist(),
                     e=np.where(a.e[i] > 0, a.e[i], min(sp.expand_ratios)).tolist(),
                     d=a.d[i].tolist(), r=int(a.r[i])) for i in range(len(X))]
    b = sp.to_arrays(archs)  # the space's own canonical arrays of the same networks
    for field in ("ks", "e", "d", "r"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert np.array_equal(codec.encode(b), X)
    # equal networks, equal keys; different networks, different keys
    keys = codec.keys(X)
    assert len(set(keys.tolist())) == len({x.hash for x in archs})


def test_evolution_finds_the_optimum_of_a_small_space() -> None:
    """Most MACs under a params bound on ``tiny`` (800 subnets): the brute-force optimum."""
    sp = get_space("tiny")
    codec = GenomeCodec(sp)
    every = np.array(np.meshgrid(*[np.arange(n) for n in codec.sizes])).reshape(
        codec.n_genes, -1).T
    every = np.unique(codec.canonical(every), axis=0)
    costs = sp.costs(codec.decode(every))
    bound = float(np.median(costs["params"]))
    ok = costs["params"] <= bound
    best = costs["macs"][ok].max()

    def evaluate(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = sp.costs(codec.decode(X))
        return -c["macs"][:, None].astype(float), np.maximum(0.0, c["params"] / bound - 1)

    for seed in range(5):  # about 300 of the 800 scored each time
        res = Evolution(codec, evaluate, population=16, seed=seed).run(30)
        top = res.population[0]
        assert res.V[top] == 0
        assert -res.F[top, 0] == best
        assert res.n_scored == len(np.unique(codec.keys(res.X))) < 400  # each scored once


# ---------------------------------------------------------------------- the engine
def _mbv3_db(path: Path, devices: dict[str, float]) -> str:
    """A latency DB with imported ofa_mbv3 measurements on cpu devices (latency a device's
    slope times MACs, 3% noise) and a fitted ``flops`` predictor each: no timing."""
    url = f"sqlite:///{path}"
    db = LatencyDB(url)
    sp = get_space("ofa_mbv3")
    archs = sp.sample_many(40, seed=0)
    macs = sp.costs(archs)["macs"].astype(float)
    for i, (dev, slope) in enumerate(devices.items()):
        noise = np.random.default_rng(i).normal(1.0, 0.03, len(archs))
        db.ensure_device(get_device(dev))
        db.add_measurements(dev, [
            {"arch": a, "latency_ms": float((0.5 + slope * m / 1e6) * z), "source": "imported"}
            for a, m, z in zip(archs, macs, noise, strict=True)])
        fit_predictor(dev, "ofa_mbv3", "flops", db=db, holdout=0.25)
    db.close()
    return url


def test_search_with_the_ofa_predictor_runs_on_note10_from_nothing(tmp_path: Path) -> None:
    """The issue's command, as a user types it, with no checkpoint, data or measurements."""
    cmd = [str(Path(sys.executable).with_name("nas")), "search", "--space", "ofa_mbv3",
           "--proxy", "ofa-imagenet", "-O", "accuracy", "-O", "latency:note10",
           "-C", "latency:note10=20", "--db", f"sqlite:///{tmp_path / 'empty.sqlite'}",
           "--generations", "60", "--no-progress"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "engine: predictor" in out.stderr
    name = "ofa_mbv3-accuracy-latency_note10-predictor-s0"
    res = load_results(name, str(tmp_path / f"runs/studies/{name}.journal"))
    assert len(res.front) >= 5
    assert len(res.trials) >= 100
    assert all(t.latency_ms["note10"] <= 20 and t.arch["r"] in NOTE10_RES for t in res.front)
    # the stored values are the predictors' own
    sp = get_space("ofa_mbv3")
    archs = [sp.parse(t.arch) for t in res.front]
    assert np.allclose([t.latency_ms["note10"] for t in res.front],
                       load_predictor("note10", "ofa_mbv3").predict(archs))


def test_engine_choice_and_refusal() -> None:
    cfg = SearchConfig.load(space="tiny", objectives=["accuracy", "macs"], proxy="inherited",
                            checkpoint="x.safetensors", data="digits")
    assert choose_engine(cfg)[0] == "ray"
    assert choose_engine(cfg.model_copy(update={"proxy": "params"}))[0] == "predictor"
    with pytest.raises(ConfigError, match="proxy 'inherited' scores subnets with a model"):
        choose_engine(cfg.model_copy(update={"engine": "predictor"}))
    with pytest.raises(ConfigError, match="predictor proxy"):
        specialize("tiny", proxy="synflow", objectives=["accuracy"])
    # what it would keep in memory is bounded, refused before anything runs
    huge = cfg.model_copy(update={"proxy": "params", "population": 10_000,
                                  "generations": 1_000})
    with pytest.raises(ConfigError, match="scores at most 2,000,000"):
        check_config(huge)


def test_several_devices_meet_every_budget(tmp_path: Path) -> None:
    db = _mbv3_db(tmp_path / "l.sqlite", {"cpu-1t": 0.02, "cpu-1t-int8": 0.012})
    bounds = {"latency:note10": 25.0, "latency:cpu-1t": 5.0, "latency:cpu-1t-int8": 3.5}
    res = specialize("ofa_mbv3", objectives=["accuracy", "latency:note10", "latency:cpu-1t"],
                     constraints=bounds, db=db, generations=40)
    assert len(res.front) >= 3
    sp = get_space("ofa_mbv3")
    archs = [sp.parse(f["arch"]) for f in res.front]
    for key, bound in bounds.items():
        dev = key.split(":")[1]
        lat = load_predictor(dev, "ofa_mbv3", db=LatencyDB(db)).predict(archs)
        assert np.all(lat <= bound), key  # by each device's own predictor, independently
    assert res.resolutions == NOTE10_RES
    # stored, the report draws one front per device
    from nas.report import render_report

    cfg = SearchConfig.load(space="ofa_mbv3", proxy="ofa-imagenet", db=db,
                            objectives=["accuracy", "latency:note10", "latency:cpu-1t"],
                            constraints=bounds, generations=20, n_trials=60,
                            storage=str(tmp_path / "s.journal"))
    page = render_report(run_search(cfg, progress=False))
    for dev in ("note10", "cpu-1t", "cpu-1t-int8"):
        assert f"front on {dev}" in page, dev


def test_interpolation_opens_the_resolutions_in_between(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    # MACs as the accuracy proxy: OFA's predictor buckets resolutions by 16 pixels, so with
    # it a resolution between the table's never beats the bucket's first (the table's own)
    kw: dict[str, Any] = {"objectives": ["accuracy", "latency:note10"], "proxy": "macs",
                          "constraints": {"latency:note10": 30}, "db": db, "generations": 30}
    plain = specialize("ofa_mbv3", **kw)
    more = specialize("ofa_mbv3", interpolate=True, **kw)
    assert plain.resolutions == NOTE10_RES
    assert more.resolutions == list(range(160, 225, 4))
    assert {f["arch"]["r"] for f in plain.front} <= set(NOTE10_RES)
    assert {f["arch"]["r"] for f in more.front} - set(NOTE10_RES)  # it uses them


def test_specialize_best_under_each_budget(tmp_path: Path) -> None:
    res = specialize("ofa_mbv3", objectives=["accuracy", "latency:note10"],
                     constraints={"latency:note10": 40}, budgets={"latency:note10": [15, 25]},
                     db=f"sqlite:///{tmp_path / 'e.sqlite'}", generations=40)
    assert list(res.best) == ["latency:note10<=15", "latency:note10<=25",
                              "latency:note10<=40"]
    accs = []
    for key, pick in res.best.items():
        bound = float(key.split("<=")[1])
        assert pick is not None
        assert pick["latency_ms"]["note10"] <= bound
        within = [f["accuracy"] for f in res.front if f["latency_ms"]["note10"] <= bound]
        assert pick["accuracy"] == max(within)
        accs.append(pick["accuracy"])
    assert accs == sorted(accs)
    json.dumps(res.to_json())  # the HTTP answer


def test_resume_of_a_finished_predictor_search_changes_nothing(tmp_path: Path) -> None:
    cfg = SearchConfig.load(space="ofa_mbv3", proxy="ofa-imagenet",
                            objectives=["accuracy"], constraints={"latency:note10": 20},
                            db=f"sqlite:///{tmp_path / 'e.sqlite'}", generations=20,
                            n_trials=30, storage=str(tmp_path / "s.journal"))
    first = run_search(cfg, progress=False)
    again = run_search(cfg, resume=True, progress=False)
    assert len(first.trials) == len(again.trials) == 30
    assert first.front[0].arch_hash == again.front[0].arch_hash
    assert first.front[0].latency_ms["note10"] <= 20


def test_refined_picks_are_no_worse_and_join_the_front(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"objectives": ["accuracy", "latency:note10"],
                          "constraints": {"latency:note10": 50},
                          "budgets": {"latency:note10": [30]}, "generations": 30,
                          "db": f"sqlite:///{tmp_path / 'e.sqlite'}"}
    plain = specialize("ofa_mbv3", **kw)
    refined = specialize("ofa_mbv3", refine=True, **kw)
    assert refined.n_scored > plain.n_scored
    hashes = {f["arch_hash"] for f in refined.front}
    for key, pick in refined.best.items():
        assert pick is not None
        assert pick["arch_hash"] in hashes
        assert pick["latency_ms"]["note10"] <= float(key.split("<=")[1])
        assert pick["accuracy"] >= plain.best[key]["accuracy"]  # type: ignore[index]
