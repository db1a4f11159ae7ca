"""``nas devices ...`` and ``nas latency import|export``, through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nas.db import LatencyDB
from nas.errors import ConfigError, DataError, NASError, UnknownNameError
from nas.latency import _cli_data
from nas.space import get_space

SPACE = "tiny"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    monkeypatch.delenv("NAS_DB_URL", raising=False)
    root = typer.Typer(no_args_is_help=True)
    latency = typer.Typer(no_args_is_help=True)
    root.add_typer(latency, name="latency")
    _cli_data.register(root, latency)
    return root


def run(app: typer.Typer, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


def ok(app: typer.Typer, *args: str, env: dict[str, str] | None = None) -> str:
    res = run(app, *args, env=env)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def fails(app: typer.Typer, exc_type: type[NASError], *args: str) -> NASError:
    res = run(app, *args)
    assert res.exit_code != 0
    assert isinstance(res.exception, exc_type), (res.output, res.exception)
    return res.exception


@pytest.mark.parametrize(
    "args, words",
    [
        (["devices", "--help"], ["list", "show", "add"]),
        (["devices", "add", "--help"], ["--threads", "--precision", "--ray-resource"]),
        (["latency", "import", "--help"], ["--device", "--space", "--db", ".jsonl"]),
        (["latency", "export", "--help"], ["--out", "parquet", "--db"]),
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
    assert shown["intra_op_threads"] == 2 and shown["file"].endswith("cpu-2t.yaml")
    assert "intra_op_threads" in ok(app, "devices", "show", "cpu-1t")
    err = fails(app, UnknownNameError, "devices", "show", "nope")
    assert "known devices" in str(err)


def test_devices_add(app: typer.Typer, tmp_path: Path) -> None:
    out = ok(
        app, "devices", "add", "pi4-4t", "--threads", "4", "--precision", "int8",
        "--ray-resource", "device:pi4", "--description", "Raspberry Pi 4", "--json",
    )  # fmt: skip
    added = json.loads(out)
    assert added["placement"] == "ray" and added["precision"] == "int8"
    assert Path(added["file"]) == tmp_path / "devices" / "pi4-4t.yaml"
    shown = json.loads(ok(app, "devices", "show", "pi4-4t", "--json"))
    assert shown["intra_op_threads"] == 4 and shown["ray_resource"] == "device:pi4"
    assert "pi4-4t" in {d["name"] for d in json.loads(ok(app, "devices", "list", "--json"))}
    fails(app, ConfigError, "devices", "add", "pi4-4t", "--threads", "2")
    ok(app, "devices", "add", "pi4-4t", "--threads", "2", "--overwrite")
    assert json.loads(ok(app, "devices", "show", "pi4-4t", "--json"))["intra_op_threads"] == 2


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
    err = fails(app, ConfigError, "devices", "add", "x", "--precision", "fp16")
    assert "'precision'" in str(err) and "'fp16'" in str(err)
    err = fails(app, ConfigError, "devices", "add", "x", "--threads", "0")
    assert "intra_op_threads" in str(err)
    err = fails(app, ConfigError, "devices", "add", "x", "--provider", "Foo")
    assert "provider" in str(err) and "CPUExecutionProvider" in str(err)
    assert not (tmp_path / "devices" / "x.yaml").exists()


def test_import_export(app: typer.Typer, tmp_path: Path) -> None:
    archs = get_space(SPACE).sample_many(4, seed=5)
    src = tmp_path / "m.jsonl"
    src.write_text(
        "".join(json.dumps({"arch": a.to_dict(), "latency_ms": 2.5}) + "\n" for a in archs)
    )
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    report = json.loads(
        ok(app, "latency", "import", str(src), "--device", "board", "--space", SPACE,
           "--db", url, "--json")
    )  # fmt: skip
    assert report["n_rows"] == 4 and report["device_created"]
    out = tmp_path / "out.csv"
    # --db falls back to NAS_DB_URL.
    text = ok(app, "latency", "export", "--out", str(out), "--device", "board",
              env={"NAS_DB_URL": url})  # fmt: skip
    assert "exported 4" in text and out.read_text().count("\n") == 5
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    assert "imported 4" in ok(
        app, "latency", "import", str(out), "--device", "board", "--space", SPACE, "--db", other
    )
    with LatencyDB(other) as db:
        assert [m.latency_ms for m in db.measurements("board", SPACE)] == [2.5] * 4


def test_import_bad_file_is_one_error(app: typer.Typer, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"arch": {"ks": [3,3,3,3]}, "latency_ms": 1}\n')
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    err = fails(app, DataError, "latency", "import", str(src), "--device", "cpu-1t",
                "--space", SPACE, "--db", url)  # fmt: skip
    assert "line 1" in str(err) and "\n" not in str(err)
    fails(app, ConfigError, "latency", "export", "--out", str(tmp_path / "x.txt"), "--db", url)
