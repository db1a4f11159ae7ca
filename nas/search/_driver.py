"""The search driver: one Optuna study, ask/tell, Ray actors evaluating batches.

The driver owns the study. It asks the sampler for trials, turns each trial's parameters into
a canonical architecture, and sends batches to :class:`~nas.search._worker.Evaluator` actors
(each loads the supernet, data and predictors once). Results come back in any order and are
told to the study with their constraints; the trial's user attributes hold the architecture,
MACs, params, accuracy proxy and every predicted latency.

Faults:
- a subnet that fails to evaluate fails its trial (with the error) and counts toward the
  budget; the search goes on;
- an actor that dies fails the trials it held (marked ``retried``), its replacement starts,
  and the same parameters are enqueued so the trials run again elsewhere; they do not count;
- a driver that dies leaves its in-flight trials RUNNING; ``resume`` fails them (marked
  retried), enqueues their parameters again, and goes on from the stored trials: nothing
  completed is lost or evaluated again.

An architecture already evaluated in the study (the samplers do propose repeats) is told the
stored values at once, with ``duplicate_of`` pointing at the first trial; it counts toward
the budget like any trial, since the sampler spent it.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import Trial, TrialState

from nas.errors import ConfigError, NASError
from nas.search._config import SearchConfig
from nas.search._params import arch_from_params, distributions
from nas.search._results import (
    CONFIG_KEY,
    PREDICTORS_KEY,
    RETRIED_KEY,
    SearchResult,
    open_storage,
    result_from_study,
    storage_label,
)
from nas.search._worker import Evaluator, error_line, peak_rss_mb
from nas.space import Architecture, SearchSpace, get_space

__all__ = ["check_config", "load_latency_predictors", "make_sampler", "run_search"]

#: what a resumed search takes from the new configuration (the rest is the stored one)
RUN_FIELDS = ("n_trials", "workers", "batch_size", "worker_threads", "address")
#: stop when this many replacement actors in a row die before finishing any batch
MAX_STARTUP_DEATHS = 3


# ---------------------------------------------------------------------- set-up
def make_sampler(cfg: SearchConfig, n_objectives: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded (constraints come from the trials themselves)."""
    from optuna.samplers import GPSampler, NSGAIISampler, RandomSampler, TPESampler

    from nas.search._evolution import EvolutionSampler

    name = cfg.sampler
    if name == "tpe":
        return TPESampler(seed=cfg.seed, multivariate=True, constant_liar=cfg.workers > 1)
    if name == "nsga2":
        return NSGAIISampler(seed=cfg.seed, population_size=cfg.population)
    if name == "random":
        return RandomSampler(seed=cfg.seed)
    if name == "gp":
        return GPSampler(seed=cfg.seed)
    if name == "evolution":
        return EvolutionSampler(seed=cfg.seed, population=cfg.population)
    raise ConfigError(f"sampler {name!r} unknown")  # pragma: no cover - validated earlier


def load_latency_predictors(cfg: SearchConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The latency predictor of every device the search prices, and what to record about
    each (kind, stored id, held-out metrics).

    Raises:
        UnknownNameError: an unknown device (listing the known ones).
        NASError: no predictor stored yet (saying which command fits one).
    """
    from nas.db import LatencyDB
    from nas.latency import get_device, load_predictor

    preds: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if not cfg.devices:
        return preds, info
    db = LatencyDB(cfg.db)
    space = get_space(cfg.space)
    for dev in cfg.devices:
        name = get_device(dev).name
        est = load_predictor(name, space.name, kind=cfg.latency_kind, db=db)
        rec = db.load_predictor(name, space.name, est.kind)
        preds[dev] = est
        info[dev] = {"kind": est.kind, "id": getattr(rec, "id", None),
                     "metrics": dict(getattr(rec, "metrics", {}) or {}),
                     "n_train": int(getattr(est, "n_train_", 0))}
    return preds, info


def check_config(cfg: SearchConfig) -> None:
    """Fail fast, before Ray starts, on what would otherwise fail inside every worker."""
    from pathlib import Path

    space = get_space(cfg.space)
    needs_acc = "accuracy" in cfg.objectives
    if needs_acc:
        from nas.proxies import get_proxy

        proxy = get_proxy(cfg.proxy)
        if proxy.uses_weights() and not cfg.checkpoint:
            raise ConfigError(f"proxy {cfg.proxy!r} needs a trained supernet: set checkpoint "
                              "(--checkpoint)")
        if proxy.needs_data and not cfg.data:
            raise ConfigError(f"proxy {cfg.proxy!r} needs data: set data (--data)")
        if cfg.data and cfg.data != "digits" and not Path(cfg.data).exists():
            raise ConfigError(f"data {cfg.data} does not exist (relative paths are relative "
                              "to the working directory)")
    if cfg.checkpoint:
        from nas.supernet import read_checkpoint_meta

        meta = read_checkpoint_meta(cfg.checkpoint)
        if meta.get("space") != space.name:
            raise ConfigError(f"checkpoint {cfg.checkpoint} is for space {meta.get('space')!r},"
                              f" not {space.name!r}: pass a checkpoint of {space.name}")


def check_feasible(cfg: SearchConfig, space: SearchSpace, predictors: dict[str, Any],
                   n_sample: int = 2000) -> None:
    """Refuse at once a constraint that no subnet can meet.

    MACs and params are exact (their minimum is the smallest subnet). Latency is judged by
    the predictor over the smallest subnet at every resolution plus ``n_sample`` random
    subnets: when none is predicted within the budget, no search will find one.
    """
    if not cfg.constraints:
        return
    archs = [space.smallest(r) for r in space.resolutions]
    archs += space.sample_many(min(n_sample, space.size(True) - len(archs)), seed=0,
                               unique=False)
    costs = space.costs(archs)
    for key, bound in cfg.constraints.items():
        if key in ("macs", "params"):
            best = float(costs[key].min())
            unit = ""
        else:
            dev = key.split(":", 1)[1]
            best = float(np.min(predictors[dev].predict(archs)))
            unit = " ms"
        if best > bound:
            raise ConfigError(
                f"constraint {key} <= {bound:g}{unit} cannot be met: the best of the smallest "
                f"subnets and {n_sample} random ones is predicted at {best:.4g}{unit} "
                f"(space {space.name}); relax the bound"
            )


# ---------------------------------------------------------------------- study
def _metric(key: str, res: dict[str, Any]) -> float:
    if key.startswith("latency:"):
        return float(res["latency_ms"][key.split(":", 1)[1]])
    return float(res[key])


def open_study(cfg: SearchConfig, *, resume: bool, predictor_info: dict[str, Any]
               ) -> tuple[optuna.Study, SearchConfig]:
    """Create the study, or load it to resume; returns it and the configuration in force.

    When resuming, the stored configuration wins except for how the search runs
    (``n_trials``, ``workers``, ``batch_size``, ``worker_threads``, ``address``).
    """
    storage = open_storage(cfg.storage_url)
    name = cfg.study_name
    label = storage_label(cfg.storage_url)
    existing = None
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    if resume:
        if existing is None:
            raise ConfigError(f"no study {name!r} in {label} to resume; start it without "
                              "--resume")
        stored = existing.user_attrs.get(CONFIG_KEY)
        if stored is None:
            raise ConfigError(f"study {name!r} in {label} was not written by `nas search`")
        merged = SearchConfig.model_validate(
            {**stored, **{k: getattr(cfg, k) for k in RUN_FIELDS},
             "study": name, "storage": cfg.storage_url}
        )
        sampler = make_sampler(merged, len(merged.objectives))
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        study.set_user_attr(CONFIG_KEY, merged.model_dump())
        return study, merged
    if existing is not None:
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
    objs = cfg.objective_list
    study = optuna.create_study(
        study_name=name, storage=storage, directions=[o.direction for o in objs],
        sampler=make_sampler(cfg, len(objs)),
    )
    cfg = cfg.model_copy(update={"study": name, "storage": cfg.storage_url})
    study.set_user_attr(CONFIG_KEY, cfg.model_dump())
    study.set_user_attr(PREDICTORS_KEY, predictor_info)
    study.set_user_attr("objectives", [o.name for o in objs])
    with warnings.catch_warnings():  # experimental in Optuna, and harmless
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.name for o in objs])  # the dashboard's axis labels
    from nas import __version__

    study.set_user_attr("nas_version", __version__)
    return study, cfg


# ---------------------------------------------------------------------- Ray
def _ray_init(address: str | None) -> bool:
    """Start or join Ray; True when this call started it (and so should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    addr = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if addr:
            ray.init(address=addr, log_to_driver=False, logging_level=logging.ERROR)
        else:
            # "local": a new instance here, never a stale `ray start` cluster's address
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
    except ConnectionError as exc:
        raise ConfigError(f"cannot join the Ray cluster at {addr}: {error_line(exc)}") from None
    return True


@dataclass
class _Pool:
    """The evaluator actors: creation, replacement after a death, and their batches."""

    cfg: SearchConfig
    predictors: dict[str, Any]
    actors: list[Any] = field(default_factory=list)
    deaths_in_a_row: int = 0

    def __post_init__(self) -> None:
        import ray

        self._cls = ray.remote(Evaluator).options(
            num_cpus=self.cfg.worker_threads, max_restarts=0, max_task_retries=0,
        )
        self._config = self.cfg.model_dump()
        self._preds = ray.put(self.predictors)
        self.actors = [self._new() for _ in range(self.cfg.workers)]

    def _new(self) -> Any:
        return self._cls.remote(self._config, self._preds, self.cfg.worker_threads)

    def start(self) -> None:
        """Wait until every actor has loaded what it needs; one line if one cannot."""
        import ray

        try:
            ray.get([a.info.remote() for a in self.actors])
        except Exception as exc:
            raise NASError(f"the evaluators could not start: {_cause(exc)}") from None

    def replace(self, idx: int) -> None:
        import ray

        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > MAX_STARTUP_DEATHS * max(1, len(self.actors)):
            raise NASError(f"{self.deaths_in_a_row} evaluator actors died in a row without "
                           "finishing a batch; see the Ray logs (`ray logs`)")
        ray.kill(self.actors[idx], no_restart=True)
        self.actors[idx] = self._new()

    def stats(self) -> list[dict[str, Any]]:
        """Each live actor's pid, host and peak memory (dead ones are left out)."""
        import ray

        out = []
        for a in self.actors:
            try:
                out.append(ray.get(a.info.remote(), timeout=30))
            except Exception:  # Ray raises many types here
                continue
        return out

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # Ray raises many types here
                pass


def _cause(exc: BaseException) -> str:
    text = str(exc)
    for line in text.splitlines()[::-1]:
        line = line.strip()
        if line and ("Error" in line.split(":", 1)[0]) and not line.startswith("ray."):
            return line[:500]
    return error_line(exc)


# ---------------------------------------------------------------------- the loop
@dataclass
class _State:
    space: SearchSpace
    cfg: SearchConfig
    study: optuna.Study
    counted: int = 0
    #: arch hash -> (first trial number, result dict)
    known: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    #: arch hash -> trials waiting for an evaluation already in flight
    waiting: dict[str, list[Trial]] = field(default_factory=dict)
    evaluated: int = 0
    duplicates: int = 0
    retried: int = 0
    #: feasible completed trials, and the best feasible value of the first objective
    feasible: int = 0
    best: float | None = None

    def note(self, values: list[float], feasible: bool) -> None:
        if not feasible:
            return
        self.feasible += 1
        sign = 1.0 if self.cfg.objective_list[0].direction == "maximize" else -1.0
        if self.best is None or sign * values[0] > sign * self.best:
            self.best = values[0]


def _load_state(space: SearchSpace, cfg: SearchConfig, study: optuna.Study) -> _State:
    """Counters and known results from the stored trials; orphaned RUNNING trials (a driver
    that died) are failed, marked retried, and their parameters enqueued again."""
    st = _State(space=space, cfg=cfg, study=study)
    retried = list(study.user_attrs.get(RETRIED_KEY) or [])
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            retried.append(t.number)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            continue
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not (
                ua.get("retried") or t.number in retried)):
            st.counted += 1
        if t.state == TrialState.COMPLETE and t.values is not None:
            st.note(list(t.values), all(c <= 0 for c in t.constraints.values()))
        h = ua.get("arch_hash")
        dead = ua.get("retried") or t.number in retried
        if h and h not in st.known and ua.get("duplicate_of") is None and not dead and (
                t.state == TrialState.COMPLETE or ua.get("error")):
            res = ({"error": ua["error"]} if ua.get("error") else
                   {k: ua.get(k) for k in ("accuracy", "latency_ms", "macs", "params")})
            st.known[h] = (t.number, res)
    if len(retried) != len(study.user_attrs.get(RETRIED_KEY) or []):
        study.set_user_attr(RETRIED_KEY, retried)
    return st


def _finish(st: _State, trial: Trial, arch: Architecture, res: dict[str, Any],
            duplicate_of: int | None = None) -> None:
    """Record a result on the trial and tell the study."""
    trial.set_user_attr("arch", arch.to_dict())
    trial.set_user_attr("arch_hash", arch.hash)
    if duplicate_of is not None:
        trial.set_user_attr("duplicate_of", duplicate_of)
    st.counted += 1
    if "error" in res:
        trial.set_user_attr("error", res["error"])
        st.study.tell(trial, state=TrialState.FAIL)
        return
    violations = []
    for key, bound in st.cfg.constraints.items():
        violations.append((_metric(key, res) - bound) / bound)
        trial.set_constraint(key, violations[-1])
    for key in ("macs", "params", "accuracy", "latency_ms"):
        if res.get(key) is not None:
            trial.set_user_attr(key, res[key])
    if duplicate_of is None:
        trial.set_user_attr("eval_s", round(float(res.get("eval_s", 0.0)), 6))
        if "pid" in res:
            trial.set_user_attr("worker_pid", int(res["pid"]))
    values = [_metric(o, res) for o in st.cfg.objectives]
    st.study.tell(trial, values)
    st.note(values, all(v <= 0 for v in violations))


def run_search(
    cfg: SearchConfig, *, resume: bool = False, progress: bool = True,
    stop: threading.Event | None = None,
    on_trial: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search until its trial budget is spent; returns the stored result.

    Args:
        resume: continue the stored study ``cfg.study_name`` (see :func:`open_study`).
        progress: a progress bar with ETA on stderr.
        stop: when set, the driver stops asking, waits for the batches in flight, and
            returns what is stored (resume later to finish the budget).
        on_trial: called as ``on_trial(done, budget)`` after each counted trial.

    Raises:
        ConfigError: bad configuration, unknown device or proxy, a checkpoint of another
            space, an unreachable storage, a constraint no subnet can meet, a study name that
            exists (with other objectives, or without ``resume``).
    """
    import ray

    from nas._term import progress_bar

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(cfg.space)
    if not resume:  # a resumed study's stored configuration is checked below
        check_config(cfg)
        predictors, info = load_latency_predictors(cfg)
        check_feasible(cfg, space, predictors)
    else:
        info = {}
    study, cfg = open_study(cfg, resume=resume, predictor_info=info)
    if resume:
        space = get_space(cfg.space)
        check_config(cfg)
        predictors, _ = load_latency_predictors(cfg)
        check_feasible(cfg, space, predictors)
    dists = distributions(space)
    st = _load_state(space, cfg, study)
    budget = cfg.n_trials
    if st.counted >= budget:
        return result_from_study(study, cfg.storage_url)

    started = _ray_init(cfg.address)
    pool: _Pool | None = None
    try:
        pool = _Pool(cfg, predictors)
        try:
            pool.start()
        except NASError:
            if not resume and not study.get_trials(deepcopy=False):
                # nothing ran: leave no empty study behind to block the corrected command
                optuna.delete_study(study_name=study.study_name, storage=study._storage)
            raise
        pending: dict[Any, tuple[int, list[tuple[Trial, Architecture]]]] = {}
        idle = list(range(cfg.workers))
        first = cfg.objective_list[0]
        with progress_bar(f"search {cfg.study_name}", budget, enabled=progress,
                          fields={"best": "-", "feasible": st.feasible},
                          field_format=f"feasible {{task.fields[feasible]}}, best {first.name} "
                                       "{task.fields[best]}") as advance:
            for _ in range(st.counted):
                advance()
            last = st.counted

            def tick() -> None:
                nonlocal last
                while last < min(st.counted, budget):
                    last += 1
                    best = "-" if st.best is None else f"{st.best:.4g}"
                    advance(best=best, feasible=st.feasible)
                    if on_trial:
                        on_trial(last, budget)

            while True:
                stopping = stop is not None and stop.is_set()
                in_flight = sum(len(b) for _, b in pending.values()) + sum(
                    len(w) for w in st.waiting.values())
                while idle and not stopping and st.counted + in_flight < budget:
                    room = min(cfg.batch_size, budget - st.counted - in_flight)
                    batch: list[tuple[Trial, Architecture]] = []
                    for _ in range(room):
                        trial = study.ask(dists)
                        arch = arch_from_params(space, trial.params)
                        hit = st.known.get(arch.hash)
                        if hit is not None:
                            _finish(st, trial, arch, hit[1], duplicate_of=hit[0])
                            st.duplicates += 1
                        elif arch.hash in st.waiting or any(
                                a.hash == arch.hash for _, a in batch):
                            st.waiting.setdefault(arch.hash, []).append(trial)
                            in_flight += 1
                        else:
                            batch.append((trial, arch))
                            in_flight += 1
                    tick()
                    if batch:
                        idx = idle.pop()
                        ref = pool.actors[idx].evaluate.remote([a.to_dict() for _, a in batch])
                        pending[ref] = (idx, batch)
                    elif st.counted >= budget:
                        break
                if not pending:
                    if st.counted >= budget or stopping:
                        break
                    continue
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    idx, batch = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                            ray.exceptions.ObjectLostError) as exc:
                        _requeue(st, batch, f"worker died: {error_line(exc)}")
                        pool.replace(idx)
                        idle.append(idx)
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        results = [{"error": _cause(exc)}] * len(batch)
                    pool.deaths_in_a_row = 0
                    idle.append(idx)
                    for (trial, arch), res in zip(batch, results, strict=True):
                        _finish(st, trial, arch, res)
                        st.evaluated += 1
                        st.known.setdefault(arch.hash, (trial.number, res))
                        for dup in st.waiting.pop(arch.hash, []):
                            _finish(st, dup, arch, res, duplicate_of=trial.number)
                            st.duplicates += 1
                    tick()
        study.set_user_attr("last_run", {
            "workers": pool.stats(), "driver_peak_rss_mb": round(peak_rss_mb(), 1),
            "evaluated": st.evaluated, "duplicates": st.duplicates, "retried": st.retried,
        })
    finally:
        if pool is not None:
            pool.shutdown()
        if started:
            ray.shutdown()
    return result_from_study(study, cfg.storage_url)


def _requeue(st: _State, batch: list[tuple[Trial, Architecture]], why: str) -> None:
    """Fail the trials of a dead worker (not counted) and enqueue them to run again."""
    for trial, arch in batch:
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_hash", arch.hash)
        trial.set_user_attr("retried", True)
        trial.set_user_attr("error", why)
        st.study.tell(trial, state=TrialState.FAIL)
        st.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        st.retried += 1
        for dup in st.waiting.pop(arch.hash, []):
            dup.set_user_attr("retried", True)
            st.study.tell(dup, state=TrialState.FAIL)
            st.study.enqueue_trial(dup.params, user_attrs={"retry_of": dup.number})
            st.retried += 1
