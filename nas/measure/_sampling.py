"""Which subnets to measure: half uniform, half spread evenly over the MAC range, or, for a
device with few measurements, those that inform the most (:func:`select_for_measurement`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nas.errors import ConfigError
from nas.space import Architecture, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB

__all__ = [
    "FEW_MEASUREMENTS",
    "SELECT_METHODS",
    "PriorPredictions",
    "PriorSource",
    "Selection",
    "rank_disagreement",
    "sample_for_measurement",
    "select_for_measurement",
]


def sample_for_measurement(
    space: str | SearchSpace, n: int, seed: int = 0, *,
    exclude: Iterable[Architecture] = (), uniform_share: float = 0.5, n_bins: int = 10,
    pool_size: int | None = None,
) -> list[Architecture]:
    """Architectures to measure: half uniform, half spread evenly over the MAC range.

    Uniform sampling concentrates on mid-sized subnets (every layer averages over its
    choices), so a predictor trained on it alone extrapolates at both ends, where a search
    under a latency budget often ends up. The stratified half is drawn from a large uniform
    pool binned into ``n_bins`` equal-width bins of log-MACs over the pool's range, the same
    number from each bin (quantile bins of a uniform pool would reproduce the uniform
    distribution), plus the smallest and largest subnet at the extreme resolutions.

    Args:
        exclude: architectures already measured; none of them is returned.
        uniform_share: share of uniform samples.
        pool_size: size of the pool for the stratified part (default ``max(20 n, 2000)``,
            capped by the space's size).
    """
    sp = get_space(space)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if not 0 <= uniform_share <= 1:
        raise ConfigError(f"uniform_share must be in [0, 1], got {uniform_share}")
    rng = np.random.default_rng(seed)
    seen = set(exclude)
    total = sp.n_architectures()
    if n > total - len(seen):
        raise ConfigError(
            f"cannot draw {n} new architectures from {sp.name}: it has {total}, "
            f"{len(seen)} already measured"
        )
    out: list[Architecture] = []

    def take(a: Architecture) -> None:
        if a not in seen and len(out) < n:
            seen.add(a)
            out.append(a)

    n_strat = n - round(n * uniform_share)
    if n_strat > 0:
        for a in (sp.smallest(), sp.largest()):
            if len(out) < min(2, n_strat):
                take(a)
        pool_n = min(pool_size or max(20 * n, 2000), total)
        pool = sp.sample_many(pool_n, rng, unique=pool_n <= sp.size())
        pool = [a for a in dict.fromkeys(pool) if a not in seen]
        if pool:
            logm = np.log(sp.costs(pool)["macs"].astype(np.float64))
            edges = np.linspace(logm.min(), logm.max() + 1e-9, n_bins + 1)
            bins = np.clip(np.searchsorted(edges, logm, side="right") - 1, 0, n_bins - 1)
            members = [list(rng.permutation(np.flatnonzero(bins == b))) for b in range(n_bins)]
            b = 0
            while len(out) < n_strat and any(members):
                if members[b % n_bins]:
                    take(pool[int(members[b % n_bins].pop())])
                b += 1
    tries = 0
    while len(out) < n:
        take(sp.sample(rng))
        tries += 1
        if tries > 1000 * max(n, 1):  # pragma: no cover - only for nearly exhausted spaces
            raise ConfigError(f"could not draw {n} new architectures from {sp.name}")
    order = rng.permutation(len(out))
    return [out[i] for i in order]


# ---------------------------------------------------------------------- informative choice
#: ``select_for_measurement`` methods (``auto`` picks one of the others).
SELECT_METHODS = ("auto", "mixed", "spread", "informative")
#: A device with fewer successful measurements of a space than this has "few": ``auto``
#: then chooses what informs the most rather than the general-purpose sample.
FEW_MEASUREMENTS = 50
#: Prior devices with a predictor needed before their disagreement is worth following.
MIN_PRIOR_DEVICES = 2


@dataclass(frozen=True)
class Selection:
    """Architectures chosen by :func:`select_for_measurement`, and why.

    Attributes:
        archs: the architectures, in measuring order.
        method: the method applied (never ``"auto"``).
        requested: the method asked for (``"auto"`` or the same as ``method``).
        rule: one sentence saying how they were chosen.
        priors: ``{device: predictor kind}`` of the devices whose predictions were compared
            (``informative`` only).
        skipped_priors: ``{device: why}`` of devices with a predictor that could not be used.
    """

    archs: list[Architecture]
    method: str
    requested: str
    rule: str
    priors: dict[str, str] = field(default_factory=dict)
    skipped_priors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the architectures."""
        return {"method": self.method, "requested": self.requested, "rule": self.rule,
                "priors": dict(self.priors), "skipped_priors": dict(self.skipped_priors)}


_RULES = {
    "mixed": "half uniform, half spread evenly over the log-MAC range (sample_for_measurement)",
    "spread": "spread evenly over the log-MAC range of a uniform pool, plus the smallest and "
              "largest subnet (sample_for_measurement with uniform_share=0)",
    "informative": "a uniform pool split into n equal-width bins of log-MACs; from each bin, "
                   "the subnet on which the prior devices' predicted latencies disagree most "
                   "once each device's predictions are turned into ranks over the pool "
                   "(standard deviation of the normalised ranks across devices)",
}


@dataclass(frozen=True)
class PriorPredictions:
    """Other devices' predicted latencies on a pool of subnets, what ``informative`` ranks by.

    Attributes:
        predictions: ``{device: latencies}``, one finite positive array per device, aligned
            with the pool.
        kinds: ``{device: predictor kind}`` of those devices.
        skipped: ``{device: why}`` of devices with a predictor that could not be used.
    """

    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class PriorSource(Protocol):
    """Where ``informative`` gets its priors: the other devices' predictions on a pool.

    Measurement knows no predictor, so a caller that wants ``informative`` passes one in:
    :func:`nas.latency.prior_predictions` predicts with the predictors stored in ``db``.
    """

    def __call__(self, space: SearchSpace, pool: list[Architecture], db: LatencyDB | None,
                 device: str | None, /) -> PriorPredictions:
        """Predictions on ``pool`` of every device of ``space`` but ``device``."""
        ...


def rank_disagreement(predictions: dict[str, np.ndarray]) -> np.ndarray:
    """Per architecture, how much devices disagree on where it ranks: each device's
    predictions become ranks over the pool scaled to [0, 1] (so a device twice as fast as
    another ranks the same), and the standard deviation across devices is the disagreement.

    Args:
        predictions: ``{device: latencies}``, one array per device over the same pool.
    """
    ranks = []
    for y in predictions.values():
        order = np.argsort(np.argsort(y, kind="stable"), kind="stable")
        ranks.append(order / max(len(y) - 1, 1))
    return np.std(np.vstack(ranks), axis=0)


def _informative(sp: SearchSpace, n: int, rng: np.random.Generator, seen: set[Architecture],
                 preds_pool: list[Architecture], disagreement: np.ndarray) -> list[Architecture]:
    """From each of ``n`` equal-width log-MAC bins of the pool, the most disputed subnet;
    bins left empty give their turn to the most disputed subnets left anywhere."""
    keep = [i for i, a in enumerate(preds_pool) if a not in seen]
    if not keep:
        return []
    pool = [preds_pool[i] for i in keep]
    score = disagreement[keep] + rng.uniform(0, 1e-9, len(keep))  # ties broken at random
    logm = np.log(sp.costs(pool)["macs"].astype(np.float64))
    edges = np.linspace(logm.min(), logm.max() + 1e-9, n + 1)
    bins = np.clip(np.searchsorted(edges, logm, side="right") - 1, 0, n - 1)
    chosen: list[int] = []
    for b in range(n):
        members = np.flatnonzero(bins == b)
        if len(members):
            chosen.append(int(members[np.argmax(score[members])]))
    rest = [int(i) for i in np.argsort(-score) if int(i) not in set(chosen)]
    chosen += rest[: n - len(chosen)]
    return [pool[i] for i in chosen[:n]]


def select_for_measurement(
    space: str | SearchSpace, n: int, seed: int = 0, *, method: str = "auto",
    db: LatencyDB | None = None, device: str | None = None, priors: PriorSource | None = None,
    exclude: Iterable[Architecture] = (), n_measured: int | None = None,
    pool_size: int | None = None, few: int = FEW_MEASUREMENTS,
) -> Selection:
    """The ``n`` subnets to measure next on ``device``, chosen to inform the most.

    Methods:

    * ``mixed``: :func:`sample_for_measurement` (half uniform, half spread over the MACs), the
      general-purpose sample for a device with many measurements;
    * ``spread``: every subnet spread over the log-MAC range (smallest and largest included);
    * ``informative``: other devices of the space with a fitted predictor (``priors``, at
      least :data:`MIN_PRIOR_DEVICES`) predict a uniform pool; each device's predictions
      become ranks (scale-free: a device is compared by how it orders subnets, not by its
      speed), and each of ``n`` equal-width log-MAC bins gives the subnet whose ranks
      disagree most across devices. Such subnets tell best which of the known devices the new
      one resembles (what a predictor transferred from them needs), while the bins keep the
      whole MAC range covered (what any predictor needs). Without enough prior devices it
      falls back to ``spread``.
    * ``auto``: for a device with fewer than ``few`` measurements (``n_measured``, else counted
      in ``db``), ``informative`` when enough prior devices have predictors, else ``spread``;
      for a device with more, ``mixed``.

    Args:
        space: the search space.
        n: how many architectures.
        seed: seed of the pool and of ties.
        method: one of :data:`SELECT_METHODS`.
        db: the latency database (the device's count of measurements, for ``auto``).
        device: the device being measured.
        priors: the other devices' predictions on a pool, called only when ``informative``
            is chosen (:func:`nas.latency.prior_predictions`: those of the predictors stored
            in ``db``). None: no prior devices, so ``informative`` falls back to ``spread``.
        exclude: architectures never returned (e.g. already measured).
        n_measured: the device's number of measurements, if the caller knows it.
        pool_size: candidates for ``informative`` (default ``max(50 n, 2000)``, capped by the
            space's size).
        few: the threshold of ``auto``.

    Raises:
        ConfigError: unknown method, bad ``n`` or not enough architectures left.
    """
    sp = get_space(space)
    if method not in SELECT_METHODS:
        raise ConfigError(f"select method must be one of {list(SELECT_METHODS)}, got {method!r}")
    seen = set(exclude)
    chosen = method
    if method == "auto":
        from nas.db import TIMED_SOURCES

        if n_measured is None:
            n_measured = 0 if db is None or device is None else sum(
                1 for r in db.measurements(device, sp.name)
                if r.source in TIMED_SOURCES)
        chosen = "informative" if n_measured < few else "mixed"
    if chosen != "informative":
        share = 0.5 if chosen == "mixed" else 0.0
        archs = sample_for_measurement(sp, n, seed, exclude=seen, uniform_share=share)
        return Selection(archs, chosen, method, _RULES[chosen])
    # informative: the pool, the priors' predictions on it, then the bins
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    total = sp.n_architectures()
    pool_n = min(pool_size or max(50 * n, 2000), total)
    pool = [a for a in dict.fromkeys(sp.sample_many(pool_n, rng, unique=pool_n <= sp.size()))]
    got = priors(sp, pool, db, device) if priors is not None else PriorPredictions()
    preds, kinds, skipped = got.predictions, got.kinds, got.skipped
    if len(preds) < MIN_PRIOR_DEVICES or n == 0:
        why = (f"; fell back to spread: {len(preds)} prior device(s) with a usable predictor, "
               f"{MIN_PRIOR_DEVICES} needed") if n else ""
        archs = sample_for_measurement(sp, n, seed, exclude=seen, uniform_share=0.0)
        return Selection(archs, "spread", method, _RULES["spread"] + why, kinds, skipped)
    archs = _informative(sp, n, rng, seen, pool, rank_disagreement(preds))
    if len(archs) < n:  # the pool ran short (a tiny space): top up as spread does
        more = sample_for_measurement(sp, n - len(archs), seed, exclude=seen | set(archs),
                                      uniform_share=0.0)
        archs += more
    return Selection(archs, "informative", method, _RULES["informative"], kinds, skipped)
