"""Training throughput of supernet subnets on this CPU: images per second of one SGD step
(forward, backward, update) through the supernet with the subnet active, in the default
(NCHW) and channels-last memory formats, side by side.

Run: .venv/bin/python experiments/benchmarks/train_throughput.py [--space cifar_mbv3]
     [--batch 128] [--steps 4]
This is what sizes `cifar_mbv3` (its largest subnet must train at 80 images/s or more here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, median, table

from nas.space import get_space
from nas.supernet import OFASupernet


def images_per_second(net: OFASupernet, r: int, batch: int, steps: int, channels_last: bool,
                      n_classes: int) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, r, r).to(memory_format=fmt)
    y = torch.randint(0, n_classes, (batch,))
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    return batch / median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--space", default="cifar_mbv3")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    sp = get_space(args.space)
    net = OFASupernet(sp)
    k, e, d = sp.kernel_sizes, sp.expand_ratios, sp.depths
    mid = sp.arch([k[len(k) // 2]] * sp.n_layers, [e[len(e) // 2]] * sp.n_layers,
                  [d[len(d) // 2]] * sp.n_stages, sp.resolutions[len(sp.resolutions) // 2])
    rows = []
    for name, arch in (("largest", sp.largest()), ("middle", mid), ("smallest", sp.smallest())):
        net.set_active(arch)
        nchw = images_per_second(net, arch.r, args.batch, args.steps, False, sp.spec.num_classes)
        cl = images_per_second(net, arch.r, args.batch, args.steps, True, sp.spec.num_classes)
        rows.append([name, arch.r, f"{sp.macs(arch) / 1e6:.1f}", f"{nchw:.0f}", f"{cl:.0f}",
                     f"{cl / nchw:.1f}x"])
    print(header(f"Training throughput, {args.space}",
                 f"python experiments/benchmarks/train_throughput.py --space {args.space}"))
    print(table(["subnet", "r", "MACs (M)", "img/s NCHW", "img/s channels-last", "speed-up"],
                rows))
    print(f"\nBatch {args.batch}, SGD with momentum, 2 torch threads, median of {args.steps} "
          "steps after one warm-up step; supernet forward with the subnet active.")


if __name__ == "__main__":
    main()
