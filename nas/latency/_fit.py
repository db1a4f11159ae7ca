"""Fitting latency predictors on stored measurements, and loading them back from the DB."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.devices import DeviceProfile, get_device
from nas.errors import ConfigError, NASError
from nas.latency._predictors import (
    DEFAULT_KIND,
    PREDICTORS,
    LatencyPredictor,
    baseline_class,
    predictor_class,
    predictor_from_state,
)
from nas.measure import (
    PriorPredictions,
    device_scale,
    noise_floor_from_db,
    on_scale,
    regression_metrics,
)
from nas.space import Architecture, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB

__all__ = [
    "TrainingData",
    "check_fit",
    "check_prices",
    "fit_predictor",
    "load_predictor",
    "prior_predictions",
    "training_data",
]


@dataclass(frozen=True)
class TrainingData:
    """The measured latencies of one (device, space), one row per distinct architecture.

    Repeated measurements of the same subnet are averaged; ``ids`` keeps every measurement
    id behind a row, so that a fit can be reproduced from the stored ids.
    """

    archs: list[Architecture]
    y: np.ndarray
    ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.archs)

    def subset(self, idx: Any) -> TrainingData:
        idx = np.asarray(idx, dtype=np.intp)
        return TrainingData([self.archs[i] for i in idx], self.y[idx],
                            [self.ids[i] for i in idx])

    def flat_ids(self) -> list[int]:
        return sorted(i for group in self.ids for i in group)


def _open_db(db: LatencyDB | str | None) -> LatencyDB:
    from nas.db import LatencyDB

    return db if isinstance(db, LatencyDB) else LatencyDB(db)


def _name(device: str | DeviceProfile) -> str:
    return device.name if isinstance(device, DeviceProfile) else get_device(device).name


def training_data(
    device: str | DeviceProfile, space: str, db: LatencyDB, *,
    ids: list[int] | None = None, scale_ms: float | None = None,
) -> TrainingData:
    """Successful measurements (measured or imported, not noise repeats) of ``space`` on
    ``device``; only those with ``ids`` when given. Relative measurements are put on the
    device's current scale (:func:`~nas.measure.on_scale`), or on ``scale_ms`` when given
    (the scale a stored predictor was fitted on: later measurements move the device's).

    Raises:
        NASError: there are none (the message says which command measures some).
    """
    from nas.db import TIMED_SOURCES

    name = _name(device)
    sp = get_space(space)
    want = set(ids) if ids is not None else None
    groups: dict[Architecture, list[tuple[int, float]]] = {}
    recs = db.measurements(name, sp.name, status="ok")
    scale = device_scale(name, sp, db, records=recs)
    if scale is not None and scale_ms is not None:
        scale = dataclasses.replace(scale, ms=float(scale_ms))
    for rec in recs:
        if rec.source not in TIMED_SOURCES or rec.latency_ms is None:
            continue
        if want is not None and rec.id not in want:
            continue
        groups.setdefault(rec.arch, []).append((rec.id, on_scale(rec, scale)))  # type: ignore[arg-type]
    if not groups:
        raise NASError(
            f"no measurements of space {sp.name} on device {name} yet; run "
            f"`nas latency measure --device {name} --space {sp.name} --n 200` first"
        )
    archs = list(groups)
    y = np.asarray([np.mean([v for _, v in groups[a]]) for a in archs])
    return TrainingData(archs, y, [[i for i, _ in groups[a]] for a in archs])


def _split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= holdout < 1:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(n * holdout)
    if holdout > 0 and (n_test < 2 or n - n_test < 2):
        raise NASError(
            f"{n} measurements are too few for a {holdout:g} holdout (both sides need at least "
            f"2); measure more or pass --holdout 0"
        )
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def fit_predictor(
    device: str | DeviceProfile, space: str, kind: str, *, db: LatencyDB | str | None = None,
    holdout: float = 0.2, seed: int = 0, params: dict[str, Any] | None = None,
    save: bool = True, progress: bool = False,
) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Fit a predictor of ``kind`` on the stored measurements and save it as JSON.

    A share ``holdout`` of the measured subnets (random, ``seed``) is kept out of the fit and
    scores it; the ``flops`` baseline is scored on the same split, and the noise floor (from
    stored repeats, if any) is reported next to them. The saved predictor is the one fitted
    on the training part, so its metrics are honest; pass ``holdout=0`` to fit on everything
    (the metrics are then in-sample). LUT kinds reuse a lookup table stored earlier for the
    device and space, and time one otherwise.

    Args:
        device: device name or profile.
        space: search space name.
        kind: one of :data:`~nas.latency.PREDICTORS`.
        db: a database or its URL (default: ``$NAS_DB_URL`` or the default file).
        holdout: share of subnets held out for the metrics.
        seed: seed of the split.
        params: hyper-parameters for the predictor.
        save: store it in the database.
        progress: show a progress bar while a lookup table is timed.

    Returns:
        The fitted predictor and its metrics: ``test`` (or ``train`` when ``holdout=0``),
        ``flops`` (the baseline on the same split), ``noise`` (or None), ``n_train``,
        ``n_test``, ``holdout``, ``seed``.
    """
    cls = predictor_class(kind)
    check_fit(kind, device)
    sp = get_space(space)
    check_prices(kind, sp)
    store = _open_db(db)
    name = _name(device)
    data = training_data(name, sp.name, store)
    tr, te = _split(len(data), holdout, seed)
    train = data.subset(tr)
    test = data.subset(te) if len(te) else train
    p = cls.prepare_params(dict(params or {}), db=store, device=name, space=sp.name,
                           progress=progress)
    est = cls.create(sp.name, device=name, **p).fit(train.archs, train.y)
    scored = "test" if len(te) else "train"
    metrics: dict[str, Any] = {
        scored: regression_metrics(test.y, est.predict(test.archs)),
        "n_train": len(train), "n_test": len(te), "holdout": holdout, "seed": seed,
    }
    base = baseline_class()
    metrics[base.kind] = (metrics[scored] if cls.is_baseline else regression_metrics(
        test.y, base.create(sp.name, device=name).fit(train.archs, train.y).predict(
            test.archs)))
    nf = noise_floor_from_db(name, sp.name, store)
    metrics["noise"] = nf.to_dict() if nf is not None else None
    scale = device_scale(name, sp, store)
    metrics["scale"] = scale.to_dict() if scale is not None else None
    if save:
        store.ensure_device(get_device(name))
        store.save_predictor(name, sp.name, kind, params=est.json_params(),
                             state=est.get_state(), metrics=metrics,
                             measurement_ids=train.flat_ids())
    return est, metrics


def check_prices(kind: str, space: Any) -> None:
    """Raise at once when ``kind`` does not price ``space`` (its tags name other families),
    listing the kinds that do.

    Raises:
        ConfigError: e.g. ``lut`` (it times OFA's blocks) for a ``gpt`` space.
    """
    from nas._plugin import applies_to

    sp = get_space(space)
    if not applies_to(predictor_class(kind), sp.family, sp.name):
        ok = [k for k, c in PREDICTORS.items() if applies_to(c, sp.family, sp.name)]
        raise ConfigError(f"kind {kind!r} does not price space {sp.name!r} (the "
                          f"{sp.family!r} family); kinds that do: {', '.join(ok) or 'none'}")


def check_fit(kind: str, device: str | DeviceProfile) -> None:
    """Raise at once, before anything is read or timed, when ``kind`` cannot be fitted for
    ``device``; the message lists the kinds that can.

    Raises:
        ConfigError: e.g. ``lut`` (it times blocks) for an external device.
    """
    profile = device if isinstance(device, DeviceProfile) else get_device(device)
    try:
        predictor_class(kind).check_fit(profile)
    except ConfigError as exc:
        ok = [k for k, c in PREDICTORS.items() if c.check_fit_ok(profile)]
        raise ConfigError(f"{exc}; kinds that can be fitted for {profile.name}: "
                          f"{', '.join(ok) or 'none'}") from None


def load_predictor(
    device: str | DeviceProfile, space: str, kind: str | None = None,
    db: LatencyDB | str | None = None,
) -> LatencyPredictor:
    """The newest stored predictor of (device, space), fitted and ready to ``predict``.

    With none stored (of ``kind``, when ``kind`` is None or ``"table"``), the lookup table
    the package ships for the device (``nas/_data/tables/<device>.json``, e.g. ``note10``:
    OFA's Note10 tables), if any.

    With ``kind=None`` the best kind is chosen: among the newest predictor of each kind, the
    one with the lowest held-out MAPE (predictors fitted with ``holdout=0`` count by their
    in-sample MAPE only when none has a held-out one).

    Raises:
        NASError: nothing stored (the message says which command fits one).
    """
    store = _open_db(db)
    name = _name(device)
    sp = get_space(space)
    if kind is not None:
        predictor_class(kind)
        rec = store.load_predictor(name, sp.name, kind)
    else:
        recs = [r for k in PREDICTORS if (r := store.load_predictor(name, sp.name, k))]

        def score(r: Any) -> tuple[int, float]:
            m = r.metrics
            if m.get("test"):
                return (0, float(m["test"]["mape"]))
            return (1, float((m.get("train") or {}).get("mape", np.inf)))

        rec = min(recs, key=score) if recs else None
    if rec is None and kind in (None, "table"):
        from nas.latency._table import shipped_table

        shipped = shipped_table(name, sp.name)
        if shipped is not None:
            return shipped
    if rec is None:
        what = f"{kind!r} predictor" if kind else "predictor"
        raise NASError(
            f"no {what} for space {sp.name} on device {name} yet; run `nas latency fit "
            f"--device {name} --space {sp.name} --kind {kind or DEFAULT_KIND}` first"
        )
    refit = None
    if not predictor_class(rec.kind).restores_from_state:
        # on the scale it was fitted on: measurements since (a check, noise repeats) move
        # the device's scale, and the re-fit must reproduce the stored predictor
        fitted_on = (rec.metrics.get("scale") or {}).get("ms")
        data = training_data(name, sp.name, store, ids=rec.measurement_ids, scale_ms=fitted_on)
        refit = (data.archs, data.y)
    return predictor_from_state(rec.kind, rec.params, rec.state, refit_data=refit)


def prior_predictions(
    space: SearchSpace, pool: list[Architecture], db: LatencyDB | None, device: str | None,
) -> PriorPredictions:
    """Each other device's best stored predictor's predictions on ``pool``: the ``priors`` of
    :func:`nas.measure.select_for_measurement`'s ``informative`` choice (a
    :class:`nas.measure.PriorSource`).

    Args:
        space: the pool's search space.
        pool: the candidate subnets.
        db: where the predictors are stored (None: there are none).
        device: the device being measured, left out.

    Returns:
        The predictions of every device of ``space`` with a stored predictor; a device whose
        predictor cannot price the pool (e.g. a table with only some resolutions) is in
        ``skipped`` with the reason.
    """
    out = PriorPredictions()
    if db is None:
        return out
    for name in sorted({r.device for r in db.list_predictors(space=space.name)} - {device}):
        try:
            pred = load_predictor(name, space.name, db=db)
            y = np.asarray(pred.predict(pool), dtype=np.float64)
        except NASError as exc:
            out.skipped[name] = str(exc)
            continue
        if y.shape != (len(pool),) or not np.all(np.isfinite(y) & (y > 0)):
            out.skipped[name] = "predictions not finite and positive on the pool"
            continue
        out.predictions[name] = y
        out.kinds[name] = pred.kind
    return out
