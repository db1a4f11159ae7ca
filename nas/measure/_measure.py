"""Measuring subnets into the latency database: export each once, time it on every device
with the protocol (:mod:`nas.measure._timing`), store every result, failures included.

With relative timing (the default), the first measurement of a (device, space) in a database
also times the space's reference subnet in ``ANCHOR_SESSIONS`` fresh sessions and stores its
anchor latency (source ``"reference"``); every subnet of a call is then timed against one
:class:`~nas.measure._session.Reference` per device, whose session they share (protocol
step 7). Later measurements are stored on the scale of
everything recorded so far (:func:`nas.measure._scale.device_scale`: those sessions and the
reference's block medians of every relative measurement), and read back on the latest one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas._settings import ray_address
from nas._term import progress_bar
from nas.devices import DeviceProfile
from nas.measure._lock import lock_dir_for
from nas.measure._placement import Timer, resolve_device
from nas.measure._prepare import one_torch_thread, prepare_cached
from nas.measure._scale import device_scale
from nas.measure._session import Reference
from nas.measure._timing import PROTOCOL_VERSION, TimingConfig, TimingError
from nas.space import Architecture, SearchSpace, family_part, get_space

if TYPE_CHECKING:
    from nas.db import LatencyDB
    from nas.supernet import OFASupernet

__all__ = [
    "ANCHOR_SESSIONS",
    "measure_architectures",
    "measure_on_devices",
    "reference_anchor",
]

#: Fresh sessions that time the reference subnet to fix its anchor latency.
ANCHOR_SESSIONS = 5

Exporter = Callable[["OFASupernet", Architecture], bytes]


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def _default_supernet(space: SearchSpace) -> OFASupernet:
    """The family's randomly initialised supernet to time subnets of."""
    net: OFASupernet = family_part(space, "timing_supernet")(space)
    return net


def _family_export(space: SearchSpace) -> Exporter:
    """The family's ``(supernet, arch) -> ONNX bytes`` for timing."""
    export: Exporter = family_part(space, "timing_onnx")
    return export


def _res(arch: Any) -> int:
    """An image subnet's input resolution; 0 for a family without one (a language model's
    input is its device's workload)."""
    return int(getattr(arch, "r", 0))


def _side(profile: DeviceProfile, arch: Any) -> int:
    """The input side ``arch`` is timed at on ``profile``: the profile's
    ``input_resolution`` where it has one, else the subnet's own."""
    return profile.input_resolution or _res(arch)


# ---------------------------------------------------------------------- the reference
def reference_anchor(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB
) -> float | None:
    """The reference subnet's latency on a device, the scale relative measurements are put
    on: the median of all its stored timings (fresh-session anchors and the block medians of
    every relative measurement; :func:`~nas.measure._scale.device_scale`), or None before the
    first relative measurement."""
    scale = device_scale(device, space, db)
    return scale.ms if scale is not None else None


def _reference(
    profile: DeviceProfile, sp: SearchSpace, db: LatencyDB, timer: Timer,
    net: OFASupernet, export: Exporter,
) -> Reference:
    """The space's reference subnet on ``profile``, its anchor measured first if need be."""
    arch = sp.middle()
    try:
        model = prepare_cached(profile, export(net, arch), _side(profile, arch))
    except Exception as exc:
        raise TimingError(f"cannot export the reference subnet of {sp.name} for relative "
                          f"timing: {_error_text(exc)}") from exc
    anchor = reference_anchor(profile, sp, db)
    if anchor is None:
        for _ in range(ANCHOR_SESSIONS):
            res = timer(model, _side(profile, arch))
            env = dict(res.env)
            env["anchor_of"] = {"space": sp.name, "arch": arch.hash}
            db.add_measurement(profile.name, arch, latency_ms=res.median_ms, p10=res.p10_ms,
                               p90=res.p90_ms, n_runs=res.n_runs, status="ok",
                               source="reference", env=env)
        anchor = reference_anchor(profile, sp, db)
        if anchor is None:  # pragma: no cover - five ok rows were just stored
            raise TimingError(f"no anchor latency of the reference subnet on {profile.name}")
    return Reference(model, _side(profile, arch), anchor, arch.hash)


# ---------------------------------------------------------------------- one campaign
@dataclass
class _Campaign:
    """What measuring a batch of subnets on some devices shares: where results go, how a
    subnet becomes a model, each device's timer and reference."""

    sp: SearchSpace
    profiles: list[DeviceProfile]
    db: LatencyDB
    source: str
    export: Exporter
    net: OFASupernet | None
    timers: dict[str, Timer]
    refs: dict[str, Reference]


def _start(
    sp: SearchSpace, profiles: list[DeviceProfile], db: LatencyDB, *, anything_to_do: bool,
    supernet: OFASupernet | None, address: str | None, cfg: TimingConfig, export: Exporter,
    source: str,
) -> _Campaign:
    """Timers, the supernet and (with relative timing) each device's reference; nothing of
    it when there is nothing to measure."""
    address = ray_address(address)
    lock_dir = lock_dir_for(db)
    timers = {p.name: Timer(p, lock_dir=lock_dir, address=address, config=cfg)
              for p in profiles} if anything_to_do else {}
    net = supernet if supernet is not None or not anything_to_do else _default_supernet(sp)
    refs: dict[str, Reference] = {}
    if cfg.reference and anything_to_do:
        with one_torch_thread():
            refs = {p.name: _reference(p, sp, db, timers[p.name], net, export)  # type: ignore[arg-type]
                    for p in profiles}
    return _Campaign(sp, profiles, db, source, export, net, timers, refs)


def _measured_ids(db: LatencyDB, profiles: Sequence[DeviceProfile], sp: SearchSpace,
                  source: str) -> dict[str, dict[Architecture, int]]:
    """The first successful measurement id of each (device, architecture) of ``source``."""
    done: dict[str, dict[Architecture, int]] = {p.name: {} for p in profiles}
    for p in profiles:
        for rec in db.measurements(p.name, sp.name, status="ok", source=source):
            done[p.name].setdefault(rec.arch, rec.id)
    return done


def _time_and_store(
    c: _Campaign, p: DeviceProfile, arch: Architecture, fp32: bytes | None,
    export_error: str | None, export_s: float, models: dict[str, bytes],
) -> tuple[int, str]:
    """Prepare, time and store ``arch`` on ``p``; a failure is stored as ``"failed"``.
    Returns the measurement id and a status for the progress bar."""
    try:
        if fp32 is None:
            raise TimingError(export_error or "export failed")
        t1 = time.perf_counter()
        model = prepare_cached(p, fp32, _side(p, arch), models)
        prepare_s = time.perf_counter() - t1
        res = c.timers[p.name](model, _side(p, arch), reference=c.refs.get(p.name))
        env = dict(res.env)
        env.update(placement="ray" if "ray" in env else "local",
                   export_s=round(export_s, 4), prepare_s=round(prepare_s, 4))
        mid = c.db.add_measurement(
            p.name, arch, latency_ms=res.median_ms, p10=res.p10_ms, p90=res.p90_ms,
            n_runs=res.n_runs, status="ok", source=c.source, env=env,
        )
        return mid, f"{res.median_ms:.3f} ms"
    except Exception as exc:
        err = export_error if fp32 is None else _error_text(exc)
        mid = c.db.add_measurement(
            p.name, arch, latency_ms=None, status="failed", error=err, source=c.source,
            env={"protocol": PROTOCOL_VERSION},
        )
        return mid, "[red]failed"


def _measure_arch(c: _Campaign, arch: Architecture, done: dict[str, dict[Architecture, int]],
                  ids: dict[str, list[int]]) -> str:
    """Export ``arch`` once and measure it on every device that lacks it; its ids go to
    ``ids``. Returns the last status for the progress bar."""
    t0 = time.perf_counter()
    try:
        fp32: bytes | None = c.export(c.net, arch)  # type: ignore[arg-type]
        export_error = None
    except Exception as exc:
        fp32, export_error = None, f"export: {_error_text(exc)}"
    export_s = time.perf_counter() - t0
    models: dict[str, bytes] = {}
    status = ""
    for p in c.profiles:
        if arch in done[p.name]:
            ids[p.name].append(done[p.name][arch])
            continue
        mid, status = _time_and_store(c, p, arch, fp32, export_error, export_s, models)
        ids[p.name].append(mid)
    return status


def measure_on_devices(
    devices: Sequence[str | DeviceProfile], space: str | SearchSpace,
    archs: Iterable[Architecture | dict[str, Any] | str], db: LatencyDB, *,
    supernet: OFASupernet | None = None, progress: bool = True, address: str | None = None,
    config: TimingConfig | None = None, source: str = "measured",
    exporter: Exporter | None = None, skip_measured: bool = False,
) -> dict[str, list[int]]:
    """Export each architecture once and time it on every device; store every result.

    An architecture whose export, quantization or timing fails is stored with status
    ``"failed"`` and the error, and the run goes on.

    Args:
        devices: device names or profiles.
        space: the architectures' search space.
        archs: architectures (anything ``space.parse`` accepts).
        db: where the measurements go.
        supernet: the supernet to extract subnets from; by default a randomly initialised
            one (latency does not depend on the weights).
        progress: show a progress bar with an ETA on stderr.
        address: a Ray cluster address; when given (or a profile's placement is ``"ray"``)
            the timing runs as a Ray task on a node with the profile's ``ray_resource``.
        config: the timing protocol's settings.
        source: stored with each measurement (``"measured"``, or ``"noise"`` for repeats).
            With ``config.reference`` (the default), the first relative measurement of a
            (device, space) in ``db`` also stores the reference subnet's anchor timings
            (source ``"reference"``).
        exporter: ``(supernet, arch) -> ONNX bytes``; the default extracts and exports.
        skip_measured: do not measure again an (architecture, device) pair that already has
            a successful measurement of this ``source``; its id is returned instead (resumable
            runs).

    Returns:
        Measurement ids per device name, in the order of ``archs``.
    """
    sp = get_space(space)
    profiles = [resolve_device(d) for d in devices]
    for p in profiles:  # a workload the space cannot run: one line, nothing stored
        sp.check_workload(p.workload, p.name)
    parsed = [sp.parse(a) for a in archs]
    for p in profiles:
        db.ensure_device(p)
    done = (_measured_ids(db, profiles, sp, source) if skip_measured
            else {p.name: {} for p in profiles})
    todo = [a for a in parsed if any(a not in done[p.name] for p in profiles)]
    c = _start(sp, profiles, db, anything_to_do=bool(todo), supernet=supernet,
               address=address, cfg=config or TimingConfig(),
               export=exporter or _family_export(sp),
               source=source)
    ids: dict[str, list[int]] = {p.name: [] for p in profiles}
    names = ",".join(p.name for p in profiles)
    with one_torch_thread(), progress_bar(
            f"{sp.name} on {names}", len(todo), enabled=progress, fields={"status": ""},
            field_format="{task.fields[status]}") as advance:
        for arch in parsed:
            if all(arch in done[p.name] for p in profiles):
                for p in profiles:
                    ids[p.name].append(done[p.name][arch])
                continue
            advance(status=_measure_arch(c, arch, done, ids))
    return ids


def measure_architectures(
    device: str | DeviceProfile, space: str | SearchSpace,
    archs: Iterable[Architecture | dict[str, Any] | str], db: LatencyDB, *,
    supernet: OFASupernet | None = None, progress: bool = True, address: str | None = None,
    config: TimingConfig | None = None, source: str = "measured",
) -> list[int]:
    """Export, time and store each architecture on one device.

    See :func:`measure_on_devices` for the arguments; failures are stored as ``"failed"``
    and the run goes on.

    Returns:
        The measurement ids, in the order of ``archs``.

    Example:
        >>> db = LatencyDB()
        >>> archs = sample_for_measurement(get_space("tiny"), 10, seed=0)
        >>> ids = measure_architectures("cpu-1t", "tiny", archs, db)
    """
    profile = resolve_device(device)
    return measure_on_devices(
        [profile], space, archs, db, supernet=supernet, progress=progress, address=address,
        config=config, source=source,
    )[profile.name]
