"""Commands that start fast (issue 27): the quick commands import only what they use.

Each command runs in a fresh interpreter, as from the shell; what it printed, its exit code
and which heavy packages it imported are checked. Not a timing: a command that imports torch
or scikit-learn again fails here whatever the machine (their timings are
``experiments/benchmarks/startup.py``'s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.db import LatencyDB

#: what none of these commands needs: torch (the OFA accuracy predictor runs in numpy),
#: scikit-learn and what it pulls in (the predictors follow its protocol without inheriting
#: from it), Ray (the predictor engine scores in-process), ONNX and ONNX Runtime
NEVER = ("torch", "sklearn", "scipy", "pandas", "ray", "onnx", "onnxruntime")

_PROBE = r"""
import contextlib, io, json, sys
from nas.cli import main

out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(json.loads(sys.argv[1]))
        code = 0
    except SystemExit as exc:
        code = exc.code
heavy = json.loads(sys.argv[2])
print(json.dumps({"code": code, "out": out.getvalue(),
                  "imported": [m for m in heavy if m in sys.modules]}))
"""

ARCH = json.dumps({"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224})


def _run(argv: list[str], heavy: tuple[str, ...], cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(heavy)],
                          capture_output=True, text=True, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["code"] == 0, (argv, got, done.stderr[-3000:])
    return got


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    """A latency database with nothing stored: ``note10`` is priced by its shipped table."""
    path = tmp_path / "latency.sqlite"
    LatencyDB(path).close()
    return path


def test_arch_info_imports_no_heavy_package(tmp_path: Path) -> None:
    got = _run(["arch", "info", "-s", "ofa_mbv3", "-a", ARCH],
               (*NEVER, "optuna", "sqlalchemy"), tmp_path)
    assert "566.17M MACs" in got["out"]
    assert got["imported"] == [], f"`nas arch info` imported {got['imported']}"


def test_latency_predict_on_a_shipped_table_imports_no_heavy_package(
        tmp_path: Path, empty_db: Path) -> None:
    got = _run(["latency", "predict", "-d", "note10", "-s", "ofa_mbv3", "-a", ARCH,
                "--db", str(empty_db)], (*NEVER, "optuna"), tmp_path)
    assert "ms (table predictor, note10)" in got["out"]
    assert got["imported"] == [], f"`nas latency predict` imported {got['imported']}"


def test_search_on_the_predictor_engine_imports_no_heavy_package(
        tmp_path: Path, empty_db: Path) -> None:
    """OFA's accuracy predictor and a latency budget on note10: the engine is chosen by the
    search (no engine setting given), which asks whether the proxy needs a network."""
    got = _run(["search", "--space", "ofa_mbv3", "--proxy", "ofa-imagenet", "-O", "accuracy",
                "-C", "latency:note10=25", "--db", str(empty_db), "--storage",
                str(tmp_path / "study.journal"), "--no-progress"], NEVER, tmp_path)
    assert "best feasible subnet" in got["out"]
    assert got["imported"] == [], f"`nas search` (predictor engine) imported {got['imported']}"
