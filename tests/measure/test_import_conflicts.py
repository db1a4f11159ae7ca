"""Plain imports (``nas latency import FILE --device D --space S``): two conflicting latencies of
one subnet in one file are refused naming both lines, repeats within the noise are kept, and a
file (the same measurements) imported twice is refused the second time naming the first; each
refusal is one ``error:`` line, exit status 2, nothing stored changes."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from expect import one_error

from nas.db import LatencyDB
from nas.space import Architecture, get_space

SPACE = "tiny"
Run = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture(autouse=True)
def devices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_DEVICES_DIR", str(tmp_path / "devices"))
    monkeypatch.delenv("NAS_DB_URL", raising=False)
    return tmp_path / "devices"


@pytest.fixture(scope="module")
def archs() -> list[Architecture]:
    return get_space(SPACE).sample_many(3, seed=7)


def _jsonl(path: Path, rows: list[tuple[Architecture, float]]) -> Path:
    path.write_text("".join(json.dumps({"arch": a.to_dict(), "latency_ms": v}) + "\n"
                            for a, v in rows))
    return path


def _import(run_nas: Run, f: Path, db: Path, device: str = "cpu-1t") -> tuple[int, str, str]:
    return run_nas(["latency", "import", str(f), "--device", device, "--space", SPACE,
                    "--db", str(db)])


def _stored(db: Path) -> list[tuple[str, str, float | None]]:
    with LatencyDB(f"sqlite:///{db}") as store:
        return [(r["device"], r["hash"], r["latency_ms"]) for r in store.measurement_rows()]


def test_conflicting_latencies_of_one_subnet_are_refused(run_nas: Run, archs, tmp_path: Path
                                                         ) -> None:
    a, b, _ = archs
    f = _jsonl(tmp_path / "m.jsonl", [(a, 1.0), (b, 2.0), (a, 50.0)])
    db = tmp_path / "lat.sqlite"
    one_error(_import(run_nas, f, db), "line 1 and line 3", f"subnet {a.hash}",
               "latency_ms 1 and 50", "nothing imported")
    assert not db.exists()  # refused while reading, before the database is opened
    # the same in CSV, the conflict after a repeat within the noise
    c = tmp_path / "m.csv"
    with c.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "latency_ms"])
        for v in (10.0, 11.0, 20.0):
            w.writerow([json.dumps(a.to_dict()), v])
    one_error(_import(run_nas, c, db), "line 2 and line 4", "latency_ms 10 and 20")
    assert not db.exists()


def test_repeats_within_the_noise_are_kept(run_nas: Run, archs, tmp_path: Path) -> None:
    a, b, _ = archs
    near = 1.45  # within the documented 1.5x of 1.0
    f = _jsonl(tmp_path / "m.jsonl", [(a, 1.0), (b, 2.0), (a, near), (a, 1.2)])
    db = tmp_path / "lat.sqlite"
    code, _, err = _import(run_nas, f, db)
    assert code == 0, err
    assert sorted(v for _, h, v in _stored(db) if h == a.hash) == [1.0, 1.2, near]


def test_a_file_imported_twice_is_refused(run_nas: Run, archs, tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "phone.jsonl", [(a, 3.0 + i) for i, a in enumerate(archs)])
    db = tmp_path / "lat.sqlite"
    code, _, err = _import(run_nas, f, db)
    assert code == 0, err
    before = _stored(db)
    assert len(before) == 3
    line = one_error(_import(run_nas, f, db), "already imported on", "from phone.jsonl",
                      "3 measurement(s) of tiny on cpu-1t", "nothing imported")
    assert str(f) in line
    # the same measurements under another name, in another order, in CSV: the same import
    c = tmp_path / "copy.csv"
    with c.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "latency_ms"])
        for i, a in reversed(list(enumerate(archs))):
            w.writerow([json.dumps(a.to_dict()), 3.0 + i])
    one_error(_import(run_nas, c, db), "already imported on", "from phone.jsonl")
    # ... and for another device too (one file of timings is one device's)
    one_error(_import(run_nas, f, db, device="cpu-2t"), "already imported on")
    assert _stored(db) == before
    # new measurements of the same subnets are a new import
    g = _jsonl(tmp_path / "later.jsonl", [(a, 3.1 + i) for i, a in enumerate(archs)])
    code, _, err = _import(run_nas, g, db)
    assert code == 0, err
    assert len(_stored(db)) == 6
