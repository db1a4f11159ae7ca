"""Supernet checkpoints: round trip, wrong space, damaged files, atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from nas.errors import CheckpointError, NASError
from nas.supernet import OFASupernet, load_supernet, read_checkpoint_meta, save_supernet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def lively(liven, make_input) -> tuple[OFASupernet, torch.Tensor]:
    torch.manual_seed(0)
    net = OFASupernet("tiny")
    net.set_active(net.space.sample(seed=1))
    x = make_input(4, net.active_arch.r, seed=1)
    liven(net, x, seed=1)
    return net.eval(), x


@pytest.fixture
def saved(lively, tmp_path: Path) -> Path:
    net, _ = lively
    return save_supernet(net, tmp_path / "ck" / "tiny.safetensors", meta={"epoch": 3})


def _outputs(net: OFASupernet, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    space = net.space
    for arch in [net.active_arch, space.largest(), space.smallest(), *space.sample_many(3, 2)]:
        net.set_active(arch)
        with torch.no_grad():
            outs.append(net(x))
    return outs


def test_round_trip_gives_identical_outputs(lively, saved: Path) -> None:
    net, x = lively
    active = net.active_arch
    expected = _outputs(net, x)
    assert expected[0].std(0).mean() > 0.1
    loaded = load_supernet(saved)
    assert isinstance(loaded, OFASupernet)
    assert loaded.space.name == "tiny"
    assert not loaded.training
    loaded.set_active(active)
    for a, b in zip(_outputs(loaded, x), expected, strict=True):
        assert torch.equal(a, b)
    for (name, a), (_, b) in zip(loaded.state_dict().items(), net.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_metadata_round_trip(saved: Path) -> None:
    meta = read_checkpoint_meta(saved)
    assert meta["space"] == "tiny"
    assert meta["extra"] == {"epoch": 3}
    assert load_supernet(saved, space="tiny").checkpoint_meta == {"epoch": 3}


def test_save_creates_folders_and_overwrites(lively, tmp_path: Path) -> None:
    net, _ = lively
    path = tmp_path / "a" / "b" / "net.safetensors"
    assert save_supernet(net, path) == path
    with torch.no_grad():
        net.classifier.bias.add_(1.0)
    save_supernet(net, str(path), meta={"epoch": 4})
    loaded = load_supernet(path)
    assert torch.equal(loaded.classifier.bias, net.classifier.bias)
    assert read_checkpoint_meta(path)["extra"] == {"epoch": 4}
    assert sorted(p.name for p in path.parent.iterdir()) == ["net.safetensors"]


def test_wrong_space_names_both_spaces(saved: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_supernet(saved, space="cifar_mbv3")
    msg = str(info.value)
    assert "'tiny'" in msg
    assert "'cifar_mbv3'" in msg
    assert "\n" not in msg


def test_tensors_of_another_space_are_rejected(lively, tmp_path: Path) -> None:
    net, _ = lively
    path = tmp_path / "liar.safetensors"
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    safetensors.torch.save_file(
        tensors, str(path),
        metadata={"format": "nas.supernet", "version": "1", "space": "cifar_mbv3", "extra": "{}"},
    )
    with pytest.raises(CheckpointError, match="does not match space 'cifar_mbv3'") as info:
        load_supernet(path)
    assert "\n" not in str(info.value)


def _damaged(kind: str, good: bytes) -> bytes:
    rng = np.random.default_rng(0)
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "last-byte-missing":
        return good[:-1]
    if kind == "header-only":
        return good[:100]
    if kind == "empty":
        return b""
    if kind == "random-bytes":
        return rng.bytes(4096)
    if kind == "random-with-small-header-length":
        return (64).to_bytes(8, "little") + rng.bytes(200)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["truncated", "last-byte-missing", "header-only", "empty", "random-bytes",
     "random-with-small-header-length"],
)
def test_damaged_files_raise_checkpoint_error(saved: Path, tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(_damaged(kind, saved.read_bytes()))
    for call in (load_supernet, read_checkpoint_meta):
        with pytest.raises(CheckpointError) as info:
            call(path)
        msg = str(info.value)
        assert str(path) in msg
        assert "\n" not in msg
        assert isinstance(info.value, NASError)


def test_missing_file_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    for call in (load_supernet, read_checkpoint_meta):
        with pytest.raises(CheckpointError, match="not found") as info:
            call(path)
        assert str(path) in str(info.value)
    with pytest.raises(CheckpointError):
        load_supernet(tmp_path)  # a folder


def test_a_foreign_safetensors_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="not a supernet checkpoint") as info:
        load_supernet(path)
    assert "\n" not in str(info.value)


def test_a_failing_save_leaves_the_old_checkpoint(
    lively, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, _ = lively
    good = saved.read_bytes()

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # a partial write, then the failure
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save_file)
    with torch.no_grad():
        net.classifier.bias.add_(1.0)
    with pytest.raises(CheckpointError, match="No space left"):
        save_supernet(net, saved, meta={"epoch": 4})
    monkeypatch.undo()
    assert saved.read_bytes() == good
    assert os.listdir(saved.parent) == [saved.name]  # no temporary file left behind
    assert load_supernet(saved).checkpoint_meta == {"epoch": 3}
