"""``make demo``: the whole pipeline on the embedded default, with a summary.

The shipped small supernet (``tiny`` trained on scikit-learn's bundled digits, nothing is
downloaded) is the starting point: measure a sample of its subnets on a device in ONNX
Runtime, fit a latency predictor, run a constrained accuracy/latency search on a local Ray,
export and verify the chosen subnet, and check its predicted latency against a measurement.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table

from nas._term import console

__all__ = ["run_demo"]


def run_demo(
    workdir: Path = Path("runs/demo"), checkpoint: Path | None = None, data: str = "digits",
    device: str = "cpu-1t", n_latency: int = 40, n_trials: int = 60, workers: int = 2,
    seed: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Run the pipeline in ``workdir`` (its latency DB and study storage live there, so a
    second run reuses the measurements). Returns the summary as a dict.

    Args:
        checkpoint: the supernet (default: the shipped ``tiny-digits``).
        data: the accuracy proxy's data (the checkpoint's validation slice is used).
        n_latency: subnets to measure for the latency predictor.
        n_trials, workers: the search's budget and Ray actors.
    """
    import numpy as np

    from nas._data import shipped_supernet
    from nas.db import LatencyDB
    from nas.export import verify_export
    from nas.latency import (
        fit_predictor,
        get_device,
        load_predictor,
        measure_architectures,
        sample_for_measurement,
        time_onnx,
    )
    from nas.search import SearchConfig, export_trials, run_search
    from nas.search._cli import print_front
    from nas.supernet import read_checkpoint_meta

    workdir.mkdir(parents=True, exist_ok=True)
    steps: list[tuple[str, float, str]] = []

    t = time.perf_counter()
    ckpt = Path(checkpoint) if checkpoint else shipped_supernet("tiny-digits")
    meta = read_checkpoint_meta(ckpt)
    space = meta["space"]
    trained = meta["extra"].get("data", {}).get("source", "?")
    steps.append(("supernet", time.perf_counter() - t,
                  f"{ckpt.name}: space {space}, trained on {trained}"))

    # ---------------------------------------------------------------- latency
    profile = get_device(device)
    db_path = workdir / "latency.sqlite"
    db = LatencyDB(str(db_path))
    t = time.perf_counter()
    have = {r.arch for r in db.measurements(profile.name, space, source="measured")}
    todo = [a for a in sample_for_measurement(space, n_latency, seed=seed) if a not in have]
    if todo:
        measure_architectures(profile, space, todo, db, progress=progress)
    steps.append(("measure", time.perf_counter() - t,
                  f"{len(todo)} subnets timed on {device} in ONNX Runtime ({len(have)} reused "
                  f"from {db_path})"))

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

    # ---------------------------------------------------------------- search
    from nas.space import get_space

    sp = get_space(space)
    sample = sp.sample_many(2000, seed=seed, unique=False)
    budget = float(np.quantile(predictor.predict(sample), 0.5))
    study = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = SearchConfig(
        space=space, checkpoint=str(ckpt), data=data, proxy="inherited",
        objectives=["accuracy", f"latency:{profile.name}"],
        constraints={f"latency:{profile.name}": budget}, db=str(db_path), sampler="tpe",
        n_trials=n_trials, workers=workers, batch_size=2, seed=seed, study=study,
        storage=str(workdir / "studies.journal"),
    )
    t = time.perf_counter()
    res = run_search(cfg, progress=progress)
    steps.append(("search", time.perf_counter() - t,
                  f"{len(res.budget_trials)} trials ({cfg.sampler}, {workers} Ray workers), "
                  f"latency <= {budget:.4f} ms (the median subnet's): {len(res.front)} on the "
                  f"front, study {study!r}"))

    # ---------------------------------------------------------------- export + check
    chosen = max(res.front, key=lambda tr: (tr.accuracy, -tr.latency_ms[profile.name]))
    t = time.perf_counter()
    (out,) = export_trials(study, cfg.storage, workdir / "exports", [chosen.number],
                           progress=False, overwrite=True)
    ver = verify_export(out)
    steps.append(("export", time.perf_counter() - t,
                  f"trial {chosen.number} -> {out}/ verified (max |onnx - torch| = "
                  f"{ver['max_abs_diff']:.1e})"))

    t = time.perf_counter()
    arch = sp.parse(chosen.arch)  # type: ignore[arg-type]
    predicted = float(chosen.latency_ms[profile.name])
    measured = time_onnx((out / "model.onnx").read_bytes(), profile, arch.r).median_ms
    err = 100 * (predicted / measured - 1)
    steps.append(("check", time.perf_counter() - t,
                  f"predicted {predicted:.4f} ms, measured {measured:.4f} ms ({err:+.1f}%)"))

    print_front(res, title=f"Pareto front: accuracy ({cfg.proxy}) vs {profile.name} latency")
    table = Table("step", "seconds", "result", title="nas demo")
    for name, secs, msg in steps:
        table.add_row(name, f"{secs:.1f}", msg)
    console.print(table)
    console.print(
        f"chosen subnet {chosen.arch_hash}: validation accuracy {chosen.accuracy:.3f}, "
        f"{predicted:.4f} ms predicted on {profile.name}, exported to {out}/\n"
        f"next: nas results --study {study} --storage {cfg.storage}   |   "
        f"optuna-dashboard {cfg.storage}"
    )
    return {
        "study": study, "storage": cfg.storage, "budget_ms": budget,
        "chosen": chosen.to_json(), "export": str(out), "n_front": len(res.front),
        "latency": {"predicted_ms": predicted, "measured_ms": measured, "error_pct": err,
                    "heldout_mape": float(test["mape"]), "kind": predictor.kind},
        "steps": [{"step": s, "seconds": round(x, 3)} for s, x, _ in steps],
    }
