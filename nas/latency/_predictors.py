"""Latency predictors: scikit-learn estimators from architectures to milliseconds.

Every predictor takes ``X`` as a list of :class:`~nas.space.Architecture` (or OFA dicts, or
JSON) or as :class:`~nas.space.ArchArrays`, and ``y`` in ms. Hyper-parameters are keyword-only
constructor arguments, learned state lives in attributes ending in ``_``, so ``clone``,
``get_params`` and scikit-learn's model selection work (the protocol is
:mod:`nas._estimator`'s: loading a predictor imports no scikit-learn).

Kinds (:data:`PREDICTORS`, built in :mod:`nas.latency._kinds`):

``flops``
    The baseline: latency linear in MACs.
``lut``
    Once-for-All's lookup table: single blocks timed on the device, summed over the subnet,
    then calibrated (scale and offset) on the measurements.
``additive``
    A *learned* lookup table: latency as a sum over layers of per-layer-type costs, linear in
    the MACs of 1x1 convolutions, of depthwise convolutions per kernel size, the activation
    elements written and the operator count, with coefficients shared network-wide
    (unpenalised) plus per-stage and per-slot corrections (ridge-penalised, the penalty
    chosen by exact leave-one-out error). Least squares are weighted by ``1/y^2`` so the fit
    minimises relative error, the measure the targets use.
``gbdt``
    Gradient-boosted trees on the same features, fitting the relative residual of the
    ``flops`` baseline in log space.
``hybrid``
    The lookup table plus a learned residual: the LUT sum and a constant unpenalised, the
    additive features ridge-penalised.
``structure`` (:mod:`nas.latency._structure`)
    Few-shot on one device: non-negative costs per operator, MAC, byte moved and pixel,
    for devices whose latency follows operator count (batch-1 GPUs, small inputs).
``transfer`` (:mod:`nas.latency._transfer`)
    Few-shot: the other devices' predictors mixed and calibrated on a few measurements of
    a new device, falling back to ``flops`` or ``additive`` (by leave-one-out error).

Why ``additive`` is the default learned model: latency in ONNX Runtime on a CPU is a sum of
per-operator times, and each operator's time is close to linear in its work for a given
shape. A model of that form is exact up to the shape effects that the per-stage terms absorb,
extrapolates to subnets and resolutions unseen in training, and needs few measurements; trees
approximate an additive function by steps and need many more. Its prediction is itself a
lookup table ``W[resolution, slot, kernel, expand]``, summed in one vectorised gather.

Storage: predictors are saved as JSON (``get_params`` and :meth:`LatencyPredictor.get_state`)
and never pickled. ``flops``, ``lut``, ``additive`` and ``hybrid`` restore exactly from their
JSON state (coefficients, lookup tables). ``gbdt`` is restored by a deterministic re-fit
(fixed ``random_state``) on the stored measurement ids; its state keeps a few probe
predictions to check that the re-fit reproduced the original.

Adding a kind is one class and one decorator; the contract suite
(``tests/latency/test_predictor_contract.py``, or ``nas.testing.parametrize_with_checks`` in
another package's tests) then tests it too. A kind is a plug-in (:mod:`nas._plugin`): its
``name`` is the key (also readable as ``kind``, the value the database stores), its
``description`` one line, its ``Options`` built from the keyword-only parameters of
``__init__`` (their annotations and defaults), its ``tags`` the space families it prices::

    @PREDICTORS.register
    class MyPredictor(LatencyPredictor):
        name = "mine"
        description = "what it is, in one line"
        tags = frozenset({"ofa"})

        def __init__(self, *, space: str = "ofa_mbv3", weight: float = 1.0) -> None:
            self.space = space
            self.weight = weight

        def _fit(self, a, y): ...
        def _predict(self, a): ...
        def _state(self): ...
        def _set_state(self, state): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nas._config import ConfigModel
from nas._estimator import RegressorEstimator
from nas._plugin import KindPlugin, NoOptions, options_from_init
from nas._registry import Registry
from nas.errors import (
    ArchitectureError,
    ConfigError,
    NASError,
    NotFittedError,
    UnknownNameError,
)
from nas.latency._features import ArchLike, LayerFeatures, as_arrays, layer_features
from nas.space import ArchArrays, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB
    from nas.devices import DeviceProfile

__all__ = [
    "DEFAULT_KIND",
    "PREDICTORS",
    "LatencyPredictor",
    "PredictorOptions",
    "baseline_class",
    "make_predictor",
    "options_model",
    "predictor_class",
    "predictor_from_state",
]

#: The kinds, by name; filled by ``@PREDICTORS.register`` on each class.
PREDICTORS: Registry[type[LatencyPredictor]] = Registry(
    "latency predictor kind", key="name",
    builtins=["nas.latency._kinds", "nas.latency._table", "nas.latency._structure",
              "nas.latency._transfer"],
    checks="nas.latency._checks:CHECKS",
)
#: The kind a user is pointed to first (the CLI's default).
DEFAULT_KIND = "additive"


class PredictorOptions(ConfigModel):
    """Base of a kind's ``Options``: its ``__init__`` parameters as a validated model."""

    what: ClassVar[str] = "latency predictor options"


def options_model(cls: type) -> type[ConfigModel]:
    """The ``Options`` of a kind: :func:`nas._plugin.options_from_init` on
    :class:`PredictorOptions`."""
    return options_from_init(cls, PredictorOptions)


class LatencyPredictor(RegressorEstimator, KindPlugin):
    """Base of the latency predictors (see the module docstring).

    A kind is a subclass registered with ``@PREDICTORS.register`` that sets ``name`` (or
    ``kind``: the two are one value) and ``description``, takes its hyper-parameters
    keyword-only in ``__init__`` (``space`` among them), implements ``_fit(a, y)`` and
    ``_predict(a)`` on :class:`~nas.space.ArchArrays`, and ``_state`` / ``_set_state`` for
    storage. Whatever else is particular to a kind (a device, a lookup table to prepare,
    restoring by re-fitting) it says by overriding the class attributes and class methods
    below; nothing outside the class asks for its kind.

    ``Options`` is made from ``__init__``'s parameters when the class is defined (a class
    may set its own); :meth:`create` and :meth:`fit` check the parameters against it, so a
    bad one is one :class:`~nas.errors.ConfigError` line naming it.
    """

    #: the kind's name in the registry, the database and the CLI (``kind`` is the same)
    name: ClassVar[str] = ""
    #: the same value as ``name``: the key stored with each predictor in the database
    kind: ClassVar[str] = ""
    #: one line for listings and the CLI's help
    description: ClassVar[str] = ""
    #: the typed hyper-parameters (made from ``__init__`` unless the class sets it)
    Options: ClassVar[type[ConfigModel]] = NoOptions
    options_base = PredictorOptions
    #: the space families it prices (empty: every family)
    tags: ClassVar[frozenset[str]] = frozenset()
    #: printed before a fit from the CLI when fitting takes a while (timing a table)
    fit_note: ClassVar[str] = ""
    #: True when the JSON state alone restores the predictor; False: re-fit on stored ids.
    restores_from_state: ClassVar[bool] = True
    #: True for the MACs-linear baseline every other kind is scored against.
    is_baseline: ClassVar[bool] = False
    #: True when fitting needs a lookup table of timed blocks (``table=`` parameter).
    needs_table: ClassVar[bool] = False
    #: True when fitting uses the other devices' predictors (``prepare_params`` gathers them
    #: from the database); such a kind is never itself one of them.
    uses_prior_devices: ClassVar[bool] = False
    #: parameters kept in the state rather than in ``json_params`` (large inputs)
    state_params: ClassVar[tuple[str, ...]] = ()
    space: str

    # -------------------------------------------------------------- construction
    @classmethod
    def create(cls, space: str, device: str | None = None,
               **params: Any) -> LatencyPredictor:
        """A new, unfitted predictor of this kind for ``space``; ``device`` is for kinds
        that time something on it (the others ignore it).

        Raises:
            ConfigError: a parameter this kind does not have, or a bad value (one line).
        """
        return cls.from_options(space=space, **params)

    @classmethod
    def from_options(cls, **params: Any) -> LatencyPredictor:
        """``cls(**params)`` once ``params`` pass :attr:`Options` (the values are kept as
        given, as scikit-learn's ``clone`` expects).

        Raises:
            ConfigError: an unknown parameter or a bad value, in one line.
        """
        cls.Options.from_dict(params, where=cls._where())
        return cls(**params)

    @classmethod
    def _where(cls) -> str:
        return f"latency predictor {cls.name or cls.__name__!r}"

    def options(self) -> ConfigModel:
        """``get_params()`` checked against :attr:`Options` (as :meth:`fit` does).

        Raises:
            ConfigError: a bad value, in one line naming it.
        """
        return self.Options.from_dict(self.get_params(deep=False), where=self._where())

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """The hyper-parameters and their defaults."""
        return dict(cls().get_params(deep=False))

    @classmethod
    def check_fit(cls, profile: DeviceProfile) -> None:
        """Raise :class:`~nas.errors.ConfigError` at once when this kind cannot be fitted for
        the device ``profile`` (e.g. it times blocks, and the device is external); by
        default any device."""

    @classmethod
    def check_fit_ok(cls, profile: DeviceProfile) -> bool:
        """Whether :meth:`check_fit` lets this kind be fitted for ``profile``."""
        try:
            cls.check_fit(profile)
        except ConfigError:
            return False
        return True

    @classmethod
    def prepare_params(cls, params: dict[str, Any], *, db: LatencyDB, device: str,
                       space: str, progress: bool) -> dict[str, Any]:
        """``params`` completed for a fit on stored measurements of ``device`` (e.g. with a
        lookup table from ``db`` or timed anew); by default unchanged."""
        return params

    # -------------------------------------------------------------- sklearn protocol
    def fit(self, X: ArchLike, y: Any) -> LatencyPredictor:
        """Fit on architectures ``X`` and their latencies ``y`` (ms); returns self.

        Raises:
            ArchitectureError: an architecture of another space.
            NASError: ``y`` is not positive and finite, or does not match ``X``.
            ConfigError: a bad hyper-parameter (one line naming it).
        """
        self.options()
        a = self._inputs(X)
        yv = np.asarray(y, dtype=np.float64).ravel()
        if len(yv) != len(a):
            raise NASError(f"X has {len(a)} architectures but y has {len(yv)} latencies")
        if len(yv) < 2:
            raise NASError(f"a latency predictor needs at least 2 measurements, got {len(yv)}")
        if not np.all(np.isfinite(yv) & (yv > 0)):
            raise NASError("y must hold finite latencies > 0 ms")
        self._fit(a, yv)
        self.n_train_ = len(yv)
        self.floor_ = 0.5 * float(yv.min())
        return self

    def predict(self, X: ArchLike) -> np.ndarray:
        """Predicted latency in ms, ``(n,)``.

        Predictions are at least half the smallest training latency, so that a linear model
        extrapolating far outside its data never predicts a negative time.

        Raises:
            NotFittedError: before :meth:`fit`.
            ArchitectureError: an architecture of another space.
        """
        self._check_fitted()
        a = self._inputs(X)
        if len(a) == 0:
            return np.zeros(0)
        # a latency is positive: extrapolating linear terms must not say otherwise
        return np.maximum(np.asarray(self._predict(a), dtype=np.float64), self.floor_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_train_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) first"
            )

    # -------------------------------------------------------------- storage
    def get_state(self) -> dict[str, Any]:
        """The learned state as JSON-serialisable data (see :func:`predictor_from_state`)."""
        self._check_fitted()
        return {"kind": self.kind, "n_train": int(self.n_train_), "floor_ms": self.floor_,
                **self._state()}

    def json_params(self) -> dict[str, Any]:
        """``get_params()`` made JSON-serialisable (tuples as lists, large inputs left out)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in self.get_params(deep=False).items()
                if k not in self.state_params}

    @classmethod
    def init_params(cls, params: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments from stored ``json_params`` (lists back to tuples) and, for
        ``state_params``, the stored state.

        Raises:
            ConfigError: a parameter this kind does not have.
        """
        out = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        known = set(cls.default_params())
        unknown = set(out) - known
        if unknown:
            raise ConfigError(
                f"stored {cls.kind!r} predictor has unknown parameter(s) {sorted(unknown)}"
            )
        out.update({k: state[k] for k in cls.state_params if k in state})
        return out

    @classmethod
    def from_state(cls, params: dict[str, Any], state: dict[str, Any],
                   refit_data: tuple[ArchLike, Any] | None = None) -> LatencyPredictor:
        """A fitted predictor from its stored ``json_params`` and ``get_state`` (see
        :func:`predictor_from_state`); kinds that do not restore from state override it."""
        est = cls(**cls.init_params(params, state))
        est._set_state(state)
        est.n_train_ = int(state.get("n_train", 0))
        est.floor_ = float(state.get("floor_ms", 0.0))
        return est

    # -------------------------------------------------------------- subclass hooks
    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, a: ArchArrays) -> np.ndarray:
        raise NotImplementedError

    def _features(self) -> LayerFeatures:
        return layer_features(self.space)

    def _inputs(self, X: ArchLike) -> Any:
        """``X`` as its family's batch form: :class:`~nas.space.ArchArrays` (validated) for
        an image space, the family's ``to_arrays`` of the parsed architectures otherwise
        (another space's architecture: :class:`~nas.errors.ArchitectureError`)."""
        sp: Any = get_space(self.space)
        if isinstance(sp, SearchSpace):
            return as_arrays(sp, X)
        if hasattr(X, "n_head") and not hasattr(X, "space"):  # the family's arrays (not
            return X  # one architecture, which has n_head too)
        items: list[Any] = [X] if isinstance(X, str | dict) or hasattr(X, "space") else list(
            X)  # type: ignore[arg-type]  # not ArchArrays here: an image space's form
        for i, a in enumerate(items):
            if hasattr(a, "space") and a.space != sp.name:
                raise ArchitectureError(f"architecture {i} belongs to space {a.space!r}, not "
                                        f"{sp.name!r}")
        return sp.to_arrays(items)  # which parses each one (once: not here as well)


# ---------------------------------------------------------------------- by kind
def predictor_class(kind: str) -> type[LatencyPredictor]:
    """The class of ``kind``.

    Raises:
        UnknownNameError: ``kind`` is not one of :data:`PREDICTORS` (listing them).
    """
    if kind not in PREDICTORS:
        raise UnknownNameError(
            f"unknown predictor kind {kind!r}; known kinds: {', '.join(PREDICTORS.names())}"
        )
    return PREDICTORS.get(kind)


def baseline_class() -> type[LatencyPredictor]:
    """The kind every other kind is scored against (the one marked ``is_baseline``)."""
    return next(cls for _, cls in PREDICTORS.items() if cls.is_baseline)


def make_predictor(kind: str, space: str, device: str | None = None,
                   **params: Any) -> LatencyPredictor:
    """A new, unfitted predictor of ``kind`` (``device`` is used by the LUT kinds only).

    Raises:
        UnknownNameError: ``kind`` is not one of :data:`PREDICTORS`.
    """
    return predictor_class(kind).create(space, device, **params)


def predictor_from_state(
    kind: str, params: dict[str, Any], state: dict[str, Any],
    refit_data: tuple[ArchLike, Any] | None = None,
) -> LatencyPredictor:
    """Rebuild a fitted predictor from its JSON ``params`` and ``state``.

    Args:
        kind: the predictor's kind.
        params: ``json_params()`` of the saved predictor.
        state: ``get_state()`` of the saved predictor.
        refit_data: ``(X, y)`` it was fitted on, for kinds restored by re-fitting (gbdt).

    Raises:
        NASError: a re-fit kind without ``refit_data``, or a re-fit that does not reproduce
            the stored probe predictions (e.g. another scikit-learn version).
    """
    return predictor_class(kind).from_state(params, state, refit_data)
