"""A measurement campaign: choose new subnets for a device, time them into the database, and
(optionally) re-time some for the noise floor; what ``nas latency measure`` runs.

:func:`run_campaign` is the whole campaign as one call, and :class:`CampaignReport` what it
did: how many subnets were timed or failed, how they were chosen, the device's scale and the
latencies on it, and the noise floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.devices import DeviceProfile
from nas.errors import ConfigError
from nas.measure._measure import measure_architectures
from nas.measure._noise import NoiseFloor, noise_floor
from nas.measure._placement import resolve_device
from nas.measure._sampling import (
    FEW_MEASUREMENTS,
    SELECT_METHODS,
    PriorSource,
    select_for_measurement,
)
from nas.measure._scale import Scale, device_scale, on_scale
from nas.measure._timing import TimingConfig
from nas.space import Architecture, SearchSpace, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB
    from nas.supernet import OFASupernet

__all__ = ["CampaignReport", "run_campaign"]


@dataclass(frozen=True)
class CampaignReport:
    """What a campaign did.

    Attributes:
        device, space: where.
        ids: the new measurements' ids (successful and failed), in measuring order.
        measured: how many subnets were timed successfully.
        failed: how many failed (stored with status ``"failed"`` and the error).
        skipped_already_measured: subnets the device had already timed (never chosen again).
        selection: how the subnets were chosen (:meth:`Selection.to_dict`; ``requested`` is
            the method asked for).
        db: the database's URL, password masked.
        scale: the device's scale after the campaign (None for absolute timings).
        latency_ms: ``min``, ``median`` and ``max`` of the new latencies on that scale (None
            when none succeeded).
        first_error: the first failure's error (None without failures).
        noise: the noise floor, when repeats were asked for.
    """

    device: str
    space: str
    ids: tuple[int, ...]
    measured: int
    failed: int
    skipped_already_measured: int
    selection: dict[str, Any]
    db: str
    scale: Scale | None
    latency_ms: dict[str, float] | None = None
    first_error: str | None = None
    noise: NoiseFloor | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``nas latency measure --json`` prints): ``latency_ms`` only when a
        subnet was timed, ``first_error`` when one failed, ``noise`` when it was measured."""
        out: dict[str, Any] = {
            "device": self.device, "space": self.space, "measured": self.measured,
            "failed": self.failed, "skipped_already_measured": self.skipped_already_measured,
            "selection": dict(self.selection), "db": self.db,
            "scale": self.scale.to_dict() if self.scale is not None else None,
        }
        if self.latency_ms is not None:
            out["latency_ms"] = dict(self.latency_ms)
        if self.failed:
            out["first_error"] = self.first_error
        if self.noise is not None:
            out["noise"] = self.noise.to_dict()
        return out


def _open(db: LatencyDB | str | None) -> tuple[LatencyDB, bool]:
    """The database, and whether this campaign opened it (and so closes it)."""
    from nas.db import LatencyDB

    if isinstance(db, LatencyDB):
        return db, False
    return LatencyDB(db), True


def _selection(sp: SearchSpace, store: LatencyDB, device: str, n: int, seed: int,
               select: str, done: set[Architecture],
               priors: PriorSource | None) -> tuple[list[Architecture], dict[str, Any]]:
    """The subnets to time: ``auto`` is informative for a device with few measurements when
    prior devices have predictors, and the mixed sample otherwise (what ``auto`` meant before
    ``informative`` existed; ``select_for_measurement``'s own fallback is ``spread``)."""
    from nas.db import TIMED_SOURCES

    n_ok = sum(1 for r in store.measurements(device, sp.name) if r.source in TIMED_SOURCES)
    sel = select_for_measurement(sp, n, seed, method=select, db=store, device=device,
                                 priors=priors, exclude=done, n_measured=n_ok)
    if select == "auto" and sel.method == "spread" and n_ok < FEW_MEASUREMENTS:
        sel = select_for_measurement(sp, n, seed, method="mixed", exclude=done)
    return sel.archs, {**sel.to_dict(), "requested": select}


def run_campaign(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB | str | None = None,
    *, n: int = 100, seed: int = 0, select: str = "auto", priors: PriorSource | None = None,
    noise: int = 0, config: TimingConfig | None = None, address: str | None = None,
    supernet: OFASupernet | None = None, progress: bool = True,
) -> CampaignReport:
    """Time ``n`` new subnets of ``space`` on ``device`` and store them; then, with
    ``noise``, re-time that many measured subnets in fresh sessions for the noise floor.

    Subnets the device has already timed are never chosen again. Failures are stored as
    ``"failed"`` and the campaign goes on.

    Args:
        device: a device profile (or its name); an external one cannot be timed from here.
        space: the search space.
        db: the latency database, or its URL (default: ``$NAS_DB_URL`` or the shipped
            SQLite file); one opened here is closed at the end.
        n: how many new subnets.
        seed: seed of the choice (and of the noise floor's pick).
        select: one of :data:`~nas.measure.SELECT_METHODS` (see
            :func:`~nas.measure.select_for_measurement`); ``auto`` keeps ``mixed`` for a
            device with few measurements when there are fewer than two prior devices.
        priors: the other devices' predictions, for ``informative`` (and ``auto``):
            :func:`nas.latency.prior_predictions` uses the predictors stored in ``db``.
            Without it, no prior device is known.
        noise: repeats for the noise floor (0: none).
        config: the timing protocol's settings (default :class:`TimingConfig`).
        address, supernet, progress: as for :func:`~nas.measure.measure_on_devices`.

    Raises:
        ConfigError: an external device, or an unknown ``select`` (before ``db`` is opened).

    Example:
        >>> from nas.latency import prior_predictions
        >>> report = run_campaign("cpu-1t", "tiny", "sqlite:///lat.sqlite", n=50,
        ...                       priors=prior_predictions, noise=10)
        >>> report.measured, report.noise.p90
    """
    profile = resolve_device(device)
    sp = get_space(space)
    if profile.external:
        raise ConfigError(
            f"device {profile.name} is external: nothing can be measured from here; import its "
            f"measurements with `nas latency import`"
        )
    if select not in SELECT_METHODS:
        raise ConfigError(f"select must be one of {', '.join(SELECT_METHODS)}, got {select!r}")
    store, owned = _open(db)
    try:
        return _run(profile, sp, store, n=n, seed=seed, select=select, priors=priors,
                    noise=noise, config=config or TimingConfig(), address=address,
                    supernet=supernet, progress=progress)
    finally:
        if owned:
            store.close()


def _run(
    profile: DeviceProfile, sp: SearchSpace, store: LatencyDB, *, n: int, seed: int,
    select: str, priors: PriorSource | None, noise: int, config: TimingConfig,
    address: str | None, supernet: OFASupernet | None, progress: bool,
) -> CampaignReport:
    from nas.db import TIMED_SOURCES

    done = {r.arch for r in store.measurements(profile.name, sp.name, status=None)
            if r.source in TIMED_SOURCES}
    archs, selection = _selection(sp, store, profile.name, n, seed, select, done, priors)
    ids = measure_architectures(profile, sp, archs, store, supernet=supernet,
                                progress=progress, address=address, config=config)
    recs = {r.id: r for r in store.measurements(profile.name, sp.name, status=None)}
    ok = [recs[i] for i in ids if recs[i].status == "ok"]
    failed = [recs[i] for i in ids if recs[i].status != "ok"]
    scale = device_scale(profile, sp, store)
    lat = sorted(v for r in ok if (v := on_scale(r, scale)) is not None)
    nf = None
    if noise:
        nf = noise_floor(profile, sp, store, k=noise, seed=seed, supernet=supernet,
                         progress=progress, address=address, config=config)
    return CampaignReport(
        device=profile.name, space=sp.name, ids=tuple(ids), measured=len(ok),
        failed=len(failed), skipped_already_measured=len(done), selection=selection,
        db=store.display_url, scale=scale,
        latency_ms=({"min": lat[0], "median": lat[len(lat) // 2], "max": lat[-1]}
                    if lat else None),
        first_error=failed[0].error if failed else None, noise=nf,
    )
