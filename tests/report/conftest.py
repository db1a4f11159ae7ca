"""A search result built from the real types (no search run): tiny architectures, a
synthetic accuracy/latency trade-off, failed and infeasible trials, two verified subnets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nas.search import SearchConfig, SearchResult, TrialRecord
from nas.space import get_family_space, get_space

PREDICTORS = {"cpu-1t": {"kind": "additive", "id": 3, "n_train": 45, "metrics": {
    "test": {"mape": 0.031, "within_5": 0.8, "within_10": 0.95, "kendall_tau": 0.9,
             "rmse_ms": 0.012},
    "flops": {"mape": 0.124}, "n_train": 45, "n_test": 15}}}


def build_result(objectives: list[str], *, n: int = 30, bound: float = 0.21,
                 verified: int = 2, study: str = "built") -> SearchResult:
    sp = get_space("tiny")
    archs = sp.sample_many(n, seed=0)
    costs = sp.costs(archs)
    rng = np.random.default_rng(0)
    cfg = SearchConfig(space="tiny", objectives=objectives, n_trials=n + 2, study=study,
                       constraints={"latency:cpu-1t": bound}, storage="runs/x.journal")
    trials: list[TrialRecord] = []
    for i, a in enumerate(archs):
        macs = int(costs["macs"][i])
        lat = 0.1 + macs / 4e6 * float(rng.uniform(0.9, 1.1))
        acc = float(0.5 + 0.4 * (1 - np.exp(-macs / 2e6)) + rng.normal(0, 0.01))
        values = {"accuracy": acc, "latency:cpu-1t": lat}
        trials.append(TrialRecord(
            number=i, state="COMPLETE", values={k: values[k] for k in cfg.objectives},
            arch=a.to_dict(), arch_hash=a.hash, macs=macs, params=int(costs["params"][i]),
            accuracy=acc, latency_ms={"cpu-1t": lat}, feasible=lat <= bound,
            constraints={"latency:cpu-1t": lat - bound}))
    trials += [TrialRecord(number=n + j, state="FAIL", values={}, arch=None, arch_hash=None,
                           macs=None, params=None, accuracy=None, latency_ms={},
                           feasible=False, error="boom") for j in range(2)]
    res = SearchResult(study_name=study, storage="runs/x.journal", config=cfg,
                       objectives=cfg.objective_list, trials=trials, predictors=PREDICTORS)
    for t in res.front[:verified]:
        t.measured_ms = {"cpu-1t": t.latency_ms["cpu-1t"] * 1.07}
    return res


def build_gpt_result(n: int = 12) -> SearchResult:
    """A study of the gpt family's ``gpt_tiny``: accuracy against parameters, no device."""
    sp = get_family_space("gpt_tiny")
    archs = sp.sample_many(n, seed=0)
    costs = sp.costs(archs)
    # made for an ofa space, then moved to gpt_tiny: the report renders the study it is given,
    # whichever spaces this version's search config takes
    cfg = SearchConfig(space="tiny", objectives=["accuracy", "params"], n_trials=n,
                       study="gpt", storage="runs/x.journal").model_copy(
        update={"space": "gpt_tiny"})
    rng = np.random.default_rng(0)
    trials = []
    for i, a in enumerate(archs):
        params = int(costs["params"][i])
        acc = float(1 - np.exp(-params / 2e4) + rng.normal(0, 0.05))
        trials.append(TrialRecord(
            number=i, state="COMPLETE", values={"accuracy": acc, "params": float(params)},
            arch=a.to_dict(), arch_hash=a.hash, macs=int(costs["macs"][i]), params=params,
            accuracy=acc, latency_ms={}, feasible=True))
    return SearchResult(study_name="gpt", storage="runs/x.journal", config=cfg,
                        objectives=cfg.objective_list, trials=trials, predictors={})


@pytest.fixture
def result() -> SearchResult:
    return build_result(["accuracy", "latency:cpu-1t"])


@pytest.fixture
def make_result() -> Any:
    return build_result


@pytest.fixture
def gpt_result() -> SearchResult:
    return build_gpt_result()
