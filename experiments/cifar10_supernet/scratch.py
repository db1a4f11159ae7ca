"""Train subnets of the supernet from scratch with the same budget, for comparison.

Each architecture is extracted from a freshly initialised supernet and trained alone, at its
own resolution, with the supernet run's recipe (SGD with Nesterov momentum, the full phase's
learning rate and warm-up, cosine decay, label smoothing, weight decay, crop + flip, batch
size) for as many epochs as the whole supernet schedule (all phases together). Its validation
and test accuracy are then set beside those of the same subnet with inherited weights.

Resumable: each architecture checkpoints every epoch (``<out>/<hash>.state.pt``) and is
skipped once its result file exists.

Usage (from the repository root):
    python experiments/cifar10_supernet/scratch.py \
        --config experiments/cifar10_supernet/config.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path,
                   default=Path("experiments/cifar10_supernet/config.yaml"))
    p.add_argument("--archs", default="smallest,middle,random:0",
                   help="comma-separated: largest, smallest, middle, random:SEED, or "
                   "@file.jsonl (one architecture per line)")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the supernet schedule's total epochs")
    p.add_argument("--lr", type=float, default=None, help="default: the full phase's lr")
    p.add_argument("--supernet", type=Path, default=None,
                   help="trained supernet to compare with (default <config out>/"
                   "supernet.safetensors, if it exists)")
    p.add_argument("--out", type=Path, default=None, help="default <config out>/scratch")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def resolve_archs(space: Any, spec: str) -> list[tuple[str, Any]]:
    from nas.errors import ArchitectureError
    from nas.train import subnet_by_name

    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item.startswith("@"):
            lines = Path(item[1:]).read_text().splitlines()
            out += [(f"file{i}", space.parse(line)) for i, line in enumerate(lines)
                    if line.strip()]
        elif item.startswith("random:"):
            out.append((item.replace(":", ""), space.sample(int(item.split(":", 1)[1]))))
        elif item in ("largest", "smallest", "middle"):
            out.append((item, subnet_by_name(space, item)))
        else:
            raise ArchitectureError(f"--archs entries must be largest, smallest, middle, "
                                    f"random:SEED or @file.jsonl, got {item!r}")
    return out


def train_one(name: str, arch: Any, cfg: Any, data: Any, epochs: int, lr: float,
              out: Path, device: str) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from nas.errors import TrainingError
    from nas.space import get_space
    from nas.supernet import OFASupernet
    from nas.train import BatchLoader, Preprocess, evaluate

    sp_name = cfg.space
    state_file = out / f"{arch.hash}.state.pt"
    torch.manual_seed(cfg.seed)
    model = OFASupernet(sp_name).extract(arch).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    o = cfg.optim
    decay = [p for p in model.parameters() if p.ndim > 1 or not o.no_decay_bn_bias]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 and o.no_decay_bn_bias]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": o.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                          momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    start = 0
    if state_file.is_file():
        st = torch.load(state_file, map_location=device, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start = int(st["epoch"])
        say(f"{name}: resuming after epoch {start}")
    pre_train = Preprocess.for_space(get_space(sp_name), crop_padding=cfg.augment.crop_padding,
                                     flip=cfg.augment.flip, channels_last=cfg.channels_last,
                                     device=device)
    loader = BatchLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                         drop_last=True)
    per = len(loader)
    warm = int(cfg.phases[0].warmup_epochs * per)
    total = epochs * per
    for epoch in range(start, epochs):
        model.train()
        torch.manual_seed(cfg.seed + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        t0, loss_sum = time.perf_counter(), 0.0
        for b, (xb, yb) in enumerate(loader.epoch(epoch)):
            t = epoch * per + b
            cur = lr * (t + 1) / warm if t < warm else \
                0.5 * lr * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm)))
            for g in opt.param_groups:
                g["lr"] = cur
            x = pre_train(xb, arch.r, train=True, generator=gen)
            loss = F.cross_entropy(model(x), yb.to(device), label_smoothing=o.label_smoothing)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"{name}: loss is {value} at epoch {epoch + 1} step "
                                    f"{b + 1}; the last good state {state_file} is kept")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            loss_sum += value
        secs = time.perf_counter() - t0
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{state_file.name}.", suffix=".tmp")
        os.close(fd)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "epoch": epoch + 1}, tmp)
        os.replace(tmp, state_file)
        say(f"{name} epoch {epoch + 1}/{epochs}: loss {loss_sum / per:.4f}, "
            f"{per * cfg.batch_size / secs:.0f} img/s, {secs:.0f}s")
    pre = Preprocess.for_space(get_space(sp_name), channels_last=cfg.channels_last,
                               device=device)
    res = {"val_acc": evaluate(model, data.val, arch.r, pre)["acc"]}
    res["test_acc"] = (evaluate(model, data.test, arch.r, pre)["acc"]
                       if data.test is not None else float("nan"))
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from nas.errors import NASError
    from nas.supernet import load_supernet
    from nas.train import evaluate_subnet, load_config, load_data

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config)
        out = args.out or Path(cfg.out) / "scratch"
        out.mkdir(parents=True, exist_ok=True)
        epochs = args.epochs or cfg.total_epochs()
        lr = args.lr or cfg.phases[0].lr
        data = load_data(cfg)
        from nas.space import get_space

        sp = get_space(cfg.space)
        archs = resolve_archs(sp, args.archs)
        sn_path = args.supernet or Path(cfg.out) / "supernet.safetensors"
        supernet = (load_supernet(sn_path, space=sp, map_location=args.device)
                    if sn_path.is_file() else None)
        say(f"from scratch: {len(archs)} subnets x {epochs} epochs (lr {lr}); "
            f"{data.describe()}; compared with {sn_path if supernet else 'no supernet'}")
        rows = []
        for name, arch in archs:
            result_file = out / f"{name}-{arch.hash}.json"
            if result_file.is_file():
                row = json.loads(result_file.read_text())
                say(f"{name}: trained already ({result_file})")
            else:
                t0 = time.perf_counter()
                res = train_one(name, arch, cfg, data, epochs, lr, out, args.device)
                row = {"name": name, "hash": arch.hash, "arch": arch.to_dict(),
                       "macs": int(sp.costs([arch])["macs"][0]), "epochs": epochs,
                       "scratch_val_acc": res["val_acc"], "scratch_test_acc": res["test_acc"],
                       "minutes": round((time.perf_counter() - t0) / 60, 1)}
            # the inherited side, also for a subnet trained before the supernet was finished
            if supernet is not None and "inherited_val_acc" not in row:
                kw = dict(bn_batches=cfg.eval.bn_batches, bn_batch_size=cfg.batch_size)
                row["inherited_val_acc"] = evaluate_subnet(supernet, arch, data, **kw)["acc"]
                if data.test is not None:
                    row["inherited_test_acc"] = evaluate_subnet(supernet, arch, data,
                                                                split="test", **kw)["acc"]
            result_file.write_text(json.dumps(row, indent=2))
            rows.append(row)
            say(f"{name}: scratch test {row['scratch_test_acc']:.4f}"
                + (f", inherited test {row['inherited_test_acc']:.4f}"
                   if "inherited_test_acc" in row else ""))
        lines = ["| subnet | r | MACs (M) | epochs | scratch val | scratch test | inherited val "
                 "| inherited test |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['name']} | {r['arch']['r']} | {r['macs'] / 1e6:.1f} | {r['epochs']} | "
                f"{r['scratch_val_acc'] * 100:.2f} | {r['scratch_test_acc'] * 100:.2f} | "
                f"{r.get('inherited_val_acc', float('nan')) * 100:.2f} | "
                f"{r.get('inherited_test_acc', float('nan')) * 100:.2f} |")
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    except NASError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
