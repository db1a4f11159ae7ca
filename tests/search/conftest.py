"""Fixtures for the search tests: a tiny supernet, a latency predictor measured here, Ray."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from nas.db import LatencyDB
from nas.latency import fit_predictor
from nas.measure import TimingConfig, measure_architectures, sample_for_measurement
from nas.supernet import OFASupernet, save_supernet


@pytest.fixture(scope="session")
def search_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny supernet checkpoint (digits metadata) and a latency DB whose cpu-1t predictor
    was fitted on 16 tiny subnets really timed in ONNX Runtime (quick protocol)."""
    root = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    net = OFASupernet("tiny")
    net.calibrate_random()
    ckpt = root / "tiny.safetensors"
    save_supernet(net, ckpt, meta={"data": {"source": "digits", "val_size": 100}})
    db_url = f"sqlite:///{root / 'latency.sqlite'}"
    db = LatencyDB(db_url)
    archs = sample_for_measurement("tiny", 16, seed=0)
    measure_architectures("cpu-1t", "tiny", archs, db, progress=False,
                          config=TimingConfig.quick())
    fit_predictor("cpu-1t", "tiny", "additive", db=db, holdout=0.25)
    return {"checkpoint": str(ckpt), "db": db_url, "root": str(root)}


@pytest.fixture
def make_config(search_env: dict[str, str], tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``make_config(**overrides)``: a search config (dict) on tiny: inherited accuracy on the
    digits and cpu-1t latency, stored in this test's temporary folder."""
    return lambda **kw: _config(search_env, tmp_path, **kw)


def _config(env: dict[str, str], tmp: Path, **kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "space": "tiny", "checkpoint": env["checkpoint"], "data": "digits",
        "proxy": "inherited", "proxy_options": {"val_limit": 100, "bn_batches": 1,
                                                "bn_batch_size": 32},
        "objectives": ["accuracy", "latency:cpu-1t"], "db": env["db"],
        "storage": str(tmp / "studies.journal"), "n_trials": 20, "workers": 2,
        "batch_size": 2, "seed": 0,
    }
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray for the module (workers see NAS_CACHE_DIR in a temporary folder)."""
    ray = pytest.importorskip("ray")
    before = os.environ.get("NAS_CACHE_DIR")
    os.environ["NAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("nas-cache"))
    from nas._ray import start_ray, stop_ray

    if ray.is_initialized():
        ray.shutdown()
    address = os.environ.pop("RAY_ADDRESS", None)
    start_ray(num_cpus=2)  # as `nas search` starts it: loopback, the user's priority
    try:
        yield
    finally:
        stop_ray()
        if address is not None:
            os.environ["RAY_ADDRESS"] = address
        if before is None:
            os.environ.pop("NAS_CACHE_DIR", None)
        else:
            os.environ["NAS_CACHE_DIR"] = before
