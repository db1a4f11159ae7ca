"""Shared bits of the benchmark scripts: machine description and table printing."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
from collections.abc import Sequence


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def header(title: str, command: str) -> str:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"## {title}\n\n{now} · {machine()} · `{command}`\n"


def table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table."""
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def session_median_ms(sess: object, feed: dict, warmup: int, runs: int) -> float:
    """Median wall time (ms) of ``runs`` calls of an ONNX Runtime session on ``feed``, after
    ``warmup`` untimed calls: the plain loop a user would write."""
    import time

    for _ in range(warmup):
        sess.run(None, feed)  # type: ignore[attr-defined]
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        sess.run(None, feed)  # type: ignore[attr-defined]
        ts.append(time.perf_counter_ns() - t0)
    return statistics.median(ts) / 1e6
