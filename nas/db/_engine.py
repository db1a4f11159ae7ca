"""The connection side of the latency database: engine, transactions, errors and schema.

:class:`Database` is the base the table classes build on: it opens the engine for a URL
(SQLite in WAL mode with writers taking the lock up front, or a pooled server connection),
runs each call in one transaction, turns driver failures into one-line
:class:`~nas.errors.DatabaseError` messages, and creates or checks the schema at open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from sqlalchemy import create_engine, event, insert, inspect, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from nas.db import _schema as S
from nas.db._url import default_db_url, resolve_db_url, url_for_display
from nas.errors import DatabaseError, NASError

__all__ = ["Database", "dialect_insert", "inserted_id", "now", "utc"]

_DRIVER_MODULES = {"psycopg2", "psycopg", "pg8000"}
#: PostgreSQL's deadlock_detected and serialization_failure: the server aborted one of two
#: transactions that crossed; running it again is the documented remedy.
_RETRYABLE_SQLSTATES = {"40P01", "40001"}


class RetryableError(DatabaseError):
    """A transaction the server aborted to break a deadlock; it may simply be run again."""


def _retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code in _RETRYABLE_SQLSTATES
_PG_LOCK_KEY = 736201945  # serialises first opens of one PostgreSQL database
#: tables of an Optuna study storage (`nas search --storage`): a database that has them is
#: not a latency database, and gets none of our tables
_OPTUNA_TABLES = frozenset({"alembic_version", "studies", "trials", "version_info"})


def now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite keeps no time zone; we always write UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def inserted_id(result: Any) -> int:
    """The primary key of the row an ``INSERT`` added."""
    key = result.inserted_primary_key
    if key is None:  # cannot happen with an integer primary key; keeps mypy honest
        raise DatabaseError("the database returned no id for the new row")
    return int(key[0])


def dialect_insert(dialect: str) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support, for the two dialects that have one here."""
    return pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert


def _sqlite_events(engine: Engine, busy_timeout_s: float) -> None:
    timeout_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Transactions are begun explicitly below, not by pysqlite's implicit BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")  # safe in WAL mode, much faster
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer takes the lock at BEGIN: upgrading a read lock later can fail at once
        # with "database is locked", whatever the busy timeout.
        write = conn.get_execution_options().get("nas_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _reopen(cls: type[Database], url: str, busy_timeout_s: float) -> Database:
    return cls(url, busy_timeout_s=busy_timeout_s)


class Database:
    """An open latency database: the engine, transactions and the schema check.

    Args:
        url: SQLAlchemy URL or path of a SQLite file; ``None`` means ``$NAS_DB_URL`` or the
            default file (see :func:`~nas.db.resolve_db_url`).
        busy_timeout_s: how long a SQLite writer waits for another's lock before giving up.
        create: create a missing SQLite file (the default); with ``False`` (commands that
            only read) a missing file other than the default one is an error, so that a
            mistyped path is not answered from a new empty database, left behind.
    """

    url: str

    def __init__(self, url: str | None = None, *, busy_timeout_s: float = 30.0,
                 create: bool = True) -> None:
        if not (isinstance(busy_timeout_s, int | float) and busy_timeout_s >= 0):
            raise DatabaseError(f"busy_timeout_s must be a number >= 0, got {busy_timeout_s!r}")
        self.url = resolve_db_url(url)
        self.busy_timeout_s = float(busy_timeout_s)
        self._shown = url_for_display(self.url)
        if not create:
            self._check_exists()
        self._peek_sqlite_file()
        self._engine = self._make_engine()
        try:
            self._init_schema()
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._shown!r})"

    @property
    def display_url(self) -> str:
        """The database as messages name it: a SQLite file by its path, any other URL with
        its password masked."""
        return self._shown

    def __reduce__(self) -> tuple[Any, ...]:
        # Engines do not pickle; the URL is enough to open the same database elsewhere.
        return (_reopen, (type(self), self.url, self.busy_timeout_s))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool; the instance must not be used afterwards."""
        self._engine.dispose()

    # ------------------------------------------------------------------ engine
    def _check_exists(self) -> None:
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            return  # _make_engine says what is wrong with it
        if (parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
                and self.url != default_db_url() and not Path(parsed.database).is_file()):
            raise DatabaseError(
                f"no latency database at {self._shown}: check --db (or $NAS_DB_URL); "
                f"`nas latency measure` or `nas latency import` creates one")

    def _peek_sqlite_file(self) -> None:
        """Refuse an existing SQLite file that is another kind of store, read only, before
        the engine's first connection sets its pragmas (WAL) on it."""
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            return
        database = parsed.database
        if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
            return
        path = Path(str(database))
        if not path.is_file():
            return  # missing: the open says so
        # Read through SQLite, never a plain open(): closing any other descriptor of a
        # database file drops every POSIX lock this process holds on it, its SQLite
        # connections' included, and another process closing its connection then takes
        # itself for the last one and deletes the WAL from under them ("disk I/O error" at
        # the next open). SQLite's own descriptors are shared per file and closed safely.
        # immutable: no lock taken, no -wal/-shm file created; tables only in the WAL are
        # still caught by the check at open (_schema_state).
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
            try:
                rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                names = {str(r[0]) for r in rows}
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            # not SQLite (so no SQLite lock of ours to lose): a study journal is named as such
            try:
                with open(path, "rb") as f:
                    head = f.read(16)
            except OSError:
                return  # unreadable: the open says so
            if head.startswith(b'{"op_code"'):
                raise DatabaseError(
                    f"{self._shown} is an Optuna study journal (`nas search --storage`), not a "
                    "latency database: name another file for --db (or $NAS_DB_URL)") from None
            return  # corrupt or another kind of file: the open says which
        except sqlite3.Error:
            return  # unreadable: the open says so
        self._refuse_study_storage(names)

    def _make_engine(self) -> Engine:
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise DatabaseError(
                f"not a database URL: {self._shown!r}; expected e.g. sqlite:///path/latency.sqlite"
                f" or postgresql+psycopg2://user:password@host/dbname"
            ) from None
        kwargs: dict[str, Any] = {}
        is_sqlite = parsed.get_backend_name() == "sqlite"
        if is_sqlite:
            kwargs["connect_args"] = {"timeout": self.busy_timeout_s, "check_same_thread": False}
            if parsed.database in (None, "", ":memory:"):
                kwargs["poolclass"] = StaticPool  # one shared in-memory database
            elif parsed.database and self.url == default_db_url():
                # The default file's folder is ours to create; a user's missing folder is not.
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        try:
            engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            hint = " (pip install psycopg2-binary)" if "postgres" in self.url else ""
            raise DatabaseError(
                f"cannot use latency database {self._shown}: {exc}{hint}"
            ) from None
        if is_sqlite:
            _sqlite_events(engine, self.busy_timeout_s)
        return engine

    def _translate(self, exc: BaseException, what: str) -> DatabaseError:
        orig = getattr(exc, "orig", None) or exc
        lines = [ln for ln in str(orig).strip().splitlines() if ln.strip()]
        text = lines[0].strip() if lines else type(orig).__name__
        low = text.lower()
        if "database is locked" in low or "database is busy" in low:
            msg = (
                f"latency database {self._shown} is locked by another process (waited "
                f"{self.busy_timeout_s:g} s) while {what}; try again later"
            )
        elif "not a database" in low or "malformed" in low or "corrupt" in low:
            msg = (
                f"latency database {self._shown} is corrupt or not a SQLite database "
                f"({text}); move the file away or point NAS_DB_URL elsewhere"
            )
        elif "unable to open database file" in low:
            msg = (
                f"cannot open latency database {self._shown} ({text}); does its folder exist "
                f"and is it writable?"
            )
        else:
            msg = f"latency database {self._shown}: {what} failed: {text}"
        return RetryableError(msg) if _retryable(exc) else DatabaseError(msg)

    @contextmanager
    def _tx(self, what: str, *, write: bool) -> Iterator[Connection]:
        """One transaction on a pooled connection; database failures become DatabaseError."""
        try:
            with self._engine.connect() as conn:
                if write:
                    conn = conn.execution_options(nas_write=True)
                with conn.begin():
                    yield conn
        except NASError:
            raise
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise self._translate(exc, what) from None
        except Exception as exc:
            # Other DB-API drivers' errors (psycopg2's OperationalError on connect, ...).
            if type(exc).__module__.split(".")[0] in _DRIVER_MODULES:
                raise self._translate(exc, what) from None
            raise

    # ------------------------------------------------------------------ schema
    def _schema_state(self, conn: Connection) -> tuple[int | None, bool]:
        """(stored schema version or None, whether all our tables exist).

        Raises:
            DatabaseError: the database is an Optuna study storage (nothing is created in it).
        """
        names = set(inspect(conn).get_table_names())
        self._refuse_study_storage(names)
        version = None
        if S.schema_version.name in names:
            row = conn.execute(
                select(S.schema_version.c.version).where(S.schema_version.c.id == 1)
            ).first()
            version = None if row is None else int(row[0])
        return version, set(S.metadata.tables) <= names

    def _refuse_study_storage(self, names: set[str]) -> None:
        found = sorted(_OPTUNA_TABLES & names)
        if "alembic_version" in found and len(found) > 1:
            raise DatabaseError(
                f"{self._shown} is an Optuna study storage (it has the tables "
                f"{', '.join(found)}), not a latency database: give it as --storage, and "
                "name another file for --db (or $NAS_DB_URL)")

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > S.SCHEMA_VERSION:
            raise DatabaseError(
                f"latency database {self._shown} has schema version {version}, newer than this "
                f"version of nas knows (up to {S.SCHEMA_VERSION}); upgrade nas to use it"
            )

    def _init_schema(self) -> None:
        with self._tx("opening", write=False) as conn:
            version, complete = self._schema_state(conn)
        self._check_version(version)
        if complete and version == S.SCHEMA_VERSION:
            return  # the common case takes no write lock
        with self._tx("creating tables", write=True) as conn:
            if conn.dialect.name == "postgresql":
                # Serialise concurrent first opens; DDL is transactional on PostgreSQL.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            version, _ = self._schema_state(conn)
            self._check_version(version)
            if version is not None and version < S.SCHEMA_VERSION:
                S.migrate(conn, version)
            S.metadata.create_all(conn)
            if version is None:
                conn.execute(insert(S.schema_version).values(id=1, version=S.SCHEMA_VERSION))
            elif version < S.SCHEMA_VERSION:
                conn.execute(update(S.schema_version).values(version=S.SCHEMA_VERSION))

    def schema_version(self) -> int:
        """The schema version stored in the database."""
        with self._tx("reading the schema version", write=False) as conn:
            version, _ = self._schema_state(conn)
        return S.SCHEMA_VERSION if version is None else version
