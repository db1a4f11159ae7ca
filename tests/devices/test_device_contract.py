"""Device profiles as plug-ins: the registry DEVICES, the shared contract and its own checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nas._data import data_dir
from nas._plugin import NoOptions
from nas.devices import DEVICES, DeviceProfile, add_device, device_path, get_device, list_devices
from nas.errors import ConfigError, UnknownNameError
from nas.testing import check_plugin, parametrize_with_checks, plugin_checks

#: the shipped profiles (those of a user's folder are theirs to check)
SHIPPED = sorted(p.name.removesuffix(".yaml") for p in data_dir("devices").iterdir()
                 if p.name.endswith(".yaml"))


@pytest.fixture
def devices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "devices"
    monkeypatch.setenv("NAS_DEVICES_DIR", str(folder))
    return folder


@parametrize_with_checks(DEVICES, SHIPPED)
def test_device_contract(plugin: Any, check: Any) -> None:
    check(plugin)


def test_a_profile_answers_the_contract() -> None:
    p = get_device("cpu-1t")
    assert (p.name, p.Options, p.tags) == ("cpu-1t", NoOptions, frozenset())
    assert DEVICES.source("cpu-1t") == "nas"


def test_without_a_description_the_settings_say_one(devices_dir: Path) -> None:
    p = DeviceProfile("edge", intra_op_threads=4, batch_size=8, precision="int8")
    assert p.description == "ONNX Runtime CPU, 4 threads, batch 8, int8"
    ray = DeviceProfile("pi", placement="ray", ray_resource="device:pi4", external=True)
    assert ray.description.startswith("ONNX Runtime CPU, 1 thread, batch 1, fp32, on Ray "
                                      "(device:pi4), external")
    # it follows the settings: not written to the file, said anew when they change
    path = add_device(p)
    assert yaml.safe_load(path.read_text())["description"] == ""
    assert get_device("edge").description == p.description
    assert p.replace(intra_op_threads=2).description.startswith("ONNX Runtime CPU, 2 threads")
    assert DeviceProfile("x", description="mine").replace(batch_size=2).description == "mine"
    assert DEVICES.source("edge") == "user"
    check_plugin(DEVICES, "edge")


def test_a_plugin_registers_a_profile_in_memory(devices_dir: Path) -> None:
    pi = DEVICES.register(DeviceProfile("test-pi", placement="ray", ray_resource="device:pi"))
    try:
        assert "test-pi" in list_devices()
        assert get_device("test-pi") is pi
        check_plugin(DEVICES, "test-pi")
        with pytest.raises(ConfigError, match="'test-pi' is already registered"):
            DEVICES.register(DeviceProfile("test-pi"))
        with pytest.raises(ConfigError, match="'cpu-1t' is already registered"):
            DEVICES.register(DeviceProfile("cpu-1t"))
        with pytest.raises(ConfigError, match=r"'test-pi' already exists .*overwrite"):
            add_device(DeviceProfile("test-pi", intra_op_threads=2))
        with pytest.raises(ConfigError, match="registered by the plug-in package"):
            device_path("test-pi")
        add_device(DeviceProfile("test-pi", intra_op_threads=2), overwrite=True)
        assert get_device("test-pi").intra_op_threads == 2  # a file shadows it
    finally:
        DEVICES.unregister("test-pi")
    with pytest.raises(UnknownNameError, match="not registered by a plug-in"):
        DEVICES.unregister("cpu-1t")


def test_a_profile_that_breaks_the_contract_fails_the_checks() -> None:
    # built without validation, as a buggy plug-in might
    bad = DeviceProfile.model_construct(
        name="Bad Name", provider="FooProvider", intra_op_threads=1, inter_op_threads=1,
        batch_size=1, precision="fp32", graph_optimization="all", execution_mode="sequential",
        allow_spinning=True, placement="local", ray_resource="x", external=False,
        resolutions=None, description="two\nlines")
    failed = []
    for check in plugin_checks(DEVICES, bad):
        try:
            check(bad)
        except AssertionError:
            failed.append(check.__name__)
    assert failed == ["check_registered", "check_name", "check_description",
                      "check_is_a_device_profile", "check_yaml_round_trip",
                      "check_placement_and_provider"]
