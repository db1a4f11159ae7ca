"""Under- or overfitting? Accuracy on training images against validation accuracy.

For the largest, middle and smallest subnets of a trained supernet (inherited weights,
BatchNorm recalibrated as everywhere else), prints the accuracy on ``--n`` random training
images, without augmentation, beside the accuracy on the validation slice. A subnet that
fits its training images far better than the validation slice overfits (more regularisation
helps); one that fits them barely better underfits (more epochs or capacity help).

Usage (from the repository root):
    python experiments/cifar10_supernet/fit_check.py --run runs/cifar10_supernet_gpu
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="run folder of `nas train`")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="default RUN/supernet.safetensors")
    p.add_argument("--n", type=int, default=5000, help="training images to score")
    p.add_argument("--subnets", default="largest,middle,smallest")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args(argv)
    subnets = [s.strip() for s in args.subnets.split(",") if s.strip()]
    bad = [s for s in subnets if s not in ("largest", "middle", "smallest")]
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    if bad or not subnets:
        p.error(f"--subnets takes largest, middle, smallest (comma-separated), got "
                f"{args.subnets!r}")

    import numpy as np

    from nas.errors import NASError
    from nas.supernet import load_supernet
    from nas.train import evaluate_subnet, load_config, load_data, subnet_by_name

    try:
        cfg = load_config(args.run / "config.yaml")
        data = load_data(cfg)
        ckpt = args.checkpoint or args.run / "supernet.safetensors"
        net = load_supernet(ckpt, space=cfg.space, map_location=args.device)
        idx = np.random.default_rng(0).permutation(len(data.train))[: args.n]
        # the training sample in the place of the validation slice, to score it the same way
        on_train = dataclasses.replace(data, val=data.train.subset(idx))
        kw = dict(split="val", bn_batches=cfg.eval.bn_batches, bn_batch_size=cfg.batch_size,
                  channels_last=cfg.channels_last)
        print(f"{ckpt}: {data.describe()}")
        print("| subnet | r | train acc (no augmentation) | val acc | gap |")
        print("|---|---|---|---|---|")
        for name in subnets:
            arch = subnet_by_name(net.space, name)
            tr = evaluate_subnet(net, arch, on_train, **kw)["acc"]
            va = evaluate_subnet(net, arch, data, **kw)["acc"]
            print(f"| {name} | {arch.r} | {tr * 100:.2f} | {va * 100:.2f} | "
                  f"{(tr - va) * 100:+.2f} |", flush=True)
    except NASError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
