"""Few-shot latency prediction on a new device: ``transfer`` against ``flops`` and the best
single-device kind fitted on the same k measurements, leaving one device out at a time.

Devices (space ``ofa_mbv3``): ``cpu-1t``, ``cpu-2t``, ``cpu-1t-int8``, ``cpu-1t-b16`` (batch
16), ``cpu-1t-noopt`` (graph optimisations off), all ONNX Runtime configurations of this
host, and ``note10`` (OFA's published Note10 lookup tables: its "measurements" are the
tables' prices, shipped in ``nas/_data/tables/note10.json``). The subnets are drawn at the
resolutions the Note10 tables have (160 to 224 in steps of 16), so that every device prices
every subnet and each one can be left out in turn.

Phases:

``measure``
    Samples ``--n`` subnets (seed fixed), exports each once and times it on every host
    device (``measure_on_devices``, a cheaper protocol than ``nas latency measure``'s,
    relative to the space's reference subnet, see ``CAMPAIGN_TIMING``), into its own SQLite
    database (``--db``, default ``runs/fewshot/latency.sqlite``). Resumable: what is
    measured is skipped; progress goes to ``--log`` (default ``runs/fewshot/measure.log``).
    Devices are timed one after the other, one thread configuration at a time.
``noise``
    Re-times ``--noise`` (20) measured subnets in fresh sessions on every host device, for
    the noise floor the report prints (run it after ``measure``).
``report``
    For every device D and k in 5, 10, 20, 50, over ``--repeats`` draws of k training
    subnets from a pool: fits ``flops``, ``additive`` and ``gbdt`` on the k (the best of
    the latter two on the held-out set is "best single"; it is chosen with hindsight, which
    favours it) and ``transfer`` with the other devices' predictors as priors (``flops`` or
    ``additive``, the better on a 20% holdout, fitted on their own measurements: of every
    subnet with ``--prior-data all``, the default, as a database that knows those devices
    well has them, or of the pool only; ``note10``'s lookup table), never a measurement of
    the held-out device outside the k; scores
    each on the held-out subnets (Spearman rho, Kendall tau, MAPE, share within +-10%).
    Uses the subnets every device has measured so far.

Run:
    nohup .venv/bin/python experiments/benchmarks/fewshot.py --phase measure &
    .venv/bin/python experiments/benchmarks/fewshot.py --phase noise
    .venv/bin/python experiments/benchmarks/fewshot.py --phase report
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
    log.info("measuring %d subnets of %s on %s into %s", len(archs), SPACE, HOST_DEVICES,
             args.db)
    t0 = time.time()
    for start in range(0, len(archs), args.chunk):
        chunk = archs[start:start + args.chunk]
        t1 = time.time()
        measure_on_devices(list(HOST_DEVICES), SPACE, chunk, db, config=CAMPAIGN_TIMING,
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
    done = _measured(db, HOST_DEVICES[-1])
    archs = [a for a in sample(args.n, args.seed) if a in done][:args.noise]
    log.info("re-timing %d subnets on %s for the noise floor", len(archs), HOST_DEVICES)
    measure_on_devices(list(HOST_DEVICES), SPACE, archs, db, config=CAMPAIGN_TIMING,
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


def dataset(db_url: str, n: int, seed: int) -> tuple[list[Architecture], dict[str, np.ndarray]]:
    """The sampled subnets every device has (in sample order) and each device's latencies;
    ``note10``'s are its tables' prices."""
    from nas.latency import load_predictor

    db = LatencyDB(db_url)
    archs = sample(n, seed)
    by_dev = {d: _measured(db, d) for d in HOST_DEVICES}
    keep = [a for a in archs if all(a in by_dev[d] for d in HOST_DEVICES)]
    y = {d: np.asarray([by_dev[d][a] for a in keep]) for d in HOST_DEVICES}
    y[TABLE_DEVICE] = load_predictor(TABLE_DEVICE, SPACE, "table", db=db).predict(keep)
    return keep, y


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


def report(args: argparse.Namespace) -> str:
    from nas.latency import load_predictor
    from nas.latency._transfer import prior_entry

    archs, ys = dataset(args.db, args.n, args.seed)
    n = len(archs)
    if n < 60:
        raise SystemExit(f"only {n} subnets measured on every device; measure more first")
    n_pool = min(args.pool, n // 2)  # partial campaigns: half for the pool at most
    pool, test = np.arange(n_pool), np.arange(n_pool, n)
    devices = list(ys)
    # each device's prior: an additive fitted on its own measurements (of every subnet, as a
    # database that knows the device well has them, or of the pool only); note10's is its
    # lookup table, the predictor the database has for it
    fit_on = pool if args.prior_data == "pool" else np.arange(n)
    priors = {d: prior_entry(d, _prior(archs, ys[d], fit_on, args.prior_kind))
              for d in HOST_DEVICES}
    priors[TABLE_DEVICE] = prior_entry(
        TABLE_DEVICE, load_predictor(TABLE_DEVICE, SPACE, "table", db=args.db))
    rows = []
    summary: dict[tuple[str, int], list[float]] = {}
    raw: dict[str, Any] = {}
    for d in devices:
        others = [priors[o] for o in devices if o != d]
        for k in KS:
            if k > n_pool:
                continue
            acc: dict[str, list[dict[str, float]]] = {}
            chosen: list[str] = []
            for rep in range(args.repeats):
                tr = np.sort(np.random.default_rng(1000 * k + rep).choice(pool, k,
                                                                          replace=False))
                for kind in ("flops", "additive", "gbdt"):
                    if kind == "gbdt" and k < 20:
                        continue
                    acc.setdefault(kind, []).append(_fit_score(kind, archs, ys[d], tr, test)[0])
                m, est = _fit_score("transfer", archs, ys[d], tr, test, priors=others,
                                    selection=args.selection)
                acc.setdefault("transfer", []).append(m)
                chosen.append(est.model_)
                m0, _ = _fit_score("transfer", archs, ys[d], tr, test, priors=[])
                acc.setdefault("transfer (no priors)", []).append(m0)
            mean = {kind: {key: float(np.mean([m[key] for m in ms])) for key in ms[0]}
                    for kind, ms in acc.items()}
            single = min(("additive", "gbdt"), key=lambda kk: mean.get(kk, {"mape": 9e9})["mape"])
            raw[f"{d}/k={k}"] = {"mean": mean, "transfer_models": chosen, "best_single": single}
            for kind in ("transfer", "flops", single, "transfer (no priors)"):
                mm = mean[kind]
                label = kind if kind != single else f"best single ({kind})"
                rows.append([d, k, label, f"{mm['spearman_rho']:.3f}", f"{mm['kendall_tau']:.3f}",
                             f"{100 * mm['mape']:.1f}%", f"{100 * mm['within_10']:.0f}%"])
                summary.setdefault((label.split(" (")[0], k), []).append(mm["spearman_rho"])
            log = logging.getLogger("fewshot")
            log.info("%s k=%d: transfer rho %.3f mape %.3f | flops %.3f %.3f | %s %.3f %.3f | "
                     "models %s", d, k, mean["transfer"]["spearman_rho"],
                     mean["transfer"]["mape"], mean["flops"]["spearman_rho"],
                     mean["flops"]["mape"], single, mean[single]["spearman_rho"],
                     mean[single]["mape"], chosen)
    out = [header("Few-shot latency prediction on a new device (leave one device out)",
                  "experiments/benchmarks/fewshot.py --phase report"), "",
           f"Space {SPACE}, {n} subnets measured on all {len(devices)} devices "
           f"({', '.join(devices)}); k training subnets drawn from a pool of {n_pool}, "
           f"scored on the other {len(test)}; mean over {args.repeats} draws. Priors of "
           "`transfer`: the other devices' "
           + ("`flops` or `additive` (the better on a 20% holdout)" if args.prior_kind == "best"
              else f"`{args.prior_kind}`") + " fitted on their measurements of "
           f"{'all' if args.prior_data == 'all' else 'the pool'} subnets "
           "(note10's: its lookup table). "
           "\"best single\": the better of `additive` and `gbdt` (k >= 20) on the held-out "
           "set, chosen with hindsight.", "",
           table(["held-out device", "k", "predictor", "Spearman", "Kendall", "MAPE",
                  "within ±10%"], rows), ""]
    from nas.measure import noise_floor_from_db

    floors = []
    for d in HOST_DEVICES:
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
    means = [[label, k, f"{np.mean(v):.3f}", f"{np.min(v):.3f}"]
             for (label, k), v in sorted(summary.items(), key=lambda t: (t[0][1], t[0][0]))]
    out += ["Mean and worst Spearman over the held-out devices:", "",
            table(["predictor", "k", "mean Spearman", "worst"], means), ""]
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
    ap.add_argument("--noise", type=int, default=20, help="subnets re-timed (noise phase)")
    ap.add_argument("--chunk", type=int, default=10, help="subnets between log lines")
    ap.add_argument("--pool", type=int, default=100, help="subnets the k are drawn from")
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
    for d in (*HOST_DEVICES, TABLE_DEVICE):
        get_device(d)  # every profile exists before anything is timed
    if args.phase == "measure":
        measure(args)
    elif args.phase == "noise":
        noise(args)
    else:
        print(report(args))


if __name__ == "__main__":
    main()
