"""Export time per subnet: torch's TorchScript exporter against its dynamo exporter, and the
whole `export_subnet` (ONNX + weights + manifest + ONNX Runtime verification).

Run: .venv/bin/python experiments/benchmarks/export.py [--n 5] [--dynamo-n 2]
Prints a markdown table (medians over subnets, each timed once per exporter, interleaved).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import header, median, table

from nas.export import export_subnet, onnx_bytes
from nas.space import get_space
from nas.supernet import OFASupernet

PUBLISHED = {"ks": [3, 3, 5, 7, 3, 3, 5, 3, 7, 7, 3, 7, 3, 7, 5, 5, 3, 3, 5, 5],
             "e": [3, 3, 4, 3, 6, 4, 3, 4, 6, 4, 6, 6, 6, 4, 4, 6, 6, 6, 6, 3],
             "d": [2, 2, 2, 3, 3], "r": 224}


def dynamo_export(model: torch.nn.Module, r: int) -> float:
    buf = io.BytesIO()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch", min=1, max=1024)
        onnx_program = torch.onnx.export(
            model, (torch.zeros(2, 3, r, r),), dynamo=True, opset_version=18,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: batch},), verbose=False,
        )
        onnx_program.save(buf)  # type: ignore[union-attr]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=5, help="subnets per space")
    ap.add_argument("--dynamo-n", type=int, default=2, help="subnets timed with dynamo")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for space_name in ("ofa_mbv3", "cifar_mbv3"):
        sp = get_space(space_name)
        net = OFASupernet(sp)
        net.calibrate_random()
        net.eval()
        archs = sp.sample_many(args.n, seed=1)
        if space_name == "ofa_mbv3":
            archs = [sp.parse(PUBLISHED), *archs[1:]]
        ts, dyn, full = [], [], []
        onnx_bytes(net.extract(archs[0]).eval(), archs[0].r)  # warm-up (imports, JIT)
        with tempfile.TemporaryDirectory() as tmp:
            for i, a in enumerate(archs):
                sub = net.extract(a).eval()
                t = time.perf_counter()
                onnx_bytes(sub, a.r)
                ts.append(time.perf_counter() - t)
                if i < args.dynamo_n:
                    dyn.append(dynamo_export(sub, a.r))
                t = time.perf_counter()
                export_subnet(net, a, Path(tmp) / f"e{i}")
                full.append(time.perf_counter() - t)
        rows.append([
            space_name, len(archs), f"{median(ts) * 1000:.0f}",
            f"{median(dyn) * 1000:.0f}" if dyn else "-",
            f"{median(dyn) / median(ts):.1f}x" if dyn else "-",
            f"{median(full) * 1000:.0f}",
        ])
    print(header("Export time per subnet", "python experiments/benchmarks/export.py"))
    print(table(["space", "subnets", "TorchScript exporter (ms)", "dynamo exporter (ms)",
                 "dynamo / TorchScript", "export_subnet incl. weights, manifest, ORT check (ms)"],
                rows))
    print("\nMedians; the ofa_mbv3 set includes the published OFA subnet at r=224. "
          "2 torch threads.")


if __name__ == "__main__":
    main()
