"""Analyse a trained CIFAR-10 supernet: accuracies, proxy rank correlations, predictors.

From the run folder written by ``nas train`` (``supernet.safetensors``, ``config.yaml``):

1. test accuracy (after BatchNorm recalibration) of the largest, the smallest and a few middle
   subnets, with their validation accuracy;
2. for ``--n-subnets`` random subnets, Kendall's tau and Spearman's rho of every proxy against
   their inherited validation accuracy, with bootstrap 95% intervals, and tau within MAC
   quartiles (does a proxy rank beyond model size?);
3. accuracy predictors (OFA's MLP, GBDT, GBDT + zero-cost features) fitted on 50, 100, 200
   pairs from a separate pool of random subnets: RMSE and tau on the same held-out subnets.

Writes ``<run>/analysis/results.json`` and ``report.md``. Scores are cached next to the
checkpoint (``supernet.safetensors.proxies.sqlite``), so an interrupted analysis resumes.

Usage (from the repository root):
    python experiments/cifar10_supernet/analyze.py --run runs/cifar10_supernet
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PROXIES = ["params", "macs", "synflow", "naswot", "zico", "synflow:weights=inherited",
           "naswot:weights=inherited", "zico:weights=inherited"]
ZERO_COST_FEATURES = ["synflow", "naswot", "zico"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="run folder of `nas train`")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="supernet to analyse (default RUN/supernet.safetensors)")
    p.add_argument("--n-subnets", type=int, default=100,
                   help="random subnets for the rank correlations (held out from predictors)")
    p.add_argument("--train-sizes", default="50,100,200",
                   help="training-pair counts for the accuracy predictors")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--val-limit", type=int, default=None,
                   help="score inherited accuracy on at most this many validation images")
    p.add_argument("--bn-batches", type=int, default=8, help="BatchNorm recalibration batches")
    p.add_argument("--seed", type=int, default=2024, help="seed of the sampled subnets")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="default RUN/analysis")
    return p.parse_args(argv)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from nas.errors import NASError
    from nas.proxies import (
        ProxyCache,
        ProxyContext,
        accuracy_features,
        bootstrap_ci,
        default_cache_path,
        get_proxy,
        kendall_tau,
        make_accuracy_predictor,
        save_accuracy_predictor,
        spearman_rho,
        tau_by_bins,
    )
    from nas.supernet import load_supernet
    from nas.train import evaluate_subnet, load_config, load_data, middle_arch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ckpt = args.checkpoint or args.run / "supernet.safetensors"
        cfg = load_config(args.run / "config.yaml")
        out = args.out or args.run / "analysis"
        out.mkdir(parents=True, exist_ok=True)
        t_start = time.perf_counter()
        data = load_data(cfg)
        net = load_supernet(ckpt, space=cfg.space, map_location=args.device)
        sp = net.space
        ctx = ProxyContext(space=sp, supernet=net, checkpoint=ckpt, data=data,
                           cache=ProxyCache(default_cache_path(ckpt)), device=args.device,
                           seed=0, val_limit=args.val_limit, bn_batches=args.bn_batches,
                           bn_batch_size=cfg.batch_size, channels_last=cfg.channels_last)
        say(f"{ckpt}: {sp.name}; {data.describe()}")
        results: dict[str, Any] = {"checkpoint": str(ckpt), "space": sp.name,
                                   "data": data.describe(), "settings": vars(args) | {
                                       "run": str(args.run), "out": str(out),
                                       "checkpoint": str(ckpt)}}

        # 1. test accuracy of reference subnets --------------------------------------
        n_sub, sizes = args.n_subnets, [int(s) for s in args.train_sizes.split(",")]
        pool_n = max(sizes)
        archs = sp.sample_many(n_sub + pool_n, seed=args.seed)
        held, pool = archs[:n_sub], archs[n_sub:]
        macs_held = sp.costs(held)["macs"]
        near_median = [held[i] for i in np.argsort(np.abs(macs_held - np.median(macs_held)))[:2]]
        mid = middle_arch(sp)
        refs = {"largest": sp.largest(), "smallest": sp.smallest(), "middle": mid,
                f"middle@{max(sp.resolutions)}": sp.parse({**mid.to_dict(),
                                                           "r": max(sp.resolutions)}),
                "median-macs-1": near_median[0], "median-macs-2": near_median[1]}
        table = []
        for name, arch in refs.items():
            kw = dict(bn_batches=args.bn_batches, bn_batch_size=cfg.batch_size, seed=0,
                      channels_last=cfg.channels_last)
            val = evaluate_subnet(net, arch, data, split="val", **kw)["acc"]
            test = (evaluate_subnet(net, arch, data, split="test", **kw)["acc"]
                    if data.test is not None else float("nan"))
            c = sp.costs([arch])
            table.append({"subnet": name, "hash": arch.hash, "r": arch.r, "arch": arch.to_dict(),
                          "macs": int(c["macs"][0]), "params": int(c["params"][0]),
                          "val_acc": val, "test_acc": test})
            say(f"{name:14s} r={arch.r} {c['macs'][0] / 1e6:6.1f}M MACs  val {val:.4f}  "
                f"test {test:.4f}")
        results["reference_subnets"] = table

        # 2. proxies against inherited accuracy ---------------------------------------
        t0 = time.perf_counter()
        acc_held = get_proxy("inherited").score(held, ctx)
        say(f"inherited accuracy of {n_sub} held-out subnets: {acc_held.mean():.4f} +- "
            f"{acc_held.std():.4f} ({time.perf_counter() - t0:.0f}s)")
        scores: dict[str, np.ndarray] = {}
        for spec in PROXIES:
            t0 = time.perf_counter()
            scores[spec] = get_proxy(spec).score(held, ctx)
            say(f"proxy {spec}: {time.perf_counter() - t0:.0f}s")
        t0 = time.perf_counter()
        acc_pool = get_proxy("inherited").score(pool, ctx)
        say(f"inherited accuracy of the {pool_n}-subnet predictor pool "
            f"({time.perf_counter() - t0:.0f}s)")
        zc_pool = {z: get_proxy(z).score(pool, ctx) for z in ZERO_COST_FEATURES}

        # 3. predictors ---------------------------------------------------------------
        pred_rows = []
        for n in sizes:
            for model, kind, extra in (("mlp", "onehot", False), ("gbdt", "ordinal", False),
                                       ("gbdt", "ordinal", True)):
                feats = f"{kind}+zero-cost" if extra else kind
                Xtr = accuracy_features(sp, pool[:n], kind=kind, extra={
                    z: zc_pool[z][:n] for z in ZERO_COST_FEATURES} if extra else None)
                Xte = accuracy_features(sp, held, kind=kind, extra={
                    z: scores[z] for z in ZERO_COST_FEATURES} if extra else None)
                est = make_accuracy_predictor(model, encoding=kind).fit(Xtr, acc_pool[:n])
                pred = est.predict(Xte)
                name = f"predictor[{model},{feats},n={n}]"
                scores[name] = pred
                pred_rows.append({"model": model, "features": feats, "n_train": n,
                                  "rmse_points": float(np.sqrt(np.mean((pred - acc_held) ** 2))
                                                       * 100),
                                  "kendall_tau": kendall_tau(acc_held, pred),
                                  "kendall_tau_ci95": bootstrap_ci(acc_held, pred, kendall_tau,
                                                                   args.bootstrap)})
                r = pred_rows[-1]
                say(f"{name}: RMSE {r['rmse_points']:.2f} points, tau {r['kendall_tau']:.3f}")
                if model == "mlp" and n == max(sizes):
                    # the accuracy objective of searches and of the search benchmark:
                    # --proxy predictor:path=<run>/analysis/accuracy_mlp.json
                    est.space = sp.name
                    save_accuracy_predictor(est, out / "accuracy_mlp.json", space=sp.name,
                                            checkpoint=str(ckpt), held_out=r)
        results["predictors"] = pred_rows

        rows = []
        for spec, s in scores.items():
            rows.append({
                "proxy": spec,
                "kendall_tau": kendall_tau(acc_held, s),
                "kendall_tau_ci95": bootstrap_ci(acc_held, s, kendall_tau, args.bootstrap),
                "spearman_rho": spearman_rho(acc_held, s),
                "spearman_rho_ci95": bootstrap_ci(acc_held, s, spearman_rho, args.bootstrap),
                "tau_by_macs_quartile": tau_by_bins(acc_held, s, macs_held, 4),
            })
        results["proxies"] = rows
        results["held_out"] = [{"hash": a.hash, "arch": a.to_dict(), "macs": int(m),
                                "inherited_val_acc": float(y),
                                **{k: float(v[i]) for k, v in scores.items()
                                   if not k.startswith("predictor[")}}
                               for i, (a, m, y) in enumerate(zip(held, macs_held, acc_held,
                                                                  strict=True))]
        results["seconds"] = round(time.perf_counter() - t_start, 1)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "report.md").write_text(report(results))
        print(report(results))
        say(f"wrote {out / 'results.json'} and {out / 'report.md'} "
            f"({results['seconds'] / 60:.1f} min)")
    except NASError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def report(r: dict[str, Any]) -> str:
    lines = [f"# Supernet analysis: {r['space']}", "", f"Checkpoint `{r['checkpoint']}`; "
             f"{r['data']} (CIFAR-10 JPEG copy when that is the source).", "",
             "## Reference subnets (BatchNorm recalibrated)", "",
             "| subnet | r | MACs (M) | params (M) | val acc | test acc |",
             "|---|---|---|---|---|---|"]
    for t in r["reference_subnets"]:
        lines.append(f"| {t['subnet']} | {t['r']} | {t['macs'] / 1e6:.1f} | "
                     f"{t['params'] / 1e6:.2f} | {t['val_acc'] * 100:.2f} | "
                     f"{t['test_acc'] * 100:.2f} |")
    n = r["settings"]["n_subnets"]
    lines += ["", f"## Proxies vs inherited validation accuracy ({n} random subnets)", "",
              "Higher score = predicted better for every proxy (signs fixed in advance). "
              "95% intervals: percentile bootstrap over subnets. Tau by MAC quartile: rank "
              "agreement among subnets of similar size.", "",
              "| proxy | Kendall tau [95% CI] | Spearman rho [95% CI] | tau by MAC quartile |",
              "|---|---|---|---|"]
    for p in r["proxies"]:
        tl, th = p["kendall_tau_ci95"]
        rl, rh = p["spearman_rho_ci95"]
        bins = " / ".join(f"{b['kendall_tau']:.2f}" for b in p["tau_by_macs_quartile"])
        lines.append(f"| {p['proxy']} | {p['kendall_tau']:.3f} [{tl:.3f}, {th:.3f}] | "
                     f"{p['spearman_rho']:.3f} [{rl:.3f}, {rh:.3f}] | {bins} |")
    lines += ["", "## Accuracy predictors (held-out subnets above)", "",
              "| model | features | training pairs | RMSE (points) | Kendall tau [95% CI] |",
              "|---|---|---|---|---|"]
    for p in r["predictors"]:
        lo, hi = p["kendall_tau_ci95"]
        lines.append(f"| {p['model']} | {p['features']} | {p['n_train']} | "
                     f"{p['rmse_points']:.2f} | {p['kendall_tau']:.3f} [{lo:.3f}, {hi:.3f}] |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
