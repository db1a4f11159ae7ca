"""The ``nas latency`` commands: ``measure | kit | fit | predict | check | import | export``."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.table import Table

from nas._cli_utils import (
    MAX_ARCHS,
    MAX_MODELS,
    MAX_WORKERS,
    DbOpt,
    DeviceOpt,
    JsonOpt,
    OverwriteOpt,
    SpaceOpt,
    console,
    err_console,
    print_json,
    seed_option,
)
from nas._outputs import check_output, storage_file
from nas.errors import ConfigError

if TYPE_CHECKING:
    from nas.db import LatencyDB

__all__ = ["register"]

_METRIC_ROWS = (
    ("RMSE (ms)", "rmse_ms", "{:.3f}"), ("MAPE", "mape", "{:.2%}"),
    ("within ±5%", "within_5", "{:.1%}"), ("within ±10%", "within_10", "{:.1%}"),
    ("Kendall tau", "kendall_tau", "{:.3f}"), ("Spearman rho", "spearman_rho", "{:.3f}"),
)

# ---------------------------------------------------------------------- option types
_NOpt = Annotated[int, typer.Option(
    "--n", "-n", min=0, max=MAX_ARCHS,
    help="How many new subnets to measure (chosen by --select; subnets "
    "already measured on the device are skipped).")]
_SELECT_HELP = (
    "How to choose the subnets. mixed: half uniform, half spread over the MAC range; spread: "
    "all spread over the MAC range; informative: spread over the MAC range, and in each MAC "
    "bin the subnet the other devices' fitted predictors rank most differently (needs 2 or "
    "more such devices, else spread); auto: informative for a device with fewer than 50 "
    "measurements, else {many}.")
_MeasureSelectOpt = Annotated[str, typer.Option(
    "--select", help=_SELECT_HELP.format(many="mixed") + " With fewer than 2 prior devices, "
    "auto keeps mixed for a device with few measurements too.")]
_SampleSeedOpt = Annotated[int, seed_option("Seed of the sample")]
_NoiseOpt = Annotated[int, typer.Option(
    "--noise", min=0, max=MAX_ARCHS,
    help="Then re-measure this many measured subnets in fresh sessions and "
    "report the noise floor.")]
_AddressOpt = Annotated[str | None, typer.Option(
    "--address", envvar="RAY_ADDRESS",
    help="Ray cluster address: run each measurement as a Ray task on a node with the "
    "profile's ray_resource (default: $RAY_ADDRESS; without one, profiles with placement "
    "'local' run in this process).")]
_QuickOpt = Annotated[bool, typer.Option(
    "--quick", help="A cheap timing protocol (about 2% precision, absolute) for smoke tests.")]
_ReferenceOpt = Annotated[bool, typer.Option(
    "--reference/--absolute",
    help="Time each subnet alternately with the space's reference subnet and store it "
    "relative to that (cancels the machine's drift; the default), or time it alone.")]
_ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar.")]
_KindOpt = Annotated[str | None, typer.Option(
    "--kind", "-k",
    help="Predictor kind, or all (`nas latency kinds` lists the registered kinds; default: "
    "the default kind it marks).")]
_HoldoutOpt = Annotated[float, typer.Option(
    min=0.0, max=0.95, help="Share of the measured subnets held out to score the fit (0: fit "
    "on everything; the metrics are then in-sample).")]
_SplitSeedOpt = Annotated[int, seed_option("Seed of the holdout split")]
_OneArchOpt = Annotated[str | None, typer.Option(
    "--arch", "-a", help='One architecture in OFA format: JSON text \'{"ks": [...], '
    '"e": [...], "d": [...], "r": 224}\' or @file.json.')]
_ArchFileOpt = Annotated[Path | None, typer.Option(
    "--arch-file", help="A JSON-lines file, one architecture per line (e.g. from `nas "
    "spaces sample S --jsonl`); prints one prediction per line.")]
_StoredKindOpt = Annotated[str | None, typer.Option(
    "--kind", "-k", help="Predictor kind (default: the stored one with the best held-out "
    "MAPE).")]
_ImportFileArg = Annotated[Path, typer.Argument(
    help='Measurements: .jsonl ({"arch": {...}, "latency_ms": x} per line), .csv (columns '
    "arch or ks,e,d,r, and latency_ms) or .parquet; or a measurement kit's results.jsonl "
    "(its manifest.json beside it), or the kit's folder.")]
_ImportDeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="Device they were measured on; an unknown one is created as an external "
    "profile. Required, except for a kit's results (the kit names it).")]
_ImportSpaceOpt = Annotated[str | None, typer.Option(
    "--space", help="Search space of the architectures. Required, except for a kit's "
    "results.")]
_ImportKitOpt = Annotated[Path | None, typer.Option(
    "--kit", help="The kit folder the results belong to, when the results file is not in it.")]
_TrustManifestOpt = Annotated[bool, typer.Option(
    "--trust-manifest", help="Import a kit this database has no record of (made before nas "
    "recorded kits), checked against the manifest.json that came back with it only.")]
# kit options
_KitNOpt = Annotated[int, typer.Option(
    "--n", "-n", min=1, max=MAX_MODELS,
    help="How many subnets the kit times (the reference subnet comes on "
    "top; 10 to 50 for a new device).")]
_KitOutOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="New folder to write the kit into (must not exist, or be empty).")]
_KitDeviceOpt = Annotated[str, typer.Option(
    "--device", "-d", help="The device it is for: a profile (`nas devices list`) or a new name "
    "(an external profile is written into the kit and created on import).")]
_KitSelectOpt = Annotated[str, typer.Option("--select", help=_SELECT_HELP.format(many="mixed"))]
_KitThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, max=MAX_WORKERS,
    help="ONNX Runtime intra-op threads of a new device (default 1); a "
    "known device keeps its profile's.")]
_KitRepeatsOpt = Annotated[int, typer.Option(
    "--repeats", min=1, max=1000, help="Passes over all models the runner makes by default.")]
_OutOpt = Annotated[Path, typer.Option(
    "--out", help="Output file: .csv or .parquet (needs pyarrow).")]
_OnlyDeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="Only this device (default: all).")]
_OnlySpaceOpt = Annotated[str | None, typer.Option(
    "--space", help="Only this search space (default: all).")]


def _kinds(kind: str | None) -> list[str]:
    # The predictors (their features, tables and kinds) are imported by the commands that
    # use them only, so that `nas --help` stays fast.
    from nas.errors import UnknownNameError
    from nas.latency._predictors import DEFAULT_KIND, PREDICTORS

    if kind is None:
        return [DEFAULT_KIND]

    if kind == "all":
        return PREDICTORS.names()
    if kind not in PREDICTORS:
        raise UnknownNameError(
            f"unknown predictor kind {kind!r}; known kinds: {', '.join(PREDICTORS)}, all"
        )
    return [kind]


def _check_select(select: str) -> None:
    from nas.measure import SELECT_METHODS

    if select not in SELECT_METHODS:
        raise ConfigError(f"--select must be one of {', '.join(SELECT_METHODS)}, got {select!r}")


def _db_file(url: str | None) -> Path | None:
    """The file of the latency database (None for a server), as an input of a writer."""
    from nas.db import resolve_db_url

    return storage_file(resolve_db_url(url))


def _db(url: str | None, create: bool = True) -> LatencyDB:
    from nas.db import LatencyDB

    return LatencyDB(url, create=create)


# ---------------------------------------------------------------------- measure
def _scale_line(sc: dict[str, Any]) -> str:
    return (f"scale: the reference subnet's median over {sc['n']} timings, {sc['ms']:.4g} ms "
            f"(p10 {sc['p10']:.4g}, p90 {sc['p90']:.4g}); relative latencies are ratios to it")


def _print_measured(out: dict[str, Any]) -> None:
    console.print(f"{out['measured']} subnets of {out['space']} measured on {out['device']}, "
                  f"{out['failed']} failed; stored in {out['db']}")
    if out["measured"]:
        lat_d = out["latency_ms"]
        console.print(f"latency {lat_d['min']:.3f} .. {lat_d['max']:.3f} ms "
                      f"(median {lat_d['median']:.3f} ms)")
    if out["failed"]:
        err_console.print(f"first failure: {out['first_error']}")
    if out.get("scale"):
        console.print(_scale_line(out["scale"]))
    if "noise" in out:
        nd = out["noise"]
        console.print(f"noise floor over {nd['n']} repeats: |a-b|/mean median "
                      f"{nd['median']:.2%}, p90 {nd['p90']:.2%}")


def measure(
    device: DeviceOpt, space: SpaceOpt, n: _NOpt = 100, seed: _SampleSeedOpt = 0,
    noise: _NoiseOpt = 0, db: DbOpt = None, address: _AddressOpt = None,
    quick: _QuickOpt = False, reference: _ReferenceOpt = True, progress: _ProgressOpt = True,
    select: _MeasureSelectOpt = "auto", json_out: JsonOpt = False,
) -> None:
    """Measure the latency of sampled subnets on a device and store it in the database.

    Each subnet is extracted from a randomly initialised supernet (latency does not depend on
    the weights), exported to ONNX, quantized for int8 profiles, and timed in ONNX Runtime with
    the profile's session settings: warm-up, then runs until the median is known to 0.5%, in
    blocks of 10 runs (after 2 unrecorded ones) alternating with the space's reference subnet
    (every dimension at its middle choice). The latency is the ratio of the two medians times
    the reference's latency over the device's whole record (the median of its anchor sessions
    and of its blocks in every measurement), so a machine that slows down for a while slows
    both and the result does not move, and no one moment sets the scale. A subnet that fails
    to export or run is stored as failed and the run goes on. `nas latency check` compares a
    fitted predictor with subnets timed later.
    """
    from nas.latency._fit import prior_predictions
    from nas.measure import TimingConfig, run_campaign

    _check_select(select)
    cfg = TimingConfig.preset("quick" if quick else "default")
    cfg = cfg.replace(reference=reference and not quick)
    report = run_campaign(device, space, db, n=n, seed=seed, select=select,
                          priors=prior_predictions, noise=noise, config=cfg, address=address,
                          progress=progress)
    out = report.to_dict()
    if json_out:
        print_json(out)
    else:
        _print_measured(out)


# ---------------------------------------------------------------------- fit
def _metrics_table(results: dict[str, Any], kinds: list[str], title: str) -> Table:
    """Each fitted kind's metrics, the baseline's and the noise floor's, one row a metric."""
    first = next(iter(results.values()))
    split = "test" if first["n_test"] else "train"
    from nas.latency._predictors import baseline_class

    base = baseline_class().kind
    cols = [k for k in kinds if k != base] + [base]
    table = Table(title=title)
    table.add_column("metric")
    for c in cols:
        table.add_column(c + (" (baseline)" if c == base else ""), justify="right")
    noise = first.get("noise")
    table.add_column("noise floor", justify="right")
    for label, key, fmt in _METRIC_ROWS:
        row = [label]
        for c in cols:
            m = results[c][split] if c in results else first[base]
            row.append(fmt.format(m[key]))
        nm = (noise or {}).get("metrics") or {}
        row.append(fmt.format(nm[key]) if key in nm else "-")
        table.add_row(*row)
    return table


def _print_fitted(results: dict[str, Any], kinds: list[str], device: str, space: str,
                  store: LatencyDB) -> None:
    first = next(iter(results.values()))
    title = (f"{space} on {device}: {first['n_train']} training subnets, "
             + (f"{first['n_test']} held out" if first["n_test"] else "in-sample (--holdout 0)"))
    console.print(_metrics_table(results, kinds, title))
    noise = first.get("noise")
    if noise:
        console.print(f"noise floor: {noise['n']} repeated subnets, |a-b|/mean median "
                      f"{noise['median']:.2%}, p90 {noise['p90']:.2%}")
    else:
        console.print("noise floor: not measured (run `nas latency measure ... --n 0 "
                      "--noise 20`)")
    console.print(f"saved in {store.display_url}")


def fit(
    device: DeviceOpt, space: SpaceOpt, kind: _KindOpt = None,
    holdout: _HoldoutOpt = 0.2, seed: _SplitSeedOpt = 0, db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fit latency predictors on the stored measurements, score and save them.

    Prints RMSE, MAPE, the share of predictions within ±5% and ±10% of the measurement and the
    rank correlations (Kendall tau, Spearman rho) on the held-out subnets, next to the FLOPs
    baseline on the same split and the noise floor (two measurements of the same subnet).
    The lut and hybrid kinds time a lookup table of single blocks on the device the first
    time (minutes) and reuse it after.
    """
    from nas._plugin import applies_to
    from nas.devices import get_device
    from nas.latency._fit import check_fit, check_prices, fit_predictor
    from nas.latency._predictors import PREDICTORS, predictor_class
    from nas.space import get_space

    kinds = _kinds(kind)
    profile = get_device(device)
    sp = get_space(space)
    if kind == "all":  # those that can be fitted for this device and price this space
        kinds = [k for k in kinds if PREDICTORS.get(k).check_fit_ok(profile)
                 and applies_to(PREDICTORS.get(k), sp.family, sp.name)]
    sp.check_workload(profile.workload, profile.name)
    for k in kinds:  # refused before anything is read or timed
        check_fit(k, profile)
        check_prices(k, sp)
    store = _db(db, create=False)

    results: dict[str, Any] = {}
    for k in kinds:
        note = predictor_class(k).fit_note
        if not json_out and note:
            err_console.print(f"[dim]{k}: {note}[/dim]")
        _, metrics = fit_predictor(profile, sp.name, k, db=store, holdout=holdout, seed=seed,
                                   progress=not json_out)
        results[k] = metrics
    if json_out:
        print_json({"device": profile.name, "space": sp.name, "predictors": results})
    else:
        _print_fitted(results, kinds, profile.name, sp.name, store)


# ---------------------------------------------------------------------- predict
def predict(
    device: DeviceOpt, space: SpaceOpt, arch: _OneArchOpt = None,
    arch_file: _ArchFileOpt = None, kind: _StoredKindOpt = None, db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict the latency (ms) of architectures on a device with a stored predictor."""
    from nas.devices import get_device
    from nas.latency._fit import load_predictor
    from nas.space import get_space

    if (arch is None) == (arch_file is None):
        raise ConfigError("--arch and --arch-file: give exactly one of them")
    if kind is not None:
        _kinds(kind)
    profile = get_device(device)
    sp = get_space(space)
    archs = [sp.parse(arch)] if arch is not None else sp.parse_file(arch_file)  # type: ignore[arg-type]
    pred = load_predictor(profile, sp.name, kind, db=_db(db, create=False))
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


# ---------------------------------------------------------------------- check
_CheckNOpt = Annotated[int, typer.Option(
    "--n", "-n", min=1, max=1000, help="How many subnets the device has not measured to time "
    "now (ignored with --arch/--arch-file).")]
_CheckNoiseOpt = Annotated[int, typer.Option(
    "--noise", min=0, max=1000, help="When fewer repeats than this are stored, re-measure "
    "measured subnets for the noise floor first (0: use what is stored).")]
_SessionsOpt = Annotated[int, typer.Option(
    "--sessions", min=1, max=20, help="Fresh sessions per checked subnet (their median is "
    "kept).")]
_StrictOpt = Annotated[bool, typer.Option(
    "--strict", help="Exit with status 1 when the median error is outside the noise floor's "
    "p90 (for scripts and CI).")]


def _print_agreement(out: dict[str, Any]) -> None:
    table = Table("subnet", "predicted (ms)", "measured (ms)", "error",
                  title=f"{out['space']} on {out['device']}: {out['kind']} predictor against "
                  "timings taken now")
    for r in out["subnets"]:
        table.add_row(r["hash"], f"{r['predicted_ms']:.4g}", f"{r['measured_ms']:.4g}",
                      f"{r['error']:+.1%}")
    console.print(table)
    rho = out["spearman_rho"]
    console.print(f"median error {out['median_error']:+.1%} (median |error| "
                  f"{out['median_abs_error']:.1%})"
                  + (f", Spearman rho {rho:.3f}" if rho is not None else ""))
    if out["scale"]:
        console.print(_scale_line(out["scale"]))
    nd = out["noise"]
    if nd is None:
        console.print("noise floor: not measured (pass --noise 10)")
        return
    verdict = ("within" if out["within_noise"] else "[red]outside[/red]")
    console.print(f"noise floor over {nd['n']} repeats: |a-b|/mean median {nd['median']:.1%}, "
                  f"p90 {nd['p90']:.1%}; the median error is {verdict} it")


def check(
    device: DeviceOpt, space: SpaceOpt, n: _CheckNOpt = 10, arch: _OneArchOpt = None,
    arch_file: _ArchFileOpt = None, kind: _StoredKindOpt = None, noise: _CheckNoiseOpt = 10,
    seed: _SampleSeedOpt = 0, sessions: _SessionsOpt = 3, db: DbOpt = None,
    address: _AddressOpt = None, progress: _ProgressOpt = True, strict: _StrictOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Check a stored predictor against subnets timed now.

    Times subnets the device has not measured (or --arch / --arch-file) with the protocol the
    predictor was fitted on (relative to the reference subnet, on the device's scale: the
    reference's median over every stored timing) and prints predicted against measured, the
    median error, the rank correlation and the noise floor beside them. The fresh timings are
    stored with source "check" (never trained on).
    """
    from nas.devices import get_device
    from nas.latency._agree import check_agreement
    from nas.space import get_space

    if arch is not None and arch_file is not None:
        raise ConfigError("--arch and --arch-file: give at most one of them")
    if kind is not None:
        _kinds(kind)
    profile = get_device(device)
    if profile.external:
        raise ConfigError(
            f"device {profile.name} is external: nothing can be timed from here; check it "
            f"with a measurement kit (`nas latency kit`, then `nas latency import`)")
    sp = get_space(space)
    archs = ([sp.parse(arch)] if arch is not None
             else sp.parse_file(arch_file) if arch_file is not None else None)
    store = _db(db, create=False)
    res = check_agreement(profile, sp, store, archs=archs, n=n, seed=seed, kind=kind,
                          noise=noise, sessions=sessions, address=address,
                          progress=progress and not json_out)
    out = res.to_dict()
    if json_out:
        print_json(out)
    else:
        _print_agreement(out)
    if strict and not res.within_noise:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- import / export
def import_cmd(
    file: _ImportFileArg, device: _ImportDeviceOpt = None, space: _ImportSpaceOpt = None,
    kit: _ImportKitOpt = None, trust_manifest: _TrustManifestOpt = False, db: DbOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Import latencies measured elsewhere, all or nothing (source "imported"), once.

    A file needs --device and --space. Optional fields: p10, p90, n_runs, status
    (ok/failed), error, env. A bad record fails the whole import with its line number;
    nothing is written. Two latencies of one subnet more than 1.5x apart in one file are
    refused, naming both lines (closer ones are kept as repeats). Importing measurements
    already imported into this database (the same subnets and values, whatever the file's
    name, format or order) is refused with exit status 2, naming the first import; nothing
    is stored twice.

    A measurement kit's results (`nas latency kit`; the kit folder, or its results.jsonl
    with the kit's manifest.json beside it) need neither: each result is checked against the
    kit's manifest, then against the kit as this database recorded it when it was made (each
    model's sha256 and architecture), and results for models that are not the kit's (file
    name or sha256), from another kit or a modified run.py, timed with other threads,
    duplicated, or with a latency that is not a finite number > 0 are refused in one line,
    nothing stored. Models without a result are listed and the rest is imported; a kit is
    imported once. A kit made with another database, or before kits were recorded, is
    refused unless --trust-manifest. Stored with the device's environment line in each
    measurement's env.
    """
    from nas.db import LatencyDB
    from nas.measure import read_import, store_import

    # the whole file is checked before the database is opened (or created)
    pending = read_import(file, device, space, kit=kit)
    with LatencyDB(db) as store:
        report = store_import(store, pending, trust_manifest=trust_manifest)
        url = store.display_url
    if json_:
        print_json({**report.to_dict(), "db": url})
        return
    console.print(
        f"imported {report.n_rows} measurement(s) of {report.space} on "
        f"[bold]{report.device}[/bold] ({report.n_failed} failed) into {url}"
    )
    if report.kit_id is not None:
        console.print(f"from kit {report.kit_id}" + (
            f"; {len(report.missing)} of its models had no result: "
            f"{', '.join(report.missing[:5])}{' ...' if len(report.missing) > 5 else ''}"
            if report.missing else "; every model of the kit had a result"))
    if report.device_created:
        console.print(f"created external device {report.device!r} -> {report.profile_path}")


# ---------------------------------------------------------------------- kit
def kit_cmd(
    space: SpaceOpt, device: _KitDeviceOpt, out: _KitOutOpt, n: _KitNOpt = 20,
    select: _KitSelectOpt = "auto", seed: _SampleSeedOpt = 0, threads: _KitThreadsOpt = None,
    repeats: _KitRepeatsOpt = 5, db: DbOpt = None, progress: _ProgressOpt = True,
    json_: JsonOpt = False,
) -> None:
    """Write a measurement kit: subnets to time on a device nothing here can reach.

    The folder holds the N subnets as ONNX files (exported from one randomly initialised
    supernet: latency does not depend on the weights) and the space's reference subnet,
    run.py (needs only Python >= 3.9, numpy and onnxruntime; it applies the timing protocol
    of `nas latency measure` and writes results.jsonl with an environment fingerprint),
    manifest.json (the kit's id, space, device, each model's file, sha256 and architecture)
    and README.txt (what to run on the device, what to send back).

    On the device: `python run.py` (options --threads, --repeats, --out). Back here: `nas
    latency import DIR/results.jsonl` (or DIR). Subnets the device already has measurements
    of are left out; --select says how the others are chosen.
    """
    from nas.latency._fit import prior_predictions
    from nas.measure import kit_profile, write_kit

    check_output(out, inputs=[("--db", _db_file(db))], overwrite=None, folder=True,
                 example="kit/")
    _check_select(select)
    with _db(db) as store:
        report = write_kit(space, kit_profile(device, threads), n, out, db=store, seed=seed,
                           select=select, priors=prior_predictions, repeats=repeats,
                           progress=progress and not json_)
    if json_:
        print_json(report.to_dict())
        return
    sel = report.selection
    console.print(f"wrote kit {report.kit_id} -> {report.path}: {report.n_models} subnets of "
                  f"{report.space} + the reference for [bold]{report.device.name}[/bold] "
                  f"({report.device.intra_op_threads} thread(s), {report.bytes / 1e6:.1f} MB)")
    console.print(f"chosen: {sel['method']} ({sel['rule']})")
    console.print(f"on the device: python run.py   then: nas latency import {report.path}")


def import_lut_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of {r}_lookup_table.yaml files in "
                                           "Once-for-All's format (e.g. OFA's note10/).")],
    device: Annotated[str, typer.Option("--device", help="The device they were measured on "
                                        "(add it first: nas devices add NAME --external).")],
    space: SpaceOpt, db: DbOpt = None, json_: JsonOpt = False,
) -> None:
    """Import latency lookup tables in Once-for-All's format as the device's 'table' predictor.

    Each table is summed as it is, at its resolutions only (OFA's LatencyTable). The whole
    folder is checked before anything is stored.
    """
    from nas.latency._table import import_lut

    est = import_lut(folder, device, space, db=db)
    table = est.table or {}
    out = {"device": device, "space": space, "kind": "table",
           "resolutions": table.get("resolutions"), "keyed_by": table.get("keyed_by")}
    if json_:
        print_json(out)
        return
    console.print(f"imported {folder} as the 'table' predictor of {space} on "
                  f"[bold]{device}[/bold] (resolutions {out['resolutions']}, keyed by "
                  f"{out['keyed_by']}'s network)")


def export_cmd(
    out: _OutOpt, device: _OnlyDeviceOpt = None, space: _OnlySpaceOpt = None,
    db: DbOpt = None, overwrite: OverwriteOpt = False, json_: JsonOpt = False,
) -> None:
    """Export measurements (every status and source) to CSV or Parquet.

    The file can be imported again with `nas latency import`. An existing --out needs
    --overwrite.
    """
    from nas.db import LatencyDB
    from nas.measure import export_measurements

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"--out must end in .csv or .parquet, got {str(out)!r}")
    check_output(out, inputs=[("--db", _db_file(db))], overwrite=overwrite,
                 example="latency.csv")
    with LatencyDB(db, create=False) as store:
        n = export_measurements(store, out, device=device, space=space)
        url = store.display_url
    if json_:
        print_json({"path": str(out), "n_rows": n, "device": device, "space": space, "db": url})
        return
    console.print(f"exported {n} measurement(s) from {url} -> {out}")


def kinds_cmd(json_: JsonOpt = False) -> None:
    """List the registered latency predictor kinds: what each is, whether it needs a lookup
    table timed on the device, and which one `nas latency fit` uses by default."""
    from nas.latency._predictors import DEFAULT_KIND, PREDICTORS

    rows: list[dict[str, Any]] = [
        {"name": name, "description": cls.description, "tags": sorted(cls.tags),
         "kind": name, "default": name == DEFAULT_KIND,
         "needs_table": bool(getattr(cls, "needs_table", False)),
         "restores_from_state": bool(cls.restores_from_state)}
        for name, cls in PREDICTORS.items()
    ]
    if json_:
        print_json(rows)
        return
    table = Table("kind", "what it is", "lookup table", title="latency predictor kinds")
    for r in rows:
        table.add_row(str(r["name"]) + (" (default)" if r["default"] else ""),
                      str(r["description"]), "timed on the device" if r["needs_table"] else "-")
    console.print(table)


# ---------------------------------------------------------------------- registration
def _help(doc: str | None) -> str:
    """A docstring as help text: paragraphs kept, the lines inside each joined."""
    paragraphs = [" ".join(line.strip() for line in p.splitlines())
                  for p in inspect.cleandoc(doc or "").split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def register(app: typer.Typer) -> None:
    """Add the ``nas latency`` group and its commands to the root ``app``."""
    latency_app = typer.Typer(
        help="Measure latencies, import and export them, fit and query predictors.",
        no_args_is_help=True,
    )
    for name, fn in (("measure", measure), ("fit", fit), ("predict", predict),
                     ("check", check)):
        latency_app.command(name, help=_help(fn.__doc__))(fn)
    latency_app.command("kit", help=_help(kit_cmd.__doc__))(kit_cmd)
    latency_app.command("import", help=_help(import_cmd.__doc__))(import_cmd)
    latency_app.command("import-lut", help=_help(import_lut_cmd.__doc__))(import_lut_cmd)
    latency_app.command("export")(export_cmd)
    latency_app.command("kinds", help=_help(kinds_cmd.__doc__))(kinds_cmd)
    app.add_typer(latency_app, name="latency")
