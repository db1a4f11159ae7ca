"""Run tests many times next to CPU-burning neighbours, to measure how often they fail by chance.

Issue 23's bar for a test that depends on timing: 200 runs with two CPU-burning neighbours,
zero failures. This script starts the neighbours (processes spinning on arithmetic, one per
``--burners``), runs the named tests ``--count`` times each in one pytest process
(pytest-repeat's ``--count``), or in processes of ``--batch`` repeats each with the result so
far written to ``--out`` after each (a soak stopped early keeps what it measured), and prints
the date, the machine, the command, and per test the runs, failures and the median and
slowest duration, as a Markdown table for RESULTS.md (``--json`` for the raw counts).

    python experiments/benchmarks/soak.py --count 200 --burners 2 -- \\
        tests/serve/test_specialize.py::test_x tests/search/test_search_ray.py::test_y
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: --note: what else loaded the machine (e.g. a training run beside), kept in the result
NOTE = [""]


def _burn(stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0.0
    while not stop.is_set():
        for i in range(200_000):
            x += i * 1e-9


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _read_junit(xml_path: Path, per: dict[str, dict[str, list[float] | int]]) -> None:
    """Add the test cases of a JUnit XML file to ``per`` (runs, failures, skips, seconds)."""
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = case.get("classname", "").replace(".", "/") + ".py::" + \
            case.get("name", "").split("[")[0]
        params = case.get("name", "")
        if "[" in params:  # keep the test's own parameters, drop pytest-repeat's
            inner = re.sub(r"-?\d+-\d+$", "", params[params.index("[") + 1:-1])
            if inner:
                name += f"[{inner}]"
        row = per[name]
        row["runs"] += 1  # type: ignore[operator]
        if case.find("failure") is not None or case.find("error") is not None:
            row["failed"] += 1  # type: ignore[operator]
        if case.find("skipped") is not None:
            row["skipped"] += 1  # type: ignore[operator]
        row["seconds"].append(float(case.get("time", 0)))  # type: ignore[union-attr]


def run(tests: list[str], count: int, burners: int, extra: list[str], batch: int = 0,
        on_batch: Callable[[dict[str, object]], None] | None = None) -> dict[str, object]:
    """Run ``tests`` ``count`` times each beside ``burners`` spinning processes, in pytest
    processes of ``batch`` repeats each (0: one process); ``on_batch`` gets the result so far
    after each, so a soak stopped early keeps what it measured."""
    stop = mp.Event()
    procs = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(burners)]
    for p in procs:
        p.start()
    per: dict[str, dict[str, list[float] | int]] = defaultdict(
        lambda: {"runs": 0, "failed": 0, "skipped": 0, "seconds": []})
    t0, done, exits, tail = time.time(), 0, [], []
    loads: list[float] = []  # the 1-minute load average every 10 s: what "under load" was
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(10):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample, daemon=True).start()
    try:
        while done < count:
            n = min(batch or count, count - done)
            with tempfile.TemporaryDirectory() as tmp:
                xml_path = Path(tmp) / "junit.xml"
                cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                       "repeat", f"--count={n}", "--repeat-scope=function",
                       f"--junitxml={xml_path}", "-o", "junit_family=xunit2", *extra, *tests]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if xml_path.exists():
                    _read_junit(xml_path, per)
            done += n
            exits.append(proc.returncode)
            tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout else []
            if on_batch is not None:
                on_batch(_result(per, count, burners, done, time.time() - t0, exits, tail,
                                 loads))
    finally:
        sampling.set()
        stop.set()
        for p in procs:
            p.join(timeout=5)
    return _result(per, count, burners, done, time.time() - t0, exits, tail, loads)


def _secs(row: dict[str, list[float] | int]) -> list[float]:
    secs = row["seconds"]
    assert isinstance(secs, list)
    return secs


def _result(per: dict[str, dict[str, list[float] | int]], count: int, burners: int, done: int,
            wall: float, exits: list[int], tail: list[str],
            loads: list[float]) -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "cores": mp.cpu_count(), "python": platform.python_version(),
        "burners": burners, "count": count, "repeats_done": done, "wall_s": round(wall, 1),
        "command": " ".join(["python", *sys.argv]), "pytest_exits": exits,
        "pytest_tail": tail, "note": NOTE[0],
        "load_1min": {"median": round(statistics.median(loads), 2) if loads else None,
                      "min": round(min(loads), 2) if loads else None, "samples": len(loads)},
        "tests": {k: {"runs": v["runs"], "failed": v["failed"], "skipped": v["skipped"],
                      "median_s": round(statistics.median(_secs(v)), 2) if _secs(v) else None,
                      "max_s": round(max(_secs(v)), 2) if _secs(v) else None}
                  for k, v in sorted(per.items())},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200, help="runs of each test")
    ap.add_argument("--burners", type=int, default=2, help="CPU-burning neighbours")
    ap.add_argument("--json", action="store_true", help="print the raw result as JSON")
    ap.add_argument("--out", type=Path, help="also write the JSON result here")
    ap.add_argument("--pytest-arg", action="append", default=[],
                    help="extra pytest argument (repeatable), e.g. -m 'timing or not timing'")
    ap.add_argument("--batch", type=int, default=0,
                    help="repeats per pytest process (0: all in one); with --out, the result "
                         "so far is written after each batch")
    ap.add_argument("--note", default="",
                    help="what else runs beside (kept in the result), e.g. a training job")
    ap.add_argument("tests", nargs="+", help="pytest node ids")
    args = ap.parse_args()
    NOTE[0] = args.note

    def write(res: dict[str, object]) -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(res, indent=2) + "\n")

    res = run(args.tests, args.count, args.burners, args.pytest_arg, args.batch, write)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        load = res["load_1min"]
        assert isinstance(load, dict)
        print(f"{res['date']} · {res['cpu']}, {res['cores']} cores, Python {res['python']} · "
              f"{res['burners']} CPU-burning neighbours · `{res['command']}` · "
              f"{res['wall_s']} s · 1-minute load average median {load['median']}"
              f" (min {load['min']}){' · ' + NOTE[0] if NOTE[0] else ''}\n")
        print("| test | runs | failed | skipped | median s | slowest s |")
        print("|---|---|---|---|---|---|")
        for name, row in res["tests"].items():  # type: ignore[attr-defined]
            print(f"| `{name}` | {row['runs']} | {row['failed']} | {row['skipped']} | "
                  f"{row['median_s']} | {row['max_s']} |")
    failed = sum(r["failed"] for r in res["tests"].values())  # type: ignore[attr-defined]
    return 1 if failed or not res["tests"] else 0


if __name__ == "__main__":
    sys.exit(main())
