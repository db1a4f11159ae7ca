"""Latency-prediction service: requests per second and p50/p99 latency over loopback HTTP,
at 1, 8 and 32 concurrent clients, 1 and 100 architectures per request, against the rate of
the Python API (``predictor.predict``) in one process.

What is measured: each client is a closed loop (send a request, wait for its answer, send the
next) on one aiohttp session in this process; the clients share an asyncio loop, and the
bodies are JSON encoded beforehand so the client does little work per request. A request is
``POST /latency/predict`` with ``archs_per_request`` distinct ofa_mbv3 architectures on
``cpu-1t`` (the ``additive`` predictor, fitted on synthetic imported latencies in a temporary
database unless ``--db`` names a real one). Latency is from sending the request to having read
the whole answer. The service runs on a local Ray instance with 2 CPUs, in Ray Serve's
``direct`` ingress mode and, for comparison, through Serve's HTTP ``proxy``.

Run: .venv/bin/python experiments/benchmarks/service.py [--seconds 5] [--ingress direct proxy]
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, table

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import fit_predictor, load_predictor
from nas.serve import ServiceSettings, start
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--ingress", nargs="+", default=["direct", "proxy"],
                    choices=["direct", "proxy"])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--archs", type=int, nargs="+", default=[1, 100],
                    help="architectures per request")
    ap.add_argument("--db", default=None, help="a latency DB with an additive ofa_mbv3 "
                    "predictor for cpu-1t (default: a synthetic one in a temporary folder)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-service-"))
    db = args.db or synthetic_db(tmp / "latency.sqlite")
    sp = get_space(SPACE)
    pool = sp.sample_many(1000, seed=1)
    dicts = [a.to_dict() for a in pool]
    py_rows = []
    for per in args.archs:
        rate = python_rate(db, pool, per, seconds=2.0)
        py_rows.append([per, f"{rate:,.0f}", f"{rate * per:,.0f}"])

    rows = []
    for mode in args.ingress:
        port = free_port()
        svc = start(ServiceSettings(port=port, db=db, state_dir=str(tmp / "state"),
                                    ingress=mode), num_cpus=2)
        try:
            url = f"{svc.url}/latency/predict"
            for per in args.archs:
                bodies = [json.dumps({"device": DEVICE, "space": SPACE, "kind": KIND,
                                      "archs": [dicts[(i * per + k) % len(dicts)]
                                                for k in range(per)]}).encode()
                          for i in range(64)]
                for clients in args.clients:
                    r = asyncio.run(load(url, bodies, clients, args.seconds, args.warmup))
                    rows.append([mode, per, clients, f"{r['rps']:,.0f}",
                                 f"{r['rps'] * per:,.0f}", f"{r['p50']:.1f}",
                                 f"{r['p99']:.1f}", r["errors"], f"{r['client_cpu']:.0%}"])
                    print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
        finally:
            svc.stop()

    cmd = "python experiments/benchmarks/service.py " + " ".join(sys.argv[1:])
    print(header("Latency-prediction service: requests per second over loopback HTTP",
                 cmd.strip()))
    print(table(["ingress", "archs / request", "clients", "requests/s", "archs/s",
                 "p50 (ms)", "p99 (ms)", "errors", "client CPU"], rows))
    print(f"\n{args.seconds:g} s measured per row after {args.warmup:g} s of warm-up; "
          f"closed-loop aiohttp clients in one process on the same machine (client CPU: "
          f"their share of one core); the service on a local Ray with 2 CPUs, one replica, "
          f"`@serve.batch` up to 64 requests or 2 ms; {SPACE} on {DEVICE}, {KIND} predictor; "
          f"{os.cpu_count()} cores shared with everything else running.\n")
    print(table(["Python API: archs / call", "calls/s", "archs/s"], py_rows))
    print("\n`predictor.predict(archs)` on parsed architectures, one process, one thread.")


if __name__ == "__main__":
    main()
