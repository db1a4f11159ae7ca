"""What the latency database returns: frozen records of measurements and predictors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nas.space import Architecture

__all__ = ["MAX_LATENCY_MS", "SOURCES", "STATUSES", "TIMED_SOURCES", "MeasurementRecord",
           "PredictorRecord"]

#: Allowed values of a measurement's ``status`` and ``source``.
STATUSES = ("ok", "failed")
SOURCES = ("measured", "imported", "kit", "noise", "reference", "check")
#: Sources whose latencies are a subnet's own timing on the device (what predictors fit on):
#: measured here, imported from elsewhere, or returned by a measurement kit.
TIMED_SOURCES = ("measured", "imported", "kit")
#: A latency at or above this (about 17 minutes per image) is a unit or timing bug.
MAX_LATENCY_MS = 1e6


@dataclass(frozen=True)
class MeasurementRecord:
    """One stored measurement (or import) of an architecture's latency on a device.

    Attributes:
        id: unique, increasing with insertion order.
        device: the device profile's name.
        space: the architecture's search space.
        arch: the architecture, re-parsed (and so validated) through its space.
        latency_ms: median latency; ``None`` when the measurement failed.
        p10: 10th percentile of the runs, if known.
        p90: 90th percentile of the runs, if known.
        n_runs: timed runs behind the statistics (0 when unknown, e.g. imported).
        status: ``"ok"`` or ``"failed"``.
        error: why it failed, or ``None``.
        source: ``"measured"``, ``"imported"``, ``"kit"`` (a measurement kit's results),
            ``"noise"`` (a repeat, for the noise floor), ``"reference"`` (the reference
            subnet's anchor sessions) or ``"check"`` (fresh timings a predictor is checked
            against, ``nas latency check``).
        env: fingerprint of where it was measured (CPU model, onnxruntime version, profile...).
        created_at: when it was stored (UTC).
    """

    id: int
    device: str
    space: str
    arch: Architecture
    latency_ms: float | None
    p10: float | None
    p90: float | None
    n_runs: int
    status: str
    error: str | None
    source: str
    env: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class PredictorRecord:
    """A fitted latency predictor as stored: enough to rebuild it without refitting.

    Attributes:
        id: unique, increasing with insertion order (the newest has the largest).
        device: the device profile's name.
        space: the search space it predicts for.
        kind: the predictor's registered kind (e.g. ``"lut"``, ``"ridge"``).
        params: its hyper-parameters (``get_params()``).
        state: its learned state (e.g. a lookup table, coefficients).
        metrics: its validation metrics.
        measurement_ids: the measurements it was fitted on.
        created_at: when it was stored (UTC).
    """

    id: int
    device: str
    space: str
    kind: str
    params: dict[str, Any]
    state: dict[str, Any]
    metrics: dict[str, Any]
    measurement_ids: list[int]
    created_at: datetime
