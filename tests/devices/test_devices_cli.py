"""``nas devices list|show|add``, through typer's test runner on the group's ``register``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nas.devices import _cli
from nas.errors import ConfigError, NASError, UnknownNameError


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    root = typer.Typer(no_args_is_help=True)
    _cli.register(root)
    return root


def ok(app: typer.Typer, *args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def fails(app: typer.Typer, exc_type: type[NASError], *args: str) -> NASError:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code != 0
    assert isinstance(res.exception, exc_type), (res.output, res.exception)
    return res.exception


@pytest.mark.parametrize(
    "args, words",
    [
        (["devices", "--help"], ["list", "show", "add"]),
        (["devices", "add", "--help"], ["--threads", "--precision", "--ray-resource"]),
        (["devices", "list", "--help"], ["--json"]),
    ],
)
def test_help(app: typer.Typer, args: list[str], words: list[str]) -> None:
    out = ok(app, *args)
    for w in words:
        assert w in out


def test_devices_list_and_show(app: typer.Typer) -> None:
    listed = json.loads(ok(app, "devices", "list", "--json"))
    assert {"cpu-1t", "cpu-2t", "cpu-1t-int8"} <= {d["name"] for d in listed}
    assert "cpu-1t-int8" in ok(app, "devices", "list")
    shown = json.loads(ok(app, "devices", "show", "cpu-2t", "--json"))
    assert shown["intra_op_threads"] == 2
    assert shown["file"].endswith("cpu-2t.yaml")
    assert "intra_op_threads" in ok(app, "devices", "show", "cpu-1t")
    err = fails(app, UnknownNameError, "devices", "show", "nope")
    assert "known devices" in str(err)


def test_devices_add(app: typer.Typer, tmp_path: Path) -> None:
    out = ok(
        app, "devices", "add", "pi4-4t", "--threads", "4", "--precision", "int8",
        "--ray-resource", "device:pi4", "--description", "Raspberry Pi 4", "--json",
    )  # fmt: skip
    added = json.loads(out)
    assert added["placement"] == "ray"
    assert added["precision"] == "int8"
    assert Path(added["file"]) == tmp_path / "devices" / "pi4-4t.yaml"
    shown = json.loads(ok(app, "devices", "show", "pi4-4t", "--json"))
    assert shown["intra_op_threads"] == 4
    assert shown["ray_resource"] == "device:pi4"
    assert "pi4-4t" in {d["name"] for d in json.loads(ok(app, "devices", "list", "--json"))}
    fails(app, ConfigError, "devices", "add", "pi4-4t", "--threads", "2")
    ok(app, "devices", "add", "pi4-4t", "--threads", "2", "--overwrite")
    assert json.loads(ok(app, "devices", "show", "pi4-4t", "--json"))["intra_op_threads"] == 2
    assert "added device" in ok(app, "devices", "add", "box", "--no-spinning", "--external")
    box = json.loads(ok(app, "devices", "show", "box", "--json"))
    assert (box["allow_spinning"], box["external"], box["placement"]) == (False, True, "local")


def test_devices_add_a_small_input_profile(app: typer.Typer, tmp_path: Path) -> None:
    added = json.loads(ok(app, "devices", "add", "gpu-like", "--input-resolution", "32",
                          "--json"))
    assert added["input_resolution"] == 32
    assert "inputs 32x32" in added["description"]
    fails(app, ConfigError, "devices", "add", "bad", "--input-resolution", "3")
    fails(app, ConfigError, "devices", "add", "lm", "--decode", "64", "--input-resolution", "32")
    assert not (tmp_path / "devices" / "bad.yaml").exists()


def test_devices_add_from_file_and_bad_values(app: typer.Typer, tmp_path: Path) -> None:
    src = tmp_path / "gpu.yaml"
    src.write_text("provider: CUDAExecutionProvider\nbatch_size: 8\nintra_op_threads: 2\n")
    ok(app, "devices", "add", "gpu-b8", "--from-file", str(src), "--threads", "6")
    shown = json.loads(ok(app, "devices", "show", "gpu-b8", "--json"))
    assert (shown["provider"], shown["batch_size"], shown["intra_op_threads"]) == (
        "CUDAExecutionProvider",
        8,
        6,
    )
    ok(app, "devices", "add", "trt", "--provider", "tensorrt")
    assert json.loads(ok(app, "devices", "show", "trt", "--json"))["provider"] == (
        "TensorrtExecutionProvider"
    )
    err = fails(app, ConfigError, "devices", "add", "x", "--precision", "fp16")
    assert str(err) == "device profile 'x': precision = 'fp16': must be one of ['fp32', 'int8']"
    err = fails(app, ConfigError, "devices", "add", "x", "--threads", "0")
    assert "intra_op_threads = 0" in str(err)
    err = fails(app, ConfigError, "devices", "add", "x", "--provider", "Foo")
    assert "provider = 'Foo'" in str(err)
    assert "CPUExecutionProvider" in str(err)
    assert not (tmp_path / "devices" / "x.yaml").exists()
