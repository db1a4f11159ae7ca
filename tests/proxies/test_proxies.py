"""Accuracy proxies: finite scores, fixed signs, the registry, options and the score cache."""

from __future__ import annotations

import numpy as np
import pytest

from nas.errors import ConfigError, UnknownNameError
from nas.proxies import Proxy, ProxyCache, ProxyContext, get_proxy, list_proxies, proxy_class
from nas.proxies import _base as base_mod

FAST = {"predictor": {"n_train": 8}}


def test_every_proxy_gives_one_finite_score_per_architecture(ctx):
    archs = ctx.space.sample_many(5, seed=3)
    assert set(list_proxies()) == {"inherited", "params", "macs", "synflow", "naswot", "zico",
                                   "predictor", "ofa-imagenet", "perplexity",
                                   "nonembedding-params"}
    for name in list_proxies():
        if ctx.space.name not in getattr(proxy_class(name), "spaces", (ctx.space.name,)) \
                or "ofa" not in proxy_class(name).tags | {"ofa_mbv3"}:
            continue  # a proxy for other spaces (the contract suite checks it refuses)
        s = get_proxy(name, **FAST.get(name, {})).score(archs, ctx)
        assert s.shape == (5,), name
        assert s.dtype == np.float64, name
        assert np.all(np.isfinite(s)), name
    for name in ("synflow", "naswot", "zico"):
        s = get_proxy(f"{name}:weights=inherited").score(archs, ctx)
        assert np.all(np.isfinite(s)), name


@pytest.mark.parametrize("name", ["params", "macs", "synflow"])
def test_sign_convention_ranks_the_largest_above_the_smallest(ctx, name):
    sp = ctx.space
    big, small = get_proxy(name).score([sp.largest(), sp.smallest()], ctx)
    assert big > small


def test_inherited_is_an_accuracy(ctx):
    s = get_proxy("inherited").score([ctx.space.largest(), ctx.space.smallest()], ctx)
    assert np.all((s >= 0) & (s <= 1))
    # 64 validation images: a multiple of 1/64
    np.testing.assert_allclose(s * 64, np.round(s * 64), atol=1e-9)


def test_scores_are_cached_by_checkpoint_arch_and_proxy(ctx, monkeypatch):
    archs = ctx.space.sample_many(3, seed=1)
    first = get_proxy("zico").score(archs, ctx)
    first_inh = get_proxy("inherited").score(archs, ctx)

    def boom(self, archs, ctx):
        raise AssertionError("computed again")

    monkeypatch.setattr(type(get_proxy("zico")), "_score", boom)
    monkeypatch.setattr(type(get_proxy("inherited")), "_score", boom)
    np.testing.assert_array_equal(get_proxy("zico").score(archs, ctx), first)
    np.testing.assert_array_equal(get_proxy("inherited").score(archs[::-1], ctx),
                                  first_inh[::-1])
    with pytest.raises(AssertionError, match="computed again"):  # other options: other key
        get_proxy("zico:batch_size=32").score(archs, ctx)
    rows = ctx.cache._conn.execute("SELECT DISTINCT checkpoint FROM scores").fetchall()
    assert {r[0] for r in rows} == {"none", ctx.checkpoint_key}  # init-weight zico: "none"
    assert len(ctx.checkpoint_key) == 64


def test_zero_cost_scores_are_deterministic(tiny_checkpoint, digits_splits):
    archs = [a for a in ProxyContext.build("tiny", cache=False).space.sample_many(3, seed=2)]
    scores = []
    for _ in range(2):
        c = ProxyContext.build("tiny", checkpoint=tiny_checkpoint, data=digits_splits,
                               cache=False)
        scores.append([get_proxy(n).score(archs, c) for n in ("synflow", "naswot", "zico")])
    np.testing.assert_allclose(scores[0], scores[1])


def test_registry_errors_list_what_is_known(ctx):
    with pytest.raises(UnknownNameError, match="unknown proxy 'flops'; known: "
                       "inherited, macs, naswot"):
        get_proxy("flops")
    with pytest.raises(ConfigError, match=r"no option\(s\) \['batch'\]; allowed: "
                       r"\['batch_size', 'weights'\]"):
        get_proxy("naswot:batch=3")
    with pytest.raises(ConfigError, match="must be one of \\['init', 'inherited'\\]"):
        get_proxy("synflow:weights=trained")
    with pytest.raises(ConfigError, match="must be a int"):
        get_proxy("zico:batches=two")
    assert get_proxy("zico:batches=3").spec == "zico:batches=3"
    with pytest.raises(ConfigError, match="already registered"):
        base_mod.register_proxy(type("Dup", (Proxy,), {"name": "params",
                                                       "_score": lambda s, a, c: a}))


def test_missing_checkpoint_or_data_is_a_clear_error():
    bare = ProxyContext.build("tiny", cache=False)
    archs = bare.space.sample_many(2, seed=0)
    assert np.all(get_proxy("synflow").score(archs, bare) > 0)  # data-free, no weights
    with pytest.raises(ConfigError, match="needs a trained supernet: pass --checkpoint"):
        get_proxy("inherited").score(archs, bare)
    with pytest.raises(ConfigError, match="needs data: pass --data"):
        get_proxy("naswot").score(archs, bare)


def test_cache_file_round_trip(tmp_path):
    with ProxyCache(tmp_path / "c.sqlite") as c:
        c.put("ck", "p", {"a": 1.5, "b": 2.0})
        assert c.get("ck", "p", ["a", "b", "z"]) == {"a": 1.5, "b": 2.0}
        assert c.get("other", "p", ["a"]) == {}


def test_scores_of_a_shipped_supernet_are_cached_outside_the_package(tmp_path, monkeypatch):
    from nas._data import shipped_supernet
    from nas.proxies import default_cache_path

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    assert default_cache_path(shipped_supernet()) == tmp_path / "proxies.sqlite"
    ck = tmp_path / "mine.safetensors"
    assert default_cache_path(ck) == tmp_path / "mine.safetensors.proxies.sqlite"
