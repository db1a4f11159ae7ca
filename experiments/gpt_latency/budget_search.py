"""A language model under a decode budget, searched and then checked (issue 26).

On the shipped language model's space (``gpt_shakespeare``) and one decode device whose
latency is measured and predicted in ``--db`` (``benchmark.py`` fills it):

1. ``nas search`` from the shell, twice, under ``-C latency:<device>=<budget>``:
   the Ray engine with the ``perplexity`` proxy (the shipped supernet's inherited weights on
   the first 32,768 held-out tokens), and the predictor engine with the training-free
   ``nonembedding-params`` proxy (predictors only: a second or so);
2. every subnet of each front, afterwards:
   - **perplexity on held-out text the search never read**: the shipped validation works
     (Macbeth, Twelfth Night) after the proxy's first 32,768 tokens;
   - **decode latency in a plain ONNX Runtime loop**: a session per subnet with the
     profile's options, the KV cache filled to the profile's context, ``--warmup`` calls and
     the median of ``--runs``, in ``--sessions`` rounds over the front (a fresh session
     each; the median of the rounds); the device's reference subnet (the space's middle) is
     timed the same way right before each one, so that the machine's drift since the campaign shows
     (``drift``: the reference now over its stored scale) and can be taken out
     (``plain ms / drift``);
   - memory (weights + KV cache at the profile's context, float32, exact);
3. a subnet is **within budget** when its plain decode latency, the drift taken out, is at
   most the budget times (1 + the device's noise-floor p90).

Run from the repository root after ``benchmark.py`` (about 10 minutes; the JSON is written
after each step, and the search studies are resumed, not repeated):

    .venv/bin/python experiments/gpt_latency/budget_search.py \\
        --db sqlite:///runs/gpt_latency.sqlite --device cpu-1t-decode256 --budget 0.6
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import header, machine, session_median_ms, table

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import load_predictor
from nas.measure import noise_floor_from_db
from nas.measure._prepare import one_torch_thread, prepare_model
from nas.measure._scale import device_scale
from nas.measure._session import make_session, workload_feed
from nas.space import family_part, get_space

ROOT = Path(__file__).resolve().parents[2]

SUPERNET = "nas/_data/supernets/gpt_shakespeare.safetensors"


def search_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The two `nas search` command lines (as a user types them)."""
    lat = f"latency:{args.device}"
    common = ["--space", args.space, "-O", "accuracy", "-O", lat,
              "-C", f"{lat}={args.budget:g}", "--db", args.db, "--seed", str(args.seed),
              "--storage", args.storage, "--json", "--no-progress"]
    return {
        "ray": ["nas", "search", *common, "--checkpoint", SUPERNET, "--proxy", "perplexity",
                "--engine", "ray", "--workers", str(args.workers), "-n", str(args.trials),
                "--study", f"{args.study}-ray"],
        "predictor": ["nas", "search", *common, "--proxy", "nonembedding-params",
                      "--engine", "predictor", "--study", f"{args.study}-predictor"],
    }


def run_search(cmd: list[str]) -> dict[str, Any]:
    exe = [str(Path(sys.executable).with_name("nas")), *cmd[1:]]
    t0 = time.time()
    out = subprocess.run(exe, capture_output=True, text=True, cwd=ROOT, check=False)
    resumed = out.returncode != 0 and "continue it with --resume" in out.stderr
    if resumed:  # a second run of the script: the study is there, its budget spent
        out = subprocess.run([*exe, "--resume"], capture_output=True, text=True, cwd=ROOT,
                             check=False)
    if out.returncode != 0:
        sys.exit(f"`{shlex.join(cmd)}` failed ({out.returncode}):\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout)
    res["wall_s"] = round(time.time() - t0, 1)
    res["resumed"] = resumed
    return res


def held_out_ppl(space: Any, archs: list[dict[str, Any]]) -> list[float]:
    """Perplexity per byte of each subnet on the validation text after the proxy's slice."""
    import torch

    from nas._data import shipped_text
    from nas.proxies import ProxyContext, get_proxy
    from nas.train import encode_works, lm_loss, read_text_corpus, windows

    ctx = ProxyContext.build(space.name, checkpoint=ROOT / SUPERNET, cache=False)
    ids = encode_works([t for _, t in read_text_corpus(shipped_text()).works])
    wins = windows(ids, int(space.n_ctx))
    seen = len(windows(ids, int(space.n_ctx), int(get_proxy("perplexity").opts["tokens"])))
    rest = wins[seen:]
    torch.set_num_threads(2)
    return [math.exp(lm_loss(ctx.supernet, a, rest, 16)) for a in archs]


def plain_decode(space: Any, device: str, archs: list[Any], warmup: int,
                 runs: int, sessions: int) -> tuple[np.ndarray, np.ndarray]:
    """(each subnet's plain-loop median ms, the reference's right before it): ``sessions``
    rounds over all subnets, a fresh session each time; the median over the rounds."""
    profile = get_device(device)
    net = family_part(space, "timing_supernet")(space)
    export = family_part(space, "timing_onnx")
    ref = space.middle()

    def once(arch: Any) -> float:
        sess = make_session(prepare_model(export(net, arch), profile, 0), profile)
        return session_median_ms(sess, workload_feed(sess.get_inputs(), profile), warmup, runs)

    subnet = np.zeros((sessions, len(archs)))
    reference = np.zeros((sessions, len(archs)))
    with one_torch_thread():
        for k in range(sessions):
            for i, a in enumerate(archs):
                reference[k, i] = once(ref)
                subnet[k, i] = once(a)
    return np.median(subnet, axis=0), np.median(reference, axis=0)


def check_front(args: argparse.Namespace, engine: str, res: dict[str, Any],
                db: LatencyDB) -> dict[str, Any]:
    sp: Any = get_space(args.space)
    front = [t for t in res["front"] if t["feasible"]]
    archs = [sp.parse(t["arch"]) for t in front]
    print(f"[{engine}] {len(archs)} subnets on the front: plain decode loop", flush=True)
    plain, ref = plain_decode(sp, args.device, archs, args.warmup, args.runs, args.sessions)
    scale = device_scale(args.device, sp, db)
    assert scale is not None, f"no measurements of {args.space} on {args.device} in {args.db}"
    drift = ref / scale.ms
    print(f"[{engine}] held-out perplexity", flush=True)
    ppl = held_out_ppl(sp, [a.to_dict() for a in archs])
    pred = load_predictor(args.device, sp.name, "additive", db=db).predict(archs)
    wl = get_device(args.device).workload
    mem = sp.memory(archs, context=wl.context if wl is not None else None)["total"] / 2**20
    nf = noise_floor_from_db(args.device, sp, db)
    p90 = nf.p90 if nf is not None else 0.0
    rows = []
    for i, t in enumerate(front):
        corrected = float(plain[i] / drift[i])
        rows.append({
            "arch": t["arch"], "proxy_score": t["values"].get("accuracy"),
            "predicted_ms": float(pred[i]), "plain_ms": float(plain[i]),
            "reference_ms": float(ref[i]), "drift": float(drift[i]),
            "plain_ms_drift_out": corrected, "held_out_ppl": ppl[i],
            "memory_mib": float(mem[i]),
            "within_budget": corrected <= args.budget * (1 + p90),
            "params": t["params"], "macs": t["macs"],
        })
    rows.sort(key=lambda r: r["predicted_ms"])
    return {"engine": engine, "wall_s": res["wall_s"], "resumed": res["resumed"],
            "n_trials": res["n_trials"],
            "study": res["study"], "front": rows, "noise_p90": p90,
            "scale_ms": scale.ms, "all_within_budget": all(r["within_budget"] for r in rows)}


def markdown(args: argparse.Namespace, out: dict[str, Any]) -> str:
    cmd = "python experiments/gpt_latency/budget_search.py " + " ".join(sys.argv[1:])
    lines = [header(f"{args.space} under a decode budget of {args.budget:g} ms on "
                    f"{args.device}", cmd)]
    for r in out["runs"]:
        c = shlex.join(out["commands"][r["engine"]])
        when = ("resumed: searched by an earlier run" if r.get("resumed")
                else f"{r['wall_s']:.0f} s from the shell")
        lines.append(f"\n### {r['engine']} engine ({r['n_trials']} trials, {when})\n\n"
                     f"`{c}`\n\nnoise-floor p90 {r['noise_p90']:.3f}; "
                     f"every subnet within budget: **{r['all_within_budget']}**\n")
        rows = [[f"{f['held_out_ppl']:.3f}", f"{f['predicted_ms']:.3f}", f"{f['plain_ms']:.3f}",
                 f"{f['drift']:.3f}", f"{f['plain_ms_drift_out']:.3f}",
                 "yes" if f["within_budget"] else "**no**", f"{f['memory_mib']:.1f}",
                 f"{f['params'] / 1e6:.2f}M"] for f in r["front"]]
        lines.append(table(["held-out perplexity", "predicted ms", "plain ORT ms",
                            "drift (reference now / scale)", "plain ms / drift",
                            "within budget", "memory MiB", "params"], rows))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="gpt_shakespeare")
    ap.add_argument("--device", default="cpu-1t-decode256")
    ap.add_argument("--budget", type=float, required=True, help="decode budget, ms per token")
    ap.add_argument("--db", default="sqlite:///runs/gpt_latency.sqlite")
    ap.add_argument("--storage", default="runs/studies/gpt_budget.log")
    ap.add_argument("--study", default="gpt-decode-budget")
    ap.add_argument("--trials", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=3,
                    help="fresh sessions per subnet (and per reference before it); median")
    ap.add_argument("--engines", nargs="+", default=["ray", "predictor"])
    ap.add_argument("--out", default="runs/gpt_budget.json")
    args = ap.parse_args()
    os.chdir(ROOT)
    db = LatencyDB(args.db)
    cmds = search_commands(args)
    out: dict[str, Any] = {"machine": machine(), "args": vars(args), "commands": cmds,
                           "runs": []}
    for engine in args.engines:
        print(f"[{engine}] {shlex.join(cmds[engine])}", flush=True)
        res = run_search(cmds[engine])
        out["runs"].append(check_front(args, engine, res, db))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    md = markdown(args, out)
    Path(args.out).with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
