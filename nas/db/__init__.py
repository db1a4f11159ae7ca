"""The latency database: devices, measured latencies and fitted latency predictors.

SQLite by default (``latency_db/latency.sqlite``, or ``$NAS_DB_URL``), any SQLAlchemy URL
otherwise (PostgreSQL for a shared team database). See :class:`LatencyDB` for the contract.
"""

from nas.db._kits import AlreadyImportedError, ImportRecord, KitModel, KitRecord
from nas.db._records import (
    MAX_LATENCY_MS,
    SOURCES,
    STATUSES,
    TIMED_SOURCES,
    MeasurementRecord,
    PredictorRecord,
)
from nas.db._schema import SCHEMA_VERSION
from nas.db._store import LatencyDB
from nas.db._url import default_db_url, resolve_db_url
from nas.db._validate import validate_measurement

__all__ = [
    "MAX_LATENCY_MS",
    "SCHEMA_VERSION",
    "SOURCES",
    "STATUSES",
    "TIMED_SOURCES",
    "AlreadyImportedError",
    "ImportRecord",
    "KitModel",
    "KitRecord",
    "LatencyDB",
    "MeasurementRecord",
    "PredictorRecord",
    "default_db_url",
    "resolve_db_url",
    "validate_measurement",
]
