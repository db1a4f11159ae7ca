"""The search driver: one Optuna study, ask/tell, Ray actors evaluating batches.

The driver owns the study. It asks the sampler for trials, turns each trial's parameters into
a canonical architecture, and sends batches to :class:`~nas.search._worker.Evaluator` actors
(each loads the supernet, data and predictors once; :mod:`nas.search._pool`). Results come
back in any order and are told to the study with their constraints; the trial's user
attributes hold the architecture, MACs, params, accuracy proxy and every predicted latency.
On a journal storage, a batch's asks take one append per trial created and its tells one
append in all (:func:`~nas.search._results.deferred_writes`), not one locked append and
re-read of the file per parameter and attribute (some 55 a trial on ``cifar_mbv3``).

Faults:
- a subnet that fails to evaluate fails its trial (with the error) and counts toward the
  budget; the search goes on;
- an actor that dies fails the trials it held (marked ``retried``), its replacement starts,
  and the same parameters are enqueued so the trials run again elsewhere; they do not count;
- a driver that dies leaves its in-flight trials RUNNING; ``resume`` fails them (marked
  retried), enqueues their parameters again, and goes on from the stored trials: nothing
  completed is lost or evaluated again. The driver holds the study's lease
  (:mod:`nas.search._lease`) from the study's opening to its end, so a second driver is
  refused while it lives, and a resume takes over only once it died.

An architecture already evaluated in the study (the samplers do propose repeats) is told the
stored values at once, and one being evaluated waits for that evaluation, with
``duplicate_of`` pointing at the first trial; it counts toward the budget like any trial,
since the sampler spent it (:class:`~nas.search._study.Ledger`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.trial import Trial

from nas.errors import ConfigError, NASError
from nas.search._config import RaySearchConfig, SearchConfig, is_memory, memory_mib
from nas.search._lease import StudyLease
from nas.search._params import arch_from_params, distributions
from nas.search._pool import EvaluatorPool, cause, start_ray, stop_ray
from nas.search._results import (
    SearchResult,
    deferred_writes,
    open_storage,
    result_from_study,
)
from nas.search._study import Ledger, load_ledger, open_study
from nas.search._worker import error_line, peak_rss_mb
from nas.space import FamilySpace, get_space

__all__ = ["RaySearch", "check_config", "load_latency_predictors", "make_sampler",
           "run_search"]

#: trials and their architectures
Batch = list[tuple[Trial, Any]]


# ---------------------------------------------------------------------- set-up
def make_sampler(cfg: SearchConfig, n_objectives: int | None = None
                 ) -> optuna.samplers.BaseSampler:
    """The sampler of a search on Ray, seeded (constraints come from the trials themselves).

    Raises:
        ConfigError: several objectives for a single-objective sampler; a config of another
            engine.
    """
    return RaySearchConfig.of(cfg).optuna_sampler(n_objectives)


def load_latency_predictors(cfg: SearchConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The latency predictor of every device the search prices, and what to record about
    each (kind, stored id, held-out metrics).

    Raises:
        UnknownNameError: an unknown device (listing the known ones).
        NASError: no predictor stored yet (saying which command fits one).
    """
    from nas.db import LatencyDB
    from nas.devices import get_device
    from nas.latency import load_predictor

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
    """Fail fast, before Ray starts, on what would otherwise fail inside every worker (and,
    for a predictor search, on a search too large to keep in memory)."""
    from pathlib import Path

    from nas.search._engines import ENGINES, choose_engine

    space = get_space(cfg.space)
    engine = choose_engine(cfg)[0]
    ENGINES.get(engine).check(cfg.for_engine(engine))
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
        from nas.space import family_part

        # each family's supernet has its own checkpoint format: the family names its reader
        meta = family_part(space, "checkpoint_meta")(cfg.checkpoint)
        if meta.get("space") != space.name:
            raise ConfigError(f"checkpoint {cfg.checkpoint} is for space {meta.get('space')!r},"
                              f" not {space.name!r}: pass a checkpoint of {space.name}")


def check_feasible(cfg: SearchConfig, space: FamilySpace, predictors: dict[str, Any],
                   n_sample: int = 2000, resolutions: list[int] | None = None) -> None:
    """Refuse at once a constraint that no subnet can meet.

    MACs, params and memory are exact (their minimum is the smallest subnet; a memory budget
    below it is refused when the config is read, naming it). Latency is judged by
    the predictor over the smallest subnet at every resolution the search may pick
    (``resolutions``, default the space's) plus ``n_sample`` random subnets at those: when
    none is predicted within the budget, no search will find one.
    """
    if not cfg.constraints:
        return
    from nas.search._evolve import GenomeCodec

    codec = GenomeCodec(space, resolutions)
    archs = codec.decode(np.concatenate([codec.genome.smallest(),
                                         codec.random(n_sample, np.random.default_rng(0))]))
    costs = space.costs(archs)
    for key, bound in cfg.constraints.items():
        if key in ("macs", "params"):
            best = float(costs[key].min())
            unit = ""
        elif is_memory(key):
            best = float(memory_mib(space, archs, key).min())
            unit = " MiB"
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


# ---------------------------------------------------------------------- the search
class RaySearch:
    """One search on Ray (the ``ray`` engine's run), step by step (see :meth:`run`)."""

    def __init__(self, cfg: RaySearchConfig, *, resume: bool, progress: bool,
                 stop: threading.Event | None,
                 on_trial: Callable[[int, int], None] | None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.on_start = on_start
        self.resume = resume
        self.progress = progress
        self.stop = stop
        self.on_trial = on_trial
        self.predictors: dict[str, Any] = {}
        self.pool: EvaluatorPool | None = None
        #: Ray object ref -> (actor index, its batch)
        self.pending: dict[Any, tuple[int, Batch]] = {}
        self.idle: list[int] = []
        #: the study's lease, held from open() to the end of run()
        self.lease: StudyLease | None = None
        self._shown = 0
        self._advance: Callable[..., None] = lambda **_: None

    def run(self) -> SearchResult:
        """Open the study, start the workers, ask-evaluate-tell until the budget is spent
        (or ``stop`` is set), record the run; returns the stored result."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self.open()
            if self.on_start is not None:
                self.on_start()
            if self.ledger.counted < self.cfg.n_trials:
                self._run_on_ray()
            return result_from_study(self.study, self.cfg.storage_url)
        finally:
            if self.lease is not None:
                self.lease.release()

    def _run_on_ray(self) -> None:
        started = start_ray(self.cfg.address)
        try:
            self.start_workers()
            self.loop()
            self.record_run()
        finally:
            if self.pool is not None:
                self.pool.shutdown()
            if started:
                stop_ray()

    # ------------------------------------------------------------------ steps
    def open(self) -> None:
        """Check the configuration and load the predictors, then create or resume the study
        (a resumed study's stored configuration is checked once it is read)."""
        info = {} if self.resume else self._prepare(self.cfg)
        self.storage = open_storage(self.cfg.storage_url)
        self.study, stored, self.lease = open_study(self.cfg, self.storage, resume=self.resume,
                                                    predictor_info=info)
        if not isinstance(stored, RaySearchConfig):
            raise ConfigError(f"study {self.cfg.study_name!r} was run by engine "
                              f"{stored.engine!r}, not 'ray'; resume it with that engine")
        self.cfg = stored
        if self.resume:
            self._prepare(self.cfg)
        from nas.search._fast import search_resolutions

        self.space: FamilySpace = get_space(self.cfg.space)
        self.dists = distributions(self.space, search_resolutions(self.cfg, self.space))
        self.ledger: Ledger = load_ledger(self.cfg, self.study)

    def _prepare(self, cfg: SearchConfig) -> dict[str, Any]:
        from nas.search._fast import search_resolutions

        check_config(cfg)
        self.predictors, info = load_latency_predictors(cfg)
        space = get_space(cfg.space)
        check_feasible(cfg, space, self.predictors,
                       resolutions=search_resolutions(cfg, space))
        return info

    def start_workers(self) -> None:
        """Start the evaluator actors and wait until each is ready."""
        self.pool = EvaluatorPool(self.cfg, self.predictors)
        try:
            self.pool.start()
        except NASError:
            if not self.resume and not self.study.get_trials(deepcopy=False):
                # nothing ran: leave no empty study behind to block the corrected command
                optuna.delete_study(study_name=self.study.study_name, storage=self.storage)
            raise
        self.idle = list(range(self.cfg.workers))

    def loop(self) -> None:
        """Ask, evaluate and tell, with a progress bar, until the search is over."""
        from nas._term import progress_bar

        first = self.cfg.objective_list[0]
        with progress_bar(f"search {self.cfg.study_name}", self.cfg.n_trials,
                          enabled=self.progress,
                          fields={"best": "-", "feasible": self.ledger.feasible},
                          field_format=f"feasible {{task.fields[feasible]}}, best {first.name} "
                                       "{task.fields[best]}") as advance:
            for _ in range(self.ledger.counted):
                advance()
            self._advance, self._shown = advance, self.ledger.counted
            while self.step():
                pass

    def step(self) -> bool:
        """Give every idle worker a batch, then take one finished batch; False when the
        budget is spent (or ``stop`` is set) and nothing is in flight."""
        led, budget = self.ledger, self.cfg.n_trials
        if self.lease is not None:
            self.lease.check()  # taken over: tell nothing more
        stopping = self.stop is not None and self.stop.is_set()
        while self.idle and not stopping and led.counted + led.in_flight < budget:
            batch = self.ask(min(self.cfg.batch_size, budget - led.counted - led.in_flight))
            self.tick()
            if batch:
                idx = self.idle.pop()
                ref = self._pool().evaluate(idx, [a.to_dict() for _, a in batch])
                self.pending[ref] = (idx, batch)
            elif led.counted >= budget:
                break
        if not self.pending:
            return not (led.counted >= budget or stopping)
        self.collect()
        return True

    def ask(self, room: int) -> Batch:
        """Ask ``room`` trials; those whose architecture is new form the batch to evaluate
        (repeats are told at once or wait: :meth:`Ledger.admit`)."""
        batch: Batch = []
        # a trial's parameters are written with the next trial's creation, the last ones
        # when the block ends: on disk before the batch leaves
        with deferred_writes(self.storage):
            for _ in range(room):
                trial = self.study.ask(self.dists)
                arch = arch_from_params(self.space, trial.params)
                if self.ledger.admit(trial, arch):
                    batch.append((trial, arch))
        return batch

    def collect(self) -> None:
        """Wait for one batch and tell its results; a dead worker's trials run again."""
        import ray

        ready, _ = ray.wait(list(self.pending), num_returns=1)
        for ref in ready:
            idx, batch = self.pending.pop(ref)
            try:
                results = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError) as exc:
                self.ledger.requeue(batch, f"worker died: {error_line(exc)}")
                self._pool().replace(idx)
                self.idle.append(idx)
                continue
            except ray.exceptions.RayTaskError as exc:
                results = [{"error": cause(exc)}] * len(batch)
            self._pool().deaths_in_a_row = 0
            self.idle.append(idx)
            # the batch's results in one write (attributes, constraints, ends)
            with deferred_writes(self.storage):
                for (trial, arch), res in zip(batch, results, strict=True):
                    self.ledger.resolve(trial, arch, res)
            self.tick()

    def tick(self) -> None:
        """Advance the progress bar (and ``on_trial``) to the trials counted so far."""
        led, budget = self.ledger, self.cfg.n_trials
        while self._shown < min(led.counted, budget):
            self._shown += 1
            best = "-" if led.best is None else f"{led.best:.4g}"
            self._advance(best=best, feasible=led.feasible)
            if self.on_trial:
                self.on_trial(self._shown, budget)

    def record_run(self) -> None:
        """Store how the run went (workers, memory, counts) on the study."""
        led = self.ledger
        self.study.set_user_attr("last_run", {
            "workers": self._pool().stats(), "driver_peak_rss_mb": round(peak_rss_mb(), 1),
            "evaluated": led.evaluated, "duplicates": led.duplicates, "retried": led.retried,
        })

    def _pool(self) -> EvaluatorPool:
        if self.pool is None:  # pragma: no cover - start_workers runs first
            raise NASError("the evaluators are not started")
        return self.pool


def run_search(
    cfg: SearchConfig, *, resume: bool = False, progress: bool = True,
    stop: threading.Event | None = None,
    on_trial: Callable[[int, int], None] | None = None,
    on_start: Callable[[str, str], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search until its trial budget is spent; returns the stored result.

    The engine (one of :data:`~nas.search.ENGINES`) is the config's, or with ``engine:
    auto`` the one :func:`~nas.search.choose_engine` chooses: at predictor speed in this
    process when every objective and constraint is a predictor
    (:func:`~nas.search.run_predictor_search`), on Ray actors otherwise.

    Args:
        resume: continue the stored study ``cfg.study_name`` (see
            :func:`~nas.search._study.open_study`).
        progress: a progress bar with ETA on stderr.
        stop: when set, the driver stops asking, waits for the batches in flight, and
            returns what is stored (resume later to finish the budget).
        on_trial: called as ``on_trial(done, budget)`` after each counted trial.
        on_start: called as ``on_start(engine, why)`` once the configuration has passed its
            checks, before the search starts (e.g. to say which engine runs it).

    Raises:
        ConfigError: bad configuration, unknown device or proxy, a checkpoint of another
            space, an unreachable storage, a constraint no subnet can meet, a study name that
            exists (with other objectives, or without ``resume``).
    """
    from nas.search._engines import ENGINES, choose_engine

    engine, why = choose_engine(cfg)
    return ENGINES.get(engine).run(
        cfg.for_engine(engine), resume=resume, progress=progress, stop=stop,
        on_trial=on_trial, on_start=None if on_start is None else lambda: on_start(engine, why))
