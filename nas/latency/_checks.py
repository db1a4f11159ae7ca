"""What every latency predictor kind must do beyond the shared plug-in contract, as check
functions (in the spirit of scikit-learn's ``check_estimator`` / ``parametrize_with_checks``).

:data:`CHECKS` is the registry's own checks (``Registry(checks=...)`` of
:data:`~nas.latency.PREDICTORS`): :mod:`nas.testing` runs them after the contract every
plug-in meets, on a kind's class, in this package's tests and in any plug-in package's.
Each runs on tiny synthetic data of the ``tiny`` space in well under a second and raises
``AssertionError`` naming what is broken. Kinds that need a lookup table get a synthetic one
(no block is timed). The checks fit on the ofa family's spaces; a kind whose ``tags`` leave
that family out is told so by each check that fits.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from nas._plugin import applies_to, check_estimator_options
from nas.errors import ArchitectureError, NASError, NotFittedError
from nas.latency._features import layer_features
from nas.latency._lut import lut_grid, lut_keys, lut_to_arrays
from nas.latency._predictors import LatencyPredictor
from nas.measure import regression_metrics
from nas.space import Architecture, get_space

__all__ = ["CHECKS", "synthetic_table"]

#: a latency predictor kind (the class registered)
Kind = type[LatencyPredictor]

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


def _make(cls: Kind, **params: Any) -> LatencyPredictor:
    family = getattr(get_space(SPACE), "family", "ofa")
    _expect(applies_to(cls, family),
            f"{cls.__name__} applies to {sorted(cls.tags)} spaces; these checks fit on the "
            f"{family!r} family's space {SPACE!r} only")
    if cls.needs_table:
        params.setdefault("table", synthetic_table(SPACE))
    return cls.create(SPACE, **params)


def _fitted(cls: Kind) -> LatencyPredictor:
    archs, y = _data()
    return _make(cls).fit(archs[:N_TRAIN], y[:N_TRAIN])


# ---------------------------------------------------------------------- the checks
def check_is_latency_predictor(cls: Kind) -> None:
    """A :class:`LatencyPredictor` subclass whose ``kind`` (the database's key) is its
    ``name``."""
    _expect(isinstance(cls, type) and issubclass(cls, LatencyPredictor),
            f"{cls!r} is not a LatencyPredictor subclass")
    _expect(cls.kind == cls.name, f"{cls.__name__}.kind is {cls.kind!r}, its name {cls.name!r}")


def check_options_are_the_init_parameters(cls: Kind) -> None:
    """``__init__`` takes keyword-only parameters with defaults, ``space`` among them;
    ``Options`` has a field per parameter with its default; :meth:`~LatencyPredictor.create`
    refuses an unknown parameter in one line."""
    check_estimator_options(cls, lambda **kw: cls.create(SPACE, **kw))


def check_init_is_keyword_only_and_stores_params(cls: Kind) -> None:
    """``__init__`` only stores its (keyword-only) parameters (scikit-learn's rule: ``clone``
    and ``get_params`` rely on it)."""
    sig = inspect.signature(cls.__init__)
    params = [p for name, p in sig.parameters.items()
              if name != "self" and p.default is not p.empty]
    given = {p.name: copy.deepcopy(p.default) for p in params}
    est = cls(**given)
    got = est.get_params(deep=False)
    for name, value in given.items():
        _expect(got[name] is value, f"{cls.__name__}.__init__ changed parameter {name!r}")
    extra = set(vars(est)) - set(given)
    _expect(not extra, f"{cls.__name__}.__init__ sets more than its parameters: {extra}")


def check_get_params_and_clone(cls: Kind) -> None:
    """``get_params`` gives the parameters; ``clone`` copies them, never the fitted state."""
    from sklearn.base import clone

    est = _make(cls)
    params = est.get_params()
    _expect(params["space"] == SPACE, f"get_params()['space'] is {params['space']!r}")
    twin = clone(est)
    _expect(type(twin) is type(est) and twin.get_params().keys() == params.keys(),
            "clone() does not give the same parameters")
    fresh = clone(_fitted(cls))
    _expect(not hasattr(fresh, "n_train_"), "clone() of a fitted predictor copied its state")


def check_predict_before_fit_raises(cls: Kind) -> None:
    """``predict`` before ``fit`` raises :class:`~nas.errors.NotFittedError`."""
    try:
        _make(cls).predict([get_space(SPACE).smallest()])
    except NotFittedError:
        return
    raise AssertionError("predict() before fit() did not raise NotFittedError")


def check_fit_returns_self(cls: Kind) -> None:
    """``fit`` returns the predictor, fitted on every measurement given."""
    archs, y = _data()
    est = _make(cls)
    _expect(est.fit(archs[:N_TRAIN], y[:N_TRAIN]) is est, "fit() does not return self")
    _expect(est.n_train_ == N_TRAIN, f"n_train_ is {est.n_train_}, fitted on {N_TRAIN}")


def check_predict_shape_finite_positive(cls: Kind) -> None:
    """``predict`` gives ``(n,)`` float64 milliseconds, finite and > 0, the same on
    architectures, ``ArchArrays`` and OFA dicts; ``predict([])`` is empty."""
    archs, _ = _data()
    est = _fitted(cls)
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


def check_refuses_bad_input(cls: Kind) -> None:
    """An architecture of another space, or negative latencies, are refused."""
    archs, y = _data()
    try:
        _fitted(cls).predict([get_space("cifar_mbv3").smallest()])
        raise AssertionError("predict() took an architecture of another space")
    except ArchitectureError:
        pass
    try:
        _make(cls).fit(archs[:5], -y[:5])
        raise AssertionError("fit() took negative latencies")
    except NASError:
        pass


def check_state_round_trip(cls: Kind) -> None:
    """Through JSON (``json_params``, ``get_state``, ``from_state``) it predicts the same."""
    archs, y = _data()
    est = _fitted(cls)
    params = json.loads(json.dumps(est.json_params()))
    state = json.loads(json.dumps(est.get_state()))
    _expect(state.get("kind") == cls.kind, f"get_state()['kind'] is {state.get('kind')!r}")
    back = cls.from_state(params, state, refit_data=(archs[:N_TRAIN], y[:N_TRAIN]))
    _expect(type(back) is type(est), f"restored a {type(back).__name__}")
    probe = get_space(SPACE).sample_many(20, seed=9)
    _expect(np.array_equal(back.predict(probe), est.predict(probe)),
            "the JSON round trip changed the predictions")


def check_refit_is_deterministic(cls: Kind) -> None:
    """Two fits on the same data predict the same (kinds stored by re-fitting rely on it)."""
    probe = get_space(SPACE).sample_many(20, seed=9)
    _expect(np.array_equal(_fitted(cls).predict(probe), _fitted(cls).predict(probe)),
            "two fits on the same data predict differently (a re-fit cannot restore it)")


def check_fits_an_additive_latency(cls: Kind) -> None:
    """Held out, it predicts a latency that is a sum of per-block costs well (MAPE < 0.1,
    Kendall tau > 0.8): what every device's latency roughly is."""
    archs, y = _data()
    m = regression_metrics(y[N_TRAIN:], _fitted(cls).predict(archs[N_TRAIN:]))
    _expect(m["mape"] < 0.1 and m["kendall_tau"] > 0.8,
            f"held-out MAPE {m['mape']:.3f} (want < 0.1), Kendall tau "
            f"{m['kendall_tau']:.3f} (want > 0.8) on a synthetic additive latency")


#: the checks of every latency predictor kind, in order (``Registry(checks=...)``)
CHECKS: tuple[Callable[[Kind], None], ...] = (
    check_is_latency_predictor, check_options_are_the_init_parameters,
    check_init_is_keyword_only_and_stores_params, check_get_params_and_clone,
    check_predict_before_fit_raises, check_fit_returns_self,
    check_predict_shape_finite_positive, check_refuses_bad_input, check_state_round_trip,
    check_refit_is_deterministic, check_fits_an_additive_latency,
)
