"""The search's parts without Ray: configuration, parameters, evolution, front, hypervolume."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from nas.errors import ConfigError
from nas.search import (
    EvolutionSampler,
    SearchConfig,
    arch_from_params,
    distributions,
    hypervolume,
    nondomination_rank,
    params_from_arch,
    pareto_mask,
)
from nas.search._worker import Evaluator
from nas.space import get_space


# ---------------------------------------------------------------------- configuration
def test_config_defaults_and_derived_names() -> None:
    cfg = SearchConfig.load(space="tiny", objectives=["accuracy", "latency:cpu-1t", "params"],
                            constraints={"latency:cpu-2t": 3, "params": 1e4})
    assert [o.direction for o in cfg.objective_list] == ["maximize", "minimize", "minimize"]
    assert cfg.devices == ["cpu-1t", "cpu-2t"]
    assert cfg.study_name == "tiny-accuracy-latency_cpu-1t-params-tpe-s0"
    assert cfg.storage_url.endswith("runs/studies/tiny-accuracy-latency_cpu-1t-params-tpe-s0"
                                    ".journal")


def test_each_engine_names_its_study_and_an_auto_config_the_engine_it_will_run_on() -> None:
    """The default study name says how the search searched: the sampler on Ray, ``predictor``
    for the predictor engine; an ``auto`` config's is that of the engine chosen for it, so
    that the study it stores is the one its name points at."""
    from nas.search import PredictorSearchConfig, RaySearchConfig, make_sampler

    ray = RaySearchConfig(space="tiny", objectives=["macs"], sampler="nsga2")
    assert ray.study_name == "tiny-macs-nsga2-s0"
    assert ray.strategy == "sampler nsga2"
    fast = PredictorSearchConfig(space="tiny", objectives=["macs"], generations=5)
    assert fast.study_name == "tiny-macs-predictor-s0"
    assert fast.strategy == "predictor engine (NSGA-II, 5 generations)"
    assert SearchConfig(space="tiny", objectives=["macs"]).study_name == "tiny-macs-predictor-s0"
    assert SearchConfig(space="tiny", objectives=["accuracy"]).study_name == \
        "tiny-accuracy-tpe-s0"
    assert fast.optuna_sampler() is None  # it adds its trials itself
    assert isinstance(make_sampler(SearchConfig(space="tiny", objectives=["macs"])),
                      optuna.samplers.TPESampler)  # an auto config, as Ray would run it
    with pytest.raises(ConfigError, match="generations = 5: not a setting of engine 'ray'"):
        make_sampler(fast)


@pytest.mark.parametrize(("overrides", "field", "hint"), [
    ({"sampler": "annealing"}, "sampler", "evolution, gp, nsga2, random, tpe"),
    ({"objectives": ["speed"]}, "objectives", "latency:<device>"),
    ({"objectives": ["latency"]}, "objectives", "needs a device"),
    ({"objectives": ["accuracy", "accuracy"]}, "objectives", "repeat"),
    ({"constraints": {"accuracy": 0.9}}, "constraints", "upper bounds"),
    ({"constraints": {"latency:cpu-1t": -1}}, "constraints", "must be > 0"),
    ({"n_trials": 0}, "n_trials", "greater than or equal to 1"),
    ({"study": "../etc/passwd"}, "study", "letters, digits"),
    ({"colour": "red"}, "colour", "unknown field"),
])
def test_bad_config_is_one_line_naming_the_field(overrides: dict, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        SearchConfig.load(space="tiny", **overrides)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert field in msg, msg
    assert hint in msg, msg


def test_config_file_and_flag_override(tmp_path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("space: tiny\nsampler: nsga2\nn_trials: 50\nobjectives: [accuracy, macs]\n")
    cfg = SearchConfig.load(f, n_trials=7, sampler=None)
    assert (cfg.sampler, cfg.n_trials, cfg.objectives) == ("nsga2", 7, ["accuracy", "macs"])
    f.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        SearchConfig.load(f)
    with pytest.raises(ConfigError, match="not found"):
        SearchConfig.load(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize("space", ["tiny", "cifar_mbv3", "ofa_mbv3"])
def test_params_round_trip_every_architecture(space: str) -> None:
    sp = get_space(space)
    dists = distributions(sp)
    assert len(dists) == 1 + sp.n_stages + 2 * sp.n_layers
    for arch in sp.sample_many(50, seed=1):
        params = params_from_arch(sp, arch)
        assert set(params) == set(dists)
        for name, v in params.items():
            assert dists[name]._contains(dists[name].to_internal_repr(v)), (name, v)
        assert arch_from_params(sp, params) == arch


def test_inactive_layers_do_not_change_the_architecture() -> None:
    sp = get_space("tiny")
    arch = sp.smallest()
    params = params_from_arch(sp, arch)
    other = dict(params)
    for name in other:
        if name.startswith(("k", "e")) and name.endswith(".2"):  # beyond depth 1
            other[name] = max(sp.kernel_sizes) if name[0] == "k" else max(sp.expand_ratios)
    assert arch_from_params(sp, other).hash == arch.hash


# ---------------------------------------------------------------------- front, hypervolume
def test_pareto_mask_and_ranks_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    v = rng.integers(0, 6, size=(60, 2)).astype(float)

    def dominated(i: int) -> bool:
        return any(np.all(v[j] <= v[i]) and np.any(v[j] < v[i]) for j in range(len(v)))

    assert pareto_mask(v).tolist() == [not dominated(i) for i in range(len(v))]
    rank = nondomination_rank(v)
    assert (rank[pareto_mask(v)] == 0).all()
    for i, j in itertools.product(range(len(v)), repeat=2):
        if np.all(v[i] <= v[j]) and np.any(v[i] < v[j]):
            assert rank[i] < rank[j]


def test_pareto_mask_of_three_objectives_and_of_a_large_sample() -> None:
    rng = np.random.default_rng(1)
    v = rng.integers(0, 4, size=(80, 3)).astype(float)  # ties and duplicate rows
    brute = [not any(np.all(v[j] <= v[i]) and np.any(v[j] < v[i]) for j in range(len(v)))
             for i in range(len(v))]
    assert pareto_mask(v).tolist() == brute
    # the reference front of the search benchmark: 200,000 points in seconds, not n^2 memory
    big = rng.random((200_000, 2))
    mask = pareto_mask(big)
    order = np.argsort(big[:, 0])
    sweep = np.zeros(len(big), dtype=bool)
    sweep[order] = big[order, 1] < np.minimum.accumulate(
        np.concatenate([[np.inf], big[order, 1]]))[:-1]
    assert mask.tolist() == sweep.tolist()


def test_hypervolume_exact_cases() -> None:
    ref = np.array([4.0, 4.0])
    assert hypervolume(np.array([[1.0, 1.0]]), ref) == 9.0
    # two boxes overlapping in [2,4]x[2,4]: 2*3 + 3*2 - 2*2
    assert hypervolume(np.array([[2.0, 1.0], [1.0, 2.0]]), ref) == pytest.approx(8.0)
    # dominated points and points beyond the reference add nothing
    assert hypervolume(np.array([[2.0, 1.0], [1.0, 2.0], [3, 3], [5, 0]]), ref) == \
        pytest.approx(8.0)
    # 3-D: a unit-corner cube
    assert hypervolume(np.array([[0.0, 0.0, 0.0]]), np.ones(3) * 2) == pytest.approx(8.0)


def test_hypervolume_agrees_with_monte_carlo() -> None:
    rng = np.random.default_rng(1)
    pts = rng.random((15, 2))
    ref = np.array([1.0, 1.0])
    samples = rng.random((200_000, 2))
    covered = np.zeros(len(samples), dtype=bool)
    for p in pts:
        covered |= np.all(samples >= p, axis=1)
    assert hypervolume(pts, ref) == pytest.approx(covered.mean(), abs=0.005)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_counting_unit_cells(m: int) -> None:
    """Integer points: the dominated volume is the number of unit cells of the grid below
    the reference that some point dominates, counted one by one."""
    rng = np.random.default_rng(m)
    ref = np.full(m, 6.0)
    for _ in range(5):
        pts = rng.integers(0, 7, size=(int(rng.integers(1, 12)), m)).astype(float)
        cells = np.array(list(itertools.product(range(6), repeat=m)), dtype=float)
        covered = np.zeros(len(cells), dtype=bool)
        for p in pts:
            covered |= np.all(cells >= p, axis=1)
        assert hypervolume(pts, ref) == pytest.approx(float(covered.sum()))


# ---------------------------------------------------------------------- ledger
def _ledger_study(space_name: str = "tiny") -> tuple[Any, Any, Any]:
    from nas.search._study import Ledger

    cfg = SearchConfig.load(space=space_name, objectives=["macs"])
    study = optuna.create_study(direction="minimize")
    return Ledger(cfg=cfg, study=study), study, get_space(space_name)


def test_ledger_evaluates_an_architecture_once_even_while_in_flight() -> None:
    """A repeat of an architecture being evaluated (in a batch already sent) waits for that
    evaluation instead of being evaluated again; a later repeat is told the stored result."""
    ledger, study, sp = _ledger_study()
    dists = distributions(sp)
    arch = sp.smallest()
    for _ in range(3):
        study.enqueue_trial(params_from_arch(sp, arch))
    first, second = study.ask(dists), study.ask(dists)
    assert ledger.admit(first, arch) is True  # sent to a worker
    assert ledger.admit(second, arch) is False  # in flight: waits
    assert ledger.in_flight == 2
    assert ledger.counted == 0
    ledger.resolve(first, arch, {"macs": 1000, "params": 10, "eval_s": 0.1})
    assert ledger.in_flight == 0
    assert ledger.counted == 2
    assert (ledger.evaluated, ledger.duplicates) == (1, 1)
    third = study.ask(dists)
    assert ledger.admit(third, arch) is False  # known: told at once
    done = study.get_trials(deepcopy=False)
    assert [t.values for t in done] == [[1000.0]] * 3
    assert [t.user_attrs.get("duplicate_of") for t in done] == [None, 0, 0]


def test_ledger_requeues_a_dead_workers_trials_and_their_waiters() -> None:
    ledger, study, sp = _ledger_study()
    dists = distributions(sp)
    arch = sp.largest()
    for _ in range(2):
        study.enqueue_trial(params_from_arch(sp, arch))
    first, second = study.ask(dists), study.ask(dists)
    assert ledger.admit(first, arch)
    assert not ledger.admit(second, arch)
    ledger.requeue([(first, arch)], "worker died: boom")
    assert ledger.in_flight == 0
    assert ledger.counted == 0
    assert ledger.retried == 2
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    assert len(failed) == 2
    assert all(t.user_attrs["retried"] for t in failed)
    again = study.ask(dists)  # the enqueued retry
    assert arch_from_params(sp, again.params).hash == arch.hash
    assert ledger.admit(again, arch) is True


# ---------------------------------------------------------------------- evolution
def test_evolution_sampler_improves_on_random_at_equal_budget() -> None:
    """On a separable toy objective over ofa_mbv3's parameters, OFA-style evolution
    finds better values than random sampling with the same budget and seeds."""
    sp = get_space("ofa_mbv3")
    dists = distributions(sp)

    def run(sampler: optuna.samplers.BaseSampler) -> float:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for _ in range(150):
            t = study.ask(dists)
            arch = arch_from_params(sp, t.params)
            study.tell(t, float(sum(arch.ks) + 2 * sum(arch.e) + 3 * sum(arch.d)))
        return float(study.best_value)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evo = [run(EvolutionSampler(population=20, seed=s)) for s in range(3)]
    rnd = [run(optuna.samplers.RandomSampler(seed=s)) for s in range(3)]
    assert np.median(evo) > np.median(rnd), (evo, rnd)


def test_evolution_ranks_infeasible_after_feasible() -> None:
    sampler = EvolutionSampler(population=4, parent_ratio=0.5, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dist = {"x": optuna.distributions.IntDistribution(0, 100)}
    for x, c in [(90, 1.0), (80, 0.5), (10, -1.0), (20, 0.0)]:
        t = study.ask(dist)
        t.set_constraint("c", c)
        study.tell(t, float(x))
    parents = sampler._parents(study)
    assert [p.values[0] for p in parents] == [20.0, 10.0]


# ---------------------------------------------------------------------- evaluator
def test_evaluator_fails_one_subnet_not_the_batch(search_env, one_torch_thread) -> None:
    from nas.latency import load_predictor

    cfg = SearchConfig.load(space="tiny", objectives=["macs", "latency:cpu-1t"],
                            db=search_env["db"]).model_dump()
    pred = load_predictor("cpu-1t", "tiny", db=search_env["db"])
    ev = Evaluator(cfg, {"cpu-1t": pred})
    sp = get_space("tiny")
    good = [sp.smallest(), sp.largest()]
    out = ev.evaluate([good[0].to_dict(), {"ks": [3], "e": [2], "d": [1], "r": 16},
                       good[1].to_dict()])
    assert "error" in out[1]
    assert "ks" in out[1]["error"]
    assert [o["latency_ms"]["cpu-1t"] for o in (out[0], out[2])] == \
        pytest.approx(list(pred.predict(good)))
    assert [o["macs"] for o in (out[0], out[2])] == [sp.macs(a) for a in good]


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[2].glob(
    "experiments/search/*.yaml")), ids=lambda p: p.name)
def test_shipped_search_configs_are_valid(path: Path) -> None:
    cfg = SearchConfig.load(path)
    assert cfg.study
    assert cfg.devices
    assert cfg.objectives[0] == "accuracy"
