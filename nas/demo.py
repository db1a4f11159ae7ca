"""``make demo``: the whole pipeline on the embedded default, with a summary.

The shipped small supernet (``tiny`` trained on scikit-learn's bundled digits, nothing is
downloaded) is the starting point: measure a sample of its subnets on a device in ONNX
Runtime, fit a latency predictor, run a constrained accuracy/latency search on a local Ray,
export and verify the chosen subnet, and check its predicted latency against a measurement
taken with the same protocol, next to the device's noise floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from nas._term import console

__all__ = ["run_demo"]


def run_demo(
    workdir: Path = Path("runs/demo"), checkpoint: Path | None = None, data: str = "digits",
    device: str = "cpu-1t", n_latency: int = 80, n_trials: int = 60, workers: int = 2,
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
    demo = _Demo(workdir, device=device, seed=seed, progress=progress)
    demo.load_supernet(checkpoint)
    demo.measure(n_latency)
    demo.fit()
    demo.search(data, n_trials, workers)
    demo.export()
    demo.check()
    return demo.summary()


@dataclass
class _Demo:
    """The demo's steps, in order; each records (step, seconds, what it did)."""

    workdir: Path
    device: str
    seed: int
    progress: bool
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def _step(self, name: str, t0: float, msg: str) -> None:
        self.steps.append((name, time.perf_counter() - t0, msg))

    def load_supernet(self, checkpoint: Path | None) -> None:
        from nas._data import shipped_supernet
        from nas.devices import get_device
        from nas.space import get_space
        from nas.supernet import read_checkpoint_meta

        t = time.perf_counter()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ckpt = Path(checkpoint) if checkpoint else shipped_supernet("tiny-digits")
        meta = read_checkpoint_meta(self.ckpt)
        self.space = get_space(meta["space"])
        self.profile = get_device(self.device)
        trained = meta["extra"].get("data", {}).get("source", "?")
        self._step("supernet", t, f"{self.ckpt.name}: space {self.space.name}, trained on "
                   f"{trained}")

    def measure(self, n_latency: int) -> None:
        from nas.db import LatencyDB
        from nas.measure import measure_architectures, sample_for_measurement

        self.db_path = self.workdir / "latency.sqlite"
        self.db = LatencyDB(str(self.db_path))
        t = time.perf_counter()
        have = {r.arch for r in self.db.measurements(self.profile.name, self.space.name,
                                                     source="measured")}
        todo = [a for a in sample_for_measurement(self.space.name, n_latency, seed=self.seed)
                if a not in have]
        if todo:
            measure_architectures(self.profile, self.space.name, todo, self.db,
                                  progress=self.progress)
        self._step("measure", t, f"{len(todo)} subnets timed on {self.device} in ONNX Runtime "
                   f"({len(have)} reused from {self.db_path})")

    def fit(self) -> None:
        from nas.latency import fit_predictor, load_predictor

        t = time.perf_counter()
        # With a few dozen measurements the learned kinds may not beat the MACs-linear
        # baseline: fit both on the same split and let load_predictor pick the better
        # held-out MAPE.
        fitted = {kind: fit_predictor(self.profile, self.space.name, kind, db=self.db,
                                      holdout=0.25, seed=self.seed)[1]
                  for kind in ("flops", "additive")}
        self.predictor = load_predictor(self.profile, self.space.name, db=self.db)
        self.test = fitted[self.predictor.kind]["test"]
        self._step("fit", t, "held-out MAPE " + ", ".join(
            f"{k} {100 * m['test']['mape']:.1f}%" for k, m in fitted.items())
            + f"; using {self.predictor.kind} (Kendall tau {self.test['kendall_tau']:.2f})")

    def search(self, data: str, n_trials: int, workers: int) -> None:
        import numpy as np

        from nas.search import RaySearchConfig, run_search

        sample = self.space.sample_many(2000, seed=self.seed, unique=False)
        self.budget = float(np.quantile(self.predictor.predict(sample), 0.5))
        self.study = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
        lat = f"latency:{self.profile.name}"
        self.cfg = RaySearchConfig(
            space=self.space.name, checkpoint=str(self.ckpt), data=data, proxy="inherited",
            objectives=["accuracy", lat], constraints={lat: self.budget},
            db=str(self.db_path), sampler="tpe", n_trials=n_trials, workers=workers,
            batch_size=2, seed=self.seed, study=self.study,
            storage=str(self.workdir / "studies.journal"),
        )
        t = time.perf_counter()
        self.res = run_search(self.cfg, progress=self.progress)
        self._step("search", t, f"{len(self.res.budget_trials)} trials ({self.cfg.sampler}, "
                   f"{workers} Ray workers), latency <= {self.budget:.4f} ms (the median "
                   f"subnet's): {len(self.res.front)} on the front, study {self.study!r}")

    def export(self) -> None:
        from nas.export import verify_export
        from nas.search import export_trials

        name = self.profile.name
        self.chosen = max(self.res.front, key=lambda tr: (tr.accuracy, -tr.latency_ms[name]))
        t = time.perf_counter()
        (self.out,) = export_trials(self.study, self.cfg.storage, self.workdir / "exports",
                                    [self.chosen.number], progress=False, overwrite=True)
        ver = verify_export(self.out)
        self._step("export", t, f"trial {self.chosen.number} -> {self.out}/ verified "
                   f"(max |onnx - torch| = {ver['max_abs_diff']:.1e})")

    def check(self) -> None:
        from nas.latency import check_agreement

        t = time.perf_counter()
        arch = self.space.parse(self.chosen.arch)  # type: ignore[arg-type]
        self.predicted = float(self.chosen.latency_ms[self.profile.name])
        # Timed now with the protocol the predictor was fitted on (relative to the reference
        # subnet, on the device's scale; the median of three fresh sessions), next to the
        # noise floor: ten measured subnets timed again in fresh sessions.
        self.agreement = check_agreement(self.profile, self.space, self.db, archs=[arch],
                                         predictor=self.predictor, progress=self.progress)
        self.measured = float(self.agreement.measured[0])
        self.err = 100 * (self.predicted / self.measured - 1)
        nf = self.agreement.noise
        floor = (f"noise floor p90 {100 * nf.p90:.1f}% ({nf.n} repeats): "
                 + ("agree" if abs(self.err) <= 100 * nf.p90 else "[red]outside the floor[/red]")
                 if nf is not None else "noise floor not measured")
        self._step("check", t, f"predicted {self.predicted:.4f} ms, measured "
                   f"{self.measured:.4f} ms ({self.err:+.1f}%); {floor}")

    def summary(self) -> dict[str, Any]:
        """Print the front and the steps; the summary as a dict."""
        from nas.search import front_summary, front_table

        console.print(front_table(self.res, title=f"Pareto front: accuracy ({self.cfg.proxy}) "
                                  f"vs {self.profile.name} latency"))
        console.print(front_summary(self.res))
        table = Table("step", "seconds", "result", title="nas demo")
        for name, secs, msg in self.steps:
            table.add_row(name, f"{secs:.1f}", msg)
        console.print(table)
        console.print(
            f"chosen subnet {self.chosen.arch_hash}: validation accuracy "
            f"{self.chosen.accuracy:.3f}, {self.predicted:.4f} ms predicted on "
            f"{self.profile.name}, exported to {self.out}/\n"
            f"next: nas results --study {self.study} --storage {self.cfg.storage}   |   "
            f"optuna-dashboard {self.cfg.storage}"
        )
        return {
            "study": self.study, "storage": self.cfg.storage, "budget_ms": self.budget,
            "chosen": self.chosen.to_json(), "export": str(self.out),
            "n_front": len(self.res.front),
            "latency": {"predicted_ms": self.predicted, "measured_ms": self.measured,
                        "error_pct": self.err, "heldout_mape": float(self.test["mape"]),
                        "kind": self.predictor.kind,
                        "noise": (self.agreement.noise.to_dict()
                                  if self.agreement.noise is not None else None),
                        "scale": (self.agreement.scale.to_dict()
                                  if self.agreement.scale is not None else None)},
            "steps": [{"step": s, "seconds": round(x, 3)} for s, x, _ in self.steps],
        }
