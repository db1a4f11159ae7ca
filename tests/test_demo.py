"""`make demo`'s job, on the tiny space: export, verify, measure, fit, predict."""

from __future__ import annotations

import json

import pytest

from nas.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reruns(tmp_path, capsys):
    summary = run_demo(workdir=tmp_path, space="tiny", seed=1, n_latency=12)
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / f"export-{summary['hash']}" / "manifest.json").read_text())
    assert manifest["arch_hash"] == summary["hash"]
    assert [s["step"] for s in summary["steps"]] == [
        "supernet", "sample", "export", "verify", "measure", "fit", "predict"]
    lat = summary["latency"]
    assert lat["measured_ms"] > 0 and lat["predicted_ms"] > 0
    assert "predicted" in out and "measured" in out
    # a second run reuses the checkpoint and the measurements
    again = run_demo(workdir=tmp_path, space="tiny", seed=1, n_latency=12)
    assert again["hash"] == summary["hash"]
    assert "loaded" in capsys.readouterr().out
