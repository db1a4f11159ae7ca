"""``make demo``: the main job on the embedded default, end to end, with a summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from nas._cli_utils import console

__all__ = ["run_demo"]


def run_demo(
    workdir: Path = Path("runs/demo"), space: str = "ofa_mbv3", seed: int = 0,
    device: str = "cpu-1t", n_latency: int = 40,
) -> dict:
    """Sample a subnet, export it from a supernet checkpoint, verify the export; measure
    ``n_latency`` subnets on ``device``, fit a latency predictor on them, and compare its
    prediction for the exported subnet with a measurement of it. Prints a summary.

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

    latency: dict[str, float] = {}
    if n_latency > 0:
        latency = _latency_steps(workdir, space, device, n_latency, seed, net, out, steps)

    table = Table("step", "seconds", "result", title=f"nas demo: {space}")
    for name, secs, msg in steps:
        table.add_row(name, f"{secs:.2f}", msg)
    console.print(table)
    console.print(
        f"subnet {m['arch_hash']}: {m['macs'] / 1e6:.1f}M MACs, {m['params'] / 1e6:.2f}M params, "
        f"input {m['inputs'][0]['shape']}, opset {m['opset']}"
    )
    console.print(f"arch: {arch.to_json()}")
    if latency:
        console.print(
            f"latency on {device}: predicted {latency['predicted_ms']:.2f} ms, measured "
            f"{latency['measured_ms']:.2f} ms ({latency['error_pct']:+.1f}%)"
        )
    return {"arch": arch.to_dict(), "hash": arch.hash, "export": str(out), "manifest": m,
            "latency": latency,
            "steps": [{"step": s, "seconds": round(x, 3)} for s, x, _ in steps]}


def _latency_steps(
    workdir: Path, space: str, device: str, n: int, seed: int, net: Any, export_dir: Path,
    steps: list[tuple[str, float, str]],
) -> dict[str, float]:
    """Measure ``n`` subnets into the demo's own database, fit, predict and check."""
    from nas.db import LatencyDB
    from nas.latency import (
        fit_predictor,
        get_device,
        load_predictor,
        measure_architectures,
        sample_for_measurement,
        time_onnx,
    )
    from nas.space import get_space

    profile = get_device(device)
    db = LatencyDB(str(workdir / "latency.sqlite"))
    t = time.perf_counter()
    have = {r.arch for r in db.measurements(profile.name, space)}
    todo = [a for a in sample_for_measurement(space, n, seed=seed) if a not in have]
    if todo:
        measure_architectures(profile, space, todo, db, supernet=net)
    steps.append(("measure", time.perf_counter() - t,
                  f"{len(todo)} new subnets timed on {device} in ONNX Runtime "
                  f"({len(have)} already in {workdir / 'latency.sqlite'})"))

    t = time.perf_counter()
    # With a few dozen measurements the learned kinds may not beat the MACs-linear baseline:
    # fit both on the same split and let load_predictor pick the better held-out MAPE.
    fitted = {kind: fit_predictor(profile, space, kind, db=db, holdout=0.25, seed=seed)[1]
              for kind in ("flops", "additive")}
    predictor = load_predictor(profile, space, db=db)
    test = fitted[predictor.kind]["test"]
    steps.append(("fit", time.perf_counter() - t,
                  "held-out MAPE " + ", ".join(
                      f"{k} {100 * m['test']['mape']:.1f}%" for k, m in fitted.items())
                  + f"; using {predictor.kind} (Kendall tau {test['kendall_tau']:.2f})"))

    t = time.perf_counter()
    manifest = json.loads((export_dir / "manifest.json").read_text())
    arch = get_space(space).parse(manifest["arch"])
    predicted = float(predictor.predict([arch])[0])
    measured = time_onnx((export_dir / "model.onnx").read_bytes(), profile, arch.r).median_ms
    err = 100 * (predicted / measured - 1)
    steps.append(("predict", time.perf_counter() - t,
                  f"exported subnet: predicted {predicted:.2f} ms, measured {measured:.2f} ms "
                  f"({err:+.1f}%)"))
    return {"predicted_ms": predicted, "measured_ms": measured, "error_pct": err,
            "heldout_mape": float(test["mape"])}
