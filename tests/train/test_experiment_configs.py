"""The experiment configurations in experiments/ load and validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.train import LMTrainConfig, load_any_config, load_config

ROOT = Path(__file__).resolve().parents[2]
#: training configs; experiments/search/ holds search configs (tests/search checks them)
CONFIGS = sorted(p for p in ROOT.glob("experiments/*/*.yaml") if p.parent.name != "search")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_config_is_valid(path):
    cfg = load_any_config(path)
    if isinstance(cfg, LMTrainConfig):  # a language model's (a gpt space): counted in steps
        assert cfg.steps > 0
        assert cfg.subnets_per_step >= 2
        return
    assert cfg.total_epochs() > 0
    assert cfg.phases[0].task in ("full", "sandwich")


def test_the_cifar10_experiment_follows_progressive_shrinking():
    cfg = load_config(ROOT / "experiments/cifar10_supernet/config.yaml")
    assert [p.task for p in cfg.phases] == ["full", "kernel", "depth", "depth", "expand",
                                            "expand"]
    assert cfg.data.source == "../shared/data/cifar10-jpeg.tar.gz"
    assert cfg.channels_last
