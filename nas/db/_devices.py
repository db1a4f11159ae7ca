"""The devices table: each device's profile, stored once and refreshed in place."""

from __future__ import annotations

import json

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from nas.db import _schema as S
from nas.db._engine import Database, dialect_insert, now
from nas.db._validate import dumps
from nas.devices import DeviceProfile
from nas.errors import MeasurementError, UnknownNameError

__all__ = ["DeviceTable"]


class DeviceTable(Database):
    """Devices of the latency database (the key of every measurement and predictor)."""

    def ensure_device(self, profile: DeviceProfile) -> None:
        """Insert the device's row, or refresh its stored profile if it exists."""
        if not isinstance(profile, DeviceProfile):
            raise MeasurementError(
                f"profile must be a DeviceProfile, got {type(profile).__name__}"
            )
        with self._tx(f"saving device {profile.name!r}", write=True) as conn:
            self._upsert_device(conn, profile)

    def _upsert_device(self, conn: Connection, profile: DeviceProfile) -> None:
        stamp = now()
        values = {"profile": dumps(profile.to_dict(), "profile"), "external": profile.external}
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            ins = dialect_insert(dialect)(S.devices).values(
                name=profile.name, created_at=stamp, updated_at=stamp, **values
            )
            ins = ins.on_conflict_do_update(
                index_elements=[S.devices.c.name], set_={**values, "updated_at": stamp}
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
                .values(**values, updated_at=stamp)
            )
        else:
            conn.execute(
                insert(S.devices).values(
                    name=profile.name, created_at=stamp, updated_at=stamp, **values
                )
            )

    def devices(self) -> list[str]:
        """Names of the devices in the database, sorted."""
        with self._tx("listing devices", write=False) as conn:
            return sorted(r[0] for r in conn.execute(select(S.devices.c.name)))

    def device_profile(self, name: str) -> DeviceProfile | None:
        """The profile stored with device ``name``, or ``None`` if it is not in the database."""
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
