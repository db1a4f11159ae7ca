"""Recorded kits and imports in the latency database, on every backend: a kit's record comes
back as it was written, an import is stored once (the same measurements or the same kit twice
are refused, concurrent imports included), and a version-1 database gains the tables.

SQLite always; PostgreSQL when ``NAS_TEST_POSTGRES_URL`` is set (``eval "$(.ci/postgres.sh)"``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, update

from nas.db import (
    SCHEMA_VERSION,
    AlreadyImportedError,
    KitModel,
    KitRecord,
    LatencyDB,
    validate_measurement,
)
from nas.db import _schema as S
from nas.devices import DeviceProfile, get_device
from nas.errors import DatabaseError
from nas.space import get_space

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL", "").strip()
SPACE = "tiny"
NEW_TABLES = (S.kits, S.kit_models, S.imports)


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
    _drop_all(POSTGRES_URL)
    yield POSTGRES_URL
    _drop_all(POSTGRES_URL)


@pytest.fixture
def db(db_url: str):
    store = LatencyDB(db_url)
    store.ensure_device(get_device("cpu-1t"))
    yield store
    store.close()


def _kit(kit_id: str = "0123456789abcdef") -> KitRecord:
    sp = get_space(SPACE)
    ref, *archs = [sp.middle(), *sp.sample_many(2, seed=5)]
    models = (KitModel("reference.onnx", "reference", "a" * 64, ref),
              *(KitModel(f"{i:03d}_{a.hash[:12]}.onnx", "model", f"{i}" * 64, a)
                for i, a in enumerate(archs)))
    return KitRecord(kit_id, SPACE, DeviceProfile("board", external=True, intra_op_threads=2),
                     "f" * 64, models)


def _rows(latency: float) -> list[dict]:
    return [validate_measurement(a, latency + i, source="imported")
            for i, a in enumerate(get_space(SPACE).sample_many(3, seed=9))]


def test_a_kit_record_round_trips(db: LatencyDB) -> None:
    kit = _kit()
    db.record_kit(kit)
    got = db.kit_record(kit.kit_id)
    assert got is not None
    assert got.created_at is not None
    assert (got.kit_id, got.space, got.device, got.runner_sha256) == (
        kit.kit_id, kit.space, kit.device, kit.runner_sha256)
    assert got.models == kit.models
    assert got.model("reference.onnx") == kit.models[0]
    assert got.model("nope.onnx") is None
    assert db.kit_record("fedcba9876543210") is None
    with pytest.raises(DatabaseError, match="already recorded"):
        db.record_kit(kit)


def test_an_import_is_stored_once(db: LatencyDB) -> None:
    rows = _rows(2.0)
    ids = db.add_import("cpu-1t", rows, fingerprint="1" * 64, source_file="a.jsonl")
    assert len(ids) == 3
    with pytest.raises(AlreadyImportedError, match=r"already imported on .* from a\.jsonl "
                       r"\(3 measurement\(s\) of tiny on cpu-1t"):
        db.add_import("cpu-1t", rows, fingerprint="1" * 64, source_file="b.jsonl")
    # a kit's results once, whatever their fingerprint
    db.add_import("cpu-1t", _rows(5.0), fingerprint="2" * 64, source_file="results.jsonl",
                  kit_id="k1")
    with pytest.raises(AlreadyImportedError, match="results of kit k1 were already imported"):
        db.add_import("cpu-1t", _rows(7.0), fingerprint="3" * 64, source_file="results.jsonl",
                      kit_id="k1")
    assert len(db.measurement_rows()) == 6
    assert [(i.fingerprint[0], i.kit_id, i.n_rows) for i in db.imports()] == [
        ("1", None, 3), ("2", "k1", 3)]


def test_concurrent_imports_of_the_same_measurements_store_them_once(db_url: str) -> None:
    """Two writers import the same measurements at once: one stores them, the other is refused
    in one line (on PostgreSQL both may pass the first check; the unique key decides)."""
    stores = [LatencyDB(db_url) for _ in range(2)]
    stores[0].ensure_device(get_device("cpu-1t"))
    start = threading.Barrier(2)
    outcome: list[object] = [None, None]

    def one(i: int) -> None:
        start.wait()
        try:
            outcome[i] = len(stores[i].add_import("cpu-1t", _rows(3.0), fingerprint="9" * 64,
                                                  source_file=f"copy{i}.jsonl"))
        except AlreadyImportedError as exc:
            outcome[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert sorted(type(o).__name__ for o in outcome) == ["AlreadyImportedError", "int"]
        assert len(stores[0].measurement_rows()) == 3
        assert len(stores[0].imports()) == 1
    finally:
        for s in stores:
            s.close()


def test_a_version_1_database_gains_the_tables(db_url: str) -> None:
    with LatencyDB(db_url) as first:
        first.ensure_device(get_device("cpu-1t"))
        first.add_measurements("cpu-1t", [{"arch": get_space(SPACE).middle(),
                                           "latency_ms": 1.5}])
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:  # what a database written by the version before is
            for table in reversed(NEW_TABLES):
                table.drop(conn)
            conn.execute(update(S.schema_version).values(version=1))
    finally:
        engine.dispose()
    with LatencyDB(db_url) as again:
        assert again.schema_version() == SCHEMA_VERSION == 2
        assert [r["latency_ms"] for r in again.measurement_rows()] == [1.5]
        assert again.imports() == []
        engine = create_engine(db_url)
        try:
            assert {t.name for t in NEW_TABLES} <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
