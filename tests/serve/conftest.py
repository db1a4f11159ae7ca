"""Fixtures of the service tests: a latency DB with real fitted predictors, a tiny supernet,
the service itself on real Ray Serve (started once for the package, in this process), and a
real ``nas serve`` process with its default limits and a token (started once, when a test
asks for it)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch

from nas.db import LatencyDB
from nas.devices import get_device
from nas.latency import fit_predictor
from nas.space import get_space
from nas.supernet import OFASupernet, save_supernet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_db(path: Path, n: int = 60) -> str:
    """A latency DB with imported tiny measurements on cpu-1t (latency grows with MACs, 3%
    noise) and fitted ``additive`` and ``flops`` predictors, and gpt_shakespeare's on
    cpu-1t-decode256 with a fitted ``additive``: no timing needed."""
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
    # the shipped language model's space on a decode profile: ms per token grows with the
    # weights read per token and the blocks (what decode follows), 3% noise
    lm = get_space("gpt_shakespeare")
    lm_archs = lm.sample_many(n, seed=1)
    mem = lm.memory(lm_archs, context=256)
    depth = np.asarray([a.to_dict()["n_layer"] for a in lm_archs], dtype=float)
    db.ensure_device(get_device("cpu-1t-decode256"))
    db.add_measurements("cpu-1t-decode256", [
        {"arch": a, "latency_ms": float((0.02 + 0.01 * d + w / 2e8) * z), "source": "imported"}
        for a, d, w, z in zip(lm_archs, depth, mem["weights"], noise, strict=True)
    ])
    fit_predictor("cpu-1t-decode256", "gpt_shakespeare", "additive", db=db, holdout=0.25)
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
    address = os.environ.pop("RAY_ADDRESS", None)  # the service starts its own Ray
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
        if address is not None:
            os.environ["RAY_ADDRESS"] = address
        if before is None:
            os.environ.pop("NAS_CACHE_DIR", None)
        else:
            os.environ["NAS_CACHE_DIR"] = before


@dataclass
class ServeProcess:
    """A real ``nas serve`` in its own process group: its URL, token, process and settings."""

    url: str
    port: int
    token: str
    proc: subprocess.Popen[bytes]
    state_dir: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _nas() -> list[str]:
    exe = Path(sys.executable).with_name("nas")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "nas.cli"]


@pytest.fixture(scope="package")
def nas_command() -> list[str]:
    """The ``nas`` command of this environment, as a subprocess argument list."""
    return _nas()


@pytest.fixture(scope="package")
def nas_serve(service_env: dict[str, Any],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``nas serve`` started as a user starts it (default limits, loopback, a token from
    $NAS_API_TOKEN, one CPU), in its own process group; stopped with SIGINT like Ctrl-C."""
    root = tmp_path_factory.mktemp("nas-serve")
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "NAS_API_TOKEN": token, "NAS_CACHE_DIR": str(root / "cache")}
    env.pop("RAY_ADDRESS", None)
    log = (root / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*_nas(), "serve", "--port", str(port), "--db", service_env["db"], "--state-dir",
         str(root / "state"), "--allow-root", str(service_env["allowed"]), "--num-cpus", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nas serve exited with {proc.returncode}: "
                                   f"{(root / 'serve.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nas serve did not answer: "
                                   f"{(root / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield ServeProcess(url, port, token, proc, root / "state")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # Ray's processes, if any were left
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
