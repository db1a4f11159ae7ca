"""The predictors table: fitted latency predictors, the newest of a kind being current."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select

from nas.db import _schema as S
from nas.db._devices import DeviceTable
from nas.db._engine import inserted_id, now, utc
from nas.db._records import PredictorRecord
from nas.db._validate import check_dict, check_measurement_ids, check_name, dumps

__all__ = ["PredictorTable"]


class PredictorTable(DeviceTable):
    """Fitted predictors, stored as new records and never changed."""

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
        check_name(space, "space")
        check_name(kind, "kind")
        payload = {
            name: dumps(check_dict(value, name), name)
            for name, value in (("params", params), ("state", state), ("metrics", metrics))
        }
        payload["measurement_ids"] = dumps(check_measurement_ids(measurement_ids),
                                           "measurement_ids")
        with self._tx(f"saving a {kind!r} predictor for {device!r}", write=True) as conn:
            self._require_device(conn, device)
            result = conn.execute(
                insert(S.predictors).values(
                    device=device, space=space, kind=kind, created_at=now(), **payload
                )
            )
            return inserted_id(result)

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
                created_at=utc(r.created_at),
            )
            for r in rows
        ]
