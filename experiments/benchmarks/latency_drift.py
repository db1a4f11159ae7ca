"""Where latency noise comes from on this machine: slow drift of the machine's speed.

Two parts, each printing a table:

* ``--db FILE``: from a benchmark database (experiments/latency/measurements.sqlite), fit the
  ``additive`` predictor on all measurements of a (device, space) and show its residuals in
  measurement order: mean and median over windows of consecutive measurements, and their lag-1
  autocorrelation. Independent noise gives flat windows and autocorrelation near 0; a drifting
  machine does not.
* ``--reference``: time one subnet in several fresh ONNX Runtime sessions, interleaved run by
  run with a fixed reference subnet, and compare the spread of the raw medians with the spread
  of their ratios to the reference (what timing relative to a reference would store).
* ``--protocols``: subnets spread over the MAC range, each timed alone (the plain protocol,
  back to back with the reference alone) and relative to the reference in alternating blocks,
  with and without unrecorded runs at the start of each block: the relative protocol should
  reproduce the ratio of the solo timings at every size.
* ``--compare OLD NEW``: the same subnets measured in two databases (e.g. absolute timing in
  OLD, relative timing in NEW): per subnet NEW/OLD, its median and spread, and whether it
  trends with the subnet's size (Kendall tau against MACs; a protocol that favoured small or
  large subnets would show here).

Run: .venv/bin/python experiments/benchmarks/latency_drift.py \
         --db experiments/latency/measurements.sqlite
     .venv/bin/python experiments/benchmarks/latency_drift.py --reference [--sessions 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, table


def drift_from_db(db_path: str, device: str, space: str, window: int) -> None:
    from nas.db import LatencyDB
    from nas.latency import make_predictor

    db = LatencyDB(db_path)
    recs = db.measurements(device, space, status="ok", source="measured")
    archs = [r.arch for r in recs]
    y = np.asarray([r.latency_ms for r in recs], dtype=float)
    pred = make_predictor("additive", space).fit(archs, y).predict(archs)
    res = y / pred - 1
    rows = [[f"{i}..{min(i + window, len(res)) - 1}", f"{100 * res[i:i + window].mean():+.2f}%",
             f"{100 * np.median(res[i:i + window]):+.2f}%",
             f"{100 * res[i:i + window].std():.2f}%"] for i in range(0, len(res), window)]
    print(header(f"Residual drift, {space} on {device} ({len(res)} measurements)",
                 f"python experiments/benchmarks/latency_drift.py --db {db_path}"))
    print(table(["measurements (in order)", "mean residual", "median", "std"], rows))
    lag1 = float(np.corrcoef(res[1:], res[:-1])[0, 1])
    print(f"\nlag-1 autocorrelation of the residuals: {lag1:.2f}")


def reference_test(sessions: int, runs: int) -> None:
    import onnxruntime as ort
    import torch

    from nas.export import onnx_bytes
    from nas.supernet import OFASupernet

    torch.set_num_threads(1)
    net = OFASupernet("ofa_mbv3").eval()
    target, ref = net.space.sample(5), net.space.sample(9)
    data = {k: onnx_bytes(net.extract(a), a.r) for k, a in (("t", target), ("r", ref))}
    xs = {k: np.random.default_rng(0).standard_normal((1, 3, a.r, a.r)).astype(np.float32)
          for k, a in (("t", target), ("r", ref))}

    def session(blob: bytes) -> ort.InferenceSession:
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        o.add_session_config_entry("session.intra_op.allow_spinning", "1")
        return ort.InferenceSession(blob, o, providers=["CPUExecutionProvider"])

    raw, ratio = [], []
    for _ in range(sessions):
        s = {k: session(v) for k, v in data.items()}
        times: dict[str, list[int]] = {"t": [], "r": []}
        for i in range(runs + 10):
            for k in ("t", "r"):
                t0 = time.perf_counter_ns()
                s[k].run(None, {"input": xs[k]})
                if i >= 10:
                    times[k].append(time.perf_counter_ns() - t0)
        mt, mr = float(np.median(times["t"])), float(np.median(times["r"]))
        raw.append(mt / 1e6)
        ratio.append(mt / mr)
    rows = []
    for name, vals in (("raw median (ms)", np.asarray(raw)), ("ratio to reference",
                                                              np.asarray(ratio))):
        pair = np.abs(np.diff(vals)) / vals[:-1]
        spread = (vals.max() - vals.min()) / vals.mean()
        rows.append([name, f"{vals.mean():.3f}", f"{100 * spread:.1f}%",
                     f"{100 * np.median(pair):.2f}%"])
    print(header("Timing relative to an interleaved reference (ofa_mbv3, 1 thread)",
                 "python experiments/benchmarks/latency_drift.py --reference"))
    print(table(["quantity", "mean", "spread (max-min)/mean", "median change between sessions"],
                rows))
    print(f"\n{sessions} fresh sessions, {runs} timed runs each, target and reference "
          "alternating run by run.")


def protocols_test(n: int, sessions: int) -> None:
    import torch

    from nas.devices import get_device
    from nas.export import onnx_bytes
    from nas.measure import Reference, TimingConfig, sample_for_measurement, time_onnx
    from nas.supernet import OFASupernet

    torch.set_num_threads(1)
    net = OFASupernet("ofa_mbv3").eval()
    sp = net.space
    pool = sample_for_measurement(sp, 200, seed=7, uniform_share=0.0)
    macs = sp.costs(pool)["macs"]
    pick = [pool[i] for i in np.argsort(macs)[np.linspace(0, len(pool) - 1, n).astype(int)]]
    ref_arch = sp.middle()
    models = {a: onnx_bytes(net.extract(a), a.r) for a in [*pick, ref_arch]}
    prof = get_device("cpu-1t")
    solo = TimingConfig(reference=False)
    variants = {"blocks of 10": TimingConfig().replace(block_warmup=0),
                "blocks of 10, 2 unrecorded": TimingConfig().replace(block_warmup=2)}
    rows = []
    for a in pick:
        ratios: dict[str, list[float]] = {"solo": [], **{k: [] for k in variants}}
        for _ in range(sessions):
            t = time_onnx(models[a], prof, a.r, solo).median_ms
            r = time_onnx(models[ref_arch], prof, ref_arch.r, solo).median_ms
            ratios["solo"].append(t / r)
            ref = Reference(models[ref_arch], ref_arch.r, 1.0)
            for k, cfg in variants.items():
                ratios[k].append(time_onnx(models[a], prof, a.r, cfg, reference=ref).median_ms)
        s0 = float(np.median(ratios["solo"]))
        rows.append([f"{sp.macs(a) / 1e6:.0f}", f"{s0:.3f}",
                     *(f"{np.median(ratios[k]) / s0:.3f}" for k in variants)])
        print(rows[-1], flush=True)
    print(header("Relative timing against solo timing (ofa_mbv3, cpu-1t)",
                 "python experiments/benchmarks/latency_drift.py --protocols"))
    print(table(["MACs (M)", "solo ratio to reference",
                 *(f"{k} / solo" for k in variants)], rows))
    print(f"\nmedians of {sessions} sessions; 1.000 = the relative protocol reproduces the "
          "solo ratio")


NOISE_VARIANTS = {
    "p2": {"block_warmup": 0},  # blocks of 10 runs
    "p3": {"block_warmup": 2},  # the first 2 runs of each block unrecorded
    "p3-warm1": {"block_warmup": 1},
    "p3-6s": {"block_warmup": 2, "max_s": 6.0},  # twice the time cap
    "p3-2sess": {"block_warmup": 2, "sessions": 2},  # mean of two fresh session pairs
    "p3-2sess-1.5s": {"block_warmup": 2, "sessions": 2, "max_s": 1.5},  # same time as p3
}


def noise_test(n: int, variants: list[str]) -> None:
    """Noise floor of several protocol variants, side by side: every subnet measured twice
    per variant in fresh sessions, the two passes over all subnets apart in time (as the
    benchmark's repeats are), the variants' order rotated subnet by subnet."""
    import torch

    from nas.devices import get_device
    from nas.export import onnx_bytes
    from nas.measure import Reference, TimingConfig, sample_for_measurement, time_onnx
    from nas.supernet import OFASupernet

    torch.set_num_threads(1)
    net = OFASupernet("ofa_mbv3").eval()
    sp = net.space
    pick = sample_for_measurement(sp, n, seed=11)
    ref_arch = sp.middle()
    models = {a: onnx_bytes(net.extract(a), a.r) for a in [*pick, ref_arch]}
    prof = get_device("cpu-1t")
    ref = Reference(models[ref_arch], ref_arch.r, 1.0)
    cfgs = {k: TimingConfig().replace(**NOISE_VARIANTS[k]) for k in variants}
    got: dict[str, list[list[float]]] = {k: [[], []] for k in variants}
    secs: dict[str, float] = dict.fromkeys(variants, 0.0)
    t_start = time.perf_counter()
    for rep in range(2):
        for i, a in enumerate(pick):
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for k in order:
                res = time_onnx(models[a], prof, a.r, cfgs[k], reference=ref)
                got[k][rep].append(res.median_ms)
                secs[k] += res.seconds
            print(f"pass {rep + 1} subnet {i + 1}/{n}  {time.perf_counter() - t_start:.0f} s",
                  flush=True)
    rows = []
    for k in variants:
        a, b = np.asarray(got[k][0]), np.asarray(got[k][1])
        d = np.abs(a - b) / ((a + b) / 2)
        rows.append([k, f"{100 * np.median(d):.2f}%", f"{100 * np.percentile(d, 90):.2f}%",
                     f"{100 * np.mean(d <= 0.05):.1f}%", f"{secs[k] / (2 * n):.2f}"])
    print(header(f"Noise floor of protocol variants, side by side (ofa_mbv3, cpu-1t, {n} subnets)",
                 f"python experiments/benchmarks/latency_drift.py --noise --n {n} "
                 f"--variants {','.join(variants)}"))
    print(table(["variant", "median of abs(a-b)/mean", "p90", "pairs within 5%",
                 "s per measurement"], rows))


def compare_dbs(old_path: str, new_path: str, device: str, space: str) -> None:
    from scipy.stats import kendalltau

    from nas.db import LatencyDB
    from nas.space import get_space

    def first(path: str) -> dict:
        out: dict = {}
        for r in LatencyDB(path).measurements(device, space, status="ok", source="measured"):
            out.setdefault(r.arch, float(r.latency_ms))
        return out

    old, new = first(old_path), first(new_path)
    common = [a for a in new if a in old]
    if not common:
        print(f"no subnet of {space} on {device} is in both databases")
        return
    ratio = np.asarray([new[a] / old[a] for a in common])
    macs = get_space(space).costs(common)["macs"]
    q = np.percentile(ratio, [10, 50, 90])
    by_size = [float(np.median(ratio[idx])) for idx in np.array_split(np.argsort(macs), 4)]
    print(header(f"Same subnets, two databases ({space} on {device})",
                 f"python experiments/benchmarks/latency_drift.py --compare {old_path} "
                 f"{new_path}"))
    print(table(["subnets", "NEW/OLD p10", "median", "p90", "median by MAC quartile",
                 "Kendall tau (NEW/OLD vs MACs)"],
                [[len(common), f"{q[0]:.3f}", f"{q[1]:.3f}", f"{q[2]:.3f}",
                  " / ".join(f"{v:.3f}" for v in by_size),
                  f"{kendalltau(ratio, macs)[0]:+.3f}"]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="benchmark database to analyse")
    ap.add_argument("--device", default="cpu-1t")
    ap.add_argument("--space", default="ofa_mbv3")
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--reference", action="store_true", help="run the interleaved test")
    ap.add_argument("--protocols", action="store_true", help="relative against solo timing")
    ap.add_argument("--n", type=int, default=6,
                    help="subnets of the --protocols and --noise tests")
    ap.add_argument("--noise", action="store_true",
                    help="noise floors of protocol variants, side by side")
    ap.add_argument("--variants", default=",".join(NOISE_VARIANTS),
                    help=f"--noise variants, comma-separated, of: {', '.join(NOISE_VARIANTS)}")
    ap.add_argument("--protocol-sessions", type=int, default=3,
                    help="sessions per subnet and protocol in --protocols")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                    help="two databases with measurements of the same subnets")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    if not (args.db or args.reference or args.compare or args.protocols or args.noise):
        ap.error("give --db FILE, --reference, --protocols, --noise and/or --compare OLD NEW")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in NOISE_VARIANTS:
            ap.error(f"--variants: unknown variant {v!r}; known: {', '.join(NOISE_VARIANTS)}")
    if args.db:
        drift_from_db(args.db, args.device, args.space, args.window)
    if args.reference:
        reference_test(args.sessions, args.runs)
    if args.protocols:
        protocols_test(args.n, args.protocol_sessions)
    if args.noise:
        noise_test(args.n, variants)
    if args.compare:
        compare_dbs(*args.compare, args.device, args.space)


if __name__ == "__main__":
    main()
