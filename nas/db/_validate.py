"""Checks of every value before it is written: a bad value writes nothing.

Each failure is a :class:`~nas.errors.MeasurementError` naming the field, the value received
and what is allowed. The checked values come back as the rows the tables store (JSON payloads
as text).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from nas.db._records import MAX_LATENCY_MS, SOURCES, STATUSES
from nas.errors import MeasurementError, NASError
from nas.space import SPACES, Architecture, get_space

__all__ = [
    "check_dict",
    "check_measurement_ids",
    "check_name",
    "dumps",
    "validate_measurement",
    "validate_rows",
]

_ROW_KEYS = ("arch", "latency_ms", "p10", "p90", "n_runs", "status", "error", "source", "env")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any, field: str) -> str:
    """``obj`` as compact JSON text (numpy values, paths, sets and datetimes converted)."""
    try:
        return json.dumps(obj, default=_json_default, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MeasurementError(f"{field} must be JSON-serialisable: {exc}") from None


def check_dict(value: Any, field: str) -> dict[str, Any]:
    """``value`` as a dict, if it is a mapping."""
    if not isinstance(value, Mapping):
        raise MeasurementError(f"{field} must be a dict, got {type(value).__name__}")
    return dict(value)


def check_name(value: Any, field: str) -> str:
    """``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise MeasurementError(f"{field} must be a non-empty string, got {value!r}")
    return value


def check_measurement_ids(value: Any) -> list[int]:
    """``value`` as a list of ints (a list, tuple or iterator of integers)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | Iterator):
        raise MeasurementError(
            f"measurement_ids must be a list of ints, got {type(value).__name__}"
        )
    ids = list(value)
    for i, v in enumerate(ids):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise MeasurementError(f"measurement_ids[{i}] must be an int, got {v!r}")
    return [int(v) for v in ids]


def _check_latency(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MeasurementError(f"{field} must be a number of milliseconds, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v < MAX_LATENCY_MS):
        raise MeasurementError(
            f"{field} must be finite, > 0 and < {MAX_LATENCY_MS:g} ms, got {v!r}"
        )
    return v


def _check_percentiles(lat: float | None, lo: float | None, hi: float | None) -> None:
    tol = 1e-9
    if lo is not None and lat is not None and lo > lat * (1 + tol):
        raise MeasurementError(f"p10 must be <= latency_ms (the median), got p10={lo!r} > {lat!r}")
    if hi is not None and lat is not None and hi < lat * (1 - tol):
        raise MeasurementError(f"p90 must be >= latency_ms (the median), got p90={hi!r} < {lat!r}")
    if lo is not None and hi is not None and lo > hi * (1 + tol):
        raise MeasurementError(f"p10 must be <= p90, got p10={lo!r} > p90={hi!r}")


def _family_arch(arch: Any) -> bool:
    """An architecture of another family than ``ofa`` (a ``gpt`` one): it names a
    registered space whose family's architectures are of its type."""
    space = getattr(arch, "space", None)
    if not isinstance(space, str) or space not in SPACES:
        return False
    return type(get_space(space).largest()) is type(arch)


def validate_measurement(
    arch: Any,
    latency_ms: Any,
    p10: Any = None,
    p90: Any = None,
    n_runs: Any = 0,
    status: Any = "ok",
    error: Any = None,
    source: Any = "measured",
    env: Any = None,
) -> dict[str, Any]:
    """Check one measurement's values (the arguments of ``LatencyDB.add_measurement``).

    Returns:
        The row to store, without device: ``arch`` (canonical, parsed through its space),
        ``latency_ms``, ``p10``, ``p90`` (floats or None), ``n_runs``, ``status``, ``error``,
        ``source`` and ``env`` (JSON text).

    Raises:
        MeasurementError: naming the field and the value (e.g. a latency that is zero,
            negative, NaN, infinite or >= 1e6 ms, or p10 above the median).
    """
    if not isinstance(arch, Architecture) and not _family_arch(arch):
        raise MeasurementError(f"arch must be an Architecture, got {type(arch).__name__}")
    arch = get_space(arch.space).parse(arch)  # canonical and belonging to its space
    if status not in STATUSES:
        raise MeasurementError(f"status must be one of {list(STATUSES)}, got {status!r}")
    if source not in SOURCES:
        raise MeasurementError(f"source must be one of {list(SOURCES)}, got {source!r}")
    if status == "ok" and latency_ms is None:
        raise MeasurementError("latency_ms is required for a measurement with status 'ok'")
    lat = _check_latency(latency_ms, "latency_ms")
    lo = _check_latency(p10, "p10")
    hi = _check_latency(p90, "p90")
    _check_percentiles(lat, lo, hi)
    if isinstance(n_runs, bool) or not isinstance(n_runs, numbers.Integral) or n_runs < 0:
        raise MeasurementError(f"n_runs must be an integer >= 0, got {n_runs!r}")
    if error is not None and not isinstance(error, str):
        raise MeasurementError(f"error must be a string or None, got {type(error).__name__}")
    env_d = {} if env is None else check_dict(env, "env")
    return {
        "arch": arch,
        "latency_ms": lat,
        "p10": lo,
        "p90": hi,
        "n_runs": int(n_runs),
        "status": status,
        "error": error,
        "source": source,
        "env": dumps(env_d, "env"),
    }


def validate_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """:func:`validate_measurement` on each row; an error names the row's index."""
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
        raise MeasurementError(f"rows must be a list of dicts, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise MeasurementError(f"row {i}: must be a dict, got {type(row).__name__}")
        unknown = sorted(set(row) - set(_ROW_KEYS))
        if unknown:
            raise MeasurementError(
                f"row {i}: unknown key(s) {unknown}; allowed: {', '.join(_ROW_KEYS)}"
            )
        for key in ("arch", "latency_ms"):
            if key not in row:
                raise MeasurementError(f"row {i}: missing key {key!r}")
        try:
            out.append(validate_measurement(**row))
        except NASError as exc:
            raise type(exc)(f"row {i}: {exc}") from None
    return out
