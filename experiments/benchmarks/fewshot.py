"""Few-shot latency prediction on a new device: ``transfer`` against ``flops``,
``structure`` and the single-device kinds fitted on the same k measurements, leaving one
device out at a time, and in two scenarios where the other devices mislead.

Devices (space ``ofa_mbv3``), all ONNX Runtime configurations of this host (``--devices``):
compute-bound ``cpu-1t``, ``cpu-1t-int8``, ``cpu-1t-noopt`` (graph optimisations off), whose
latency ranks like MACs; overhead-bound ``cpu-1t-r32`` and ``cpu-1t-r32-noopt`` (every subnet
fed 32x32 inputs, so per-operator dispatch, not arithmetic, sets latency, as on a GPU at
batch 1: it ranks by operator count); and ``note10`` (OFA's published Note10 lookup tables:
its "measurements" are the tables' prices, shipped in ``nas/_data/tables/note10.json``). The
subnets are drawn at the resolutions the Note10 tables have (160 to 224 in steps of 16), so
that every device prices every subnet. (The first campaign's ``cpu-2t`` and ``cpu-1t-b16``
remain in ``HOST_DEVICES`` for ``--devices``.)

Phases:

``measure``
    Samples ``--n`` subnets (seed fixed), exports each once and times it on every device of
    ``--devices`` (``measure_on_devices``, a cheaper protocol than ``nas latency measure``'s,
    relative to the space's reference subnet, see ``CAMPAIGN_TIMING``), into its own SQLite
    database (``--db``, default ``runs/fewshot/latency.sqlite``). Resumable: what is
    measured is skipped; progress goes to ``--log`` (default ``runs/fewshot/measure.log``).
    The overhead-bound devices are cheap to time: a second run with ``--devices
    cpu-1t-r32,cpu-1t-r32-noopt`` measures more subnets on them alone, for their reference
    model of 500 own measurements.
``noise``
    Re-times ``--noise`` (20) measured subnets in fresh sessions on every device, for the
    noise floor the report prints (run it after ``measure``).
``report``
    Scenarios: every device left out in turn with all the others as priors; an
    overhead-bound target with every source compute-bound; a compute-bound target with
    every source overhead-bound. For each target and k in 5, 10, 20, 50, over ``--repeats``
    draws of k training subnets from a pool (the first ``--pool`` subnets): fits ``flops``,
    ``structure``, ``additive`` and ``gbdt`` (k >= 20) on the k, and ``transfer`` with the
    sources' predictors as priors (``flops`` or ``additive``, the better on a 20% holdout,
    fitted on their own measurements; ``note10``'s lookup table), as it is now and with the
    candidates it had before issue #27 (``transfer (before)``); scores each on the last
    ``--test`` subnets every device has (never drawn). The reference: the best of
    ``additive``, ``gbdt`` and ``structure`` fitted on up to ``--reference`` (500) of the
    target's own measurements outside the test set.

Run:
    nohup .venv/bin/python experiments/benchmarks/fewshot.py --phase measure --n 200 &
    nohup .venv/bin/python experiments/benchmarks/fewshot.py --phase measure --n 650 \
        --devices cpu-1t-r32,cpu-1t-r32-noopt &
    .venv/bin/python experiments/benchmarks/fewshot.py --phase noise
    .venv/bin/python experiments/benchmarks/fewshot.py --phase report --n 650 --test 100
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, table

from nas.db import LatencyDB
from nas.devices import get_device
from nas.measure import TimingConfig, measure_on_devices, regression_metrics
from nas.space import Architecture, get_space

SPACE = "ofa_mbv3"
HOST_DEVICES = ("cpu-1t", "cpu-2t", "cpu-1t-int8", "cpu-1t-b16", "cpu-1t-noopt")
#: host profiles whose latency follows operator count, not MACs (32x32 inputs: ONNX
#: Runtime's per-operator dispatch dominates, as on a batch-1 GPU)
OVERHEAD_DEVICES = ("cpu-1t-r32", "cpu-1t-r32-noopt")
#: what the campaign measures by default: the one-thread compute-bound profiles (cpu-2t and
#: cpu-1t-b16 of the first campaign left out: two threads are disturbed by anything else on a
#: two-core machine, batch 16 costs as much as the rest together) and the overhead-bound ones
CAMPAIGN_DEVICES = ("cpu-1t", "cpu-1t-int8", "cpu-1t-noopt", *OVERHEAD_DEVICES)
TABLE_DEVICE = "note10"
RESOLUTIONS = (160, 176, 192, 208, 224)
KS = (5, 10, 20, 50)
#: cheaper than the default protocol (3 s a subnet): ~20 runs in at most 0.4 s of each of
#: subnet and reference, one session, no repeats; ~2% precision of the median
CAMPAIGN_TIMING = TimingConfig(warmup_runs=2, warmup_s=0.02, min_runs=8, max_runs=40,
                               max_s=0.4, target_rel_ci=0.02, round_runs=4, retries=0,
                               block_warmup=1, reference=True)
ROOT = Path(__file__).resolve().parents[2]


def sample(n: int, seed: int = 0) -> list[Architecture]:
    """``n`` distinct uniform subnets of the space at the Note10 tables' resolutions."""
    sp = get_space(SPACE)
    rng = np.random.default_rng(seed)
    out: dict[Architecture, None] = {}
    i = 0
    while len(out) < n:
        a = sp.sample_many(1, seed=seed * 100_003 + i)[0].to_dict()
        a["r"] = int(rng.choice(RESOLUTIONS))
        out[sp.parse(a)] = None
        i += 1
    return list(out)


def measure(args: argparse.Namespace) -> None:
    log = logging.getLogger("fewshot")
    db = LatencyDB(args.db)
    archs = sample(args.n, args.seed)
    devices = args.devices
    log.info("measuring %d subnets of %s on %s into %s", len(archs), SPACE, devices,
             args.db)
    t0 = time.time()
    for start in range(0, len(archs), args.chunk):
        chunk = archs[start:start + args.chunk]
        t1 = time.time()
        measure_on_devices(list(devices), SPACE, chunk, db, config=CAMPAIGN_TIMING,
                           skip_measured=True, progress=False)
        done = start + len(chunk)
        log.info("%d/%d subnets done (chunk %.0f s, total %.1f min)", done, len(archs),
                 time.time() - t1, (time.time() - t0) / 60)
    log.info("campaign complete")


def noise(args: argparse.Namespace) -> None:
    """Re-time ``--noise`` of the measured subnets in fresh sessions on every host device
    (source ``"noise"``: no predictor trains on them), for the noise floor of the report."""
    log = logging.getLogger("fewshot")
    db = LatencyDB(args.db)
    done = _measured(db, args.devices[-1])
    archs = [a for a in sample(args.n, args.seed) if a in done][:args.noise]
    log.info("re-timing %d subnets on %s for the noise floor", len(archs), args.devices)
    measure_on_devices(list(args.devices), SPACE, archs, db, config=CAMPAIGN_TIMING,
                       source="noise", skip_measured=True, progress=False)
    log.info("noise repeats complete")


def _measured(db: LatencyDB, device: str) -> dict[Architecture, float]:
    """The device's latency of each subnet measured once: a subnet measured twice was timed
    while two campaigns ran at once (a restart that left the first running), and is left
    out, both timings being disturbed."""
    from nas.latency import training_data

    try:
        data = training_data(device, SPACE, db)
    except Exception:
        return {}
    return {a: float(v) for a, v, ids in zip(data.archs, data.y, data.ids, strict=True)
            if len(ids) == 1}


def dataset(db_url: str, n: int, seed: int, devices: tuple[str, ...]
            ) -> tuple[list[Architecture], dict[str, np.ndarray], int]:
    """The sampled subnets, in sample order: first those every device has, then those only
    the overhead-bound devices have (cheap to time: a campaign measures more of them, for
    the reference model of ``--reference`` own measurements); each device's latencies (NaN
    where not measured; ``note10``'s are its tables' prices); and how many are common."""
    from nas.latency import load_predictor

    db = LatencyDB(db_url)
    archs = sample(n, seed)
    by_dev = {d: _measured(db, d) for d in devices}
    common = [a for a in archs if all(a in by_dev[d] for d in devices)]
    over = [d for d in devices if d in OVERHEAD_DEVICES]
    extra = [a for a in archs if a not in set(common) and over
             and all(a in by_dev[d] for d in over)]
    keep = common + extra
    y = {d: np.asarray([by_dev[d].get(a, np.nan) for a in keep]) for d in devices}
    y[TABLE_DEVICE] = load_predictor(TABLE_DEVICE, SPACE, "table", db=db).predict(keep)
    return keep, y, len(common)


def _fit_score(kind: str, archs: list[Architecture], y: np.ndarray, tr: np.ndarray,
               te: np.ndarray, **params: Any) -> tuple[dict[str, float], Any]:
    from nas.latency import make_predictor

    est = make_predictor(kind, SPACE, **params).fit([archs[i] for i in tr], y[tr])
    return regression_metrics(y[te], est.predict([archs[i] for i in te])), est


def _prior(archs: list[Architecture], y: np.ndarray, idx: np.ndarray, kind: str) -> Any:
    """A device's predictor fitted on ``idx``: of ``kind``, or with ``kind="best"`` as the
    database would hold it: of ``flops`` and ``additive``, the one with the lower MAPE on a
    20% holdout (``load_predictor``'s rule)."""
    from nas.latency import make_predictor

    if kind == "best":
        perm = np.random.default_rng(0).permutation(idx)
        te, tr = perm[:len(perm) // 5], perm[len(perm) // 5:]
        mape = {k: _fit_score(k, archs, y, tr, te)[0]["mape"] for k in ("flops", "additive")}
        kind = min(mape, key=mape.__getitem__)
    return make_predictor(kind, SPACE).fit([archs[i] for i in idx], y[idx])


def _device_params(kind: str, device: str) -> dict[str, Any]:
    """What a kind takes from the target's profile, as ``create(space, device)`` would give
    it: the input side of a profile with one, for ``structure`` and ``transfer``."""
    if kind not in ("structure", "transfer") or device == TABLE_DEVICE:
        return {}
    side = get_device(device).input_resolution
    return {"input_resolution": side} if side is not None else {}


#: transfer as it was before the structure candidates (issue #27): the same class, its
#: candidates then
BEFORE_MODELS = ("prior", "nearest", "prior+residual", "flops", "additive")


def _scenarios(devices: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(name, targets, sources): every device left out in turn with the others as priors;
    an overhead-bound target with compute-bound sources only; and the reverse."""
    over = [d for d in devices if d in OVERHEAD_DEVICES]
    compute = [d for d in devices if d not in OVERHEAD_DEVICES]
    out = [("every other device", devices, devices)]
    if over and compute:
        out += [("target overhead-bound, every source compute-bound", over, compute),
                ("target compute-bound, every source overhead-bound",
                 [d for d in compute if d != TABLE_DEVICE], over)]
    return out


def report(args: argparse.Namespace) -> str:  # noqa: C901 - one table per scenario
    from nas.latency import load_predictor
    from nas.latency._transfer import prior_entry

    archs, ys, n = dataset(args.db, args.n, args.seed, tuple(args.devices))
    if n < 60:
        raise SystemExit(f"only {n} subnets measured on every device; measure more first")
    n_test = min(args.test, n // 2)
    test = np.arange(n - n_test, n)  # the last common subnets: every device has them
    n_pool = min(args.pool, n - n_test)
    pool = np.arange(n_pool)
    devices = list(ys)
    fit_on = pool if args.prior_data == "pool" else np.arange(n)
    priors = {d: prior_entry(d, _prior(archs, ys[d], fit_on, args.prior_kind))
              for d in args.devices}
    priors[TABLE_DEVICE] = prior_entry(
        TABLE_DEVICE, load_predictor(TABLE_DEVICE, SPACE, "table", db=args.db))
    log = logging.getLogger("fewshot")
    # the reference: each device's best model on its own measurements (hindsight choice)
    reference: dict[str, tuple[str, float]] = {}
    n_own: dict[str, int] = {}
    for d in devices:
        if d == TABLE_DEVICE:
            continue
        # the target's own measurements outside the test set, in sample order
        own = np.asarray([i for i in range(len(archs)) if not n - n_test <= i < n
                          and np.isfinite(ys[d][i])])[:args.reference]
        n_own[d] = len(own)
        rho = {kind: _fit_score(kind, archs, ys[d], own, test,
                                **_device_params(kind, d))[0]["spearman_rho"]
               for kind in ("additive", "gbdt", "structure")}
        best = max(rho, key=rho.__getitem__)
        reference[d] = (best, rho[best])
        log.info("%s: reference %s on %d own measurements: rho %.3f", d, best, len(own),
                 rho[best])
    out = [header("Few-shot latency prediction on a new device",
                  "experiments/benchmarks/fewshot.py --phase report"), "",
           f"Space {SPACE}, {n} subnets measured on every device ({', '.join(devices)}; "
           f"overhead-bound: {', '.join(d for d in devices if d in OVERHEAD_DEVICES)}); k "
           f"training subnets drawn from a pool of {n_pool}, scored on the last {n_test} "
           f"(never drawn); mean over {args.repeats} draws. Priors of `transfer`: the "
           "sources' " + ("`flops` or `additive` (the better on a 20% holdout)"
                          if args.prior_kind == "best" else f"`{args.prior_kind}`")
           + " fitted on their measurements of "
           + f"{'all' if args.prior_data == 'all' else 'the pool'}"
           " subnets (note10's: its lookup table); never a measurement of the target outside "
           "the k. `transfer (before)`: the same class with the candidates it had before "
           "issue #27 (no `structure`). Reference: the best of `additive`, `gbdt` and "
           "`structure` fitted on up to "
           f"{args.reference} of the target's own measurements outside the test set "
           f"({', '.join(f'{d}: {v}' for d, v in n_own.items())}; chosen with hindsight on "
           "the test set).", ""]
    raw: dict[str, Any] = {"reference": {d: {"kind": k, "spearman_rho": r}
                                         for d, (k, r) in reference.items()}}
    for name, targets, sources in _scenarios(devices):
        rows = []
        ratio_rows = []
        for d in targets:
            others = [priors[o] for o in sources if o != d]
            for k in KS:
                if k > n_pool:
                    continue
                acc: dict[str, list[dict[str, float]]] = {}
                chosen: list[str] = []
                for rep in range(args.repeats):
                    tr = np.sort(np.random.default_rng(1000 * k + rep).choice(pool, k,
                                                                              replace=False))
                    for kind in ("flops", "structure", "additive", "gbdt"):
                        if kind == "gbdt" and k < 20:
                            continue
                        acc.setdefault(kind, []).append(
                            _fit_score(kind, archs, ys[d], tr, test,
                                       **_device_params(kind, d))[0])
                    m, est = _fit_score("transfer", archs, ys[d], tr, test, priors=others,
                                        selection=args.selection,
                                        **_device_params("transfer", d))
                    acc.setdefault("transfer", []).append(m)
                    chosen.append(est.model_)
                    mb, _ = _fit_score("transfer", archs, ys[d], tr, test, priors=others,
                                       selection=args.selection, models=BEFORE_MODELS)
                    acc.setdefault("transfer (before)", []).append(mb)
                mean = {kind: {key: float(np.mean([m[key] for m in ms])) for key in ms[0]}
                        for kind, ms in acc.items()}
                raw[f"{name}/{d}/k={k}"] = {"mean": mean, "transfer_models": chosen}
                for kind in ("transfer", "transfer (before)", "flops", "structure",
                             "additive", "gbdt"):
                    if kind not in mean:
                        continue
                    mm = mean[kind]
                    rows.append([d, k, kind, f"{mm['spearman_rho']:.3f}",
                                 f"{mm['kendall_tau']:.3f}", f"{100 * mm['mape']:.1f}%",
                                 f"{100 * mm['within_10']:.0f}%"])
                if d in reference:
                    ref = reference[d][1]
                    ratio_rows.append([d, k, f"{mean['transfer']['spearman_rho']:.3f}",
                                       f"{mean['transfer (before)']['spearman_rho']:.3f}",
                                       f"{ref:.3f} ({reference[d][0]})",
                                       f"{mean['transfer']['spearman_rho'] / ref:.3f}",
                                       f"{mean['transfer (before)']['spearman_rho'] / ref:.3f}",
                                       " ".join(sorted(set(chosen)))])
                log.info("%s | %s k=%d: transfer %.3f (before %.3f) | flops %.3f | structure "
                         "%.3f | models %s", name, d, k, mean["transfer"]["spearman_rho"],
                         mean["transfer (before)"]["spearman_rho"],
                         mean["flops"]["spearman_rho"], mean["structure"]["spearman_rho"],
                         chosen)
        out += [f"### {name}", "",
                f"Targets: {', '.join(targets)}; sources (priors): "
                f"{', '.join(o for o in sources)} (the target itself never).", "",
                "Spearman of `transfer` over that of the reference (the target's own "
                "measurements, above):", "",
                table(["target", "k", "transfer", "transfer (before)", "reference",
                       "transfer / reference", "before / reference", "models chosen"],
                      ratio_rows), "",
                table(["target", "k", "predictor", "Spearman", "Kendall", "MAPE",
                       "within ±10%"], rows), ""]
    from scipy.stats import spearmanr

    from nas.latency._structure import structure_features
    from nas.space import get_space

    sx = structure_features(SPACE).transform(get_space(SPACE).to_arrays(archs))
    ranks = []
    for d in args.devices:
        ok = np.isfinite(ys[d])
        ranks.append([d, int(ok.sum())] + [f"{spearmanr(ys[d][ok], sx[ok, i])[0]:.2f}"
                                           for i in range(4)])
    out += ["What each device's latency ranks like: Spearman against the exported graph's "
            "operators, MACs, activation and weight bytes (at the subnet's resolution), over "
            "every subnet it has:", "",
            table(["device", "subnets", "operators", "MACs", "activation bytes",
                   "weight bytes"], ranks), ""]
    from nas.measure import noise_floor_from_db

    floors = []
    for d in args.devices:
        nf = noise_floor_from_db(d, SPACE, LatencyDB(args.db))
        if nf is not None:
            floors.append([d, nf.n, f"{100 * nf.median:.1f}%", f"{100 * nf.p90:.1f}%",
                           f"{nf.metrics['spearman_rho']:.3f}",
                           f"{100 * nf.metrics['within_10']:.0f}%"])
    if floors:
        out += ["Noise floor of the campaign (subnets re-timed in fresh sessions, "
                "`--phase noise`; the truth itself repeats no better):", "",
                table(["device", "pairs", "median |a-b|/mean", "p90", "Spearman of a repeat",
                       "repeat within ±10%"], floors), ""]
    text = "\n".join(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=1))
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=("measure", "noise", "report"), default="report")
    ap.add_argument("--db", default=f"sqlite:///{ROOT / 'runs/fewshot/latency.sqlite'}")
    ap.add_argument("--log", default=str(ROOT / "runs/fewshot/measure.log"))
    ap.add_argument("--out", default=str(ROOT / "runs/fewshot/report.md"))
    ap.add_argument("--n", type=int, default=600, help="subnets to measure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--devices", type=lambda v: tuple(v.split(",")),
                    default=CAMPAIGN_DEVICES,
                    help="host devices measured and compared, comma-separated (default: "
                    "the compute-bound and the overhead-bound profiles)")
    ap.add_argument("--noise", type=int, default=20, help="subnets re-timed (noise phase)")
    ap.add_argument("--chunk", type=int, default=10, help="subnets between log lines")
    ap.add_argument("--pool", type=int, default=100, help="subnets the k are drawn from")
    ap.add_argument("--test", type=int, default=150,
                    help="the last subnets, never drawn: every score is on them")
    ap.add_argument("--reference", type=int, default=500,
                    help="the target's own measurements the reference model is fitted on")
    ap.add_argument("--prior-data", choices=("all", "pool"), default="all",
                    help="the other devices' predictors are fitted on all their measurements "
                    "(the held-out subnets' too: never the held-out device's) or the pool's")
    ap.add_argument("--prior-kind", choices=("best", "additive", "flops"), default="best",
                    help="the other devices' predictors: as the database would choose, or "
                    "one kind")
    ap.add_argument("--selection", choices=("min", "one_se"), default="min",
                    help="transfer's choice among its candidates")
    ap.add_argument("--repeats", type=int, default=5, help="draws of k subnets per device")
    args = ap.parse_args()
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("fewshot")  # ours only: the quantiser logs every bias it copies
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in (logging.FileHandler(args.log), logging.StreamHandler()):
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(h)
    for d in (*args.devices, TABLE_DEVICE):
        get_device(d)  # every profile exists before anything is timed
    if args.phase == "measure":
        measure(args)
    elif args.phase == "noise":
        noise(args)
    else:
        print(report(args))


if __name__ == "__main__":
    main()
