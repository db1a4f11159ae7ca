"""Tables of the latency database (SQLAlchemy Core), and its schema version.

JSON payloads are stored as text, not as a JSON column type: the same bytes on SQLite and
PostgreSQL, no size limit on PostgreSQL's ``TEXT`` (a predictor's state can be a large lookup
table), and no dialect-specific JSON operators to depend on.

Bump :data:`SCHEMA_VERSION` with every change to these tables and teach :func:`migrate` how
to bring an older database up to it.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection

from nas.errors import DatabaseError

__all__ = [
    "SCHEMA_VERSION",
    "architectures",
    "devices",
    "measurements",
    "metadata",
    "migrate",
    "predictors",
    "schema_version",
]

#: The version of the tables below; a database with a larger one is refused.
SCHEMA_VERSION = 1

metadata = MetaData()

#: A single row: ``(id=1, version)``.
schema_version = Table(
    "schema_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("profile", Text, nullable=False),  # DeviceProfile.to_dict() as JSON
    Column("external", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

architectures = Table(
    "architectures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("space", String(128), nullable=False),
    Column("hash", String(16), nullable=False),
    Column("arch", Text, nullable=False),  # Architecture.to_json()
    UniqueConstraint("space", "hash", name="uq_architectures_space_hash"),
)

measurements = Table(
    "measurements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", String(64), ForeignKey("devices.name"), nullable=False),
    Column("arch_id", Integer, ForeignKey("architectures.id"), nullable=False),
    Column("latency_ms", Float, nullable=True),  # median; null for a failed measurement
    Column("p10", Float, nullable=True),
    Column("p90", Float, nullable=True),
    Column("n_runs", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),  # "ok" | "failed"
    Column("error", Text, nullable=True),
    Column("source", String(16), nullable=False),  # measured, imported, noise, reference
    Column("env", Text, nullable=False),  # JSON fingerprint of where it was measured
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_measurements_device_status", "device", "status"),
    Index("ix_measurements_arch", "arch_id"),
)

predictors = Table(
    "predictors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", String(64), ForeignKey("devices.name"), nullable=False),
    Column("space", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("params", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("measurement_ids", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_predictors_device_space_kind", "device", "space", "kind"),
)


def migrate(conn: Connection, version: int) -> None:
    """Bring tables of an older schema ``version`` up to :data:`SCHEMA_VERSION`."""
    # Version 1 is the first; later versions add their steps here, oldest first.
    raise DatabaseError(f"no migration from latency database schema version {version}")
