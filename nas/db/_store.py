"""``LatencyDB``: the store of devices, measured latencies and fitted latency predictors.

The class is assembled from one part per concern: the connection, transactions and schema
(:mod:`nas.db._engine`), then one part per table (:mod:`~nas.db._devices`,
:mod:`~nas.db._measurements`, :mod:`~nas.db._predictors`, the kits and imports of
:mod:`~nas.db._kits`); values are checked in
:mod:`nas.db._validate` before anything is written.
"""

from __future__ import annotations

from nas.db._kits import KitTable
from nas.db._predictors import PredictorTable

__all__ = ["LatencyDB"]


class LatencyDB(KitTable, PredictorTable):
    """The latency database: devices, architectures, measurements and fitted predictors.

    Any SQLAlchemy URL works; the default is a SQLite file (see :func:`resolve_db_url`).
    Tables are created when missing, and the schema version is checked at open: a database
    written by a newer ``nas`` is refused rather than misread.

    Contract (every backend):

    * **Append-only.** Measurements, predictors, recorded kits and imports are inserted,
      never updated or deleted through this API; a re-measurement is a new row, and "the
      current" predictor is the newest one. Returned records are frozen snapshots. Only a
      device row is updated in place (:meth:`ensure_device` refreshes its profile).
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
