"""Latency of a language model's subnets, measured and predicted per workload (issue 26).

For each device (a profile with a prefill or decode workload), on one space of the gpt
family:

1. measure ``--n`` subnets with the protocol (relative to the reference subnet, on the
   device's scale; resumable: what is stored is not measured again);
2. re-measure ``--noise`` of them in fresh sessions for the noise floor;
3. fit ``flops``, ``additive`` and ``gbdt`` (a share ``--holdout`` kept out and scored), and
   score MACs and parameters themselves as predictors on the same held-out subnets (rank
   only: they are not in ms);
4. check the stored ``additive`` predictor on ``--check`` new subnets measured afterwards
   (``nas latency check``'s protocol: three fresh sessions each), next to the noise floor,
   and score every kind, MACs and parameters on those same subnets;
5. time the same new subnets in a plain ONNX Runtime loop (a session with the profile's
   options, ``--plain-warmup`` calls, then the median of ``--plain-runs``), the way a user
   would check: Spearman of each predictor against it.

Run from the repository root, in the background (resumable):

    nohup .venv/bin/python experiments/gpt_latency/benchmark.py --space gpt_shakespeare \\
        --devices cpu-1t-decode256 cpu-1t-prefill128 --n 200 \\
        --db sqlite:///runs/gpt_latency.sqlite --out runs/gpt_latency.json \\
        > runs/gpt_latency.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import header, machine, session_median_ms, table

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import check_agreement, fit_predictor, load_predictor
from nas.latency._fit import _split, training_data
from nas.latency._gpt_features import gpt_features
from nas.measure import (
    measure_on_devices,
    noise_floor,
    noise_floor_from_db,
    regression_metrics,
    sample_for_measurement,
)
from nas.measure._prepare import one_torch_thread, prepare_model
from nas.measure._session import make_session, workload_feed
from nas.space import family_part, get_space

KINDS = ("flops", "additive", "gbdt")


def _rho(a: Any, b: Any) -> float:
    return float(spearmanr(a, b).statistic)


def _plain_ms(space: Any, device: str, archs: list[Any], warmup: int, runs: int) -> np.ndarray:
    """Each subnet's median over ``runs`` calls in one session, after ``warmup`` calls."""
    profile = get_device(device)
    net = family_part(space, "timing_supernet")(space)
    export = family_part(space, "timing_onnx")
    out = []
    with one_torch_thread():
        for a in archs:
            sess = make_session(prepare_model(export(net, a), profile, 0), profile)
            feed = workload_feed(sess.get_inputs(), profile)
            out.append(session_median_ms(sess, feed, warmup, runs))
    return np.asarray(out)


def run_device(args: argparse.Namespace, db: LatencyDB, device: str) -> dict[str, Any]:
    sp: Any = get_space(args.space)
    wl = get_device(device).workload
    feats = gpt_features(sp, wl)
    t0 = time.time()
    archs = sample_for_measurement(sp, args.n, seed=args.seed)
    print(f"[{device}] measuring {len(archs)} subnets (resumable)", flush=True)
    measure_on_devices([device], sp, archs, db, progress=False, skip_measured=True)
    nf = noise_floor_from_db(device, sp, db)
    if args.noise and (nf is None or nf.n < args.noise):
        print(f"[{device}] noise floor: {args.noise - (nf.n if nf else 0)} repeats", flush=True)
        nf = noise_floor(device, sp, db, k=args.noise - (nf.n if nf else 0),
                         seed=args.seed + 1, progress=False)
    res: dict[str, Any] = {"device": device, "workload": wl.model_dump(exclude_none=True),
                           "n": len(archs), "noise": nf.to_dict() if nf else None,
                           "holdout": {}, "check": {}, "plain": {}}
    # 3. held out of the campaign
    for kind in KINDS:
        _, m = fit_predictor(device, sp.name, kind, db=db, holdout=args.holdout,
                             seed=args.seed, save=True)
        res["holdout"][kind] = m["test"]
    # MACs and parameters on the very subnets fit_predictor held out (its split)
    data = training_data(device, sp.name, db)
    _, test = _split(len(data.archs), args.holdout, args.seed)
    y = data.y[test]
    tarchs = [data.archs[i] for i in test]
    res["holdout"]["macs"] = {"spearman_rho": _rho(feats.macs(tarchs), y)}
    res["holdout"]["params"] = {"spearman_rho": _rho(sp.costs(tarchs)["params"], y)}
    # 4. new subnets measured afterwards, the stored additive predictor checked on them
    print(f"[{device}] checking on {args.check} new subnets", flush=True)
    ag = check_agreement(device, sp, db, n=args.check, seed=args.seed + 7, kind="additive",
                         noise=0, progress=False)
    by_hash = {r.arch.hash: r.arch for r in db.measurements(device, sp.name, status=None)}
    new = [by_hash[h] for h in ag.hashes]
    res["check"]["additive"] = {**{k: v for k, v in ag.to_dict().items()
                                   if k in ("median_error", "median_abs_error", "spearman_rho",
                                            "within_noise")},
                                **regression_metrics(ag.measured, ag.predicted)}
    for kind in ("flops", "gbdt"):
        pred = load_predictor(device, sp.name, kind, db=db).predict(new)
        res["check"][kind] = regression_metrics(ag.measured, pred)
    res["check"]["macs"] = {"spearman_rho": _rho(feats.macs(new), ag.measured)}
    res["check"]["params"] = {"spearman_rho": _rho(sp.costs(new)["params"], ag.measured)}
    # 5. the same subnets in a plain ONNX Runtime loop
    print(f"[{device}] plain ONNX Runtime loop on the {len(new)} new subnets", flush=True)
    plain = _plain_ms(sp, device, new, args.plain_warmup, args.plain_runs)
    res["plain"] = {
        "ms": plain.tolist(), "protocol_ms": ag.measured.tolist(),
        "plain_over_protocol_median": float(np.median(plain / ag.measured)),
        "spearman_vs_protocol": _rho(plain, ag.measured),
        **{kind: {"spearman_rho": _rho(load_predictor(device, sp.name, kind, db=db)
                                       .predict(new), plain)} for kind in KINDS},
        "macs": {"spearman_rho": _rho(feats.macs(new), plain)},
        "params": {"spearman_rho": _rho(sp.costs(new)["params"], plain)},
    }
    res["seconds"] = round(time.time() - t0, 1)
    return res


def _markdown(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    cmd = "python experiments/gpt_latency/benchmark.py " + " ".join(sys.argv[1:])
    out = [header(f"Latency of {args.space} subnets per workload", cmd)]
    for r in results:
        nf = r["noise"] or {}
        out.append(f"\n### {r['device']} ({r['workload']})\n\n{r['n']} measured subnets; "
                   f"noise floor: median {nf.get('median', float('nan')):.4f}, p90 "
                   f"{nf.get('p90', float('nan')):.4f} ({nf.get('n', 0)} repeats); "
                   f"{r['seconds']:.0f} s\n")
        rows = []
        for name in (*KINDS, "macs", "params"):
            h, c, p = r["holdout"][name], r["check"][name], r["plain"][name]
            rows.append([name, f"{h['spearman_rho']:.3f}", _pct(h.get("within_10")),
                         f"{c['spearman_rho']:.3f}", _pct(c.get("within_10")),
                         _pct(c.get("median_abs_error") if name == "additive" else None),
                         f"{p['spearman_rho']:.3f}"])
        out.append(table(["predictor", "held-out Spearman", "held-out within 10%",
                          f"check ({args.check} new) Spearman", "check within 10%",
                          "check median abs error", "plain ORT loop Spearman"], rows))
        ch = r["check"]["additive"]
        out.append(f"\nadditive on the new subnets: median error {ch['median_error']:+.4f}, "
                   f"within the noise floor's p90: {ch['within_noise']}; plain loop / "
                   f"protocol (median) {r['plain']['plain_over_protocol_median']:.3f}, "
                   f"Spearman {r['plain']['spearman_vs_protocol']:.3f}\n")
    return "\n".join(out)


def _pct(v: Any) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="gpt_shakespeare")
    ap.add_argument("--devices", nargs="+", default=["cpu-1t-decode256", "cpu-1t-prefill128"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--noise", type=int, default=20)
    ap.add_argument("--check", type=int, default=30)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--plain-warmup", type=int, default=20)
    ap.add_argument("--plain-runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db", default="sqlite:///runs/gpt_latency.sqlite")
    ap.add_argument("--out", default="runs/gpt_latency.json")
    args = ap.parse_args()
    db = LatencyDB(args.db)
    results = []
    for device in args.devices:
        results.append(run_device(args, db, device))
        Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args),
                                              "results": results}, indent=1))
    md = _markdown(args, results)
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
