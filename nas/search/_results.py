"""Reading a search back from its Optuna storage: trials, the Pareto front, hypervolume.

Everything a search knows is in the study: the configuration, the objectives and the
predictors it used (study user attributes), and per trial the canonical architecture, its
MACs, params, accuracy proxy and every predicted latency (trial user attributes). So a study
opened in ``optuna-dashboard`` shows the same thing, and ``nas results`` needs nothing else.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from nas._config import validate
from nas._io import check_path, mask_url
from nas.errors import ConfigError, NASError
from nas.search._config import Objective, SearchConfig, default_storage, is_memory
from nas.search._pareto import hypervolume, pareto_mask

__all__ = [
    "SearchResult",
    "TrialRecord",
    "load_results",
    "load_study",
    "open_storage",
    "result_from_study",
]

# a scheme, then "://": only that makes a storage a URL; anything else is a journal's path
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

#: the PostgreSQL advisory lock under which a new database gets Optuna's tables (nas.db's
#: own first open takes another)
_PG_SETUP_LOCK = 736201946

#: study user attribute keys
CONFIG_KEY = "nas_config"
PREDICTORS_KEY = "predictors"
VERIFIED_KEY = "verified"
#: trials failed because their driver died (they were enqueued again)
RETRIED_KEY = "retried_trials"


class _JournalFile(JournalFileBackend):
    """Optuna's journal file, made durable per trial rather than per operation.

    Optuna's backend fsyncs after every operation: each parameter suggested and each user
    attribute set costs a disk flush (about 2 ms here, 20 to 100 per trial). This one still
    appends every write at once under the file lock (so several processes may share the
    file, and a process that dies loses nothing it wrote; what the Ray driver holds back for a
    moment is :class:`_JournalStorage`'s), but flushes to disk only when a trial changes state
    or the study changes; the flush covers every earlier write. After a power cut, a trial
    still running may lose parameters; it was RUNNING, and a resumed search runs it again.
    """

    #: operations written without a flush: trial creation, parameters, attributes
    _NO_FSYNC = frozenset({4, 5, 7, 8, 9})

    def __init__(self, file_path: str) -> None:
        # Optuna's default lock for a journal file, kept here to write under it through the
        # lock's public acquire/release
        self._nas_path = file_path
        self._nas_lock = JournalFileSymlinkLock(file_path)
        super().__init__(file_path, lock_obj=self._nas_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.append_lines([_encode(log) for log in logs],
                          durable=any(log.get("op_code") not in self._NO_FSYNC for log in logs))

    def append_lines(self, lines: list[str], *, durable: bool, after: int | None = None
                     ) -> bool:
        """Append records already encoded (:func:`_encode`), in one write under the lock.

        Args:
            durable: flush to disk before returning.
            after: how many records the caller has read (its next ``read_logs`` start).

        Returns:
            True when the records went right after those ``after`` (no other writer came
            between): they are then records ``after``, ``after + 1``, ... and
            :meth:`read_logs` knows where each starts, so a reader may start past them.
        """
        import os

        data = [line.encode("utf-8") for line in lines]
        self._nas_lock.acquire()
        try:
            with open(self._nas_path, "ab") as f:
                end = f.seek(0, os.SEEK_END)
                f.write(b"".join(data))
                f.flush()
                if durable:
                    os.fsync(f.fileno())
        finally:
            self._nas_lock.release()
        # Optuna's reader keeps the byte offset of every record it has read
        offsets = self._log_number_offset
        if after is None or offsets.get(after) != end:
            return False
        for i, chunk in enumerate(data):
            end += len(chunk)
            offsets[after + i + 1] = end
        return True


def _encode(log: dict[str, Any]) -> str:
    """One journal record as Optuna writes it: compact JSON, a line break."""
    return json.dumps(log, separators=(",", ":")) + "\n"


class _JournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal storage whose writes to this process's trials can be held back and
    appended together (:func:`deferred_writes`).

    Optuna appends every operation on its own, under the file's lock, and reads the file back
    after each: a trial of 46 parameters and 7 attributes costs some 55 locked appends and 55
    reads. Inside :func:`deferred_writes`, an operation on a trial this process runs (a
    parameter, an attribute, an intermediate value, its end) is applied to the storage's
    in-memory state at once, as a replay of the file would apply it (JSON round trip
    included, and the same errors raised), and kept; the kept operations are appended in one
    write, in the order they were made, when the block ends or before any other write (a
    trial created, a study attribute), so the file always holds this process's operations in
    order, a prefix of them while a block is open. Those records, once read back, are not
    applied again. Other operations, other threads and code outside a block write as
    Optuna does. Any process reading the file sees the same study, up to the block's end.
    """

    #: operations that may be held back, on a trial given by its id: a parameter, an
    #: intermediate value, a user or system attribute; and a state, once finished (one that
    #: creates a trial or takes a waiting one depends on what other writers did: never held)
    _DEFERRABLE = frozenset({5, 7, 8, 9})

    def __init__(self, backend: _JournalFile) -> None:
        # set before Optuna's __init__, which reads the file through _sync_with_backend
        self._reset_deferral()
        self._file = backend
        super().__init__(backend)

    def _reset_deferral(self) -> None:
        #: the thread whose trial writes are being held back (None: none)
        self._deferring: int | None = None
        #: the records held back, encoded, and whether one of them asks for a flush to disk
        self._held: list[str] = []
        self._held_durable = False
        #: this storage's records appended already applied: skipped when read back
        self._applied_unread = 0
        #: the write just made was held: the read-back Optuna does after it is not needed
        self._skip_next_sync = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._reset_deferral()  # a copy replays the file: nothing of this one's is held

    @contextlib.contextmanager
    def deferred_writes(self) -> Iterator[None]:
        with self._thread_lock:
            outer = self._deferring is not None  # nested, or another thread's block: as is
            if not outer:
                self._deferring = threading.get_ident()
        try:
            yield
        finally:
            if not outer:
                with self._thread_lock:
                    self._deferring = None
                    self._append(None)

    def _append(self, log: dict[str, Any] | None) -> None:
        """Append the held records, then ``log``, in one write (under the thread lock)."""
        lines = self._held if log is None else [*self._held, _encode(log)]
        if not lines:
            return
        durable = self._held_durable or (
            log is not None and log["op_code"] not in _JournalFile._NO_FSYNC)
        replay = self._replay_result
        if self._file.append_lines(lines, durable=durable, after=replay.log_number_read):
            # nothing came between: the held records count as read (they were applied)
            replay.log_number_read += len(self._held)
        else:  # another writer came between: skip them when they are read
            self._applied_unread += len(self._held)
        self._held, self._held_durable = [], False

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        log = {"op_code": op_code, "worker_id": self._replay_result.worker_id, **extra_fields}
        if self._deferring == threading.get_ident() and (
                op_code in self._DEFERRABLE
                or (op_code == 6 and TrialState(extra_fields["state"]).is_finished())):
            line = _encode(log)
            # what a replay of the file will see, applied now (raising what it would raise):
            # a parameter's fields come back from JSON as they are; anything else is decoded
            plain = op_code == 5 and type(log["param_value_internal"]) in (int, float)
            replay = self._replay_result
            seen = replay.log_number_read
            try:
                replay.apply_logs([log if plain else json.loads(line)])
            finally:
                replay.log_number_read = seen
            self._held.append(line)
            self._held_durable |= op_code not in _JournalFile._NO_FSYNC
            self._skip_next_sync = True
            return
        self._append(log)

    def _sync_with_backend(self) -> None:
        if self._skip_next_sync:
            self._skip_next_sync = False
            return
        logs = self._backend.read_logs(self._replay_result.log_number_read)
        self._replay_result.apply_logs(self._not_applied(logs) if self._applied_unread
                                       else logs)

    def _not_applied(self, logs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        # this storage's records come back in the order it appended them: the first
        # _applied_unread of them were applied when they were held
        mine = self._worker_id_prefix
        for log in logs:
            if self._applied_unread and str(log.get("worker_id", "")).startswith(mine):
                self._applied_unread -= 1
                self._replay_result.log_number_read += 1
                continue
            yield log


@contextlib.contextmanager
def deferred_writes(storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """Hold back this thread's writes to running trials and append them in one write at the
    end of the block, on a journal storage opened by :func:`open_storage` (other storages:
    written as usual). What the study reads in the block is as if each had been written."""
    if isinstance(storage, _JournalStorage):
        with storage.deferred_writes():
            yield
    else:
        yield


def _sqlite_pragmas(storage: optuna.storages.RDBStorage) -> None:
    """WAL and synchronous=NORMAL for SQLite storages: a commit no longer waits for the disk
    (durable across process crashes; several processes may still write)."""
    from sqlalchemy import event

    @event.listens_for(storage.engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    storage.engine.dispose()  # connections opened from now on get the pragmas


def open_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (``sqlite:///...``, ``postgresql://...``) or a journal
    file path.

    Nothing is created in a store of another kind: a database holding the latency
    database's tables is refused, as is a journal cut short or corrupt (Optuna's reader would
    skip a partial last record and read the rest as a smaller study).

    Raises:
        ConfigError: the storage cannot be reached or opened, is another kind of store, or a
            journal is truncated or corrupt (one line, password hidden).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not _URL.match(url):
        return _open_journal(url, create=create)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage {mask_url(url)} is neither a database URL nor a journal "
                          "file") from None
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            if create:
                return optuna.storages.RDBStorage(url)
            # an in-memory database is new and empty: no search to read
            raise ConfigError(f"storage {url} is an in-memory database; name a file "
                              "(sqlite:///runs/studies.sqlite) or a journal")
        _sqlite_file(url, str(parsed.database), create=create)
    elif backend == "postgresql":
        kwargs = {"connect_args": {"connect_timeout": 5}}
    try:
        tables = _tables(url, kwargs) if backend in ("postgresql", "sqlite") else None
    except Exception as exc:
        raise ConfigError(f"cannot reach storage {mask_url(url)}: {_reason(exc)}") from None
    _refuse_latency_db(url, tables)
    try:
        storage = _rdb_storage(url, kwargs, backend, parsed.database, tables)
        if backend == "sqlite":
            _sqlite_pragmas(storage)
        return storage
    except Exception as exc:
        raise ConfigError(f"cannot reach storage {mask_url(url)}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _open_journal(url: str, *, create: bool) -> optuna.storages.BaseStorage:
    """Optuna's journal storage on the file ``url``, once its last record is checked whole."""
    path = check_path(url, "storage")
    if path.is_dir():
        raise ConfigError(f"storage {url} is a folder; name a journal file "
                          "(e.g. runs/studies/NAME.journal) or a database URL")
    if not create and not path.is_file():
        raise ConfigError(f"storage {url} does not exist (no search has written to it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_journal(path, url)
        backend = _JournalFile(str(path))
    except OSError as exc:
        raise ConfigError(f"cannot open journal storage {url}: {exc}") from None
    try:
        # Optuna replays the whole journal here: a file that is not one fails with
        # whatever the first bad record raises.
        return _JournalStorage(backend)
    except OSError as exc:
        raise ConfigError(f"cannot read journal storage {url}: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"journal storage {url} is corrupt or not an Optuna journal "
                          f"({_first_line(exc)}); move it away or name another "
                          "--storage") from None


#: the first bytes of every SQLite database file
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_journal(path: Path, url: str) -> None:
    """Refuse a journal whose last record is cut short or not JSON, and a SQLite database
    named as a journal.

    Optuna's reader skips such a last record silently (a study cut in the middle of a
    record reads as the records before it, often none), and the next append would be glued
    to it. A writer appends whole records under the journal's lock, so a partial record seen
    here is checked again under that lock before it is called a cut.
    """
    if not path.is_file():
        return
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC:
        raise ConfigError(f"storage {url} is a SQLite database, not a journal: name it "
                          f"sqlite:///{path} if it is a study storage (or --db if it is a "
                          "latency database)")
    if _journal_tail_ok(path):
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        if _journal_tail_ok(path):
            return
        size = path.stat().st_size
    finally:
        lock.release()
    raise ConfigError(f"journal storage {url} is truncated or corrupt: its last record (ending "
                      f"at byte {size}) is not a whole JSON line; restore the file from a "
                      "copy, or move it away and name another --storage")


def _journal_tail_ok(path: Path) -> bool:
    """Whether the file is empty or ends with a whole JSON record and a line break."""
    import json

    with open(path, "rb") as f:
        end = f.seek(0, 2)
        if end == 0:
            return True
        block, pos = b"", end
        while pos > 0:  # read back to the line break before the last record
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step) + block
            if block.count(b"\n") >= 2 or (pos == 0 and block):
                break
    if not block.endswith(b"\n"):
        return False
    last = block[:-1].rsplit(b"\n", 1)[-1]
    try:
        return isinstance(json.loads(last), dict)
    except ValueError:
        return False


def _sqlite_file(url: str, database: str, *, create: bool) -> None:
    """Check (and without ``create``, require) the file of a SQLite storage; make its
    folder."""
    # the URL's own decoding: %3F in the URL is a ? in the file name
    file = check_path(database, "storage")
    if not create and not file.is_file():
        raise ConfigError(f"storage {url} does not exist (no search has written to it)")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder of storage {url}: "
                          f"{exc.strerror or exc}") from None


#: tables of the latency database (nas.db): a database that has them is not a study storage
_LATENCY_TABLES = frozenset({"schema_version", "devices", "architectures", "measurements",
                             "predictors"})


def _refuse_latency_db(url: str, tables: set[str] | None) -> None:
    """Refuse, before Optuna creates its tables, a database that is a latency database."""
    found = sorted(_LATENCY_TABLES & (tables or set()))
    if "schema_version" in found and len(found) > 1:
        raise ConfigError(f"storage {mask_url(url)} is a latency database (it has the tables "
                          f"{', '.join(found)}), not an Optuna study storage: give it as --db, "
                          "and name a journal or another database for --storage")


def _rdb_storage(url: str, kwargs: dict[str, Any], backend: str,
                 database: str | None, tables: set[str] | None) -> optuna.storages.RDBStorage:
    """Optuna's storage on a database, whose first open is made by one process at a time.

    Optuna creates its tables, its version row and Alembic's stamp check-then-create, so two
    processes opening one new database at once (two ``nas search`` started together) race and
    one fails: a duplicate key on ``pg_type_typname_nsp_index``, "table ... already exists".
    Until Optuna's tables are all there, the open is serialised: by a PostgreSQL advisory lock
    (released with its connection), or a lock file beside an SQLite file. A database already
    set up is opened without a lock.
    """
    if tables is None or _set_up(url, kwargs, tables):
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    if backend == "sqlite":
        lock = JournalFileOpenLock(str(database))
        lock.acquire()
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        finally:
            lock.release()
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, **kwargs)
    try:
        with engine.connect() as conn:  # closing it (no pool) releases the lock
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_SETUP_LOCK})")
            conn.commit()  # a session lock: held past the transaction, which must not linger
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    finally:
        engine.dispose()


def _tables(url: str, kwargs: dict[str, Any]) -> set[str]:
    """The tables of the database (read, nothing created)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, **kwargs)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _set_up(url: str, kwargs: dict[str, Any], tables: set[str]) -> bool:
    """Whether Optuna has finished setting up the database: Alembic's stamp, its last step."""
    if "alembic_version" not in tables:
        return False
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, **kwargs)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT 1 FROM alembic_version").first() is not None
    finally:
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0].strip() if lines else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


@dataclass
class TrialRecord:
    """One trial of a search, flattened for tables, JSON and the report."""

    number: int
    state: str
    values: dict[str, float]
    arch: dict[str, Any] | None
    arch_hash: str | None
    macs: int | None
    params: int | None
    accuracy: float | None
    latency_ms: dict[str, float]
    feasible: bool
    measured_ms: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    duplicate_of: int | None = None
    error: str | None = None
    retried: bool = False
    #: per memory key of the search (``memory``, ``memory:<C>``), exact, in MiB
    memory_mib: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _record(t: FrozenTrial, objectives: list[Objective],
            verified: dict[str, dict[str, float]], retried: set[int]) -> TrialRecord:
    ua = t.user_attrs
    values = ({o.name: float(v) for o, v in zip(objectives, t.values, strict=True)}
              if t.state == TrialState.COMPLETE and t.values is not None else {})
    cons = t.constraints
    return TrialRecord(
        number=t.number, state=t.state.name, values=values, arch=ua.get("arch"),
        arch_hash=ua.get("arch_hash"), macs=ua.get("macs"), params=ua.get("params"),
        accuracy=ua.get("accuracy"), latency_ms=dict(ua.get("latency_ms") or {}),
        feasible=t.state == TrialState.COMPLETE and all(c <= 0 for c in cons.values()),
        measured_ms=dict(verified.get(str(t.number), {})), constraints=dict(cons),
        duplicate_of=ua.get("duplicate_of"), error=ua.get("error"),
        retried=bool(ua.get("retried")) or t.number in retried,
        memory_mib=dict(ua.get("memory_mib") or {}),
    )


@dataclass
class SearchResult:
    """A search as stored: its configuration, trials and front.

    Attributes:
        front: the feasible Pareto front (several objectives) or the best feasible trial (one
            objective), one trial per distinct architecture, best first by the first
            objective.
        predictors: per device, the latency predictor's kind, id and held-out metrics.
    """

    study_name: str
    storage: str
    config: SearchConfig
    objectives: list[Objective]
    trials: list[TrialRecord]
    predictors: dict[str, dict[str, Any]]
    front: list[TrialRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.front = self._front()

    # ------------------------------------------------------------------ counts
    @property
    def budget_trials(self) -> list[TrialRecord]:
        """Trials that count toward the budget: completed ones and failed evaluations (not
        those lost to a dead worker or driver, which were re-run)."""
        return [t for t in self.trials
                if t.state == "COMPLETE" or (t.state == "FAIL" and not t.retried)]

    @property
    def n_complete(self) -> int:
        return sum(t.state == "COMPLETE" for t in self.trials)

    @property
    def n_failed(self) -> int:
        return sum(t.state == "FAIL" and not t.retried for t in self.trials)

    @property
    def n_feasible(self) -> int:
        return sum(t.feasible for t in self.trials)

    # ------------------------------------------------------------------ front
    def _signs(self) -> np.ndarray:
        return np.array([-1.0 if o.direction == "maximize" else 1.0 for o in self.objectives])

    def minimised(self, trials: list[TrialRecord]) -> np.ndarray:
        """Objective values of ``trials`` as a minimisation matrix (n x m)."""
        if not trials:
            return np.zeros((0, len(self.objectives)))
        return np.array([[t.values[o.name] for o in self.objectives] for t in trials]) \
            * self._signs()

    def _front(self) -> list[TrialRecord]:
        seen: dict[str, TrialRecord] = {}
        for t in self.trials:
            if t.feasible and t.arch_hash not in seen:
                seen[str(t.arch_hash)] = t
        cand = list(seen.values())
        if not cand:
            return []
        v = self.minimised(cand)
        if len(self.objectives) == 1:
            order = np.argsort(v[:, 0], kind="stable")
            return [cand[int(order[0])]]
        mask = pareto_mask(v)
        front = [t for t, m in zip(cand, mask, strict=True) if m]
        fv = self.minimised(front)
        return [front[int(i)] for i in np.lexsort(fv.T[::-1])]

    def reference_point(self) -> np.ndarray:
        """Worst value of each objective over the feasible completed trials (minimised)."""
        feas = [t for t in self.trials if t.feasible]
        v = self.minimised(feas)
        if len(v) == 0:
            return np.zeros(len(self.objectives))
        return v.max(axis=0) + 1e-12

    def hypervolume_curve(self, reference: np.ndarray | None = None,
                          points: int = 200) -> list[tuple[int, float]]:
        """``(trials so far, hypervolume of the feasible front so far)`` at up to ``points``
        steps, in trial order. With one objective the "hypervolume" is the improvement of the
        best value over the reference (the worst feasible value)."""
        ref = self.reference_point() if reference is None else np.asarray(reference)
        counted = [t for t in self.trials if t.state == "COMPLETE"
                   or (t.state == "FAIL" and not t.retried)]
        n = len(counted)
        if n == 0:
            return []
        steps = sorted({max(1, round(x)) for x in np.linspace(1, n, min(points, n))})
        out = []
        for k in steps:
            feas = [t for t in counted[:k] if t.feasible]
            out.append((k, hypervolume(self.minimised(feas), ref)))
        return out

    # ------------------------------------------------------------------ output
    @property
    def memory_keys(self) -> list[str]:
        """The search's memory objectives and constraints (``memory``, ``memory:<C>``)."""
        keys = [*self.config.objectives, *self.config.constraints]
        return list(dict.fromkeys(k for k in keys if is_memory(k)))

    def rows(self, trials: list[TrialRecord] | None = None) -> list[dict[str, Any]]:
        """Table rows: trial, arch hash, accuracy, latency per device, MACs, params (and
        memory in MiB per memory key, for a search with memory)."""
        out = []
        for t in self.front if trials is None else trials:
            row: dict[str, Any] = {"trial": t.number, "arch_hash": t.arch_hash,
                                   "accuracy": t.accuracy}
            for dev in self.config.devices:
                row[f"latency_ms:{dev}"] = t.latency_ms.get(dev)
                if dev in t.measured_ms:
                    row[f"measured_ms:{dev}"] = t.measured_ms[dev]
            row.update(macs=t.macs, params=t.params)
            for key in self.memory_keys:
                row[f"memory_mib:{key}"] = t.memory_mib.get(key)
            row["arch"] = t.arch
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "storage": mask_url(self.storage),
            "config": self.config.model_dump(),
            "objectives": [o.model_dump() | {"label": o.label} for o in self.objectives],
            "n_trials": len(self.budget_trials),
            "n_complete": self.n_complete,
            "n_failed": self.n_failed,
            "n_feasible": self.n_feasible,
            "front": [t.to_json() for t in self.front],
            "predictors": self.predictors,
        }


def load_study(study: str, storage: str) -> optuna.Study:
    """The Optuna study, with a clear error when it is not in the storage."""
    st = open_storage(storage, create=False)
    try:
        return optuna.load_study(study_name=study, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        known = ", ".join(names[:10]) if names else "none"
        raise ConfigError(f"no study {study!r} in storage {mask_url(storage)}; studies "
                          f"there: {known}") from None


def load_results(study: str, storage: str | None = None) -> SearchResult:
    """A stored search (finished or not) as a :class:`SearchResult`.

    Args:
        storage: the search's storage (default: ``runs/studies/<study>.journal``).
    """
    url = storage or default_storage(study)
    st = load_study(study, url)
    return result_from_study(st, url)


def result_from_study(st: optuna.Study, url: str) -> SearchResult:
    ua = st.user_attrs
    if CONFIG_KEY not in ua:
        raise NASError(f"study {st.study_name!r} was not written by `nas search` (it has no "
                       f"{CONFIG_KEY!r} attribute)")
    cfg = validate(SearchConfig, ua[CONFIG_KEY],
                   where=f"stored config of study {st.study_name!r}")
    objectives = cfg.objective_list
    try:
        verified = dict(ua.get(VERIFIED_KEY) or {})
        retried = set(ua.get(RETRIED_KEY) or [])
        trials = [_record(t, objectives, verified, retried)
                  for t in st.get_trials(deepcopy=False)]
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # a study edited by hand, or written by another program under our keys
        raise ConfigError(f"study {st.study_name!r} in {mask_url(url)} holds records `nas "
                          f"search` did not write ({_first_line(exc)})") from None
    return SearchResult(study_name=st.study_name, storage=url, config=cfg,
                        objectives=objectives, trials=trials,
                        predictors=dict(ua.get(PREDICTORS_KEY) or {}))
