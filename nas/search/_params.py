"""A search space as Optuna distributions, so that a search is a plain Optuna study.

Every layer slot gets a kernel and an expand-ratio parameter, every stage a depth, plus the
resolution: a fixed set of parameters for every trial (TPE, NSGA-II and GP work best that
way). Values at slots beyond a stage's depth do not change the network; the architecture
built from the parameters is canonical, so those values take no part in its hash.

Names read like the network: ``r``, ``d1``..``dS`` (stage depths), ``k1.1`` and ``e1.1``
(kernel and expand ratio of stage 1, layer 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from nas.space import Architecture, SearchSpace

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


def _slot(space: SearchSpace, j: int) -> str:
    return f"{j // space.max_depth + 1}.{j % space.max_depth + 1}"


def distributions(space: SearchSpace, resolutions: Sequence[int] | None = None
                  ) -> dict[str, BaseDistribution]:
    """Parameter name -> distribution, in a fixed order.

    Args:
        resolutions: the resolutions a search may pick (default: the space's grid), e.g.
            those a device's lookup table prices.
    """
    out: dict[str, BaseDistribution] = {"r": _dist(resolutions or space.resolutions)}
    for s in range(space.n_stages):
        out[f"d{s + 1}"] = _dist(space.depths)
    for j in range(space.n_layers):
        out[f"k{_slot(space, j)}"] = _dist(space.kernel_sizes)
        out[f"e{_slot(space, j)}"] = _dist(space.expand_ratios)
    return out


def arch_from_params(space: SearchSpace, params: Mapping[str, Any]) -> Architecture:
    """The canonical architecture of a trial's parameters."""
    slots = [_slot(space, j) for j in range(space.n_layers)]
    return space.arch(
        ks=[int(params[f"k{s}"]) for s in slots],
        e=[int(params[f"e{s}"]) for s in slots],
        d=[int(params[f"d{s + 1}"]) for s in range(space.n_stages)],
        r=int(params["r"]),
    )


def params_from_arch(space: SearchSpace, arch: Architecture) -> dict[str, int]:
    """Parameters that give ``arch`` (e.g. to enqueue a known subnet as a trial)."""
    out: dict[str, int] = {"r": int(arch.r)}
    for s, d in enumerate(arch.d):
        out[f"d{s + 1}"] = int(d)
    for j in range(space.n_layers):
        out[f"k{_slot(space, j)}"] = int(arch.ks[j])
        out[f"e{_slot(space, j)}"] = int(arch.e[j])
    return out
