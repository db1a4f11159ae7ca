"""Kits authenticated at home: a kit is recorded in the latency database when it is made, and
its results are imported only into that database, only when they match the record (not the
manifest that came back with them), and only once.

The reproductions of issue 24, as a user runs them (``nas latency import``): each gets one
``error:`` line, exit status 2, and nothing stored changes."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from expect import one_error

from nas.db import LatencyDB
from nas.errors import DataError
from nas.measure import write_kit
from nas.space import get_space

SPACE = "tiny"
DEVICE = "auth-board"
# run.py in a fresh interpreter from the kit folder, with `nas` unimportable (as on a device)
_NO_NAS = ("import runpy, sys; sys.modules['nas'] = None; sys.argv = ['run.py', *sys.argv[1:]];"
           " runpy.run_path('run.py', run_name='__main__')")

Run = Callable[[list[str]], tuple[int, str, str]]


def _run_kit(folder: Path) -> None:
    proc = subprocess.run([sys.executable, "-I", "-c", _NO_NAS, "--repeats", "1", "--quiet"],
                          cwd=folder, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A kit of two subnets made with (and recorded in) a home database, and its results."""
    root = tmp_path_factory.mktemp("auth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAS_DEVICES_DIR", str(root / "devices"))
        with LatencyDB(f"sqlite:///{root / 'home.sqlite'}") as home:
            write_kit(SPACE, DEVICE, 2, root / "kit", db=home)
        _run_kit(root / "kit")
        yield {"kit": root / "kit", "db": root / "home.sqlite"}


@pytest.fixture(autouse=True)
def devices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    monkeypatch.delenv("NAS_DB_URL", raising=False)
    return tmp_path / "devices"


@pytest.fixture
def kit(made: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the kit folder, to tamper with."""
    return Path(shutil.copytree(made["kit"], tmp_path / "kit"))


@pytest.fixture
def home(made: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the database the kit was made with."""
    return Path(shutil.copyfile(made["db"], tmp_path / "home.sqlite"))


def _stored(db: Path) -> tuple[list[tuple[str, float | None]], int]:
    with LatencyDB(f"sqlite:///{db}") as store:
        rows = [(r["hash"], r["latency_ms"]) for r in store.measurement_rows()]
        return rows, len(store.imports())


def _import(run_nas: Run, kit: Path, db: Path, *more: str) -> tuple[int, str, str]:
    return run_nas(["latency", "import", str(kit), "--db", str(db), *more])


def _edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _edit_lines(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    lines = [json.loads(t) for t in path.read_text().splitlines()]
    for x in lines:
        edit(x)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_a_kit_is_recorded_when_made(made: dict[str, Path]) -> None:
    m = json.loads((made["kit"] / "manifest.json").read_text())
    with LatencyDB(f"sqlite:///{made['db']}") as store:
        rec = store.kit_record(m["kit_id"])
        assert store.kit_record("0" * 16) is None
    assert rec is not None
    assert (rec.space, rec.device.name, rec.runner_sha256) == (
        SPACE, DEVICE, m["runner"]["sha256"])
    entries = [m["reference"], *m["models"]]
    assert [(k.file, k.sha256, k.arch.hash) for k in rec.models] == [
        (e["file"], e["sha256"], e["hash"]) for e in entries]
    assert [k.role for k in rec.models] == ["reference", "model", "model"]
    sp = get_space(SPACE)
    assert all(k.arch == sp.parse(e["arch"]) for k, e in zip(rec.models, entries, strict=True))


def test_edited_kit_id_does_not_import_the_results_again(run_nas: Run, kit: Path,
                                                         home: Path) -> None:
    code, _, err = _import(run_nas, kit, home)
    assert code == 0, err
    before = _stored(home)
    assert len(before[0]) == 3
    again = one_error(_import(run_nas, kit, home), "already imported on", "nothing imported")
    assert "results.jsonl" in again
    # the reproduction: a new kit_id in manifest.json and results.jsonl
    new_id = "feedfacefeedface"
    _edit_json(kit / "manifest.json", lambda m: m.update(kit_id=new_id))
    _edit_lines(kit / "results.jsonl", lambda x: x.update(kit=new_id))
    one_error(_import(run_nas, kit, home), f"kit {new_id} is not recorded", "--trust-manifest")
    # trusting the manifest does not help: the same measurements are recognised
    one_error(_import(run_nas, kit, home, "--trust-manifest"), "already imported on")
    assert _stored(home) == before


def test_a_swapped_model_and_hash_is_refused(run_nas: Run, kit: Path, home: Path) -> None:
    """The second model's file and sha256 put in the first's place in the manifest, then timed
    by the kit's own run.py: on the manifest alone, the second model's latency would be stored
    under the first one's architecture."""
    m = json.loads((kit / "manifest.json").read_text())
    first, second = m["models"]
    shutil.copyfile(kit / second["file"], kit / first["file"])
    _edit_json(kit / "manifest.json",
               lambda x: x["models"][0].update(sha256=second["sha256"]))
    _run_kit(kit)
    line = one_error(_import(run_nas, kit, home), f"model {first['file']}: sha256",
                      "recorded when kit", "nothing imported")
    assert second["sha256"][:12] in line
    assert _stored(home) == ([], 0)


def test_an_edited_architecture_is_refused(run_nas: Run, kit: Path, home: Path) -> None:
    """The manifest's architecture of the first model replaced by the second's."""
    def swap(x: dict[str, Any]) -> None:
        first, second = x["models"]
        first.update(arch=second["arch"], hash=second["hash"])

    _edit_json(kit / "manifest.json", swap)
    one_error(_import(run_nas, kit, home), "the manifest gives architecture",
               "recorded", "nothing imported")
    assert _stored(home) == ([], 0)


def test_an_edited_device_is_refused(run_nas: Run, kit: Path, home: Path) -> None:
    _edit_json(kit / "manifest.json", lambda x: x["device"].update(name="other-board"))
    one_error(_import(run_nas, kit, home), "made for device 'auth-board'")
    assert _stored(home) == ([], 0)


def test_a_kit_without_a_record_needs_trust_manifest(run_nas: Run, kit: Path,
                                                    tmp_path: Path) -> None:
    """A kit made before kits were recorded (or with another database): refused in one line
    that says what to do; --trust-manifest imports it once, checked against its manifest."""
    fresh = tmp_path / "fresh.sqlite"
    line = one_error(_import(run_nas, kit, fresh), "is not recorded in the latency database",
                      "--db", "--trust-manifest")
    assert str(fresh) in line
    assert _stored(fresh) == ([], 0)
    code, out, err = _import(run_nas, kit, fresh, "--trust-manifest", "--json")
    assert code == 0, err
    assert json.loads(out)["n_rows"] == 3
    one_error(_import(run_nas, kit, fresh, "--trust-manifest"), "already imported on")
    assert len(_stored(fresh)[0]) == 3


def test_the_record_is_checked_not_only_the_manifest(kit: Path, home: Path) -> None:
    """A model's bytes changed with the manifest's sha256 to match: the manifest check passes
    (the runner timed what the manifest says), the record does not."""
    from nas.measure import import_results

    m = json.loads((kit / "manifest.json").read_text())
    ref = m["reference"]
    data = (kit / ref["file"]).read_bytes() + b"\0"
    (kit / ref["file"]).write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    _edit_json(kit / "manifest.json", lambda x: x["reference"].update(sha256=digest))
    _edit_lines(kit / "results.jsonl",
                lambda x: x.update(sha256=digest) if x.get("file") == ref["file"] else None)
    with LatencyDB(f"sqlite:///{home}") as store:
        with pytest.raises(DataError, match=f"model {ref['file']}: sha256 {digest[:12]}"):
            import_results(store, kit)
        assert store.measurement_rows() == []
