"""The latency database: one shared test class runs against every backend.

SQLite always; PostgreSQL when ``NAS_TEST_POSTGRES_URL`` is set (``eval "$(.ci/postgres.sh)"``),
as optuna/testing/pytest_storages.py does for its storages.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
import pickle
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update

from nas.db import (
    SCHEMA_VERSION,
    LatencyDB,
    MeasurementRecord,
    PredictorRecord,
    validate_measurement,
)
from nas.db import _schema as S
from nas.devices import DeviceProfile, get_device
from nas.errors import DatabaseError, MeasurementError, NASError, UnknownNameError
from nas.space import get_space

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL", "").strip()
SPACE = "tiny"


def _drop_all(url: str) -> None:
    engine = create_engine(url)
    try:
        S.metadata.drop_all(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'latency.sqlite'}"
        return
    if not POSTGRES_URL:
        pytest.skip('NAS_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
    _drop_all(POSTGRES_URL)  # each test starts from an empty database
    yield POSTGRES_URL
    _drop_all(POSTGRES_URL)


@pytest.fixture
def db(db_url: str):
    store = LatencyDB(db_url)
    store.ensure_device(get_device("cpu-1t"))
    yield store
    store.close()


@pytest.fixture(scope="module")
def archs():
    return get_space(SPACE).sample_many(6, seed=0)


def _count(db: LatencyDB) -> int:
    return len(db.measurement_rows())


class TestLatencyDB:
    """The contract of ``LatencyDB``, for every backend."""

    def test_round_trip(self, db: LatencyDB, archs) -> None:
        env = {"cpu": "Test CPU", "onnxruntime": "1.0", "profile": {"threads": 1}}
        mid = db.add_measurement(
            "cpu-1t", archs[0], latency_ms=3.25, p10=3.0, p90=4.5, n_runs=20, env=env
        )
        (rec,) = db.measurements("cpu-1t", SPACE)
        assert isinstance(rec, MeasurementRecord)
        assert rec.id == mid
        assert rec.arch == archs[0]
        assert rec.arch.hash == archs[0].hash
        assert (rec.latency_ms, rec.p10, rec.p90, rec.n_runs) == (3.25, 3.0, 4.5, 20)
        assert (rec.status, rec.error, rec.source) == ("ok", None, "measured")
        assert rec.env == env
        assert rec.created_at.tzinfo is not None

    def test_reopen_sees_the_data(self, db: LatencyDB, db_url: str, archs) -> None:
        db.add_measurement("cpu-1t", archs[0], latency_ms=1.5)
        db.close()
        with LatencyDB(db_url) as again:
            assert [m.latency_ms for m in again.measurements("cpu-1t", SPACE)] == [1.5]
            assert again.devices() == ["cpu-1t"]
            assert again.schema_version() == SCHEMA_VERSION

    def test_batch_ids_in_order_and_shared_architectures(self, db: LatencyDB, archs) -> None:
        rows = [{"arch": a, "latency_ms": 1.0 + i, "n_runs": 3} for i, a in enumerate(archs)]
        rows.append({"arch": archs[0], "latency_ms": 9.0})
        ids = db.add_measurements("cpu-1t", rows)
        assert len(ids) == len(rows)
        assert ids == sorted(ids)
        got = db.measurements("cpu-1t", SPACE)
        assert [m.id for m in got] == ids
        assert [m.latency_ms for m in got] == [r["latency_ms"] for r in rows]
        assert got[0].arch == got[-1].arch

    def test_append_only(self, db: LatencyDB, archs) -> None:
        db.add_measurement("cpu-1t", archs[0], latency_ms=2.0)
        (first,) = db.measurements("cpu-1t", SPACE)
        db.add_measurement("cpu-1t", archs[0], latency_ms=2.5)
        both = db.measurements("cpu-1t", SPACE)
        assert [m.latency_ms for m in both] == [2.0, 2.5]
        assert both[0] == first  # the earlier record is unchanged
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.latency_ms = 1.0  # type: ignore[misc]

    def test_filters_by_status_source_device_and_space(self, db: LatencyDB, archs) -> None:
        db.ensure_device(get_device("cpu-2t"))
        db.add_measurement("cpu-1t", archs[0], latency_ms=1.0)
        db.add_measurement("cpu-1t", archs[1], latency_ms=None, status="failed", error="OOM")
        db.add_measurement("cpu-1t", archs[2], latency_ms=1.2, source="noise")
        db.add_measurement("cpu-2t", archs[3], latency_ms=0.7)
        assert [m.arch for m in db.measurements("cpu-1t", SPACE)] == [archs[0], archs[2]]
        failed = db.measurements("cpu-1t", SPACE, status="failed")
        assert [(m.latency_ms, m.error) for m in failed] == [(None, "OOM")]
        assert len(db.measurements("cpu-1t", SPACE, status=None)) == 3
        assert [m.source for m in db.measurements("cpu-1t", SPACE, source="noise")] == ["noise"]
        assert [m.device for m in db.measurements("cpu-2t", SPACE)] == ["cpu-2t"]
        assert db.measurements("cpu-1t", "ofa_mbv3") == []
        assert db.measurements("never-seen", SPACE) == []

    @pytest.mark.parametrize(
        "latency", [0.0, -1.0, math.nan, math.inf, -math.inf, 1e6, 1e9], ids=repr
    )
    def test_bad_latency_rejected_and_nothing_written(
        self, db: LatencyDB, archs, latency: float
    ) -> None:
        with pytest.raises(MeasurementError, match="latency_ms") as info:
            db.add_measurement("cpu-1t", archs[0], latency_ms=latency)
        assert repr(float(latency)) in str(info.value)
        assert _count(db) == 0

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"latency_ms": None}, "latency_ms is required"),
            ({"latency_ms": "3"}, "got '3'"),
            ({"latency_ms": 2.0, "p10": 3.0}, "p10 must be <= latency_ms"),
            ({"latency_ms": 2.0, "p90": 1.0}, "p90 must be >= latency_ms"),
            ({"latency_ms": 2.0, "n_runs": -1}, "n_runs"),
            ({"latency_ms": 2.0, "status": "done"}, "status must be one of"),
            ({"latency_ms": 2.0, "source": "guess"}, "source must be one of"),
            ({"latency_ms": 2.0, "env": {"x": object()}}, "env must be JSON-serialisable"),
        ],
    )
    def test_bad_values_rejected(self, db: LatencyDB, archs, kwargs, match) -> None:
        with pytest.raises(MeasurementError, match=match):
            db.add_measurement("cpu-1t", archs[0], **kwargs)
        assert _count(db) == 0

    def test_bad_row_in_batch_writes_nothing(self, db: LatencyDB, archs) -> None:
        rows = [{"arch": a, "latency_ms": 1.0} for a in archs]
        rows[3]["latency_ms"] = math.nan
        with pytest.raises(MeasurementError, match=r"row 3: latency_ms .* got nan"):
            db.add_measurements("cpu-1t", rows)
        assert _count(db) == 0

    def test_unknown_device_rejected(self, db: LatencyDB, archs) -> None:
        with pytest.raises(UnknownNameError, match=r"'pi4'.*known devices: cpu-1t"):
            db.add_measurement("pi4", archs[0], latency_ms=1.0)
        with pytest.raises(UnknownNameError):
            db.add_measurements("pi4", [{"arch": archs[0], "latency_ms": 1.0}])
        assert _count(db) == 0
        db.ensure_device(DeviceProfile("pi4", placement="ray", ray_resource="device:pi4"))
        assert db.add_measurement("pi4", archs[0], latency_ms=1.0) > 0

    def test_ensure_device_updates_the_profile(self, db: LatencyDB) -> None:
        base = get_device("cpu-1t")
        db.ensure_device(base.replace(description="changed"))
        assert db.devices() == ["cpu-1t"]
        profile = db.device_profile("cpu-1t")
        assert profile is not None
        assert profile.description == "changed"
        assert db.device_profile("nope") is None

    def test_predictors_newest_wins(self, db: LatencyDB, archs) -> None:
        ids = db.add_measurements("cpu-1t", [{"arch": a, "latency_ms": 1.0} for a in archs])
        big = {"table": {f"k{i}": float(i) for i in range(50_000)}}  # a large lookup table
        p1 = db.save_predictor(
            "cpu-1t", SPACE, "lut", params={"a": 1}, state=big, metrics={}, measurement_ids=ids
        )
        p2 = db.save_predictor(
            "cpu-1t", SPACE, "ridge", params={}, state={"w": [1.0]}, metrics={}, measurement_ids=[]
        )
        p3 = db.save_predictor(
            "cpu-1t",
            SPACE,
            "lut",
            params={"a": 2},
            state={},
            metrics={"mae": 0.1},
            measurement_ids=ids[:2],
        )
        assert p1 < p2 < p3
        newest = db.load_predictor("cpu-1t", SPACE)
        assert isinstance(newest, PredictorRecord)
        assert newest.id == p3
        assert newest.params == {"a": 2}
        assert newest.metrics == {"mae": 0.1}
        assert newest.measurement_ids == ids[:2]
        ridge = db.load_predictor("cpu-1t", SPACE, "ridge")
        assert ridge is not None
        assert ridge.id == p2
        assert ridge.state == {"w": [1.0]}
        assert db.load_predictor("cpu-1t", "ofa_mbv3") is None
        assert db.load_predictor("cpu-1t", SPACE, "mlp") is None
        listed = db.list_predictors("cpu-1t")
        assert [p.id for p in listed] == [p1, p2, p3]
        assert listed[0].state == big
        assert listed[0].measurement_ids == ids
        assert db.list_predictors(space="ofa_mbv3") == []

    def test_predictor_needs_known_device_and_json(self, db: LatencyDB) -> None:
        with pytest.raises(UnknownNameError):
            db.save_predictor(
                "pi4", SPACE, "lut", params={}, state={}, metrics={}, measurement_ids=[]
            )
        with pytest.raises(MeasurementError, match="state"):
            db.save_predictor(
                "cpu-1t",
                SPACE,
                "lut",
                params={},
                state={"f": print},
                metrics={},
                measurement_ids=[],
            )
        assert db.list_predictors() == []

    def test_newer_schema_version_refused(self, db: LatencyDB, db_url: str) -> None:
        db.close()
        engine = create_engine(db_url)
        with engine.begin() as conn:
            conn.execute(update(S.schema_version).values(version=SCHEMA_VERSION + 1))
        engine.dispose()
        with pytest.raises(DatabaseError, match=r"schema version \d+, newer") as info:
            LatencyDB(db_url)
        assert "\n" not in str(info.value)

    def test_picklable_by_url(self, db: LatencyDB, archs) -> None:
        db.add_measurement("cpu-1t", archs[0], latency_ms=1.0)
        clone = pickle.loads(pickle.dumps(db))
        assert clone.url == db.url
        assert len(clone.measurements("cpu-1t", SPACE)) == 1
        clone.close()


# ------------------------------------------------------------------------- SQLite specifics
def _writer(url: str, seed: int, n: int, barrier) -> None:
    db = LatencyDB(url)
    archs = get_space(SPACE).sample_many(n, seed=seed)
    barrier.wait()
    for i, a in enumerate(archs):  # many small transactions, to interleave with the other
        db.add_measurement("cpu-1t", a, latency_ms=1.0 + i, env={"writer": seed})
    db.add_measurements("cpu-1t", [{"arch": a, "latency_ms": 2.0} for a in archs])
    db.close()


class TestSQLite:
    def test_wal_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "w.sqlite"
        LatencyDB(f"sqlite:///{path}").close()
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_two_processes_write_at_once(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
        with LatencyDB(url) as db:
            db.ensure_device(get_device("cpu-1t"))
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(2)
        n = 30
        procs = [ctx.Process(target=_writer, args=(url, s, n, barrier)) for s in (1, 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0]
        with LatencyDB(url) as db:
            rows = db.measurements("cpu-1t", SPACE)
        assert len(rows) == 2 * 2 * n
        assert len({r.id for r in rows}) == len(rows)
        assert sorted(r.env["writer"] for r in rows if r.env) == [1] * n + [2] * n

    def test_corrupt_file_is_one_clear_error(self, tmp_path: Path) -> None:
        path = tmp_path / "latency.sqlite"
        path.write_bytes(os.urandom(8192))
        with pytest.raises(DatabaseError, match="corrupt or not a SQLite database") as info:
            LatencyDB(str(path))
        assert "\n" not in str(info.value)
        assert str(path) in str(info.value)

    def test_locked_database_is_one_clear_error(self, tmp_path: Path) -> None:
        path = tmp_path / "latency.sqlite"
        db = LatencyDB(str(path), busy_timeout_s=0.2)
        db.ensure_device(get_device("cpu-1t"))
        arch = get_space(SPACE).largest()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(DatabaseError, match="locked by another process") as info:
                db.add_measurement("cpu-1t", arch, latency_ms=1.0)
            assert "\n" not in str(info.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert db.add_measurement("cpu-1t", arch, latency_ms=1.0) > 0
        db.close()

    def test_url_from_env_and_plain_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        url = f"sqlite:///{tmp_path / 'env.sqlite'}"
        monkeypatch.setenv("NAS_DB_URL", url)
        with LatencyDB() as db:
            assert db.url == url
        with LatencyDB(str(tmp_path / "plain.sqlite")) as db:
            assert db.url == f"sqlite:///{tmp_path / 'plain.sqlite'}"
        assert (tmp_path / "env.sqlite").exists()
        assert (tmp_path / "plain.sqlite").exists()

    def test_missing_folder_is_one_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(DatabaseError, match="cannot open latency database"):
            LatencyDB(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite'}")


def test_unreachable_server_is_a_database_error() -> None:
    with pytest.raises(DatabaseError) as info:
        LatencyDB("postgresql+psycopg2://nas:secret@127.0.0.1:1/nas")
    msg = str(info.value)
    assert "\n" not in msg
    assert "secret" not in msg
    assert isinstance(info.value, NASError)


def test_validate_measurement_is_the_check_before_any_write() -> None:
    arch = get_space(SPACE).largest()
    row = validate_measurement(arch, 2, p10=1.5, n_runs=3, env={"cpu": "x"})
    assert row["arch"] == arch
    assert row["latency_ms"] == 2.0
    assert row["env"] == '{"cpu":"x"}'
    assert (row["status"], row["source"], row["p90"]) == ("ok", "measured", None)
    with pytest.raises(MeasurementError, match="p10 must be <= latency_ms"):
        validate_measurement(arch, 2.0, p10=3.0)


def test_display_url_masks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LatencyDB, "_make_engine", lambda self: create_engine("sqlite://"))
    db = LatencyDB("postgresql+psycopg2://nas:secret@db.example/nas")
    try:
        assert db.display_url == "postgresql+psycopg2://nas:***@db.example/nas"
        assert "secret" not in repr(db)
    finally:
        db.close()
