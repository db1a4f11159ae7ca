"""Overhead of elasticity: the supernet's active forward against the extracted static subnet's
forward, on the same architecture, input and batch, in eval mode under no_grad.

Run: .venv/bin/python experiments/benchmarks/supernet_overhead.py [--archs 3] [--reps 7]
Timings alternate supernet/static run by run so drift on a shared machine hits both; the table
gives medians and the ratio of medians (target: 1.3 or less at batch 1 and 64).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, median, table

from nas.space import get_space
from nas.supernet import OFASupernet


def timed(fn, x: torch.Tensor) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archs", type=int, default=3, help="random subnets per space")
    ap.add_argument("--reps", type=int, default=7, help="timed runs per model and batch")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for space_name, batches in (("ofa_mbv3", (1, 64)), ("cifar_mbv3", (1, 64))):
        sp = get_space(space_name)
        net = OFASupernet(sp)
        net.calibrate_random()
        net.eval()
        archs = sp.sample_many(args.archs, seed=3)
        for bs in batches:
            sup_t, sta_t = [], []
            for a in archs:
                net.set_active(a)
                sub = net.extract(a).eval()
                x = torch.randn(bs, 3, a.r, a.r)
                reps = args.reps if bs == 1 else max(3, args.reps // 2)
                with torch.no_grad():
                    for _ in range(2):  # warm-up, and fills the kernel cache
                        net(x)
                        sub(x)
                    s1, s2 = [], []
                    for _ in range(reps):
                        s1.append(timed(net, x))
                        s2.append(timed(sub, x))
                sup_t.append(median(s1))
                sta_t.append(median(s2))
            ms, mt = median(sup_t), median(sta_t)
            rows.append([space_name, bs, len(archs), f"{ms * 1000:.2f}", f"{mt * 1000:.2f}",
                         f"{ms / mt:.2f}"])
    print(header("Supernet (elastic) vs extracted static forward",
                 "python experiments/benchmarks/supernet_overhead.py"))
    print(table(["space", "batch", "subnets", "supernet forward (ms)", "static forward (ms)",
                 "ratio"], rows))
    print("\nEval mode, no_grad, 2 torch threads; median over runs, then over subnets.")


if __name__ == "__main__":
    main()
