"""Few-shot latency of a language model's workload: ``transfer`` from k measurements and the
other workloads' predictors, against ``flops`` and ``additive`` fitted on the same k alone
(issue 26: "transfer across devices as before").

The measurements are those ``benchmark.py`` stored (``--db``): for each target device, every
other device of the database with measurements of the space is a prior (an ``additive``
fitted on all of its measurements; another workload is a column like another device), the
target keeps ``k`` of its own measurements (``--seeds`` random draws), and every kind is
scored on the target's other measurements (Spearman and median relative error).

    .venv/bin/python experiments/gpt_latency/fewshot.py --db sqlite:///runs/gpt_latency.sqlite
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import header, machine, table

from nas.db import LatencyDB
from nas.latency import make_predictor
from nas.latency._fit import training_data
from nas.latency._transfer import prior_entry

KINDS = ("transfer", "flops", "additive")


def run(db: LatencyDB, space: str, target: str, priors: dict[str, Any], ks: list[int],
        seeds: int) -> dict[str, Any]:
    data = training_data(target, space, db)
    archs, y = list(data.archs), np.asarray(data.y)
    entries = [prior_entry(name, p) for name, p in priors.items() if name != target]
    out: dict[str, Any] = {"target": target, "n": len(y),
                           "priors": [e["device"] for e in entries], "k": {}}
    for k in ks:
        scores: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
        models = []
        for seed in range(seeds):
            idx = np.random.default_rng(seed).permutation(len(y))
            train, test = idx[:k], idx[k:]
            tr = [archs[i] for i in train]
            te = [archs[i] for i in test]
            for kind in KINDS:
                params = {"priors": entries} if kind == "transfer" else {}
                est = make_predictor(kind, space, device=target, **params)
                if kind == "additive" and k < 10:  # interpolates below its coefficients + 2
                    continue
                est.fit(tr, y[train])
                pred = est.predict(te)
                scores[kind].append((float(spearmanr(pred, y[test]).statistic),
                                     float(np.median(np.abs(pred / y[test] - 1)))))
                if kind == "transfer":
                    models.append(est.model_)
        out["k"][k] = {kind: {"spearman": float(np.median([s for s, _ in v])),
                              "median_rel_error": float(np.median([e for _, e in v]))}
                       for kind, v in scores.items() if v}
        out["k"][k]["transfer_models"] = {m: models.count(m) for m in sorted(set(models))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default="sqlite:///runs/gpt_latency.sqlite")
    ap.add_argument("--space", default="gpt_shakespeare")
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--out", default="runs/gpt_fewshot.json")
    args = ap.parse_args()
    db = LatencyDB(args.db)
    devices = [d for d in db.devices() if db.measurements(d, args.space)]
    priors = {}
    for d in devices:  # each device's additive on all its measurements: the priors
        data = training_data(d, args.space, db)
        priors[d] = make_predictor("additive", args.space, device=d).fit(
            list(data.archs), np.asarray(data.y))
    results = [run(db, args.space, t, priors, args.k, args.seeds) for t in devices]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args),
                                          "results": results}, indent=1))
    cmd = "python experiments/gpt_latency/fewshot.py " + " ".join(sys.argv[1:])
    md = [header(f"Few-shot latency on {args.space}: k measurements of a workload", cmd)]
    rows = []
    for r in results:
        for k, v in r["k"].items():
            cells = [f"{v[kind]['spearman']:.3f} / {100 * v[kind]['median_rel_error']:.1f}%"
                     if kind in v else "" for kind in KINDS]
            rows.append([r["target"], k, *cells,
                         ", ".join(f"{m} {c}" for m, c in v["transfer_models"].items())])
    md.append(table(["target (priors: the others)", "k", "transfer: Spearman / median error",
                     "flops on k", "additive on k", "transfer chose"], rows))
    text = "\n".join(md) + "\n"
    Path(args.out).with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
