"""The noise floor: how well a measurement repeats in fresh sessions, the error no latency
predictor can beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.devices import DeviceProfile
from nas.errors import NASError
from nas.measure._measure import measure_architectures
from nas.measure._metrics import regression_metrics
from nas.measure._placement import resolve_device
from nas.measure._scale import device_scale, on_scale
from nas.measure._timing import TimingConfig, TimingError
from nas.space import Architecture, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB
    from nas.supernet import OFASupernet

__all__ = ["NoiseFloor", "noise_floor", "noise_floor_from_db"]


@dataclass(frozen=True)
class NoiseFloor:
    """How well a measurement repeats: ``|a - b| / mean(a, b)`` over pairs of measurements of
    the same subnet in independent sessions.

    Attributes:
        n: number of pairs.
        median: median relative difference.
        p90: its 90th percentile.
        max: its maximum.
        metrics: the predictor metrics of "measure it again" as a predictor (the first
            measurement is the truth), the floor no predictor can beat.
        rel_diffs: every pair's relative difference.
    """

    n: int
    median: float
    p90: float
    max: float
    metrics: dict[str, float]
    rel_diffs: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "median": self.median, "p90": self.p90, "max": self.max,
                "metrics": self.metrics}


def _arch_of(rec: Any, sp: SearchSpace) -> Architecture:
    a = rec.arch
    return a if isinstance(a, Architecture) else sp.parse(a)


def noise_floor_from_db(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB
) -> NoiseFloor | None:
    """The noise floor from the stored repeats (source ``"noise"``), or None if there are none.

    Each repeat is paired with the first ordinary measurement of the same subnet.
    """
    sp = get_space(space)
    name = device.name if isinstance(device, DeviceProfile) else device
    recs = db.measurements(name, sp.name, status="ok")
    scale = device_scale(name, sp, db, records=recs)
    first: dict[Architecture, float] = {}
    for rec in recs:
        if rec.source == "measured" and (v := on_scale(rec, scale)) is not None:
            first.setdefault(_arch_of(rec, sp), v)
    pairs = [
        (first[a], v) for rec in recs
        if rec.source == "noise" and (v := on_scale(rec, scale)) is not None
        and (a := _arch_of(rec, sp)) in first
    ]
    if not pairs:
        return None
    a_, b_ = np.asarray(pairs).T
    rel = np.abs(a_ - b_) / ((a_ + b_) / 2)
    metrics = regression_metrics(a_, b_) if len(pairs) >= 2 else {}
    return NoiseFloor(len(pairs), float(np.median(rel)), float(np.percentile(rel, 90)),
                      float(rel.max()), metrics, tuple(float(v) for v in rel))


def noise_floor(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB, *, k: int = 20,
    seed: int = 0, supernet: OFASupernet | None = None, progress: bool = True,
    address: str | None = None, config: TimingConfig | None = None,
) -> NoiseFloor:
    """Re-measure ``k`` already measured subnets in fresh sessions and summarise the spread.

    The repeats are stored with source ``"noise"`` (predictors never train on them).

    Raises:
        NASError: when the device has no measurements of the space yet.
    """
    sp = get_space(space)
    profile = resolve_device(device)
    measured = list(dict.fromkeys(
        _arch_of(r, sp) for r in db.measurements(profile.name, sp.name, status="ok",
                                                source="measured")
    ))
    if not measured:
        raise NASError(
            f"no measurements of {sp.name} on {profile.name} yet; run "
            f"`nas latency measure --device {profile.name} --space {sp.name} --n 100` first"
        )
    rng = np.random.default_rng(seed)
    pick = [measured[i] for i in rng.choice(len(measured), min(k, len(measured)), replace=False)]
    measure_architectures(profile, sp, pick, db, supernet=supernet, progress=progress,
                          address=address, config=config, source="noise")
    nf = noise_floor_from_db(profile, sp, db)
    if nf is None:
        raise TimingError(f"every repeat measurement on {profile.name} failed")
    return nf
