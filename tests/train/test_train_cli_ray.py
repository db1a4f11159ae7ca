"""``nas train`` through the CLI, and data-parallel training on Ray Train."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from nas.supernet import load_supernet


def test_train_command_json_and_one_line_errors(tiny_config, tmp_path, run_nas):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "run")))
    code, out, err = run_nas(["train", "--config", str(cfg), "--no-progress", "--json",
                              "--threads", "1"])
    assert code == 0, err
    res = json.loads(out[out.index("{"):])
    assert res["progress"]["step"] == 3
    assert res["checkpoint"].endswith("supernet.safetensors")
    code, _, err = run_nas(["train", "--config", str(cfg), "--no-progress"])
    assert code == 2
    assert err.startswith("error: ")
    assert "--resume" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_nas(["train", "--config", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "config file not found" in err


@pytest.mark.slow
@pytest.mark.ray
def test_two_ray_workers_train_data_parallel(tiny_config, tmp_path):
    ray = pytest.importorskip("ray")
    from nas.train import config_from_dict, train_distributed

    phases = [{"task": "full", "epochs": 1, "lr": 0.05},
              {"task": "depth", "epochs": 1, "lr": 0.02, "subnets_per_step": 2}]
    cfg = config_from_dict(tiny_config(tmp_path / "run", phases))
    try:
        res = train_distributed(cfg, workers=2, cpus_per_worker=1, progress=False)
    finally:
        ray.shutdown()
    out = tmp_path / "run"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # 48 images, 2 workers x batch 16: one step per epoch, 32 images per step
    assert [(r["phase"], r["step"]) for r in rows] == [("0-full", "1"), ("1-depth", "2")]
    assert res.progress.step == 2
    assert res.progress.images == 64
    assert load_supernet(out / "supernet.safetensors").checkpoint_meta["tag"] == "final"
