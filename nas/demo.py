"""``make demo``: the main job on the embedded default, end to end, with a summary."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from nas._cli_utils import console

__all__ = ["run_demo"]


def run_demo(workdir: Path = Path("runs/demo"), space: str = "ofa_mbv3", seed: int = 0) -> dict:
    """Sample a subnet, export it from a supernet checkpoint, verify the export, summarise.

    Returns the summary as a dict.
    """
    import torch

    from nas.export import export_subnet, verify_export
    from nas.space import get_space
    from nas.supernet import OFASupernet, load_supernet, save_supernet

    workdir.mkdir(parents=True, exist_ok=True)
    sp = get_space(space)
    steps: list[tuple[str, float, str]] = []

    t = time.perf_counter()
    ckpt = workdir / f"{space}-random.safetensors"
    if ckpt.is_file():
        net = load_supernet(ckpt, space=space)
        note = f"loaded {ckpt}"
    else:
        torch.manual_seed(seed)
        net = OFASupernet(sp)
        net.calibrate_random(seed=seed)
        save_supernet(net, ckpt, meta={"init": "random", "seed": seed})
        note = f"randomly initialised, saved to {ckpt}"
    steps.append(("supernet", time.perf_counter() - t, note))

    t = time.perf_counter()
    arch = sp.sample(seed)
    steps.append(("sample", time.perf_counter() - t, f"{arch.hash} r={arch.r} d={list(arch.d)}"))

    t = time.perf_counter()
    out = workdir / f"export-{arch.hash}"
    res = export_subnet(net, arch, out, overwrite=True, checkpoint=ckpt)
    m = res.manifest
    steps.append(("export", time.perf_counter() - t, f"{out}/ (model.onnx, weights, manifest)"))

    t = time.perf_counter()
    ver = verify_export(out)
    steps.append(("verify", time.perf_counter() - t,
                  f"hashes ok, max |onnx - torch| = {ver['max_abs_diff']:.2e}"))

    table = Table("step", "seconds", "result", title=f"nas demo: {space}")
    for name, secs, msg in steps:
        table.add_row(name, f"{secs:.2f}", msg)
    console.print(table)
    console.print(
        f"subnet {m['arch_hash']}: {m['macs'] / 1e6:.1f}M MACs, {m['params'] / 1e6:.2f}M params, "
        f"input {m['inputs'][0]['shape']}, opset {m['opset']}"
    )
    console.print(f"arch: {arch.to_json()}")
    return {"arch": arch.to_dict(), "hash": arch.hash, "export": str(out), "manifest": m,
            "steps": [{"step": s, "seconds": round(x, 3)} for s, x, _ in steps]}
