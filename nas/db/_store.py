"""``LatencyDB``: the store of devices, measured latencies and fitted latency predictors."""

from __future__ import annotations

import json
import math
import numbers
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, insert, inspect, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

import nas
from nas.db import _schema as S
from nas.errors import DatabaseError, MeasurementError, NASError, UnknownNameError
from nas.space import Architecture, get_space

if TYPE_CHECKING:
    # Imported where used: nas.latency's package imports its predictors, which use this module.
    from nas.devices import DeviceProfile

__all__ = [
    "MAX_LATENCY_MS",
    "SOURCES",
    "STATUSES",
    "LatencyDB",
    "MeasurementRecord",
    "PredictorRecord",
    "default_db_url",
    "resolve_db_url",
]

#: Allowed values of a measurement's ``status`` and ``source``.
STATUSES = ("ok", "failed")
SOURCES = ("measured", "imported", "noise", "reference")
#: A latency at or above this (about 17 minutes per image) is a unit or timing bug.
MAX_LATENCY_MS = 1e6

_ID_CHUNK = 500  # bound on the IN (...) list sizes; SQLite allows a few thousand parameters


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class MeasurementRecord:
    """One stored measurement (or import) of an architecture's latency on a device.

    Attributes:
        id: unique, increasing with insertion order.
        device: the device profile's name.
        space: the architecture's search space.
        arch: the architecture, re-parsed (and so validated) through its space.
        latency_ms: median latency; ``None`` when the measurement failed.
        p10: 10th percentile of the runs, if known.
        p90: 90th percentile of the runs, if known.
        n_runs: timed runs behind the statistics (0 when unknown, e.g. imported).
        status: ``"ok"`` or ``"failed"``.
        error: why it failed, or ``None``.
        source: ``"measured"``, ``"imported"`` or ``"noise"`` (synthetic).
        env: fingerprint of where it was measured (CPU model, onnxruntime version, profile...).
        created_at: when it was stored (UTC).
    """

    id: int
    device: str
    space: str
    arch: Architecture
    latency_ms: float | None
    p10: float | None
    p90: float | None
    n_runs: int
    status: str
    error: str | None
    source: str
    env: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class PredictorRecord:
    """A fitted latency predictor as stored: enough to rebuild it without refitting.

    Attributes:
        id: unique, increasing with insertion order (the newest has the largest).
        device: the device profile's name.
        space: the search space it predicts for.
        kind: the predictor's registered kind (e.g. ``"lut"``, ``"ridge"``).
        params: its hyper-parameters (``get_params()``).
        state: its learned state (e.g. a lookup table, coefficients).
        metrics: its validation metrics.
        measurement_ids: the measurements it was fitted on.
        created_at: when it was stored (UTC).
    """

    id: int
    device: str
    space: str
    kind: str
    params: dict[str, Any]
    state: dict[str, Any]
    metrics: dict[str, Any]
    measurement_ids: list[int]
    created_at: datetime


# ---------------------------------------------------------------------------- URLs
def default_db_url() -> str:
    """``latency_db/latency.sqlite`` of the repository when that folder is writable, else
    ``$XDG_DATA_HOME/nas/latency.sqlite`` (``~/.local/share/nas/latency.sqlite``)."""
    repo_dir = Path(nas.__file__).resolve().parent.parent / "latency_db"
    if repo_dir.is_dir() and os.access(repo_dir, os.W_OK):
        return f"sqlite:///{repo_dir / 'latency.sqlite'}"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'nas' / 'latency.sqlite'}"


def resolve_db_url(url: str | os.PathLike[str] | None = None) -> str:
    """The database URL to use: ``url``, else ``$NAS_DB_URL``, else :func:`default_db_url`.

    A value without ``://`` is taken as the path of a SQLite file.
    """
    if url is None or (isinstance(url, str) and not url.strip()):
        url = os.environ.get("NAS_DB_URL", "").strip() or default_db_url()
    url = str(url).strip()
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def _display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# ---------------------------------------------------------------------------- helpers
def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    # SQLite keeps no time zone; we always write UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any, field: str) -> str:
    try:
        return json.dumps(obj, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MeasurementError(f"{field} must be JSON-serialisable: {exc}") from None


def _check_dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise MeasurementError(f"{field} must be a dict, got {type(value).__name__}")
    return dict(value)


def _check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MeasurementError(f"{field} must be a non-empty string, got {value!r}")
    return value


def _check_latency(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MeasurementError(f"{field} must be a number of milliseconds, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v < MAX_LATENCY_MS):
        raise MeasurementError(
            f"{field} must be finite, > 0 and < {MAX_LATENCY_MS:g} ms, got {v!r}"
        )
    return v


def _validate_measurement(
    arch: Any,
    latency_ms: Any,
    p10: Any,
    p90: Any,
    n_runs: Any,
    status: Any,
    error: Any,
    source: Any,
    env: Any,
) -> dict[str, Any]:
    """Check one measurement's values; return the row to insert (without device, arch_id)."""
    if not isinstance(arch, Architecture):
        raise MeasurementError(f"arch must be an Architecture, got {type(arch).__name__}")
    arch = get_space(arch.space).parse(arch)  # canonical and belonging to its space
    if status not in STATUSES:
        raise MeasurementError(f"status must be one of {list(STATUSES)}, got {status!r}")
    if source not in SOURCES:
        raise MeasurementError(f"source must be one of {list(SOURCES)}, got {source!r}")
    if status == "ok" and latency_ms is None:
        raise MeasurementError("latency_ms is required for a measurement with status 'ok'")
    lat = _check_latency(latency_ms, "latency_ms")
    lo = _check_latency(p10, "p10")
    hi = _check_latency(p90, "p90")
    tol = 1e-9
    if lo is not None and lat is not None and lo > lat * (1 + tol):
        raise MeasurementError(f"p10 must be <= latency_ms (the median), got p10={lo!r} > {lat!r}")
    if hi is not None and lat is not None and hi < lat * (1 - tol):
        raise MeasurementError(f"p90 must be >= latency_ms (the median), got p90={hi!r} < {lat!r}")
    if lo is not None and hi is not None and lo > hi * (1 + tol):
        raise MeasurementError(f"p10 must be <= p90, got p10={lo!r} > p90={hi!r}")
    if isinstance(n_runs, bool) or not isinstance(n_runs, numbers.Integral) or n_runs < 0:
        raise MeasurementError(f"n_runs must be an integer >= 0, got {n_runs!r}")
    if error is not None and not isinstance(error, str):
        raise MeasurementError(f"error must be a string or None, got {type(error).__name__}")
    env_d = {} if env is None else _check_dict(env, "env")
    return {
        "arch": arch,
        "latency_ms": lat,
        "p10": lo,
        "p90": hi,
        "n_runs": int(n_runs),
        "status": status,
        "error": error,
        "source": source,
        "env": _dumps(env_d, "env"),
    }


_ROW_KEYS = ("arch", "latency_ms", "p10", "p90", "n_runs", "status", "error", "source", "env")
_ROW_DEFAULTS: dict[str, Any] = {
    "p10": None,
    "p90": None,
    "n_runs": 0,
    "status": "ok",
    "error": None,
    "source": "measured",
    "env": None,
}


# ---------------------------------------------------------------------------- the store
class LatencyDB:
    """The latency database: devices, architectures, measurements and fitted predictors.

    Any SQLAlchemy URL works; the default is a SQLite file (see :func:`resolve_db_url`).
    Tables are created when missing, and the schema version is checked at open: a database
    written by a newer ``nas`` is refused rather than misread.

    Contract (every backend):

    * **Append-only.** Measurements and predictors are inserted, never updated or deleted
      through this API; a re-measurement is a new row, and "the current" predictor is the
      newest one. Returned records are frozen snapshots. Only a device row is updated in
      place (:meth:`ensure_device` refreshes its profile).
    * **Atomic.** Each call is one transaction: :meth:`add_measurements` stores all rows or
      none, and a rejected value (validated before anything is written) writes nothing.
    * **Thread and process safe.** One instance may be shared by threads (each call takes its
      own pooled connection). Several processes may write at once: on SQLite the file is in
      WAL mode, writers take the write lock up front (``BEGIN IMMEDIATE``) and wait up to
      ``busy_timeout_s`` for it; on PostgreSQL the server serialises them. After ``fork``,
      open a new instance in the child (pickling an instance sends only its URL).
    * **Errors.** Every database failure (corrupt file, lock timeout, unreachable server,
      newer schema) is a :class:`~nas.errors.DatabaseError` with a one-line message; a bad
      value is a :class:`~nas.errors.MeasurementError`; an unknown device is an
      :class:`~nas.errors.UnknownNameError`.

    Args:
        url: SQLAlchemy URL or path of a SQLite file; ``None`` means ``$NAS_DB_URL`` or the
            default file ``latency_db/latency.sqlite``.
        busy_timeout_s: how long a SQLite writer waits for another's lock before giving up.

    Example:
        >>> db = LatencyDB("sqlite:///latency.sqlite")
        >>> db.ensure_device(get_device("cpu-1t"))
        >>> mid = db.add_measurement("cpu-1t", arch, latency_ms=3.2, n_runs=50)
        >>> [m.latency_ms for m in db.measurements("cpu-1t", arch.space)]
        [3.2]
    """

    url: str

    def __init__(self, url: str | None = None, *, busy_timeout_s: float = 30.0) -> None:
        if not (isinstance(busy_timeout_s, int | float) and busy_timeout_s >= 0):
            raise DatabaseError(f"busy_timeout_s must be a number >= 0, got {busy_timeout_s!r}")
        self.url = resolve_db_url(url)
        self.busy_timeout_s = float(busy_timeout_s)
        self._shown = _display_url(self.url)
        self._engine = self._make_engine()
        try:
            self._init_schema()
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"LatencyDB({self._shown!r})"

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return self._shown

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.url, self.busy_timeout_s))

    def __enter__(self) -> LatencyDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool; the instance must not be used afterwards."""
        self._engine.dispose()

    # ------------------------------------------------------------------ engine
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
            elif parsed.database:
                # The default file's folder is ours to create; a user's missing folder is not.
                if self.url == default_db_url():
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
            timeout_ms = int(self.busy_timeout_s * 1000)

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
        return DatabaseError(msg)

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
            if type(exc).__module__.split(".")[0] in {"psycopg2", "psycopg", "pg8000"}:
                raise self._translate(exc, what) from None
            raise

    # ------------------------------------------------------------------ schema
    def _schema_state(self, conn: Connection) -> tuple[int | None, bool]:
        """(stored schema version or None, whether all our tables exist)."""
        names = set(inspect(conn).get_table_names())
        version = None
        if S.schema_version.name in names:
            row = conn.execute(
                select(S.schema_version.c.version).where(S.schema_version.c.id == 1)
            ).first()
            version = None if row is None else int(row[0])
        return version, set(S.metadata.tables) <= names

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
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(736201945)")
            version, _ = self._schema_state(conn)
            self._check_version(version)
            if version is not None and version < S.SCHEMA_VERSION:
                _migrate(conn, version)
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

    # ------------------------------------------------------------------ devices
    def ensure_device(self, profile: DeviceProfile) -> None:
        """Insert the device's row, or refresh its stored profile if it exists."""
        from nas.devices import DeviceProfile

        if not isinstance(profile, DeviceProfile):
            raise MeasurementError(
                f"profile must be a DeviceProfile, got {type(profile).__name__}"
            )
        with self._tx(f"saving device {profile.name!r}", write=True) as conn:
            self._upsert_device(conn, profile)

    def _upsert_device(self, conn: Connection, profile: DeviceProfile) -> None:
        now = _now()
        values = {"profile": _dumps(profile.to_dict(), "profile"), "external": profile.external}
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            ins = _dialect_insert(dialect)(S.devices).values(
                name=profile.name, created_at=now, updated_at=now, **values
            )
            ins = ins.on_conflict_do_update(
                index_elements=[S.devices.c.name], set_={**values, "updated_at": now}
            )
            conn.execute(ins)
            return
        exists = conn.execute(
            select(S.devices.c.name).where(S.devices.c.name == profile.name)
        ).first()
        if exists:
            conn.execute(
                update(S.devices)
                .where(S.devices.c.name == profile.name)
                .values(**values, updated_at=now)
            )
        else:
            conn.execute(
                insert(S.devices).values(
                    name=profile.name, created_at=now, updated_at=now, **values
                )
            )

    def devices(self) -> list[str]:
        """Names of the devices in the database, sorted."""
        with self._tx("listing devices", write=False) as conn:
            return sorted(r[0] for r in conn.execute(select(S.devices.c.name)))

    def device_profile(self, name: str) -> DeviceProfile | None:
        """The profile stored with device ``name``, or ``None`` if it is not in the database."""
        from nas.devices import DeviceProfile

        with self._tx(f"reading device {name!r}", write=False) as conn:
            row = conn.execute(select(S.devices.c.profile).where(S.devices.c.name == name)).first()
        return None if row is None else DeviceProfile.from_dict(json.loads(row[0]))

    def _require_device(self, conn: Connection, device: str) -> None:
        if not isinstance(device, str):
            raise MeasurementError(f"device must be a device name, got {type(device).__name__}")
        if conn.execute(select(S.devices.c.name).where(S.devices.c.name == device)).first():
            return
        known = sorted(r[0] for r in conn.execute(select(S.devices.c.name)))
        raise UnknownNameError(
            f"device {device!r} is not in the latency database {self._shown}; known devices: "
            f"{', '.join(known) or '(none)'}; store its profile first with "
            f"ensure_device(get_device({device!r}))"
        )

    # ------------------------------------------------------------------ measurements
    def add_measurement(
        self,
        device: str,
        arch: Architecture,
        *,
        latency_ms: float | None,
        p10: float | None = None,
        p90: float | None = None,
        n_runs: int = 0,
        status: str = "ok",
        error: str | None = None,
        source: str = "measured",
        env: dict[str, Any] | None = None,
    ) -> int:
        """Store one measurement and return its id.

        Args:
            device: a device already stored with :meth:`ensure_device`.
            arch: the measured architecture.
            latency_ms: median latency in milliseconds; required when ``status`` is ``"ok"``.
            p10: 10th percentile of the timed runs.
            p90: 90th percentile of the timed runs.
            n_runs: number of timed runs.
            status: ``"ok"`` or ``"failed"``.
            error: why it failed.
            source: ``"measured"``, ``"imported"`` or ``"noise"``.
            env: fingerprint of the machine and software (JSON-serialisable).

        Raises:
            MeasurementError: a value is out of range (e.g. a latency that is zero, negative,
                NaN, infinite or >= 1e6 ms); nothing is written.
            UnknownNameError: the device is not in the database.
            DatabaseError: the database cannot be written.
        """
        row = _validate_measurement(arch, latency_ms, p10, p90, n_runs, status, error, source, env)
        return self._insert_measurements(device, [row])[0]

    def add_measurements(self, device: str, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store many measurements in one transaction: all of them or, on any error, none.

        Args:
            device: a device already stored with :meth:`ensure_device`.
            rows: dicts with ``arch`` and ``latency_ms`` and optionally the other keyword
                arguments of :meth:`add_measurement`.

        Returns:
            The new ids, in the order of ``rows``.

        Raises:
            MeasurementError: naming the row index, the field and the value.
        """
        return self._insert_measurements(device, self._validate_rows(rows))

    def _validate_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
            raise MeasurementError(f"rows must be a list of dicts, got {type(rows).__name__}")
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise MeasurementError(f"row {i}: must be a dict, got {type(row).__name__}")
            unknown = sorted(set(row) - set(_ROW_KEYS))
            if unknown:
                raise MeasurementError(
                    f"row {i}: unknown key(s) {unknown}; allowed: {', '.join(_ROW_KEYS)}"
                )
            for key in ("arch", "latency_ms"):
                if key not in row:
                    raise MeasurementError(f"row {i}: missing key {key!r}")
            values = {**_ROW_DEFAULTS, **row}
            try:
                out.append(_validate_measurement(*(values[k] for k in _ROW_KEYS)))
            except NASError as exc:
                raise type(exc)(f"row {i}: {exc}") from None
        return out

    def _insert_measurements(
        self,
        device: str,
        rows: list[dict[str, Any]],
        ensure: DeviceProfile | None = None,
    ) -> list[int]:
        if not rows:
            return []
        now = _now()
        with self._tx(f"adding measurements for {device!r}", write=True) as conn:
            if ensure is not None:
                self._upsert_device(conn, ensure)
            self._require_device(conn, device)
            ids = self._arch_ids(conn, [r["arch"] for r in rows])
            values = [
                {
                    **{k: v for k, v in r.items() if k != "arch"},
                    "device": device,
                    "arch_id": ids[(r["arch"].space, r["arch"].hash)],
                    "created_at": now,
                }
                for r in rows
            ]
            stmt = insert(S.measurements)
            if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
                result = conn.execute(
                    stmt.returning(S.measurements.c.id, sort_by_parameter_order=True), values
                )
                return [int(r[0]) for r in result]
            return [_inserted_id(conn.execute(stmt, v)) for v in values]

    def _arch_ids(self, conn: Connection, archs: list[Architecture]) -> dict[tuple[str, str], int]:
        """Ids of the architectures' rows, inserting the missing ones."""
        unique = {(a.space, a.hash): a for a in archs}
        table = S.architectures
        found: dict[tuple[str, str], int] = {}

        def lookup() -> None:
            by_space: dict[str, list[str]] = {}
            for space, h in unique:
                by_space.setdefault(space, []).append(h)
            for space, hashes in by_space.items():
                for i in range(0, len(hashes), _ID_CHUNK):
                    chunk = hashes[i : i + _ID_CHUNK]
                    q = select(table.c.id, table.c.hash).where(
                        table.c.space == space, table.c.hash.in_(chunk)
                    )
                    for rid, h in conn.execute(q):
                        found[(space, h)] = int(rid)

        dialect = conn.dialect.name
        rows = [{"space": s, "hash": h, "arch": a.to_json()} for (s, h), a in unique.items()]
        if dialect in ("sqlite", "postgresql"):
            # Concurrent writers may insert the same architecture: let the unique key decide.
            ins = _dialect_insert(dialect)(table).on_conflict_do_nothing(
                index_elements=[table.c.space, table.c.hash]
            )
            for i in range(0, len(rows), _ID_CHUNK):
                conn.execute(ins, rows[i : i + _ID_CHUNK])
            lookup()
        else:
            lookup()
            missing = [r for r in rows if (r["space"], r["hash"]) not in found]
            if missing:
                conn.execute(insert(table), missing)
                lookup()
        return found

    def measurements(
        self,
        device: str,
        space: str,
        *,
        status: str | None = "ok",
        source: str | None = None,
    ) -> list[MeasurementRecord]:
        """The device's measurements of architectures of ``space``, oldest first.

        Args:
            device: device name (an unknown one has no measurements).
            space: search space name; architectures are re-parsed through it.
            status: keep only this status (``None``: all).
            source: keep only this source (``None``: all).
        """
        if status is not None and status not in STATUSES:
            raise MeasurementError(
                f"status must be one of {list(STATUSES)} or None, got {status!r}"
            )
        if source is not None and source not in SOURCES:
            raise MeasurementError(
                f"source must be one of {list(SOURCES)} or None, got {source!r}"
            )
        parse = get_space(space).parse
        rows = self._measurement_rows(device, space, status, source)
        cache: dict[int, Architecture] = {}
        out = []
        for r in rows:
            arch = cache.get(r.arch_id)
            if arch is None:
                arch = cache[r.arch_id] = parse(r.arch)
            out.append(
                MeasurementRecord(
                    id=int(r.id),
                    device=r.device,
                    space=r.space,
                    arch=arch,
                    latency_ms=r.latency_ms,
                    p10=r.p10,
                    p90=r.p90,
                    n_runs=int(r.n_runs),
                    status=r.status,
                    error=r.error,
                    source=r.source,
                    env=json.loads(r.env),
                    created_at=_utc(r.created_at),
                )
            )
        return out

    def _measurement_rows(
        self, device: str | None, space: str | None, status: str | None, source: str | None
    ) -> list[Any]:
        m, a = S.measurements, S.architectures
        q = select(m, a.c.space, a.c.hash, a.c.arch).join(a, m.c.arch_id == a.c.id)
        if device is not None:
            q = q.where(m.c.device == device)
        if space is not None:
            q = q.where(a.c.space == space)
        if status is not None:
            q = q.where(m.c.status == status)
        if source is not None:
            q = q.where(m.c.source == source)
        with self._tx("reading measurements", write=False) as conn:
            return list(conn.execute(q.order_by(m.c.id)))

    def measurement_rows(
        self,
        device: str | None = None,
        space: str | None = None,
        *,
        status: str | None = None,
        source: str | None = None,
    ) -> list[dict[str, Any]]:
        """Measurements as flat dicts, for export: no re-parsing, any space, oldest first.

        Keys: ``id, device, space, hash, arch`` (JSON text), ``latency_ms, p10, p90, n_runs,
        status, error, source, env`` (a dict) and ``created_at`` (UTC datetime).
        """
        return [
            {
                "id": int(r.id),
                "device": r.device,
                "space": r.space,
                "hash": r.hash,
                "arch": r.arch,
                "latency_ms": r.latency_ms,
                "p10": r.p10,
                "p90": r.p90,
                "n_runs": int(r.n_runs),
                "status": r.status,
                "error": r.error,
                "source": r.source,
                "env": json.loads(r.env),
                "created_at": _utc(r.created_at),
            }
            for r in self._measurement_rows(device, space, status, source)
        ]

    # ------------------------------------------------------------------ predictors
    def save_predictor(
        self,
        device: str,
        space: str,
        kind: str,
        *,
        params: dict[str, Any],
        state: dict[str, Any],
        metrics: dict[str, Any],
        measurement_ids: list[int],
    ) -> int:
        """Store a fitted predictor as a new record and return its id.

        Args:
            device: a device already stored with :meth:`ensure_device`.
            space: the search space it predicts for.
            kind: the predictor's kind (e.g. ``"lut"``).
            params: hyper-parameters; JSON-serialisable (numpy values are converted).
            state: learned state; may be large (a lookup table).
            metrics: validation metrics.
            measurement_ids: ids of the measurements it was fitted on.

        Raises:
            MeasurementError: a value is of the wrong type or not JSON-serialisable.
            UnknownNameError: the device is not in the database.
        """
        _check_name(space, "space")
        _check_name(kind, "kind")
        payload = {
            name: _dumps(_check_dict(value, name), name)
            for name, value in (("params", params), ("state", state), ("metrics", metrics))
        }
        if isinstance(measurement_ids, str | bytes) or not isinstance(
            measurement_ids, Sequence | Iterator
        ):
            raise MeasurementError(
                f"measurement_ids must be a list of ints, got {type(measurement_ids).__name__}"
            )
        ids = list(measurement_ids)
        for i, v in enumerate(ids):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise MeasurementError(f"measurement_ids[{i}] must be an int, got {v!r}")
        payload["measurement_ids"] = _dumps([int(v) for v in ids], "measurement_ids")
        with self._tx(f"saving a {kind!r} predictor for {device!r}", write=True) as conn:
            self._require_device(conn, device)
            result = conn.execute(
                insert(S.predictors).values(
                    device=device, space=space, kind=kind, created_at=_now(), **payload
                )
            )
            return _inserted_id(result)

    def load_predictor(
        self, device: str, space: str, kind: str | None = None
    ) -> PredictorRecord | None:
        """The newest predictor for (device, space), of ``kind`` if given; ``None`` if none."""
        found = self._predictors(device, space, kind, newest=True)
        return found[0] if found else None

    def list_predictors(
        self, device: str | None = None, space: str | None = None
    ) -> list[PredictorRecord]:
        """Stored predictors, optionally of one device and/or space, oldest first."""
        return self._predictors(device, space, None, newest=False)

    def _predictors(
        self, device: str | None, space: str | None, kind: str | None, *, newest: bool
    ) -> list[PredictorRecord]:
        p = S.predictors
        q = select(p)
        if device is not None:
            q = q.where(p.c.device == device)
        if space is not None:
            q = q.where(p.c.space == space)
        if kind is not None:
            q = q.where(p.c.kind == kind)
        q = q.order_by(p.c.id.desc()).limit(1) if newest else q.order_by(p.c.id)
        with self._tx("reading predictors", write=False) as conn:
            rows = list(conn.execute(q))
        return [
            PredictorRecord(
                id=int(r.id),
                device=r.device,
                space=r.space,
                kind=r.kind,
                params=json.loads(r.params),
                state=json.loads(r.state),
                metrics=json.loads(r.metrics),
                measurement_ids=[int(v) for v in json.loads(r.measurement_ids)],
                created_at=_utc(r.created_at),
            )
            for r in rows
        ]


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    if key is None:  # cannot happen with an integer primary key; keeps mypy honest
        raise DatabaseError("the database returned no id for the new row")
    return int(key[0])


def _reopen(url: str, busy_timeout_s: float) -> LatencyDB:
    return LatencyDB(url, busy_timeout_s=busy_timeout_s)


def _dialect_insert(dialect: str) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support, for the two dialects that have one here."""
    return pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert


def _migrate(conn: Connection, version: int) -> None:
    """Bring tables of an older schema ``version`` up to :data:`SCHEMA_VERSION`."""
    # Version 1 is the first; later versions add their steps here, oldest first.
    raise DatabaseError(f"no migration from latency database schema version {version}")
