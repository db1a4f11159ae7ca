"""Weight subcloning against random initialisation: training loss against steps.

Samragh et al., 2023 (arXiv:2312.09299) report that a scaled-down transformer initialised by
weight subcloning from a larger pretrained one reaches a given loss in about 4x fewer steps
than from random initialisation. This script measures that on Shakespeare, small enough for a
2-core CPU:

1. the larger model (a GPT supernet's largest subnet, ``--big``) is trained first, for
   ``--pretrain-steps`` steps, from GPT-2's random initialisation;
2. the scaled-down model (``--small``) is trained for ``--steps`` steps from (a) the larger
   model subcloned (``nas.supernet.subclone``: channels, heads and neurons ranked on a
   calibration batch of training text, blocks chosen as the paper does, the paper's weight
   scaling), (b) random initialisation (GPT-2's, the same as the larger model's) and (c) the
   subclone without the weight scaling; the same batches in the same order, the same
   optimiser and learning rate for all three.

It prints the training loss (the mean over each ``--log-every`` window) of each arm as a
Markdown table, the held-out loss at the start and the end, and the first step at which the
subclone's windowed loss is at or below (b)'s final windowed loss.

Data: ``../shared/data/shakespeare-gut.tar.gz`` (Shakespeare's works from Project Gutenberg,
public domain; its README), read from the archive without unpacking. Tokens are bytes
(vocabulary 256). Split by whole works: ``HELD_OUT`` for the held-out loss, the rest for
training and calibration.

Run (the defaults are sized for about 10 minutes on 2 otherwise idle CPU cores, an estimate
from the models' sizes: on this machine under other jobs' load the larger model's steps took
about 1.6 s each; ``--steps 5 --pretrain-steps 5`` checks that it runs):
    .venv/bin/python experiments/subclone/compare.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.supernet import GPTSupernet, subclone

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "shakespeare-gut.tar.gz"
#: works held out of training (whole works, so held-out text never neighbours training text)
HELD_OUT = ("hamlet", "sonnets", "tempest")

BIG = {"n_layer": 4, "n_embd": 96, "n_head": 6, "mlp": 384}
SMALL = {"n_layer": 2, "n_embd": 48, "n_head": 3, "mlp": 192}


def load_corpus(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(training bytes, held-out bytes) as uint8 tensors, split by work."""
    train, held = [], []
    with tarfile.open(path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if not member.isfile() or not member.name.endswith("_gut.txt"):
                continue
            f = tar.extractfile(member)
            assert f is not None
            work = Path(member.name).name.removesuffix("_gut.txt")
            (held if work in HELD_OUT else train).append(f.read())
    if not train or not held:
        raise SystemExit(f"error: {path} has no Shakespeare works (*_gut.txt) to split")

    def ids(parts: list[bytes]) -> torch.Tensor:
        return torch.frombuffer(bytearray(b"\n".join(parts)), dtype=torch.uint8).clone()

    return ids(train), ids(held)


def batch(data: torch.Tensor, size: int, ctx: int, gen: torch.Generator) -> torch.Tensor:
    """``(size, ctx + 1)`` random windows of ``data`` as token ids."""
    start = torch.randint(0, len(data) - ctx - 1, (size,), generator=gen)
    return torch.stack([data[s:s + ctx + 1] for s in start.tolist()]).long()


def lm_loss(model: nn.Module, window: torch.Tensor) -> torch.Tensor:
    logits = model(window[:, :-1])  # (b, s, vocab)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


@torch.no_grad()
def held_out_loss(model: nn.Module, windows: torch.Tensor) -> float:
    was = model.training
    model.eval()
    loss = float(lm_loss(model, windows))
    model.train(was)
    return loss


def train(model: nn.Module, data: torch.Tensor, steps: int, args: argparse.Namespace,
          lr: float, label: str) -> list[float]:
    """AdamW with a linear warm-up, on batches drawn from ``args.seed``; the windowed mean
    training loss every ``args.log_every`` steps."""
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, min(args.warmup, steps // 10))
    model.train()
    window, logged = [], []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / warmup)
        loss = lm_loss(model, batch(data, args.batch, args.ctx, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        if step % args.log_every == 0 or step == steps:
            logged.append(sum(window) / len(window))
            window = []
            print(f"[{label}] step {step}/{steps}: loss {logged[-1]:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return logged


def gpt_geometry(arch: dict[str, int], ctx: int, head_dim: int) -> dict[str, Any]:
    return {"vocab_size": 256, "n_ctx": ctx, "n_layer": arch["n_layer"],
            "n_embd": arch["n_embd"], "n_head": arch["n_head"], "head_dim": head_dim,
            "mlp": arch["mlp"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=800,
                        help="training steps of the small model, each arm")
    parser.add_argument("--pretrain-steps", type=int, default=800,
                        help="training steps of the larger model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=64, help="tokens per training window")
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate, every arm")
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--calibration", type=int, default=16,
                        help="windows of training text in the calibration batch")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--big", type=json.loads, default=BIG,
                        help=f"larger model, JSON (default {json.dumps(BIG)})")
    parser.add_argument("--small", type=json.loads, default=SMALL,
                        help=f"scaled-down model, JSON (default {json.dumps(SMALL)})")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    for name in ("steps", "pretrain_steps", "batch", "ctx", "log_every", "calibration"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name.replace('_', '-')} must be at least 1, got "
                     f"{getattr(args, name)}")
    torch.set_num_threads(args.threads)
    train_ids, held_ids = load_corpus(args.data)
    print(f"data: {args.data.name}, {len(train_ids):,} training bytes, {len(held_ids):,} "
          f"held out ({', '.join(HELD_OUT)}); byte tokens, vocabulary 256")
    held = batch(held_ids, 64, args.ctx, torch.Generator().manual_seed(12345))
    calibration = batch(train_ids, args.calibration, args.ctx,
                        torch.Generator().manual_seed(777))[:, :-1]

    torch.manual_seed(args.seed)
    big = GPTSupernet(**gpt_geometry(args.big, args.ctx, args.head_dim))
    print(f"\nlarger model {json.dumps(args.big)}, "
          f"{sum(p.numel() for p in big.parameters()) / 1e6:.2f}M parameters")
    train(big, train_ids, args.pretrain_steps, args, args.pretrain_lr, "large")
    big.eval()
    print(f"larger model held-out loss {held_out_loss(big, held):.4f}")

    n = args.small["n_layer"]
    small_arch = {"n_layer": n, "n_embd": args.small["n_embd"],
                  "n_head": [args.small["n_head"]] * n, "mlp": [args.small["mlp"]] * n}
    torch.manual_seed(args.seed + 1)
    arms = {
        "(a) subclone": subclone(big, small_arch, calibration),
        "(b) random init": GPTSupernet(**gpt_geometry(args.small, args.ctx,
                                                      args.head_dim)).extract(),
        "(c) subclone, no scaling": subclone(big, small_arch, calibration, rescale=False),
    }
    print(f"scaled-down model {json.dumps(small_arch)}, "
          f"{sum(p.numel() for p in arms['(b) random init'].parameters()) / 1e6:.2f}M "
          f"parameters")
    curves, start_loss, end_loss = {}, {}, {}
    for label, model in arms.items():
        start_loss[label] = held_out_loss(model, held)
        print(f"\n{label}: held-out loss at step 0 {start_loss[label]:.4f}")
        curves[label] = train(model, train_ids, args.steps, args, args.lr, label)
        end_loss[label] = held_out_loss(model, held)

    n_logged = len(curves["(a) subclone"])
    steps_at = [min(args.log_every * (i + 1), args.steps) for i in range(n_logged)]
    labels = list(arms)
    print("\n## Training loss (mean over each window of steps)\n")
    print("| step | " + " | ".join(labels) + " |")
    print("|---:|" + "---:|" * len(labels))
    for i, step in enumerate(steps_at):
        print(f"| {step} | " + " | ".join(f"{curves[x][i]:.4f}" for x in labels) + " |")
    print("\n| held-out loss | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    print("| step 0 | " + " | ".join(f"{start_loss[x]:.4f}" for x in labels) + " |")
    print(f"| step {args.steps} | " + " | ".join(f"{end_loss[x]:.4f}" for x in labels) + " |")
    target = curves["(b) random init"][-1]
    print(f"\n(b)'s final training loss: {target:.4f} at step {args.steps}")
    for label in ("(a) subclone", "(c) subclone, no scaling"):
        reached = next((s for s, v in zip(steps_at, curves[label], strict=True) if v <= target),
                       None)
        if reached is None:
            print(f"{label}: does not reach it in {args.steps} steps")
        else:
            print(f"{label}: reaches it by step {reached} ({args.steps / reached:.1f}x fewer "
                  f"steps; resolution {args.log_every} steps)")


if __name__ == "__main__":
    main()
