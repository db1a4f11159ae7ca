"""The study of a search: creating or resuming it, and what the driver knows about its trials.

:func:`open_study` creates the Optuna study (or loads it to resume), takes its lease (one
driver per study: :mod:`nas.search._lease`) and records the configuration on it.
:class:`Ledger` is the driver's bookkeeping: trials counted toward the budget, architectures
already evaluated or being evaluated (a repeat is told the stored result instead of being
evaluated again), and the best feasible value for the progress bar.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import Trial, TrialState

from nas._config import validate
from nas._io import mask_url
from nas.errors import ConfigError
from nas.search._config import SearchConfig, is_memory
from nas.search._lease import StudyLease, acquire_lease
from nas.search._results import CONFIG_KEY, PREDICTORS_KEY, RETRIED_KEY

__all__ = ["Ledger", "load_ledger", "open_study"]


def open_study(cfg: SearchConfig, storage: optuna.storages.BaseStorage, *, resume: bool,
               predictor_info: dict[str, Any]) -> tuple[optuna.Study, SearchConfig, StudyLease]:
    """Create the study in ``storage``, or load it to resume, and take its lease; returns
    the study, the configuration in force and the lease (give it back with
    :meth:`~nas.search._lease.StudyLease.release` when the search ends).

    When resuming, the stored configuration wins except for how the search runs (its
    ``run_fields``: ``n_trials``; on Ray also ``workers``, ``batch_size``,
    ``worker_threads``, ``address``). Nothing is written before the lease is taken: a
    second driver of a running study is refused with the study as it was.

    Raises:
        ConfigError: as :func:`~nas.search.run_search`; another search drives the study
            (:func:`~nas.search._lease.acquire_lease`).
    """
    name = cfg.study_name
    existing = None
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    if resume:
        merged = _stored_config(cfg, existing)
        lease = acquire_lease(storage, name, cfg.storage_url)
        try:
            study = optuna.load_study(study_name=name, storage=storage,
                                      sampler=merged.optuna_sampler(len(merged.objectives)))
            study.set_user_attr(CONFIG_KEY, merged.model_dump())
        except BaseException:
            lease.release()
            raise
        return study, merged, lease
    if existing is not None:
        _refuse_existing(cfg, existing)
    objs = cfg.objective_list
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=[o.direction for o in objs],
            sampler=cfg.optuna_sampler(len(objs)),
        )
    except optuna.exceptions.DuplicatedStudyError:
        # another driver created it between the check above and here: one driver per study
        raise ConfigError(f"study {name!r} was just created in {mask_url(cfg.storage_url)} "
                          "by another search; one search drives a study: choose another "
                          "--study, or --resume it once that search has ended") from None
    lease = acquire_lease(storage, name, cfg.storage_url)
    try:
        cfg = _record_config(cfg, study, predictor_info)
    except BaseException:
        lease.release()
        raise
    return study, cfg, lease


def _record_config(cfg: SearchConfig, study: optuna.Study,
                   predictor_info: dict[str, Any]) -> SearchConfig:
    """Store the configuration, predictors and objectives of a new study on it."""
    objs = cfg.objective_list
    cfg = cfg.model_copy(update={"study": cfg.study_name, "storage": cfg.storage_url})
    study.set_user_attr(CONFIG_KEY, cfg.model_dump())
    study.set_user_attr(PREDICTORS_KEY, predictor_info)
    study.set_user_attr("objectives", [o.name for o in objs])
    with warnings.catch_warnings():  # experimental in Optuna, and harmless
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.name for o in objs])  # the dashboard's axis labels
    from nas import __version__

    study.set_user_attr("nas_version", __version__)
    return cfg


def _stored_config(cfg: SearchConfig, existing: optuna.Study | None) -> SearchConfig:
    """The configuration of the study to resume: the stored one, with ``cfg``'s run
    settings (read only: nothing is written here)."""
    name, label = cfg.study_name, mask_url(cfg.storage_url)
    if existing is None:
        raise ConfigError(f"no study {name!r} in {label} to resume; start it without "
                          "--resume")
    stored = existing.user_attrs.get(CONFIG_KEY)
    if stored is None:
        raise ConfigError(f"study {name!r} in {label} was not written by `nas search`")
    return validate(SearchConfig, {**stored, **cfg.run_settings(),
                                   "study": name, "storage": cfg.storage_url},
                    where=f"stored config of study {name!r}")


def _refuse_existing(cfg: SearchConfig, existing: optuna.Study) -> None:
    name, label = cfg.study_name, mask_url(cfg.storage_url)
    stored = existing.user_attrs.get(CONFIG_KEY) or {}
    if stored.get("objectives") != cfg.objectives:
        raise ConfigError(
            f"study {name!r} exists in {label} with other objectives "
            f"({stored.get('objectives') or [d.name.lower() for d in existing.directions]}, "
            f"not {cfg.objectives}); choose another --study"
        )
    n = len(existing.get_trials(deepcopy=False))
    raise ConfigError(f"study {name!r} exists in {label} ({n} trials); continue it with "
                      "--resume, or choose another --study")


try:  # Study.tell is this and a deep copy of the trial (its return value)
    from optuna.study._tell import _tell_with_warning
except ImportError:  # pragma: no cover - an Optuna without it: Study.tell
    _tell_with_warning = None  # type: ignore[assignment]


def _tell(study: optuna.Study, trial: Trial, values: list[float] | None = None, *,
          state: TrialState | None = None) -> None:
    """``study.tell(trial, values, state=state)``, less the deep copy of the finished trial
    that Study.tell returns and the driver never reads (a third of a millisecond a trial for
    46 parameters)."""
    if _tell_with_warning is None:  # pragma: no cover
        study.tell(trial, values, state=state)
    else:
        _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state)


def _metric(key: str, res: dict[str, Any]) -> float:
    if key.startswith("latency:"):
        return float(res["latency_ms"][key.split(":", 1)[1]])
    if is_memory(key):
        return float(res["memory_mib"][key])
    return float(res[key])


@dataclass
class Ledger:
    """What the driver knows about the study's trials, and how it tells results.

    An architecture is evaluated once per study: a trial that proposes one already evaluated
    is told the stored result at once, and one that proposes an architecture being evaluated
    (in a batch sent or being filled) waits for that evaluation. Either way it is marked
    ``duplicate_of`` the evaluated trial and counts toward the budget, since the sampler spent
    it.
    """

    cfg: SearchConfig
    study: optuna.Study
    counted: int = 0
    #: arch hash -> (first trial number, result dict)
    known: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    #: arch hashes being evaluated (one trial each)
    evaluating: set[str] = field(default_factory=set)
    #: arch hash -> trials waiting for its evaluation
    waiting: dict[str, list[Trial]] = field(default_factory=dict)
    evaluated: int = 0
    duplicates: int = 0
    retried: int = 0
    #: feasible completed trials, and the best feasible value of the first objective
    feasible: int = 0
    best: float | None = None

    @property
    def in_flight(self) -> int:
        """Trials asked and not yet told: being evaluated, or waiting for an evaluation."""
        return len(self.evaluating) + sum(len(w) for w in self.waiting.values())

    def note(self, values: list[float], feasible: bool) -> None:
        if not feasible:
            return
        self.feasible += 1
        sign = 1.0 if self.cfg.objective_list[0].direction == "maximize" else -1.0
        if self.best is None or sign * values[0] > sign * self.best:
            self.best = values[0]

    # ------------------------------------------------------------------ asking
    def admit(self, trial: Trial, arch: Any) -> bool:
        """True when ``arch`` must be evaluated for ``trial`` (it is then being evaluated);
        False when the trial was told a stored result or waits for an evaluation in flight."""
        hit = self.known.get(arch.hash)
        if hit is not None:
            self.tell(trial, arch, hit[1], duplicate_of=hit[0])
            self.duplicates += 1
            return False
        if arch.hash in self.evaluating:
            self.waiting.setdefault(arch.hash, []).append(trial)
            return False
        self.evaluating.add(arch.hash)
        return True

    # ------------------------------------------------------------------ telling
    def resolve(self, trial: Trial, arch: Any, res: dict[str, Any]) -> None:
        """Tell an evaluated trial its result, and every trial waiting for it."""
        self.tell(trial, arch, res)
        self.evaluated += 1
        self.evaluating.discard(arch.hash)
        self.known.setdefault(arch.hash, (trial.number, res))
        for dup in self.waiting.pop(arch.hash, []):
            self.tell(dup, arch, res, duplicate_of=trial.number)
            self.duplicates += 1

    def tell(self, trial: Trial, arch: Any, res: dict[str, Any],
             duplicate_of: int | None = None) -> None:
        """Record a result on the trial and tell the study."""
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_hash", arch.hash)
        if duplicate_of is not None:
            trial.set_user_attr("duplicate_of", duplicate_of)
        self.counted += 1
        if "error" in res:
            trial.set_user_attr("error", res["error"])
            _tell(self.study, trial, state=TrialState.FAIL)
            return
        violations = []
        for key, bound in self.cfg.constraints.items():
            violations.append((_metric(key, res) - bound) / bound)
            trial.set_constraint(key, violations[-1])
        for key in ("macs", "params", "accuracy", "latency_ms", "memory_mib"):
            if res.get(key) is not None:
                trial.set_user_attr(key, res[key])
        if duplicate_of is None:
            trial.set_user_attr("eval_s", round(float(res.get("eval_s", 0.0)), 6))
            if "pid" in res:
                trial.set_user_attr("worker_pid", int(res["pid"]))
        values = [_metric(o, res) for o in self.cfg.objectives]
        _tell(self.study, trial, values)
        self.note(values, all(v <= 0 for v in violations))

    def requeue(self, batch: list[tuple[Trial, Any]], why: str) -> None:
        """Fail the trials of a dead worker (not counted) and enqueue them to run again,
        with the trials waiting for them."""
        for trial, arch in batch:
            trial.set_user_attr("arch", arch.to_dict())
            trial.set_user_attr("arch_hash", arch.hash)
            trial.set_user_attr("error", why)
            self._retry(trial)
            self.evaluating.discard(arch.hash)
            for dup in self.waiting.pop(arch.hash, []):
                self._retry(dup)

    def _retry(self, trial: Trial) -> None:
        trial.set_user_attr("retried", True)
        _tell(self.study, trial, state=TrialState.FAIL)
        self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        self.retried += 1


def load_ledger(cfg: SearchConfig, study: optuna.Study) -> Ledger:
    """Counters and known results from the stored trials; orphaned RUNNING trials (a driver
    that died) are failed, marked retried, and their parameters enqueued again."""
    led = Ledger(cfg=cfg, study=study)
    retried = list(study.user_attrs.get(RETRIED_KEY) or [])
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            retried.append(t.number)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            continue
        dead = ua.get("retried") or t.number in retried
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not dead):
            led.counted += 1
        if t.state == TrialState.COMPLETE and t.values is not None:
            led.note(list(t.values), all(c <= 0 for c in t.constraints.values()))
        h = ua.get("arch_hash")
        if h and h not in led.known and ua.get("duplicate_of") is None and not dead and (
                t.state == TrialState.COMPLETE or ua.get("error")):
            res = ({"error": ua["error"]} if ua.get("error") else
                   {k: ua.get(k) for k in ("accuracy", "latency_ms", "macs", "params",
                                           "memory_mib")})
            led.known[h] = (t.number, res)
    if len(retried) != len(study.user_attrs.get(RETRIED_KEY) or []):
        study.set_user_attr(RETRIED_KEY, retried)
    return led
