"""What every accuracy proxy and every accuracy predictor must do beyond the shared plug-in
contract, as check functions (in the spirit of scikit-learn's ``check_estimator`` /
``parametrize_with_checks``).

:data:`PROXY_CHECKS` and :data:`ACCURACY_PREDICTOR_CHECKS` are the registries' own checks
(``Registry(checks=...)`` of :data:`~nas.proxies.PROXIES` and
:data:`~nas.proxies.ACCURACY_PREDICTORS`): :mod:`nas.testing` runs them after the contract
every plug-in meets, on the class registered, in this package's tests and in any plug-in
package's. They need no trained supernet and no data: a proxy that needs neither is also
scored, on a space its ``tags`` apply to; scoring with a supernet and data is left to the
tests that have them (``tests/proxies/test_proxy_contract.py``). An accuracy predictor is
fitted on synthetic accuracies of the ``tiny`` space's subnets, in about a second. Each check
raises ``AssertionError`` naming what is broken.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, cast

import numpy as np

from nas._plugin import applies_to, check_estimator_options
from nas.errors import ConfigError, NASError, NotFittedError
from nas.proxies._base import Proxy, ProxyContext, get_proxy
from nas.proxies._predictors import (
    AccuracyPredictor,
    accuracy_predictor_from_state,
    accuracy_predictor_state,
    make_accuracy_predictor,
)
from nas.space import SPACES, Architecture, SearchSpace, get_space

__all__ = ["ACCURACY_PREDICTOR_CHECKS", "PROXY_CHECKS", "other_option_value"]

#: a proxy (the class registered)
ProxyClass = type[Proxy]

#: the space a proxy is scored on when it applies to it
SPACE = "tiny"


def _expect(ok: Any, message: str) -> None:
    # an explicit raise, not `assert`: the checks must hold under `python -O` too
    if not ok:
        raise AssertionError(message)


def other_option_value(cls: ProxyClass, key: str, default: Any) -> str | None:
    """A valid value of option ``key`` other than its ``default``, as text (the
    ``name:key=value`` form), or None for free text (a path has no generic other value)."""
    choices = cls.option_choices().get(key)
    if choices:
        return next((c for c in choices if c != default), None)
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, int | float):
        return str(default + 1)
    return None


def _spaces(cls: ProxyClass) -> tuple[list[SearchSpace], list[SearchSpace]]:
    """The registered spaces the proxy applies to (``tiny`` first) and those it does not."""
    # every family's spaces: a proxy refuses those outside its tags (Proxy._check_tags)
    spaces = cast(list[SearchSpace], [sp for _, sp in SPACES.items()])
    fits = [sp for sp in spaces if applies_to(cls, sp.family, sp.name)]
    fits.sort(key=lambda sp: sp.name != SPACE)
    return fits, [sp for sp in spaces if sp not in fits]


def _needs_a_model(proxy: Proxy) -> bool:
    return proxy.uses_weights() or proxy.needs_data


def _score(proxy: Proxy, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
    """``proxy.score``; the error it raises on scores of a bad shape or not finite, as the
    check's failure."""
    try:
        return proxy.score(archs, ctx)
    except NASError as exc:
        raise AssertionError(f"score() raised {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------- the checks
def check_is_proxy(cls: ProxyClass) -> None:
    """A :class:`Proxy` subclass that says what it needs, whose choices are of its options
    and hold their defaults."""
    _expect(isinstance(cls, type) and issubclass(cls, Proxy), f"{cls!r} is not a Proxy subclass")
    _expect(isinstance(cls.needs_supernet, bool) and isinstance(cls.needs_data, bool),
            f"{cls.__name__}: needs_supernet and needs_data must be bools")
    for key, values in cls.option_choices().items():
        _expect(key in cls.options, f"{cls.__name__}: choices of {key!r}, not an option")
        _expect(cls.options[key] in values,
                f"{cls.__name__}: option {key!r} defaults to {cls.options[key]!r}, not one of "
                f"its choices {list(values)}")


def check_options_model_is_the_options(cls: ProxyClass) -> None:
    """``Options`` has a field per option, defaulting to the option's default."""
    fields = cls.Options.model_fields
    _expect(set(fields) == set(cls.options), f"{cls.__name__}.Options has fields "
            f"{sorted(fields)}, its options are {sorted(cls.options)}")
    for key, default in cls.options.items():
        got = fields[key].default
        _expect(got == default and type(got) is type(default),
                f"{cls.__name__}.Options.{key} defaults to {got!r}, its option to {default!r}")


def check_default_options(cls: ProxyClass) -> None:
    """Built with no options it has the defaults, its spec is its name, and the spec builds
    the same proxy."""
    proxy = cls()
    _expect(proxy.opts == cls.options, f"{cls.__name__}() has options {proxy.opts}, its "
            f"defaults are {cls.options}")
    _expect(proxy.spec == cls.name, f"{cls.__name__}().spec is {proxy.spec!r}, not its name")
    _expect(get_proxy(cls.name).opts == proxy.opts, f"get_proxy({cls.name!r}) differs from "
            f"{cls.__name__}()")


def check_spec_round_trips(cls: ProxyClass) -> None:
    """With every option changed (those with a generic other value), its spec builds the
    same proxy."""
    changed = {k: v for k, d in cls.options.items()
               if (v := other_option_value(cls, k, d)) is not None}
    proxy = cls(**changed)
    same = [k for k in changed if proxy.opts[k] == cls.options[k]]
    _expect(not same, f"{cls.__name__}: option(s) {same} kept their default when changed")
    again = get_proxy(proxy.spec)
    _expect(type(again) is cls and again.opts == proxy.opts and again.spec == proxy.spec,
            f"the spec {proxy.spec!r} builds {again!r}, not {proxy!r}")


def _refused(cls: ProxyClass, options: dict[str, Any], want: str) -> None:
    try:
        cls(**options)
    except ConfigError as exc:
        text = str(exc)
        _expect("\n" not in text and want in text,
                f"{cls.__name__}(**{options}) gave {text!r}, not one line saying {want!r}")
    else:
        raise AssertionError(f"{cls.__name__}(**{options}) was accepted")


def check_bad_options_are_one_line(cls: ProxyClass) -> None:
    """An unknown option, a number that is not one and a string outside its choices are
    each refused in one :class:`~nas.errors.ConfigError` line naming them."""
    _refused(cls, {"no_such_option": 1}, "has no option(s) ['no_such_option']")
    for key, default in cls.options.items():
        if isinstance(default, int | float) and not isinstance(default, bool):
            _refused(cls, {key: "x"}, f"{key} = 'x': must be a")
    for key in cls.option_choices():
        _refused(cls, {key: "no-such-choice"}, "must be one of")


def check_scores_without_a_model(cls: ProxyClass) -> None:
    """One that needs neither a supernet nor data scores a space it applies to: ``(n,)``
    finite float64 scores, the same in any order, none for no architectures; it refuses a
    space outside its tags in one line."""
    proxy = cls()
    fits, others = _spaces(cls)
    _expect(fits, f"{cls.__name__} applies to {sorted(cls.tags)}: no registered space")
    if _needs_a_model(proxy):
        return
    ctx = ProxyContext(space=fits[0], cache=None)
    archs = ctx.space.sample_many(3, seed=4)
    scores = _score(proxy, archs, ctx)
    _expect(isinstance(scores, np.ndarray) and scores.shape == (3,)
            and scores.dtype == np.float64 and np.all(np.isfinite(scores)),
            f"score() gave {scores!r}, not 3 finite float64 scores")
    _expect(np.allclose(_score(proxy, archs[::-1], ctx), scores[::-1], rtol=1e-6),
            "score() depends on the order of the architectures")
    _expect(_score(proxy, [], ctx).shape == (0,), "score([]) is not an empty array")
    for sp in others[:1]:
        try:
            proxy.score(sp.sample_many(2, seed=4), ProxyContext(space=sp, cache=None))
        except ConfigError as exc:
            _expect("\n" not in str(exc) and sp.name in str(exc),
                    f"scoring space {sp.name!r} gave {str(exc)!r}, not one line naming it")
        else:
            raise AssertionError(f"{cls.__name__} (tags {sorted(cls.tags)}) scored space "
                                 f"{sp.name!r}")


def check_array_scorer(cls: ProxyClass) -> None:
    """A proxy that needs a supernet or data scores no arrays alone (None); one that gives an
    array scorer gives the scores :meth:`~Proxy.score` gives."""
    proxy = cls()
    fits, _ = _spaces(cls)
    if not fits:
        return  # check_scores_without_a_model says so
    space = fits[0]
    fn = proxy.array_scorer(space)
    if _needs_a_model(proxy):
        _expect(fn is None, f"{cls.__name__} needs a supernet or data but scores arrays")
    if fn is None:
        return
    archs = space.sample_many(5, seed=9)
    got = np.asarray(fn(space.to_arrays(archs)))
    want = _score(proxy, archs, ProxyContext(space=space, cache=None))
    _expect(got.shape == want.shape and np.allclose(got, want, rtol=1e-6),
            "array_scorer() differs from score()")


#: the checks of every proxy, in order (``Registry(checks=...)`` of PROXIES)
PROXY_CHECKS: tuple[Callable[[ProxyClass], None], ...] = (
    check_is_proxy, check_options_model_is_the_options, check_default_options,
    check_spec_round_trips, check_bad_options_are_one_line, check_scores_without_a_model,
    check_array_scorer,
)


# ---------------------------------------------------------------------- accuracy predictors
#: an accuracy predictor kind (the class registered)
Kind = type[AccuracyPredictor]

N_TRAIN, N_PROBE = 40, 10


@lru_cache(maxsize=1)
def _accuracy_data() -> tuple[list[Architecture], np.ndarray, list[Architecture]]:
    """Subnets of ``tiny``, a made-up accuracy that grows with kernels, expansion and
    resolution, and other subnets to predict."""
    sp = get_space(SPACE)
    archs = sp.sample_many(N_TRAIN, seed=0)
    a = sp.to_arrays(archs)
    y = 0.5 + 0.01 * a.ks.sum(1) + 0.02 * a.e.sum(1) + 0.001 * a.r
    return archs, np.asarray(y, dtype=np.float64), sp.sample_many(N_PROBE, seed=1)


def _make(cls: Kind, **params: Any) -> AccuracyPredictor:
    family = getattr(get_space(SPACE), "family", "ofa")
    _expect(applies_to(cls, family, SPACE),
            f"{cls.__name__} applies to {sorted(cls.tags)} spaces; these checks fit on the "
            f"{family!r} family's space {SPACE!r} only")
    return make_accuracy_predictor(cls.name, space=SPACE, **params)


def _fitted(cls: Kind) -> AccuracyPredictor:
    archs, y, _ = _accuracy_data()
    return _make(cls).fit(archs, y)


def check_is_accuracy_predictor(cls: Kind) -> None:
    """An :class:`AccuracyPredictor` subclass whose ``kind`` (what a saved file stores) is its
    ``name``, and that the ``predictor`` proxy offers."""
    _expect(isinstance(cls, type) and issubclass(cls, AccuracyPredictor),
            f"{cls!r} is not an AccuracyPredictor subclass")
    _expect(cls.kind == cls.name, f"{cls.__name__}.kind is {cls.kind!r}, its name {cls.name!r}")
    _expect(isinstance(cls.takes_extra_features, bool),
            f"{cls.__name__}.takes_extra_features must be a bool")
    proxy = get_proxy(f"predictor:kind={cls.name}")
    _expect(proxy.opts["kind"] == cls.name, f"the predictor proxy does not offer {cls.name!r}")


def check_accuracy_options_are_the_init_parameters(cls: Kind) -> None:
    """``__init__`` takes keyword-only parameters with defaults, ``space`` among them;
    ``Options`` has a field per parameter with its default; an unknown parameter is refused
    in one line naming it."""
    check_estimator_options(cls, lambda **kw: make_accuracy_predictor(cls.name, **kw))


def check_accuracy_estimator_protocol(cls: Kind) -> None:
    """``predict`` before ``fit`` raises :class:`~nas.errors.NotFittedError`; ``get_params``
    gives the space; ``clone`` copies the parameters, never the fitted state."""
    from sklearn.base import clone

    _, _, probe = _accuracy_data()
    est = _make(cls)
    try:
        est.predict(probe)
    except NotFittedError:
        pass
    else:
        raise AssertionError("predict() before fit() did not raise NotFittedError")
    params = est.get_params()
    _expect(params["space"] == SPACE, f"get_params()['space'] is {params['space']!r}")
    _expect(clone(est).get_params() == params, "clone() does not give the same parameters")
    _expect(not hasattr(clone(_fitted(cls)), "n_train_"),
            "clone() of a fitted predictor copied its state")


def check_accuracy_fit_and_predict(cls: Kind) -> None:
    """``fit`` returns the predictor; ``predict`` gives ``(n,)`` finite float64 accuracies,
    the same on architectures and on their encoding; ``predict([])`` is empty."""
    archs, y, probe = _accuracy_data()
    est = _make(cls)
    _expect(est.fit(archs, y) is est, "fit() does not return self")
    _expect(est.n_train_ == N_TRAIN and est.n_features_in_ == est.encoding_size(),
            f"fitted on {N_TRAIN} subnets, n_train_ is {est.n_train_} and n_features_in_ "
            f"{est.n_features_in_} (its encoding has {est.encoding_size()} columns)")
    pred = est.predict(probe)
    _expect(isinstance(pred, np.ndarray) and pred.shape == (N_PROBE,)
            and pred.dtype == np.float64 and np.all(np.isfinite(pred)),
            f"predict() gave {pred!r}, not ({N_PROBE},) finite float64")
    _expect(np.allclose(est.predict(est.encode(probe)), pred),
            "predict() differs on architectures and on their encoding")
    _expect(est.predict([]).shape == (0,), "predict([]) is not an empty array")


def check_accuracy_state_round_trip(cls: Kind) -> None:
    """Through JSON (:func:`~nas.proxies.accuracy_predictor_state` and back) it has the same
    parameters and predicts the same; an unfitted one has no state."""
    _, _, probe = _accuracy_data()
    est = _fitted(cls)
    state = json.loads(json.dumps(accuracy_predictor_state(est, note="contract")))
    _expect(state.get("kind") == cls.name, f"the state's kind is {state.get('kind')!r}")
    back = accuracy_predictor_from_state(state)
    _expect(type(back) is type(est) and back.get_params() == est.get_params(),
            f"restored {back!r}, not {est!r}")
    _expect(np.allclose(back.predict(probe), est.predict(probe), rtol=1e-6, atol=1e-9),
            "the JSON round trip changed the predictions")
    try:
        accuracy_predictor_state(_make(cls))
    except NotFittedError:
        return
    raise AssertionError("an unfitted predictor gave a state")


#: the checks of every accuracy predictor, in order (``Registry(checks=...)``)
ACCURACY_PREDICTOR_CHECKS: tuple[Callable[[Kind], None], ...] = (
    check_is_accuracy_predictor, check_accuracy_options_are_the_init_parameters,
    check_accuracy_estimator_protocol, check_accuracy_fit_and_predict,
    check_accuracy_state_round_trip,
)
