"""The absolute scale of relative measurements: the reference subnet's latency over the whole
campaign, not at one moment.

A relative measurement (protocol step 7, :mod:`nas.measure._timing`) is a *ratio*: the subnet's
median over the reference's median in the same window, which cancels whatever slowed both. To
turn ratios into milliseconds they are multiplied by one latency of the reference. Taking that
latency from a few fresh sessions at the start of a campaign (the *anchor*) lets one moment
set the scale of every prediction: on this shared 2-core machine the reference's block
medians ranged 3.9 to 6.5 ms within one 25-minute campaign, and a 5.3 ms anchor made every
prediction 32% too high against timings taken later (issue #15).

Every relative measurement already times the reference, in blocks alternating with the
subnet, and stores the reference's raw median (``env.reference.reference_median_ms``). The
**scale** of a (device, space) is the median of all those timings and the anchor sessions:
the reference's typical latency over everything measured, which a slow (or fast) minute
cannot move. Stored latencies keep the scale of the moment they were stored (``ratio x
anchor_ms``, both in ``env.reference``); :func:`on_scale` puts any of them on the current
scale when it is read, so predictors fitted today and measurements taken last week share one
scale, and nothing stored is rewritten.

Latencies without a reference (lookup-table blocks, imports, a measurement kit's results,
which carry their own run-wide scale) are absolute and pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.devices import DeviceProfile
from nas.space import SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB, MeasurementRecord

__all__ = ["POOL_SOURCES", "Scale", "device_scale", "on_scale"]

#: Sources whose reference blocks make the scale: timings this database's own runs took
#: (imported rows are put on the scale, but do not set it).
POOL_SOURCES = ("measured", "noise", "check")


@dataclass(frozen=True)
class Scale:
    """The reference subnet's latency over a (device, space)'s whole record.

    Attributes:
        ms: the median of every timing of the reference (the scale).
        n: how many timings: anchor sessions plus one block median per relative measurement
            taken here (:data:`POOL_SOURCES`).
        p10, p90: their 10th and 90th percentiles (how much the machine's speed wandered).
        anchor_ms: the median of the fresh-session anchor timings alone (None without any).
        arch_hash: the reference subnet.
    """

    ms: float
    n: int
    p10: float
    p90: float
    anchor_ms: float | None
    arch_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"ms": self.ms, "n": self.n, "p10": self.p10, "p90": self.p90,
                "anchor_ms": self.anchor_ms, "arch": self.arch_hash}


def _reference_env(rec: MeasurementRecord, arch_hash: str) -> dict[str, Any] | None:
    """``env.reference`` of a relative measurement against ``arch_hash`` with usable numbers."""
    ref = rec.env.get("reference") if isinstance(rec.env, dict) else None
    if not isinstance(ref, dict) or ref.get("arch") != arch_hash:
        return None
    for key in ("anchor_ms", "reference_median_ms"):
        v = ref.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or v <= 0:
            return None
    return ref


def device_scale(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB,
    records: list[MeasurementRecord] | None = None,
) -> Scale | None:
    """The scale of ``space`` on ``device`` from everything stored, or None before the first
    relative measurement.

    Args:
        records: the device's successful measurements of the space, when the caller has read
            them already (saves a second read).
    """
    sp = get_space(space)
    name = device.name if isinstance(device, DeviceProfile) else device
    ref_hash = sp.middle().hash
    recs = records if records is not None else db.measurements(name, sp.name, status="ok")
    anchors: list[float] = []
    blocks: list[float] = []
    for rec in recs:
        if rec.status != "ok" or rec.latency_ms is None:
            continue
        if rec.source == "reference":
            if rec.arch.hash == ref_hash:
                anchors.append(float(rec.latency_ms))
            continue
        if rec.source not in POOL_SOURCES:
            continue
        ref = _reference_env(rec, ref_hash)
        if ref is not None:
            blocks.append(float(ref["reference_median_ms"]))
    values = np.asarray(anchors + blocks, dtype=np.float64)
    if not len(values):
        return None
    p10, ms, p90 = np.percentile(values, [10, 50, 90])
    return Scale(ms=float(ms), n=len(values), p10=float(p10), p90=float(p90),
                 anchor_ms=float(np.median(anchors)) if anchors else None, arch_hash=ref_hash)


def on_scale(rec: MeasurementRecord, scale: Scale | None) -> float | None:
    """``rec``'s latency on ``scale``: a relative measurement's ratio times the scale; any
    other latency (absolute, or with no scale known) as stored."""
    if rec.latency_ms is None:
        return None
    if scale is None:
        return float(rec.latency_ms)
    ref = _reference_env(rec, scale.arch_hash)
    if ref is None:
        return float(rec.latency_ms)
    return float(rec.latency_ms) * scale.ms / float(ref["anchor_ms"])
