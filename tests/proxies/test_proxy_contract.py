"""What every registered proxy must do, run against each of them.

Parametrized from the registry: a new proxy (one class with ``@register_proxy``) is tested by
adding it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nas._data import shipped_supernet
from nas.errors import ConfigError
from nas.proxies import Proxy, ProxyContext, get_proxy, list_proxies, proxy_class
from nas.space import get_space

PROXIES = list_proxies()
#: fewer samples where the defaults are sized for real runs, not tests
FAST: dict[str, dict[str, Any]] = {"predictor": {"n_train": 6}}


@pytest.fixture(params=PROXIES)
def cls(request: pytest.FixtureRequest) -> type[Proxy]:
    return proxy_class(request.param)


@pytest.fixture(scope="module")
def shipped_ctx(digits_splits, tmp_path_factory) -> ProxyContext:
    cache = tmp_path_factory.mktemp("contract") / "scores.sqlite"
    return ProxyContext.build("tiny", checkpoint=shipped_supernet(), data=digits_splits,
                              cache=cache, bn_batches=1, bn_batch_size=32, val_limit=64)


def _other_value(cls: type[Proxy], key: str, default: Any) -> Any:
    """A valid non-default value of an option, as text (the ``name:key=value`` form)."""
    choices = cls.option_choices().get(key)
    if choices:
        return next(c for c in choices if c != default)
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, int | float):
        return str(default + 1)
    return None  # free text (a path): no generic other value


def test_there_are_proxies_to_test() -> None:
    assert {"params", "inherited"} <= set(PROXIES)


def test_class_says_what_it_is_and_needs(cls: type[Proxy]) -> None:
    assert cls.name in PROXIES and proxy_class(cls.name) is cls
    assert cls.description
    assert isinstance(cls.needs_supernet, bool) and isinstance(cls.needs_data, bool)
    for key, values in cls.option_choices().items():
        assert key in cls.options and cls.options[key] in values


def test_options_are_default_constructible(cls: type[Proxy]) -> None:
    proxy = cls()
    assert proxy.opts == cls.options
    assert proxy.spec == cls.name
    assert get_proxy(cls.name).opts == proxy.opts


def test_spec_round_trips_with_every_option_changed(cls: type[Proxy]) -> None:
    changed = {k: v for k, d in cls.options.items()
               if (v := _other_value(cls, k, d)) is not None}
    proxy = cls(**changed)
    assert all(proxy.opts[k] != cls.options[k] for k in changed)
    again = get_proxy(proxy.spec)
    assert type(again) is cls and again.opts == proxy.opts and again.spec == proxy.spec


def test_unknown_options_and_bad_values_are_one_line_errors(cls: type[Proxy]) -> None:
    with pytest.raises(ConfigError, match=r"has no option\(s\) \['no_such_option'\]"):
        cls(no_such_option=1)
    for key, default in cls.options.items():
        if isinstance(default, int | float) and not isinstance(default, bool):
            with pytest.raises(ConfigError, match=f"{key} = 'x': must be a") as info:
                cls(**{key: "x"})
            assert "\n" not in str(info.value)
    for key, values in cls.option_choices().items():
        with pytest.raises(ConfigError, match=f"must be one of {values[0]!r}|must be one of"):
            cls(**{key: "no-such-choice"})


def test_scores_on_the_shipped_tiny_supernet(cls: type[Proxy],
                                             shipped_ctx: ProxyContext) -> None:
    proxy = cls(**FAST.get(cls.name, {}))
    ctx = shipped_ctx
    spaces = getattr(cls, "spaces", None)  # a proxy for some spaces only refuses the others
    if spaces is not None and ctx.space.name not in spaces:
        with pytest.raises(ConfigError, match=ctx.space.name) as info:
            proxy.score(ctx.space.sample_many(2, seed=4), ctx)
        assert "\n" not in str(info.value)
        ctx = ProxyContext(space=get_space(spaces[0]))
    archs = ctx.space.sample_many(3, seed=4)
    scores = proxy.score(archs, ctx)
    assert scores.shape == (3,) and scores.dtype == np.float64
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
    fn = proxy.array_scorer(ctx.space)
    if proxy.needs_supernet or proxy.needs_data:
        assert fn is None  # what needs the supernet or data cannot score arrays alone
    if fn is None:
        return
    archs = ctx.space.sample_many(5, seed=9)
    np.testing.assert_allclose(fn(ctx.space.to_arrays(archs)), proxy.score(archs, ctx),
                               rtol=1e-6)
