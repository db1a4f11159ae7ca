"""The contract every latency predictor kind meets, as check functions (in the spirit of
scikit-learn's ``check_estimator`` / ``parametrize_with_checks``).

:func:`predictor_checks` yields ``(name, check)`` for one registered kind; each check runs on
tiny synthetic data of the ``tiny`` space in well under a second and raises
``AssertionError`` naming what is broken. Kinds that need a lookup table get a synthetic one
(no block is timed). ``tests/latency/test_predictor_contract.py`` runs every check against
every kind in :data:`~nas.latency.PREDICTORS`, so a new kind is tested by registering it.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Iterator
from functools import lru_cache, partial
from typing import Any

import numpy as np

from nas.errors import ArchitectureError, NASError, NotFittedError
from nas.latency._features import layer_features
from nas.latency._lut import lut_grid, lut_keys, lut_to_arrays
from nas.latency._predictors import LatencyPredictor, predictor_class, predictor_from_state
from nas.measure import regression_metrics
from nas.space import Architecture, get_space

__all__ = ["predictor_checks", "synthetic_table"]

SPACE = "tiny"
N_TRAIN, N_TEST = 60, 30


def _expect(ok: Any, message: str) -> None:
    # an explicit raise, not `assert`: the checks must hold under `python -O` too
    if not ok:
        raise AssertionError(message)


def synthetic_table(space: str = SPACE) -> dict[str, Any]:
    """A lookup table whose entries are made up from each block's work (no timing): a
    constant per run plus a rate per multiply-accumulate, as if measured."""
    entries = {}
    for key, spec in lut_keys(space, lut_grid(space, None)).items():
        if spec["part"] == "block":
            hw = spec["shape"][1]
            hw_out = (hw - 1) // spec["stride"] + 1
            macs = (hw * hw * spec["cin"] * spec["mid"]
                    + hw_out * hw_out * spec["mid"] * (spec["k"] ** 2 + spec["cout"]))
            entries[key] = 0.02 + 2e-6 * macs
        else:
            entries[key] = 0.05 + 1e-5 * float(np.prod(spec["shape"]))
    return {"version": 1, "device": "synthetic", "space": space,
            "resolutions": lut_grid(space, None), "overhead_ms": 0.005, "entries": entries}


@lru_cache(maxsize=4)
def _data(space: str = SPACE) -> tuple[list[Architecture], np.ndarray]:
    """Subnets and an additive 'latency': the sum of :func:`synthetic_table` over each."""
    sp = get_space(space)
    archs = sp.sample_many(N_TRAIN + N_TEST, seed=0)
    cost, fixed = lut_to_arrays(synthetic_table(space), space)
    y = layer_features(space).gather_sum(cost, fixed, sp.to_arrays(archs))
    return archs, np.asarray(y, dtype=np.float64)


def _make(kind: str, **params: Any) -> LatencyPredictor:
    cls = predictor_class(kind)
    if cls.needs_table:
        params.setdefault("table", synthetic_table(SPACE))
    return cls.create(SPACE, **params)


def _fitted(kind: str) -> LatencyPredictor:
    archs, y = _data()
    return _make(kind).fit(archs[:N_TRAIN], y[:N_TRAIN])


# ---------------------------------------------------------------------- the checks
def check_registered(kind: str) -> None:
    cls = predictor_class(kind)
    _expect(issubclass(cls, LatencyPredictor), f"{cls!r} is not a LatencyPredictor")
    _expect(cls.kind == kind, f"{cls.__name__}.kind is {cls.kind!r}, registered as {kind!r}")
    _expect(cls.summary, f"{cls.__name__} has no summary (the CLI's help shows it)")


def check_init_is_keyword_only_and_stores_params(kind: str) -> None:
    cls = predictor_class(kind)
    sig = inspect.signature(cls.__init__)
    params = [p for name, p in sig.parameters.items() if name != "self"]
    _expect("space" in {p.name for p in params}, f"{cls.__name__}() takes no space")
    for p in params:
        _expect(p.kind is p.KEYWORD_ONLY and p.default is not p.empty,
                f"{cls.__name__}: parameter {p.name!r} must be keyword-only with a default")
    given = {p.name: copy.deepcopy(p.default) for p in params}
    est = cls(**given)
    got = est.get_params(deep=False)
    for name, value in given.items():
        _expect(got[name] is value, f"{cls.__name__}.__init__ changed parameter {name!r}")
    extra = set(vars(est)) - set(given)
    _expect(not extra, f"{cls.__name__}.__init__ sets more than its parameters: {extra}")


def check_get_params_and_clone(kind: str) -> None:
    from sklearn.base import clone

    est = _make(kind)
    params = est.get_params()
    _expect(params["space"] == SPACE, f"get_params()['space'] is {params['space']!r}")
    twin = clone(est)
    _expect(type(twin) is type(est) and twin.get_params().keys() == params.keys(),
            "clone() does not give the same parameters")
    fresh = clone(_fitted(kind))
    _expect(not hasattr(fresh, "n_train_"), "clone() of a fitted predictor copied its state")


def check_predict_before_fit_raises(kind: str) -> None:
    try:
        _make(kind).predict([get_space(SPACE).smallest()])
    except NotFittedError:
        return
    raise AssertionError("predict() before fit() did not raise NotFittedError")


def check_fit_returns_self(kind: str) -> None:
    archs, y = _data()
    est = _make(kind)
    _expect(est.fit(archs[:N_TRAIN], y[:N_TRAIN]) is est, "fit() does not return self")
    _expect(est.n_train_ == N_TRAIN, f"n_train_ is {est.n_train_}, fitted on {N_TRAIN}")


def check_predict_shape_finite_positive(kind: str) -> None:
    archs, _ = _data()
    est = _fitted(kind)
    test = archs[N_TRAIN:]
    on_list = est.predict(test)
    _expect(isinstance(on_list, np.ndarray) and on_list.shape == (N_TEST,)
            and on_list.dtype == np.float64, f"predict() gave {on_list!r}, not ({N_TEST},) f8")
    _expect(np.all(np.isfinite(on_list)) and np.all(on_list > 0),
            "predict() gave a latency that is not finite and > 0")
    on_arrays = est.predict(get_space(SPACE).to_arrays(test))
    _expect(np.allclose(on_arrays, on_list), "predict() differs on ArchArrays and on a list")
    on_dicts = est.predict([a.to_dict() for a in test[:3]])
    _expect(np.allclose(on_dicts, on_list[:3]), "predict() differs on OFA dicts")
    _expect(est.predict([]).shape == (0,), "predict([]) is not an empty array")


def check_refuses_bad_input(kind: str) -> None:
    archs, y = _data()
    try:
        _fitted(kind).predict([get_space("cifar_mbv3").smallest()])
        raise AssertionError("predict() took an architecture of another space")
    except ArchitectureError:
        pass
    try:
        _make(kind).fit(archs[:5], -y[:5])
        raise AssertionError("fit() took negative latencies")
    except NASError:
        pass


def check_state_round_trip(kind: str) -> None:
    archs, y = _data()
    est = _fitted(kind)
    params = json.loads(json.dumps(est.json_params()))
    state = json.loads(json.dumps(est.get_state()))
    back = predictor_from_state(kind, params, state,
                                refit_data=(archs[:N_TRAIN], y[:N_TRAIN]))
    _expect(type(back) is type(est), f"restored a {type(back).__name__}")
    probe = get_space(SPACE).sample_many(20, seed=9)
    _expect(np.array_equal(back.predict(probe), est.predict(probe)),
            "the JSON round trip changed the predictions")


def check_refit_is_deterministic(kind: str) -> None:
    probe = get_space(SPACE).sample_many(20, seed=9)
    _expect(np.array_equal(_fitted(kind).predict(probe), _fitted(kind).predict(probe)),
            "two fits on the same data predict differently (a re-fit cannot restore it)")


def check_fits_an_additive_latency(kind: str) -> None:
    archs, y = _data()
    m = regression_metrics(y[N_TRAIN:], _fitted(kind).predict(archs[N_TRAIN:]))
    _expect(m["mape"] < 0.1 and m["kendall_tau"] > 0.8,
            f"held-out MAPE {m['mape']:.3f} (want < 0.1), Kendall tau "
            f"{m['kendall_tau']:.3f} (want > 0.8) on a synthetic additive latency")


def predictor_checks(kind: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """``(name, check)`` for every check that applies to ``kind``; ``check()`` raises
    ``AssertionError`` when the kind breaks the contract.

    Raises:
        UnknownNameError: ``kind`` is not registered.
    """
    cls = predictor_class(kind)
    checks: list[Callable[[str], None]] = [
        check_registered, check_init_is_keyword_only_and_stores_params,
        check_get_params_and_clone, check_predict_before_fit_raises, check_fit_returns_self,
        check_predict_shape_finite_positive, check_refuses_bad_input, check_state_round_trip,
        check_fits_an_additive_latency,
    ]
    if not cls.restores_from_state:
        checks.append(check_refit_is_deterministic)
    for fn in checks:
        yield fn.__name__.removeprefix("check_"), partial(fn, kind)
