"""Kits and imports: what home recorded when a kit was made, and every import.

A measurement kit is recorded when it is made (:meth:`KitTable.record_kit`): its id, space,
device profile, runner and, for each model file, its sha256 and the architecture it was
exported from. Its results are checked against that record when they come back, not against
the manifest that travelled with them. Every import (a file of measurements or a kit's
results) is recorded with a fingerprint of its measurements in the same transaction as the
measurements themselves (:meth:`KitTable.add_import`), so the same measurements, or the same
kit, are stored once: a second import is refused, naming the first.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from nas.db import _schema as S
from nas.db._engine import RetryableError, dialect_insert, now, utc
from nas.db._measurements import MeasurementTable
from nas.db._validate import dumps
from nas.devices import DeviceProfile
from nas.errors import DatabaseError, DataError, MeasurementError
from nas.space import Architecture, get_space

__all__ = ["AlreadyImportedError", "ImportRecord", "KitModel", "KitRecord", "KitTable"]

#: tries of a write the server aborted to break a deadlock
_ATTEMPTS = 5
_ROLES = ("reference", "model")


@dataclass(frozen=True)
class KitModel:
    """One model file of a recorded kit.

    Attributes:
        file: its file name in the kit.
        role: ``"reference"`` (the space's reference subnet) or ``"model"``.
        sha256: the file's sha256, as written.
        arch: the architecture it was exported from.
    """

    file: str
    role: str
    sha256: str
    arch: Architecture


@dataclass(frozen=True)
class KitRecord:
    """A measurement kit as recorded when it was made.

    Attributes:
        kit_id: the kit's id.
        space: its search space.
        device: the device profile it times under.
        runner_sha256: sha256 of its ``run.py``.
        models: its model files, the reference first.
        created_at: when it was recorded (UTC); ``None`` before it is stored.
    """

    kit_id: str
    space: str
    device: DeviceProfile
    runner_sha256: str
    models: tuple[KitModel, ...]
    created_at: datetime | None = None

    def model(self, file: str) -> KitModel | None:
        """The model recorded under ``file``, or ``None``."""
        return next((m for m in self.models if m.file == file), None)


@dataclass(frozen=True)
class ImportRecord:
    """One import, as recorded with its measurements.

    Attributes:
        id: the import's id.
        fingerprint: sha256 of its measurements.
        kit_id: the kit its results came from, else ``None``.
        device: the device they were filed under.
        space: their search space.
        source_file: the name of the file imported.
        n_rows: measurements stored.
        first_id: id of the first measurement stored.
        last_id: id of the last.
        created_at: when (UTC).
    """

    id: int
    fingerprint: str
    kit_id: str | None
    device: str
    space: str
    source_file: str
    n_rows: int
    first_id: int | None
    last_id: int | None
    created_at: datetime

    def describe(self) -> str:
        """The import in a few words, for a message: when, from what, what was stored."""
        kit = f" of kit {self.kit_id}" if self.kit_id else ""
        ids = f", ids {self.first_id}..{self.last_id}" if self.first_id is not None else ""
        return (f"on {self.created_at:%Y-%m-%d %H:%M} UTC from {self.source_file}{kit} "
                f"({self.n_rows} measurement(s) of {self.space} on {self.device}{ids})")


class AlreadyImportedError(DataError):
    """These measurements (or this kit's results) are already in the database.

    Attributes:
        previous: the earlier import.
    """

    def __init__(self, message: str, previous: ImportRecord) -> None:
        super().__init__(message)
        self.previous = previous


def _check_text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MeasurementError(
            f"{field} must be a non-empty string of at most {limit} characters, got "
            f"{str(value)[:80]!r}")
    return value


def _import_record(r: Any) -> ImportRecord:
    return ImportRecord(
        id=int(r.id), fingerprint=r.fingerprint, kit_id=r.kit_id, device=r.device,
        space=r.space, source_file=r.source_file, n_rows=int(r.n_rows),
        first_id=None if r.first_id is None else int(r.first_id),
        last_id=None if r.last_id is None else int(r.last_id), created_at=utc(r.created_at))


class KitTable(MeasurementTable):
    """Recorded kits and imports: what came from elsewhere, and when."""

    # ------------------------------------------------------------------ kits
    def record_kit(self, kit: KitRecord) -> None:
        """Record a kit when it is made, with every model file (one transaction).

        Raises:
            MeasurementError: a bad field (an id, a role, a sha256, an architecture of
                another space, no models).
            DatabaseError: a kit of that id is already recorded, or the database cannot be
                written.
        """
        kit_id = _check_text(kit.kit_id, "kit_id", 64)
        space = _check_text(kit.space, "space", 128)
        if not kit.models:
            raise MeasurementError(f"kit {kit_id}: no models to record")
        rows = []
        for m in kit.models:
            if m.role not in _ROLES:
                raise MeasurementError(f"kit {kit_id}: model {m.file!r}: role must be one of "
                                       f"{list(_ROLES)}, got {m.role!r}")
            if m.arch.space != space:
                raise MeasurementError(f"kit {kit_id}: model {m.file!r}: architecture of space "
                                       f"{m.arch.space!r}, the kit's is {space!r}")
            rows.append({"kit_id": kit_id, "file": _check_text(m.file, "file", 255),
                         "role": m.role, "sha256": _check_text(m.sha256, "sha256", 64),
                         "hash": m.arch.hash, "arch": m.arch.to_json()})
        with self._tx(f"recording kit {kit_id}", write=True) as conn:
            if conn.execute(select(S.kits.c.id).where(S.kits.c.id == kit_id)).first():
                raise DatabaseError(f"kit {kit_id} is already recorded in {self.display_url}")
            conn.execute(insert(S.kits).values(
                id=kit_id, space=space, device=kit.device.name,
                profile=dumps(kit.device.to_dict(), "profile"),
                runner_sha256=_check_text(kit.runner_sha256, "runner_sha256", 64),
                created_at=now()))
            conn.execute(insert(S.kit_models), rows)

    def kit_record(self, kit_id: str) -> KitRecord | None:
        """The kit recorded under ``kit_id``, or ``None`` (made elsewhere, or before kits were
        recorded)."""
        with self._tx(f"reading kit {kit_id!r}", write=False) as conn:
            kit = conn.execute(select(S.kits).where(S.kits.c.id == kit_id)).first()
            if kit is None:
                return None
            models = list(conn.execute(
                select(S.kit_models).where(S.kit_models.c.kit_id == kit_id)))
        parse = get_space(kit.space).parse
        order = {"reference": 0, "model": 1}
        models.sort(key=lambda r: (order.get(r.role, 2), r.file))
        return KitRecord(
            kit_id=kit.id, space=kit.space,
            device=DeviceProfile.from_dict(json.loads(kit.profile)),
            runner_sha256=kit.runner_sha256,
            models=tuple(KitModel(r.file, r.role, r.sha256, parse(json.loads(r.arch)))
                         for r in models),
            created_at=utc(kit.created_at))

    # ------------------------------------------------------------------ imports
    def find_import(self, *, fingerprint: str | None = None,
                    kit_id: str | None = None) -> ImportRecord | None:
        """The earlier import of the same measurements (``fingerprint``) or of the same kit's
        results (``kit_id``), or ``None``."""
        with self._tx("reading imports", write=False) as conn:
            return self._find_import(conn, fingerprint, kit_id)

    def _find_import(self, conn: Connection, fingerprint: str | None,
                     kit_id: str | None) -> ImportRecord | None:
        t = S.imports
        for col, value in ((t.c.kit_id, kit_id), (t.c.fingerprint, fingerprint)):
            if value is not None:
                r = conn.execute(select(t).where(col == value)).first()
                if r is not None:
                    return _import_record(r)
        return None

    def imports(self) -> list[ImportRecord]:
        """Every import recorded, oldest first."""
        with self._tx("reading imports", write=False) as conn:
            return [_import_record(r)
                    for r in conn.execute(select(S.imports).order_by(S.imports.c.id))]

    def add_import(
        self, device: str, rows: list[dict[str, Any]], *, fingerprint: str, source_file: str,
        kit_id: str | None = None, ensure: DeviceProfile | None = None,
    ) -> list[int]:
        """Store rows checked by :func:`~nas.db.validate_measurement` and record the import,
        in one transaction: both, or (on any error) neither.

        Args:
            device: the device they go to.
            rows: the measurements.
            fingerprint: what makes two imports the same measurements (64 characters).
            source_file: the name of the file they came from.
            kit_id: the kit they came from; a kit is imported once.
            ensure: a profile to store (or refresh) first, in the same transaction.

        Returns:
            The new measurements' ids, in the order of ``rows``.

        Raises:
            AlreadyImportedError: the same measurements, or the same kit, were imported
                before (even by a concurrent import); nothing is written.
        """
        _check_text(fingerprint, "fingerprint", 64)
        if kit_id is not None:
            _check_text(kit_id, "kit_id", 64)
        if not rows:
            raise MeasurementError("an import needs at least one measurement")
        for attempt in range(_ATTEMPTS):
            try:
                with self._tx(f"importing measurements for {device!r}", write=True) as conn:
                    return self._import_in(conn, device, rows, fingerprint, source_file,
                                           kit_id, ensure)
            except RetryableError:
                # see MeasurementTable._insert_measurements: the server aborted a deadlock
                if attempt + 1 == _ATTEMPTS:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _import_in(self, conn: Connection, device: str, rows: list[dict[str, Any]],
                   fingerprint: str, source_file: str, kit_id: str | None,
                   ensure: DeviceProfile | None) -> list[int]:
        self._refuse_again(conn, fingerprint, kit_id)
        ids = self._insert_in(conn, device, rows, ensure)
        values = {"fingerprint": fingerprint, "kit_id": kit_id, "device": device,
                  "space": rows[0]["arch"].space, "source_file": source_file[:1000],
                  "n_rows": len(ids), "first_id": ids[0], "last_id": ids[-1],
                  "created_at": now()}
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            # A concurrent import of the same measurements waits for this one's unique key,
            # then does nothing: the check below refuses it instead of a driver's error.
            stmt = dialect_insert(dialect)(S.imports).values(**values).on_conflict_do_nothing()
            if conn.execute(stmt).rowcount == 0:
                self._refuse_again(conn, fingerprint, kit_id)
                raise DatabaseError("import refused by the database's unique keys")
        else:
            conn.execute(insert(S.imports).values(**values))
        return ids

    def _refuse_again(self, conn: Connection, fingerprint: str, kit_id: str | None) -> None:
        prev = self._find_import(conn, fingerprint, kit_id)
        if prev is None:
            return
        what = (f"the results of kit {kit_id} were" if kit_id is not None
                and prev.kit_id == kit_id else "these measurements were")
        raise AlreadyImportedError(
            f"{what} already imported {prev.describe()}; nothing imported", prev)
