"""The device profiles as the service reads them per request (``nas.serve._devices``): what
``nas.devices`` says, read once and kept while the profile folders are unchanged, a profile
added or removed seen by the next lookup, one edited in place within ``max_age_s``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import nas.devices
from nas.devices import DEVICES, DeviceProfile, add_device, device_path, list_devices
from nas.errors import UnknownNameError
from nas.serve._devices import DeviceCache


@pytest.fixture()
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "devices"
    monkeypatch.setenv("NAS_DEVICES_DIR", str(folder))
    return folder


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times the folders were listed and a profile file read."""
    counts = {"list": 0, "get": 0}
    real_list, real_get = nas.devices.list_devices, DEVICES.get

    def listed() -> list[str]:
        counts["list"] += 1
        return real_list()

    def got(name: str) -> Any:
        counts["get"] += 1
        return real_get(name)

    monkeypatch.setattr(nas.devices, "list_devices", listed)
    monkeypatch.setattr(DEVICES, "get", got)
    return counts


def test_what_nas_devices_says_read_once_while_nothing_changes(
        user_dir: Path, reads: dict[str, int]) -> None:
    cache = DeviceCache(max_age_s=3600)
    for _ in range(5):
        assert cache.names() == list_devices()
        assert "cpu-1t" in cache
        assert "nope" not in cache
        assert cache.get("cpu-1t") == DEVICES.get("cpu-1t")
        assert cache.known("cpu-1t") == DEVICES.get("cpu-1t")
        assert cache.known("nope") is None
    assert reads == {"list": 1, "get": 1 + 5 * 2}  # the test's own reads: 5 x 2


def test_an_unknown_device_is_the_registry_s_error(user_dir: Path) -> None:
    cache = DeviceCache()
    with pytest.raises(UnknownNameError) as got:
        cache.get("nope")
    with pytest.raises(UnknownNameError) as expected:
        DEVICES.get("nope")
    assert str(got.value) == str(expected.value)


def test_a_profile_added_or_removed_is_seen_by_the_next_lookup(user_dir: Path) -> None:
    cache = DeviceCache(max_age_s=3600)
    assert "bench-new" not in cache
    assert cache.known("bench-new") is None
    add_device(DeviceProfile("bench-new", intra_op_threads=3))  # creates the folder
    assert "bench-new" in cache
    assert cache.get("bench-new").intra_op_threads == 3
    add_device(DeviceProfile("bench-two", intra_op_threads=2))  # into the folder, at once
    assert "bench-two" in cache
    device_path("bench-new").unlink()
    assert "bench-new" not in cache
    assert cache.known("bench-new") is None
    assert cache.names() == list_devices()


def test_a_profile_edited_in_place_is_seen_within_max_age(user_dir: Path) -> None:
    add_device(DeviceProfile("bench-edit", intra_op_threads=1))
    path = device_path("bench-edit")
    time.sleep(0.05)  # the folder's change is past a clock tick: its stamp is trusted
    cache = DeviceCache(max_age_s=0.2)
    assert cache.get("bench-edit").intra_op_threads == 1
    text = path.read_text()
    with path.open("r+") as f:  # the same file, rewritten: its folder does not change
        f.write(text.replace("intra_op_threads: 1", "intra_op_threads: 4"))
    assert "intra_op_threads: 4" in path.read_text()
    time.sleep(0.25)
    assert cache.get("bench-edit").intra_op_threads == 4
