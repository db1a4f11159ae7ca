"""What every registered proxy must do, run against each of them.

Parametrized from the registry by :func:`nas.testing.parametrize_with_checks`, as a plug-in
package would: the shared plug-in contract (name, description, Options, tags) and the
proxies' own checks (:mod:`nas.proxies._checks`); scoring with a trained supernet and data
is tested here. A new proxy (one class with ``@register_proxy``) is tested by adding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from nas._data import shipped_supernet
from nas._plugin import applies_to
from nas.errors import ConfigError
from nas.proxies import (
    PROXIES,
    ParamsProxy,
    Proxy,
    ProxyContext,
    list_proxies,
    proxy_class,
    register_proxy,
)
from nas.space import Architecture, get_space
from nas.testing import check_plugin, parametrize_with_checks

NAMES = list_proxies()
#: fewer samples where the defaults are sized for real runs, not tests
FAST: dict[str, dict[str, Any]] = {"predictor": {"n_train": 6}}


@pytest.fixture(params=NAMES)
def cls(request: pytest.FixtureRequest) -> type[Proxy]:
    return proxy_class(request.param)


@pytest.fixture(scope="module")
def shipped_ctx(digits_splits, tmp_path_factory) -> ProxyContext:
    cache = tmp_path_factory.mktemp("contract") / "scores.sqlite"
    return ProxyContext.build("tiny", checkpoint=shipped_supernet(), data=digits_splits,
                              cache=cache, bn_batches=1, bn_batch_size=32, val_limit=64)


def test_there_are_proxies_to_test() -> None:
    assert {"params", "inherited"} <= set(NAMES)


@parametrize_with_checks(PROXIES)
def test_proxy_contract(plugin: Any, check: Any) -> None:
    check(plugin)


def test_the_tags_say_the_spaces_each_applies_to() -> None:
    gpt = {"perplexity", "nonembedding-params"}
    assert all(proxy_class(n).tags == frozenset({"ofa"}) for n in NAMES
               if n not in {"ofa-imagenet", *gpt})
    assert all(proxy_class(n).tags == frozenset({"gpt"}) for n in gpt)
    ofa = proxy_class("ofa-imagenet")
    assert ofa.tags == frozenset({"ofa_mbv3"})
    assert applies_to(ofa, "ofa", "ofa_mbv3")
    assert not applies_to(ofa, "ofa", "tiny")


def test_a_broken_proxy_fails_the_checks_by_name() -> None:
    @register_proxy
    class Broken(ParamsProxy):
        name = "test-broken"
        description = "counts parameters\nin two lines"
        options: ClassVar[dict[str, Any]] = {"scale": 1}

        def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
            return np.zeros((len(archs), 1))

    try:
        with pytest.raises(AssertionError) as info:
            check_plugin(PROXIES, "test-broken")
    finally:
        PROXIES.unregister("test-broken")
    failed = {line.split(":")[0] for line in str(info.value).splitlines()[1:]}
    assert failed == {"check_description", "check_scores_without_a_model",
                      "check_array_scorer"}, str(info.value)


def test_scores_on_the_shipped_tiny_supernet(cls: type[Proxy],
                                             shipped_ctx: ProxyContext) -> None:
    proxy = cls(**FAST.get(cls.name, {}))
    ctx = shipped_ctx
    if "gpt" in cls.tags:  # another family's: refused in one line
        with pytest.raises(ConfigError, match="not space 'tiny'") as info:
            proxy.score(ctx.space.sample_many(2, seed=4), ctx)
        assert "\n" not in str(info.value)
        return  # scored on its own family's spaces in its own tests (tests/proxies/test_lm_*)
    spaces = getattr(cls, "spaces", None)  # a proxy for some spaces only refuses the others
    if spaces is not None and ctx.space.name not in spaces:
        with pytest.raises(ConfigError, match=ctx.space.name) as info:
            proxy.score(ctx.space.sample_many(2, seed=4), ctx)
        assert "\n" not in str(info.value)
        ctx = ProxyContext(space=get_space(spaces[0]))
    archs = ctx.space.sample_many(3, seed=4)
    scores = proxy.score(archs, ctx)
    assert scores.shape == (3,)
    assert scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(proxy.score(archs[::-1], ctx), scores[::-1])
    assert proxy.score([], ctx).shape == (0,)


def test_an_array_scorer_agrees_with_score(cls: type[Proxy],
                                           shipped_ctx: ProxyContext) -> None:
    """A proxy that scores arrays (what lets a search run at predictor speed) gives the
    scores ``score`` gives; one that needs a model says None."""
    proxy = cls(**FAST.get(cls.name, {}))
    spaces = getattr(cls, "spaces", None)
    ctx = shipped_ctx if spaces is None or "tiny" in spaces else \
        ProxyContext(space=get_space(spaces[0]))
    if "gpt" in cls.tags:  # another family's proxy: on its own family's test space
        ctx = ProxyContext(space=get_space("gpt_tiny"))
    fn = proxy.array_scorer(ctx.space)
    if proxy.needs_supernet or proxy.needs_data:
        assert fn is None  # what needs the supernet or data cannot score arrays alone
    if fn is None:
        return
    archs = ctx.space.sample_many(5, seed=9)
    np.testing.assert_allclose(fn(ctx.space.to_arrays(archs)), proxy.score(archs, ctx),
                               rtol=1e-6)
