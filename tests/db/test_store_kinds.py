"""A latency database and an Optuna study storage know each other: each refuses the other in
one line naming what it is, before creating anything in it.

``--db`` given a study storage (an Optuna SQLite file such as the service's, a journal) must
not add latency tables to it; ``--storage`` given a latency database must not add Optuna's.
Both are recognised by the tables present (or a journal by its first record), on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from nas.db import LatencyDB
from nas.errors import ConfigError, DatabaseError
from nas.search import SearchConfig, open_storage, run_search

POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES_URL", "").strip()
LATENCY_TABLES = {"schema_version", "devices", "architectures", "measurements", "predictors"}
OPTUNA_TABLES = {"studies", "trials", "alembic_version"}


def _tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _study_storage(url: str) -> None:
    """A finished tiny search stored at ``url`` (as ``nas search`` or the service write)."""
    run_search(SearchConfig.model_validate({
        "space": "tiny", "objectives": ["macs", "params"], "engine": "predictor",
        "generations": 5, "n_trials": 5, "study": "s", "storage": url}), progress=False)


def test_db_refuses_an_optuna_sqlite_storage(tmp_path: Path, run_nas) -> None:
    studies = tmp_path / "studies.sqlite"
    _study_storage(f"sqlite:///{studies}")
    before, files = _digest(studies), sorted(tmp_path.iterdir())
    code, _, err = run_nas(["latency", "export", "--db", str(studies),
                            "--out", str(tmp_path / "x.csv")])
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "is an Optuna study storage" in lines[0]
    assert str(studies) in lines[0]
    assert _digest(studies) == before  # nothing added, not even the WAL switch
    assert not LATENCY_TABLES & _tables(studies)
    assert not (tmp_path / "x.csv").exists()
    assert sorted(tmp_path.iterdir()) == files


def test_db_refuses_a_study_journal(tmp_path: Path) -> None:
    journal = tmp_path / "s.journal"
    _study_storage(str(journal))
    before = _digest(journal)
    with pytest.raises(DatabaseError, match="is an Optuna study journal"):
        LatencyDB(str(journal))
    assert _digest(journal) == before


def test_storage_refuses_a_latency_database(tmp_path: Path, run_nas) -> None:
    lat = tmp_path / "latency.sqlite"
    LatencyDB(str(lat)).close()
    before = _digest(lat)
    for storage in (f"sqlite:///{lat}", str(lat)):  # as a database URL, and as a journal path
        code, _, err = run_nas(["search", "--space", "tiny", "-O", "macs", "-O", "params",
                                "--engine", "predictor", "--generations", "5", "--study", "s",
                                "--storage", storage, "--no-progress"])
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ")
        assert "latency database" in lines[0] or "is a SQLite database, not a journal" in lines[0]
    code, _, err = run_nas(["results", "--study", "s", "--storage", f"sqlite:///{lat}"])
    assert code == 2
    assert "is a latency database" in err
    assert _digest(lat) == before
    assert not OPTUNA_TABLES & _tables(lat)


@contextlib.contextmanager
def _pg_schema() -> Iterator[str]:
    """The test server's URL, in a new empty schema (dropped after)."""
    if not POSTGRES_URL:
        pytest.skip('NAS_TEST_POSTGRES_URL is not set (eval "$(.ci/postgres.sh)")')
    schema = f"t_{secrets.token_hex(4)}"
    engine = sqlalchemy.create_engine(POSTGRES_URL, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sqlalchemy.make_url(POSTGRES_URL).update_query_dict(
        {"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError), engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def _pg_tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return set(sqlalchemy.inspect(conn).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_stores_refuse_each_other() -> None:
    with _pg_schema() as studies:
        _study_storage(studies)
        before = _pg_tables(studies)
        with pytest.raises(DatabaseError, match="is an Optuna study storage"):
            LatencyDB(studies)
        assert _pg_tables(studies) == before
    with _pg_schema() as lat:
        LatencyDB(lat).close()
        before = _pg_tables(lat)
        with pytest.raises(ConfigError, match="is a latency database"):
            open_storage(lat)
        assert _pg_tables(lat) == before


def test_the_kind_check_keeps_the_locks_of_the_connections_already_open(tmp_path: Path) -> None:
    """Opening a database this process already has open (a resumed search does) must not drop
    its connections' locks: with them gone, another process closing its connection takes
    itself for the last one and deletes the WAL from under them, and the next open in this
    process fails with "disk I/O error" (seen in CI after a killed search was resumed)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'lat.sqlite'}"
    held = LatencyDB(url)
    held.devices()
    LatencyDB(url).devices()  # the second open checks what kind of store the file is
    child = ("import sys; from nas.db import LatencyDB; "
             "d = LatencyDB(sys.argv[1]); d.devices(); d.close()")
    subprocess.run([sys.executable, "-c", child, url], check=True, timeout=120)
    assert (tmp_path / "lat.sqlite-wal").exists(), "another process deleted the WAL in use here"
    LatencyDB(url).devices()
    held.devices()
