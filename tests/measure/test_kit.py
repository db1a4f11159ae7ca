"""Measurement kits: ``nas latency kit`` writes one, its run.py runs in a fresh process where
``nas`` cannot be imported (as on a device), ``nas latency import`` takes the results back and
refuses results that are not the kit's; and the choice of subnets to measure."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from nas.db import LatencyDB
from nas.devices import DeviceProfile, add_device, get_device
from nas.errors import ConfigError, DataError
from nas.latency import _cli, fit_predictor, prior_predictions
from nas.measure import _campaign, import_results, select_for_measurement
from nas.measure._sampling import rank_disagreement
from nas.space import get_space

SPACE = "tiny"
DEVICE = "kit-phone"
N = 4
# run.py as a user runs it, in a fresh interpreter from the kit folder, except that `nas` is
# made unimportable first (the test's venv has it installed): a stray import fails the run.
_NO_NAS = ("import runpy, sys; sys.modules['nas'] = None; sys.argv = ['run.py', *sys.argv[1:]];"
           " runpy.run_path('run.py', run_name='__main__')")


def _app() -> typer.Typer:
    root = typer.Typer(no_args_is_help=True)
    _cli.register(root)
    return root


def _cli_ok(*args: str) -> str:
    res = CliRunner().invoke(_app(), ["latency", *args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A kit of the tiny space written through the CLI, and its runner's results."""
    root = tmp_path_factory.mktemp("kit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAS_DEVICES_DIR", str(root / "devices"))
        out = json.loads(_cli_ok("kit", "--space", SPACE, "--device", DEVICE, "--n", str(N),
                                 "--out", str(root / "kit"), "--db", str(root / "db.sqlite"),
                                 "--json"))
        folder = root / "kit"
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _NO_NAS, "--repeats", "3", "--quiet"],
            cwd=folder, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        yield {"folder": folder, "report": out, "stdout": proc.stdout,
               "db": root / "db.sqlite"}


@pytest.fixture(autouse=True)
def devices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "devices"
    monkeypatch.setenv("NAS_DEVICES_DIR", str(folder))
    monkeypatch.delenv("NAS_DB_URL", raising=False)
    return folder


def _home(kit: dict[str, Any], path: Path) -> Path:
    """A copy of the database the kit was made with (and recorded in)."""
    return Path(shutil.copyfile(kit["db"], path))


@pytest.fixture
def db(kit: dict[str, Any], tmp_path: Path) -> Iterator[LatencyDB]:
    store = LatencyDB(f"sqlite:///{_home(kit, tmp_path / 'latency.sqlite')}")
    yield store
    store.close()


def _copy(kit: dict[str, Any], tmp_path: Path) -> Path:
    return Path(shutil.copytree(kit["folder"], tmp_path / "copy"))


def _lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(t) for t in (folder / "results.jsonl").read_text().splitlines()]


def _write(folder: Path, lines: list[dict[str, Any]]) -> None:
    (folder / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_kit_folder_manifest_and_runner(kit: dict[str, Any]) -> None:
    folder = kit["folder"]
    m = json.loads((folder / "manifest.json").read_text())
    report = kit["report"]
    assert (report["kit_id"], report["n_models"], report["device"]) == (m["kit_id"], N, DEVICE)
    assert m["space"] == SPACE
    assert m["device"]["name"] == DEVICE
    assert m["device"]["external"]
    assert "random" in m["weights"]
    assert "not on the weights" in m["weights"]
    sp = get_space(SPACE)
    entries = [m["reference"], *m["models"]]
    assert len(m["models"]) == N
    assert m["reference"]["hash"] == sp.middle().hash
    for e in entries:  # every file, its checksum, its architecture
        assert hashlib.sha256((folder / e["file"]).read_bytes()).hexdigest() == e["sha256"]
        assert sp.parse(e["arch"]).hash == e["hash"]
    assert len({e["hash"] for e in entries}) == N + 1
    assert m["selection"]["method"] == "spread"
    assert m["selection"]["requested"] == "auto"
    run_py = (folder / "run.py").read_bytes()
    assert hashlib.sha256(run_py).hexdigest() == m["runner"]["sha256"]
    # standalone: the standard library, numpy and onnxruntime only
    tops = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
            for n in ast.walk(ast.parse(run_py)) if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])}  # type: ignore[union-attr]
    assert "nas" not in tops
    assert tops <= set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}
    readme = (folder / "README.txt").read_text()
    for word in ("python run.py", "--threads", "--repeats", "--out", "results.jsonl",
                 "nas latency import"):
        assert word in readme
    # the results: one environment line, then the reference and every model, each with
    # its block medians (3 repeats: 3 blocks; the reference before each model: 3 * N)
    env, ref, *models = _lines(folder)
    assert env["type"] == "environment"
    assert env["kit"] == m["kit_id"]
    for key in ("onnxruntime", "numpy", "platform", "cpu", "python", "threads", "time"):
        assert env[key], key
    assert env["threads"]["intra_op"] == 1
    assert env["timing"]["repeats"] == 3
    assert ref["role"] == "reference"
    assert len(ref["block_medians_ms"]) == 3 * N
    assert ref["latency_ms"] == pytest.approx(np.median(ref["block_medians_ms"]), rel=1e-4)
    assert [x["file"] for x in models] == [e["file"] for e in m["models"]]
    for x in models:
        assert x["status"] == "ok"
        assert len(x["block_medians_ms"]) == 3
        assert x["latency_ms"] == pytest.approx(x["ratio"] * ref["latency_ms"], rel=1e-4)
        assert x["p10_ms"] <= x["latency_ms"] <= x["p90_ms"]
    assert "results.jsonl" in kit["stdout"]


def test_import_kit_results(kit: dict[str, Any], db: LatencyDB, tmp_path: Path) -> None:
    folder = _copy(kit, tmp_path)
    lines = _lines(folder)
    m = json.loads((folder / "manifest.json").read_text())
    url = f"sqlite:///{tmp_path / 'latency.sqlite'}"
    out = json.loads(_cli_ok("import", str(folder / "results.jsonl"), "--db", url, "--json"))
    assert (out["n_rows"], out["n_failed"], out["kit_id"], out["missing"]) == (
        N + 1, 0, m["kit_id"], [])
    assert out["device_created"]
    assert out["device"] == DEVICE
    assert get_device(DEVICE).external  # created from the kit's profile
    got = db.measurements(DEVICE, SPACE)
    by_file = {r.env["kit"]["file"]: r for r in got}
    assert set(by_file) == {x["file"] for x in lines[1:]}
    for x in lines[1:]:
        r = by_file[x["file"]]
        assert r.latency_ms == pytest.approx(x["latency_ms"])
        assert r.source == "kit"
        assert r.env["kit"]["id"] == m["kit_id"]
        assert r.env["kit"]["sha256"] == x["sha256"]
        assert r.env["kit"]["block_medians_ms"] == x["block_medians_ms"]
        assert r.env["fingerprint"]["onnxruntime"] == lines[0]["onnxruntime"]
        assert r.arch.hash == next(e["hash"] for e in [m["reference"], *m["models"]]
                                   if e["file"] == x["file"])
    # once only, by folder too; --device must be the kit's
    with pytest.raises(DataError, match="already imported"):
        import_results(db, folder)
    with pytest.raises(DataError, match=r"--device other: the kit .* is for device"):
        import_results(db, folder, device="other")
    assert len(db.measurements(DEVICE, SPACE)) == N + 1


def _set(i: int, **kv: Any) -> Callable[[list[dict[str, Any]]], None]:
    def edit(lines: list[dict[str, Any]]) -> None:
        lines[i].update(kv)
    return edit


def _all_kits(lines: list[dict[str, Any]]) -> None:
    for x in lines:
        x["kit"] = "0123456789abcdef"


def _dup(lines: list[dict[str, Any]]) -> None:
    lines.append(dict(lines[3]))


TAMPER: dict[str, tuple[Callable[[list[dict[str, Any]]], None], str]] = {
    "sha256": (_set(2, sha256="0" * 64), r"line 3: model 000_\w+\.onnx: sha256 000000000000"
               r"\.\.\. is not the kit's"),
    "another kit": (_all_kits, r"line 1: results of kit '0123456789abcdef', but the manifest "
                    r"is kit '\w+' \(results from another kit\)"),
    "model of another kit": (_set(3, kit="0123456789abcdef"), r"line 4: .* a result of kit "
                             "'0123456789abcdef'"),
    "file": (_set(3, file="900_foreign.onnx"), r"line 4: model '900_foreign\.onnx' is not one "
             "of the kit's 5 models"),
    "nan": (_set(4, latency_ms=math.nan), r"line 5: model 002_\w+\.onnx: latency_ms must be "
            r"a finite number > 0, got nan"),
    "negative": (_set(2, latency_ms=-1.0), "latency_ms must be a finite number > 0, got -1.0"),
    "blocks": (_set(2, block_medians_ms=[0.1, math.inf]), "block_medians_ms must be"),
    "duplicate": (_dup, r"line 7: model 001_\w+\.onnx: a second result"),
    "runner": (_set(0, runner_sha256="f" * 64), "written by a run.py that is not the kit's"),
    "threads": (_set(0, threads={"intra_op": 4, "inter_op": 1}),
                "timed with 4 intra-op thread"),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_tampered_results_refused(case: str, kit: dict[str, Any], db: LatencyDB,
                                  tmp_path: Path) -> None:
    folder = _copy(kit, tmp_path)
    lines = _lines(folder)
    edit, message = TAMPER[case]
    edit(lines)
    _write(folder, lines)
    with pytest.raises(DataError, match=message) as err:
        import_results(db, folder)
    assert "\n" not in str(err.value)
    assert db.devices() == []
    assert db.measurement_rows() == []


def test_missing_results_and_results_elsewhere(kit: dict[str, Any], db: LatencyDB,
                                               tmp_path: Path) -> None:
    folder = _copy(kit, tmp_path)
    lines = _lines(folder)
    dropped = lines.pop(3)["file"]
    _write(folder, lines)
    report = import_results(db, folder)
    assert (report.n_rows, report.missing) == (N, (dropped,))
    # a results file away from its kit: named as such, then imported with --kit
    away = tmp_path / "mail" / "results.jsonl"
    away.parent.mkdir()
    shutil.copy(kit["folder"] / "results.jsonl", away)
    with pytest.raises(DataError, match=r"no kit manifest is beside it; .* --kit DIR"):
        import_results(db, away)
    other = LatencyDB(f"sqlite:///{_home(kit, tmp_path / 'other.sqlite')}")
    try:
        assert import_results(other, away, kit=folder).n_rows == N + 1
    finally:
        other.close()
    with pytest.raises(ConfigError, match="--device and --space needed"):
        import_results(db, tmp_path / "plain.jsonl")


def test_kit_refusals_and_help(kit: dict[str, Any], db: LatencyDB, tmp_path: Path) -> None:
    from nas.measure import kit_profile, write_kit

    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        write_kit(SPACE, DEVICE, 2, kit["folder"], db=db)
    with pytest.raises(ConfigError, match="--threads 4: device cpu-1t's profile has "
                       "intra_op_threads 1"):
        write_kit(SPACE, kit_profile("cpu-1t", 4), 2, tmp_path / "k", db=db)
    with pytest.raises(ConfigError, match=r"--n must be in 1\.\.2000"):
        write_kit(SPACE, DEVICE, 0, tmp_path / "k", db=db)
    with pytest.raises(ConfigError, match="select method must be one of"):
        write_kit(SPACE, DEVICE, 2, tmp_path / "k", select="best", db=db)
    assert not (tmp_path / "k").exists()
    def flat(text: str) -> str:  # rich wraps help in boxes
        return " ".join(text.replace("│", " ").split())

    kit_help = flat(_cli_ok("kit", "--help"))
    for word in ("run.py", "manifest.json", "--select", "informative", "--threads",
                 "randomly initialised"):
        assert word in kit_help, word
    import_help = flat(_cli_ok("import", "--help"))
    for word in ("kit", "sha256", "--kit", "refused"):
        assert word in import_help, word


def test_rank_disagreement() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert np.allclose(rank_disagreement({"a": y, "b": 10 * y}), 0)  # speed is not rank
    d = rank_disagreement({"a": y, "b": y[::-1]})
    assert d[0] == d[3] > d[1] == d[2] > 0


def test_informative_selection(db: LatencyDB) -> None:
    sp = get_space(SPACE)
    archs = sp.sample_many(40, seed=1)
    costs = sp.costs(archs)
    depth = np.array([sum(a.d) for a in archs], dtype=float)
    res = np.array([a.r for a in archs], dtype=float)
    # two prior devices that order subnets differently: one by work, one by depth (per-layer
    # overhead) and hardly by resolution
    for name, y in (("prior-work", 0.01 + costs["macs"] / 1e7),
                    ("prior-depth", 0.05 * depth + res / 1000)):
        profile = DeviceProfile(name, external=True)
        add_device(profile)
        db.ensure_device(profile)
        db.add_measurements(name, [{"arch": a, "latency_ms": float(v), "source": "imported"}
                                   for a, v in zip(archs, y, strict=True)])
        fit_predictor(name, SPACE, "additive", db=db, holdout=0)
    skip = sp.middle()
    sel = select_for_measurement(SPACE, 8, 0, db=db, device="new-device", exclude=[skip],
                                 priors=prior_predictions)
    assert (sel.method, sel.requested) == ("informative", "auto")
    assert sel.priors == {"prior-work": "additive", "prior-depth": "additive"}
    assert len(set(sel.archs)) == 8
    assert skip not in sel.archs
    macs = sp.costs(sel.archs)["macs"]
    lo, hi = sp.costs([sp.smallest(), sp.largest()])["macs"]
    assert np.log(macs.max() / macs.min()) >= 0.6 * np.log(hi / lo)  # spread over the MACs
    # many measurements already: the general-purpose sample; one prior: spread
    assert select_for_measurement(SPACE, 4, 0, db=db, device="x", n_measured=60).method == (
        "mixed")
    one = select_for_measurement(SPACE, 4, 0, db=db, device="prior-work",
                                 priors=prior_predictions)
    assert one.method == "spread"
    assert "fell back to spread" in one.rule
    # measurement alone knows no predictor: without priors, informative is spread
    alone = select_for_measurement(SPACE, 4, 0, method="informative", db=db,
                                   device="new-device")
    assert (alone.method, alone.priors) == ("spread", {})
    assert "0 prior" in alone.rule
    # a campaign's `auto` (`nas latency measure --select auto`): informative for a new device
    # with priors, and the mixed sample it always used when there are none
    _, info = _campaign._selection(sp, db, "new-device", 4, 0, "auto", set(), prior_predictions)
    assert info["method"] == "informative"
    _, info = _campaign._selection(sp, db, "prior-work", 4, 0, "auto", set(), prior_predictions)
    assert info["method"] == "mixed"
