"""Latency-prediction service: requests per second and p50/p99 latency over loopback HTTP,
at 1, 8 and 32 concurrent clients, 1 and 100 architectures per request, against the rate of
the Python API (``predictor.predict``) in one process.

What is measured: each client is a closed loop (send a request, wait for its answer, send the
next) on one aiohttp session in this process; the clients share an asyncio loop, and the
bodies are JSON encoded beforehand so the client does little work per request. A request is
``POST /latency/predict`` with ``archs_per_request`` distinct ofa_mbv3 architectures on
``cpu-1t`` (the ``additive`` predictor, fitted on synthetic imported latencies in a temporary
database unless ``--db`` names a real one). Latency is from sending the request to having read
the whole answer. The service runs in a child process on its own local Ray instance with 2
CPUs, in Ray Serve's ``direct`` ingress mode and, for comparison, through Serve's HTTP
``proxy``; one service at a time.

With ``--before PATH`` (a checkout of an earlier commit, e.g. made by ``git worktree add
/tmp/before HEAD``), the same load runs against that checkout's service too (a child process
importing ``nas`` from PATH), the two alternating round by round (before, now; then now,
before), and the table gives both and their ratio.

Run: .venv/bin/python experiments/benchmarks/service.py [--seconds 5] [--ingress direct proxy]
     .venv/bin/python experiments/benchmarks/service.py --before /tmp/before --ingress direct
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, machine, table

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import fit_predictor, load_predictor
from nas.space import get_space

DEVICE, SPACE, KIND = "cpu-1t", "ofa_mbv3", "additive"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_db(path: Path) -> str:
    """200 ofa_mbv3 subnets with a latency linear in MACs plus 3% noise, as imports, and a
    fitted additive predictor: what the service loads is a real stored predictor."""
    url = f"sqlite:///{path}"
    db = LatencyDB(url)
    sp = get_space(SPACE)
    archs = sp.sample_many(200, seed=0)
    macs = sp.costs(archs)["macs"].astype(float)
    noise = np.random.default_rng(0).normal(1.0, 0.03, len(archs))
    db.ensure_device(get_device(DEVICE))
    db.add_measurements(DEVICE, [{"arch": a, "latency_ms": float((1 + m / 2e7) * z),
                                  "source": "imported"} for a, m, z in zip(archs, macs, noise,
                                                                          strict=True)])
    fit_predictor(DEVICE, SPACE, KIND, db=db)
    return url


def python_rate(db: str, pool: list[Any], per_call: int, seconds: float) -> float:
    """Calls per second of ``predictor.predict`` on ``per_call`` parsed architectures."""
    pred = load_predictor(DEVICE, SPACE, KIND, db=db)
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = [pool[(i + k) % len(pool)] for k in range(per_call)]
        pred.predict(batch)
        i += per_call
        n += 1
    return n / (time.perf_counter() - t0)


async def load(url: str, bodies: list[bytes], clients: int, seconds: float,
               warmup: float) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    errors = 0
    headers = {"content-type": "application/json"}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        start_at = time.perf_counter()
        measure_from = start_at + warmup
        stop_at = measure_from + seconds

        async def client(k: int) -> None:
            nonlocal errors
            i = k
            while (now := time.perf_counter()) < stop_at:
                body = bodies[i % len(bodies)]
                i += clients
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                if now >= measure_from:
                    if ok:
                        lat.append(time.perf_counter() - now)
                    else:
                        errors += 1

        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(client(k) for k in range(clients)))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    ms = np.asarray(lat) * 1000
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime)
    return {"rps": len(lat) / seconds, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "errors": errors, "n": len(lat),
            "client_cpu": client_cpu / (warmup + seconds)}


#: the service in a child process, from the checkout on its PYTHONPATH: started, its URL
#: and the ``nas`` it imported printed as one JSON line, stopped when stdin closes
_CHILD = """
import json, sys
import nas
from nas.serve import ServiceSettings, start
cfg = json.loads(sys.argv[1])
svc = start(ServiceSettings(**cfg["settings"]), num_cpus=cfg["num_cpus"])
print(json.dumps({"url": svc.url, "nas": nas.__file__}), flush=True)
try:
    sys.stdin.read()
finally:
    svc.stop()
"""


class ServiceProcess:
    """``nas.serve.start`` of the checkout at ``root`` in a child process (its own Ray), for
    the length of a ``with`` block."""

    def __init__(self, root: Path, settings: dict[str, Any], log: Path) -> None:
        self.root, self.settings, self.log_path = root.resolve(), settings, log
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONPATH"] = str(self.root)
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps({"settings": self.settings,
                                                      "num_cpus": 2})],
            cwd=self.root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.__exit__()
            sys.exit(f"the service of {self.root} did not start; its log, {self.log_path}:\n"
                     + self.log_path.read_text()[-3000:])
        got = json.loads(line)
        if not str(Path(got["nas"]).resolve()).startswith(str(self.root) + os.sep):
            self.__exit__()
            sys.exit(f"the service for {self.root} imported another nas: {got['nas']}")
        self.url = got["url"]
        return self

    def __exit__(self, *_: object) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # Ray's processes, if any were left
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
        self.log.close()


def measure(root: Path, mode: str, db: str, tmp: Path, dicts: list[dict[str, Any]],
            args: argparse.Namespace, label: str) -> dict[tuple[int, int], dict[str, Any]]:
    """Every (archs per request, clients) cell against the service of ``root``."""
    out = {}
    settings = {"port": free_port(), "db": db, "state_dir": str(tmp / f"state-{label}"),
                "ingress": mode}
    with ServiceProcess(root, settings, tmp / f"service-{label}-{mode}.log") as svc:
        url = f"{svc.url}/latency/predict"
        first = urllib.request.Request(url, data=json.dumps({
            "device": DEVICE, "space": SPACE, "kind": KIND, "archs": dicts[:1]}).encode(),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(first, timeout=300) as r:  # the predictor loads once
            r.read()
        for per in args.archs:
            bodies = [json.dumps({"device": DEVICE, "space": SPACE, "kind": KIND,
                                  "archs": [dicts[(i * per + k) % len(dicts)]
                                            for k in range(per)]}).encode()
                      for i in range(64)]
            for clients in args.clients:
                r = asyncio.run(load(url, bodies, clients, args.seconds, args.warmup))
                out[(per, clients)] = r
                print(f"{label} {mode} {per} archs, {clients} clients: {r['rps']:,.0f}/s, "
                      f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, {r['errors']} errors",
                      file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--ingress", nargs="+", default=["direct", "proxy"],
                    choices=["direct", "proxy"])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--archs", type=int, nargs="+", default=[1, 100],
                    help="architectures per request")
    ap.add_argument("--db", default=None, help="a latency DB with an additive ofa_mbv3 "
                    "predictor for cpu-1t (default: a synthetic one in a temporary folder)")
    ap.add_argument("--before", type=Path, default=None, help="an earlier checkout (e.g. "
                    "`git worktree add /tmp/before HEAD`) whose service runs the same load, "
                    "alternating with this checkout's")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of every cell per checkout (default 1; 2 with --before)")
    ap.add_argument("--out", type=Path, default=None, help="also write every run as JSON")
    args = ap.parse_args()
    rounds = args.rounds or (2 if args.before is not None else 1)
    if args.before is not None and not (args.before / "nas" / "serve").is_dir():
        sys.exit(f"--before {args.before}: not a checkout of this repository (no nas/serve)")

    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-service-"))
    db = args.db or synthetic_db(tmp / "latency.sqlite")
    sp = get_space(SPACE)
    pool = sp.sample_many(1000, seed=1)
    dicts = [a.to_dict() for a in pool]
    py_rows = []
    for per in args.archs:
        rate = python_rate(db, pool, per, seconds=2.0)
        py_rows.append([per, f"{rate:,.0f}", f"{rate * per:,.0f}"])

    here = Path(__file__).resolve().parents[2]
    sides = [("now", here)] + ([("before", args.before)] if args.before is not None else [])
    runs: dict[str, list[dict[tuple[str, int, int], dict[str, Any]]]] = {
        label: [] for label, _ in sides}
    for k in range(rounds):
        # before, now; then now, before: a drift of the machine's load falls on both alike
        order = sides if k % 2 else sides[::-1]
        for label, root in order:
            got: dict[tuple[str, int, int], dict[str, Any]] = {}
            for mode in args.ingress:
                for (per, clients), r in measure(root, mode, db, tmp, dicts, args,
                                                 label).items():
                    got[(mode, per, clients)] = r
            runs[label].append(got)

    def med(label: str, cell: tuple[str, int, int], key: str) -> float:
        return statistics.median(run[cell][key] for run in runs[label])

    cells = list(runs["now"][0])
    rows = []
    for cell in cells:
        mode, per, clients = cell
        rps, p50, p99 = (med("now", cell, k) for k in ("rps", "p50", "p99"))
        errors = sum(run[cell]["errors"] for run in runs["now"])
        row: list[Any] = [mode, per, clients]
        if args.before is not None:
            b_rps, b_p50, b_p99 = (med("before", cell, k) for k in ("rps", "p50", "p99"))
            b_err = sum(run[cell]["errors"] for run in runs["before"])
            ratios = [now[cell]["rps"] / before[cell]["rps"]
                      for now, before in zip(runs["now"], runs["before"], strict=True)]
            row += [f"{b_rps * per:,.0f}", f"{rps * per:,.0f}", f"{rps / b_rps:.2f}x",
                    ", ".join(f"{r:.2f}" for r in ratios), f"{b_p50:.1f}", f"{p50:.1f}",
                    f"{b_p99:.1f}", f"{p99:.1f}", f"{b_err} / {errors}"]
        else:
            client_cpu = med("now", cell, "client_cpu")
            row += [f"{rps:,.0f}", f"{rps * per:,.0f}", f"{p50:.1f}", f"{p99:.1f}", errors,
                    f"{client_cpu:.0%}"]
        rows.append(row)

    cmd = "python experiments/benchmarks/service.py " + " ".join(sys.argv[1:])
    print(header("Latency-prediction service: requests per second over loopback HTTP",
                 cmd.strip()))
    if args.before is not None:
        print(table(["ingress", "archs / request", "clients", "before: archs/s", "now: archs/s",
                     "now / before", "per round", "before p50 (ms)", "now p50 (ms)",
                     "before p99 (ms)", "now p99 (ms)", "errors (before / now)"], rows))
    else:
        print(table(["ingress", "archs / request", "clients", "requests/s", "archs/s",
                     "p50 (ms)", "p99 (ms)", "errors", "client CPU"], rows))
    what = (f"this checkout and {args.before} (medians of {rounds} rounds, alternating "
            f"before/now, one service at a time)" if args.before is not None else
            f"this checkout ({rounds} round{'s' if rounds > 1 else ''}, medians)")
    client_cpu = "" if args.before is not None else " (client CPU: their share of one core)"
    print(f"\n{args.seconds:g} s measured per row after {args.warmup:g} s of warm-up; "
          f"closed-loop aiohttp clients in one process on the same machine{client_cpu}; "
          f"each service in its own process on a local Ray with 2 "
          f"CPUs, one replica, concurrent predict requests merged up to 64 requests or 2 ms; "
          f"{SPACE} on {DEVICE}, {KIND} predictor; {what}; {os.cpu_count()} cores shared "
          f"with everything else running.\n")
    print(table(["Python API: archs / call", "calls/s", "archs/s"], py_rows))
    print("\n`predictor.predict(archs)` on parsed architectures, one process, one thread "
          "(this checkout).")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "command": cmd, "runs": {
            label: [{"/".join(map(str, cell)): r for cell, r in run.items()} for run in rs]
            for label, rs in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
