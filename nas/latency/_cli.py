"""Latency commands: ``nas latency measure | fit | predict``."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from nas._cli_utils import console, err_console, print_json
from nas.errors import ConfigError

__all__ = ["register"]

DeviceOpt = Annotated[
    str, typer.Option("--device", "-d", help="Device profile name (`nas devices list`).")
]
SpaceOpt = Annotated[
    str, typer.Option("--space", "-s", help="Search space name (`nas spaces list`).")
]
DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="Latency database: SQLAlchemy URL or SQLite file "
                 "(default: $NAS_DB_URL, else latency_db/latency.sqlite)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of "
                                       "tables.")]

_METRIC_ROWS = (
    ("RMSE (ms)", "rmse_ms", "{:.3f}"), ("MAPE", "mape", "{:.2%}"),
    ("within ±5%", "within_5", "{:.1%}"), ("within ±10%", "within_10", "{:.1%}"),
    ("Kendall tau", "kendall_tau", "{:.3f}"), ("Spearman rho", "spearman_rho", "{:.3f}"),
)


def _kinds(kind: str) -> list[str]:
    from nas.errors import UnknownNameError
    from nas.latency._predictors import PREDICTORS

    if kind == "all":
        return list(PREDICTORS)
    if kind not in PREDICTORS:
        raise UnknownNameError(
            f"unknown predictor kind {kind!r}; known kinds: {', '.join(PREDICTORS)}, all"
        )
    return [kind]


def _db(url: str | None) -> Any:
    from nas.db import LatencyDB

    return LatencyDB(url)


# ---------------------------------------------------------------------- measure
def measure(
    device: DeviceOpt,
    space: SpaceOpt,
    n: Annotated[int, typer.Option("--n", "-n", min=0, help="How many new subnets to measure "
                                   "(half uniform, half spread over the MAC range; subnets "
                                   "already measured on the device are skipped).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    noise: Annotated[int, typer.Option("--noise", min=0, help="Then re-measure this many "
                                       "measured subnets in fresh sessions and report the "
                                       "noise floor.")] = 0,
    db: DbOpt = None,
    address: Annotated[str | None, typer.Option(
        "--address", envvar="RAY_ADDRESS",
        help="Ray cluster address: run each measurement as a Ray task on a node with the "
        "profile's ray_resource (default: $RAY_ADDRESS; without one, profiles with placement "
        "'local' run in this process).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A cheap timing protocol (about 2% "
                                        "precision, absolute) for smoke tests.")] = False,
    reference: Annotated[bool, typer.Option(
        "--reference/--absolute",
        help="Time each subnet alternately with the space's reference subnet and store it "
        "relative to that (cancels the machine's drift; the default), or time it "
        "alone.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Measure the latency of sampled subnets on a device and store it in the database.

    Each subnet is extracted from a randomly initialised supernet (latency does not depend on
    the weights), exported to ONNX, quantized for int8 profiles, and timed in ONNX Runtime with
    the profile's session settings: warm-up, then runs until the median is known to 0.5%, in
    blocks of 10 runs (after 2 unrecorded ones) alternating with the space's reference subnet
    (every dimension at its middle choice). The stored latency is the ratio of the two medians
    times the reference's anchor latency, measured once per device and database, so a machine
    that slows down for a while slows both and the result does not move. A subnet that fails to
    export or run is stored as failed and the run goes on.
    """
    from nas.devices import get_device
    from nas.latency._measure import (
        TimingConfig,
        measure_architectures,
        noise_floor,
        sample_for_measurement,
    )
    from nas.space import get_space

    profile = get_device(device)
    sp = get_space(space)
    if profile.external:
        raise ConfigError(
            f"device {profile.name} is external: nothing can be measured from here; import its "
            f"measurements with `nas latency import`"
        )
    store = _db(db)
    cfg = TimingConfig.quick() if quick else TimingConfig()
    cfg = dataclasses.replace(cfg, reference=reference and not quick)
    done = {r.arch for r in store.measurements(profile.name, sp.name, status=None)
            if r.source in ("measured", "imported")}
    archs = sample_for_measurement(sp, n, seed, exclude=done)
    ids = measure_architectures(profile, sp, archs, store, progress=progress,
                                address=address, config=cfg)
    recs = {r.id: r for r in store.measurements(profile.name, sp.name, status=None)}
    ok = [recs[i] for i in ids if recs[i].status == "ok"]
    failed = [recs[i] for i in ids if recs[i].status != "ok"]
    out: dict[str, Any] = {"device": profile.name, "space": sp.name, "measured": len(ok),
                           "failed": len(failed), "skipped_already_measured": len(done),
                           "db": str(store)}
    if ok:
        lat = sorted(r.latency_ms for r in ok if r.latency_ms is not None)
        out["latency_ms"] = {"min": lat[0], "median": lat[len(lat) // 2], "max": lat[-1]}
    if failed:
        out["first_error"] = failed[0].error
    if noise:
        nf = noise_floor(profile, sp, store, k=noise, seed=seed, progress=progress,
                         address=address, config=cfg)
        out["noise"] = nf.to_dict()
    if json_out:
        print_json(out)
        return
    console.print(f"{len(ok)} subnets of {sp.name} measured on {profile.name}, "
                  f"{len(failed)} failed; stored in {store}")
    if ok:
        lat_d = out["latency_ms"]
        console.print(f"latency {lat_d['min']:.3f} .. {lat_d['max']:.3f} ms "
                      f"(median {lat_d['median']:.3f} ms)")
    if failed:
        err_console.print(f"first failure: {failed[0].error}")
    if noise:
        nd = out["noise"]
        console.print(f"noise floor over {nd['n']} repeats: |a-b|/mean median "
                      f"{nd['median']:.2%}, p90 {nd['p90']:.2%}")


# ---------------------------------------------------------------------- fit
def fit(
    device: DeviceOpt,
    space: SpaceOpt,
    kind: Annotated[str, typer.Option("--kind", "-k", help="Predictor kind: flops, lut, "
                                      "additive, gbdt, hybrid, or all.")] = "additive",
    holdout: Annotated[float, typer.Option(min=0.0, max=0.95, help="Share of the measured "
                                           "subnets held out to score the fit (0: fit on "
                                           "everything; the metrics are then in-sample).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the holdout split.")] = 0,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fit latency predictors on the stored measurements, score and save them.

    Prints RMSE, MAPE, the share of predictions within ±5% and ±10% of the measurement and the
    rank correlations (Kendall tau, Spearman rho) on the held-out subnets, next to the FLOPs
    baseline on the same split and the noise floor (two measurements of the same subnet).
    The lut and hybrid kinds time a lookup table of single blocks on the device the first
    time (minutes) and reuse it after.
    """
    from nas.devices import get_device
    from nas.latency._fit import fit_predictor
    from nas.space import get_space

    kinds = _kinds(kind)
    profile = get_device(device)
    sp = get_space(space)
    store = _db(db)
    results: dict[str, Any] = {}
    for k in kinds:
        if not json_out and k in ("lut", "hybrid"):
            err_console.print(f"[dim]{k}: timing or reusing the block lookup table...[/dim]")
        _, metrics = fit_predictor(profile, sp.name, k, db=store, holdout=holdout, seed=seed,
                                   progress=not json_out)
        results[k] = metrics
    if json_out:
        print_json({"device": profile.name, "space": sp.name, "predictors": results})
        return
    first = next(iter(results.values()))
    split = "test" if first["n_test"] else "train"
    cols = [k for k in kinds if k != "flops"] + ["flops"]
    title = (f"{sp.name} on {profile.name}: {first['n_train']} training subnets, "
             + (f"{first['n_test']} held out" if first["n_test"] else "in-sample (--holdout 0)"))
    table = Table(title=title)
    table.add_column("metric")
    for c in cols:
        table.add_column(c + (" (baseline)" if c == "flops" else ""), justify="right")
    noise = first.get("noise")
    table.add_column("noise floor", justify="right")
    for label, key, fmt in _METRIC_ROWS:
        row = [label]
        for c in cols:
            m = results[c][split] if c in results else first["flops"]
            row.append(fmt.format(m[key]))
        nm = (noise or {}).get("metrics") or {}
        row.append(fmt.format(nm[key]) if key in nm else "-")
        table.add_row(*row)
    console.print(table)
    if noise:
        console.print(f"noise floor: {noise['n']} repeated subnets, |a-b|/mean median "
                      f"{noise['median']:.2%}, p90 {noise['p90']:.2%}")
    else:
        console.print("noise floor: not measured (run `nas latency measure ... --n 0 "
                      "--noise 20`)")
    console.print(f"saved in {store}")


# ---------------------------------------------------------------------- predict
def predict(
    device: DeviceOpt,
    space: SpaceOpt,
    arch: Annotated[str | None, typer.Option(
        "--arch", "-a", help='One architecture in OFA format: JSON text \'{"ks": [...], '
        '"e": [...], "d": [...], "r": 224}\' or @file.json.')] = None,
    arch_file: Annotated[Path | None, typer.Option(
        "--arch-file", help="A JSON-lines file, one architecture per line (e.g. from `nas "
        "spaces sample S --jsonl`); prints one prediction per line.")] = None,
    kind: Annotated[str | None, typer.Option(
        "--kind", "-k", help="Predictor kind (default: the stored one with the best held-out "
        "MAPE).")] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict the latency (ms) of architectures on a device with a stored predictor."""
    from nas.devices import get_device
    from nas.latency._fit import load_predictor
    from nas.space import get_space

    if (arch is None) == (arch_file is None):
        raise typer.BadParameter("give exactly one of --arch or --arch-file")
    if kind is not None:
        _kinds(kind)
    profile = get_device(device)
    sp = get_space(space)
    archs = [sp.parse(arch)] if arch is not None else sp.parse_file(arch_file)  # type: ignore[arg-type]
    pred = load_predictor(profile, sp.name, kind, db=_db(db))
    ms = pred.predict(archs) if archs else np.zeros(0)
    if arch is not None:
        if json_out:
            print_json({"device": profile.name, "space": sp.name, "kind": pred.kind,
                        "hash": archs[0].hash, "latency_ms": float(ms[0])})
        else:
            console.print(f"{float(ms[0]):.5g} ms ({pred.kind} predictor, {profile.name})")
        return
    out = sys.stdout
    for a, v in zip(archs, ms, strict=True):
        if json_out:
            out.write(json.dumps({"hash": a.hash, "latency_ms": float(v)}) + "\n")
        else:
            out.write(f"{float(v):.6g}\n")


def _help(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the lines inside each joined."""
    paragraphs = [" ".join(line.strip() for line in p.splitlines())
                  for p in inspect.cleandoc(doc or "").split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def register(latency_app: typer.Typer) -> None:
    """Add ``measure``, ``fit`` and ``predict`` to the ``nas latency`` app."""
    for name, fn in (("measure", measure), ("fit", fit), ("predict", predict)):
        latency_app.command(name, help=_help(fn.__doc__))(fn)
