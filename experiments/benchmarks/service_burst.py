"""A burst of heavy ``POST /specialize`` against a real ``nas serve`` (issue 24's Done-when):
is each answered (a result or a 429) within 10 s, does ``/health`` (and a small predict
request) answer throughout, and how soon after the clients stop is the service's CPU idle?

What is measured: ``nas serve`` is started as a user starts it (loopback, the shipped latency
database (a copy), ``--num-cpus 2``) in its own session. ``--clients`` threads each send one heavy
request at once (ofa_mbv3, accuracy and latency on note10, population 500, generations 400:
about 2.3 s alone on the issue's machine), with a client timeout of ``--client-timeout``
seconds (a request not answered by then is counted as such and its client hangs up).
Meanwhile one thread asks ``GET /health`` and another ``POST /latency/predict`` (one
architecture on note10) every 0.1 s. Answer time is from sending a request to having read its
answer. After the last heavy client is done (and the probes stop), the CPU time of the
service's process tree (the ``nas serve`` process and every process below it: Ray's and
Serve's) is read from /proc every 0.25 s; "seconds to idle" is the time until a one-second
window uses less than 5% of a core. The load average printed says how busy the machine was.

Run: .venv/bin/python experiments/benchmarks/service_burst.py [--clients 50]
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, table

HEAVY: dict[str, Any] = {"space": "ofa_mbv3", "proxy": "ofa-imagenet",
                         "objectives": ["accuracy", "latency:note10"],
                         "population": 500, "generations": 400}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> set[int]:
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        frontier.extend(kids)
    return out


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU seconds of ``pids`` (those still alive)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def seconds_to_idle(pid: int, limit_s: float = 120.0) -> float:
    """Seconds until a one-second window of the tree uses under 5% of a core (the window's
    start); ``limit_s`` if never."""
    t0 = time.monotonic()
    samples: list[tuple[float, float]] = []
    while time.monotonic() - t0 < limit_s:
        samples.append((time.monotonic(), cpu_seconds(tree(pid))))
        while samples and samples[-1][0] - samples[0][0] > 1.0:
            start, used = samples[0]
            if (samples[-1][1] - used) / (samples[-1][0] - start) < 0.05:
                return start - t0
            samples.pop(0)
        time.sleep(0.25)
    return limit_s


def pct(xs: list[float], q: float) -> str:
    return f"{np.percentile(xs, q):.2f}" if xs else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--client-timeout", type=float, default=10.0)
    args = ap.parse_args()
    command = "python experiments/benchmarks/service_burst.py " + " ".join(sys.argv[1:])
    nas = Path(sys.executable).with_name("nas")
    root = Path(tempfile.mkdtemp(prefix="burst-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NAS_CACHE_DIR": str(root / "cache")}
    env.pop("RAY_ADDRESS", None)
    env.pop("NAS_API_TOKEN", None)
    log = (root / "serve.log").open("wb")
    db = root / "latency.sqlite"  # a copy: the service never writes the shipped file
    shipped = Path(__file__).resolve().parents[2] / "latency_db" / "latency.sqlite"
    if shipped.is_file():
        shutil.copyfile(shipped, db)
    proc = subprocess.Popen([str(nas), "serve", "--port", str(port), "--state-dir",
                             str(root / "state"), "--db", str(db), "--num-cpus", "2"],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nas serve did not start: {(root / 'serve.log').read_text()}")
            time.sleep(0.5)
        arch = requests.post(f"{url}/specialize", json={**HEAVY, "population": 10,
                                                          "generations": 2},
                             timeout=120).json()["front"][0]["arch"]
        small = {"device": "note10", "space": "ofa_mbv3", "archs": [arch]}
        assert requests.post(f"{url}/latency/predict", json=small,
                             timeout=60).status_code == 200
        run(args, command, url, small, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def run(args: argparse.Namespace, command: str, url: str, small: dict[str, Any],
        pid: int) -> None:
    stop = threading.Event()
    probes: dict[str, list[tuple[int, float]]] = {"GET /health": [],
                                                  "POST /latency/predict (1 arch)": []}

    def probe(name: str, method: str, path: str, body: Any = None) -> None:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = requests.request(method, f"{url}{path}", json=body, timeout=30)
                code = r.status_code
            except requests.RequestException:
                code = 0
            probes[name].append((code, time.perf_counter() - t))
            time.sleep(0.1)

    def heavy(seed: int) -> tuple[int, float]:
        t = time.perf_counter()
        try:
            r = requests.post(f"{url}/specialize", json={**HEAVY, "seed": seed},
                              timeout=args.client_timeout)
            code = r.status_code
        except requests.RequestException:
            code = 0  # not answered within the client's timeout: it hangs up
        return code, time.perf_counter() - t

    load = os.getloadavg()
    threads = [threading.Thread(target=probe, args=("GET /health", "GET", "/health")),
               threading.Thread(target=probe, args=("POST /latency/predict (1 arch)", "POST",
                                                    "/latency/predict", small))]
    for th in threads:
        th.start()
    time.sleep(0.5)
    with ThreadPoolExecutor(args.clients) as pool:
        answers = list(pool.map(heavy, range(args.clients)))
    stop.set()  # the probes too: idle is the service's own
    for th in threads:
        th.join()
    idle = seconds_to_idle(pid)
    print(header("Service under a burst of heavy /specialize", command))
    print(f"{args.clients} concurrent clients, each one `POST /specialize` (population "
          f"{HEAVY['population']}, generations {HEAVY['generations']}), client timeout "
          f"{args.client_timeout:g} s; `nas serve --num-cpus 2`, loopback.\n")
    times = [t for _, t in answers]
    codes = [c for c, _ in answers]
    print(table(["requests", "200", "429", "other", "not answered", "p50 s", "p99 s", "max s"],
                [[len(answers), codes.count(200), codes.count(429),
                  sum(c not in (0, 200, 429) for c in codes), codes.count(0),
                  pct(times, 50), pct(times, 99), f"{max(times):.2f}"]]))
    print()
    rows = []
    for name, seen in probes.items():
        lat = [t for _, t in seen]
        rows.append([name, len(seen), sum(c == 200 for c, _ in seen), pct(lat, 50),
                     pct(lat, 99), f"{max(lat):.2f}" if lat else "-"])
    print(table(["during the burst", "asked", "200", "p50 s", "p99 s", "max s"], rows))
    print()
    print(f"seconds to CPU idle (service's process tree, < 5% of a core over 1 s) after the "
          f"last client was done: {idle:.2f}")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                  if line.startswith("Model name")), "unknown")
    print(f"lscpu model: {model}; load average before the burst (1, 5, 15 min): "
          f"{', '.join(f'{x:.1f}' for x in load)}")


if __name__ == "__main__":
    main()
