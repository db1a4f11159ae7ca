"""Importing latencies measured elsewhere, and exporting them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nas.db import LatencyDB
from nas.devices import get_device, list_devices
from nas.errors import DataError
from nas.measure import EXPORT_COLUMNS, export_measurements, import_measurements
from nas.space import get_space

SPACE = "tiny"


@pytest.fixture(autouse=True)
def devices_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "devices"
    monkeypatch.setenv("NAS_DEVICES_DIR", str(folder))
    return folder


@pytest.fixture
def db(tmp_path: Path):
    store = LatencyDB(f"sqlite:///{tmp_path / 'latency.sqlite'}")
    yield store
    store.close()


@pytest.fixture(scope="module")
def archs():
    return get_space(SPACE).sample_many(5, seed=3)


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _snapshot(db: LatencyDB) -> tuple:
    return tuple(db.devices()), len(db.measurement_rows())


def test_import_jsonl(db: LatencyDB, archs, tmp_path: Path) -> None:
    db.ensure_device(get_device("cpu-1t"))
    recs = [
        {"arch": a.to_dict(), "latency_ms": 1.0 + i, "p10": 0.9 + i, "p90": 1.2 + i, "n_runs": 7}
        for i, a in enumerate(archs)
    ]
    recs.append({**archs[0].to_dict(), "latency_ms": None, "status": "failed", "error": "OOM"})
    path = _jsonl(tmp_path / "m.jsonl", recs)
    report = import_measurements(db, "cpu-1t", SPACE, path)
    assert (report.n_rows, report.n_failed, report.device_created) == (6, 1, False)
    got = db.measurements("cpu-1t", SPACE)
    assert [m.arch for m in got] == archs
    assert [(m.latency_ms, m.p10, m.p90, m.n_runs) for m in got] == [
        (r["latency_ms"], r["p10"], r["p90"], 7) for r in recs[:-1]
    ]
    assert {m.source for m in got} == {"imported"}
    assert got[0].env == {"imported_from": "m.jsonl"}
    assert [m.error for m in db.measurements("cpu-1t", SPACE, status="failed")] == ["OOM"]


def test_import_csv_arch_column_and_ofa_columns(db: LatencyDB, archs, tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    with a.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "latency_ms", "n_runs"])
        for i, arch in enumerate(archs):
            w.writerow([arch.to_json(), 2.0 + i, ""])
    b = tmp_path / "b.csv"
    with b.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ks", "e", "d", "r", "latency_ms", "p10", "p90"])
        for arch in archs:
            w.writerow(
                [
                    json.dumps(list(arch.ks)),
                    json.dumps(list(arch.e)),
                    json.dumps(list(arch.d)),
                    arch.r,
                    "3.5",
                    "3",
                    "4",
                ]
            )
    assert import_measurements(db, "cpu-2t", SPACE, a).n_rows == len(archs)
    assert import_measurements(db, "cpu-2t", SPACE, b).n_rows == len(archs)
    got = db.measurements("cpu-2t", SPACE)
    assert [m.arch for m in got] == archs + archs
    assert [m.latency_ms for m in got[len(archs) :]] == [3.5] * len(archs)
    assert got[-1].p10 == 3.0
    assert got[0].n_runs == 0


def test_known_yaml_device_is_stored_without_a_new_profile(
    db: LatencyDB, archs, tmp_path: Path, devices_dir: Path
) -> None:
    path = _jsonl(tmp_path / "m.jsonl", [{"arch": archs[0].to_dict(), "latency_ms": 1.0}])
    report = import_measurements(db, "cpu-1t-int8", SPACE, path)
    assert not report.device_created
    assert report.profile_path is None
    assert db.device_profile("cpu-1t-int8") == get_device("cpu-1t-int8")
    assert not devices_dir.exists()


def test_unknown_device_created_as_external(
    db: LatencyDB, archs, tmp_path: Path, devices_dir: Path
) -> None:
    path = _jsonl(
        tmp_path / "pi.jsonl", [{"arch": a.to_dict(), "latency_ms": 40.0} for a in archs]
    )
    report = import_measurements(db, "rpi4", SPACE, path)
    assert report.device_created
    assert report.profile_path == devices_dir / "rpi4.yaml"
    assert "rpi4" in list_devices()
    assert get_device("rpi4").external
    stored = db.device_profile("rpi4")
    assert stored is not None
    assert stored.external
    assert len(db.measurements("rpi4", SPACE)) == len(archs)
    # A second import (of new measurements: the same ones are refused) reuses the device.
    again = _jsonl(tmp_path / "pi2.jsonl",
                   [{"arch": a.to_dict(), "latency_ms": 41.0} for a in archs])
    assert not import_measurements(db, "rpi4", SPACE, again).device_created


BAD_JSONL = [
    ({"latency_ms": -2.0}, r"line 3: latency_ms .*got -2\.0"),
    ({"latency_ms": 0}, r"line 3: latency_ms .*got 0\.0"),
    ({"latency_ms": 1e7}, r"line 3: latency_ms .*got 10000000\.0"),
    ({"latency_ms": "fast"}, r"line 3: field 'latency_ms' must be a number, got 'fast'"),
    ({"latency_ms": None}, r"line 3: latency_ms is required"),
    ({"latency_ms": 1.0, "n_runs": 2.5}, r"line 3: field 'n_runs' .*2\.5"),
    ({"latency_ms": 1.0, "status": "maybe"}, r"line 3: status must be one of .*'maybe'"),
    ({"latency_ms": 1.0, "arch": {"ks": [9, 3, 3, 3]}}, r"line 3: arch is missing field 'e'"),
    ({"latency_ms": 1.0, "space": "ofa_mbv3"}, r"line 3: field 'space' is 'ofa_mbv3'"),
]


@pytest.mark.parametrize("override, match", BAD_JSONL)
def test_bad_jsonl_line_fails_whole_import(
    db: LatencyDB, archs, tmp_path: Path, devices_dir: Path, override: dict, match: str
) -> None:
    recs = [{"arch": a.to_dict(), "latency_ms": 1.0} for a in archs]
    recs[2] = {**recs[2], **override}
    path = _jsonl(tmp_path / "bad.jsonl", recs)
    before = _snapshot(db)
    with pytest.raises(DataError, match=match) as info:
        import_measurements(db, "newdev", SPACE, path)
    assert "\n" not in str(info.value)
    assert "bad.jsonl" in str(info.value)
    assert _snapshot(db) == before  # nothing written, not even the device
    assert not devices_dir.exists()


def test_bad_csv_line_fails_whole_import(db: LatencyDB, archs, tmp_path: Path) -> None:
    db.ensure_device(get_device("cpu-1t"))
    db.add_measurement("cpu-1t", archs[0], latency_ms=5.0)
    path = tmp_path / "bad.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "latency_ms"])
        for i, a in enumerate(archs):
            w.writerow([a.to_json(), "nan" if i == 3 else "1.5"])  # file line 5
    before = _snapshot(db)
    with pytest.raises(DataError, match=r"bad.csv: line 5: latency_ms .*got nan"):
        import_measurements(db, "cpu-1t", SPACE, path)
    assert _snapshot(db) == before
    path.write_text("arch,latency_ms\nnot json,1.0\n")
    with pytest.raises(DataError, match=r"line 2: field 'arch' must be JSON, got 'not json'"):
        import_measurements(db, "cpu-1t", SPACE, path)
    path.write_text("latency_ms\n1.0\n")
    with pytest.raises(DataError, match=r"line 2: missing field 'arch'"):
        import_measurements(db, "cpu-1t", SPACE, path)
    assert _snapshot(db) == before


def test_unreadable_inputs(db: LatencyDB, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown format '\.txt'"):
        import_measurements(db, "cpu-1t", SPACE, tmp_path / "m.txt")
    with pytest.raises(DataError, match="no such file"):
        import_measurements(db, "cpu-1t", SPACE, tmp_path / "m.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no measurements found"):
        import_measurements(db, "cpu-1t", SPACE, tmp_path / "e.jsonl")
    (tmp_path / "j.jsonl").write_text("{not json}\n")
    with pytest.raises(DataError, match="line 1: not valid JSON"):
        import_measurements(db, "cpu-1t", SPACE, tmp_path / "j.jsonl")


def _fill(db: LatencyDB, archs) -> None:
    db.ensure_device(get_device("cpu-1t"))
    db.ensure_device(get_device("cpu-2t"))
    for i, a in enumerate(archs):
        db.add_measurement(
            "cpu-1t",
            a,
            latency_ms=1.0 / 3 + i,
            p10=0.25 + i,
            p90=0.5 + i,
            n_runs=11,
            env={"cpu": "x"},
        )
    db.add_measurement("cpu-1t", archs[0], latency_ms=None, status="failed", error="boom")
    db.add_measurement("cpu-2t", archs[1], latency_ms=9.0)


def _key(db: LatencyDB, device: str) -> list[tuple]:
    return [
        (m.arch.hash, m.latency_ms, m.p10, m.p90, m.n_runs, m.status, m.error)
        for m in db.measurements(device, SPACE, status=None)
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trip(db: LatencyDB, archs, tmp_path: Path, suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    _fill(db, archs)
    out = tmp_path / f"cpu1{suffix}"
    assert export_measurements(db, out, device="cpu-1t", space=SPACE) == len(archs) + 1
    with LatencyDB(f"sqlite:///{tmp_path / 'other.sqlite'}") as other:
        report = import_measurements(other, "cpu-1t", SPACE, out)
        assert (report.n_rows, report.n_failed) == (len(archs) + 1, 1)
        assert _key(other, "cpu-1t") == _key(db, "cpu-1t")
        assert other.measurements("cpu-1t", SPACE)[0].env["cpu"] == "x"


def test_export_csv_columns_and_filters(db: LatencyDB, archs, tmp_path: Path) -> None:
    _fill(db, archs)
    out = tmp_path / "all.csv"
    assert export_measurements(db, out) == len(archs) + 2
    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
    assert {r["device"] for r in rows} == {"cpu-1t", "cpu-2t"}
    assert json.loads(rows[0]["arch"]) == archs[0].to_dict()
    assert export_measurements(db, out, device="cpu-2t") == 1
    assert export_measurements(db, out, space="ofa_mbv3") == 0
    # A file with several devices cannot be filed under one.
    export_measurements(db, out)
    with LatencyDB(f"sqlite:///{tmp_path / 'other.sqlite'}") as other:
        with pytest.raises(DataError, match=r"field 'device' is 'cpu-2t'"):
            import_measurements(other, "cpu-1t", SPACE, out)
        assert other.measurement_rows() == []


def test_export_bad_suffix(db: LatencyDB, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected \.csv or \.parquet"):
        export_measurements(db, tmp_path / "x.xlsx")
