"""``POST /specialize``: how long a user waits for a specialized subnet over HTTP.

The service (``nas.serve.start``, local Ray, loopback) answers predictor-only searches in the
request. Requests, each sent after the previous answer (one client), on OFA's ImageNet
predictor and OFA's Note10 table (shipped; an empty latency database):

- ``one budget``: ``objectives: [accuracy]``, ``constraints: {latency:note10: 20}``;
- ``front + budgets``: ``objectives: [accuracy, latency:note10]`` under 50 ms, with the best
  subnet under 15, 20, 25, 30 and 40 ms picked from the front.

Each request has another seed (so no answer is cached anywhere); the first request of the
service (which loads the predictors) is reported apart. Wall time is from sending the
request to having read the answer; the search's own time is the answer's ``seconds``.

Run: .venv/bin/python experiments/benchmarks/specialize_http.py [--requests 15]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, table

from nas.serve import ServiceSettings, start

REQUESTS: dict[str, dict[str, Any]] = {
    "one budget": {"space": "ofa_mbv3", "proxy": "ofa-imagenet", "objectives": ["accuracy"],
                   "constraints": {"latency:note10": 20}},
    "front + budgets": {"space": "ofa_mbv3", "proxy": "ofa-imagenet",
                        "objectives": ["accuracy", "latency:note10"],
                        "constraints": {"latency:note10": 50},
                        "budgets": {"latency:note10": [15, 20, 25, 30, 40]}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=15, help="timed requests per kind")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-specialize-"))
    svc = start(ServiceSettings(port=free_port(), db=f"sqlite:///{tmp / 'empty.sqlite'}",
                                state_dir=str(tmp / "state")), num_cpus=2)
    rows = []
    try:
        url = f"{svc.url}/specialize"
        t0 = time.perf_counter()
        first = requests.post(url, json={**REQUESTS["one budget"], "seed": 10_000},
                              timeout=300)
        first.raise_for_status()
        cold = time.perf_counter() - t0
        for name, body in REQUESTS.items():
            wall, search = [], []
            for seed in range(args.requests):
                t = time.perf_counter()
                r = requests.post(url, json={**body, "seed": seed}, timeout=300)
                r.raise_for_status()
                wall.append(time.perf_counter() - t)
                search.append(r.json()["seconds"])
            out = r.json()
            rows.append([name, args.requests, f"{statistics.median(wall):.3f}",
                         f"{sorted(wall)[int(0.9 * (len(wall) - 1))]:.3f}",
                         f"{statistics.median(search):.3f}", out["n_scored"],
                         len(out["front"])])
            print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    finally:
        svc.stop()
    cmd = "python experiments/benchmarks/specialize_http.py " + " ".join(sys.argv[1:])
    print(header("POST /specialize: a specialized subnet over HTTP", cmd.strip()))
    print(table(["request", "requests", "median wall (s)", "p90 wall (s)",
                 "median search (s)", "subnets scored", "front size"], rows))
    print(f"\nFirst request of the service (loads the predictors): {cold:.2f} s. One client, "
          "loopback, local Ray with 2 CPUs; population 100, 300 generations (the defaults).\n")


if __name__ == "__main__":
    main()
