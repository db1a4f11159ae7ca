"""Do predictions agree with timings taken later? Predictors fitted on a measurement campaign,
checked against held-out subnets timed in plain ONNX Runtime sessions an hour (or more)
afterwards, with the absolute scale taken the old way (the reference subnet's anchor: five
fresh sessions at the campaign's start) and the new way (the reference's median over every
timing of the campaign, :mod:`nas.measure._scale`).

Phases:

``measure``
    The campaign, as a user runs it: ``nas latency measure --device cpu-1t --space ofa_mbv3
    --n 200 --noise 20`` into ``--db`` (default ``runs/agreement/latency.sqlite``).
``check`` (an hour or more later)
    Fits ``additive`` (the default kind), ``gbdt`` and ``flops`` on every campaign
    measurement, on both scales. Draws ``--n`` (30) subnets the campaign did not measure and
    times each, and the reference subnet, in plain ONNX Runtime sessions (one intra-op
    thread, what a user would write): ``--passes`` (5) passes over all of them in shuffled
    order, in each a fresh session, 5 warm-up runs and ``--runs`` (20) timed runs, the
    median; a subnet's plain latency is the median over the passes. Prints, per kind and
    scale, the median of predicted / plain - 1 over the held-out subnets, the median absolute
    error, the share within +-10% and Spearman's rho; the reference's plain latency now next
    to both scales (how fast the machine is now against the campaign); and the relative
    check (``nas latency check``'s protocol, on a copy of the database) with the noise floor.

``tiny`` (the demo's case, a minute)
    ``--repeats`` (5) times, in a fresh database: measure 80 ``tiny`` subnets on ``cpu-1t``
    as the demo does, fit ``additive``, then time 10 held-out subnets two ways: as the demo
    did before (one plain session each, ``time_onnx`` without a reference, against
    predictions on the anchor's scale) and as it does now (``check_agreement``: relative to
    the reference, on the campaign's scale, median of 3 sessions). Prints each repeat's
    median error both ways, with the anchor, the campaign scale and the noise floor.
    ``--neighbour``: meanwhile two processes burn CPU on and off (each busy for 0.2 to 3 s,
    then idle for as long, at random): a shared machine's busy minutes, on demand.

Run:
    .venv/bin/python experiments/benchmarks/latency_agreement.py --phase tiny
    .venv/bin/python experiments/benchmarks/latency_agreement.py --phase measure
    # an hour later, nothing else running
    .venv/bin/python experiments/benchmarks/latency_agreement.py --phase check
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, session_median_ms, table

ROOT = Path(__file__).resolve().parents[2]
DEVICE, SPACE = "cpu-1t", "ofa_mbv3"
KINDS = ("additive", "gbdt", "flops")


def measure(db: Path, n: int) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    nas = Path(sys.executable).with_name("nas")
    subprocess.run([str(nas), "latency", "measure", "--device", DEVICE, "--space", SPACE,
                    "--n", str(n), "--noise", "20", "--db", f"sqlite:///{db}"], check=True)


def _plain(models: dict[str, bytes], inputs: dict[str, np.ndarray], profile: Any,
           passes: int, runs: int, seed: int) -> dict[str, float]:
    """Each model's median latency over ``passes`` shuffled passes of fresh sessions with the
    profile's session options (threads, optimisation level), no reference."""
    from nas.measure import make_session

    rng = np.random.default_rng(seed)
    names = list(models)
    got: dict[str, list[float]] = {k: [] for k in names}
    for p in range(passes):
        for i in rng.permutation(len(names)):
            key = names[i]
            sess = make_session(models[key], profile)
            feed = {sess.get_inputs()[0].name: inputs[key]}
            got[key].append(session_median_ms(sess, feed, 5, runs))
        print(f"pass {p + 1}/{passes} done", file=sys.stderr, flush=True)
    return {k: float(np.median(v)) for k, v in got.items()}


def _anchor_scale_y(recs: list[Any], anchor: float, ref_hash: str) -> dict[Any, float]:
    """Each campaign subnet's latency on the anchor's scale (what was read before the fix)."""
    out: dict[Any, list[float]] = {}
    for r in recs:
        ref = r.env.get("reference") or {}
        if ref.get("arch") == ref_hash:
            out.setdefault(r.arch, []).append(float(r.latency_ms) * anchor / ref["anchor_ms"])
    return {a: float(np.mean(v)) for a, v in out.items()}


def check(db_path: Path, n: int, passes: int, runs: int, seed: int, device: str = DEVICE,
          relative: bool = True) -> None:
    from scipy.stats import spearmanr

    from nas.db import LatencyDB
    from nas.devices import get_device
    from nas.latency import check_agreement, make_predictor, training_data
    from nas.measure import device_scale, prepare_model
    from nas.measure._measure import _default_supernet, _export
    from nas.space import get_space

    sp = get_space(SPACE)
    profile = get_device(device)
    db = LatencyDB(f"sqlite:///{db_path}")
    recs = [r for r in db.measurements(device, SPACE, status="ok") if r.source == "measured"]
    anchors = [float(r.latency_ms) for r in db.measurements(device, SPACE, source="reference")]
    scale = device_scale(device, sp, db)
    assert scale is not None, "run --phase measure first"
    assert anchors, "run --phase measure first"
    t_first, t_last = min(r.created_at for r in recs), max(r.created_at for r in recs)
    data = training_data(device, SPACE, db)
    old_y = _anchor_scale_y(recs, float(np.median(anchors)), sp.middle().hash)
    fits = {}
    for kind in KINDS:
        fits[(kind, "campaign")] = make_predictor(kind, SPACE).fit(data.archs, data.y)
        fits[(kind, "anchor")] = make_predictor(kind, SPACE).fit(
            data.archs, np.asarray([old_y[a] for a in data.archs]))

    seen = {r.arch for r in db.measurements(device, SPACE, status=None)}
    held = [a for a in sp.sample_many(4 * n, seed=seed) if a not in seen][:n]
    net = _default_supernet(sp)
    import torch

    torch.set_num_threads(1)
    ref = sp.middle()
    models = {a.hash: prepare_model(_export(net, a), profile, a.r) for a in held}
    models["reference"] = prepare_model(_export(net, ref), profile, ref.r)
    b = profile.batch_size
    inputs = {a.hash: np.random.default_rng(0).standard_normal((b, 3, a.r, a.r))
              .astype(np.float32) for a in held}
    inputs["reference"] = np.random.default_rng(0).standard_normal(
        (b, 3, ref.r, ref.r)).astype(np.float32)
    t_check = dt.datetime.now(dt.UTC)
    if t_last.tzinfo is None:  # SQLite gives naive UTC times
        t_first, t_last = (t.replace(tzinfo=dt.UTC) for t in (t_first, t_last))
    plain = _plain(models, inputs, profile, passes, runs, seed)
    y = np.asarray([plain[a.hash] for a in held])

    print(header(f"Predictions against plain ONNX Runtime timings taken later: {device}",
                 f"experiments/benchmarks/latency_agreement.py --phase check --n {n} "
                 f"--device {device} --passes {passes} --runs {runs} --db {db_path}"))
    print(f"Campaign: {len(recs)} subnets of {SPACE} on {device} measured "
          f"{t_first:%H:%M} to {t_last:%H:%M} UTC (relative protocol); "
          f"plain timings of {len(held)} held-out subnets from {t_check:%H:%M} UTC, "
          f"{(t_check - t_last).total_seconds() / 60:.0f} minutes after its end. Reference "
          f"subnet: anchor (5 fresh sessions at the start) {np.median(anchors):.3f} ms; "
          f"campaign median over {scale.n} timings {scale.ms:.3f} ms (p10 {scale.p10:.3f}, "
          f"p90 {scale.p90:.3f}); plain now {plain['reference']:.3f} ms.\n")
    rows = []
    for (kind, which), est in fits.items():
        pred = est.predict(held)
        err = pred / y - 1
        rows.append([kind, "campaign median (new)" if which == "campaign" else
                     "anchor (before)", f"{100 * np.median(err):+.1f}%",
                     f"{100 * np.median(np.abs(err)):.1f}%",
                     f"{100 * np.mean(np.abs(err) <= 0.10):.0f}%",
                     f"{spearmanr(pred, y).statistic:.3f}"])
    print(table(["kind", "scale", "median error", "median |error|", "within ±10%",
                 "Spearman"], rows))

    if not relative:
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "latency.sqlite"
        shutil.copy(db_path, copy)
        cdb = LatencyDB(f"sqlite:///{copy}")
        est = fits[("additive", "campaign")]
        res = check_agreement(device, sp, cdb, archs=held[:10], predictor=est, noise=20,
                              supernet=net, progress=False)
    nf = res.noise
    print(f"\nThe same protocol (`nas latency check`: relative to the reference, on the "
          f"campaign's scale, median of 3 sessions) on the first 10 held-out subnets: median "
          f"error {100 * res.median_error:+.1f}%, Spearman "
          f"{res.spearman:.3f}; noise floor ({nf.n} repeats) p90 {100 * nf.p90:.1f}%, "
          f"median {100 * nf.median:.1f}%: "
          f"{'within' if res.within_noise else 'outside'} it.")


def _burn(seed: int, stop: Any) -> None:
    """A noisy neighbour: busy and idle in turns of random length until ``stop`` is set."""
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        end = time.perf_counter() + rng.uniform(0.2, 3.0)
        x = 0
        while time.perf_counter() < end:
            x += 1
        stop.wait(rng.uniform(0.2, 3.0))


def tiny(repeats: int, seed: int, neighbour: bool = False) -> None:
    import multiprocessing as mp

    stop = mp.Event()
    burners = [mp.Process(target=_burn, args=(seed + i, stop), daemon=True)
               for i in range(2 if neighbour else 0)]
    for b in burners:
        b.start()
    try:
        _tiny(repeats, neighbour)
    finally:
        stop.set()
        for b in burners:
            b.join()


def _tiny(repeats: int, neighbour: bool) -> None:
    from nas.db import LatencyDB
    from nas.latency import check_agreement, make_predictor, training_data
    from nas.measure import (
        device_scale,
        measure_architectures,
        sample_for_measurement,
        time_onnx,
    )
    from nas.measure._measure import _default_supernet, _export
    from nas.space import get_space

    sp = get_space("tiny")
    net = _default_supernet(sp)
    rows = []
    for rep in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            db = LatencyDB(f"sqlite:///{tmp}/latency.sqlite")
            measure_architectures(DEVICE, sp, sample_for_measurement(sp, 80, seed=rep), db,
                                  supernet=net, progress=False)
            data = training_data(DEVICE, "tiny", db)
            anchors = [float(r.latency_ms)
                       for r in db.measurements(DEVICE, "tiny", source="reference")]
            anchor = float(np.median(anchors))
            recs = db.measurements(DEVICE, "tiny", source="measured")
            old_y = _anchor_scale_y(recs, anchor, sp.middle().hash)
            scale = device_scale(DEVICE, sp, db)
            assert scale is not None
            new = make_predictor("additive", "tiny").fit(data.archs, data.y)
            old = make_predictor("additive", "tiny").fit(
                data.archs, np.asarray([old_y[a] for a in data.archs]))
            seen = {a for a in data.archs}
            held = [a for a in sp.sample_many(60, seed=100 + rep, unique=False)
                    if a not in seen][:10]
            plain = np.asarray([time_onnx(_export(net, a), _device(), a.r).median_ms
                                for a in held])
            before = np.median(old.predict(held) / plain - 1)
            res = check_agreement(DEVICE, sp, db, archs=held, predictor=new, noise=10,
                                  supernet=net, progress=False)
            nf = res.noise
            assert nf is not None
            rows.append([rep + 1, f"{1000 * anchor:.1f} µs", f"{1000 * scale.ms:.1f} µs",
                         f"{100 * before:+.1f}%", f"{100 * res.median_error:+.1f}%",
                         f"{100 * nf.p90:.1f}%",
                         "yes" if res.within_noise else "no"])
            print(f"repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    print(header("The demo's check on tiny: before and after",
                 f"experiments/benchmarks/latency_agreement.py --phase tiny --repeats "
                 f"{repeats}" + (" --neighbour" if neighbour else "")))
    print(table(["repeat", "reference anchor", "campaign scale", "before: anchor scale vs one "
                 "plain session", "now: campaign scale, same protocol", "noise floor p90",
                 "now within it"], rows))


def _device() -> Any:
    from nas.devices import get_device

    return get_device(DEVICE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", choices=["tiny", "measure", "check"], required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--neighbour", action="store_true",
                    help="tiny: two processes burn CPU on and off meanwhile")
    ap.add_argument("--db", type=Path, default=ROOT / "runs/agreement/latency.sqlite")
    ap.add_argument("--n", type=int, default=None,
                    help="measure: subnets (200); check: held-out subnets (30)")
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", default=DEVICE, help="check: the device profile")
    ap.add_argument("--no-relative", action="store_true",
                    help="check: skip the relative check (plain timings only)")
    args = ap.parse_args()
    if args.phase == "tiny":
        tiny(args.repeats, args.seed, args.neighbour)
    elif args.phase == "measure":
        measure(args.db, args.n or 200)
    else:
        check(args.db, args.n or 30, args.passes, args.runs, args.seed, args.device,
              not args.no_relative)


if __name__ == "__main__":
    main()
