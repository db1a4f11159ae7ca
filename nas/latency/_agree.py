"""Do a device's predictions agree with fresh measurements? Time subnets now, with the same
protocol and on the same scale the predictor was fitted on, and compare, next to the noise
floor (how well a measurement of one subnet repeats, the disagreement nobody can beat).

The fresh timings are stored with source ``"check"``: kept, never trained on, and their
reference blocks join the device's scale (:mod:`nas.measure._scale`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.devices import DeviceProfile
from nas.errors import NASError
from nas.measure import (
    Exporter,
    NoiseFloor,
    Scale,
    TimingConfig,
    device_scale,
    measure_on_devices,
    noise_floor,
    noise_floor_from_db,
    on_scale,
    resolve_device,
)
from nas.space import Architecture, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB
    from nas.latency._predictors import LatencyPredictor
    from nas.supernet import OFASupernet

__all__ = ["Agreement", "check_agreement", "held_out_subnets"]

#: Repeats measured for the noise floor when the device has fewer stored.
NOISE_REPEATS = 10


@dataclass(frozen=True)
class Agreement:
    """Predictions next to fresh measurements of the same subnets.

    Attributes:
        device, space: where.
        kind: the predictor's kind.
        hashes: the subnets, in order.
        predicted, measured: milliseconds, one per subnet (measured on the device's scale).
        noise: the device's noise floor (None if it could not be measured).
        scale: the scale both are on.
    """

    device: str
    space: str
    kind: str
    hashes: tuple[str, ...]
    predicted: np.ndarray
    measured: np.ndarray
    noise: NoiseFloor | None
    scale: Scale | None

    @property
    def errors(self) -> np.ndarray:
        """``predicted / measured - 1`` per subnet."""
        return self.predicted / self.measured - 1

    @property
    def median_error(self) -> float:
        """The median signed error (a bias of the whole scale shows here)."""
        return float(np.median(self.errors))

    @property
    def spearman(self) -> float | None:
        """Rank correlation of predicted and measured (None below 3 subnets)."""
        if len(self.hashes) < 3:
            return None
        from scipy.stats import spearmanr

        return float(spearmanr(self.predicted, self.measured).statistic)

    @property
    def within_noise(self) -> bool | None:
        """Whether the median error is within the noise floor's p90 (None without one)."""
        if self.noise is None:
            return None
        return abs(self.median_error) <= self.noise.p90

    def to_dict(self) -> dict[str, Any]:
        rho = self.spearman
        return {
            "device": self.device, "space": self.space, "kind": self.kind,
            "subnets": [{"hash": h, "predicted_ms": float(p), "measured_ms": float(m),
                         "error": float(e)}
                        for h, p, m, e in zip(self.hashes, self.predicted, self.measured,
                                              self.errors, strict=True)],
            "median_error": self.median_error,
            "median_abs_error": float(np.median(np.abs(self.errors))),
            "spearman_rho": rho,
            "noise": self.noise.to_dict() if self.noise is not None else None,
            "within_noise": self.within_noise,
            "scale": self.scale.to_dict() if self.scale is not None else None,
        }


def held_out_subnets(space: str | SearchSpace, db: LatencyDB, device: str, n: int,
                     seed: int = 0) -> list[Architecture]:
    """``n`` random subnets of ``space`` that ``device`` has no measurement of."""
    sp = get_space(space)
    seen = {r.arch for r in db.measurements(device, sp.name, status=None)}
    rng = np.random.default_rng(seed)
    out: list[Architecture] = []
    for _ in range(100):
        for a in sp.sample_many(max(4 * n, 16), seed=int(rng.integers(2**31)),
                                unique=False):
            if a not in seen:
                seen.add(a)
                out.append(a)
                if len(out) == n:
                    return out
    return out


def check_agreement(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB, *,
    archs: Iterable[Architecture | dict[str, Any] | str] | None = None, n: int = 10,
    seed: int = 0, predictor: LatencyPredictor | None = None, kind: str | None = None,
    noise: int = NOISE_REPEATS, sessions: int = 3, supernet: OFASupernet | None = None,
    exporter: Exporter | None = None, config: TimingConfig | None = None,
    address: str | None = None, progress: bool = True,
) -> Agreement:
    """Measure subnets now and compare them with a stored predictor's predictions.

    Args:
        archs: the subnets (default: ``n`` random ones the device has not measured).
        predictor: the predictor to check (default: the stored one of ``kind``, or the best).
        noise: when the device has fewer stored repeats than this, re-measure this many
            measured subnets for the noise floor first (0: use what is stored, if anything).
            The repeats use ``config`` as it is: the floor is that of one measurement.
        sessions: each subnet is measured in this many fresh sessions and their median
            kept (a session carries an offset of its own of about 1%), so that what is
            compared is the predictor, not one session's luck.
        supernet, exporter, config, address, progress: as for
            :func:`~nas.measure.measure_on_devices`.

    Raises:
        NASError: no predictor stored, or every fresh measurement failed.
    """
    from nas.latency._fit import load_predictor

    sp = get_space(space)
    profile = resolve_device(device)
    pred = predictor if predictor is not None else load_predictor(profile, sp.name, kind, db=db)
    todo: Sequence[Architecture] = ([sp.parse(a) for a in archs] if archs is not None
                                    else held_out_subnets(sp, db, profile.name, n, seed))
    if not todo:
        raise NASError(f"no subnets to check on {profile.name}")
    nf = noise_floor_from_db(profile, sp, db)
    if noise and (nf is None or nf.n < noise):
        nf = noise_floor(profile, sp, db, k=noise - (nf.n if nf else 0), seed=seed + 1,
                         supernet=supernet, progress=progress, address=address, config=config)
    ids = measure_on_devices([profile], sp, todo, db, supernet=supernet, progress=progress,
                             address=address, source="check",
                             config=(config or TimingConfig()).replace(sessions=sessions),
                             exporter=exporter)[profile.name]
    recs = db.measurements(profile.name, sp.name, status=None)
    by_id = {r.id: r for r in recs}
    scale = device_scale(profile, sp, db, records=[r for r in recs if r.status == "ok"])
    keep = [(a, by_id[i]) for a, i in zip(todo, ids, strict=True)
            if by_id[i].status == "ok" and by_id[i].latency_ms is not None]
    if not keep:
        first = by_id[ids[0]].error if ids else None
        raise NASError(f"every fresh measurement on {profile.name} failed: {first}")
    measured = np.asarray([on_scale(r, scale) for _, r in keep], dtype=np.float64)
    predicted = np.asarray(pred.predict([a for a, _ in keep]), dtype=np.float64)
    return Agreement(profile.name, sp.name, pred.kind, tuple(a.hash for a, _ in keep),
                     predicted, measured, nf, scale)
