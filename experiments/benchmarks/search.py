"""Search benchmark: framework overhead, worker scaling, and samplers' hypervolume.

Parts (``--parts``, default all):

``overhead``  the framework's own cost per trial (driver + Ray + Optuna + storage) with a
              zero-cost objective (MACs and a linear latency predictor on ``cifar_mbv3``): the time
              between the first and the last told trial over the trials in between, one
              worker, per sampler, batch size and storage. Ray is started once beforehand.
``scaling``   an evaluation-bound search (inherited accuracy of ``cifar_mbv3`` subnets on
              CIFAR-10 validation images, one torch thread per worker) with 1 and 2 workers:
              wall time including the actors' start-up, and steady state (first to last
              trial); peak memory of the driver and of each worker.
``hv``        hypervolume of the front found after each trial, per sampler and seed, at
              equal budget, against a reference front from scoring a large random sample with
              the same (cheap) objectives: ``--proxy`` must be cheap, e.g. a fitted accuracy
              predictor ``predictor:path=FILE``.

    python experiments/benchmarks/search.py --parts overhead,scaling
    python experiments/benchmarks/search.py --parts hv \\
        --checkpoint runs/cifar10_supernet/supernet.safetensors \\
        --proxy predictor:path=runs/cifar10_supernet/analysis/accuracy_mlp.json

The machine is shared and noisy: compare ratios measured in one run; medians are quoted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, median, table

ROOT = Path(__file__).resolve().parents[2]


def _ensure_predictor(db_url: str, space: str, device: str, n: int = 24) -> None:
    """A fitted latency predictor for (device, space) in ``db_url``; measures if needed."""
    from nas.db import LatencyDB
    from nas.latency import fit_predictor
    from nas.measure import TimingConfig, measure_architectures, sample_for_measurement

    db = LatencyDB(db_url)
    if db.load_predictor(device, space, "additive") is not None:
        return
    if len(db.measurements(device, space)) < n:
        measure_architectures(device, space, sample_for_measurement(space, n, seed=0), db,
                              progress=False, config=TimingConfig.quick())
    fit_predictor(device, space, "additive", db=db, holdout=0.2)


def _timed_search(cfg: Any) -> dict[str, Any]:
    from nas.search import run_search

    stamps: list[float] = []
    t0 = time.perf_counter()
    res = run_search(cfg, progress=False, on_trial=lambda done, total: stamps.append(
        time.perf_counter()))
    wall = time.perf_counter() - t0
    steady = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    from nas.search import load_study

    last = load_study(cfg.study_name, cfg.storage_url).user_attrs.get("last_run", {})
    return {"wall_s": wall, "per_trial_s": steady, "n": len(res.budget_trials),
            "first_s": stamps[0] - t0, "last_run": last, "result": res}


# ---------------------------------------------------------------------- overhead
def part_overhead(args: argparse.Namespace, work: Path) -> str:
    from nas.search import RaySearchConfig

    db = args.db
    _ensure_predictor(db, "cifar_mbv3", "cpu-1t")
    rows = []
    configs = [(s, b, st) for s in ("random", "tpe", "nsga2", "evolution")
               for b in (1, 8) for st in ("journal", "sqlite")]
    for sampler, batch, storage in configs:
        per = []
        for rep in range(args.repeats):
            name = f"ovh-{sampler}-{batch}-{storage}-{rep}"
            url = (str(work / f"{name}.journal") if storage == "journal"
                   else f"sqlite:///{work / name}.sqlite")
            cfg = RaySearchConfig(space="cifar_mbv3", objectives=["macs", "latency:cpu-1t"], db=db,
                               sampler=sampler, n_trials=args.overhead_trials, workers=1,
                               batch_size=batch, seed=rep, study=name, storage=url,
                               population=20)
            per.append(_timed_search(cfg)["per_trial_s"] * 1000)
        rows.append([sampler, batch, storage, args.overhead_trials, f"{median(per):.2f}",
                     f"{min(per):.2f}-{max(per):.2f}"])
        print(f"overhead {sampler} batch {batch} {storage}: {median(per):.2f} ms/trial",
              flush=True)
    return table(["sampler", "batch", "storage", "trials", "ms per trial (median)", "range"],
                 rows)


# ---------------------------------------------------------------------- scaling
def part_scaling(args: argparse.Namespace, work: Path) -> str:
    import torch

    from nas.search import RaySearchConfig
    from nas.supernet import OFASupernet, save_supernet

    ckpt = args.checkpoint
    if ckpt is None:  # timing does not depend on the weights
        ckpt = work / "cifar_random.safetensors"
        if not ckpt.is_file():
            torch.manual_seed(0)
            net = OFASupernet("cifar_mbv3")
            net.calibrate_random()
            save_supernet(net, ckpt, meta={"data": {"source": args.data, "val_size": 5000}})
    _ensure_predictor(args.db, "cifar_mbv3", "cpu-1t")
    rows, walls = [], {}
    for workers in (1, 2):
        runs = []
        for rep in range(args.repeats):
            name = f"scale-w{workers}-{rep}-{int(time.time())}"
            cfg = RaySearchConfig(
                space="cifar_mbv3", checkpoint=str(ckpt), data=args.data, proxy="inherited",
                proxy_options={"val_limit": args.val_limit, "bn_batches": 2,
                               "bn_batch_size": 64, "cache": False},  # evaluate every time
                objectives=["accuracy", "latency:cpu-1t"], db=args.db, sampler="random",
                n_trials=args.scaling_trials, workers=workers, batch_size=1, seed=rep,
                study=name, storage=str(work / f"{name}.journal"))
            runs.append(_timed_search(cfg))
        walls[workers] = runs
        w = [r["wall_s"] for r in runs]
        s = [r["per_trial_s"] for r in runs]
        mem = runs[-1]["last_run"]
        rows.append([workers, args.scaling_trials, f"{median(w):.1f}",
                     f"{median([r['first_s'] for r in runs]):.1f}", f"{median(s):.2f}",
                     f"{mem.get('driver_peak_rss_mb', 0):.0f}",
                     ", ".join(f"{x['peak_rss_mb']:.0f}" for x in mem.get("workers", []))])
        print(f"scaling {workers} worker(s): wall {median(w):.1f} s, {median(s):.2f} s/trial",
              flush=True)
    speed_wall = median([r["wall_s"] for r in walls[1]]) / median(
        [r["wall_s"] for r in walls[2]])
    speed_steady = median([r["per_trial_s"] for r in walls[1]]) / median(
        [r["per_trial_s"] for r in walls[2]])
    return (table(["workers", "trials", "wall s (incl. start-up)", "first trial s",
                   "s per trial (steady)", "driver peak MiB", "worker peak MiB"], rows)
            + f"\n\nspeed-up 2 vs 1 workers: {speed_wall:.2f}x wall, {speed_steady:.2f}x "
              "steady state")


# ---------------------------------------------------------------------- hypervolume
def part_hv(args: argparse.Namespace, work: Path) -> str:
    from nas.search import (
        Evaluator,
        RaySearchConfig,
        hypervolume,
        load_latency_predictors,
        pareto_mask,
    )
    from nas.space import get_space

    base = dict(space=args.hv_space,
                checkpoint=str(args.checkpoint) if args.checkpoint else None,
                data=args.data, proxy=args.proxy, objectives=["accuracy", "latency:cpu-1t"],
                db=args.db, n_trials=args.hv_trials, workers=1, batch_size=4,
                population=args.population)
    cfg0 = RaySearchConfig(**base, study="hv-ref", storage=str(work / "hv-ref.journal"))
    preds, _ = load_latency_predictors(cfg0)
    ev = Evaluator(cfg0.model_dump(), preds)
    sp = get_space(args.hv_space)
    t0 = time.perf_counter()
    sample = sp.sample_many(min(args.reference_size, sp.size(True)), seed=12345)
    scored = []
    for i in range(0, len(sample), 1000):
        scored += ev.evaluate([a.to_dict() for a in sample[i:i + 1000]])
    ref_vals = np.array([[-r["accuracy"], r["latency_ms"]["cpu-1t"]] for r in scored])
    ref_point = ref_vals.max(axis=0)
    ref_front = ref_vals[pareto_mask(ref_vals)]
    ref_hv = hypervolume(ref_front, ref_point)
    print(f"reference: {len(sample)} random subnets scored in {time.perf_counter() - t0:.0f} s, "
          f"front of {len(ref_front)}, HV {ref_hv:.5g}", flush=True)
    rows, curves = [], {}
    checkpoints = sorted({max(1, args.hv_trials // 4), args.hv_trials // 2, args.hv_trials})
    for sampler in args.samplers.split(","):
        finals, at = [], {c: [] for c in checkpoints}
        for seed in range(args.seeds):
            name = f"hv-{sampler}-{seed}-{int(time.time())}"
            cfg = RaySearchConfig(**base, sampler=sampler, seed=seed, study=name,
                               storage=str(work / f"{name}.journal"))
            res = _timed_search(cfg)["result"]
            curve = dict(res.hypervolume_curve(reference=ref_point, points=args.hv_trials))
            curves[f"{sampler}/{seed}"] = curve
            for c in checkpoints:
                at[c].append(curve[max(k for k in curve if k <= c)] / ref_hv)
            finals.append(at[args.hv_trials][-1])
            print(f"hv {sampler} seed {seed}: {finals[-1]:.3f} of the reference", flush=True)
        rows.append([sampler, args.seeds, *(f"{median(at[c]):.3f}" for c in checkpoints),
                     f"{min(finals):.3f}-{max(finals):.3f}"])
    (work / "hv_curves.json").write_text(json.dumps(curves))
    return (table(["sampler", "seeds", *(f"HV/ref @{c}" for c in checkpoints),
                   "range @budget"], rows)
            + f"\n\nreference front: {len(ref_front)} subnets, from {len(sample)} random "
              f"subnets scored with the same objectives ({args.proxy}, cpu-1t predictor)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="overhead,scaling,hv")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_search")
    p.add_argument("--db", default=f"sqlite:///{ROOT / 'experiments/latency/measurements.sqlite'}",
                   help="latency DB with cifar_mbv3 cpu-1t measurements")
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/cifar10-jpeg.tar.gz"))
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--proxy", default="inherited")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--overhead-trials", type=int, default=200)
    p.add_argument("--scaling-trials", type=int, default=24)
    p.add_argument("--val-limit", type=int, default=500)
    p.add_argument("--hv-trials", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    # gp is left out by default: on cifar_mbv3's 46 parameters Optuna's GPSampler took about a
    # minute per trial here once past its 10 random start-up trials (fine on tiny's 11)
    p.add_argument("--samplers", default="random,tpe,nsga2,evolution")
    p.add_argument("--hv-space", default="cifar_mbv3", help="space of the hv part")
    p.add_argument("--population", type=int, default=30)
    p.add_argument("--reference-size", type=int, default=100_000)
    p.add_argument("--fresh", action="store_true", help="delete --work first")
    args = p.parse_args()
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    cmd = "python experiments/benchmarks/search.py " + " ".join(sys.argv[1:])
    out = [header("Search: overhead, scaling, hypervolume", cmd)]
    for part in args.parts.split(","):
        fn = {"overhead": part_overhead, "scaling": part_scaling, "hv": part_hv}[part]
        out.append(f"### {part}\n\n" + fn(args, args.work))
        print("\n\n".join(out), flush=True)
    ray.shutdown()
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
