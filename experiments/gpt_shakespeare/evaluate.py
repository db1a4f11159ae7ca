"""Evaluate the shipped Shakespeare language-model supernet (space ``gpt_shakespeare``, issue 25
item 5): inherited perplexity, the LM proxies' rankings, and subnets trained alone.

Command (from the repository root, in the background; resumable with ``--resume``)::

    nohup .venv/bin/python experiments/gpt_shakespeare/evaluate.py \\
        --json runs/gpt_shakespeare_eval.json > runs/gpt_shakespeare_eval.md \\
        2> runs/gpt_shakespeare_eval.log &

What it measures (Markdown on stdout; the same and more with ``--json PATH``; both headed by
the date, the CPU model from ``lscpu`` and the command):

a) Validation perplexity with inherited weights of the largest, the middle and the smallest
   subnet, on the whole shipped validation text (``nas/_data/lm/shakespeare_val``: Macbeth
   and Twelfth Night, 218,305 byte-level tokens, 852 windows of the space's context of 256).
b) ``--subnets`` held-out random subnets (drawn with the space's ``sample_many``, seeded by
   ``--seed``, distinct, none of the three above): inherited perplexity on the whole
   validation text; the ``perplexity`` proxy's score (``-log`` of the perplexity on its
   default slice, the first 32,768 tokens); the ``nonembedding-params`` proxy's score;
   MACs per token (at a context of 256) and parameters. Kendall's tau (tau-b,
   ``scipy.stats.kendalltau``) of each against inherited full-validation perplexity, signed
   so that lower perplexity is better: tau is computed between each score (higher = predicted
   better; MACs and parameters taken as "more is better") and ``-perplexity``, so +1 is the
   same ranking.
c) ``--alone`` of those subnets, spread over their range of parameters, each trained from
   random initialisation alone for ``--alone-steps`` steps with the supernet's recipe
   (``--config``, default ``experiments/gpt_shakespeare/config.yaml``: the same batches of
   16 x 256 training tokens, AdamW and its settings, warm-up then a cosine to 0 over the
   steps, gradient clipping; one subnet a step, on the next tokens, instead of the sandwich's
   four), run by ``nas.train.LMTrainer`` itself (its ``_draw`` hook returns the one subnet;
   the initialisation is the config's seeded supernet initialisation, of which the subnet
   uses its prefix); then their perplexity on the whole validation text, against inherited,
   and Kendall's tau between the two rankings. The warm-up is the config's where it is
   shorter than the run, else scaled by steps / the config's steps.

``--json`` is rewritten after every subnet evaluated or trained; ``--resume`` continues from
what it holds (same supernet, config, seed and settings, else one error line) and skips that.

Expected runtime with ``--threads 2`` (the defaults: 33 subnets evaluated, 5 x 300 steps):
the development run (``--subnets 4 --alone 2 --alone-steps 5``, beside the supernet's
training and a soak, load about 3 on the 2 cores) took 10-60 s per evaluation on the whole
validation text (smallest to largest) and 1.2 s (0.4M parameters) to 2.6 s (1.7M) per step
trained alone. At those rates the defaults take about 20-25 minutes for (a) and (b) and
35-45 for (c), an hour in all on the busy machine; expect roughly half on a quiet one.
``--subnets 6 --alone 2 --alone-steps 5`` checks the script in about 7 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from scipy.stats import kendalltau

from nas._io import sha256_file
from nas.errors import NASError
from nas.train import LMTrainer

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SUPERNET = ROOT / "nas" / "_data" / "supernets" / "gpt_shakespeare.safetensors"
DEFAULT_CONFIG = ROOT / "experiments" / "gpt_shakespeare" / "config.yaml"
FORMAT = "gpt_shakespeare_eval/1"


class Fail(Exception):
    """One ``error:`` line, exit status 2."""


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown CPU"


def label(arch: dict[str, Any]) -> str:
    """A short name: depth x width, heads per layer, MLP width per layer."""
    return (f"{arch['n_layer']}x{arch['n_embd']} h{''.join(str(h) for h in arch['n_head'])} "
            f"mlp {'/'.join(str(m) for m in arch['mlp'])}")


def tau(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Kendall's tau-b of ``x`` against ``y`` and its p-value (None where undefined)."""
    if len(x) < 2:
        return {"tau": None, "p": None}
    res = kendalltau(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    t, p = float(res.statistic), float(res.pvalue)
    return {"tau": None if math.isnan(t) else round(t, 4),
            "p": None if math.isnan(p) else float(f"{p:.3g}")}


def fmt_tau(t: dict[str, float | None]) -> str:
    if t["tau"] is None:
        return "n/a"
    return f"{t['tau']:+.3f}" + ("" if t["p"] is None else f" (p = {t['p']:.2g})")


def table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------- training alone
class AloneTrainer(LMTrainer):
    """The supernet's training run with one subnet a step: ``arch`` alone on the next tokens
    (the sandwich's largest-subnet term), every other part of the recipe unchanged."""

    def __init__(self, arch: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arch = arch

    def _draw(self, phase: int, rng: np.random.Generator) -> tuple[int, list[dict[str, Any]]]:
        return self.block, [self.arch]


def alone_config(cfg: Any, steps: int) -> tuple[Any, int]:
    """The supernet's config for a run of ``steps`` steps of one subnet: one stretch, no
    shipped copy, no time budget, no initial weights, no largest-only phase; the warm-up
    kept where it is shorter than the run, else scaled by ``steps / cfg.steps``. Returns
    ``(config, warm-up)``."""
    from nas.train import LMTrainConfig

    warmup = cfg.warmup_steps if cfg.warmup_steps < steps else \
        min(steps - 1, round(cfg.warmup_steps * steps / cfg.steps))
    d = cfg.to_dict()
    d.update(steps=steps, checkpoint_every=steps, warmup_steps=warmup, ship=None, init=None,
             budget_minutes=None, eval={"tokens": cfg.block, "batch_size": 1},
             largest_only_steps=0)  # one subnet a step anyway
    return LMTrainConfig.from_dict(d, where="alone config"), warmup


def pick_spread(rows: list[dict[str, Any]], k: int) -> list[int]:
    """Indices of ``k`` rows spread evenly over their range of parameters."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["params"])
    if k >= len(order):
        return order
    picks = [order[round(j * (len(order) - 1) / max(1, k - 1))] for j in range(k)]
    return list(dict.fromkeys(picks))


# ---------------------------------------------------------------------- the evaluation
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--supernet", type=Path, default=DEFAULT_SUPERNET,
                   help="GPT supernet checkpoint (default the shipped "
                   "nas/_data/supernets/gpt_shakespeare.safetensors)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="the supernet's training config: its recipe trains the subnets alone")
    p.add_argument("--subnets", type=int, default=30, help="held-out random subnets")
    p.add_argument("--seed", type=int, default=2025, help="seed of the held-out subnets")
    p.add_argument("--alone", type=int, default=5, help="subnets trained alone (0: none)")
    p.add_argument("--alone-steps", type=int, default=300, help="steps of each")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None,
                   help="write the results here (rewritten after every stage)")
    p.add_argument("--resume", action="store_true",
                   help="continue the evaluation in --json (same supernet and settings)")
    a = p.parse_args(argv)
    for name in ("subnets", "alone", "alone_steps", "threads"):
        value, least = getattr(a, name), 2 if name == "subnets" else 0 if name == "alone" else 1
        if value < least:
            raise Fail(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value}")
    if a.alone > a.subnets:
        raise Fail(f"--alone must be at most --subnets ({a.subnets}), got {a.alone}")
    if a.resume and a.json is None:
        raise Fail("--resume needs --json PATH (the evaluation to continue)")
    return a


def load_previous(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any] | None:
    """What an earlier run of the same evaluation left in ``--json`` (with ``--resume``)."""
    path: Path | None = args.json
    if path is None or not path.exists():
        return None
    if not args.resume:
        raise Fail(f"--json {path} exists; pass --resume to continue that evaluation, or "
                   "choose another file")
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Fail(f"--json {path} is not readable JSON ({exc})") from None
    if not isinstance(old, dict) or old.get("format") != FORMAT:
        raise Fail(f"--json {path} is not an evaluation of this script (format "
                   f"{old.get('format') if isinstance(old, dict) else None!r})")
    if old.get("settings") != settings:
        diff = sorted(k for k in settings if old.get("settings", {}).get(k) != settings[k])
        raise Fail(f"--json {path} was made with other settings ({', '.join(diff)} differ); "
                   "choose another file")
    return old


class Evaluation:
    """The three stages, each adding to ``res`` and rewriting ``--json`` as it goes."""

    def __init__(self, args: argparse.Namespace) -> None:
        from nas._data import shipped_text
        from nas.proxies import ProxyContext, get_proxy
        from nas.supernet import read_gpt_checkpoint_meta
        from nas.train import (
            LMTrainConfig,
            encode_works,
            load_any_config,
            read_text_corpus,
            windows,
        )

        self.args = args
        if not args.supernet.is_file():
            hint = (" (the supernet is shipped when experiments/gpt_shakespeare/train.sh ends; "
                    "pass --supernet PATH meanwhile)" if args.supernet == DEFAULT_SUPERNET
                    else "")
            raise Fail(f"--supernet {args.supernet} not found{hint}")
        cfg = load_any_config(args.config)
        if not isinstance(cfg, LMTrainConfig):
            raise Fail(f"--config {args.config} is not a language-model training config")
        self.cfg = cfg
        meta = read_gpt_checkpoint_meta(args.supernet)
        space_name = meta.get("space") or cfg.space
        if space_name != cfg.space:
            raise Fail(f"--supernet {args.supernet} is of space {space_name!r}, --config "
                       f"{args.config} trains {cfg.space!r}")
        self.started = time.perf_counter()
        self.ctx = ProxyContext.build(space_name, checkpoint=args.supernet, cache=False)
        self.space = cast(Any, self.ctx.space)  # a GPTSpace (typed as the OFA space)
        if self.ctx.supernet is None:
            raise Fail(f"--supernet {args.supernet} was not loaded")
        self.net: Any = self.ctx.supernet
        val_src = shipped_text()
        val_ids = encode_works([t for _, t in read_text_corpus(val_src).works])
        self.full = windows(val_ids, int(self.space.n_ctx))  # (n, ctx + 1)
        self.batch = cfg.eval.batch_size
        settings = {"supernet_sha256": sha256_file(args.supernet, "supernet"), "space": space_name,
                    "subnets": args.subnets, "seed": args.seed, "alone": args.alone,
                    "alone_steps": args.alone_steps, "config_fingerprint": cfg.fingerprint()}
        trained = meta["extra"]
        if trained.get("fingerprint") != cfg.fingerprint():
            say(f"note: --config {args.config} (fingerprint {cfg.fingerprint()}) is not the "
                f"configuration the supernet was trained with ({trained.get('fingerprint')}): "
                "the subnets trained alone follow --config")
        self.res: dict[str, Any] = load_previous(args, settings) or {}
        self.seconds_before = float(self.res.get("seconds", 0.0))
        self.res.setdefault("first_date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
        self.res.update({
            "format": FORMAT, "settings": settings, "status": "running",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "threads": args.threads,
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "supernet": {"path": str(args.supernet), "dtype": meta.get("dtype"),
                         "steps": (trained.get("progress") or {}).get("step"),
                         "fingerprint": trained.get("fingerprint"),
                         "stopped_early": trained.get("stopped_early")},
            "validation": {"source": str(val_src.relative_to(ROOT)
                                         if val_src.is_relative_to(ROOT) else val_src),
                           "tokens": len(val_ids), "windows": len(self.full),
                           "predicted_tokens": int(self.full.shape[0]
                                                   * (self.full.shape[1] - 1)),
                           "proxy_tokens": int(get_proxy("perplexity").opts["tokens"])},
        })
        self.anchor_archs = {"largest": self.space.largest(), "middle": self.space.middle(),
                             "smallest": self.space.smallest()}

    def save(self) -> None:
        self.res["seconds"] = round(self.seconds_before + time.perf_counter() - self.started, 1)
        path: Path | None = self.args.json
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(self.res, indent=2) + "\n")
            tmp.replace(path)

    def full_ppl(self, net: Any, arch: dict[str, Any]) -> float:
        """Perplexity of ``arch`` of ``net`` on the whole validation text."""
        from nas.train import lm_loss

        return math.exp(lm_loss(net, arch, self.full, self.batch))

    def describe(self, arch: Any) -> dict[str, Any]:
        c = self.space.costs([arch])
        return {"arch": arch.to_dict(), "hash": arch.hash, "params": int(c["params"][0]),
                "macs": int(c["macs"][0])}

    def anchors(self) -> None:
        """a) the largest, middle and smallest subnets."""
        before = self.res.get("anchors", {})
        done = {k: before[k] for k in self.anchor_archs if k in before}  # in this order
        self.res["anchors"] = done
        for i, (name, arch) in enumerate(self.anchor_archs.items(), 1):
            if name in done:
                continue
            t0 = time.perf_counter()
            row = {**self.describe(arch), "ppl": round(self.full_ppl(self.net, arch.to_dict()), 4)}
            done[name] = row
            say(f"[a {i}/3] {name} {label(row['arch'])}: inherited val ppl {row['ppl']:.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
            self.save()

    def held_out(self) -> None:
        """b) held-out random subnets: inherited perplexity, the proxies, costs; the taus."""
        from nas.proxies import get_proxy

        drawn = self.space.sample_many(self.args.subnets + 3, seed=self.args.seed)
        held = [a for a in drawn if a not in self.anchor_archs.values()][: self.args.subnets]
        ppl_proxy, nonemb_proxy = get_proxy("perplexity"), get_proxy("nonembedding-params")
        seen = {r["hash"]: r for r in self.res.get("subnets", [])}
        rows: list[dict[str, Any]] = []
        self.res["subnets"] = rows
        for i, arch in enumerate(held):
            if arch.hash in seen:
                rows.append(seen[arch.hash])
                continue
            t0 = time.perf_counter()
            row = {**self.describe(arch),
                   "ppl": round(self.full_ppl(self.net, arch.to_dict()), 4),
                   "perplexity_score": round(float(ppl_proxy.score([arch], self.ctx)[0]), 6),
                   "nonembedding_params": int(nonemb_proxy.score([arch], self.ctx)[0])}
            rows.append(row)
            say(f"[b {i + 1}/{len(held)}] {label(row['arch'])}: inherited val ppl "
                f"{row['ppl']:.3f}, proxy slice ppl {math.exp(-row['perplexity_score']):.3f} "
                f"({time.perf_counter() - t0:.0f} s)")
            self.save()
        good = [-r["ppl"] for r in rows]  # higher = better, as the scores
        self.res["tau"] = {
            "perplexity (proxy, its slice)": tau([r["perplexity_score"] for r in rows], good),
            "nonembedding-params": tau([r["nonembedding_params"] for r in rows], good),
            "MACs per token": tau([r["macs"] for r in rows], good),
            "parameters": tau([r["params"] for r in rows], good),
        }
        self.save()

    def alone(self) -> None:
        """c) subnets trained alone from random initialisation with the supernet's recipe."""
        rows = self.res["subnets"]
        picks = pick_spread(rows, self.args.alone)
        done = {r["hash"]: r for r in self.res.get("alone", [])}
        results = [done[rows[i]["hash"]] for i in picks if rows[i]["hash"] in done]
        self.res["alone"] = results
        todo = [i for i in picks if rows[i]["hash"] not in done]
        if todo:
            self._train_alone(todo, len(picks))
        self.res["alone_tau"] = tau([r["inherited_ppl"] for r in results],
                                    [r["alone_ppl"] for r in results])
        self.save()

    def _train_alone(self, todo: list[int], n_picks: int) -> None:
        from rich.console import Console

        from nas.train import load_text_splits

        args, cfg, rows, results = self.args, self.cfg, self.res["subnets"], self.res["alone"]
        acfg, warmup = alone_config(cfg, args.alone_steps)
        self.res["alone_recipe"] = {
            "steps": args.alone_steps, "warmup_steps": warmup, "batch_size": acfg.batch_size,
            "context": acfg.block, "optim": acfg.optim.model_dump(mode="json"),
            "seed": acfg.seed, "config": str(args.config)}
        src = Path(cfg.data.source)
        source = src if src.is_absolute() else ROOT / src
        say(f"reading the training text {source}")
        data = load_text_splits(source, cfg.data.val_works, cfg.data.format)
        quiet = Console(stderr=True, quiet=True)
        for n, i in enumerate(todo, len(results) + 1):
            arch = rows[i]["arch"]
            say(f"[c {n}/{n_picks}] training {label(arch)} ({rows[i]['params']:,} "
                f"parameters) alone for {args.alone_steps} steps")
            with tempfile.TemporaryDirectory(prefix="alone-") as work:
                trainer = AloneTrainer(arch, acfg, work, progress=False, data=data,
                                       console=quiet)
                result = trainer.run()
                ppl = self.full_ppl(trainer.net, arch)
            results.append({
                "hash": rows[i]["hash"], "arch": arch, "params": rows[i]["params"],
                "inherited_ppl": rows[i]["ppl"], "alone_ppl": round(ppl, 4),
                "train_seconds": round(result.progress.seconds, 1),
                "final_train_loss": result.metrics[-1]["train_loss"] if result.metrics
                else None})
            results.sort(key=lambda r: r["params"])
            say(f"[c {n}/{n_picks}] {label(arch)}: alone val ppl {round(ppl, 4):.3f}, inherited "
                f"{rows[i]['ppl']:.3f} ({result.progress.seconds:.0f} s of training)")
            self.save()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ev = Evaluation(args)
    ev.anchors()
    ev.held_out()
    ev.alone()
    ev.res["status"] = "complete"
    ev.save()
    print(markdown(ev.res))
    return 0


def adamw(o: dict[str, Any]) -> str:
    return (f"AdamW lr {o.get('lr')}, betas ({o.get('beta1')}, {o.get('beta2')}), weight "
            f"decay {o.get('weight_decay')}, gradient clip {o.get('grad_clip')}")


def markdown(res: dict[str, Any]) -> str:
    sn, v = res["supernet"], res["validation"]
    out = ["## gpt_shakespeare supernet: inherited perplexity, proxies, subnets trained alone\n",
           f"{res['date']}"
           + (f" (started {res['first_date']})" if res.get("first_date", res["date"])
              != res["date"] else "")
           + f" · {res['cpu']} · {res['threads']} torch threads · `{res['command']}` · "
           f"{res['seconds'] / 60:.1f} min\n",
           f"Supernet `{sn['path']}` ({sn['dtype']}, {sn['steps']} training steps, config "
           f"fingerprint {sn['fingerprint']}, sha256 {res['settings']['supernet_sha256'][:12]}"
           f"...). Validation: `{v['source']}`, {v['tokens']:,} byte-level tokens, "
           f"{v['windows']} windows of {v['predicted_tokens'] // v['windows']} "
           f"({v['predicted_tokens']:,} predicted tokens); the `perplexity` proxy reads the "
           f"first {v['proxy_tokens']:,}.\n",
           "### a) Largest, middle and smallest subnet (inherited weights, whole validation "
           "text)\n"]
    out.append(table(["subnet", "architecture", "parameters", "MACs/token", "val perplexity"],
                     [[name, f"`{label(r['arch'])}`", f"{r['params']:,}", f"{r['macs']:,}",
                       f"{r['ppl']:.3f}"] for name, r in res["anchors"].items()]))
    rows = res["subnets"]
    out.append(f"\n### b) {len(rows)} held-out random subnets (seed "
               f"{res['settings']['seed']})\n")
    out.append(table(
        ["#", "architecture", "parameters", "MACs/token", "val ppl (inherited, whole)",
         "`perplexity` score (ppl on its slice)", "`nonembedding-params`"],
        [[i + 1, f"`{label(r['arch'])}`", f"{r['params']:,}", f"{r['macs']:,}",
          f"{r['ppl']:.3f}",
          f"{r['perplexity_score']:.4f} ({math.exp(-r['perplexity_score']):.3f})",
          f"{r['nonembedding_params']:,}"] for i, r in enumerate(rows)]))
    out.append("\nKendall's tau-b of each score against inherited whole-validation perplexity, "
               "signed so that +1 is the same ranking (lower perplexity = better; each score "
               "higher = predicted better: the `perplexity` proxy is -log(perplexity), MACs and "
               "parameters are taken as more = better):\n")
    out.append(table(["score", "tau (p)"], [[k, fmt_tau(t)] for k, t in res["tau"].items()]))
    alone = res["alone"]
    if alone:
        r0 = res.get("alone_recipe", {})
        out.append(f"\n### c) {len(alone)} subnets trained alone vs inherited\n")
        out.append(f"Each trained from random initialisation alone for "
                   f"{res['settings']['alone_steps']} steps (warm-up {r0.get('warmup_steps')}, "
                   f"then a cosine to 0) with the supernet's recipe from `{r0.get('config')}` "
                   f"(batches of {r0.get('batch_size')} x {r0.get('context')} tokens, "
                   f"{adamw(r0.get('optim') or {})}, config fingerprint "
                   f"{res['settings']['config_fingerprint']}"
                   + ("" if res["settings"]["config_fingerprint"] == sn["fingerprint"] else
                      f", not the supernet's {sn['fingerprint']}")
                   + f"); the supernet had {sn['steps']} steps of four subnets. "
                   "Perplexity on the whole validation text.\n")
        out.append(table(["architecture", "parameters", "inherited ppl", "alone ppl",
                          "training s"],
                         [[f"`{label(r['arch'])}`", f"{r['params']:,}",
                           f"{r['inherited_ppl']:.3f}", f"{r['alone_ppl']:.3f}",
                           f"{r['train_seconds']:.0f}"] for r in alone]))
        out.append(f"\nKendall's tau-b between the inherited and the trained-alone perplexity "
                   f"rankings: {fmt_tau(res['alone_tau'])}.")
    return "\n".join(out)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Fail, NASError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
