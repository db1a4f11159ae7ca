"""Fixtures for the proxy tests: a tiny supernet checkpoint and a proxy context on the digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas.proxies import ProxyContext
from nas.supernet import OFASupernet, save_supernet
from nas.train import load_dataset


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny supernet with calibrated BatchNorm, saved to a file."""
    torch.manual_seed(0)
    net = OFASupernet("tiny")
    net.calibrate_random()
    path = tmp_path_factory.mktemp("proxies") / "tiny.safetensors"
    save_supernet(net, path, meta={"data": {"source": "digits", "val_size": 64, "val_seed": 0}})
    return path


@pytest.fixture(scope="session")
def digits_splits():
    return load_dataset("digits", val_size=64, image_size=24)


@pytest.fixture
def ctx(tiny_checkpoint, digits_splits, tmp_path) -> ProxyContext:
    return ProxyContext.build("tiny", checkpoint=tiny_checkpoint, data=digits_splits,
                              cache=tmp_path / "scores.sqlite", bn_batches=1, bn_batch_size=32,
                              val_limit=64)


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    """Tiny models run faster on one torch thread, above all on a busy machine."""
    yield
