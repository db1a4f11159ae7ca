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
    "imports",
    "kit_models",
    "kits",
    "measurements",
    "metadata",
    "migrate",
    "predictors",
    "schema_version",
]

#: The version of the tables below; a database with a larger one is refused.
#: 1: devices, architectures, measurements, predictors. 2: kits, kit_models, imports.
SCHEMA_VERSION = 2

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

#: A measurement kit as home recorded it when the kit was made (``nas latency kit``): its
#: results are checked against this record on import, not against the manifest that comes back.
kits = Table(
    "kits",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("space", String(128), nullable=False),
    # not a foreign key: a new (external) device is created when the kit's results come back
    Column("device", String(64), nullable=False),
    Column("profile", Text, nullable=False),  # DeviceProfile.to_dict() as JSON
    Column("runner_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Each model file of a recorded kit: its sha256 and the architecture it was exported from.
kit_models = Table(
    "kit_models",
    metadata,
    Column("kit_id", String(64), ForeignKey("kits.id"), primary_key=True),
    Column("file", String(255), primary_key=True),
    Column("role", String(16), nullable=False),  # "reference" | "model"
    Column("sha256", String(64), nullable=False),
    Column("hash", String(16), nullable=False),
    Column("arch", Text, nullable=False),  # Architecture.to_json()
)

#: Every import (a file of measurements, a kit's results): the same measurements, or the same
#: kit, come in once. ``fingerprint``: sha256 of the measurements (see nas.measure._import).
imports = Table(
    "imports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False),
    Column("kit_id", String(64), nullable=True),  # null for a plain file
    Column("device", String(64), ForeignKey("devices.name"), nullable=False),
    Column("space", String(128), nullable=False),
    Column("source_file", Text, nullable=False),
    Column("n_rows", Integer, nullable=False),
    Column("first_id", Integer, nullable=True),
    Column("last_id", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("fingerprint", name="uq_imports_fingerprint"),
    UniqueConstraint("kit_id", name="uq_imports_kit_id"),
)


def migrate(conn: Connection, version: int) -> None:
    """Bring tables of an older schema ``version`` up to :data:`SCHEMA_VERSION`."""
    if version == 1:
        return  # version 2 only adds tables, which the caller's create_all() makes
    raise DatabaseError(f"no migration from latency database schema version {version}")
