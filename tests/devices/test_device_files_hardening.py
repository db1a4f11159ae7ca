"""Device profile files under concurrent writers and careless folders: concurrent imports for a
new external device all store their rows, user profiles never land in the shipped data, and
one broken file hides no other device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas._data import data_dir
from nas.db import LatencyDB
from nas.space import get_space

pytestmark = pytest.mark.slow

SHIPPED = Path(str(data_dir("devices")))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NAS_DEVICES_DIR", "NAS_DB_URL")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), PYTHONUNBUFFERED="1", **extra)
    return env


def _nas(*args: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli", *args]


def _measurements(path: Path, n: int, seed: int) -> Path:
    archs = get_space("tiny").sample_many(n, seed=seed)
    path.write_text("".join(json.dumps({"arch": a.to_dict(), "latency_ms": 1.0 + i / 10})
                            + "\n" for i, a in enumerate(archs)))
    return path


def test_concurrent_imports_for_a_new_device_all_store_their_rows(tmp_path: Path) -> None:
    """Three `nas latency import --device NEW` at once: each exits 0, every row is stored,
    one profile is written, to the user folder and not to the shipped one."""
    db = tmp_path / "lat.sqlite"
    files = [_measurements(tmp_path / f"part{i}.jsonl", 40, seed=i) for i in range(3)]
    shipped_before = sorted(p.name for p in SHIPPED.iterdir())
    env = _env(tmp_path)
    procs = [subprocess.Popen(
        _nas("latency", "import", str(f), "--device", "ext-board", "--space", "tiny",
             "--db", str(db)),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for f in files]
    results = [(p.wait(120), p.stderr.read().decode() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0], [err[-500:] for _, err in results]
    store = LatencyDB(f"sqlite:///{db}")
    try:
        assert len(store.measurements("ext-board", "tiny")) == 120
    finally:
        store.close()
    user = tmp_path / "xdg" / "nas" / "devices"
    assert sorted(p.name for p in user.iterdir()) == ["ext-board.yaml"]  # no temp files left
    assert sorted(p.name for p in SHIPPED.iterdir()) == shipped_before


def test_concurrent_adds_of_one_profile(tmp_path: Path) -> None:
    """`nas devices add` of the same settings at once all succeed; other settings conflict."""
    env = _env(tmp_path, NAS_DEVICES_DIR=str(tmp_path / "devices"))
    same = [subprocess.Popen(_nas("devices", "add", "board", "--threads", "2"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    codes = [p.wait(60) for p in same]
    # (a CI run saw one of four refused: the plug-in check read the folder again after another
    # process had created the file)
    assert codes == [0, 0, 0, 0], [p.stderr.read().decode() for p in same if p.returncode]
    other = subprocess.run(_nas("devices", "add", "board", "--threads", "3"), env=env,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 2
    assert "'board' already exists" in other.stderr
    assert "Traceback" not in other.stderr
    assert sorted(p.name for p in (tmp_path / "devices").iterdir()) == ["board.yaml"]


def test_a_broken_profile_hides_no_other_device(tmp_path: Path) -> None:
    folder = tmp_path / "devices"
    folder.mkdir()
    (folder / "broken.yaml").write_text("intra_op_threads: [1\n")
    (folder / "fine.yaml").write_text("intra_op_threads: 2\n")
    env = _env(tmp_path, NAS_DEVICES_DIR=str(folder))
    res = subprocess.run(_nas("devices", "list", "--json"), env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    names = {d["name"] for d in json.loads(res.stdout)}
    assert {"fine", "cpu-1t"} <= names
    assert "broken" not in names
    (warning,) = res.stderr.strip().splitlines()
    assert str(folder / "broken.yaml") in warning
    res = subprocess.run(_nas("devices", "show", "broken"), env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert str(folder / "broken.yaml") in res.stderr
