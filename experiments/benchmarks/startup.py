"""How long the quick commands take from the shell (issue 27, "commands that start fast"):
each command as a user types it, in a fresh process, so that what is timed is mostly Python
importing what the command needs; optionally beside an earlier checkout of the code.

The commands: ``nas search`` on the predictor engine (OFA's ImageNet accuracy predictor under
a latency budget on ``note10``, the shipped lookup table), ``nas latency predict`` of one
architecture on ``note10``, ``nas arch info`` of one architecture, and ``nas --help`` for
reference. Each runs ``--runs`` times as the ``nas`` script runs it (``from nas.cli import
main``, with this interpreter), after ``--warmup`` untimed runs, which also write the
checkout's bytecode (``PYTHONDONTWRITEBYTECODE`` is unset for the commands: a user's second
run finds it); the median wall time and the median CPU time (user + system) are printed.

With ``--before PATH`` (a checkout of an earlier commit, e.g. made by ``git worktree add
/tmp/before <commit>``) the same commands run with ``PYTHONPATH=PATH``, alternating with this
checkout's run by run (which goes first alternates too), and the ratio is printed: a
side-by-side comparison on one machine at one time. Each side gets an empty latency database
of its own (made by its own code) and a fresh study storage per search, so neither finds what
the other stored. ``--threads 1`` keeps the numbers of a busy machine sane (torch's and
numpy's thread pools spin otherwise); the default leaves them as a user has them.

    git worktree add /tmp/before <commit>
    .venv/bin/python experiments/benchmarks/startup.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, machine, table

ROOT = Path(__file__).resolve().parents[2]
#: OFA's largest MobileNetV3 subnet at 224 (any architecture of the space would do)
ARCH = json.dumps({"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224},
                  separators=(",", ":"))
#: (label, arguments of `nas`); {db} and {storage} are filled per run
COMMANDS: list[tuple[str, list[str]]] = [
    ("nas search (predictor engine)",
     ["search", "--space", "ofa_mbv3", "--proxy", "ofa-imagenet", "-O", "accuracy",
      "-C", "latency:note10=25", "--db", "{db}", "--storage", "{storage}"]),
    ("nas latency predict", ["latency", "predict", "-d", "note10", "-s", "ofa_mbv3",
                             "-a", ARCH, "--db", "{db}"]),
    ("nas arch info", ["arch", "info", "-s", "ofa_mbv3", "-a", ARCH]),
    ("nas --help", ["--help"]),
]
#: what each side runs: the `nas` script's own lines, so PYTHONPATH picks the checkout
_NAS = "import sys; from nas.cli import main; sys.exit(main())"


class Side:
    """One checkout: its PYTHONPATH, an empty latency database and a folder for studies."""

    def __init__(self, name: str, root: Path, tmp: Path, threads: int | None) -> None:
        self.name, self.root = name, root.resolve()
        self.dir = tmp / name
        self.dir.mkdir()
        self.env = {**os.environ, "PYTHONPATH": str(self.root), "COLUMNS": "120"}
        self.env.pop("NAS_DB_URL", None)
        # bytecode written by the warm-up runs, as any user's second run finds it
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        if threads is not None:  # torch's and numpy's BLAS thread pools alike
            self.env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                            MKL_NUM_THREADS=str(threads))
        self.db = self.dir / "latency.sqlite"
        self.n = 0
        probe = subprocess.run(
            [sys.executable, "-c", "import nas, sys; from nas.db import LatencyDB; "
             "LatencyDB(sys.argv[1]); print(nas.__file__)", str(self.db)],
            env=self.env, cwd=self.root, capture_output=True, text=True, check=True)
        if not probe.stdout.strip().startswith(str(self.root)):
            sys.exit(f"{name} ({root}): the child imported another nas: {probe.stdout}")

    def run(self, args: list[str]) -> tuple[float, float]:
        """Wall and CPU seconds (user + system) of one ``nas`` command."""
        self.n += 1
        fill = {"{db}": str(self.db), "{storage}": str(self.dir / f"study{self.n}.journal")}
        argv = [fill.get(a, a) for a in args]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _NAS, *argv], env=self.env, cwd=self.root,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            sys.exit(f"{self.name}: `nas {' '.join(argv)}` exited {done.returncode}:\n"
                     f"{done.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each command and side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--before", type=Path, default=None, help="an earlier checkout to compare")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS and OPENBLAS_NUM_THREADS of the commands (default: "
                    "unset, as a user runs them; 1 keeps a busy machine's numbers sane)")
    ap.add_argument("--out", default="runs/startup.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nas-startup-"))
    try:
        sides = [Side("now", ROOT, tmp, args.threads)]
        if args.before is not None:
            sides.append(Side("before", args.before, tmp, args.threads))
        runs: dict[str, dict[str, list[list[float]]]] = {
            label: {s.name: [] for s in sides} for label, _ in COMMANDS}
        for _ in range(args.warmup):
            for _label, argv in COMMANDS:
                for s in sides:
                    s.run(argv)
        for i in range(args.runs):
            for label, argv in COMMANDS:
                for s in (sides if i % 2 == 0 else sides[::-1]):
                    runs[label][s.name].append(list(s.run(argv)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def med(label: str, side: str, k: int) -> float:
        return statistics.median(r[k] for r in runs[label][side])

    rows, summary = [], {}
    for label, argv in COMMANDS:
        now_wall, now_cpu = med(label, "now", 0), med(label, "now", 1)
        summary[label] = {"argv": argv, "now_wall_s": now_wall, "now_cpu_s": now_cpu}
        row: list[Any] = [label, f"{now_wall:.2f}"]
        if args.before is not None:
            before_wall, before_cpu = med(label, "before", 0), med(label, "before", 1)
            row += [f"{before_wall:.2f}", f"{before_wall / now_wall:.1f}x"]
            summary[label].update(before_wall_s=before_wall, before_cpu_s=before_cpu)
            row += [f"{now_cpu:.2f}", f"{before_cpu:.2f}"]
        else:
            row += [f"{now_cpu:.2f}"]
        rows.append(row)
    cols = ["command", "now: wall s (median)"]
    cols += (["before: wall s", "before / now", "now: CPU s", "before: CPU s"]
             if args.before is not None else ["now: CPU s"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "args": {
        k: str(v) for k, v in vars(args).items()}, "arch": ARCH, "summary": summary,
        "runs": runs}, indent=1))
    cmd = "python experiments/benchmarks/startup.py " + " ".join(sys.argv[1:])
    print(header(f"Commands from the shell: fresh process, median of {args.runs}", cmd))
    print(table(cols, rows))


if __name__ == "__main__":
    main()
