"""Which subnets to measure: half uniform, half spread evenly over the MAC range."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from nas.errors import ConfigError
from nas.space import Architecture, SearchSpace, get_space

__all__ = ["sample_for_measurement"]


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
    total = sp.size(with_resolution=True)
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
