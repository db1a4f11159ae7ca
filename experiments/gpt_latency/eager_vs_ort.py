"""Why language-model latency is timed in ONNX Runtime: the same subnets, the same calls, in
PyTorch eager and in ONNX Runtime (issue 26).

For ``--n`` subnets of each ``--space`` (random weights: a call costs the same whatever the
values) and each decode or prefill ``--devices`` profile, one call of the workload (decode:
one new token with the KV cache filled to the context; prefill: the prompt, no cache) is
timed in

- PyTorch eager: the static subnet (``supernet.extract``) with its own cache, one thread,
  under ``torch.inference_mode``;
- ONNX Runtime: the exported graph a device times (``timing_onnx``), a session with the
  profile's options, fed by the profile's workload.

Each: ``--warmup`` calls, then the median of ``--runs``; the two alternate subnet by subnet,
so the machine's drift hits both alike. Printed: per subnet both medians and their ratio, the
median ratio, and the Spearman rank correlation between the two.

    .venv/bin/python experiments/gpt_latency/eager_vs_ort.py --space gpt_shakespeare gpt2 \\
        --devices cpu-1t-decode256 cpu-1t-prefill128 --n 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import header, machine, session_median_ms, table

from nas.devices import get_device
from nas.measure._prepare import one_torch_thread, prepare_model
from nas.measure._session import make_session, workload_feed
from nas.space import family_part, get_space

ROOT = Path(__file__).resolve().parents[2]


@torch.inference_mode()
def eager_median_ms(gpt: Any, feed: dict[str, np.ndarray], warmup: int, runs: int) -> float:
    """The ONNX feed's call in PyTorch eager: ``input_ids`` and the cache as pairs per block."""
    ids = torch.from_numpy(feed["input_ids"])
    cache = [torch.from_numpy(v) for k, v in feed.items() if k != "input_ids"]
    past = [(cache[i], cache[i + 1]) for i in range(0, len(cache), 2)]
    if past and past[0][0].shape[2] == 0:
        past = []

    def call() -> None:
        gpt(ids, past or None, use_cache=True)

    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def run(space_name: str, device: str, n: int, warmup: int, runs: int, seed: int
        ) -> dict[str, Any]:
    sp: Any = get_space(space_name)
    profile = get_device(device)
    sp.check_workload(profile.workload, device)
    net = family_part(sp, "timing_supernet")(sp)
    export = family_part(sp, "timing_onnx")
    archs = [sp.smallest(), sp.middle(), sp.largest(), *sp.sample_many(max(0, n - 3), seed=seed)]
    rows = []
    with one_torch_thread():
        for a in archs[:n]:
            sess = make_session(prepare_model(export(net, a), profile, 0), profile)
            feed = workload_feed(sess.get_inputs(), profile)
            ort_ms = session_median_ms(sess, feed, warmup, runs)
            eager_ms = eager_median_ms(net.extract(a.to_dict()).eval(), feed, warmup, runs)
            rows.append({"arch": a.to_dict(), "ort_ms": ort_ms, "eager_ms": eager_ms,
                         "eager_over_ort": eager_ms / ort_ms})
            print(f"[{space_name} {device}] {a.hash[:8]} ORT {ort_ms:.3f} ms, eager "
                  f"{eager_ms:.3f} ms", flush=True)
    ort = [r["ort_ms"] for r in rows]
    eager = [r["eager_ms"] for r in rows]
    return {"space": space_name, "device": device, "workload": profile.workload.describe(),
            "rows": rows,
            "median_eager_over_ort": statistics.median(r["eager_over_ort"] for r in rows),
            "spearman": float(spearmanr(ort, eager).statistic)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", nargs="+", default=["gpt_shakespeare"])
    ap.add_argument("--devices", nargs="+", default=["cpu-1t-decode256", "cpu-1t-prefill128"])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/eager_vs_ort.json")
    args = ap.parse_args()
    results = [run(s, d, args.n, args.warmup, args.runs, args.seed)
               for s in args.space for d in args.devices]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "args": vars(args),
                                          "results": results}, indent=1))
    cmd = "python experiments/gpt_latency/eager_vs_ort.py " + " ".join(sys.argv[1:])
    md = [header("PyTorch eager against ONNX Runtime, same subnets and calls", cmd)]
    rows = [[r["space"], r["device"], r["workload"], len(r["rows"]),
             f"{min(x['ort_ms'] for x in r['rows']):.3f}-"
             f"{max(x['ort_ms'] for x in r['rows']):.3f}",
             f"{min(x['eager_ms'] for x in r['rows']):.3f}-"
             f"{max(x['eager_ms'] for x in r['rows']):.3f}",
             f"{r['median_eager_over_ort']:.2f}x", f"{r['spearman']:.3f}"] for r in results]
    md.append(table(["space", "device", "workload", "subnets", "ORT ms", "eager ms",
                     "eager / ORT (median)", "Spearman ORT vs eager"], rows))
    text = "\n".join(md) + "\n"
    Path(args.out).with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
