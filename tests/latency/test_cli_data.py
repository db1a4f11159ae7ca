"""``nas latency import|export``, through typer's test runner (the ``nas devices`` commands
are tested in tests/devices)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nas.db import LatencyDB
from nas.errors import ConfigError, DataError, NASError
from nas.latency import _cli
from nas.space import get_space

SPACE = "tiny"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    monkeypatch.delenv("NAS_DB_URL", raising=False)
    root = typer.Typer(no_args_is_help=True)
    _cli.register(root)
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
        (["latency", "import", "--help"], ["--device", "--space", "--db", ".jsonl"]),
        (["latency", "export", "--help"], ["--out", "parquet", "--db"]),
    ],
)
def test_help(app: typer.Typer, args: list[str], words: list[str]) -> None:
    out = ok(app, *args)
    for w in words:
        assert w in out


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
    assert report["n_rows"] == 4
    assert report["device_created"]
    out = tmp_path / "out.csv"
    # --db falls back to NAS_DB_URL.
    text = ok(app, "latency", "export", "--out", str(out), "--device", "board",
              env={"NAS_DB_URL": url})  # fmt: skip
    assert "exported 4" in text
    assert out.read_text().count("\n") == 5
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
    assert "line 1" in str(err)
    assert "\n" not in str(err)
    fails(app, ConfigError, "latency", "export", "--out", str(tmp_path / "x.txt"), "--db", url)
