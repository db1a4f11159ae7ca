"""The few-shot latency predictor: ``transfer``, a new device from a few measurements and what
the other devices of the database already know.

**What it assumes.** Latency on a new device is close to an affine function of a mix of other
devices' latencies of the same subnet: ``y(x) ~ s * mean_j z_j(x) + b + sum_j d_j (z_j(x) -
mean_j z_j(x))``, where ``z_j`` is device ``j``'s fitted predictor, normalised to mean 1 on
the measured subnets. Devices that run the same operators (ONNX Runtime on another CPU,
thread count, batch size or precision; a phone's table) rank subnets alike, and differ mostly
in scale, offset and how much each kind of work costs, which the mix and the affine map take
up (the design of HELP, NeurIPS 2021, and of nn-Meter's device adaptation, made linear).
With ``k`` measurements, ``s`` and ``b`` are fitted freely and the ``d_j`` (and the MACs, as
one more deviation column) are shrunk toward zero, i.e. toward the equal mix, by a ridge
penalty chosen by exact leave-one-out error: with 5 measurements it is in effect the mean of
the other devices, calibrated; with 50 it weighs them as the new device says.

**Candidates, chosen by leave-one-out error on the k measurements** (relative RMSE, the
measure every kind here minimises):

``prior``
    the ridge mix above;
``nearest``
    the single other device that fits best, ``a * z_j + b``;
``prior+residual``
    the mix plus the ``additive`` kind's network-wide features (ridge-penalised): what no
    other device explains, learned when ``k >= residual_min`` (20 by default);
``flops``, ``additive``
    the single-device kinds fitted on the k measurements alone (``additive`` once ``k``
    exceeds its unpenalised coefficients by 2: below, it interpolates, and its
    leave-one-out error is luck).

So with no other devices it *is* the better of ``flops`` and ``additive`` at that ``k`` (by
leave-one-out error), and with many measurements it keeps ``additive`` when that fits better:
it degrades to what a device alone supports. Leave-one-out error on 5 to 10 points is itself
noisy; ``selection="one_se"`` takes the candidate with the fewest coefficients within one
standard error of the best instead (more often ``flops``: safer when the other devices know
little beyond the MACs, slower to leave ``flops`` when they do);
``experiments/benchmarks/fewshot.py`` measures both.

**Where the other devices come from.** :meth:`TransferPredictor.prepare_params` (called by
``nas latency fit``) takes, for every other device of the database with the same space whose
resolutions cover the new device's, its best stored predictor that restores from JSON alone
and does not itself transfer (by held-out MAPE, as ``nas latency predict`` chooses), or, when
it has none but 20 or more measurements, an ``additive`` fitted on them then. In code, pass
``priors=`` (:func:`prior_entry` makes an entry from a fitted predictor).

**Storage.** The state embeds the stored parameters and state of every other device's
predictor the chosen model uses, its normalisers and coefficients (or, when a single-device
kind won, that kind's state alone), so a stored ``transfer`` predicts after a reload without
the database, and predicts the same even when the other devices' predictors are refitted
later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from nas.errors import ConfigError, NASError
from nas.latency._features import layer_features
from nas.latency._kinds import (
    _DEFAULT_ALPHAS,
    FEATURES,
    AdditivePredictor,
    FlopsPredictor,
    _ridge_loo,
)
from nas.latency._predictors import (
    PREDICTORS,
    LatencyPredictor,
    predictor_class,
    predictor_from_state,
)
from nas.latency._structure import (
    StructurePredictor,
    _PerInputSide,
    fit_structure,
)
from nas.space import ArchArrays, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB

__all__ = ["MODELS", "TransferPredictor", "prior_devices", "prior_entry"]

#: a candidate model (see the module docstring)
Model = Literal["prior", "nearest", "prior+residual", "flops", "structure", "additive"]
#: The candidate models, in the order they are tried (see the module docstring).
MODELS: tuple[Model, ...] = ("prior", "nearest", "prior+residual", "flops", "structure",
                             "additive")
#: the candidates by the number of coefficients they fit (the one-standard-error rule's order)
SIMPLEST_FIRST = ("flops", "nearest", "structure", "prior", "additive", "prior+residual")
#: ``structure`` is chosen only with a leave-one-out error below this share of the best
#: other candidate's
STRUCTURE_MARGIN = 0.9
#: the candidates fitted on the new device's measurements alone
SINGLE = ("flops", "structure", "additive")
#: ridge strengths, up to strong enough to pin the mix to the equal one
_ALPHAS = (*_DEFAULT_ALPHAS, 1e4, 1e6)
#: measurements a device needs for an ``additive`` fitted on the fly to serve as a prior
MIN_PRIOR_MEASUREMENTS = 20


def prior_entry(device: str, predictor: LatencyPredictor) -> dict[str, Any]:
    """A fitted predictor of another ``device`` as an entry of ``priors=``."""
    return {"device": device, "kind": predictor.kind, "params": predictor.json_params(),
            "state": predictor.get_state()}


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 where one side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 0.0
    return float(np.mean((ra - ra.mean()) * (rb - rb.mean())) / (sa * sb))


def _check_entry(entry: Any, i: int, space: str) -> tuple[str, LatencyPredictor]:
    """The device name and the restored predictor of ``priors[i]``."""
    if not isinstance(entry, dict) or not {"device", "kind", "params", "state"} <= set(entry):
        raise ConfigError(f"priors[{i}] must be a mapping with device, kind, params and state "
                          f"(see prior_entry), got {entry!r:.80}")
    cls = predictor_class(str(entry["kind"]))
    if cls.uses_prior_devices or not cls.restores_from_state:
        raise ConfigError(f"priors[{i}].kind = {entry['kind']!r}: must be a kind that restores "
                          "from its JSON state and does not itself use other devices")
    got = entry["params"].get("space") if isinstance(entry["params"], dict) else None
    if got != space:
        raise ConfigError(f"priors[{i}] ({entry['device']}) predicts space {got!r}, not "
                          f"{space!r}")
    return str(entry["device"]), predictor_from_state(cls.kind, entry["params"], entry["state"])


#: the features' constant column (image spaces' layer tables; a language model's call)
_CONSTANT = ("const", "call")


@PREDICTORS.register
class TransferPredictor(_PerInputSide):
    """Few-shot: other devices' predictors mixed and calibrated on a few measurements (see
    the module docstring for the model and what it assumes).

    Args:
        space: the search space.
        priors: the other devices' fitted predictors, as :func:`prior_entry` makes them
            (kept in the stored state); None or empty: single-device kinds only.
        models: the candidates to choose from, a subset of :data:`MODELS`.
        residual_min: measurements from which ``prior+residual`` is a candidate.
        residual_penalty: penalty of the residual features relative to the deviations.
        selection: ``"min"``: the candidate of least leave-one-out error; ``"one_se"``: the
            simplest within one standard error of it.
        workload: for a ``gpt`` space, the new device's workload (its profile's, when
            created for a device): the features of ``flops``, ``additive`` and the residual
            are those of one call of it; the other devices may time other workloads (their
            predictors are columns like any other).
        input_resolution: for an image space, the side of the inputs the new device feeds
            every subnet (its profile's, when created for a device): the ``structure``
            candidate's MACs and activations are at that side.
    """

    name = "transfer"
    description = ("few-shot: the other devices' predictors mixed, calibrated on a few "
                   "measurements")
    #: its single-device candidates, ``flops`` and ``additive``, price both families
    tags = FEATURES
    uses_prior_devices = True
    state_params = ("priors",)
    #: while fitting: the other devices' predictions of the k measured subnets
    z_fit_: np.ndarray | None

    def __init__(
        self, *, space: str = "ofa_mbv3", priors: list[dict[str, Any]] | None = None,
        models: tuple[Model, ...] = MODELS, residual_min: int = 20,
        residual_penalty: float = 1.0, selection: Literal["min", "one_se"] = "min",
        workload: dict[str, Any] | None = None, input_resolution: int | None = None,
    ) -> None:
        self.space = space
        self.priors = priors
        self.models = models
        self.residual_min = residual_min
        self.residual_penalty = residual_penalty
        self.selection = selection
        self.workload = workload
        self.input_resolution = input_resolution

    def _feature_set(self) -> Any:
        """The new device's features: a language model's call under its workload, or an
        image space's layer tables."""
        return self._gpt() or layer_features(self.space)

    def _single(self, kind: str) -> LatencyPredictor:
        """An unfitted single-device ``flops``, ``structure`` or ``additive`` for the new
        device."""
        name = get_space(self.space).name
        if kind == "structure":
            return StructurePredictor(space=name, workload=self.workload,
                                      input_resolution=self.input_resolution)
        cls = FlopsPredictor if kind == "flops" else AdditivePredictor
        return cls(space=name, workload=self.workload)

    # -------------------------------------------------------------- the other devices
    @classmethod
    def prepare_params(cls, params: dict[str, Any], *, db: LatencyDB, device: str,
                       space: str, progress: bool) -> dict[str, Any]:
        """With no ``priors`` given: every other device's predictor, by
        :func:`prior_devices`."""
        if params.get("priors") is not None:
            return params
        return {**params, "priors": prior_devices(db, device, space)}

    def _restore_priors(self, entries: Sequence[Any]) -> None:
        sp = get_space(self.space).name
        got = [_check_entry(e, i, sp) for i, e in enumerate(entries)]
        names = [n for n, _ in got]
        if len(set(names)) != len(names):
            raise ConfigError(f"priors name a device twice: {names}")
        self.prior_devices_ = names
        self.priors_ = [p for _, p in got]
        self.prior_entries_ = list(entries)

    def _z(self, a: ArchArrays, idx: Sequence[int] | None = None) -> np.ndarray:
        """``(n, J)`` predictions of the other devices (all, or those at ``idx``)."""
        use = range(len(self.priors_)) if idx is None else idx
        if not len(use):
            return np.zeros((len(a), 0))
        return np.stack([self.priors_[j].predict(a) for j in use], axis=1)

    # -------------------------------------------------------------- design matrices
    def _design(self, model: str, a: ArchArrays, z: np.ndarray,
                macs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Columns and per-column penalties (0: unpenalised) of ``model``'s linear form."""
        n = len(a)
        m = z.mean(axis=1)
        if model == "nearest":
            return np.stack([z[:, 0], np.ones(n)], axis=1), np.zeros(2)
        cols = [m, np.ones(n), z - m[:, None], (macs - m)[:, None]]
        pen = [np.zeros(2), np.ones(z.shape[1] + 1)]
        if model == "prior+residual":
            lf = self._feature_set()
            agg = [i for i, g in enumerate(lf.groups) if g == "aggregate" and
                   lf.names[i] not in _CONSTANT]
            cols.append(lf.transform(a)[:, agg])
            pen.append(np.full(len(agg), float(self.residual_penalty)))
        return np.column_stack(cols), np.concatenate(pen)

    def _macs(self, a: ArchArrays) -> np.ndarray:
        return np.asarray(self._feature_set().macs(a), dtype=np.float64)

    # -------------------------------------------------------------- fit
    def _candidates(self, a: ArchArrays, y: np.ndarray) -> dict[str, tuple[Any, ...]]:
        """Each candidate's design ``(X, penalty, alphas)``; ``nearest`` has one per device
        (``X`` of shape ``(J, n, 2)``)."""
        lf = self._feature_set()
        out: dict[str, tuple[Any, ...]] = {}
        if "flops" in self.models:
            out["flops"] = (np.stack([self._macs(a), np.ones(len(a))], axis=1), np.zeros(2),
                            (0.0,))
        if "additive" in self.models:
            add: Any = self._single("additive")
            cols = add._columns()
            pen = add._penalty(cols)
            # with no more measurements than free coefficients (+2) it interpolates, and its
            # leave-one-out error on a handful of points is luck: not a candidate
            if len(y) > int(np.sum(pen == 0)) + 2:
                out["additive"] = (lf.transform(a)[:, cols], pen, _DEFAULT_ALPHAS)
        if not self.priors_:
            return out
        z = self._z(a)
        self.z_fit_ = z  # the other devices' predictions of the k, for _sources_disagree
        self.norms_ = z.mean(axis=0)
        z = z / self.norms_
        macs = self._macs(a)
        self.macs_norm_ = float(macs.mean())
        for model in ("prior", "prior+residual"):
            if model in self.models and (model == "prior" or len(y) >= self.residual_min):
                X, pen = self._design(model, a, z, macs / self.macs_norm_)
                out[model] = (X, pen, _ALPHAS)
        if "nearest" in self.models:
            out["nearest"] = (np.stack([np.stack([z[:, j], np.ones(len(a))], axis=1)
                                        for j in range(z.shape[1])]), np.zeros(2), (0.0,))
        return out

    @staticmethod
    def _solve(model: str, design: tuple[Any, ...], y: np.ndarray,
               w: np.ndarray) -> tuple[np.ndarray, float, int]:
        """Coefficients, ridge strength and (for ``nearest``) the device index fitted on
        ``y``; ``nearest`` takes the device that fits best."""
        X, pen, alphas = design
        if model != "nearest":
            coef, alpha, _ = _ridge_loo(X, y, w, pen, alphas)
            return coef, alpha, -1
        best: tuple[float, np.ndarray, int] | None = None
        for j in range(len(X)):
            coef = _ridge_loo(X[j], y, w, pen, alphas)[0]
            sse = float(np.sum(w * (y - X[j] @ coef) ** 2))
            if best is None or sse < best[0]:
                best = (sse, coef, j)
        assert best is not None
        return best[1], 0.0, best[2]

    def _loo(self, model: str, design: tuple[Any, ...], y: np.ndarray,
             w: np.ndarray) -> np.ndarray:
        """Leave-one-out relative RMSE, every choice (ridge strength, device) made again
        without the left-out measurement: a closed form does not hold when a candidate has
        as many free coefficients as measurements."""
        X = design[0]
        keep = np.ones(len(y), dtype=bool)
        err = np.empty(len(y))
        for i in range(len(y)):
            keep[i] = False
            sub = (X[:, keep] if model == "nearest" else X[keep], *design[1:])
            coef, _, j = self._solve(model, sub, y[keep], w[keep])
            row = X[j, i] if model == "nearest" else X[i]
            err[i] = (y[i] - row @ coef) / y[i]
            keep[i] = True
        return err

    def _sources_disagree(self, y: np.ndarray) -> bool:
        """Whether every other device ranks the k measured subnets worse than the
        ``structure`` candidate's leave-one-out predictions do (with 4 or more measurements
        and other devices; Spearman on the k)."""
        z = getattr(self, "z_fit_", None)
        if z is None or not z.shape[1] or "structure" not in self.loo_rank_:
            return False
        best_source = max(_rank_corr(z[:, j], y) for j in range(z.shape[1]))
        return bool(best_source < self.loo_rank_["structure"])

    def _structure_loo(self, a: ArchArrays, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Leave-one-out relative errors of ``structure``, its ridge strength chosen again
        without the left-out measurement."""
        X = self._single("structure")._X(a)  # type: ignore[attr-defined]
        keep = np.ones(len(y), dtype=bool)
        err = np.empty(len(y))
        for i in range(len(y)):
            keep[i] = False
            c, b, _, _ = fit_structure(X[keep], y[keep], w[keep])
            err[i] = (y[i] - (X[i] @ c + b)) / y[i]
            keep[i] = True
        return err

    def _fit(self, a: ArchArrays, y: np.ndarray) -> None:
        bad = [m for m in self.models if m not in MODELS]
        if bad or not self.models:
            raise ConfigError(f"models must be a non-empty subset of {list(MODELS)}, got "
                              f"{list(self.models)}")
        self._restore_priors(self.priors or [])
        self.z_fit_ = None
        designs = self._candidates(a, y)
        w = 1.0 / y**2
        errs = {m: self._loo(m, d, y, w) for m, d in designs.items()}
        if "structure" in self.models and len(y) >= 4:
            errs["structure"] = self._structure_loo(a, y, w)
        if not errs:
            raise ConfigError(f"models {list(self.models)} need other devices (priors), and "
                              "none were given")
        self.loo_ = {m: float(np.sqrt(np.mean(e**2))) for m, e in errs.items()}
        # leave-one-out predictions rank the k measurements: how well each candidate orders
        # subnets it did not see
        self.loo_rank_ = {m: _rank_corr(y * (1 - e), y) for m, e in errs.items()}
        self.sources_disagree_ = self._sources_disagree(y)
        if self.sources_disagree_:
            # the other devices order the measured subnets worse than the device's own
            # structure does: they are another kind of hardware, and a calibrated mix of them
            # can still fit the k values closely while ordering them wrongly; the candidate
            # whose leave-one-out predictions order the k best is chosen (the device's own
            # evidence; a prior-based one only where it ranks better still)
            best = max(errs, key=lambda m: (self.loo_rank_[m], -self.loo_[m]))
        else:
            # structure's extra costs (operators, bytes, pixels) are taken over flops only
            # when they explain clearly more: between near-ties on k points, leave-one-out
            # picks by chance, and the extra coefficients then cost accuracy
            rank = {m: v / STRUCTURE_MARGIN if m == "structure" and "flops" in self.loo_
                    and v > STRUCTURE_MARGIN * self.loo_["flops"] else v
                    for m, v in self.loo_.items()}
            best = min(rank, key=lambda m: (rank[m], SIMPLEST_FIRST.index(m)))
        if self.selection == "one_se" and not self.sources_disagree_:
            # the simplest candidate within one standard error of the best: k leave-one-out
            # errors rank candidates that differ by less than that by chance
            sq = errs[best] ** 2
            se = float(np.std(sq, ddof=1) / np.sqrt(len(sq)) / (2 * self.loo_[best] + 1e-12)) \
                if len(sq) > 1 else 0.0
            best = next(m for m in SIMPLEST_FIRST
                        if m in self.loo_ and self.loo_[m] <= self.loo_[best] + se)
        elif self.selection != "min":
            raise ConfigError(f"selection must be 'min' or 'one_se', got {self.selection!r}")
        self.model_ = best
        if best in SINGLE:
            self.base_ = self._single(best).fit(a, y)
            self._restore_priors([])
            return
        coef, alpha, j = self._solve(best, designs[best], y, w)
        use = [j] if best == "nearest" else list(range(len(self.priors_)))
        self.norms_ = self.norms_[use]
        self._restore_priors([self.prior_entries_[i] for i in use])
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.alpha_ = float(alpha)

    # -------------------------------------------------------------- predict
    def _predict(self, a: ArchArrays) -> np.ndarray:
        if self.model_ in SINGLE:
            return np.asarray(self.base_._predict(a), dtype=np.float64)
        z = self._z(a) / self.norms_
        X, _ = self._design(self.model_, a, z, self._macs(a) / self.macs_norm_)
        return X @ self.coef_  # type: ignore[no-any-return]

    # -------------------------------------------------------------- storage
    def _state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model_, "loo_rel_rmse": self.loo_,
                               "priors": self.prior_entries_}
        if self.model_ in SINGLE:
            out["base"] = {"kind": self.base_.kind, "params": self.base_.json_params(),
                           "state": self.base_.get_state()}
        else:
            out.update(devices=self.prior_devices_, norms=self.norms_.tolist(),
                       macs_norm=self.macs_norm_, coef=self.coef_.tolist(), alpha=self.alpha_)
        return out

    def _set_state(self, state: dict[str, Any]) -> None:
        self.model_ = str(state["model"])
        if self.model_ not in MODELS:
            raise NASError(f"stored transfer predictor has unknown model {self.model_!r}")
        self.loo_ = dict(state.get("loo_rel_rmse", {}))
        self._restore_priors(self.priors or [])
        if self.model_ in SINGLE:
            b = state["base"]
            self.base_ = predictor_from_state(b["kind"], b["params"], b["state"])
            return
        self.norms_ = np.asarray(state["norms"], dtype=np.float64)
        self.macs_norm_ = float(state["macs_norm"])
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
        self.alpha_ = float(state["alpha"])


# ---------------------------------------------------------------------- from the database
def _score(metrics: dict[str, Any]) -> tuple[int, float]:
    """Held-out MAPE first, then in-sample, then none (as ``load_predictor`` ranks kinds)."""
    if metrics.get("test"):
        return (0, float(metrics["test"]["mape"]))
    if metrics.get("train"):
        return (1, float(metrics["train"]["mape"]))
    return (2, float("inf"))


def _best_stored(db: LatencyDB, device: str, space: str) -> dict[str, Any] | None:
    newest: dict[str, Any] = {}
    for rec in db.list_predictors(device, space):  # oldest first: the newest wins
        if rec.kind not in PREDICTORS:
            continue
        cls = PREDICTORS.get(rec.kind)
        if cls.restores_from_state and not cls.uses_prior_devices:
            newest[rec.kind] = rec
    if not newest:
        return None
    rec = min(newest.values(), key=lambda r: _score(r.metrics))
    return {"device": device, "kind": rec.kind, "params": rec.params, "state": rec.state}


def prior_devices(
    db: LatencyDB, device: str, space: str, *, resolutions: Sequence[int] | None = None,
    exclude: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The other devices of ``db`` that can inform a few-shot predictor of ``device``.

    For each device other than ``device`` (and ``exclude``) whose profile's resolutions
    cover ``resolutions`` (default: ``device``'s profile's, else all of the space's): its
    best stored predictor of ``space`` among the kinds that restore from JSON and do not
    use other devices (lowest held-out MAPE), or with none stored and at least
    :data:`MIN_PRIOR_MEASUREMENTS` measurements, an ``additive`` fitted on them now.

    Returns:
        Entries for ``priors=`` (:func:`prior_entry`), by device name.
    """
    from nas.devices import get_device
    from nas.errors import UnknownNameError
    from nas.latency._fit import training_data

    sp = get_space(space)
    if resolutions is None:
        target = db.device_profile(device)
        if target is None:
            try:
                target = get_device(device)
            except UnknownNameError:
                target = None
        resolutions = ((target.resolutions if target is not None else None)
                       or getattr(sp, "resolutions", None) or ())
    need = {int(r) for r in resolutions}  # none for a language model's space
    out = []
    for name in db.devices():
        if name == device or name in exclude:
            continue
        prof = db.device_profile(name)
        if prof is not None and prof.resolutions is not None and \
                not need <= set(prof.resolutions):
            continue
        entry = _best_stored(db, name, sp.name)
        if entry is None:
            try:
                data = training_data(name, sp.name, db)
            except NASError:
                continue
            if len(data) < MIN_PRIOR_MEASUREMENTS:
                continue
            params = ({"workload": prof.workload.model_dump(exclude_none=True)}
                      if prof is not None and prof.workload is not None else {})
            try:
                add = AdditivePredictor.create(sp.name, name, **params)
            except NASError:  # a device whose workload the space cannot run
                continue
            entry = prior_entry(name, add.fit(data.archs, data.y))
        out.append(entry)
    return out
