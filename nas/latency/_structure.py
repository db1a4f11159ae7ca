"""The ``structure`` kind: latency as non-negative costs of the structure real hardware follows.

At batch 1 on a GPU or an accelerator, or on a CPU with small inputs, a subnet's latency is
mostly a fixed cost per operator launched (kernel launch, dispatch, synchronisation), and
ranks by depth, not by MACs; on a CPU at full resolution it ranks by MACs; in between, by
both and by the bytes the operators move. ``structure`` fits

    latency ~ b + c_ops * operators + c_macs * MACs + c_bytes * bytes (+ c_r * resolution)

with every ``c >= 0`` (each is the price of a kind of work: none is negative) by weighted
least squares on relative error, a small ridge on standardised columns chosen by
leave-one-out error. Four to five coefficients, the signs fixed: usable from five
measurements, and a device whose latency follows operator count gets it from them, where
``flops`` cannot see operators at all and ``additive`` needs dozens of measurements.

**The features** (:func:`structure_features`), computed from the architecture alone:

- ``ofa`` spaces: ``operators``, the ONNX operators of the exported subnet (Identity nodes
  aside; a test counts them in exported graphs): 13 for the stem, first block and head, and
  per active block 5 (expand, depthwise and project convolutions, two activations), 6 more
  with squeeze-excite, one more with a residual add (every block but a stage's first);
  ``mmacs`` (millions); ``activation_mb``, the activations the blocks write, and
  ``weight_mb``, the weights read, in float32 megabytes; ``resolution``. A device whose
  profile feeds every subnet inputs of one side (``input_resolution``) gets MACs and
  activations at that side (scaled by ``(side / r)^2``, exact up to the rounding of odd
  feature-map sides), the weights unchanged: at small inputs, reading the weights is most of
  the memory traffic.
- ``gpt`` spaces, under the device's workload: ``blocks`` (every block the same operators),
  ``mmacs`` of the call, ``mbytes``: weights and cache read and activations written.

The same features are candidates of ``transfer`` (:mod:`nas.latency._transfer`), where they
let a new device's own few measurements win over other devices that rank subnets otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from nas.errors import ConfigError, NASError
from nas.latency._features import layer_features
from nas.latency._kinds import FEATURES, Weighting, _PerWorkload, _weights
from nas.latency._predictors import PREDICTORS, LatencyPredictor
from nas.space import ArchArrays, SearchSpace, get_space

__all__ = ["StructureFeatures", "StructurePredictor", "structure_features"]

#: operators of an ``ofa`` subnet outside its elastic blocks: stem (convolution,
#: activation), first block (depthwise and project convolutions, activation, residual add),
#: head (final expand convolution and activation, pooling, feature-mix convolution and
#: activation, flatten, classifier)
OFA_FIXED_OPERATORS = 13
#: the structure features of an ``ofa`` space, in column order
OFA_STRUCTURE = ("operators", "mmacs", "activation_mb", "weight_mb", "resolution")
#: the columns that scale with the input's area (what a device with an ``input_resolution``
#: scales by ``(side / r)^2``)
_SPATIAL = (1, 2)
#: ridge strengths on standardised columns (0: plain non-negative least squares)
_ALPHAS = (0.0, 1e-3, 1e-2, 1e-1, 1.0)
#: measurements from which the ridge strength is chosen by 5-fold rather than exact
#: leave-one-out refits
_LOO_MAX = 60


@dataclass(frozen=True)
class StructureFeatures:
    """The structure features of a space (and, for ``gpt``, a workload).

    Attributes:
        names: the columns (:data:`OFA_STRUCTURE`, or a ``gpt`` space's
            ``("blocks", "mmacs", "mbytes")``).
    """

    space: str
    names: tuple[str, ...]
    table: np.ndarray | None  # (R, L, K, E, F) per-layer, ofa only
    fixed: np.ndarray | None  # (R, F)
    workload: tuple[tuple[str, Any], ...] | None = None

    def transform(self, a: Any, input_resolution: int | None = None) -> np.ndarray:
        """``(n, F)`` features; with ``input_resolution`` (an image space's device that feeds
        every subnet inputs of that side), the spatial columns (MACs, activations) scaled by
        ``(side / r)^2`` and the resolution column the side."""
        if self.table is not None and self.fixed is not None:
            x = layer_features(self.space).gather_sum(self.table, self.fixed, a)
            if input_resolution is not None:
                r = x[:, -1].copy()
                x[:, _SPATIAL] *= ((input_resolution / r) ** 2)[:, None]
                x[:, -1] = input_resolution
            return x
        from nas.latency._gpt_features import gpt_features

        gf = gpt_features(get_space(self.space), dict(self.workload or ()))
        x = gf.transform(a)
        col = {n: i for i, n in enumerate(gf.names)}
        return np.stack([x[:, col["blocks"]],
                         x[:, col["linear_mmacs"]] + x[:, col["attention_mmacs"]],
                         x[:, col["weight_mb"]] + x[:, col["cache_mb"]]
                         + 4.0 * x[:, col["activation_mvalues"]]], axis=1)


@lru_cache(maxsize=16)
def _ofa_structure(space_name: str) -> StructureFeatures:
    """Per-layer tables of operators, MACs and bytes of an ``ofa`` space."""
    sp: Any = get_space(space_name)
    lf = layer_features(sp)
    act = lf.names.index("act_elems")
    n_r, n_l, n_k, n_e = lf.macs_layer.shape
    table = np.zeros((n_r, n_l, n_k, n_e, 5))
    fixed = np.zeros((n_r, 5))
    for j, (_s, i, cin, cout, _stride, se) in enumerate(sp.layer_plan):
        table[:, j, :, :, 0] = 5 + 6 * bool(se) + (i > 0)
        for ki, k in enumerate(lf.kernel_sizes):
            for ei, e in enumerate(lf.expand_ratios):
                mid = sp.mid_channels(cin, int(e))
                weights = cin * mid + int(k) ** 2 * mid + mid * cout
                if se:
                    weights += 2 * mid * sp.se_channels(mid)
                table[:, j, ki, ei, 2] = 4.0 * lf.layer[:, j, ki, ei, act]
                table[:, j, ki, ei, 3] = 4.0 * weights * 1e-6
    table[..., 1] = lf.macs_layer
    small = sp.to_arrays([sp.smallest(int(r)) for r in lf.resolutions])
    costs = sp.costs(small)
    fixed[:, 0] = OFA_FIXED_OPERATORS
    fixed[:, 1] = lf.macs_fixed
    fixed[:, 3] = 4.0 * (costs["params"] - costs["stage_params"].sum(1)) * 1e-6
    fixed[:, 4] = lf.resolutions
    for arr in (table, fixed):
        arr.setflags(write=False)
    return StructureFeatures(space=sp.name, names=OFA_STRUCTURE, table=table, fixed=fixed)


def structure_features(space: str, workload: dict[str, Any] | None = None) -> StructureFeatures:
    """The structure features of ``space`` (see the module docstring); a ``gpt`` space's
    under ``workload``."""
    sp = get_space(space)
    if isinstance(sp, SearchSpace):
        if workload is not None:
            raise ConfigError(f"workload: space {sp.name!r} is an image space; a workload is "
                              "for spaces of the 'gpt' family")
        return _ofa_structure(sp.name)
    from nas.latency._gpt_features import gpt_features

    gpt_features(sp, workload)  # the workload checked (one line) before anything is fitted
    return StructureFeatures(space=sp.name, names=("blocks", "mmacs", "mbytes"), table=None,
                             fixed=None, workload=tuple(sorted((workload or {}).items())))


def _device_input_resolution(device: Any) -> int | None:
    """A device's ``input_resolution`` (a profile or a registered name)."""
    from nas.devices import DeviceProfile, get_device

    profile = device if isinstance(device, DeviceProfile) else get_device(device)
    return profile.input_resolution


def _check_side(space: str, side: Any) -> int | None:
    """``side`` if it is None or an input side an image space can take (one line if not)."""
    if side is None:
        return None
    if isinstance(side, bool) or not isinstance(side, int) or not 8 <= side <= 4096:
        raise ConfigError(f"input_resolution must be null or an integer in [8, 4096], got "
                          f"{side!r}")
    if not isinstance(get_space(space), SearchSpace):
        raise ConfigError(f"input_resolution: space {space!r} is a language model's; an input "
                          "side is for image spaces")
    return side


def _nnls(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return np.asarray(nnls(A, b, maxiter=50 * A.shape[1])[0])


def fit_nonnegative(X: np.ndarray, y: np.ndarray, w: np.ndarray,
                    alpha: float) -> tuple[np.ndarray, float]:
    """``min sum w (y - b - X c)^2 + alpha * n * |s * c|^2`` over ``c >= 0`` and a free
    intercept ``b``, ``s`` the columns' weighted standard deviations; ``(c, b)``."""
    sw = np.sqrt(w / w.sum())
    mx = (w[:, None] * X).sum(0) / w.sum()
    my = float((w * y).sum() / w.sum())
    Xc = (X - mx) * sw[:, None]
    yc = (y - my) * sw
    scale = np.sqrt((Xc**2).sum(0))
    scale[scale == 0] = 1.0
    Z = Xc / scale
    if alpha > 0:
        Z = np.vstack([Z, np.sqrt(alpha) * np.eye(Z.shape[1])])
        yc = np.concatenate([yc, np.zeros(Z.shape[1])])
    c = _nnls(Z, yc) / scale
    return c, my - float(mx @ c)


def _cv_error(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """Relative errors of each measurement predicted without it (exact leave-one-out up to
    :data:`_LOO_MAX` measurements, 5-fold above)."""
    n = len(y)
    folds = (np.arange(n) if n <= _LOO_MAX
             else np.random.default_rng(0).permutation(n) % 5)
    err = np.empty(n)
    for f in np.unique(folds):
        out = folds == f
        c, b = fit_nonnegative(X[~out], y[~out], w[~out], alpha)
        err[out] = (y[out] - (X[out] @ c + b)) / y[out]
    return err


def fit_structure(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float,
                                                                        float, float]:
    """The non-negative fit at the ridge strength of least cross-validated relative error:
    ``(c, b, alpha, cv relative RMSE)``."""
    if len(y) < 3:
        raise ConfigError(f"structure needs at least 3 measurements, got {len(y)}")
    best: tuple[float, float] | None = None
    for alpha in _ALPHAS:
        e = float(np.sqrt(np.mean(_cv_error(X, y, w, alpha) ** 2)))
        if np.isfinite(e) and (best is None or e < best[0] - 1e-12):
            best = (e, alpha)
    if best is None:
        raise NASError("every structure fit failed; the measurements are degenerate")
    c, b = fit_nonnegative(X, y, w, best[1])
    return c, b, best[1], best[0]


class _PerInputSide(_PerWorkload):
    """A kind that also takes, when created for a device, its profile's
    ``input_resolution`` (the side of the inputs it feeds every image subnet)."""

    input_resolution: int | None

    @classmethod
    def create(cls, space: str, device: str | None = None,
               **params: Any) -> LatencyPredictor:
        if "input_resolution" not in params and device is not None:
            params["input_resolution"] = _device_input_resolution(device)
        return super().create(space, device, **params)


@PREDICTORS.register
class StructurePredictor(_PerInputSide):
    """Latency as non-negative costs of operators, MACs, bytes moved and resolution (see
    :mod:`nas.latency._structure`): a few-shot kind for devices whose latency follows
    operator count rather than MACs.

    Args:
        space: the search space.
        weighting: ``"relative"`` (least squares on relative error) or ``"none"``.
        workload: for a ``gpt`` space, the device's workload (its profile's, when created
            for a device).
        input_resolution: for an image space, the side of the inputs the device feeds every
            subnet (its profile's ``input_resolution``, when created for a device); None:
            each subnet's own resolution.
    """

    name = "structure"
    description = ("few-shot: non-negative costs per operator, MAC, byte moved and pixel "
                   "(follows operator count where dispatch dominates)")
    tags = FEATURES

    def __init__(self, *, space: str = "ofa_mbv3", weighting: Weighting = "relative",
                 workload: dict[str, Any] | None = None,
                 input_resolution: int | None = None) -> None:
        self.space = space
        self.weighting = weighting
        self.workload = workload
        self.input_resolution = input_resolution

    def features(self) -> StructureFeatures:
        return structure_features(self.space, self.workload)

    def _X(self, a: ArchArrays) -> np.ndarray:
        return self.features().transform(a, _check_side(self.space, self.input_resolution))

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        X = self._X(a)
        c, b, alpha, cv = fit_structure(X, y, _weights(y, self.weighting))
        self.coef_, self.intercept_, self.alpha_, self.cv_rel_rmse_ = c, b, alpha, cv

    def _predict(self, a: ArchArrays) -> np.ndarray:
        return np.asarray(self._X(a) @ self.coef_ + self.intercept_)

    def _state(self) -> dict[str, Any]:
        return {"features": list(self.features().names), "coef": self.coef_.tolist(),
                "intercept": self.intercept_, "alpha": self.alpha_,
                "cv_rel_rmse": self.cv_rel_rmse_}

    def _set_state(self, state: dict[str, Any]) -> None:
        names = list(self.features().names)
        if list(state.get("features", [])) != names:
            raise NASError(f"stored structure predictor has features {state.get('features')}, "
                           f"this version computes {names}")
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
        if self.coef_.shape != (len(names),) or not np.all(np.isfinite(self.coef_)):
            raise NASError(f"stored structure predictor: coef must be {len(names)} finite "
                           "numbers")
        self.intercept_ = float(state["intercept"])
        self.alpha_ = float(state.get("alpha", 0.0))
        self.cv_rel_rmse_ = float(state.get("cv_rel_rmse", float("nan")))
