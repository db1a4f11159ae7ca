"""Searches on a space of the ``gpt`` family: the search reaches the space only through its
family's interface, so a gpt space is searched as an ofa one is, with what prices it (the
training-free ``nonembedding-params`` proxy, MACs, params), and what does not exist for it
yet (latency predictors) is refused in one line. The Ray engine's gpt search is in
``test_search_ray.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.errors import ConfigError
from nas.proxies import ProxyContext, get_proxy
from nas.search import (
    SearchConfig,
    arch_from_params,
    distributions,
    load_results,
    params_from_arch,
    specialize,
)
from nas.space import get_space

SPACE = "gpt_tiny"


def _nas(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("nas")), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_a_gpt_search_on_the_predictor_engine_from_the_cli(tmp_path: Path) -> None:
    out = _nas(["search", "--space", SPACE, "--proxy", "nonembedding-params",
                "-O", "accuracy", "-O", "macs", "--generations", "20", "--no-progress"],
               tmp_path)
    assert out.returncode == 0, out.stderr
    assert "engine: predictor" in out.stderr
    name = f"{SPACE}-accuracy-macs-predictor-s0"
    res = load_results(name, str(tmp_path / f"runs/studies/{name}.journal"))
    sp = get_space(SPACE)
    archs = [sp.parse(t.arch) for t in res.front]  # every one a valid gpt architecture
    assert archs
    assert set(res.front[0].arch) == {"n_layer", "n_embd", "n_head", "mlp"}
    # the stored values are the proxy's and the space's own
    score = get_proxy("nonembedding-params").score(archs, ProxyContext(space=sp, cache=None))
    assert [t.accuracy for t in res.front] == score.tolist()
    assert [t.macs for t in res.front] == [sp.macs(a) for a in archs]
    assert [t.params for t in res.front] == [sp.params(a) for a in archs]
    # a front: none dominates another, and the two ends of the space are on it
    for t in res.front:
        assert not any(u.accuracy >= t.accuracy and u.macs <= t.macs
                       and (u.accuracy, u.macs) != (t.accuracy, t.macs) for u in res.front)
    assert {sp.largest().hash, sp.smallest().hash} <= {a.hash for a in archs}


def test_specialize_a_gpt_space_within_a_macs_budget() -> None:
    sp = get_space(SPACE)
    bound = float(np.median(sp.costs(sp.sample_many(100, seed=0))["macs"]))
    res = specialize(SPACE, objectives=["accuracy", "params"], proxy="nonembedding-params",
                     constraints={"macs": bound}, generations=20, seed=1)
    assert res.resolutions == []
    assert res.front
    assert all(f["macs"] <= bound for f in res.front)
    best = res.best[f"macs<={bound:g}"]
    assert best is not None
    assert best["accuracy"] == max(f["accuracy"] for f in res.front)
    assert sp.parse(best["arch"]).hash == best["arch_hash"]


def test_optuna_asks_gpt_architectures_by_the_family_s_parameters() -> None:
    """What a Ray search asks: every trial of the family's distributions is an architecture
    of the space, and an architecture enqueued as parameters comes back as itself."""
    sp = get_space(SPACE)
    dists = distributions(sp)
    assert list(dists)[:4] == ["n_layer", "n_embd", "n_head.1", "mlp.1"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    known = sp.sample(seed=3)
    study.enqueue_trial(params_from_arch(sp, known))
    seen = []
    for _ in range(20):
        trial = study.ask(dists)
        arch = arch_from_params(sp, trial.params)
        assert sp.parse(arch.to_dict()) == arch
        seen.append(arch)
        study.tell(trial, float(sp.macs(arch)))
    assert seen[0] == known
    assert len(set(seen)) > 10


@pytest.mark.parametrize(("space", "override", "field", "words"), [
    (SPACE, {"objectives": ["accuracy", "latency:cpu-1t"]}, "objectives",
     "latency:cpu-1t: device 'cpu-1t' has no workload; space 'gpt_tiny' of the 'gpt' family "
     "is timed on a profile that says prefill or decode"),
    (SPACE, {"objectives": ["accuracy"], "constraints": {"latency:cpu-1t": 5.0}},
     "constraints", "latency:cpu-1t: device 'cpu-1t' has no workload"),
    (SPACE, {"objectives": ["accuracy", "latency:cpu-1t-prefill128"]}, "objectives",
     "device 'cpu-1t-prefill128': prefill 128 tokens is longer than the context of space "
     "'gpt_tiny' (32 tokens)"),
    (SPACE, {"objectives": ["accuracy"], "latency_kind": "lut"}, "latency_kind",
     "kind 'lut' does not price space 'gpt_tiny'"),
    ("tiny", {"objectives": ["accuracy", "latency:cpu-1t-decode256"]}, "objectives",
     "device 'cpu-1t-decode256' times a language model (decode at context 256 (KV cache)); "
     "space 'tiny' of the 'ofa' family is timed on a device without a workload"),
])
def test_latency_on_a_device_the_space_cannot_run_is_refused_in_one_line(
        space: str, override: dict, field: str, words: str) -> None:
    proxy = "nonembedding-params" if space == SPACE else "params"
    with pytest.raises(ConfigError) as info:
        SearchConfig.load(space=space, proxy=proxy, **override)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{field} = " in msg
    assert words in msg


def test_the_cli_refuses_a_latency_objective_on_a_gpt_space(tmp_path: Path) -> None:
    out = _nas(["search", "--space", SPACE, "--proxy", "nonembedding-params",
                "-O", "accuracy", "-O", "latency:cpu-1t", "--no-progress"], tmp_path)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    assert "objectives" in lines[0]
    assert "latency:cpu-1t" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_proxy_of_the_other_family_is_refused_in_one_line() -> None:
    from nas.search import check_config

    for space, proxy in ((SPACE, "ofa-imagenet"), ("tiny", "nonembedding-params")):
        cfg = SearchConfig.load(space=space, proxy=proxy, objectives=["accuracy", "macs"])
        with pytest.raises(ConfigError) as info:
            check_config(cfg)
        assert "\n" not in str(info.value)
        assert proxy in str(info.value)


def test_a_gpt_checkpoint_is_checked_in_its_own_format(tmp_path: Path) -> None:
    """A search with a proxy that runs the supernet reads a gpt space's checkpoint in the gpt
    format (an ofa-only reader refused the shipped Shakespeare supernet as 'not a supernet
    checkpoint'), and still refuses another space's in one line."""
    from nas.search._driver import check_config
    from nas.supernet import GPTSupernet, save_gpt_supernet

    ck = save_gpt_supernet(GPTSupernet.from_space(get_space(SPACE)), tmp_path / "t.safetensors")
    check_config(SearchConfig(space=SPACE, proxy="perplexity", checkpoint=str(ck),
                              objectives=["accuracy", "macs"]))
    with pytest.raises(ConfigError, match="is for space 'gpt_tiny', not 'gpt_shakespeare'"):
        check_config(SearchConfig(space="gpt_shakespeare", proxy="perplexity",
                                  checkpoint=str(ck), objectives=["accuracy", "macs"]))
