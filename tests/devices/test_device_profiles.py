"""Device profiles: validation, the shipped YAML files, adding and listing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nas._data import data_dir
from nas.devices import (
    DeviceProfile,
    add_device,
    device_from_file,
    device_path,
    get_device,
    list_devices,
    user_devices_dir,
)
from nas.errors import ConfigError, UnknownNameError

SHIPPED = ("cpu-1t", "cpu-2t", "cpu-1t-int8")


@pytest.fixture
def devices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "devices"
    monkeypatch.setenv("NAS_DEVICES_DIR", str(folder))
    return folder


def test_shipped_profiles() -> None:
    assert set(SHIPPED) <= set(list_devices())
    one, two, int8 = (get_device(n) for n in SHIPPED)
    assert (one.intra_op_threads, one.precision) == (1, "fp32")
    assert (two.intra_op_threads, two.precision) == (2, "fp32")
    assert (int8.intra_op_threads, int8.precision) == (1, "int8")
    for name in SHIPPED:
        text = (data_dir("devices") / f"{name}.yaml").read_text()
        assert text.startswith("# "), f"{name}.yaml has no description comment"
        assert get_device(name).description


@pytest.mark.parametrize(
    "field, value",
    [
        ("precision", "fp16"),
        ("intra_op_threads", 0),
        ("inter_op_threads", -2),
        ("intra_op_threads", True),
        ("batch_size", 1.5),
        ("provider", "FooExecutionProvider"),
        ("graph_optimization", "max"),
        ("execution_mode", "async"),
        ("placement", "cloud"),
        ("allow_spinning", "yes"),
        ("external", 1),
        ("input_resolution", 4),
        ("input_resolution", 32.5),
        ("input_resolution", True),
    ],
)
def test_bad_field_is_named_with_its_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^device profile 'd': {field} = ") as info:
        DeviceProfile.from_dict({"name": "d", field: value})
    assert f"{field} = {value!r}: " in str(info.value)
    assert "\n" not in str(info.value)


def test_an_input_resolution_is_for_image_subnets_only() -> None:
    prof = DeviceProfile("small", input_resolution=32)
    assert "inputs 32x32" in prof.description
    assert DeviceProfile.from_dict(prof.to_dict()) == prof
    with pytest.raises(ConfigError, match="input_resolution is for image subnets"):
        DeviceProfile("lm", input_resolution=32, workload={"phase": "decode", "context": 8})
    shipped = get_device("cpu-1t-r32")
    assert shipped.input_resolution == 32
    assert shipped.graph_optimization == "all"
    assert get_device("cpu-1t-r32-noopt").graph_optimization == "disable"


def test_bad_names_and_shapes() -> None:
    for name in ("", "a b", "../x", "-x", "x" * 65, 3):
        with pytest.raises(ConfigError, match="device name"):
            DeviceProfile(name)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'d': threads: unknown field"):
        DeviceProfile.from_dict({"name": "d", "threads": 2})
    with pytest.raises(ConfigError, match="name: Field required"):
        DeviceProfile.from_dict({"precision": "fp32"})
    with pytest.raises(ConfigError, match=r"ray_resource = 'device:pi4': needs placement 'ray'"):
        DeviceProfile("d", ray_resource="device:pi4")
    with pytest.raises(ConfigError, match="ray_resource = ' ': must be a non-empty string"):
        DeviceProfile("d", placement="ray", ray_resource=" ")


def test_dict_round_trip_and_yaml_integers() -> None:
    p = DeviceProfile(
        "pi4", intra_op_threads=4, placement="ray", ray_resource="device:pi4", description="Pi"
    )
    assert DeviceProfile.from_dict(p.to_dict()) == p
    assert DeviceProfile.from_dict({"name": "d", "intra_op_threads": 2.0}).intra_op_threads == 2


def test_add_show_list(devices_dir: Path) -> None:
    p = DeviceProfile("pi4-4t", intra_op_threads=4, placement="ray", ray_resource="device:pi4")
    path = add_device(p)
    assert path == devices_dir / "pi4-4t.yaml"
    assert user_devices_dir() == devices_dir
    assert get_device("pi4-4t") == p
    assert Path(str(device_path("pi4-4t"))) == path
    assert "pi4-4t" in list_devices()
    assert set(SHIPPED) <= set(list_devices())
    assert yaml.safe_load(path.read_text())["ray_resource"] == "device:pi4"
    assert sorted(f.name for f in devices_dir.iterdir()) == ["pi4-4t.yaml"]  # no temp files


def test_duplicates_need_overwrite(devices_dir: Path) -> None:
    add_device(DeviceProfile("box", intra_op_threads=2))
    with pytest.raises(ConfigError, match=r"'box' already exists.*overwrite"):
        add_device(DeviceProfile("box", intra_op_threads=3))
    assert get_device("box").intra_op_threads == 2
    add_device(DeviceProfile("box", intra_op_threads=3), overwrite=True)
    assert get_device("box").intra_op_threads == 3
    with pytest.raises(ConfigError, match="'cpu-1t' already exists"):
        add_device(DeviceProfile("cpu-1t", intra_op_threads=4))
    # the shipped settings again: nothing to write, the shipped file is the answer
    assert add_device(DeviceProfile("cpu-1t")) == Path(str(device_path("cpu-1t")))
    assert not (devices_dir / "cpu-1t.yaml").exists()
    add_device(DeviceProfile("cpu-1t", description="mine"), overwrite=True)  # shadows shipped
    assert get_device("cpu-1t").description == "mine"


def test_unknown_device_lists_known(devices_dir: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown device 'nope'; known devices: .*cpu-1t"):
        get_device("nope")


def test_device_from_file(tmp_path: Path) -> None:
    f = tmp_path / "edge-box.yaml"
    f.write_text("# an edge box\nintra_op_threads: 3\nprecision: int8\n")
    p = device_from_file(f)
    assert (p.name, p.intra_op_threads, p.precision) == ("edge-box", 3, "int8")
    f.write_text("precision: [fp32\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        device_from_file(f)
    f.write_text("precision: bf16\n")
    with pytest.raises(ConfigError, match=r"edge-box.yaml: precision = 'bf16': must be one of"):
        device_from_file(f)
    with pytest.raises(ConfigError, match=r"device profile not found: .*missing\.yaml"):
        device_from_file(tmp_path / "missing.yaml")


def test_file_name_and_profile_name_must_agree(devices_dir: Path) -> None:
    devices_dir.mkdir()
    (devices_dir / "a.yaml").write_text("name: b\n")
    with pytest.raises(ConfigError, match=r"a.yaml: name = 'b': .*the file is named 'a'"):
        get_device("a")
