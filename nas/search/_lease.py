"""One driver per study: a lease on the study, kept in its storage, with a heartbeat.

A search's driver (either engine, and the service's searches, which run the same call) takes
the lease of its study before it writes anything to it, and gives it back when it ends. The
lease is two study *system* attributes, so it lives wherever the study does (a journal file,
SQLite, PostgreSQL, any Optuna storage) and needs no table of its own:

- ``nas:lease``: the holder, ``{token, host, pid, since, boot, started}`` (None once given
  back);
- ``nas:lease-beat:<token>``: the holder's heartbeat, the time of its latest beat (seconds
  since the epoch), written every :data:`HEARTBEAT_S` seconds by a thread of the driver.

A second driver of a study is refused at once, in one line naming the holder, while the holder
lives. It lives while its process does when it runs on this machine (same host name and boot,
a process with its pid and start time, not a zombie): a driver killed with SIGKILL is taken
over by the next ``--resume`` at once. A holder on another machine lives while its heartbeat
is younger than :data:`LEASE_TIMEOUT_S` seconds (the machines' clocks are assumed to agree to
well within that). Taking the lease (reading the holder, then writing oneself) runs under a
lock, so two drivers starting at once cannot both take it: a lock file beside a journal or
SQLite file (``<file>.lease.lock``, which Optuna's lock breaks after 30 s if its holder died),
a PostgreSQL advisory lock held by a connection of its own. Other database servers get no such
lock: there the lease is checked but two drivers started in the same instant may both pass.

A driver whose lease was taken over (its heartbeat stopped longer than the timeout: a
machine suspended, a network cut) learns it at its next beat and stops before it writes again
(:meth:`StudyLease.check`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna

from nas._io import mask_url
from nas.errors import ConfigError, NASError

__all__ = ["HEARTBEAT_S", "LEASE_TIMEOUT_S", "Holder", "StudyLease", "acquire_lease",
           "lease_holder"]

#: seconds between two heartbeats of a lease's holder
HEARTBEAT_S = 10.0
#: a holder on another machine whose latest heartbeat is older than this is taken for dead
LEASE_TIMEOUT_S = 60.0
#: the study system attribute naming the holder
LEASE_KEY = "nas:lease"
#: the prefix of the study system attribute holding a holder's latest heartbeat
BEAT_PREFIX = "nas:lease-beat:"
#: the class of the PostgreSQL advisory locks under which leases are taken (the second key
#: is the study's id)
_PG_LEASE_LOCK = 736201947

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (None where unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].decode(errors="replace").split()


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; None where not known)."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _pid_alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` runs (not a zombie) and is the one that started at
    ``started`` (not a later process given the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: the pid exists, that is all one can tell
    if fields[0] in ("Z", "X"):
        return False
    return started is None or len(fields) <= 19 or int(fields[19]) == started


@dataclass(frozen=True)
class Holder:
    """Who holds a study's lease."""

    token: str
    host: str
    pid: int
    since: str
    boot: str = ""
    started: int | None = None

    @classmethod
    def me(cls) -> Holder:
        return cls(token=secrets.token_hex(8), host=socket.gethostname(), pid=os.getpid(),
                   since=datetime.now(UTC).isoformat(timespec="seconds"), boot=_boot_id(),
                   started=_start_ticks(os.getpid()))

    @classmethod
    def from_attr(cls, value: Any) -> Holder | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(token=str(value["token"]), host=str(value["host"]),
                       pid=int(value["pid"]), since=str(value["since"]),
                       boot=str(value.get("boot") or ""),
                       started=None if value.get("started") is None else int(value["started"]))
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since}"

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot == _boot_id()

    def alive(self, beat: float | None, now: float | None = None) -> bool:
        """Whether this holder still drives its study (see the module's docstring)."""
        if self.on_this_machine():
            return _pid_alive(self.pid, self.started)
        now = time.time() if now is None else now
        return beat is not None and now - beat <= LEASE_TIMEOUT_S


def _study_id(storage: optuna.storages.BaseStorage, study: str) -> int:
    return storage.get_study_id_from_name(study)


def _read(storage: optuna.storages.BaseStorage, study_id: int
          ) -> tuple[Holder | None, float | None]:
    attrs = storage.get_study_system_attrs(study_id)
    holder = Holder.from_attr(attrs.get(LEASE_KEY))
    if holder is None:
        return None, None
    beat = attrs.get(BEAT_PREFIX + holder.token)
    return holder, float(beat) if isinstance(beat, int | float) else None


def lease_holder(storage: optuna.storages.BaseStorage, study: str) -> Holder | None:
    """The live holder of ``study``'s lease, or None (no lease, or its holder died)."""
    holder, beat = _read(storage, _study_id(storage, study))
    return holder if holder is not None and holder.alive(beat) else None


@contextlib.contextmanager
def _mutex(url: str, study_id: int) -> Iterator[None]:
    """The lock under which a lease is read and taken (see the module's docstring)."""
    if not _URL.match(url):
        path: str | None = url
    else:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "postgresql":
            with _pg_lock(url, study_id):
                yield
            return
        path = (str(parsed.database) if backend == "sqlite"
                and parsed.database not in (None, "", ":memory:") else None)
    if path is None:
        yield
        return
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(path + ".lease")
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _pg_lock(url: str, study_id: int) -> Iterator[None]:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:  # closing it (no pool) releases the lock
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_LEASE_LOCK}, {int(study_id)})")
            conn.commit()
            yield
    finally:
        engine.dispose()


def _refusal(study: str, url: str, holder: Holder) -> ConfigError:
    return ConfigError(
        f"study {study!r} in {mask_url(url)} is being run by another search ({holder.describe()});"
        " one search drives a study: wait for it to end or stop it (a search that died is "
        f"taken over by the next --resume: at once on its machine, from another once its "
        f"heartbeat is {LEASE_TIMEOUT_S:g} s old)")


class StudyLease:
    """A held lease: its heartbeat thread, :meth:`check` and :meth:`release`."""

    def __init__(self, storage: optuna.storages.BaseStorage, study: str, url: str,
                 study_id: int, holder: Holder) -> None:
        self.storage, self.study, self.url = storage, study, url
        self.study_id, self.holder = study_id, holder
        #: the driver that took the lease over, once the heartbeat saw it
        self.lost: Holder | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                        name=f"lease-{study}")
        self._thread.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder, _ = _read(self.storage, self.study_id)
                if holder is None or holder.token != self.holder.token:
                    self.lost = holder or self.holder
                    return
                self.storage.set_study_system_attr(
                    self.study_id, BEAT_PREFIX + self.holder.token, time.time())
            except Exception:  # a storage hiccup: the next beat tries again
                continue

    def check(self) -> None:
        """Raise when the lease was taken over by another driver: stop before writing.

        Raises:
            NASError: the lease is lost.
        """
        if self.lost is not None:
            raise NASError(f"study {self.study!r} in {mask_url(self.url)} was taken over by "
                           f"another search ({self.lost.describe()}) while this one's "
                           "heartbeat was stopped; this search stops")

    def release(self) -> None:
        """Stop the heartbeat and give the lease back (best effort: never raises)."""
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            with _mutex(self.url, self.study_id):
                holder, _ = _read(self.storage, self.study_id)
                if holder is not None and holder.token == self.holder.token:
                    self.storage.set_study_system_attr(self.study_id, LEASE_KEY, None)


def acquire_lease(storage: optuna.storages.BaseStorage, study: str, url: str) -> StudyLease:
    """Take the lease of ``study`` (in ``storage``, opened from ``url``) for this process,
    or refuse: the one call through which every driver of a study starts.

    Raises:
        ConfigError: another driver that lives holds it (one line naming the study and the
            holder: host, pid, since).
    """
    study_id = _study_id(storage, study)
    holder, beat = _read(storage, study_id)
    if holder is not None and holder.alive(beat):  # refused without waiting for the lock
        raise _refusal(study, url, holder)
    me = Holder.me()
    with _mutex(url, study_id):
        holder, beat = _read(storage, study_id)
        if holder is not None and holder.alive(beat):
            raise _refusal(study, url, holder)
        storage.set_study_system_attr(study_id, BEAT_PREFIX + me.token, time.time())
        storage.set_study_system_attr(study_id, LEASE_KEY, asdict(me))
    return StudyLease(storage, study, url, study_id, me)
