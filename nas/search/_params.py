"""A search space as Optuna distributions, so that a search is a plain Optuna study.

The space's family says what a search's parameters are
(:meth:`~nas.space.FamilySpace.search_params`: every parameter and its choices, in a fixed
order) and how an architecture maps to them and back
(:meth:`~nas.space.FamilySpace.to_params`, :meth:`~nas.space.FamilySpace.from_params`); this
module only turns the choices into Optuna distributions. Every trial has the same set of
parameters (TPE, NSGA-II and GP work best that way); values that take no part in a network
(an OFA layer beyond its stage's depth, a GPT block past the depth) do not change it, and
the architecture built from the parameters is canonical, so those values take no part in
its hash.

Names read like the network: for the ``ofa`` family ``r``, ``d1``..``dS`` (stage depths),
``k1.1`` and ``e1.1`` (kernel and expand ratio of stage 1, layer 1); for ``gpt``
``n_layer``, ``n_embd``, ``n_head.1`` and ``mlp.1`` (heads and MLP width of layer 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from nas.space import FamilySpace

__all__ = ["arch_from_params", "distributions", "params_from_arch"]


def _dist(values: Sequence[int]) -> BaseDistribution:
    """An integer range when the choices are evenly spaced (ordered: TPE and GP use the
    order), else a categorical distribution."""
    vals = sorted(int(v) for v in values)
    if len(vals) == 1:
        return CategoricalDistribution(vals)
    step = vals[1] - vals[0]
    if step > 0 and vals == list(range(vals[0], vals[-1] + 1, step)):
        return IntDistribution(vals[0], vals[-1], step=step)
    return CategoricalDistribution(vals)


def distributions(space: FamilySpace, resolutions: Sequence[int] | None = None
                  ) -> dict[str, BaseDistribution]:
    """Parameter name -> distribution, in the family's fixed order.

    Args:
        resolutions: the resolutions a search may pick (default: the space's grid), e.g.
            those a device's lookup table prices.
    """
    params = space.search_params(list(resolutions) if resolutions else None)
    return {name: _dist(choices) for name, choices in params.items()}


def arch_from_params(space: FamilySpace, params: Mapping[str, Any]) -> Any:
    """The canonical architecture of a trial's parameters."""
    return space.from_params(params)


def params_from_arch(space: FamilySpace, arch: Any) -> dict[str, int]:
    """Parameters that give ``arch`` (e.g. to enqueue a known subnet as a trial)."""
    return space.to_params(arch)
