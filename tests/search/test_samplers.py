"""The contract every registered sampler meets (as Optuna's shared sampler tests do).

Parametrized from :data:`nas.search.SAMPLERS` by :func:`nas.testing.parametrize_with_checks`,
as a plug-in package would: the shared plug-in contract and the samplers' own checks
(:mod:`nas.search._checks`); constraints and resuming a stored study are tested here. A new
strategy is tested by registering it. Each test runs the sampler on an Optuna study over the
search's own parameters of the ``tiny`` space (no Ray, no supernet), with synthetic
objectives computed from the architecture the parameters give.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas._plugin import NoOptions
from nas.errors import ConfigError
from nas.search import (
    SAMPLERS,
    RaySearchConfig,
    SearchConfig,
    SearchSampler,
    arch_from_params,
    distributions,
    make_sampler,
    open_storage,
)
from nas.search._study import open_study
from nas.space import Architecture, get_space
from nas.testing import check_plugin, parametrize_with_checks

N_TRIALS = 12  # past the random start-up of TPE (10) and GP (10), and 3 generations of 4
SPACE = get_space("tiny")
DISTS = distributions(SPACE)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _config(name: str, objectives: list[str], **kw: Any) -> RaySearchConfig:
    return RaySearchConfig(space="tiny", objectives=objectives, sampler=name, population=4,
                        **{"seed": 7, **kw})


def _values(arch: Architecture, n: int) -> list[float]:
    """Objectives that conflict: bigger kernels (maximised accuracy) against resolution."""
    return [float(sum(arch.ks) + sum(arch.e)), float(arch.r * sum(arch.d))][:n]


def _run(study: optuna.Study, n_trials: int, constrained: bool = False) -> None:
    n = len(study.directions)
    for _ in range(n_trials):
        trial = study.ask(DISTS)
        arch = arch_from_params(SPACE, trial.params)
        if constrained:  # feasible when the subnet is at most 3 layers deep
            trial.set_constraint("depth", float(sum(arch.d) - 3))
        study.tell(trial, _values(arch, n))


def _study(cfg: SearchConfig, storage: Any = None) -> optuna.Study:
    return optuna.create_study(directions=[o.direction for o in cfg.objective_list],
                               sampler=make_sampler(cfg), storage=storage)


def _objectives(name: str) -> list[list[str]]:
    multi = SAMPLERS.get(name).multi_objective
    return [["accuracy"], ["accuracy", "macs"]] if multi else [["accuracy"]]


NAMES = SAMPLERS.names()


def test_the_builtin_samplers_are_registered() -> None:
    assert {"tpe", "nsga2", "random", "gp", "evolution"} <= set(NAMES)
    for name in NAMES:
        cls = SAMPLERS.get(name)
        assert cls.name == name
        assert cls.description
        assert (cls.Options, cls.tags) == (NoOptions, frozenset())


@parametrize_with_checks(SAMPLERS)
def test_sampler_contract(plugin: Any, check: Any) -> None:
    """Built seeded, suggestions in the distributions, the same seed the same trials, one
    objective and several or a clear refusal (:mod:`nas.search._checks`)."""
    check(plugin)


@pytest.mark.parametrize("name", NAMES)
def test_constrained_trials_keep_the_sampler_working(name: str) -> None:
    study = _study(_config(name, _objectives(name)[-1]))
    _run(study, N_TRIALS + 4, constrained=True)  # 6 trials past the random start-up
    done = study.get_trials(deepcopy=False)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    feasible = [t for t in done[N_TRIALS - 2:] if all(c <= 0 for c in t.constraints.values())]
    assert feasible, "no feasible trial after the start-up: the sampler ignores half the space"


@pytest.mark.parametrize("name", NAMES)
def test_a_resumed_study_goes_on_sampling(name: str, tmp_path: Path) -> None:
    """The search's own create-then-resume path, on a journal file opened twice."""
    cfg = _config(name, _objectives(name)[-1], study="s",
                  storage=str(tmp_path / "s.journal"))
    study, _, lease = open_study(cfg, open_storage(cfg.storage_url), resume=False,
                                 predictor_info={})
    _run(study, N_TRIALS // 2)
    lease.release()  # the first driver ends
    again, merged, lease = open_study(cfg, open_storage(cfg.storage_url), resume=True,
                                      predictor_info={})
    lease.release()
    assert merged.sampler == name
    assert isinstance(again.sampler, type(make_sampler(cfg)))
    _run(again, N_TRIALS)
    trials = again.get_trials(deepcopy=False)
    assert len(trials) == N_TRIALS // 2 + N_TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_a_single_objective_sampler_is_refused_with_several_objectives() -> None:
    """The refusal itself, with a throwaway sampler registered for the test."""

    @SAMPLERS.register
    class OnlyOne(SearchSampler):
        name = "only-one"
        description = "test sampler"
        multi_objective = False

        @classmethod
        def make(cls, cfg: RaySearchConfig, n_objectives: int) -> optuna.samplers.BaseSampler:
            return optuna.samplers.RandomSampler(seed=cfg.seed)

    try:
        check_plugin(SAMPLERS, "only-one")  # the checks of a single-objective sampler pass
        assert isinstance(make_sampler(_config("only-one", ["macs"])),
                          optuna.samplers.RandomSampler)
        with pytest.raises(ConfigError) as err:
            SearchConfig.load(space="tiny", sampler="only-one", objectives=["accuracy", "macs"])
        msg = str(err.value)
        assert "\n" not in msg
        assert "handles one objective, not 2" in msg
        assert "tpe" in msg
        with pytest.raises(ConfigError, match="handles one objective"):
            make_sampler(_config("only-one", ["macs"]), 2)
    finally:
        SAMPLERS.unregister("only-one")
    assert "only-one" not in RaySearchConfig.model_json_schema()["properties"]["sampler"]["enum"]


def test_config_and_schema_list_the_registry() -> None:
    schema = RaySearchConfig.model_json_schema()["properties"]["sampler"]
    assert schema["enum"] == NAMES
    with pytest.raises(ConfigError, match=", ".join(NAMES)):
        SearchConfig.load(space="tiny", sampler="annealing")


def test_samplers_list_json(run_nas: Any) -> None:
    code, out, _ = run_nas(["samplers", "list", "--json"])
    assert code == 0, out
    rows = {r["name"]: r for r in json.loads(out)}
    assert list(rows) == NAMES
    assert rows["tpe"]["default"]
    assert rows["nsga2"]["multi_objective"]
    assert rows["random"]["tags"] == []


def test_the_evolution_s_search_space_is_the_completed_trials_intersection() -> None:
    """Kept up to date from the trials since the last call (not from every trial each time):
    after every tell, with failed and running trials about, the intersection of the completed
    trials' distributions, as ``optuna.search_space.intersection_search_space`` gives it."""
    from optuna.search_space import intersection_search_space
    from optuna.trial import TrialState

    cfg = _config("evolution", ["accuracy", "macs"])
    study = _study(cfg)
    sampler = study.sampler
    running = study.ask({"extra": optuna.distributions.FloatDistribution(0, 1)})
    for i in range(3 * N_TRIALS):
        dists = dict(DISTS) if i % 5 else {**DISTS, "extra": optuna.distributions
                                           .FloatDistribution(0, 1)}
        trial = study.ask(dists)
        if i % 7 == 3:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, _values(arch_from_params(SPACE, trial.params), 2))
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        assert sampler.infer_relative_search_space(study, running) == \
            intersection_search_space(done)
