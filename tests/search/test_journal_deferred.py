"""A journal whose trial writes are held back and appended together (``deferred_writes``, as
the Ray driver asks and tells) holds the same study as one written operation by operation:
read back by another process, and trial for trial what Optuna's own journal gives for the same
seed, with another writer on the file, another thread of the driver, and refused writes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from nas.search import open_storage
from nas.search._results import deferred_writes

DISTS = {
    "d": CategoricalDistribution([2, 3, 4]),
    "k": CategoricalDistribution([3, 5, 7]),
    "w": IntDistribution(1, 8),
    "x": FloatDistribution(0.0, 1.0),
}


def _sampler(name: str) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=3, n_startup_trials=4, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=3, population_size=4)
    return optuna.samplers.RandomSampler(seed=3)


def _search(storage: optuna.storages.BaseStorage, sampler: str, *, batch: int,
            n: int = 24, name: str = "s") -> optuna.Study:
    """What the driver does: ask a batch, then tell it (attributes, a constraint, values),
    each batch's asks and tells in one block; an error result fails a trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage,
                                directions=["minimize", "minimize"], sampler=_sampler(sampler))
    study.set_user_attr("config", {"n": n})
    while len(study.trials) < n:
        with deferred_writes(storage):
            trials = [study.ask(DISTS) for _ in range(min(batch, n - len(study.trials)))]
        with deferred_writes(storage):
            for t in trials:
                p = t.params
                t.set_user_attr("arch", {"d": p["d"], "k": [p["k"], p["k"]], "t": (1, 2)})
                t.set_user_attr("eval_s", 0.001 * t.number)
                if t.number % 7 == 3:
                    t.set_user_attr("error", "RuntimeError: boom")
                    study.tell(t, state=TrialState.FAIL)
                    continue
                t.set_constraint("macs", p["x"] - 0.5)
                study.tell(t, [p["w"] * p["x"], float(p["d"] * p["k"])])
    return study


def _view(storage: optuna.storages.BaseStorage, name: str = "s") -> list[tuple[Any, ...]]:
    """Everything a study holds per trial but its times."""
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state, t.params, t.distributions, t.values, t.user_attrs,
             t.system_attrs) for t in study.get_trials()] + [study.user_attrs]


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
@pytest.mark.parametrize("batch", [1, 8])
def test_held_writes_read_back_as_optuna_s_own_journal_writes_them(
        tmp_path: Path, sampler: str, batch: int) -> None:
    path = tmp_path / "held.journal"
    storage = open_storage(str(path))
    _search(storage, sampler, batch=batch)
    ours = _view(storage)
    # another process reading the file sees what the driver sees
    assert _view(open_storage(str(path), create=False)) == ours
    # and Optuna's journal, an operation per write, gives the same trials for the seed
    plain = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "plain.journal")))
    _search(plain, sampler, batch=batch)
    assert _view(plain) == ours
    assert len(ours) == 25
    assert ours[3][1] == TrialState.FAIL
    assert ours[0][5]["arch"]["t"] == [1, 2]  # the JSON round trip, as a replay gives it


def test_a_block_writes_once_per_trial_created_and_once_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "s.journal"
    storage = open_storage(str(path))
    study = optuna.create_study(study_name="s", storage=storage)
    appends: list[int] = []
    backend = storage._backend  # type: ignore[attr-defined]
    real = backend.append_lines
    backend.append_lines = lambda lines, **kw: appends.append(len(lines)) or real(lines, **kw)
    with deferred_writes(storage):
        trials = [study.ask(DISTS) for _ in range(3)]
    assert appends == [1, 5, 5, 4]  # a creation, then the parameters before the next one
    appends.clear()
    with deferred_writes(storage):
        for t in trials:
            t.set_user_attr("a", 1)
            study.tell(t, 1.0)
    assert appends == [6]
    assert [t.state for t in optuna.load_study(study_name="s", storage=open_storage(
        str(path), create=False)).trials] == [TrialState.COMPLETE] * 3


def test_another_writer_between_held_writes(tmp_path: Path) -> None:
    """A second driver (another study in the same file) writes while this one holds writes:
    each reads the other's, a fresh reader reads both, nothing is applied twice."""
    path = str(tmp_path / "shared.journal")
    one, two = open_storage(path), open_storage(path)
    s1 = optuna.create_study(study_name="one", storage=one,
                             sampler=optuna.samplers.RandomSampler(seed=0))
    s2 = optuna.create_study(study_name="two", storage=two,
                             sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4):
        with deferred_writes(one):
            t1 = s1.ask(DISTS)
            t2 = s2.ask(DISTS)  # the other writer, between this one's parameters and flush
            s2.tell(t2, 2.0)
            t1.set_user_attr("a", [1])
        with deferred_writes(one):
            s1.tell(t1, 1.0)
            with deferred_writes(two):
                t2 = s2.ask(DISTS)
                s2.tell(t2, 3.0)
    fresh = open_storage(path, create=False)
    for name in ("one", "two"):
        assert _view(one, name) == _view(two, name) == _view(fresh, name)
    assert len(_view(fresh, "one")) == 5  # 4 trials and the study's attributes
    assert len(_view(fresh, "two")) == 9


def test_another_thread_writes_through_a_block(tmp_path: Path) -> None:
    """The lease's heartbeat thread writes study attributes while the driver holds trial
    writes: its write goes after them, and the file reads back the same."""
    path = str(tmp_path / "s.journal")
    storage = open_storage(path)
    study = optuna.create_study(study_name="s", storage=storage)
    with deferred_writes(storage):
        trial = study.ask(DISTS)
        beat = threading.Thread(target=lambda: study.set_user_attr("beat", 1))
        beat.start()
        beat.join()
        trial.set_user_attr("after", True)
        study.tell(trial, 0.5)
    assert _view(open_storage(path, create=False)) == _view(storage)
    assert _view(storage)[-1] == {"beat": 1}


def test_a_write_optuna_refuses_is_refused_at_the_call(tmp_path: Path) -> None:
    path = str(tmp_path / "s.journal")
    storage = open_storage(path)
    study = optuna.create_study(study_name="s", storage=storage)
    with deferred_writes(storage):
        trial = study.ask(DISTS)
        with pytest.raises(TypeError):
            trial.set_user_attr("bad", object())  # not JSON
        study.tell(trial, 1.0)
        with pytest.raises(RuntimeError, match="finished"):  # UpdateFinishedTrialError
            trial.set_user_attr("late", 1)
        with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):
            study.tell(trial, 2.0)
    assert _view(open_storage(path, create=False)) == _view(storage)
    assert _view(storage)[0][4] == [1.0]
    assert "late" not in _view(storage)[0][5]
