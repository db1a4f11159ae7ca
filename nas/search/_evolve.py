"""Vectorised multi-objective evolution over subnet genomes (the predictor-speed search).

When every objective and constraint of a search is a predictor, one generation of a few
hundred subnets is scored in about a millisecond, and what remains is the evolution's own
bookkeeping. This module keeps that bookkeeping in a few numpy operations per generation:

- a **genome** is a row of choice indices, as the space's family lays it out
  (:meth:`~nas.space.FamilySpace.genome`; OFA's ``[r, d_1..d_S, k_1..k_L, e_1..e_L]``);
  genes that take no part in the network are canonicalised to 0, so two genomes of the same
  network are equal and a network is scored once (:class:`GenomeCodec` adds the keys that
  tell them apart and random draws);
- **NSGA-II** (Deb et al., IEEE TEC 2002) with Deb's constraint domination: feasible before
  infeasible, infeasible by total relative violation, feasible by non-domination rank, then
  crowding distance; binary tournaments on that order, uniform crossover, per-gene mutation
  (resampled uniformly). With one objective this is an elitist (mu + lambda) genetic algorithm
  under the constraints, the setting of Once-for-All's evolutionary search;
- non-dominated sorting in ``O(n log n)`` for two objectives (one pass in order of the first
  objective, each point joining the first front it is not dominated by), a vectorised peel
  for more.

Why not pymoo: its NSGA-II spent 2.0 to 3.3 s on 500 generations of 100 on this machine with
a trivial vectorised problem (its operators and survival are general, per-generation Python);
the whole budget of this search is a tenth of OFA's 12 to 25 s per budget. The algorithm is
the textbook one; this is an implementation of it for integer genomes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.space import FamilySpace, Genome

__all__ = ["Evolution", "EvolutionResult", "GenomeCodec", "crowding", "nondominated_ranks"]


# ---------------------------------------------------------------------- genomes
class GenomeCodec:
    """Subnets of ``space`` as integer genomes (its family's :class:`~nas.space.Genome`),
    and back, vectorised, with a key per network and random draws.

    Args:
        space: the search space.
        resolutions: the resolutions a search may pick (default: the space's grid); a
            device that prices only some resolutions narrows this.
    """

    def __init__(self, space: FamilySpace, resolutions: Sequence[int] | None = None) -> None:
        self.space = space
        self.genome: Genome = space.genome(list(resolutions) if resolutions else None)
        self.sizes = self.genome.sizes
        self.n_genes = self.genome.n_genes
        #: the resolutions the genomes range over (empty for a family without)
        self.resolutions = np.asarray(self.genome.resolutions, np.int64)
        # a 64-bit key per canonical genome (a weighted sum that wraps around)
        self._weights = np.random.default_rng(0x5EED).integers(
            1, 2**62, self.n_genes, dtype=np.int64) | 1

    def canonical(self, X: np.ndarray) -> np.ndarray:
        """``X`` with the genes that take no part in the network set to 0 (in place)."""
        return self.genome.canonical(X)

    def keys(self, X: np.ndarray) -> np.ndarray:
        """One int64 per canonical genome (equal networks, equal keys)."""
        with np.errstate(over="ignore"):
            return (X.astype(np.int64) * self._weights).sum(axis=1)  # type: ignore[no-any-return]

    def decode(self, X: np.ndarray) -> Any:
        """Genomes in the family's batch form (:meth:`~nas.space.FamilySpace.to_arrays`)."""
        return self.genome.decode(X)

    def encode(self, batch: Any) -> np.ndarray:
        """A batch of architectures on this codec's grid as canonical genomes.

        Raises:
            ValueError: a choice or resolution the codec does not have.
        """
        return self.genome.encode(batch)

    def archs(self, X: np.ndarray) -> list[Any]:
        """The canonical architectures of genomes."""
        return self.genome.archs(X)

    def extremes(self) -> np.ndarray:
        """The smallest and the largest subnet at every resolution, in turn (a tight budget
        has a feasible parent at once; a loose one a strong one)."""
        small, big = self.genome.smallest(), self.genome.largest()
        return np.stack([small, big], axis=1).reshape(-1, self.n_genes)

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` canonical genomes, each gene uniform over its choices."""
        return self.canonical(rng.integers(0, self.sizes, size=(n, self.n_genes)))


# ---------------------------------------------------------------------- ranking
def nondominated_ranks(F: np.ndarray) -> np.ndarray:
    """Non-domination rank of each row of ``F`` (minimised): 0 for the Pareto front, 1 for
    the front of the rest, ... Equal rows share a rank."""
    n, m = F.shape
    if n == 0:
        return np.zeros(0, np.int64)
    U, inv = np.unique(F, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    if m == 1:
        return inv.astype(np.int64)  # np.unique sorts: the index is the rank
    rank = np.empty(len(U), np.int64)
    if m == 2:
        # U is sorted by (f1, f2): a point is dominated by an earlier one with f2 <= its f2;
        # it joins the first front whose lowest f2 so far is above its own
        lows: list[float] = []
        for i, f2 in enumerate(U[:, 1].tolist()):
            k = bisect.bisect_right(lows, f2)
            if k == len(lows):
                lows.append(f2)
            else:
                lows[k] = f2
            rank[i] = k
        return rank[inv]
    le = np.all(U[:, None, :] <= U[None, :, :], axis=2)
    dominates = le & ~np.eye(len(U), dtype=bool)  # rows are distinct: <= everywhere is <
    remaining = np.ones(len(U), bool)
    level = 0
    while remaining.any():
        front = remaining & ~(dominates & remaining[:, None]).any(axis=0)
        rank[front] = level
        remaining &= ~front
        level += 1
    return rank[inv]


def crowding(F: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row within its front (inf at a front's ends)."""
    n, m = F.shape
    out = np.zeros(n)
    span = F.max(axis=0) - F.min(axis=0) if n else np.zeros(m)
    for j in range(m):
        order = np.lexsort((F[:, j], rank))
        f, r = F[order, j], rank[order]
        d = np.full(n, np.inf)
        if n > 2:
            inner = (r[1:-1] == r[:-2]) & (r[1:-1] == r[2:])
            gap = (f[2:] - f[:-2]) / (span[j] if span[j] > 0 else 1.0)
            d[1:-1] = np.where(inner, gap, np.inf)
        out[order] += d
    return out


def _order(F: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Indices best first: feasible by (rank, -crowding), then infeasible by violation."""
    feas = V <= 0
    rank = np.zeros(len(F), np.int64)
    crowd = np.zeros(len(F))
    if feas.any():
        rank[feas] = nondominated_ranks(F[feas])
        crowd[feas] = crowding(F[feas], rank[feas])
    return np.lexsort((-crowd, rank, np.where(feas, 0.0, V), ~feas))


# ---------------------------------------------------------------------- the evolution
Evaluate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class EvolutionResult:
    """What an evolution scored: every distinct genome once, in the order scored.

    Attributes:
        X: genomes ``(n, genes)``; F: objectives ``(n, m)``, minimised; V: total relative
        violation ``(n,)`` (0 when feasible); population: indices into ``X`` of the final
        population, best first; generations: how many ran.
    """

    X: np.ndarray
    F: np.ndarray
    V: np.ndarray
    population: np.ndarray
    generations: int

    @property
    def n_scored(self) -> int:
        return len(self.X)

    def front(self) -> np.ndarray:
        """Indices of the feasible non-dominated subnets of everything scored, ordered by
        the first objective."""
        feas = np.flatnonzero(self.V <= 0)
        if not len(feas):
            return feas
        r = nondominated_ranks(self.F[feas])
        idx = feas[r == 0]
        return idx[np.lexsort(self.F[idx].T[::-1])]


class Evolution:
    """NSGA-II over a :class:`GenomeCodec`'s genomes.

    Args:
        codec: the genomes.
        evaluate: ``evaluate(X) -> (F, V)``, objectives ``(n, m)`` to minimise and total
            violation ``(n,)`` (0 = feasible), for a batch of canonical genomes.
        population: survivors per generation (and children per generation).
        mutate_prob: probability of resampling each gene of a child.
        seed: seed of every random choice.
        initial: genomes to start from (e.g. the smallest subnet at every resolution, so that
            a tight budget has a feasible parent at once); topped up with random ones.
    """

    def __init__(self, codec: GenomeCodec, evaluate: Evaluate, *, population: int = 100,
                 mutate_prob: float | None = None, seed: int = 0,
                 initial: np.ndarray | None = None) -> None:
        self.codec = codec
        self.evaluate = evaluate
        self.population = int(population)
        self.mutate_prob = (2.0 / codec.n_genes) if mutate_prob is None else float(mutate_prob)
        self.rng = np.random.default_rng(seed)
        self.initial = initial
        # the archive: every genome scored, in growing buffers (doubled when full); genes
        # are choice indices, so a byte each keeps a search of millions in memory
        self._dtype = np.int8 if codec.sizes.max() < 128 else np.int64
        self._X = np.zeros((0, codec.n_genes), self._dtype)
        self._F = np.zeros((0, 0))
        self._V = np.zeros(0)
        self._seen: set[int] = set()
        self._n = 0
        self._pop = np.zeros(0, np.int64)
        self._generations = 0

    def _append(self, X: np.ndarray, F: np.ndarray, V: np.ndarray) -> np.ndarray:
        end = self._n + len(X)
        if end > len(self._X):
            cap = max(end, 2 * len(self._X), 1024)
            grow = cap - len(self._X)
            self._X = np.concatenate([self._X, np.zeros((grow, X.shape[1]), self._dtype)])
            F0 = self._F if self._F.shape[1] == F.shape[1] else np.zeros((len(self._F),
                                                                           F.shape[1]))
            self._F = np.concatenate([F0, np.zeros((grow, F.shape[1]))])
            self._V = np.concatenate([self._V, np.zeros(grow)])
        self._X[self._n:end], self._F[self._n:end], self._V[self._n:end] = X, F, V
        idx = np.arange(self._n, end)
        self._n = end
        return idx

    def _score(self, X: np.ndarray, limit: int) -> np.ndarray:
        """Score the first ``limit`` genomes of ``X`` not scored before; returns their
        archive indices."""
        keys = self.codec.keys(X).tolist()
        new, fresh = [], set()
        for i, k in enumerate(keys):
            if k not in self._seen and k not in fresh:
                fresh.add(k)
                new.append(i)
                if len(new) == limit:
                    break
        if not new:
            return np.zeros(0, np.int64)
        Xn = X[new]
        F, V = self.evaluate(Xn)
        self._seen |= fresh
        return self._append(Xn, np.asarray(F, np.float64).reshape(len(Xn), -1),
                            np.asarray(V, np.float64).reshape(len(Xn)))

    def _children(self, X: np.ndarray) -> np.ndarray:
        """``2 * population`` children of the population ``X`` (best first)."""
        P, rng, sizes = len(X), self.rng, self.codec.sizes
        n = 2 * self.population
        # binary tournaments on the population's order (lower index = better)
        a = np.minimum(rng.integers(0, P, n), rng.integers(0, P, n))
        b = np.minimum(rng.integers(0, P, n), rng.integers(0, P, n))
        take = rng.random((n, self.codec.n_genes)) < 0.5
        C = np.where(take, X[a], X[b])
        mut = rng.random(C.shape) < self.mutate_prob
        C = np.where(mut, rng.integers(0, sizes, size=C.shape), C)
        return self.codec.canonical(C)

    def run(self, generations: int,
            on_generation: Callable[[int, np.ndarray, np.ndarray], None] | None = None
            ) -> EvolutionResult:
        """Evolve for ``generations`` generations after the initial population.

        ``on_generation(g, F, V)`` is called after each generation with the population's
        objectives and violations, best first (e.g. for a progress bar).
        """
        P = self.population
        init = self.codec.random(4 * P, self.rng)
        if self.initial is not None and len(self.initial):
            init = np.concatenate([self.codec.canonical(self.initial.copy()), init])
        pop = self._survive(self._score(init, P))
        self._pop, self._generations = pop, 0
        for g in range(1, generations + 1):
            kids = self._score(self._children(self._X[pop]), P)
            pop = self._survive(np.concatenate([pop, kids]))
            self._pop, self._generations = pop, g
            if on_generation is not None:
                on_generation(g, self._F[pop], self._V[pop])
        return self.result()

    def result(self) -> EvolutionResult:
        """What was scored so far (e.g. after a stop between generations)."""
        n = self._n
        return EvolutionResult(X=self._X[:n].copy(), F=self._F[:n].copy(),
                               V=self._V[:n].copy(), population=self._pop,
                               generations=self._generations)

    def _survive(self, idx: np.ndarray) -> np.ndarray:
        return idx[_order(self._F[idx], self._V[idx])[: self.population]]
