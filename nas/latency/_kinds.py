"""The built-in latency predictor kinds: ``flops``, ``additive``, ``gbdt``, ``lut`` and
``hybrid`` (see :mod:`nas.latency._predictors` for what each is and why)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from nas.errors import ConfigError, NASError
from nas.latency._features import ArchLike, layer_features
from nas.latency._gpt_features import GPTFeatures, gpt_features
from nas.latency._lut import build_lut, lut_grid, lut_to_arrays
from nas.latency._predictors import PREDICTORS, LatencyPredictor
from nas.measure import TimingConfig, lock_dir_for
from nas.space import ArchArrays, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB
    from nas.devices import DeviceProfile

__all__ = [
    "AdditivePredictor",
    "FlopsPredictor",
    "GBDTPredictor",
    "HybridPredictor",
    "LUTPredictor",
]

_DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-5, 3, 17))
#: what the table kinds price: the layer slots of Once-for-All's MobileNetV3 family
OFA = frozenset({"ofa"})
#: what the kinds on features alone price: OFA's layer tables and the gpt family's
#: per-workload features (:mod:`nas.latency._gpt_features`)
FEATURES = frozenset({"ofa", "gpt"})


def _device_workload(device: Any) -> dict[str, Any] | None:
    """The workload of a device (a profile or a registered name), as plain data."""
    from nas.devices import DeviceProfile, get_device

    profile = device if isinstance(device, DeviceProfile) else get_device(device)
    w = profile.workload
    return None if w is None else w.model_dump(exclude_none=True)


class _PerWorkload(LatencyPredictor):
    """A kind that prices image spaces by their layer tables and ``gpt`` spaces by the
    features of one call under the device's workload (its ``workload`` parameter, taken
    from the device's profile when the predictor is created for a device)."""

    workload: dict[str, Any] | None

    @classmethod
    def create(cls, space: str, device: str | None = None,
               **params: Any) -> LatencyPredictor:
        sp: Any = get_space(space)
        if "workload" not in params and device is not None and not isinstance(sp,
                                                                              SearchSpace):
            params["workload"] = _device_workload(device)
            name = getattr(device, "name", device)
            if params["workload"] is None:  # one line naming the device, before any fit
                sp.check_workload(None, name)
        return super().create(space, device, **params)

    def _gpt(self) -> GPTFeatures | None:
        """The gpt features of this space and workload; None for an image space."""
        sp: Any = get_space(self.space)
        workload = getattr(self, "workload", None)  # a subclass may not take one (hybrid)
        if isinstance(sp, SearchSpace):
            if workload is not None:
                raise ConfigError(f"workload: space {sp.name!r} is an image space; a workload "
                                  "is for spaces of the 'gpt' family")
            return None
        return gpt_features(sp, workload)

#: how least squares weigh the measurements (relative error, or absolute)
Weighting = Literal["relative", "none"]
#: the feature groups (see :class:`AdditivePredictor`)
Group = Literal["aggregate", "stage", "slot"]
#: the timing protocol of a lookup table (:meth:`~nas.measure.TimingConfig.preset`)
LUTTiming = Literal["default", "quick"]


def _check_space(space: Any) -> str:
    if not isinstance(space, str):
        raise ConfigError(f"space must be a search-space name, got {space!r}")
    return get_space(space).name


def _weights(y: np.ndarray, weighting: str) -> np.ndarray:
    if weighting == "relative":
        return 1.0 / y**2
    if weighting == "none":
        return np.ones_like(y)
    raise ConfigError(f"weighting must be 'relative' or 'none', got {weighting!r}")


# ---------------------------------------------------------------------- ridge machinery
def _ridge_loo(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, penalty: np.ndarray,
    alphas: Sequence[float],
) -> tuple[np.ndarray, float, float]:
    """Weighted ridge with a per-column penalty, its strength chosen by leave-one-out error.

    Minimises ``sum w (y - X b)^2 + alpha * sum penalty b^2`` over columns scaled to unit
    weighted RMS; the exact LOO residuals of a linear smoother, ``e_i / (1 - h_ii)``, pick
    ``alpha``. Returns the coefficients in the original scale, alpha and the LOO RMS error
    (relative, when ``w = 1/y^2``).
    """
    sw = np.sqrt(w)
    Xw = X * sw[:, None]
    yw = y * sw
    scale = np.sqrt(np.mean(Xw**2, axis=0))
    scale[scale == 0] = 1.0
    Z = Xw / scale
    G = Z.T @ Z
    b = Z.T @ yw
    jitter = 1e-8 * np.trace(G) / len(G)
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in alphas:
        A = G + np.diag(alpha * penalty + jitter)
        try:
            inv = np.linalg.inv(A)
        except np.linalg.LinAlgError:
            continue
        coef = inv @ b
        h = np.einsum("ij,jk,ik->i", Z, inv, Z)
        resid = (yw - Z @ coef) / np.clip(1.0 - h, 1e-6, None)
        loo = float(np.sqrt(np.mean(resid**2)))
        if best is None or loo < best[0] - 1e-12:
            best = (loo, float(alpha), coef)
    if best is None:
        raise NASError("every ridge solve failed; the features are degenerate")
    loo, alpha, coef = best
    return coef / scale, alpha, loo


# ---------------------------------------------------------------------- flops
@PREDICTORS.register
class FlopsPredictor(_PerWorkload):
    """Latency linear in the subnet's MACs: ``a * MACs + b`` (the baseline).

    Args:
        space: the search space.
        weighting: ``"relative"`` (least squares on relative error) or ``"none"``.
        workload: for a ``gpt`` space, the device's workload (its profile's, when created
            for a device): the MACs are those of one call of it.
    """

    name = "flops"
    description = "latency linear in MACs (the baseline)"
    tags = FEATURES
    is_baseline = True

    def __init__(self, *, space: str = "ofa_mbv3", weighting: Weighting = "relative",
                 workload: dict[str, Any] | None = None) -> None:
        self.space = space
        self.weighting = weighting
        self.workload = workload

    def _macs(self, a: Any) -> np.ndarray:
        gpt = self._gpt()
        if gpt is not None:
            return gpt.macs(a)
        lf = self._features()
        return lf.gather_sum(lf.macs_layer, lf.macs_fixed, a)

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        _check_space(self.space)
        X = np.stack([self._macs(a), np.ones(len(a))], axis=1)
        sw = np.sqrt(_weights(y, self.weighting))
        coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
        self.coef_ = float(coef[0])
        self.intercept_ = float(coef[1])

    def _predict(self, a: ArchArrays) -> np.ndarray:
        return self.from_macs(self._macs(a))

    def from_macs(self, macs: np.ndarray) -> np.ndarray:
        """The prediction of subnets of ``macs`` (millions)."""
        return np.asarray(self.coef_ * macs + self.intercept_)

    def _state(self) -> dict[str, Any]:
        return {"coef": self.coef_, "intercept": self.intercept_,
                "units": "ms per million MACs"}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.coef_ = float(state["coef"])
        self.intercept_ = float(state["intercept"])


# ---------------------------------------------------------------------- additive
@PREDICTORS.register
class AdditivePredictor(_PerWorkload):
    """A learned lookup table: latency linear in per-layer-type work (see the module doc).

    Args:
        space: the search space.
        groups: feature groups: ``"aggregate"`` (network-wide coefficients, unpenalised),
            ``"stage"`` (per-stage corrections) and ``"slot"`` (per-layer-slot corrections),
            the latter two ridge-penalised.
        slot_penalty: penalty of the per-slot corrections relative to the per-stage ones.
        alphas: ridge strengths to choose from by leave-one-out error.
        weighting: ``"relative"`` (fit relative error) or ``"none"``.
        workload: for a ``gpt`` space, the device's workload: the features are those of one
            call of it (:mod:`nas.latency._gpt_features`, all network-wide: ``aggregate``).
    """

    name = "additive"
    description = "a learned lookup table, linear in per-layer work (the default)"
    tags = FEATURES

    def __init__(
        self, *, space: str = "ofa_mbv3",
        groups: tuple[Group, ...] = ("aggregate", "stage", "slot"),
        slot_penalty: float = 10.0, alphas: tuple[float, ...] | None = None,
        weighting: Weighting = "relative", workload: dict[str, Any] | None = None,
    ) -> None:
        self.space = space
        self.groups = groups
        self.slot_penalty = slot_penalty
        self.alphas = alphas
        self.weighting = weighting
        self.workload = workload

    def _feature_set(self) -> Any:
        return self._gpt() or self._features()

    def _columns(self) -> np.ndarray:
        lf = self._feature_set()
        allowed = {"aggregate", "stage", "slot"}
        bad = [g for g in self.groups if g not in allowed]
        if bad or "aggregate" not in self.groups:
            raise ConfigError(
                f"groups must include 'aggregate' and be from {sorted(allowed)}, got "
                f"{list(self.groups)}"
            )
        return np.asarray([i for i, g in enumerate(lf.groups) if g in self.groups])

    def _penalty(self, cols: np.ndarray, extra_unpenalised: int = 0) -> np.ndarray:
        lf = self._feature_set()
        pen = {"aggregate": 0.0, "stage": 1.0, "slot": float(self.slot_penalty)}
        return np.concatenate([np.zeros(extra_unpenalised),
                               np.asarray([pen[lf.groups[i]] for i in cols])])

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        _check_space(self.space)
        lf = self._feature_set()
        cols = self._columns()
        X = lf.transform(a)[:, cols]
        coef, alpha, loo = _ridge_loo(X, y, _weights(y, self.weighting), self._penalty(cols),
                                      self.alphas or _DEFAULT_ALPHAS)
        self.feature_names_ = [lf.names[i] for i in cols]
        self.coef_ = coef
        self.alpha_ = alpha
        self.loo_error_ = loo
        self._compile()

    def _compile(self) -> None:
        gpt = self._gpt()
        if gpt is not None:  # the features are exact sums: predict them, then the dot
            self.cols_ = np.asarray([gpt.names.index(n) for n in self.feature_names_])
            return
        lf = self._features()
        cols = np.asarray([lf.names.index(n) for n in self.feature_names_])
        self.table_ = lf.layer[..., cols] @ self.coef_  # (R, L, K, E) ms per layer
        self.fixed_ = lf.fixed[:, cols] @ self.coef_  # (R,) ms of stem, head, constant

    def _predict(self, a: ArchArrays) -> np.ndarray:
        gpt = self._gpt()
        if gpt is not None:
            return np.asarray(gpt.transform(a)[:, self.cols_] @ self.coef_)
        return self._features().gather_sum(self.table_, self.fixed_, a)

    def _state(self) -> dict[str, Any]:
        return {"features": list(self.feature_names_), "coef": self.coef_.tolist(),
                "alpha": self.alpha_, "loo_rel_rmse": self.loo_error_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.feature_names_ = list(state["features"])
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
        self.alpha_ = float(state["alpha"])
        self.loo_error_ = float(state.get("loo_rel_rmse", float("nan")))
        self._compile()


# ---------------------------------------------------------------------- gbdt
#: at most this many (architecture, tree node) pairs, a prediction of the compiled trees
#: (:class:`_Trees`; about 350 architectures with the default 100 trees of 8 leaves); past
#: that their passes over every node of every row leave the cache, and scikit-learn's own
#: compiled loop, whose fixed cost of milliseconds a call is small beside the batch's, wins
_TREE_CELLS = 2**19


@dataclass(frozen=True)
class _Trees:
    """The fitted trees of a ``HistGradientBoostingRegressor`` as flat arrays, evaluated
    for all trees at once with numpy: scikit-learn's ``predict`` costs milliseconds a call
    whatever the batch (input checks, a thread pool per tree), which is all of a single
    architecture's prediction.

    Every node of every tree is one entry: a split sends a row to ``left`` when its feature
    is ``<= threshold`` (``NaN``: where ``missing_left`` says), as scikit-learn's
    ``_predict_from_raw_data`` does; a leaf is its own child both ways, so ``depth`` steps
    from the roots reach every tree's leaf. Entry 0 is a leaf holding the baseline, the
    first of the values summed, in scikit-learn's order (baseline, then tree by tree, one
    addition at a time: a cumulative sum), so the prediction is the same float.

    Attributes:
        feature, threshold, left, right, missing_left, value: ``(N,)`` per node.
        roots: ``(T + 1,)`` the baseline's entry, then each tree's root.
        depth: the deepest leaf's depth.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int

    @classmethod
    def of(cls, model: Any) -> _Trees | None:
        """The trees of a fitted regressor, or None when they are not plain numeric trees
        of a squared error (categorical splits, another loss or link, another layout of
        scikit-learn's private arrays): then its own ``predict`` serves."""
        try:
            link = type(model._loss.link).__name__
            if model.n_trees_per_iteration_ != 1 or link != "IdentityLink":
                return None
            nodes = [iteration[0].nodes for iteration in model._predictors]
            if any(nd["is_categorical"].any() for nd in nodes):
                return None
            sizes = np.asarray([1] + [len(nd) for nd in nodes], dtype=np.intp)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
            n = int(sizes.sum())
            own = np.arange(n, dtype=np.intp)
            feature = np.zeros(n, dtype=np.intp)
            threshold = np.zeros(n)
            left, right = own.copy(), own.copy()
            missing_left = np.zeros(n, dtype=bool)
            value = np.zeros(n)
            value[0] = float(np.asarray(model._baseline_prediction).ravel()[0])
            depth = 0
            for start, nd in zip(starts[1:], nodes, strict=True):
                at = slice(int(start), int(start) + len(nd))
                split = nd["is_leaf"] == 0
                feature[at] = np.where(split, nd["feature_idx"], 0)
                threshold[at] = nd["num_threshold"]
                left[at] = np.where(split, start + nd["left"].astype(np.intp), own[at])
                right[at] = np.where(split, start + nd["right"].astype(np.intp), own[at])
                missing_left[at] = split & (nd["missing_go_to_left"] != 0)
                value[at] = nd["value"]
                depth = max(depth, int(nd["depth"].max()))
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            return None
        return cls(feature, threshold, left, right, missing_left, value, starts, depth)

    @property
    def n_nodes(self) -> int:
        return len(self.value)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Raw predictions of the rows of ``X`` ``(n, F)``: ``(n,)``."""
        n, n_nodes = len(X), self.n_nodes
        x = X[:, self.feature]  # (n, N): every node's feature, every row
        right = x > self.threshold
        if np.isnan(X).any():  # scikit-learn: a missing value goes where the split learned
            right = np.where(np.isnan(x), ~self.missing_left, right)
        # each node's next node for each row (one step of every tree at once), in one flat
        # array over the rows
        step = np.where(right, self.right, self.left)
        if n == 1:  # (one architecture: no offsets of rows)
            flat, at = step.ravel(), self.roots
            for _ in range(self.depth):
                at = flat.take(at)
            return np.asarray(np.cumsum(self.value.take(at))[-1:])
        offset = np.arange(0, n * n_nodes, n_nodes)[:, None]  # (n, 1)
        step += offset
        flat = step.ravel()
        at = self.roots + offset  # (n, T + 1)
        for _ in range(self.depth):
            at = flat.take(at)
        at -= offset
        return np.asarray(np.cumsum(self.value.take(at), axis=1)[:, -1])


@PREDICTORS.register
class GBDTPredictor(_PerWorkload):
    """Gradient-boosted trees (scikit-learn's histogram GBDT) on the architecture features.

    With ``base="flops"`` the trees fit ``log(y / flops(x))``, the relative residual of the
    MACs-linear baseline, so that with few measurements the model stays close to it and
    with more it learns what MACs miss; with ``base=None`` they fit ``log(y)`` (or ``y``
    with ``log_target=False``). Boosting runs on one thread: the data are small, and
    OpenMP threads on a busy machine cost more than they bring.

    Restored by a deterministic re-fit on the stored measurements (``random_state`` fixed,
    no early stopping), not from JSON. A small batch is predicted by the fitted trees
    compiled to flat arrays (:class:`_Trees`, after every fit, so after a load too): the
    same floats as scikit-learn's ``predict``, without its milliseconds of fixed cost a call.

    Args:
        space: the search space.
        groups: feature groups, as for :class:`AdditivePredictor`.
        base: ``"flops"`` or None (see above).
        log_target: fit in log space (trees then split on relative differences).
        max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization:
            passed to ``HistGradientBoostingRegressor``.
        random_state: seed of the boosting.
        workload: for a ``gpt`` space, the device's workload (the features of one call).
    """

    name = "gbdt"
    description = "gradient-boosted trees on the relative residual of flops"
    tags = FEATURES
    restores_from_state = False

    def __init__(  # noqa: PLR0913 - scikit-learn hyper-parameters, keyword-only
        self, *, space: str = "ofa_mbv3", groups: tuple[Group, ...] = ("aggregate", "stage"),
        base: Literal["flops"] | None = "flops", log_target: bool = True, max_iter: int = 100,
        learning_rate: float = 0.1, max_leaf_nodes: int = 8, min_samples_leaf: int = 5,
        l2_regularization: float = 1.0, random_state: int = 0,
        workload: dict[str, Any] | None = None,
    ) -> None:
        self.workload = workload
        self.space = space
        self.groups = groups
        self.base = base
        self.log_target = log_target
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.random_state = random_state

    def _cols(self) -> np.ndarray:
        lf: Any = self._gpt() or self._features()
        return np.asarray([i for i, g in enumerate(lf.groups) if g in self.groups])

    def _X(self, a: ArchArrays) -> tuple[np.ndarray, np.ndarray | None]:
        """The trees' features of ``a`` and, with ``base="flops"``, the log of the
        baseline's prediction (for a ``gpt`` space, both from one pass: the MACs are
        features too)."""
        gpt = self._gpt()
        if gpt is not None:
            f = gpt.transform(a)
            X = f[:, self.cols_]
            macs = gpt.macs_of(f) if self.base == "flops" else None
        else:
            lf = self._features()
            X = lf.gather_sum(self._layer_, self._fixed_, a)
            macs = lf.macs(a) if self.base == "flops" else None
        if macs is None:
            return X, None
        return X, np.log(np.clip(self.base_.from_macs(macs), 1e-9, None))

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits

        _check_space(self.space)
        if self.base not in (None, "flops"):
            raise ConfigError(f"base must be 'flops' or None, got {self.base!r}")
        if self.base is not None and not self.log_target:
            raise ConfigError("base='flops' needs log_target=True (the residual is a ratio)")
        self.cols_ = self._cols()
        if self._gpt() is None:
            lf = self._features()
            # (C order: a gather takes rows of it, not a copy of it at every call)
            self._layer_ = np.ascontiguousarray(lf.layer[..., self.cols_])
            self._fixed_ = np.ascontiguousarray(lf.fixed[:, self.cols_])
        target = np.log(y) if self.log_target else y
        if self.base == "flops":
            base = FlopsPredictor(space=self.space, workload=self.workload)
            base.fit(a, y)
            self.base_ = base
        X, log_base = self._X(a)
        if log_base is not None:
            target = target - log_base
        model = HistGradientBoostingRegressor(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization, early_stopping=False,
            random_state=self.random_state,
        )
        with threadpool_limits(1):
            model.fit(X, target)
        self.model_ = model
        self.trees_ = self._compile(model, X[:64])

    @staticmethod
    def _compile(model: Any, X: np.ndarray) -> _Trees | None:
        """The model's trees for small batches (:class:`_Trees`), once they predict the
        rows ``X`` exactly as scikit-learn does; else None (its own ``predict`` serves)."""
        from threadpoolctl import threadpool_limits

        trees = _Trees.of(model)
        if trees is None:
            return None
        with threadpool_limits(1):
            want = model.predict(X)
        return trees if np.array_equal(trees.predict(X), want) else None

    def _raw(self, X: np.ndarray) -> np.ndarray:
        """The trees' sum for the rows of ``X``: compiled for a small batch, scikit-learn's
        for a large one (the same floats either way)."""
        trees = self.trees_
        if trees is not None and len(X) * trees.n_nodes <= _TREE_CELLS:
            return trees.predict(X)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return np.asarray(self.model_.predict(X))

    def _predict(self, a: ArchArrays) -> np.ndarray:
        X, log_base = self._X(a)
        out = self._raw(X)
        if log_base is not None:
            out = out + log_base
        return np.exp(out) if self.log_target else out

    def _state(self) -> dict[str, Any]:
        sp = get_space(self.space)
        probe = sp.sample_many(8, seed=12345)
        return {"refit": True, "probe": [a.to_dict() for a in probe],
                "probe_predictions": self._predict(sp.to_arrays(probe)).tolist()}

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NASError("a gbdt predictor is restored by re-fitting on its measurements")

    @classmethod
    def from_state(cls, params: dict[str, Any], state: dict[str, Any],
                   refit_data: tuple[ArchLike, Any] | None = None) -> LatencyPredictor:
        """Re-fit on ``refit_data`` (the stored measurements) and check the stored probe
        predictions are reproduced.

        Raises:
            NASError: no ``refit_data``, or a re-fit that does not reproduce the probe
                predictions (e.g. another scikit-learn version).
        """
        est = cls(**cls.init_params(params, state))
        if refit_data is None:
            raise NASError(f"a {cls.kind!r} predictor is restored by re-fitting; pass refit_data")
        est.fit(*refit_data)
        probe = state.get("probe")
        if probe:
            got = est.predict(probe)
            want = np.asarray(state["probe_predictions"])
            if not np.allclose(got, want, rtol=1e-6, atol=1e-9):
                raise NASError(
                    f"re-fitting the stored {cls.kind!r} predictor did not reproduce its "
                    f"predictions (max difference {np.max(np.abs(got - want)):.3g} ms); the "
                    f"library versions differ from when it was fitted: fit it again with "
                    f"`nas latency fit`"
                )
        return est


# ---------------------------------------------------------------------- LUT-based
class _LUTKind(LatencyPredictor):
    """What the lookup-table kinds share: a device to time blocks on or a ready ``table``,
    the table prepared before a fit on stored data, and the table kept in the state."""

    fit_note = "timing or reusing the block lookup table..."
    needs_table = True
    state_params = ("table",)
    device: str | None
    table: dict[str, Any] | None
    lut_resolutions: int | None
    lut_timing: LUTTiming

    @classmethod
    def create(cls, space: str, device: str | None = None,
               **params: Any) -> LatencyPredictor:
        params.setdefault("device", device)
        return cls.from_options(space=space, **params)

    @classmethod
    def check_fit(cls, profile: DeviceProfile) -> None:
        if profile.external:
            raise ConfigError(
                f"kind {cls.kind!r} times blocks on the device, and {profile.name} is external "
                "(nothing is timed from here)")

    @classmethod
    def prepare_params(cls, params: dict[str, Any], *, db: LatencyDB, device: str,
                       space: str, progress: bool) -> dict[str, Any]:
        """With no ``table`` given: the newest table stored with a predictor of (device,
        space) on the same grid of resolutions, else one timed now on ``device``."""
        if params.get("table") is not None:
            return params
        defaults = cls.default_params()
        res = params.get("lut_resolutions", defaults["lut_resolutions"])
        table = _stored_table(db, device, space, res)
        if table is None:
            timing = params.get("lut_timing", defaults["lut_timing"])
            table = build_lut(device, space, resolutions=lut_grid(space, res),
                              config=TimingConfig.preset(timing, "lut_timing"),
                              progress=progress, lock_dir=str(lock_dir_for(db)))
        return {**params, "table": table}

    def _ensure_table(self) -> dict[str, Any]:
        if self.table is not None:
            if self.table.get("space") != get_space(self.space).name:
                raise ConfigError(
                    f"table is a LUT of space {self.table.get('space')!r}, not {self.space!r}"
                )
            return self.table
        if not self.device:
            raise ConfigError(
                f"a {type(self).__name__} needs device= (to time its lookup table) or table="
            )
        cfg = TimingConfig.preset(self.lut_timing, "lut_timing")
        return build_lut(self.device, self.space,
                         resolutions=lut_grid(self.space, self.lut_resolutions), config=cfg,
                         progress=False)

    def _set_table(self, table: dict[str, Any]) -> None:
        self.table_ = table
        self.lut_cost_, self.lut_fixed_ = lut_to_arrays(table, self.space)

    def _lut_sum(self, a: ArchArrays) -> np.ndarray:
        return layer_features(self.space).gather_sum(self.lut_cost_, self.lut_fixed_, a)


@PREDICTORS.register
class LUTPredictor(_LUTKind):
    """Once-for-All's lookup table: the sum of separately timed blocks, stem and head.

    ``fit`` times the table on ``device`` unless ``table`` (a table from
    :func:`~nas.latency._lut.build_lut` or an earlier predictor's state) is given, then
    calibrates ``a * sum + b`` on the measurements (``calibrate=False``: the raw sum).

    Args:
        space: the search space.
        device: the device to time the blocks on.
        table: a ready table (skips the timing).
        lut_resolutions: how many resolutions to time (evenly spread; None: all); the others
            are interpolated.
        lut_timing: ``"default"`` protocol or ``"quick"`` (tests).
        calibrate: fit a scale and offset on the measurements.
    """

    name = "lut"
    description = "Once-for-All's lookup table of blocks timed on the device, calibrated"
    tags = OFA

    def __init__(
        self, *, space: str = "ofa_mbv3", device: str | None = None,
        table: dict[str, Any] | None = None, lut_resolutions: int | None = 7,
        lut_timing: LUTTiming = "default", calibrate: bool = True,
    ) -> None:
        self.space = space
        self.device = device
        self.table = table
        self.lut_resolutions = lut_resolutions
        self.lut_timing = lut_timing
        self.calibrate = calibrate

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        _check_space(self.space)
        self._set_table(self._ensure_table())
        s = self._lut_sum(a)
        if self.calibrate:
            w = np.sqrt(_weights(y, "relative"))
            X = np.stack([s, np.ones_like(s)], axis=1)
            coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
            self.coef_, self.intercept_ = float(coef[0]), float(coef[1])
        else:
            self.coef_, self.intercept_ = 1.0, 0.0

    def _predict(self, a: ArchArrays) -> np.ndarray:
        return self.coef_ * self._lut_sum(a) + self.intercept_

    def _state(self) -> dict[str, Any]:
        return {"coef": self.coef_, "intercept": self.intercept_, "table": self.table_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._set_table(state["table"])
        self.coef_ = float(state["coef"])
        self.intercept_ = float(state["intercept"])


@PREDICTORS.register
class HybridPredictor(_LUTKind, AdditivePredictor):
    """The lookup table plus a learned residual on the additive features.

    ``latency = a * LUT + b + sum_f c_f x_f`` with ``a`` and ``b`` unpenalised and the
    ``c_f`` ridge-penalised toward zero (strength by leave-one-out error), so with few
    measurements it stays close to the calibrated table and with many it corrects the
    table's systematic errors (fusion across blocks, cache effects).

    Args:
        space, device, table, lut_resolutions, lut_timing: as for :class:`LUTPredictor`.
        groups, slot_penalty, alphas, weighting: as for :class:`AdditivePredictor`
            (every feature group is penalised here).
    """

    name = "hybrid"
    description = "the lookup table plus a learned additive residual"
    tags = OFA

    def __init__(
        self, *, space: str = "ofa_mbv3", device: str | None = None,
        table: dict[str, Any] | None = None, lut_resolutions: int | None = 7,
        lut_timing: LUTTiming = "default", groups: tuple[Group, ...] = ("aggregate", "stage"),
        slot_penalty: float = 10.0, alphas: tuple[float, ...] | None = None,
        weighting: Weighting = "relative",
    ) -> None:
        self.space = space
        self.device = device
        self.table = table
        self.lut_resolutions = lut_resolutions
        self.lut_timing = lut_timing
        self.groups = groups
        self.slot_penalty = slot_penalty
        self.alphas = alphas
        self.weighting = weighting

    def _penalty(self, cols: np.ndarray, extra_unpenalised: int = 0) -> np.ndarray:
        lf = self._features()
        pen = {"aggregate": 1.0, "stage": 1.0, "slot": float(self.slot_penalty)}
        return np.concatenate([np.zeros(extra_unpenalised),
                               np.asarray([pen[lf.groups[i]] for i in cols])])

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        _check_space(self.space)
        self._set_table(self._ensure_table())
        lf = self._features()
        cols = self._columns()
        cols = cols[[lf.names[i] != "const" for i in cols]]
        X = np.concatenate([self._lut_sum(a)[:, None], np.ones((len(a), 1)),
                            lf.transform(a)[:, cols]], axis=1)
        coef, alpha, loo = _ridge_loo(X, y, _weights(y, self.weighting),
                                      self._penalty(cols, extra_unpenalised=2),
                                      self.alphas or _DEFAULT_ALPHAS)
        self.lut_coef_, self.intercept_ = float(coef[0]), float(coef[1])
        self.feature_names_ = [lf.names[i] for i in cols]
        self.coef_ = coef[2:]
        self.alpha_ = alpha
        self.loo_error_ = loo
        self._compile()

    def _compile(self) -> None:
        lf = self._features()
        cols = np.asarray([lf.names.index(n) for n in self.feature_names_], dtype=np.intp)
        self.table_residual_ = (lf.layer[..., cols] @ self.coef_ if len(cols)
                                else np.zeros(lf.layer.shape[:4]))
        fixed = lf.fixed[:, cols] @ self.coef_ if len(cols) else np.zeros(len(lf.fixed))
        self.combined_ = self.lut_coef_ * self.lut_cost_ + self.table_residual_
        self.combined_fixed_ = self.lut_coef_ * self.lut_fixed_ + fixed + self.intercept_

    def _predict(self, a: ArchArrays) -> np.ndarray:
        return self._features().gather_sum(self.combined_, self.combined_fixed_, a)

    def _state(self) -> dict[str, Any]:
        return {"lut_coef": self.lut_coef_, "intercept": self.intercept_,
                "features": list(self.feature_names_), "coef": self.coef_.tolist(),
                "alpha": self.alpha_, "loo_rel_rmse": self.loo_error_, "table": self.table_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._set_table(state["table"])
        self.lut_coef_ = float(state["lut_coef"])
        self.intercept_ = float(state["intercept"])
        self.feature_names_ = list(state["features"])
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
        self.alpha_ = float(state["alpha"])
        self.loo_error_ = float(state.get("loo_rel_rmse", float("nan")))
        self._compile()




def _stored_table(db: LatencyDB, device: str, space: str,
                  lut_resolutions: int | None) -> dict[str, Any] | None:
    """The newest lookup table stored with a predictor of (device, space) on that grid."""
    grid = lut_grid(space, lut_resolutions)
    for rec in reversed(db.list_predictors(device, space)):
        table = rec.state.get("table")
        if isinstance(table, dict) and table.get("resolutions") == grid:
            return table
    return None
