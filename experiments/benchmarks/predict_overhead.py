"""What one latency prediction costs through the Python API (issue 27, "a prediction in
microseconds"): ``predictor.predict([arch])`` for one architecture, and the cost per
architecture in a batch, per kind and space, optionally beside another checkout of the code.

Each predictor is fitted once on synthetic latencies (MACs plus noise: what is timed here is
the call, not the fit) or loaded (the shipped ``note10`` table of ``ofa_mbv3``); then blocks of
``--calls`` single-architecture calls alternate with blocks of one ``--batch`` call, and the
medians over ``--blocks`` blocks are printed. With ``--before PATH`` (a checkout of an earlier
commit, e.g. made by ``git worktree add /tmp/before <commit>``), the same measurement runs in
a subprocess importing ``nas`` from PATH, alternating with this checkout's block by block, and
the ratio is printed: a side-by-side comparison on one machine at one time. ``--cases`` keeps
the cases matching any of its comma-separated patterns (``fnmatch``, e.g. ``'*/gbdt,gpt_*'``).

    .venv/bin/python experiments/benchmarks/predict_overhead.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, machine, table

CASES = [("ofa_mbv3", "flops"), ("ofa_mbv3", "additive"), ("ofa_mbv3", "gbdt"),
         ("ofa_mbv3", "transfer"), ("ofa_mbv3", "note10"), ("tiny", "additive"),
         ("gpt_shakespeare", "flops"), ("gpt_shakespeare", "additive"),
         ("gpt_shakespeare", "gbdt"), ("gpt_shakespeare", "transfer")]


def select(patterns: str | None) -> list[tuple[str, str]]:
    """The cases whose ``space/kind`` matches one of the comma-separated ``patterns``."""
    if not patterns:
        return CASES
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    got = [c for c in CASES if any(fnmatch.fnmatchcase(f"{c[0]}/{c[1]}", p) for p in pats)]
    if not got:
        sys.exit(f"--cases {patterns!r} matches none of "
                 f"{', '.join(f'{s}/{k}' for s, k in CASES)}")
    return got


def _predictor(space: str, kind: str) -> Any:
    import numpy as np

    from nas.latency import load_predictor, make_predictor
    from nas.space import get_space

    if kind == "note10":
        return load_predictor("note10", space)
    sp: Any = get_space(space)
    archs = sp.sample_many(300, seed=0)
    y = np.asarray(sp.costs(archs)["macs"], dtype=float) / 1e6
    y = (y / y.mean() + 0.2) * np.random.default_rng(0).normal(1.0, 0.03, len(y))
    device = "cpu-1t-decode256" if space.startswith("gpt") else None
    return make_predictor(kind, space, device=device).fit(archs, y)


def measure(cases: list[tuple[str, str]], calls: int, batch: int, blocks: int) -> dict[str, Any]:
    """Per case: median microseconds of one single-architecture call, and per architecture
    in a batch."""
    from nas.space import get_space

    out: dict[str, Any] = {}
    for space, kind in cases:
        est = _predictor(space, kind)
        sp: Any = get_space(space)
        pool = sp.sample_many(min(batch * 6, sp.n_architectures() // 2), seed=2)
        if kind == "note10":  # its tables are at resolutions 160 to 224 in steps of 16
            pool = [a for a in pool if a.r in (160, 176, 192, 208, 224)]
        one, many = pool[:1], pool[1:batch + 1]
        for _ in range(50):
            est.predict(one)
        singles, batched = [], []
        for _ in range(blocks):
            t = time.perf_counter()
            for _ in range(calls):
                est.predict(one)
            singles.append((time.perf_counter() - t) / calls * 1e6)
            t = time.perf_counter()
            est.predict(many)
            batched.append((time.perf_counter() - t) / batch * 1e6)
        out[f"{space}/{kind}"] = {"single_us": statistics.median(singles),
                                  "per_arch_in_batch_us": statistics.median(batched)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=400, help="single calls per block")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--blocks", type=int, default=5, help="blocks per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (before and after alternate)")
    ap.add_argument("--before", type=Path, default=None, help="an earlier checkout to compare")
    ap.add_argument("--cases", default=None,
                    help="only the space/kind cases matching these comma-separated patterns")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="runs/predict_overhead.json")
    args = ap.parse_args()
    cases = select(args.cases)
    if args.child:
        import nas

        print(json.dumps({"nas": nas.__file__,
                          **measure(cases, args.calls, args.batch, args.blocks)}))
        return
    runs: dict[str, list[dict[str, Any]]] = {"after": [], "before": []}
    for _ in range(args.rounds):
        runs["after"].append(measure(cases, args.calls, args.batch, args.blocks))
        if args.before is not None:
            env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
            res = subprocess.run(
                [sys.executable, __file__, "--child", "--calls", str(args.calls), "--batch",
                 str(args.batch), "--blocks", str(args.blocks),
                 *(["--cases", args.cases] if args.cases else [])],
                env=env, capture_output=True, text=True, check=True, cwd=args.before)
            got = json.loads(res.stdout.strip().splitlines()[-1])
            if not str(got.pop("nas")).startswith(str(args.before.resolve())):
                sys.exit(f"--before {args.before}: the child imported another nas")
            runs["before"].append(got)
    rows, summary = [], {}
    for key in runs["after"][0]:
        after = statistics.median(r[key]["single_us"] for r in runs["after"])
        batch = statistics.median(r[key]["per_arch_in_batch_us"] for r in runs["after"])
        row: list[Any] = [key, f"{after:.1f}", f"{batch:.2f}"]
        summary[key] = {"single_us": after, "per_arch_in_batch_us": batch}
        if runs["before"]:
            before = statistics.median(r[key]["single_us"] for r in runs["before"])
            row += [f"{before:.1f}", f"{before / after:.1f}x"]
            summary[key]["before_single_us"] = before
        rows.append(row)
    cols = ["space/kind", "one architecture, µs (median)", "per architecture in a batch, µs"]
    if runs["before"]:
        cols += ["before: one architecture, µs", "before / now"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "args": {
        k: str(v) for k, v in vars(args).items()}, "summary": summary, "runs": runs}, indent=1))
    cmd = "python experiments/benchmarks/predict_overhead.py " + " ".join(sys.argv[1:])
    print(header("One latency prediction through the Python API", cmd))
    print(table(cols, rows))


if __name__ == "__main__":
    main()
