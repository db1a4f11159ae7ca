"""Two workers never evaluate one subnet twice: not in a plain search, not after a driver
killed mid-search is resumed. The shipped tiny supernet trained on the digits, real Ray."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pytest

from nas._data import shipped_supernet
from nas.search import SearchConfig, run_search

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _config(make_config: Any, **kw: Any) -> dict[str, Any]:
    # evolution with 2 parents on the 800 subnets of tiny proposes many repeats, some of them
    # while the first proposal is still with the other worker
    return make_config(checkpoint=str(shipped_supernet()), data="digits", sampler="evolution",
                       population=4, workers=2, batch_size=6, **kw)


def _study(cfg: dict[str, Any]) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(cfg["storage"]))
    return optuna.load_study(study_name=cfg["study"], storage=storage)


def _evaluations(study: optuna.Study) -> Counter[str]:
    """How many times each architecture was evaluated: trials that ran an evaluation and
    were told its result (not repeats told a stored one, not a dead worker's retried ones,
    not those a killed driver left RUNNING, listed in the study's ``retried_trials``)."""
    orphans = set(study.user_attrs.get("retried_trials") or [])
    return Counter(
        t.user_attrs["arch_hash"] for t in study.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        and "arch_hash" in t.user_attrs and t.user_attrs.get("duplicate_of") is None
        and not t.user_attrs.get("retried") and t.number not in orphans)


def _twice(counts: Counter[str]) -> dict[str, int]:
    return {h[:10]: n for h, n in counts.items() if n > 1}


def test_two_workers_evaluate_each_subnet_once(local_ray, make_config) -> None:
    cfg = _config(make_config, n_trials=150, study="once")
    res = run_search(SearchConfig.model_validate(cfg), progress=False)
    assert len(res.budget_trials) == 150
    study = _study(cfg)
    counts = _evaluations(study)
    assert not _twice(counts), f"evaluated more than once: {_twice(counts)}"
    # Evolution proposes repeats (a child with no gene mutated is its parent: 0.9 ** 11, about
    # 0.31 of the mutations on tiny), so a search with none would prove nothing. Whether one
    # comes while its first proposal is still in flight depends on the workers' timing; that
    # case is held deterministically by test_search_parts.py's
    # test_ledger_evaluates_an_architecture_once_even_while_in_flight.
    repeats = [t for t in study.trials if t.user_attrs.get("duplicate_of") is not None]
    assert repeats, "no repeat of a subnet was proposed: the test proves nothing"
    pids = {t.user_attrs.get("worker_pid") for t in study.trials} - {None}
    assert len(pids) == 2


# A driver killed with two workers, then --resume: tests/cluster/test_two_nodes.py
# (test_a_driver_killed_with_two_workers_resumes) holds it on a real two-node cluster, and
# tests/search/test_search_ray.py on a local Ray.
