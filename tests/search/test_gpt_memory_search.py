"""Memory as a search objective and constraint on a gpt space (``memory``: weights + KV cache
at the space's context, ``memory:<C>`` at ``C`` positions, exact, in MiB): the predictor
engine's searches keep to the budget, a budget below the smallest subnet is one line and
stores nothing, and the Ray engine's evaluator and ledger record the same values (run here
in-process, without Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from nas.errors import ConfigError
from nas.search import SearchConfig, load_results, specialize
from nas.space import get_space

SPACE = "gpt_tiny"  # context 32
MIB = 2**20


def _mib(arch: Any, context: int | None = None) -> float:
    return int(get_space(SPACE).memory([arch], context=context)["total"][0]) / MIB


# ---------------------------------------------------------------------- the config
def test_memory_objectives_and_constraints_are_read_with_their_context() -> None:
    cfg = SearchConfig.load(space=SPACE, proxy="nonembedding-params",
                            objectives=["accuracy", "memory:016"],
                            constraints={"memory": 0.1, "macs": 1e6})
    assert cfg.objectives == ["accuracy", "memory:16"]
    assert cfg.constraints == {"memory": 0.1, "macs": 1e6}
    obj = cfg.objective_list[1]
    assert (obj.metric, obj.context, obj.direction, obj.label) == (
        "memory", 16, "minimize", "memory at context 16 (MiB)")
    plain = SearchConfig.load(space=SPACE, proxy="nonembedding-params", objectives=["memory"])
    assert plain.objective_list[0].label == "memory (MiB)"
    assert plain.objective_list[0].context is None


def test_latency_labels_say_what_one_timed_call_is() -> None:
    """Tables and the report's axes: a decode profile's latency is per token."""
    cfg = SearchConfig.load(space="gpt_shakespeare", proxy="nonembedding-params",
                            objectives=["accuracy", "latency:cpu-1t-decode256",
                                        "latency:cpu-1t-prefill128"])
    assert [o.label for o in cfg.objective_list[1:]] == [
        "latency cpu-1t-decode256 (ms per token, decode at context 256 (KV cache))",
        "latency cpu-1t-prefill128 (ms, prefill 128 tokens)"]
    ofa = SearchConfig.load(space="ofa_mbv3", proxy="ofa-imagenet",
                            objectives=["accuracy", "latency:note10"])
    assert ofa.objective_list[1].label == "latency note10 (ms)"


@pytest.mark.parametrize(("space", "override", "message"), [
    (SPACE, {"objectives": ["memory:x"]},
     "objectives = ['memory:x']: objective/constraint 'memory:x': memory:<context> takes the "
     "KV cache's positions, a whole number >= 1, e.g. 'memory:512'"),
    (SPACE, {"objectives": ["memory:0"]}, "a whole number >= 1"),
    (SPACE, {"objectives": ["accuracy"], "constraints": {"memory:33": 1.0}},
     "constraints = {'memory:33': 1.0}: memory:33: context must be an int in [1, 32] (the "
     "context of space gpt_tiny), got 33"),
    ("tiny", {"objectives": ["accuracy", "memory"]},
     "objectives = ['accuracy', 'memory']: memory: space 'tiny' of the 'ofa' family does not "
     "count memory (weights and KV cache, the 'gpt' family's); allowed for it: accuracy, "
     "macs, params, latency:<device>"),
    ("tiny", {"objectives": ["accuracy"], "constraints": {"memory": 5.0}},
     "constraints = {'memory': 5.0}: memory: space 'tiny' of the 'ofa' family"),
    (SPACE, {"objectives": ["mem"]},
     "unknown objective/constraint 'mem'; allowed: accuracy, macs, params, memory, "
     "memory:<context>, latency:<device>"),
])
def test_bad_memory_keys_are_one_line(space: str, override: dict[str, Any],
                                      message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SearchConfig.load(space=space, proxy="nonembedding-params", **override)
    assert "\n" not in str(info.value)
    assert message in str(info.value)


def test_a_budget_below_the_smallest_subnet_is_refused_when_the_config_is_read() -> None:
    small = get_space(SPACE).memory([get_space(SPACE).smallest()], context=4)
    total = int(small["total"][0])
    with pytest.raises(ConfigError) as info:
        SearchConfig.load(space=SPACE, proxy="nonembedding-params", objectives=["accuracy"],
                          constraints={"memory:4": 0.01})
    assert str(info.value) == (
        f"search config: constraints = {{'memory:4': 0.01}}: memory:4 <= 0.01 MiB cannot be "
        f"met: the smallest subnet of space gpt_tiny takes {total / MIB:.6g} MiB ({total:,} "
        f"bytes: weights {int(small['weights'][0]) / MIB:.4g} MiB + KV cache at context 4 "
        f"{int(small['cache'][0]) / MIB:.4g} MiB, one sequence, float32)")
    # the smallest subnet's own memory is a budget it meets
    SearchConfig.load(space=SPACE, proxy="nonembedding-params", objectives=["accuracy"],
                      constraints={"memory:4": total / MIB})


def test_the_cli_refuses_a_budget_below_the_smallest_subnet_and_stores_nothing(
        run_nas: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    smallest = _mib(get_space(SPACE).smallest())
    code, out, err = run_nas(["search", "--space", SPACE, "--proxy", "nonembedding-params",
                              "-O", "accuracy", "-O", "macs", "-C", "memory=0.001",
                              "--generations", "5", "--no-progress"])
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: search config: constraints = {'memory': 0.001}: "
                               "memory <= 0.001 MiB cannot be met: the smallest subnet of "
                               f"space gpt_tiny takes {smallest:.6g} MiB")
    assert "KV cache at context 32 (the space's)" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no runs/, no study


# ---------------------------------------------------------------------- the search
def test_a_search_under_a_memory_budget_returns_only_subnets_within_it(
        run_nas: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = get_space(SPACE)
    monkeypatch.chdir(tmp_path)
    budget = round(_mib(sp.middle(), 16), 4)  # between the smallest and the largest
    assert _mib(sp.smallest(), 16) < budget < _mib(sp.largest(), 16)
    code, out, err = run_nas(["search", "--space", SPACE, "--proxy", "nonembedding-params",
                              "-O", "accuracy", "-O", "macs", "-C", f"memory:16={budget}",
                              "--generations", "20", "--no-progress"])
    assert code == 0, err
    assert "engine: predictor" in err
    assert f"memory:16 <= {budget:g} MiB" in " ".join(out.split())
    name = f"{SPACE}-accuracy-macs-predictor-s0"
    res = load_results(name, str(tmp_path / f"runs/studies/{name}.journal"))
    assert res.front
    archs = [sp.parse(t.arch) for t in res.front]
    exact = [_mib(a, 16) for a in archs]
    assert all(m <= budget for m in exact)
    # what the study stores is the space's exact count
    assert [t.memory_mib["memory:16"] for t in res.front] == exact
    assert all(t.feasible == (t.memory_mib["memory:16"] <= budget) for t in res.trials)
    # the budget binds: subnets above it were scored, and none is on the front
    assert any(not t.feasible for t in res.trials)
    assert sp.largest().hash not in {a.hash for a in archs}
    rows = res.rows()
    assert rows[0]["memory_mib:memory:16"] == exact[0]


def test_memory_as_an_objective(run_nas: Any, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    sp = get_space(SPACE)
    # alone, the best subnet is the smallest (memory grows with every choice)
    res = specialize(SPACE, objectives=["memory"], proxy="nonembedding-params",
                     generations=10)
    assert res.front[0]["arch"] == sp.smallest().to_dict()
    assert res.front[0]["memory_mib"] == {"memory": _mib(sp.smallest())}
    # with accuracy: a front between the two ends, each value the exact count, and the
    # best within each budget under it
    res = specialize(SPACE, objectives=["accuracy", "memory"], proxy="nonembedding-params",
                     generations=20, budgets={"memory": [0.03, 0.1]})
    values = [f["memory_mib"]["memory"] for f in res.front]
    assert values == [_mib(f["arch"]) for f in res.front]
    assert {sp.smallest().hash, sp.largest().hash} <= {f["arch_hash"] for f in res.front}
    for b in (0.03, 0.1):
        best = res.best[f"memory<={b:g}"]
        assert best is not None
        assert best["memory_mib"]["memory"] <= b
    # from the command line, the front's table has the memory column, in MiB
    monkeypatch.chdir(tmp_path)
    code, out, err = run_nas(["search", "--space", SPACE, "--proxy", "nonembedding-params",
                              "-O", "accuracy", "-O", "memory", "--generations", "10",
                              "--no-progress", "--json"])
    assert code == 0, err
    got = json.loads(out)
    assert [o["label"] for o in got["objectives"]] == ["accuracy", "memory (MiB)"]
    for t in got["front"]:
        assert t["values"]["memory"] == t["memory_mib"]["memory"] == _mib(t["arch"])


# ---------------------------------------------------------------------- the Ray engine's parts
def test_the_ray_engine_s_evaluator_and_ledger_record_memory() -> None:
    """What the Ray engine's actors run, in this process: an Evaluator scores memory, the
    ledger tells it to the study as the objective and the constraint."""
    from nas.search._study import Ledger
    from nas.search._worker import Evaluator

    sp = get_space(SPACE)
    cfg = SearchConfig.load(space=SPACE, proxy="nonembedding-params", engine="ray",
                            objectives=["accuracy", "memory:8"], constraints={"memory": 0.05},
                            storage="unused.journal")
    archs = [sp.smallest(), sp.largest()]
    results = Evaluator(cfg.model_dump(), {}).evaluate([a.to_dict() for a in archs])
    for a, r in zip(archs, results, strict=True):
        assert r["memory_mib"] == {"memory:8": _mib(a, 8), "memory": _mib(a)}
    study = optuna.create_study(directions=["maximize", "minimize"])
    led = Ledger(cfg=cfg, study=study)
    for a, r in zip(archs, results, strict=True):
        led.tell(study.ask(), a, r)
    small, big = study.get_trials()
    assert small.values[1] == _mib(archs[0], 8)
    assert small.user_attrs["memory_mib"] == results[0]["memory_mib"]
    assert np.isclose(small.constraints["memory"], (_mib(archs[0]) - 0.05) / 0.05)
    assert small.constraints["memory"] <= 0 < big.constraints["memory"]
