"""After a search: measure the chosen subnets for real, and export them.

``verify_trials`` times the best subnets of the front on the search's devices in ONNX Runtime
and stores the measurements in the latency database and, per trial, in the study (so the
table, JSON and report show predicted next to measured). ``export_trials`` writes the usual
verified export folders (weights inherited, BatchNorm recalibrated on the search's data), each
manifest carrying the search's predictions and measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import ConfigError
from nas.search._results import VERIFIED_KEY, SearchResult, TrialRecord, load_results, load_study

__all__ = ["export_trials", "pick_trials", "verify_trials"]


def pick_trials(res: SearchResult, trials: list[int] | None, pareto: bool) -> list[TrialRecord]:
    """The completed trials asked for by number, or the front."""
    if pareto:
        if not res.front:
            raise ConfigError(f"study {res.study_name!r} has no feasible completed trial yet")
        return list(res.front)
    if not trials:
        raise ConfigError("say which trials: --trial N (repeatable) or --pareto")
    by_number = {t.number: t for t in res.trials}
    out = []
    for n in trials:
        t = by_number.get(n)
        if t is None:
            raise ConfigError(f"trial {n} is not in study {res.study_name!r} (it has trials "
                              f"0..{len(res.trials) - 1})")
        if t.state != "COMPLETE" or t.arch is None:
            raise ConfigError(f"trial {n} of study {res.study_name!r} did not complete "
                              f"({t.state}{': ' + t.error if t.error else ''})")
        out.append(t)
    return out


def verify_trials(study: str, storage: str | None = None, n: int = 3,
                  progress: bool = True) -> dict[int, dict[str, float]]:
    """Measure the first ``n`` subnets of the front on every device of the search.

    Returns ``{trial: {device: measured ms}}`` (also stored in the study and the DB).
    """
    from nas.db import LatencyDB
    from nas.devices import get_device
    from nas.measure import measure_on_devices

    res = load_results(study, storage)
    devices = res.config.devices
    if not devices:
        raise ConfigError(f"study {study!r} prices no device; nothing to verify")
    external = [d for d in devices if getattr(get_device(d), "external", False)]
    if external:
        raise ConfigError(f"device(s) {external} are external (imported measurements); they "
                          "cannot be measured from here")
    chosen = res.front[:n]
    if not chosen:
        raise ConfigError(f"study {study!r} has no feasible completed trial to verify")
    space = res.config.space
    db = LatencyDB(res.config.db)
    archs = [t.arch for t in chosen if t.arch is not None]
    ids = measure_on_devices(devices, space, archs, db, progress=progress)
    out: dict[int, dict[str, float]] = {}
    for dev, dev_ids in ids.items():
        recs = {r.id: r for r in db.measurements(dev, space, status=None)}
        for t, mid in zip(chosen, dev_ids, strict=True):
            rec = recs.get(mid)
            if rec is not None and rec.latency_ms is not None:
                out.setdefault(t.number, {})[dev] = float(rec.latency_ms)
    st = load_study(study, res.storage)
    stored = dict(st.user_attrs.get(VERIFIED_KEY) or {})
    for num, m in out.items():
        stored[str(num)] = {**stored.get(str(num), {}), **m}
    st.set_user_attr(VERIFIED_KEY, stored)
    return out


def export_trials(
    study: str, storage: str | None, out_dir: Path | str, trials: list[int] | None = None,
    pareto: bool = False, *, checkpoint: str | None = None, overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Export trials of a search (or its whole front) to ``out_dir/trial-NNNN-<hash>``.

    The subnet's weights are inherited from the search's supernet checkpoint (or
    ``checkpoint``) and its BatchNorm statistics recalibrated on the search's data when it had
    any. Each manifest's ``search`` entry holds the study, trial, objective values, predicted
    and measured latencies, and the predictors used.
    """
    from nas._term import progress_bar
    from nas.export import export_subnet
    from nas.proxies import ProxyContext
    from nas.train import BatchLoader, recalibrate_bn

    res = load_results(study, storage)
    chosen = pick_trials(res, trials, pareto)
    cfg = res.config
    ck = checkpoint or cfg.checkpoint
    if not ck:
        raise ConfigError(f"study {study!r} ran without a supernet checkpoint; pass "
                          "--checkpoint to export its subnets")
    opts = {k: v for k, v in cfg.proxy_options.items()
            if k in ("bn_batches", "bn_batch_size", "seed", "channels_last")}
    ctx = ProxyContext.build(cfg.space, checkpoint=ck, data=cfg.data, cache=False, **opts)
    net = ctx.require_supernet("exporting a search's subnets")
    out_dir = Path(out_dir)
    written: list[Path] = []
    with progress_bar("export", len(chosen), enabled=progress) as advance:
        for t in chosen:
            arch = ctx.space.parse(t.arch)  # type: ignore[arg-type]
            if ctx.data is not None:
                loader = BatchLoader(ctx.data.train, ctx.bn_batch_size, shuffle=True,
                                     seed=ctx.seed)
                recalibrate_bn(net, arch, loader.epoch(0), ctx.bn_batches,
                               preprocess=ctx.preprocess())
            extra: dict[str, Any] = {"search": {
                "study": res.study_name, "trial": t.number, "values": t.values,
                "accuracy_proxy": cfg.proxy if "accuracy" in cfg.objectives else None,
                "accuracy": t.accuracy, "predicted_latency_ms": t.latency_ms,
                "measured_latency_ms": t.measured_ms, "predictors": res.predictors,
                "constraints": cfg.constraints, "bn_recalibrated": ctx.data is not None,
            }}
            dest = out_dir / f"trial-{t.number:04d}-{t.arch_hash}"
            export_subnet(net, arch, dest, extra=extra, checkpoint=ck, overwrite=overwrite)
            written.append(dest)
            advance()
    return written
