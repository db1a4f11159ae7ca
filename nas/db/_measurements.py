"""The measurements table and the architectures it points to: append-only latencies."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from nas.db import _schema as S
from nas.db._devices import DeviceTable
from nas.db._engine import RetryableError, dialect_insert, inserted_id, now, utc
from nas.db._records import SOURCES, STATUSES, MeasurementRecord
from nas.db._validate import validate_measurement, validate_rows
from nas.devices import DeviceProfile
from nas.errors import MeasurementError
from nas.space import Architecture, get_space

#: tries of a write the server aborted to break a deadlock
_ATTEMPTS = 5

__all__ = ["MeasurementTable"]

_ID_CHUNK = 500  # bound on the IN (...) list sizes; SQLite allows a few thousand parameters


class MeasurementTable(DeviceTable):
    """Measured (or imported) latencies of architectures on devices, never changed."""

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
        row = validate_measurement(arch, latency_ms, p10, p90, n_runs, status, error, source, env)
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
        return self._insert_measurements(device, validate_rows(rows))

    def _insert_measurements(
        self,
        device: str,
        rows: list[dict[str, Any]],
        ensure: DeviceProfile | None = None,
    ) -> list[int]:
        """Insert rows checked by :func:`~nas.db.validate_measurement`, in one transaction.

        ``ensure``: a profile to store (or refresh) in the same transaction first.
        """
        if not rows:
            return []
        what = f"adding measurements for {device!r}"
        for attempt in range(_ATTEMPTS):
            try:
                with self._tx(what, write=True) as conn:
                    return self._insert_in(conn, device, rows, ensure)
            except RetryableError:
                # Concurrent imports for a new device can deadlock on PostgreSQL; the server
                # aborted this one, nothing of it is stored: run it again after a short pause.
                if attempt + 1 == _ATTEMPTS:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert_in(self, conn: Connection, device: str, rows: list[dict[str, Any]],
                   ensure: DeviceProfile | None) -> list[int]:
        stamp = now()
        if ensure is not None:
            self._upsert_device(conn, ensure)
        self._require_device(conn, device)
        ids = self._arch_ids(conn, [r["arch"] for r in rows])
        values = [
            {
                **{k: v for k, v in r.items() if k != "arch"},
                "device": device,
                "arch_id": ids[(r["arch"].space, r["arch"].hash)],
                "created_at": stamp,
            }
            for r in rows
        ]
        stmt = insert(S.measurements)
        if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
            result = conn.execute(
                stmt.returning(S.measurements.c.id, sort_by_parameter_order=True), values
            )
            return [int(r[0]) for r in result]
        return [inserted_id(conn.execute(stmt, v)) for v in values]

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
            ins = dialect_insert(dialect)(table).on_conflict_do_nothing(
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
        cache: dict[int, Architecture] = {}
        out = []
        for r in self._measurement_rows(device, space, status, source):
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
                    created_at=utc(r.created_at),
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
                "created_at": utc(r.created_at),
            }
            for r in self._measurement_rows(device, space, status, source)
        ]
