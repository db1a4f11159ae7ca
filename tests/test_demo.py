"""`make demo`'s job: measure, fit, constrained search on local Ray, export, verify, check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.demo import run_demo
from nas.export import verify_export


@pytest.mark.slow
@pytest.mark.ray
def test_demo_runs_the_whole_pipeline_and_reruns(tmp_path, capsys):
    summary = run_demo(workdir=tmp_path, n_latency=12, n_trials=12, workers=2,
                       progress=False)
    out = capsys.readouterr().out
    assert [s["step"] for s in summary["steps"]] == [
        "supernet", "measure", "fit", "search", "export", "check"]
    chosen = summary["chosen"]
    # the chosen subnet meets the latency budget and is the most accurate on the front
    assert chosen["feasible"]
    assert chosen["latency_ms"]["cpu-1t"] <= summary["budget_ms"]
    manifest = json.loads((Path(summary["export"]) / "manifest.json").read_text())
    assert manifest["arch_hash"] == chosen["arch_hash"]
    assert manifest["extra"]["search"]["trial"] == chosen["number"]
    assert verify_export(summary["export"])["arch_hash"] == chosen["arch_hash"]
    lat = summary["latency"]
    assert lat["measured_ms"] > 0
    assert lat["predicted_ms"] > 0
    # measured with the predictor's own protocol, next to the noise floor it prints
    assert lat["noise"]["n"] >= 10
    assert lat["scale"]["n"] >= 5 + 12
    assert "p90" in out
    assert "repeats" in out
    assert "Pareto front" in out
    assert "chosen subnet" in out
    # a second run reuses the measurements and starts a new study
    again = run_demo(workdir=tmp_path, n_latency=12, n_trials=12, workers=2, progress=False)
    assert again["study"] != summary["study"]
    assert "12 reused" in capsys.readouterr().out
