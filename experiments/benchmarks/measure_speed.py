"""Seconds per measured subnet under the default timing protocol, beside an earlier checkout's
(issue 27, "a measurement in a third of the time"), with what must not get worse: the noise
floor and the rank agreement with plain timings taken afterwards.

On one machine in one run: ``--n`` subnets of the space are sampled (fixed ``--seed``) and
measured with ``measure_architectures`` and the default ``TimingConfig`` into two fresh
temporary SQLite databases, one by this checkout and one by ``--before PATH`` (a checkout of
an earlier commit, e.g. ``git worktree add /tmp/before_measure <commit>``), each in a
subprocess importing ``nas`` from its checkout, alternating in chunks of ``--chunk`` subnets
(the order flipped every chunk) so that the machine's drift hits both. Then ``--noise`` of
them are measured again by each (source ``noise``: fresh sessions, a later campaign, as
``nas latency measure`` does it) for the noise floor (median of |a-b|/mean), and finally all
of them are timed by a plain loop (a fresh ONNX Runtime session with the device's options,
``--plain-warmup`` runs, the median of ``--plain-runs``), subnet by subnet in a shuffled order,
``--plain-rounds`` times; each protocol's latencies are compared with the median of those by
Spearman's rho and Kendall's tau.

Seconds per subnet: the time between one stored measurement and the next inside a chunk
(export, timing, retries, storing; the median), and everything the measuring calls took
divided by the subnets (the total: with each chunk's campaign setup and the first chunk's
anchor sessions). Where the time goes is measured by wrapping the ``nas.measure`` functions
that do each step (those a checkout lacks are left out of its breakdown).

    .venv/bin/python experiments/benchmarks/measure_speed.py --before /tmp/before_measure \\
        --out runs/measure_speed.json
    .venv/bin/python experiments/benchmarks/measure_speed.py --before /tmp/before_measure --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, machine, session_median_ms, table

ROOT = Path(__file__).resolve().parents[2]
#: Steps of a measurement, in the order of the breakdown table (the wrapped function).
STEPS = [
    ("setup", "campaign setup: reference export, anchor sessions (_measure._reference)"),
    ("export", "export (the family's timing_onnx)"),
    ("prepare", "prepare for the device (prepare_cached)"),
    ("session", "ORT session creation (make_session)"),
    ("warmup", "warm-up (_timing._warm_up)"),
    ("record_subnet", "recorded runs: subnet"),
    ("record_reference", "recorded runs: reference"),
    ("record_other", "unrecorded block warm-up, stopping rule"),
    ("sleep", "pauses before retries"),
    ("environment", "environment fingerprint"),
    ("db", "storing (add_measurement)"),
    ("other", "the rest"),
]


# ---------------------------------------------------------------------- the child
class _Steps:
    """Seconds per step of the measurements, outside the campaign setup (whose inner steps
    count as setup)."""

    def __init__(self) -> None:
        self.s: defaultdict[str, float] = defaultdict(float)
        self.n: Counter[str] = Counter()
        self.depth = 0

    def wrap(self, mod: Any, name: str, key: str, *, setup: bool = False,
             post: Callable[[Any], None] | None = None) -> None:
        f = getattr(mod, name, None)
        if f is None:
            return

        def wrapped(*a: Any, **k: Any) -> Any:
            if self.depth and not setup:
                return f(*a, **k)
            self.depth += setup
            t = time.perf_counter()
            try:
                out = f(*a, **k)
            finally:
                self.depth -= setup
                self.s[key] += time.perf_counter() - t
                self.n[key] += 1
            if post is not None and not self.depth:
                post(out)
            return out

        setattr(mod, name, wrapped)


class _Sleeps:
    """``time`` for :mod:`nas.measure._session` alone, its pauses (before retries) counted."""

    def __init__(self, steps: _Steps) -> None:
        self._steps = steps

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        t = time.perf_counter()
        time.sleep(seconds)
        if not self._steps.depth:
            self._steps.s["sleep"] += time.perf_counter() - t


def _instrument(steps: _Steps) -> None:
    from nas.measure import _measure, _session, _timing

    def recorded(out: Any) -> None:
        steps.s["record_subnet"] += sum(out[0]) / 1e9
        if len(out) > 1:
            steps.s["record_reference"] += sum(out[1]) / 1e9

    steps.wrap(_measure, "_reference", "setup", setup=True)
    family_export = _measure._family_export

    def exporter_of(space: Any) -> Any:
        export = family_export(space)

        def timed(net: Any, arch: Any) -> bytes:
            if steps.depth:
                return export(net, arch)
            t = time.perf_counter()
            try:
                return export(net, arch)
            finally:
                steps.s["export"] += time.perf_counter() - t

        return timed

    _measure._family_export = exporter_of
    steps.wrap(_measure, "prepare_cached", "prepare")
    steps.wrap(_session, "make_session", "session")
    steps.wrap(_session, "environment_fingerprint", "environment")
    steps.wrap(_timing, "_warm_up", "warmup")
    steps.wrap(_timing, "_record", "record", post=recorded)
    _session.time = _Sleeps(steps)  # type: ignore[assignment]


@contextlib.contextmanager
def _replies() -> Iterator[IO[str]]:
    """The child's reply channel: the original stdout, while anything else written to file
    descriptor 1 (a library's print, a C++ log) goes to stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with os.fdopen(fd, "w") as out:
        yield out


def child(device: str, space: str) -> None:
    """Serve measurement requests, one JSON line each, on stdin; reply one JSON line each."""
    import nas
    from nas.db import LatencyDB
    from nas.measure import (
        PROTOCOL_VERSION,
        TimingConfig,
        device_scale,
        measure_architectures,
        noise_floor_from_db,
        on_scale,
    )
    from nas.space import family_part, get_space

    sp = get_space(space)
    net = family_part(sp, "timing_supernet")(sp)
    steps = _Steps()
    _instrument(steps)

    def measure(archs: list[Any], db: Any, source: str) -> None:
        measure_architectures(device, sp, [sp.parse(a) for a in archs], db, supernet=net,
                              progress=False, source=source)

    with _replies() as out:
        def reply(obj: dict[str, Any]) -> None:
            out.write(json.dumps(obj) + "\n")
            out.flush()

        reply({"nas": nas.__file__, "protocol": PROTOCOL_VERSION,
               "config": TimingConfig().to_dict()})
        for line in sys.stdin:
            req = json.loads(line)
            db = LatencyDB(f"sqlite:///{req['db']}")
            if req["cmd"] == "report":
                reply(_report(db, device, sp, device_scale, on_scale, noise_floor_from_db))
                continue
            reply(_measure_call(db, req, steps, measure))


def _measure_call(db: Any, req: dict[str, Any], steps: _Steps,
                  measure: Callable[[list[Any], Any, str], Any]) -> dict[str, Any]:
    """One measuring call: its wall time, the time from one stored measurement to the next
    (the first from the call's start), and its steps."""
    stamps: list[float] = []
    add = db.add_measurement

    def add_timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return add(*a, **k)
        finally:
            if not steps.depth:
                steps.s["db"] += time.perf_counter() - t
            if k.get("source") == req["source"]:
                stamps.append(time.perf_counter())

    db.add_measurement = add_timed
    snap_s, snap_n = dict(steps.s), Counter(steps.n)
    t0 = time.perf_counter()
    measure(req["archs"], db, req["source"])
    wall = time.perf_counter() - t0
    delta = {k: v - snap_s.get(k, 0.0) for k, v in steps.s.items()}
    delta["attempts"] = steps.n["record"] - snap_n["record"]
    return {"wall_s": wall, "steps": delta,
            "per_subnet_s": [b - a for a, b in zip([t0, *stamps], stamps, strict=False)]}


def _report(db: Any, device: str, sp: Any, device_scale: Any, on_scale: Any,
            noise_floor_from_db: Any) -> dict[str, Any]:
    """Latencies on the database's scale (the first measurement of each subnet), the noise
    floor, and what the stored measurements say of themselves."""
    import numpy as np

    recs = db.measurements(device, sp.name, status=None)
    ok = [r for r in recs if r.status == "ok"]
    scale = device_scale(device, sp, db, records=ok)
    latency: dict[str, float] = {}
    env = []
    for r in ok:
        if r.source == "measured" and r.arch.hash not in latency:
            latency[r.arch.hash] = on_scale(r, scale)
            env.append(r.env)
    nf = noise_floor_from_db(device, sp, db)
    return {
        "latency_ms": latency,
        "failed": sum(r.status != "ok" for r in recs),
        "noise": None if nf is None else {**nf.to_dict(), "rel_diffs": list(nf.rel_diffs)},
        "scale_ms": None if scale is None else scale.ms,
        "converged": float(np.mean([bool(e.get("converged")) for e in env])) if env else None,
        "rel_ci_median": float(np.median([e["rel_ci"] for e in env])) if env else None,
        "runs_median": float(np.median([r.n_runs for r in ok if r.source == "measured"]))
        if env else None,
        "protocol": sorted({e.get("protocol") for e in env}, key=str),
    }


# ---------------------------------------------------------------------- the parent
class Checkout:
    """A child process measuring with the ``nas`` of ``root``, into its own database."""

    def __init__(self, name: str, root: Path, db: Path, device: str, space: str) -> None:
        self.name, self.root, self.db = name, root.resolve(), db
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", "--device", device,
             "--space", space], env=env, cwd=self.root, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        self.hello = self._read()
        if not str(self.hello["nas"]).startswith(str(self.root)):
            self.close()
            sys.exit(f"{name}: the child imported nas from {self.hello['nas']}, not {self.root}")
        self.calls: list[dict[str, Any]] = []
        self.noise_calls: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"{self.name}: the child process ended (exit {self.proc.wait()})")
        got: dict[str, Any] = json.loads(line)
        return got

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({**req, "db": str(self.db)}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def measure(self, archs: list[dict[str, Any]], source: str) -> None:
        got = self.ask({"cmd": "measure", "archs": archs, "source": source})
        (self.calls if source == "measured" else self.noise_calls).append(got)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _alternate(checkouts: list[Checkout], archs: list[dict[str, Any]], chunk: int,
               source: str, log: Callable[[str], None]) -> None:
    for i, part in enumerate(_chunks(archs, chunk)):
        for c in (checkouts if i % 2 == 0 else checkouts[::-1]):
            t = time.perf_counter()
            c.measure(part, source)
            log(f"{source} chunk {i + 1}: {c.name} {len(part)} subnets in "
                f"{time.perf_counter() - t:.1f} s")


def plain_timings(space: str, device: str, archs: list[dict[str, Any]], *, warmup: int,
                  runs: int, rounds: int, seed: int, log: Callable[[str], None]
                  ) -> dict[str, list[float]]:
    """Per subnet (by hash), the median of ``runs`` runs after ``warmup`` in a fresh session,
    once per round; each round over all subnets in a shuffled order."""
    import numpy as np

    from nas.devices import get_device
    from nas.measure import make_session, one_torch_thread
    from nas.space import family_part, get_space

    sp = get_space(space)
    prof = get_device(device)
    net = family_part(sp, "timing_supernet")(sp)
    export = family_part(sp, "timing_onnx")
    parsed = [sp.parse(a) for a in archs]
    with one_torch_thread():
        models = {a.hash: export(net, a) for a in parsed}
    rng = np.random.default_rng(seed)
    got: dict[str, list[float]] = {a.hash: [] for a in parsed}
    for rnd in range(rounds):
        for i in rng.permutation(len(parsed)):
            a = parsed[i]
            side = getattr(prof, "input_resolution", None) or a.r
            sess = make_session(models[a.hash], prof)
            x = np.random.default_rng(0).standard_normal(
                (prof.batch_size, 3, side, side)).astype(np.float32)
            got[a.hash].append(session_median_ms(sess, {sess.get_inputs()[0].name: x},
                                                 warmup, runs))
            del sess
        log(f"plain timings: round {rnd + 1}/{rounds} done")
    return got


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return machine()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return machine()


def _summary(c: Checkout, rep: dict[str, Any], n: int, plain: dict[str, float]
             ) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    per = [s for call in c.calls for s in call["per_subnet_s"][1:]]  # not a chunk's first
    total = sum(call["wall_s"] for call in c.calls)
    steps: defaultdict[str, float] = defaultdict(float)
    for call in c.calls:
        for k, v in call["steps"].items():
            steps[k] += v
    steps["record_other"] = steps.pop("record", 0.0) - steps.get("record_subnet", 0.0) \
        - steps.get("record_reference", 0.0)
    attempts = steps.pop("attempts", 0.0)
    steps["other"] = total - sum(v for k, v in steps.items() if k != "other")
    keys = [k for k in rep["latency_ms"] if k in plain]
    ours = np.asarray([rep["latency_ms"][k] for k in keys])
    ref = np.asarray([plain[k] for k in keys])
    return {
        "protocol": c.hello["protocol"], "nas": c.hello["nas"], "config": c.hello["config"],
        "s_per_subnet_median": float(np.median(per)) if per else None,
        "s_per_subnet_total": total / n,
        "total_s": total,
        "noise_remeasure_s": sum(call["wall_s"] for call in c.noise_calls),
        "attempts_per_subnet": attempts / n,
        "steps_s_per_subnet": {k: steps.get(k, 0.0) / n for k, _ in STEPS},
        "per_subnet_s": per,
        "spearman": float(stats.spearmanr(ours, ref)[0]) if len(keys) > 2 else None,
        "kendall": float(stats.kendalltau(ours, ref)[0]) if len(keys) > 2 else None,
        "median_ratio_to_plain": float(np.median(ours / ref)) if len(keys) else None,
        **rep,
    }


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, default=None,
                    help="an earlier checkout to compare (its nas in a subprocess)")
    ap.add_argument("--n", type=int, default=40, help="subnets measured by each")
    ap.add_argument("--noise", type=int, default=15, help="of them re-measured (noise floor)")
    ap.add_argument("--chunk", type=int, default=10, help="subnets per chunk (alternation)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space", default="ofa_mbv3")
    ap.add_argument("--device", default="cpu-1t")
    ap.add_argument("--plain-warmup", type=int, default=20)
    ap.add_argument("--plain-runs", type=int, default=200)
    ap.add_argument("--plain-rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 6 subnets, 3 repeats, short plain timings")
    ap.add_argument("--out", default="runs/measure_speed.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.device, args.space)
        return
    if args.quick:
        args.n, args.noise, args.chunk = 6, 3, 3
        args.plain_warmup, args.plain_runs, args.plain_rounds = 10, 50, 2
    if not 0 < args.noise <= args.n:
        ap.error(f"--noise must be in 1..--n ({args.n}), got {args.noise}")

    import numpy as np

    from nas.measure import sample_for_measurement
    from nas.space import get_space

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    sp = get_space(args.space)
    archs = [a.to_dict() for a in sample_for_measurement(sp, args.n, seed=args.seed)]
    rng = np.random.default_rng(args.seed + 1)
    repeats = [archs[i] for i in sorted(rng.choice(len(archs), args.noise, replace=False))]
    tmp = Path(tempfile.mkdtemp(prefix="nas-measure-speed-"))
    checkouts = [Checkout("after", ROOT, tmp / "after.sqlite", args.device, args.space)]
    if args.before is not None:
        checkouts.append(Checkout("before", args.before, tmp / "before.sqlite", args.device,
                                  args.space))
    try:
        _alternate(checkouts, archs, args.chunk, "measured", log)
        _alternate(checkouts, repeats, args.chunk, "noise", log)
        reports = {c.name: c.ask({"cmd": "report"}) for c in checkouts}
    finally:
        for c in checkouts:
            c.close()
    plain_runs = plain_timings(args.space, args.device, archs, warmup=args.plain_warmup,
                               runs=args.plain_runs, rounds=args.plain_rounds,
                               seed=args.seed + 2, log=log)
    plain = {k: float(np.median(v)) for k, v in plain_runs.items()}
    res = {c.name: _summary(c, reports[c.name], args.n, plain) for c in checkouts}

    cmd = "python experiments/benchmarks/measure_speed.py " + " ".join(sys.argv[1:])
    model = lscpu_model()
    names = [c.name for c in checkouts]
    rows = []
    for name in names:
        r = res[name]
        nf = r["noise"] or {}
        rows.append([
            f"{name} (protocol {r['protocol']})", _fmt(r["s_per_subnet_median"], ".2f"),
            _fmt(r["s_per_subnet_total"], ".2f"), f"{r['total_s'] / 60:.1f}",
            _fmt(r["attempts_per_subnet"], ".2f"), _fmt(r["runs_median"], ".0f"),
            f"{_fmt(100 * nf['median'] if nf else None, '.2f')}% "
            f"(p90 {_fmt(100 * nf['p90'] if nf else None, '.2f')}%, n={nf.get('n', 0)})",
            _fmt(r["spearman"], ".4f"), _fmt(r["kendall"], ".3f"),
            _fmt(r["median_ratio_to_plain"], ".3f"), r["failed"]])
    if len(names) == 2:
        a, b = res["after"], res["before"]
        rows.append(["before / after",
                     _fmt(b["s_per_subnet_median"] / a["s_per_subnet_median"], ".2f") + "x",
                     _fmt(b["s_per_subnet_total"] / a["s_per_subnet_total"], ".2f") + "x",
                     "", "", "", "", "", "", "", ""])
    print(header(f"Seconds per measured subnet, {args.space} on {args.device}", cmd))
    print(f"lscpu model name: {model}; {args.n} subnets (seed {args.seed}), {args.noise} "
          f"re-measured, chunks of {args.chunk} alternating; plain timings: "
          f"{args.plain_rounds} rounds of {args.plain_runs} runs after {args.plain_warmup}\n")
    print(table(["protocol", "s per subnet (median)", "s per subnet (total)",
                 "measuring min", "attempts per subnet", "runs (median)",
                 "noise floor |a-b|/mean", "Spearman vs plain", "Kendall vs plain",
                 "latency / plain (median)", "failed"], rows))
    print()
    print(table(["seconds per subnet in", *names],
                [[label, *(f"{res[n]['steps_s_per_subnet'][k]:.3f}" for n in names)]
                 for k, label in STEPS]))
    print(f"\nthis run: {(time.perf_counter() - t_start) / 60:.1f} minutes")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": machine(), "lscpu_model": model, "command": cmd,
        "args": {k: str(v) for k, v in vars(args).items()}, "results": res,
        "plain_ms": plain_runs, "archs": archs}, indent=1))


if __name__ == "__main__":
    main()
