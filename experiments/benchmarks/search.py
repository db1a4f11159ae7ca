"""Search benchmark: framework overhead, worker scaling, and samplers' hypervolume.

Parts (``--parts``, default all):

``overhead``  the framework's own cost per trial (driver + Ray + Optuna + storage) with a
              near zero-cost objective (MACs and a linear latency predictor on ``cifar_mbv3``):
              the time between the first and the last told trial over the trials in between,
              one worker, per sampler, batch size and storage (``--overhead-configs``). Of it,
              the sampler's own time (inside its methods: ``infer_relative_search_space``,
              ``sample_relative``, ``sample_independent``, ``before_trial``, ``after_trial``)
              and the evaluation's in the worker (the trials' ``eval_s``) are reported apart;
              framework = per trial - sampler - evaluation. Ray is started once beforehand,
              as ``nas search`` starts it.
``scaling``   an evaluation-bound search (inherited accuracy of ``cifar_mbv3`` subnets on
              CIFAR-10 validation images, one torch thread per worker) with 1 and 2 workers,
              the same trials (random sampler, same seed: checked): wall time including the
              actors' start-up, per trial from the first to the last told trial and in the
              steady state (from the 10% to the 90% told trial), the workers' busy share,
              the driver's CPU per trial, torch threads and peak memory of the driver and of
              each worker.
``hv``        hypervolume of the front found after each trial, per sampler and seed, at
              equal budget, against a reference front from scoring a large random sample with
              the same (cheap) objectives: ``--proxy`` must be cheap, e.g. a fitted accuracy
              predictor ``predictor:path=FILE``.

With ``--before PATH`` (an earlier checkout, e.g. ``git worktree add /tmp/before <commit>``),
``overhead`` and ``scaling`` run round by round in fresh processes (each with its own Ray),
this checkout and the one at PATH (importing its ``nas``) in turn, the order alternating, and
print the earlier figures and the before/now ratio beside these: a side-by-side comparison on
one machine at one time.

    python experiments/benchmarks/search.py --parts overhead,scaling
    python experiments/benchmarks/search.py --parts overhead --before /tmp/before \\
        --overhead-configs random:8:journal,tpe:8:journal,nsga2:8:journal,evolution:8:journal
    python experiments/benchmarks/search.py --parts hv \\
        --checkpoint runs/cifar10_supernet/supernet.safetensors \\
        --proxy predictor:path=runs/cifar10_supernet/analysis/accuracy_mlp.json

The machine is shared and noisy: compare ratios measured in one run; medians are quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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


#: the sampler methods Optuna calls: the time inside them is the sampler's own
_SAMPLER_METHODS = ("infer_relative_search_space", "sample_relative", "sample_independent",
                    "before_trial", "after_trial")
#: (start, end) of every outermost call of a study's sampler method in this process
_SAMPLER_SPANS: list[tuple[float, float]] = []


def _clock_samplers() -> None:
    """Make every study created from now on record its sampler's calls in _SAMPLER_SPANS.

    Through ``optuna.create_study`` rather than the search's own code, so that an earlier
    checkout (``--before``) is measured the same way. A sampler calling its own methods is
    counted once (outermost call only).
    """
    import optuna

    if getattr(optuna.create_study, "_clocked", False):
        return
    create = optuna.create_study

    def instrument(sampler: Any) -> None:
        depth = [0]

        def clocked(f: Any) -> Any:
            def timed(*a: Any, **kw: Any) -> Any:
                if depth[0]:
                    return f(*a, **kw)
                depth[0] += 1
                t = time.perf_counter()
                try:
                    return f(*a, **kw)
                finally:
                    depth[0] -= 1
                    _SAMPLER_SPANS.append((t, time.perf_counter()))
            return timed

        for name in _SAMPLER_METHODS:
            setattr(sampler, name, clocked(getattr(sampler, name)))

    def create_study(*a: Any, **kw: Any) -> Any:
        if kw.get("sampler") is not None:
            instrument(kw["sampler"])
        return create(*a, **kw)

    create_study._clocked = True  # type: ignore[attr-defined]
    optuna.create_study = create_study


def _cpu_s() -> float:
    """CPU seconds of this process so far (every thread, Ray's own included)."""
    t = os.times()
    return t.user + t.system


def _descendants_cpu_s() -> dict[int, float]:
    """CPU seconds so far of every process below this one (Ray's: its GCS, raylet, workers),
    by pid, from /proc (Linux; empty elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parent, cpu = {}, {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            raw = (entry / "stat").read_bytes()
        except OSError:
            continue
        f = raw[raw.rfind(b")") + 2:].split()
        parent[int(entry.name)] = int(f[1])
        cpu[int(entry.name)] = (int(f[11]) + int(f[12])) / tick
    below, todo = {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        for child, up in parent.items():
            if up == pid and child not in below:
                below[child] = cpu[child]
                todo.append(child)
    return below


def _timed_search(cfg: Any) -> dict[str, Any]:
    """Run the search; its timings: wall, first told trial, per trial between the first and
    the last told (``per_trial_s``), per trial between the 10% and the 90% told
    (``trimmed_s``: both ends, where workers start or idle, left out), and in the
    first-to-last window per trial the sampler's time, the driver process's CPU seconds
    (every thread of it, Ray's included), the evaluator actors' and Ray's other processes';
    what the trials record."""
    from nas.search import load_study, run_search

    stamps: list[float] = []
    cpus: list[float] = []

    procs: list[dict[int, float]] = []

    def on_trial(done: int, total: int) -> None:
        if not stamps:  # Ray's processes' CPU at the window's two ends, outside it
            procs.append(_descendants_cpu_s())
        stamps.append(time.perf_counter())
        cpus.append(_cpu_s())
        if done == total:
            procs.append(_descendants_cpu_s())

    del _SAMPLER_SPANS[:]
    t0 = time.perf_counter()
    res = run_search(cfg, progress=False, on_trial=on_trial)
    wall = time.perf_counter() - t0
    n = len(stamps)
    steady = (stamps[-1] - stamps[0]) / max(1, n - 1)
    k = max(1, n // 10)
    trimmed = (stamps[n - 1 - k] - stamps[k]) / max(1, n - 1 - 2 * k)
    sampler = sum(e - s for s, e in _SAMPLER_SPANS if s >= stamps[0] and e <= stamps[-1])
    study = load_study(cfg.study_name, cfg.storage_url)
    last_run = study.user_attrs.get("last_run", {})
    evaluators = {int(w["pid"]) for w in last_run.get("workers", [])}
    # per trial in the window: CPU of the evaluator actors, and of Ray's other processes
    used = {pid: procs[-1][pid] - procs[0].get(pid, 0.0) for pid in procs[-1]}
    workers_cpu = sum(v for pid, v in used.items() if pid in evaluators)
    ray_cpu = sum(v for pid, v in used.items() if pid not in evaluators)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    evals = [float(t.user_attrs.get("eval_s", 0.0)) for t in done
             if t.user_attrs.get("duplicate_of") is None]
    return {"wall_s": wall, "per_trial_s": steady, "trimmed_s": trimmed, "n": n,
            "first_s": stamps[0] - t0, "sampler_s": sampler / max(1, n - 1),
            "eval_s": sum(evals) / max(1, len(evals)),  # per subnet evaluated
            "eval_trial_s": sum(evals) / max(1, len(done)),  # per trial (repeats: none)
            "driver_cpu_s": (cpus[-1] - cpus[0]) / max(1, n - 1),
            "workers_cpu_s": workers_cpu / max(1, n - 1), "ray_cpu_s": ray_cpu / max(1, n - 1),
            "last_run": last_run,
            "archs": sorted(str(t.user_attrs.get("arch_hash")) for t in done), "result": res}


def _fresh_storage(work: Path, name: str, storage: str) -> str:
    """The storage URL of a new study ``name`` (a leftover of an earlier run removed)."""
    path = work / (f"{name}.journal" if storage == "journal" else f"{name}.sqlite")
    for p in (path, Path(f"{path}.lock"), Path(f"{path}.lease.lock")):
        p.unlink(missing_ok=True)
    return str(path) if storage == "journal" else f"sqlite:///{path}"


def _sides(args: argparse.Namespace) -> list[tuple[str, Path]]:
    return [("now", ROOT)] + ([("before", args.before.resolve())] if args.before else [])


def _run_rounds(part: str, args: argparse.Namespace, work: Path,
                measure: Any) -> dict[str, list[Any]]:
    """Per side (this checkout, and ``--before``'s), the raw results of each round.

    Without ``--before``: ``--repeats`` rounds here. With it: each round runs this checkout
    and the earlier one each in a fresh process with its own Ray, the order alternating from
    one round to the next, so both see the machine as it is at the time.
    """
    runs: dict[str, list[Any]] = {side: [] for side, _ in _sides(args)}
    if args.before is None:
        _init_ray()
        for r in range(args.repeats):
            runs["now"].append(measure(args, work / "now", r))
        return runs
    for r in range(args.repeats):
        order = _sides(args) if r % 2 == 0 else _sides(args)[::-1]
        for side, root in order:
            env = {**os.environ, "PYTHONPATH": str(root)}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part,
                   "--round", str(r), "--work", str((work / side).resolve()),
                   "--db", _absolute_url(args.db), "--data", _absolute(args.data),
                   "--overhead-trials", str(args.overhead_trials),
                   "--overhead-configs", args.overhead_configs,
                   "--scaling-trials", str(args.scaling_trials),
                   "--val-limit", str(args.val_limit)]
            if args.checkpoint is not None:
                cmd += ["--checkpoint", str(args.checkpoint.resolve())]
            res = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
            if res.returncode != 0:
                sys.exit(f"{side} ({root}) round {r} failed:\n{res.stderr[-3000:]}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            if not str(got["nas"]).startswith(str(root)):
                sys.exit(f"{side}: the child imported nas from {got['nas']}, not {root}")
            runs[side].append(got["results"])
            print(f"{part} round {r} {side}: done", flush=True)
    return runs


def _absolute(path: str) -> str:
    """A path as the children see it (they run in the checkout they import)."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _absolute_url(url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix):].startswith("/"):
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def _init_ray() -> None:
    """Ray on 2 CPUs, started as ``nas search`` starts it (loopback, no metrics, the workers
    at the driver's priority rather than Ray's niceness 15, which leaves them the CPU that
    any other process wants)."""
    from nas._ray import start_ray

    start_ray(num_cpus=2)


# ---------------------------------------------------------------------- overhead
def _overhead_configs(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    out = []
    for item in args.overhead_configs.split(","):
        sampler, batch, storage = item.split(":")
        out.append((sampler, int(batch), storage))
    return out


def measure_overhead(args: argparse.Namespace, work: Path, seed: int) -> dict[str, Any]:
    """One run of every overhead config at ``seed``: ms per trial, of it the sampler's, and
    the evaluation's in the worker."""
    from nas.search import RaySearchConfig

    _clock_samplers()
    work.mkdir(parents=True, exist_ok=True)
    _ensure_predictor(args.db, "cifar_mbv3", "cpu-1t")
    out = {}
    for sampler, batch, storage in _overhead_configs(args):
        name = f"ovh-{sampler}-{batch}-{storage}-{seed}"
        cfg = RaySearchConfig(space="cifar_mbv3", objectives=["macs", "latency:cpu-1t"],
                              db=args.db, sampler=sampler, n_trials=args.overhead_trials,
                              workers=1, batch_size=batch, seed=seed, study=name,
                              storage=_fresh_storage(work, name, storage), population=20)
        r = _timed_search(cfg)
        out[f"{sampler}:{batch}:{storage}"] = {
            "per_trial_ms": r["per_trial_s"] * 1e3, "sampler_ms": r["sampler_s"] * 1e3,
            "eval_ms": r["eval_trial_s"] * 1e3, "driver_cpu_ms": r["driver_cpu_s"] * 1e3,
            "ray_cpu_ms": (r["ray_cpu_s"] + r["workers_cpu_s"]) * 1e3,
            "archs": r["archs"]}
        print(f"overhead {sampler} batch {batch} {storage} seed {seed}: "
              f"{r['per_trial_s'] * 1e3:.2f} ms/trial, sampler {r['sampler_s'] * 1e3:.2f}",
              file=sys.stderr, flush=True)
    return out


def _framework_ms(x: dict[str, Any]) -> float:
    return x["per_trial_ms"] - x["sampler_ms"] - x["eval_ms"]


def part_overhead(args: argparse.Namespace, work: Path) -> str:
    runs = _run_rounds("overhead", args, work, measure_overhead)
    rows = []
    for sampler, batch, storage in _overhead_configs(args):
        key = f"{sampler}:{batch}:{storage}"
        now = [r[key] for r in runs["now"]]
        fw = [_framework_ms(x) for x in now]
        row: list[Any] = [sampler, batch, storage, args.overhead_trials,
                          f"{median([x['per_trial_ms'] for x in now]):.2f}",
                          f"{median([x['sampler_ms'] for x in now]):.2f}",
                          f"{median([x['eval_ms'] for x in now]):.2f}",
                          f"**{median(fw):.2f}**", f"{min(fw):.2f}-{max(fw):.2f}",
                          f"{median([x['driver_cpu_ms'] for x in now]):.2f}",
                          f"{median([x['ray_cpu_ms'] for x in now]):.2f}"]
        if "before" in runs:
            before = [r[key] for r in runs["before"]]
            bfw = median([_framework_ms(x) for x in before])
            same = all(a["archs"] == b["archs"] for a, b in zip(now, before, strict=True))
            row += [f"{median([x['per_trial_ms'] for x in before]):.2f}",
                    f"{median([x['sampler_ms'] for x in before]):.2f}", f"{bfw:.2f}",
                    f"{median([x.get('driver_cpu_ms', 0.0) for x in before]):.2f}",
                    f"{bfw / median(fw):.1f}x", "yes" if same else "**no**"]
        rows.append(row)
    cols = ["sampler", "batch", "storage", "trials", "ms per trial", "sampler ms",
            "evaluation ms (worker)", "framework ms", "framework range", "driver CPU ms",
            "worker + Ray CPU ms"]
    if "before" in runs:
        cols += ["before: ms per trial", "before: sampler ms", "before: framework ms",
                 "before: driver CPU ms", "before / now (framework)", "same trials"]
    return (table(cols, rows)
            + f"\n\nmedians of {args.repeats} runs (seeds 0 to {args.repeats - 1}); ms per "
              "trial: between the first and the last told trial; sampler: inside the "
              "sampler's methods in that window; evaluation: the worker's time per subnet "
              "(MACs, the latency predictor); framework = per trial - sampler - evaluation; "
              "driver CPU: the driver process's CPU time per trial in the same window (every "
              "thread, the sampler's time included); worker + Ray CPU: that of the processes "
              "Ray started (the worker, raylet, GCS)")


# ---------------------------------------------------------------------- scaling
def _scaling_checkpoint(args: argparse.Namespace, work: Path) -> Path:
    import torch

    from nas.supernet import OFASupernet, save_supernet

    if args.checkpoint is not None:
        return Path(args.checkpoint)
    ckpt = work / "cifar_random.safetensors"  # timing does not depend on the weights
    if not ckpt.is_file():
        torch.manual_seed(0)
        net = OFASupernet("cifar_mbv3")
        net.calibrate_random()
        save_supernet(net, ckpt, meta={"data": {"source": args.data, "val_size": 5000}})
    return ckpt


def measure_scaling(args: argparse.Namespace, work: Path, seed: int) -> dict[str, Any]:
    """One evaluation-bound search with 1 worker and one with 2, the same trials (random
    sampler, ``seed``)."""
    from nas.search import RaySearchConfig

    work.mkdir(parents=True, exist_ok=True)
    ckpt = _scaling_checkpoint(args, work)
    _ensure_predictor(args.db, "cifar_mbv3", "cpu-1t")
    out = {}
    for workers in (1, 2):
        name = f"scale-w{workers}-{seed}"
        cfg = RaySearchConfig(
            space="cifar_mbv3", checkpoint=str(ckpt), data=args.data, proxy="inherited",
            proxy_options={"val_limit": args.val_limit, "bn_batches": 2,
                           "bn_batch_size": 64, "cache": False},  # evaluate every time
            objectives=["accuracy", "latency:cpu-1t"], db=args.db, sampler="random",
            n_trials=args.scaling_trials, workers=workers, batch_size=1, seed=seed,
            study=name, storage=_fresh_storage(work, name, "journal"))
        r = _timed_search(cfg)
        r.pop("result")
        out[str(workers)] = r
        print(f"scaling {workers} worker(s) seed {seed}: wall {r['wall_s']:.1f} s, "
              f"{r['trimmed_s']:.3f} s/trial", file=sys.stderr, flush=True)
    return out


def part_scaling(args: argparse.Namespace, work: Path) -> str:
    runs = _run_rounds("scaling", args, work, measure_scaling)
    out = []
    for side, rounds in runs.items():
        rows = []
        for w in ("1", "2"):
            rs = [r[w] for r in rounds]
            mem = rs[-1]["last_run"]
            workers = mem.get("workers", [])
            # of the steady state, the share the workers spend evaluating (1: never idle)
            busy = [r["eval_s"] / (int(w) * r["trimmed_s"]) for r in rs]
            rows.append([w, args.scaling_trials, f"{median([r['wall_s'] for r in rs]):.1f}",
                         f"{median([r['first_s'] for r in rs]):.1f}",
                         f"{median([r['per_trial_s'] for r in rs]):.3f}",
                         f"{median([r['trimmed_s'] for r in rs]):.3f}",
                         f"{median([r['eval_s'] for r in rs]):.3f}",
                         f"{median(busy):.2f}",
                         f"{median([r['driver_cpu_s'] * 1e3 for r in rs]):.1f}",
                         f"{median([r['ray_cpu_s'] * 1e3 for r in rs]):.1f}",
                         f"{median([r['workers_cpu_s'] / r['eval_s'] for r in rs]):.2f}",
                         ", ".join(str(x.get("torch_threads", "?")) for x in workers),
                         f"{mem.get('driver_peak_rss_mb', 0):.0f}",
                         ", ".join(f"{x['peak_rss_mb']:.0f}" for x in workers)])
        same = all(r["1"]["archs"] == r["2"]["archs"] for r in rounds)
        ratio = {key: median([r["1"][key] / r["2"][key] for r in rounds])
                 for key in ("wall_s", "per_trial_s", "trimmed_s")}
        slower = median([r["2"]["eval_s"] / r["1"]["eval_s"] for r in rounds])
        out.append(
            (f"{side} ({'this checkout' if side == 'now' else args.before}):\n\n"
             if len(runs) > 1 else "")
            + table(["workers", "trials", "wall s (incl. start-up)", "first trial s",
                     "s per trial (first to last)", "s per trial (10% to 90%)",
                     "evaluation s per subnet (in the worker)", "workers busy (steady)",
                     "driver CPU ms per trial", "Ray's other processes CPU ms per trial",
                     "workers' CPU s per evaluation s", "torch threads per worker",
                     "driver peak MiB", "worker peak MiB"], rows)
            + f"\n\nspeed-up 2 vs 1 workers (median of {len(rounds)} rounds): "
              f"{ratio['wall_s']:.2f}x wall, {ratio['per_trial_s']:.2f}x first to last, "
              f"{ratio['trimmed_s']:.2f}x steady (10% to 90%); same trials in both: "
              f"{'yes' if same else 'no'}; a subnet's evaluation takes {slower:.2f}x as "
              "long with 2 workers as with 1 (steady speed-up = 2 x busy(2) / busy(1) / "
              "that)")
    return "\n\n".join(out)


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
    p.add_argument("--repeats", type=int, default=3,
                   help="runs (seeds 0, 1, ...); with --before, rounds of both checkouts")
    p.add_argument("--before", type=Path, default=None,
                   help="an earlier checkout (git worktree add /tmp/before <commit>) to run "
                        "the overhead and scaling parts beside, round by round")
    p.add_argument("--overhead-trials", type=int, default=200)
    p.add_argument("--overhead-configs", default=",".join(
        f"{s}:{b}:{st}" for s in ("random", "tpe", "nsga2", "evolution") for b in (1, 8)
        for st in ("journal", "sqlite")), help="sampler:batch:storage, comma-separated")
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
    p.add_argument("--child", choices=["overhead", "scaling"], help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # one round of one part, for _run_rounds: JSON on the last line
        import nas

        _init_ray()
        measure = {"overhead": measure_overhead, "scaling": measure_scaling}[args.child]
        results = measure(args, args.work, args.round)
        from nas._ray import stop_ray

        stop_ray()
        print(json.dumps({"nas": nas.__file__, "results": results}))
        return
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)

    cmd = "python experiments/benchmarks/search.py " + " ".join(sys.argv[1:])
    out = [header("Search: overhead, scaling, hypervolume", cmd)]
    for part in args.parts.split(","):
        if part == "hv":
            _init_ray()
        fn = {"overhead": part_overhead, "scaling": part_scaling, "hv": part_hv}[part]
        out.append(f"### {part}\n\n" + fn(args, args.work))
        print("\n\n".join(out), flush=True)
    from nas._ray import stop_ray

    stop_ray()
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
