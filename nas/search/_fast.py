"""Searches at predictor speed: whole populations scored in one call, in this process.

When every objective and constraint of a search is a predictor (an accuracy predictor such
as ``ofa-imagenet``, latency predictors, MACs, params), a subnet costs microseconds to score
and a Ray round trip per trial (11 to 25 ms) would be nearly all of the search. The
predictor engine instead evolves genomes with vectorised NSGA-II
(:mod:`nas.search._evolve`), scoring each generation with one call per predictor, and
stores the result as a plain Optuna study: the feasible front and a bounded sample of what
was scored (``n_trials`` trials in all, the front always whole), in the order they were
scored, with the same trial attributes as a search on Ray. ``nas results``, ``nas report``,
``nas export --study`` and optuna-dashboard read it as any other study.

:func:`specialize` is the same search without storage, for answers in well under a second
(``POST /specialize``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from nas.errors import ConfigError, NASError
from nas.search._config import PredictorSearchConfig, SearchConfig, is_memory, memory_mib
from nas.search._evolve import Evolution, EvolutionResult, GenomeCodec, nondominated_ranks
from nas.search._params import distributions, params_from_arch
from nas.search._results import SearchResult, open_storage, result_from_study
from nas.space import FamilySpace, get_space

__all__ = ["MAX_SCORED", "PREDICTOR_POPULATION", "Scorer", "SearchStopped", "Specialization",
           "check_effort",
           "needs_model", "run_predictor_search", "search_resolutions", "specialize"]

#: the predictor engine's population when the config sets none (Once-for-All's)
PREDICTOR_POPULATION = 100
#: the key of the study attribute that says how a predictor search ran
ENGINE_KEY = "engine"


# ---------------------------------------------------------------------- which engine
def needs_model(cfg: SearchConfig) -> str | None:
    """Why the search needs a model (the predictor engine cannot run it), or None when
    predictors score everything it asks for."""
    if "accuracy" not in cfg.objectives:
        return None
    from nas.proxies import get_proxy

    proxy = get_proxy(cfg.proxy)
    if proxy.array_scorer(get_space(cfg.space)) is None:
        return f"proxy {cfg.proxy!r} scores subnets with a model"
    return None


#: subnets one predictor search may score (population x generations): its archive keeps
#: every one (about 100 MB at this size), and it runs for about a minute here
MAX_SCORED = 2_000_000


def check_effort(cfg: PredictorSearchConfig) -> None:
    """Refuse a predictor search larger than :data:`MAX_SCORED` subnets, in one line.

    Raises:
        ConfigError: population x generations above the bound.
    """
    pop = cfg.population or PREDICTOR_POPULATION
    if pop * cfg.generations > MAX_SCORED:
        raise ConfigError(f"population x generations = {pop} x {cfg.generations} = "
                          f"{pop * cfg.generations:,} subnets: the predictor engine scores at "
                          f"most {MAX_SCORED:,} a search (lower either)")


def search_resolutions(cfg: SearchConfig, space: FamilySpace) -> list[int]:
    """The resolutions a search may pick: the space's grid, narrowed to those every priced
    device declares (``resolutions`` of its profile), or with ``interpolate`` to the
    space's resolutions within each such device's range; none for a space whose
    architectures have no resolution (:attr:`~nas.space.FamilySpace.resolutions`).

    Raises:
        ConfigError: no resolution is left.
    """
    from nas.devices import get_device

    res = list(space.resolutions)
    if not res:
        return res
    for dev in cfg.devices:
        allowed = get_device(dev).resolutions
        if not allowed:
            continue
        if cfg.interpolate:
            res = [r for r in res if min(allowed) <= r <= max(allowed)]
        else:
            res = [r for r in res if r in allowed]
        if not res:
            how = (f"within {min(allowed)}..{max(allowed)}" if cfg.interpolate
                   else f"among {sorted(allowed)}")
            raise ConfigError(f"devices {', '.join(cfg.devices)}: no resolution of space "
                              f"{space.name} is {how} (device {dev} prices only those)")
    return res


# ---------------------------------------------------------------------- scoring
@dataclass
class Scorer:
    """Every metric of a search for batches of architectures, vectorised.

    Attributes:
        accuracy: the proxy's array scorer (None without an accuracy objective).
        latency: the latency predictor per device.
    """

    cfg: PredictorSearchConfig
    space: FamilySpace
    accuracy: Callable[[Any], np.ndarray] | None
    latency: dict[str, Any]
    signs: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.signs = np.array([-1.0 if o.direction == "maximize" else 1.0
                               for o in self.cfg.objective_list])
        self.bounds = [(k, float(b)) for k, b in self.cfg.constraints.items()]
        keys = [*self.cfg.objectives, *self.cfg.constraints]
        self.need_costs = any(k in ("macs", "params") for k in keys)
        #: the memory keys the search uses (``memory``, ``memory:<C>``), exact, in MiB
        self.memory = list(dict.fromkeys(k for k in keys if is_memory(k)))

    @classmethod
    def build(cls, cfg: PredictorSearchConfig, predictors: Mapping[str, Any]) -> Scorer:
        space = get_space(cfg.space)
        acc = None
        if "accuracy" in cfg.objectives:
            from nas.proxies import get_proxy

            acc = get_proxy(cfg.proxy).array_scorer(space)
        lat = dict(predictors)
        if cfg.interpolate:
            for est in lat.values():
                if "interpolate" in est.get_params(deep=False):
                    est.set_params(interpolate=True)
        return cls(cfg=cfg, space=space, accuracy=acc, latency=lat)

    def metrics(self, a: Any) -> dict[str, np.ndarray]:
        """``accuracy``, ``latency:<device>``, ``macs``, ``params``, ``memory[:<C>]`` (MiB)
        (those the search uses), of a batch in the family's batch form
        (:meth:`~nas.space.FamilySpace.to_arrays`)."""
        out: dict[str, np.ndarray] = {}
        if self.accuracy is not None:
            out["accuracy"] = np.asarray(self.accuracy(a), np.float64)
        for dev, est in self.latency.items():
            out[f"latency:{dev}"] = np.asarray(est.predict(a), np.float64)
        if self.need_costs:
            costs = self.space.costs(a)
            out["macs"] = costs["macs"].astype(np.float64)
            out["params"] = costs["params"].astype(np.float64)
        for key in self.memory:
            out[key] = memory_mib(self.space, a, key)
        return out

    def objectives_and_violation(self, m: Mapping[str, np.ndarray]
                                 ) -> tuple[np.ndarray, np.ndarray]:
        """Objectives to minimise ``(n, k)`` and total relative violation ``(n,)``."""
        F = np.column_stack([m[k] for k in self.cfg.objectives]) * self.signs
        V = np.zeros(len(F))
        for key, bound in self.bounds:
            V += np.maximum(0.0, (m[key] - bound) / bound)
        if not np.all(np.isfinite(F)):
            bad = [k for k in self.cfg.objectives if not np.all(np.isfinite(m[k]))]
            raise ConfigError(f"the predictor of {bad[0]} gave a non-finite value")
        return F, V


def _evolve(cfg: PredictorSearchConfig, scorer: Scorer, codec: GenomeCodec, *, progress: bool,
            stop: threading.Event | None = None,
            on_trial: Callable[[int], None] | None = None) -> tuple[EvolutionResult, float]:
    """Run the evolution; returns it and its wall time in seconds."""
    from nas._term import progress_bar
    from nas.measure import one_torch_thread

    def evaluate(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return scorer.objectives_and_violation(scorer.metrics(codec.decode(X)))

    evo = Evolution(codec, evaluate, population=cfg.population or PREDICTOR_POPULATION,
                    seed=cfg.seed, initial=codec.extremes())
    first = cfg.objective_list[0]
    t0 = time.perf_counter()
    label = f"search {cfg.study_name} (predictor engine)"
    with one_torch_thread(only_if_loaded=True), progress_bar(
            label, cfg.generations, enabled=progress, fields={"best": "-"},
            field_format=f"best {first.name} {{task.fields[best]}}") as advance:
        def on_generation(g: int, F: np.ndarray, V: np.ndarray) -> None:
            if stop is not None and stop.is_set():
                raise _Stopped
            if on_trial is not None:
                on_trial(g)
            if progress:
                ok = V <= 0
                advance(best=f"{scorer.signs[0] * F[ok, 0].min():.4g}" if ok.any() else "-")

        try:
            res = evo.run(cfg.generations, on_generation)
        except _Stopped:
            res = evo.result()
    return res, time.perf_counter() - t0


class _Stopped(Exception):
    """Raised inside the evolution when ``stop`` is set."""


class SearchStopped(NASError):
    """:func:`specialize` was stopped (its ``stop`` set) before it finished."""


# ---------------------------------------------------------------------- storing
def _stored_indices(res: EvolutionResult, n_trials: int, seed: int) -> np.ndarray:
    """The front, then a uniform sample of the rest, up to ``n_trials`` in all (the front
    always whole), in the order they were scored."""
    front = res.front()
    rest = np.setdiff1d(np.arange(res.n_scored), front)
    room = max(0, n_trials - len(front))
    sample = np.random.default_rng(seed).choice(rest, size=min(room, len(rest)),
                                                replace=False)
    return np.sort(np.concatenate([front, sample]).astype(np.int64))


def _trials(cfg: PredictorSearchConfig, scorer: Scorer, codec: GenomeCodec, res: EvolutionResult,
            idx: np.ndarray) -> list[optuna.trial.FrozenTrial]:
    """The stored subnets as completed Optuna trials, with the attributes of a Ray search."""
    space = scorer.space
    a = codec.decode(res.X[idx])
    m = scorer.metrics(a)
    dists = distributions(space, codec.resolutions.tolist())
    out = []
    for row, (i, (arch, item)) in enumerate(zip(idx.tolist(), _items(scorer, a, m),
                                                strict=True)):
        cons = {k: (float(m[k][row]) - b) / b for k, b in scorer.bounds}
        out.append(optuna.trial.create_trial(
            params=params_from_arch(space, arch), distributions=dists,
            values=[float(m[k][row]) for k in cfg.objectives],
            user_attrs={**item, "scored_index": int(i)}, constraints=cons or None))
    return out


# ---------------------------------------------------------------------- the two entry points
def _prepare(cfg: PredictorSearchConfig) -> tuple[Scorer, GenomeCodec, dict[str, Any]]:
    """Check ``cfg``, load its predictors, and refuse a constraint no subnet can meet."""
    from nas.search._driver import check_config, check_feasible, load_latency_predictors

    check_config(cfg)
    check_effort(cfg)
    space = get_space(cfg.space)
    resolutions = search_resolutions(cfg, space)
    predictors, info = load_latency_predictors(cfg)
    scorer = Scorer.build(cfg, predictors)
    check_feasible(cfg, space, scorer.latency, resolutions=resolutions)
    return scorer, GenomeCodec(space, resolutions), info


def run_predictor_search(cfg: SearchConfig, *, resume: bool = False, progress: bool = True,
                         stop: threading.Event | None = None,
                         on_trial: Callable[[int, int], None] | None = None,
                         on_start: Callable[[], None] | None = None) -> SearchResult:
    """Run a search whose every objective is a predictor in this process, and store it.

    ``on_trial(done, total)`` is called after each generation (``done`` generations of
    ``total``). The search runs in one go, its trials stored at the end, then the record of
    how it ran (:data:`ENGINE_KEY`). With ``resume``, a study that has that record is
    returned as it is (there is nothing to continue); one whose driver died before it (the
    study left empty, or with part of its trials stored) is searched again from its seed, and
    only the subnets not stored yet are added: no subnet is stored twice.

    Raises:
        ConfigError: as :func:`~nas.search.run_search`.
    """
    from nas.search._study import open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pcfg = PredictorSearchConfig.of(cfg)
    info: dict[str, Any] = {}
    prepared = None if resume else _prepare(pcfg)
    if prepared is not None:
        info = prepared[2]
    storage = open_storage(pcfg.storage_url)
    study, stored, lease = open_study(pcfg, storage, resume=resume, predictor_info=info)
    try:
        if not isinstance(stored, PredictorSearchConfig):
            raise ConfigError(f"study {pcfg.study_name!r} was run by engine {stored.engine!r}, "
                              "not 'predictor'; resume it with that engine")
        if not (resume and ENGINE_KEY in study.user_attrs):
            _search_and_store(stored, study, prepared or _prepare(stored), lease.check,
                              progress=progress, stop=stop, on_trial=on_trial,
                              on_start=on_start)
    finally:
        lease.release()
    return result_from_study(study, stored.storage_url)


def _search_and_store(pcfg: PredictorSearchConfig, study: optuna.Study,
                      prepared: tuple[Scorer, GenomeCodec, dict[str, Any]],
                      still_ours: Callable[[], None], *, progress: bool,
                      stop: threading.Event | None,
                      on_trial: Callable[[int, int], None] | None,
                      on_start: Callable[[], None] | None) -> None:
    """Evolve, then store the subnets the study does not hold yet and how the search ran."""
    scorer, codec, _ = prepared
    if on_start is not None:
        on_start()
    gens = pcfg.generations

    def report(g: int) -> None:
        if on_trial is not None:
            on_trial(g, gens)

    res, seconds = _evolve(pcfg, scorer, codec, progress=progress, stop=stop, on_trial=report)
    if stop is not None and stop.is_set():
        return  # stopped: nothing stored (resuming searches again); a front could take seconds
    idx = _stored_indices(res, pcfg.n_trials, pcfg.seed)
    held = {t.user_attrs.get("arch_hash") for t in study.get_trials(deepcopy=False)}
    still_ours()  # a driver whose lease was taken over stores nothing
    study.add_trials([t for t in _trials(pcfg, scorer, codec, res, idx)
                      if t.user_attrs["arch_hash"] not in held])
    study.set_user_attr(ENGINE_KEY, {
        "engine": "predictor", "algorithm": "NSGA-II (nas.search._evolve)",
        "population": pcfg.population or PREDICTOR_POPULATION, "generations": res.generations,
        "scored": res.n_scored, "stored": len(idx), "seconds": round(seconds, 4),
        "resolutions": codec.resolutions.tolist(),
    })


@dataclass
class Specialization:
    """What :func:`specialize` found.

    Attributes:
        front: the feasible Pareto front (one subnet with one objective), best first by the
            first objective: dicts with ``arch``, ``arch_hash``, ``accuracy``,
            ``latency_ms`` per device, ``macs``, ``params`` (and ``memory_mib`` per memory
            key, for a search with memory).
        best: per budget (``"latency:note10<=20"``), the best subnet of the front within it
            by the first objective (None when none is).
        n_scored: distinct subnets scored; seconds: wall time of the search.
    """

    space: str
    objectives: list[str]
    constraints: dict[str, float]
    front: list[dict[str, Any]]
    best: dict[str, dict[str, Any] | None]
    n_scored: int
    generations: int
    population: int
    seconds: float
    resolutions: list[int]

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _budget_key(key: str, bound: float) -> str:
    return f"{key}<={bound:g}"


def _items(scorer: Scorer, a: Any, m: Mapping[str, np.ndarray]
           ) -> list[tuple[Any, dict[str, Any]]]:
    """Each subnet of the batch ``a`` as its canonical architecture and the dict
    :class:`Specialization` returns (the attributes a stored trial also carries)."""
    costs = scorer.space.costs(a)
    out = []
    for row, arch in enumerate(scorer.space.from_arrays(a)):
        item: dict[str, Any] = {"arch": arch.to_dict(), "arch_hash": arch.hash,
                                "macs": int(costs["macs"][row]),
                                "params": int(costs["params"][row]),
                                "latency_ms": {d: float(m[f"latency:{d}"][row])
                                               for d in scorer.latency}}
        if scorer.memory:
            item["memory_mib"] = {k: float(m[k][row]) for k in scorer.memory}
        if "accuracy" in m:
            item["accuracy"] = float(m["accuracy"][row])
        out.append((arch, item))
    return out


def _refine(cfg: PredictorSearchConfig, scorer: Scorer, codec: GenomeCodec, res: EvolutionResult,
            key: str, bound: float, stop: threading.Event | None = None
            ) -> tuple[np.ndarray | None, int]:
    """The best subnet by the first objective with ``key <= bound`` (and the search's
    constraints), by a short search of its own warm-started from the front's subnets within
    the bound and the final population; returns its genome (None if none is feasible) and
    how many subnets it scored. A front spread over a wide range of ``key`` is thin at each
    single bound; this closes most of that gap (RESULTS.md) for a fifth of the generations."""
    col = cfg.objective_list[0].name

    def evaluate(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = scorer.metrics(codec.decode(X))
        _, V = scorer.objectives_and_violation(m)
        return (scorer.signs[0] * m[col])[:, None], V + np.maximum(0.0, m[key] / bound - 1)

    front = res.front()
    within = front[scorer.metrics(codec.decode(res.X[front]))[key] <= bound]
    evo = Evolution(codec, evaluate, population=cfg.population or PREDICTOR_POPULATION,
                    seed=cfg.seed, initial=res.X[np.concatenate([within, res.population])])
    def check(*_: Any) -> None:
        if stop is not None and stop.is_set():
            raise SearchStopped("specialize: stopped before it finished")

    r = evo.run(max(10, cfg.generations // 5), check)
    top = r.population[0]
    return (r.X[top] if r.V[top] <= 0 else None), r.n_scored


def specialize(space: str, *, objectives: Sequence[str] = ("accuracy",),
               constraints: Mapping[str, float] | None = None,
               budgets: Mapping[str, Sequence[float]] | None = None,
               proxy: str = "ofa-imagenet", seed: int = 0, population: int | None = None,
               generations: int = 300, db: str | None = None,
               latency_kind: str | None = None, interpolate: bool = False,
               refine: bool = False, stop: threading.Event | None = None) -> Specialization:
    """Search ``space`` at predictor speed and return the front, storing nothing.

    Example:
        >>> res = specialize("ofa_mbv3", objectives=["accuracy", "latency:note10"],
        ...                  constraints={"latency:note10": 40}, budgets={"latency:note10":
        ...                  [15, 20, 30]})
        >>> res.best["latency:note10<=20"]["arch"]

    Args:
        budgets: extra upper bounds at which to pick the best subnet of the front (the
            constraints' bounds are always among them).
        refine: search again under each bound, briefly, warm-started from the front (a
            front is thin at any single bound of a wide range: at 50 ms on note10 the
            front's pick was 0.0029 below OFA's search for that budget alone); the picks
            join the front. Costs about a fifth of the search per bound.
        stop: when set (e.g. the client went away), the search ends at its next generation
            and raises :class:`SearchStopped`.

    Raises:
        SearchStopped: ``stop`` was set.
        ConfigError: a bad argument (one line naming it), an objective that needs a model,
            a constraint no subnet can meet.
    """
    from nas.search._engines import choose_engine

    cfg = PredictorSearchConfig.from_dict({
        "space": space, "proxy": proxy, "objectives": list(objectives),
        "constraints": dict(constraints or {}), "seed": seed, "population": population,
        "generations": generations, "db": db, "latency_kind": latency_kind,
        "interpolate": interpolate, "engine": "predictor", "study": "specialize",
    }, where="specialize")
    choose_engine(cfg)
    scorer, codec, _ = _prepare(cfg)
    levels: dict[str, list[float]] = {k: [b] for k, b in cfg.constraints.items()}
    for key, values in (budgets or {}).items():
        if key not in [*cfg.objectives, *cfg.constraints] or key == "accuracy":
            raise ConfigError(f"budgets: {key!r} is not a latency, macs, params or memory "
                              "objective or constraint of this search")
        for v in values:
            if not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
                raise ConfigError(f"budgets.{key} = {v!r}: must be a number > 0")
        levels.setdefault(key, []).extend(float(v) for v in values)
    res, seconds = _evolve(cfg, scorer, codec, progress=False, stop=stop)
    if stop is not None and stop.is_set():
        raise SearchStopped("specialize: stopped before it finished")
    X, n_scored = res.X[res.front()], res.n_scored
    if refine:
        t0 = time.perf_counter()
        from nas.measure import one_torch_thread

        with one_torch_thread(only_if_loaded=True):
            for key, values in levels.items():
                for b in sorted(set(values)):
                    x, n = _refine(cfg, scorer, codec, res, key, b, stop)
                    n_scored += n
                    if x is not None:
                        X = np.concatenate([X, x[None, :]])
        seconds += time.perf_counter() - t0
    a = codec.decode(X)
    m = scorer.metrics(a)
    F, _ = scorer.objectives_and_violation(m)
    keep = np.flatnonzero(nondominated_ranks(F) == 0)  # refined picks join the front
    _, first_seen = np.unique(codec.keys(X[keep]), return_index=True)
    keep = keep[np.sort(first_seen)]
    keep = keep[np.lexsort(F[keep].T[::-1])]
    a, m = codec.decode(X[keep]), {k: v[keep] for k, v in m.items()}
    front = [item for _, item in _items(scorer, a, m)]
    first = cfg.objective_list[0]
    sign = -1.0 if first.direction == "maximize" else 1.0
    best: dict[str, dict[str, Any] | None] = {}
    for key, values in levels.items():
        vals = m[key]
        for b in sorted(set(values)):
            ok = np.flatnonzero(vals <= b)
            best[_budget_key(key, b)] = (
                front[int(ok[np.argmin(sign * m[first.name][ok])])] if len(ok) else None)
    return Specialization(
        space=cfg.space, objectives=list(cfg.objectives), constraints=dict(cfg.constraints),
        front=front, best=best, n_scored=n_scored, generations=res.generations,
        population=cfg.population or PREDICTOR_POPULATION, seconds=round(seconds, 4),
        resolutions=codec.resolutions.tolist())
