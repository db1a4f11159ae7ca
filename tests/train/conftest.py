"""Fixtures for the training tests: tiny image datasets written in every supported format."""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)


def write_image_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "emu"), n: int = 4,
    size: tuple[int, int] = (12, 12), splits: bool = False, ext: str = "png", seed: int = 0,
) -> Path:
    """``root/<class>/i.png`` (or ``root/train|test/<class>/...``) with random pixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test") if splits else ("",):
        for c in classes:
            d = root / split / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n if split != "test" else max(1, n // 2)):
                img = Image.fromarray(_image(rng, size))
                img.save(d / f"{i:04d}.{ext}", **({"quality": 95} if ext == "jpg" else {}))
    return root


def tar_folder(folder: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(folder, arcname=arcname)
    return out


def write_cifar_python(root: Path, per_batch: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        (d / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (d / "batches.meta").write_bytes(pickle.dumps(meta))
    return d


def write_cifar_binary(root: Path, per_batch: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, (per_batch, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        (d / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    return d


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """``image_folder(name="imgs", **kw)``: a folder of random images (see write_image_folder)."""

    def make(name: str = "imgs", **kw: Any) -> Path:
        return write_image_folder(tmp_path / name, **kw)

    return make


@pytest.fixture
def data_files() -> Any:
    """The writers above, for tests that build their own layouts."""

    class _Files:
        image_folder = staticmethod(write_image_folder)
        tar_folder = staticmethod(tar_folder)
        cifar_python = staticmethod(write_cifar_python)
        cifar_binary = staticmethod(write_cifar_binary)
        png_bytes = staticmethod(png_bytes)

    return _Files()


def tiny_config_dict(out: Path, phases: list[dict[str, Any]] | None = None,
                     **over: Any) -> dict[str, Any]:
    """A training configuration on the tiny space and the digits, a few steps per epoch."""
    raw: dict[str, Any] = {
        "space": "tiny", "out": str(out), "seed": 0, "batch_size": 16,
        "data": {"source": "digits", "val_size": 48, "train_limit": 48},
        "eval": {"val_limit": 48, "bn_batches": 1, "batch_size": 48,
                 "subnets": ["largest", "smallest"]},
        "phases": phases or [{"task": "full", "epochs": 1, "lr": 0.05}],
    }
    raw.update(over)
    return raw


@pytest.fixture
def tiny_config() -> Callable[..., dict[str, Any]]:
    """``tiny_config(out, phases=None, **overrides)`` -> config dict (see tiny_config_dict)."""
    return tiny_config_dict


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    """Tiny models run faster on one torch thread, above all on a busy machine."""
    yield
