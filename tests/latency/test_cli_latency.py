"""``nas latency measure | fit | predict`` through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nas.errors import ArchitectureError, ConfigError, NASError, UnknownNameError
from nas.latency import _cli
from nas.space import get_space

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The ``latency`` group as ``register`` adds it to a root app."""
    root = typer.Typer(no_args_is_help=True)
    _cli.register(root)
    return next(g.typer_instance for g in root.registered_groups if g.name == "latency")


@pytest.fixture(scope="module")
def measured_db(app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database with 10 quick measurements of tiny on cpu-1t, plus 2 noise repeats."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'latency.sqlite'}"
    res = runner.invoke(app, ["measure", "--device", "cpu-1t", "--space", "tiny", "--n", "10",
                              "--noise", "2", "--quick", "--no-progress", "--db", url,
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["measured"] == 10
    assert out["failed"] == 0
    assert out["noise"]["n"] == 2
    return url


@pytest.mark.parametrize("command", ["measure", "fit", "predict"])
def test_help(app: typer.Typer, command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0
    assert "--device" in res.stdout
    assert "--space" in res.stdout
    assert "--db" in res.stdout


def test_measure_skips_what_is_measured(app: typer.Typer, measured_db: str) -> None:
    res = runner.invoke(app, ["measure", "-d", "cpu-1t", "-s", "tiny", "--n", "2", "--quick",
                              "--no-progress", "--db", measured_db, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["measured"] == 2
    assert out["skipped_already_measured"] == 10


def test_fit_prints_metrics_next_to_baseline_and_noise(app: typer.Typer,
                                                        measured_db: str) -> None:
    res = runner.invoke(app, ["fit", "-d", "cpu-1t", "-s", "tiny", "--kind", "additive",
                              "--holdout", "0.3", "--db", measured_db])
    assert res.exit_code == 0, res.output
    for text in ("MAPE", "within ±5%", "Kendall tau", "additive", "flops (baseline)",
                 "noise floor"):
        assert text in res.stdout
    res = runner.invoke(app, ["fit", "-d", "cpu-1t", "-s", "tiny", "--kind", "flops",
                              "--holdout", "0", "--db", measured_db, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["predictors"]["flops"]
    assert out["n_test"] == 0
    assert out["n_train"] >= 10
    assert "train" in out
    assert out["noise"]["n"] == 2


def test_predict_one_and_a_file(app: typer.Typer, measured_db: str, tmp_path: Path) -> None:
    runner.invoke(app, ["fit", "-d", "cpu-1t", "-s", "tiny", "--kind", "additive",
                        "--holdout", "0", "--db", measured_db, "--json"])
    sp = get_space("tiny")
    res = runner.invoke(app, ["predict", "-d", "cpu-1t", "-s", "tiny", "--kind", "additive",
                              "--arch", sp.largest().to_json(), "--db", measured_db, "--json"])
    assert res.exit_code == 0, res.output
    one = json.loads(res.stdout)
    assert one["kind"] == "additive"
    assert one["latency_ms"] > 0
    archs = sp.sample_many(5, seed=1)
    f = tmp_path / "archs.jsonl"
    f.write_text("\n".join(a.to_json() for a in archs) + "\n")
    res = runner.invoke(app, ["predict", "-d", "cpu-1t", "-s", "tiny", "--kind", "additive",
                              "--arch-file", str(f), "--db", measured_db])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 5
    assert all(float(v) > 0 for v in lines)
    single = tmp_path / "one.json"
    single.write_text(archs[0].to_json())
    res = runner.invoke(app, ["predict", "-d", "cpu-1t", "-s", "tiny", "--kind", "additive",
                              "--arch", f"@{single}", "--db", measured_db])
    assert res.exit_code == 0
    assert "ms" in res.stdout
    assert float(res.stdout.split()[0]) == pytest.approx(float(lines[0]), rel=1e-3)


def test_errors_are_one_clear_line(app: typer.Typer, measured_db: str, tmp_path: Path) -> None:
    from nas.db import LatencyDB
    from nas.errors import DatabaseError

    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    LatencyDB(empty).close()  # exists, holds nothing
    typo = tmp_path / "tpyo.sqlite"
    cases = [
        (["fit", "-d", "nope", "-s", "tiny", "--db", empty], UnknownNameError, "known devices"),
        (["fit", "-d", "cpu-1t", "-s", "tiny", "--kind", "magic", "--db", empty],
         UnknownNameError, "known kinds"),
        (["fit", "-d", "cpu-1t", "-s", "tiny", "--db", empty], NASError,
         "nas latency measure --device cpu-1t --space tiny"),
        (["predict", "-d", "cpu-1t", "-s", "tiny", "--arch",
          get_space("cifar_mbv3").smallest().to_json(), "--db", measured_db],
         ArchitectureError, "it is an architecture of space cifar_mbv3"),
        (["predict", "-d", "cpu-1t", "-s", "tiny", "--kind", "gbdt", "--arch",
          get_space("tiny").smallest().to_json(), "--db", empty], NASError, "nas latency fit"),
        # commands that only read do not answer from a new empty file at a mistyped path
        (["predict", "-d", "cpu-1t", "-s", "tiny", "--arch",
          get_space("tiny").smallest().to_json(), "--db", str(typo)], DatabaseError,
         f"no latency database at {typo}"),
        (["fit", "-d", "cpu-1t", "-s", "tiny", "--db", str(typo)], DatabaseError,
         "`nas latency measure` or `nas latency import` creates one"),
        (["predict", "-d", "cpu-1t", "-s", "tiny", "--db", measured_db], ConfigError,
         "--arch and --arch-file: give exactly one of them"),
    ]
    for args, exc_type, text in cases:
        res = runner.invoke(app, args)
        assert res.exit_code != 0
        assert isinstance(res.exception, exc_type), (args, res.exception)
        message = str(res.exception)
        assert text in message
        assert "\n" not in message
    assert not typo.exists()


def test_kinds_lists_the_registry_and_marks_the_default(app: typer.Typer) -> None:
    from nas.latency import PREDICTORS

    res = runner.invoke(app, ["kinds", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == [r["kind"] for r in rows] == PREDICTORS.names()
    assert sum(r["default"] for r in rows) == 1
    assert all(r["description"] for r in rows)
    # the table kinds price the ofa family; those on features alone the gpt family too
    tags = {r["name"]: r["tags"] for r in rows}
    assert tags["lut"] == tags["hybrid"] == ["ofa"]
    assert tags["flops"] == tags["additive"] == tags["gbdt"] == ["gpt", "ofa"]
    table = runner.invoke(app, ["kinds"])
    assert table.exit_code == 0
    assert all(k in table.stdout for k in PREDICTORS.names())
