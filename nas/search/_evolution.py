"""Once-for-All's evolutionary search as an Optuna sampler (the baseline of the benchmark).

OFA (Cai et al., ICLR 2020, ``ofa/nas/search_algorithm/evolution.py``) keeps a population of
``P`` subnets; each generation the best quarter become parents, half the children are
mutations of a random parent (each gene resampled with probability 0.1) and the rest uniform
crossovers of two. Parents stay in the population, so the parents of every generation are the
best ``P/4`` subnets evaluated so far; this sampler works that way, one child per trial, which
suits ask/tell with several workers. Differences from OFA, on purpose:

- OFA draws subnets until one meets the latency budget, which never ends when none can; here
  an infeasible child is evaluated like any other and ranked after every feasible one (by its
  total relative violation, from Optuna's constraints), so the search always finishes.
- With several objectives, subnets are ranked by non-domination rank (best first), ties in
  random order; OFA only handles one objective.

Written here rather than taken from OFA: its code is tied to its own predictors and loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.search._evolve import nondominated_ranks

__all__ = ["EvolutionSampler", "nondomination_rank"]


#: Rank 0 for the Pareto front of ``values`` (n x m, minimised), 1 for the front of the rest,
#: and so on: the predictor engine's sort (O(n log n) for two objectives), under its old name.
nondomination_rank = nondominated_ranks


def _violation(t: FrozenTrial) -> float:
    return float(sum(max(0.0, c) for c in t.constraints.values()))


class EvolutionSampler(BaseSampler):
    """OFA-style evolution over the study's parameters.

    Args:
        population: ``P``; the first ``P`` trials are random, then one child per trial.
        parent_ratio: share of ``P`` kept as parents (OFA: 0.25).
        mutation_ratio: share of children made by mutation (OFA: 0.5), the rest by crossover.
        mutate_prob: probability of resampling each gene of a mutated child (OFA: 0.1).
        seed: seed of every random choice.
    """

    def __init__(self, *, population: int = 100, parent_ratio: float = 0.25,
                 mutation_ratio: float = 0.5, mutate_prob: float = 0.1,
                 seed: int | None = None) -> None:
        self.population = population
        self.n_parents = max(2, round(population * parent_ratio))
        self.mutation_ratio = mutation_ratio
        self.mutate_prob = mutate_prob
        self._rng = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        # Optuna's incremental intersection: the trials since the last call, not all of them
        # every trial (what optuna.search_space.intersection_search_space does)
        self._space = IntersectionSearchSpace()

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._space.calculate(study)

    def _parents(self, study: optuna.Study) -> list[FrozenTrial]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) < self.population:
            return []
        signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0
                          for d in study.directions])
        vals = np.array([t.values for t in done], dtype=np.float64) * signs
        viol = np.array([_violation(t) for t in done])
        rank = np.where(viol > 0, np.iinfo(np.int64).max // 2, 0).astype(np.int64)
        feas = viol == 0
        if len(signs) == 1:
            order_key = vals[:, 0]
        else:
            order_key = np.zeros(len(done))
            if feas.any():
                rank[feas] = nondomination_rank(vals[feas])
        tie = self._rng.random(len(done))
        if len(signs) == 1:
            order = np.lexsort((tie, order_key, viol))
        else:
            order = np.lexsort((tie, order_key, viol, rank))
        return [done[i] for i in order[: self.n_parents]]

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        parents = self._parents(study)
        if not parents:
            return {}
        rng = self._rng
        if rng.random() < self.mutation_ratio:
            p = parents[int(rng.integers(len(parents)))]
            child = {}
            for name, dist in search_space.items():
                if name not in p.params or rng.random() < self.mutate_prob:
                    child[name] = self._random.sample_independent(study, trial, name, dist)
                else:
                    child[name] = p.params[name]
            return child
        i, j = rng.choice(len(parents), size=2, replace=False)
        a, b = parents[int(i)], parents[int(j)]
        return {name: (a if rng.random() < 0.5 else b).params[name]
                for name in search_space if name in a.params and name in b.params}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._random.after_trial(study, trial, state, values)
