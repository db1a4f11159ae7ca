"""Fixtures of the service tests: a latency DB with real fitted predictors, a tiny supernet,
and the service itself on real Ray Serve (started once for the package)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nas.db import LatencyDB
from nas.latency import fit_predictor, get_device
from nas.space import get_space
from nas.supernet import OFASupernet, save_supernet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_db(path: Path, n: int = 60) -> str:
    """A latency DB with imported tiny measurements on cpu-1t (latency grows with MACs, 3%
    noise) and fitted ``additive`` and ``flops`` predictors: no timing needed."""
    url = f"sqlite:///{path}"
    db = LatencyDB(url)
    sp = get_space("tiny")
    archs = sp.sample_many(n, seed=0)
    macs = sp.costs(archs)["macs"].astype(float)
    noise = np.random.default_rng(0).normal(1.0, 0.03, n)
    db.ensure_device(get_device("cpu-1t"))
    db.add_measurements("cpu-1t", [
        {"arch": a, "latency_ms": float((0.2 + m / 2e6) * z), "source": "imported"}
        for a, m, z in zip(archs, macs, noise, strict=True)
    ])
    for kind in ("flops", "additive"):
        fit_predictor("cpu-1t", "tiny", kind, db=db, holdout=0.25)
    db.close()
    return url


@pytest.fixture(scope="package")
def service_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("serve")
    allowed = root / "allowed"
    allowed.mkdir()
    torch.manual_seed(0)
    net = OFASupernet("tiny")
    net.calibrate_random()
    ckpt = allowed / "tiny.safetensors"
    save_supernet(net, ckpt, meta={"data": {"source": "digits", "val_size": 100}})
    outside = root / "outside.safetensors"
    outside.write_bytes(ckpt.read_bytes())
    return {"root": root, "allowed": allowed, "checkpoint": str(ckpt),
            "outside": str(outside), "db": synthetic_db(root / "latency.sqlite")}


@pytest.fixture(scope="package")
def service(service_env: dict[str, Any]) -> Iterator[Any]:
    """The service on real Ray Serve (local Ray, 2 CPUs), loopback, no token."""
    import ray

    from nas.serve import ServiceSettings, start

    if ray.is_initialized():  # left by an earlier test: Serve's ingress needs a fresh one
        ray.shutdown()
    before = os.environ.get("NAS_CACHE_DIR")
    os.environ["NAS_CACHE_DIR"] = str(service_env["root"] / "cache")  # the workers' caches
    settings = ServiceSettings(
        port=free_port(), db=service_env["db"], state_dir=str(service_env["root"] / "state"),
        allowed_roots=(str(service_env["allowed"]),), max_archs=50,
        max_body_bytes=256 * 1024,
    )
    svc = start(settings, num_cpus=2)
    try:
        yield svc
    finally:
        svc.stop()
        if before is None:
            os.environ.pop("NAS_CACHE_DIR", None)
        else:
            os.environ["NAS_CACHE_DIR"] = before
