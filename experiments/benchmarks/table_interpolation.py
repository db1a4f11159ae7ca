"""How well the ``table`` kind interpolates between lookup-table resolutions.

OFA's Note10 tables price five resolutions (160..224 in steps of 16). With ``interpolate``,
a subnet at a resolution in between is priced block by block, each entry interpolated
between the two neighbouring tables, linearly in ``r**2`` (the default, a layer's work grows
with its feature map's area) or, for comparison, linearly in ``r``. To see how well, hide
one table and predict its resolution from its neighbours: 176 from 160 and 192, 208 from 192
and 224, 192 from 176 and 208, and 192 from 160 and 224 (a gap twice as wide as any real
one). Over random ofa_mbv3 subnets: MAPE, worst error and median bias of the interpolated
price against the hidden table's own sum.

Run: .venv/bin/python experiments/benchmarks/table_interpolation.py [--n 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, table

from nas.latency import PREDICTORS, load_predictor
from nas.search._evolve import GenomeCodec
from nas.space import get_space

CASES = [(176, (160, 192)), (208, (192, 224)), (192, (176, 208)), (192, (160, 224))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="random subnets per case")
    args = ap.parse_args()
    sp = get_space("ofa_mbv3")
    full = load_predictor("note10", "ofa_mbv3", db="sqlite:///:memory:")
    rows = []
    for held, (lo, hi) in CASES:
        a = GenomeCodec(sp, [held]).decode(
            GenomeCodec(sp, [held]).random(args.n, np.random.default_rng(held)))
        truth = full.predict(a)
        table_ = {**full.table, "resolutions": [lo, hi]}
        est = PREDICTORS.get("table").from_state({"space": "ofa_mbv3", "interpolate": True},
                                        {"table": table_, "n_train": 0})
        in_area = est.predict(a)
        # linear in r: the same two prices, weighted by (r - lo) / (hi - lo)
        at = {r: full.predict(type(a)(ks=a.ks, e=a.e, d=a.d, r=np.full(len(a), r)))
              for r in (lo, hi)}
        w = (held - lo) / (hi - lo)
        in_r = (1 - w) * at[lo] + w * at[hi]
        for name, pred in (("r^2 (default)", in_area), ("r", in_r)):
            err = pred / truth - 1
            rows.append([held, f"{lo}, {hi}", name, f"{100 * np.mean(np.abs(err)):.2f}%",
                         f"{100 * np.max(np.abs(err)):.2f}%", f"{100 * np.median(err):+.2f}%"])
    cmd = "python experiments/benchmarks/table_interpolation.py " + " ".join(sys.argv[1:])
    print(header("Lookup-table interpolation between resolutions (OFA's Note10 tables)",
                 cmd.strip()))
    print(table(["hidden r", "from tables", "interpolated in", "MAPE", "worst",
                 "median bias"], rows))
    print(f"\n{args.n} random ofa_mbv3 subnets per hidden resolution, priced by the hidden "
          "table itself (the truth) and by interpolation between its neighbours.\n")


if __name__ == "__main__":
    main()
