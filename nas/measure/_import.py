"""Import latencies measured elsewhere into the latency database, and export them.

Accepted input, one measurement per record:

* JSON lines (``.jsonl``/``.ndjson``): ``{"arch": {"ks": [...], "e": [...], "d": [...],
  "r": 224}, "latency_ms": 12.3}``, or the OFA fields ``ks, e, d, r`` at the top level;
* CSV (``.csv``): a column ``arch`` holding the architecture as JSON text, or the columns
  ``ks, e, d, r`` each as JSON (``[3,5,...]`` and ``224``), and a column ``latency_ms``;
* Parquet (``.parquet``, needs pandas and pyarrow): the columns of the CSV form.

Optional fields: ``p10, p90, n_runs, status`` (``ok``/``failed``), ``error`` and ``env`` (a
JSON object). Other fields are ignored, except ``device`` and ``space``: when present they
must agree with the import's, so that a file exported for several devices cannot be filed
under one. The files :func:`export_measurements` writes can be imported again.

The whole file is validated before anything is written, and written in one transaction: a bad
record fails the import with one message naming its line, the field and the value.

Two records of one subnet in one file are repeats: kept when their latencies are within a
factor :data:`MAX_REPEAT_RATIO` of each other (the noise of timing one subnet twice), refused
beyond it, naming both lines (1 ms and 50 ms for one subnet are two devices, two units or two
settings in one file, not noise). Every import is recorded in the database with a fingerprint
of its measurements (:func:`measurements_fingerprint`: the subnets and their values, whatever
the file's name, format or line order): importing the same measurements again is refused,
naming the first import, and nothing is stored twice.

A measurement kit's results (``nas latency kit``; the kit folder, or its ``results.jsonl``
with the kit's ``manifest.json`` beside it) are recognised by :func:`read_import` and checked
against the kit's manifest instead (:func:`nas.measure._kit.read_kit_results`): the device and
space come from the manifest, and results that are not the kit's are refused. Then, before
anything is stored, they are checked against the kit as the database recorded it when it was
made (:func:`nas.measure._kit.check_kit_record`), not against the manifest that came back
with them; a kit is imported once. A kit the database has no record of (made before kits were
recorded, or with another database) is refused, unless the caller trusts its manifest
(``trust_manifest``, ``--trust-manifest``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas._io import atomic_path, check_path, read_text
from nas.db import AlreadyImportedError, LatencyDB
from nas.db import validate_measurement as _validate_measurement
from nas.devices import DeviceProfile, add_device, check_device_name, get_device
from nas.errors import (
    ConfigError,
    DataError,
    MissingDependencyError,
    NASError,
    UnknownNameError,
)
from nas.space import get_space

__all__ = [
    "EXPORT_COLUMNS",
    "MAX_REPEAT_RATIO",
    "ImportReport",
    "PendingImport",
    "export_measurements",
    "import_measurements",
    "import_results",
    "measurements_fingerprint",
    "read_import",
    "store_import",
]

#: Columns of an exported file, in order.
EXPORT_COLUMNS = (
    "id",
    "device",
    "space",
    "hash",
    "arch",
    "latency_ms",
    "p10",
    "p90",
    "n_runs",
    "status",
    "error",
    "source",
    "env",
    "created_at",
)

#: Two latencies of one subnet in one file further apart than this factor are refused.
MAX_REPEAT_RATIO = 1.5

_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SUFFIXES = (*_JSONL_SUFFIXES, ".csv", ".parquet")
_PARQUET_HINT = "pip install pyarrow pandas"


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_measurements` stored.

    Attributes:
        device: the device the measurements were filed under.
        space: their search space.
        path: the imported file.
        n_rows: measurements stored.
        n_failed: of which with status ``"failed"``.
        measurement_ids: ids of the new measurements, in file order.
        device_created: the device was unknown and was created as an external profile.
        profile_path: the YAML profile written for a created device, else ``None``.
        kit_id: the measurement kit the results came from, else ``None``.
        missing: the kit's model files that had no result (kit imports only).
    """

    device: str
    space: str
    path: Path
    n_rows: int
    n_failed: int
    measurement_ids: tuple[int, ...]
    device_created: bool
    profile_path: Path | None
    kit_id: str | None = None
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the ids); a kit import adds ``kit_id`` and
        ``missing``."""
        kit = {} if self.kit_id is None else {"kit_id": self.kit_id,
                                               "missing": list(self.missing)}
        return {
            "device": self.device,
            "space": self.space,
            "path": str(self.path),
            "n_rows": self.n_rows,
            "n_failed": self.n_failed,
            "first_id": self.measurement_ids[0] if self.measurement_ids else None,
            "last_id": self.measurement_ids[-1] if self.measurement_ids else None,
            "device_created": self.device_created,
            "profile_path": None if self.profile_path is None else str(self.profile_path),
            **kit,
        }


# ---------------------------------------------------------------------------- reading
def _records(path: Path) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """``(where, record, values_are_text)`` for each record of the file."""
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(
            f"cannot import {path}: unknown format {path.suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(_SUFFIXES)}"
        )
    if not check_path(path, "import file", error=DataError).is_file():
        raise DataError(f"cannot import {path}: no such file")
    if suffix == ".parquet":
        yield from _parquet_records(path)
        return
    # newline="" as for a file opened so: the csv module sees the line endings as written
    fh = io.StringIO(read_text(path, "import file", error=DataError), newline="")
    if suffix in _JSONL_SUFFIXES:
        yield from _jsonl_records(path, fh)
        return
    try:
        yield from _csv_records(path, fh)
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None


def _jsonl_records(path: Path, lines: Iterable[str]
                   ) -> Iterator[tuple[str, dict[str, Any], bool]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = _loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {n}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        except ValueError as exc:
            raise DataError(f"{path}: line {n}: {exc}") from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}"
            )
        yield f"line {n}", obj, False


def _csv_records(path: Path, fh: io.StringIO) -> Iterator[tuple[str, dict[str, Any], bool]]:
    reader = csv.DictReader(fh)
    if not reader.fieldnames:
        raise DataError(f"{path}: empty file; expected a header line")
    for row in reader:
        if None in row:  # more cells than header names
            raise DataError(
                f"{path}: line {reader.line_num}: {len(row) - 1 + len(row[None])} "
                f"cells but the header has {len(reader.fieldnames)} columns"
            )
        yield f"line {reader.line_num}", row, True


def _parquet_records(path: Path) -> Iterator[tuple[str, dict[str, Any], bool]]:
    pd = _require_pandas("reading Parquet")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(f"cannot read {path} as Parquet: {exc}") from None
    df = df.astype(object).where(df.notna(), None)  # nulls (NaN, NaT, None) are missing
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        yield f"row {i}", rec, False


def _missing(v: Any, text: bool) -> bool:
    return v is None or (text and isinstance(v, str) and not v.strip())


def _loads(text: str) -> Any:
    """``json.loads``; a number of over 4300 digits or nesting too deep for the parser is a
    ``ValueError`` that says so (Python raises its own ``ValueError``/``RecursionError``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        raise ValueError(f"not valid JSON (a number of over {sys.get_int_max_str_digits()} "
                         "digits)") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deep)") from None


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_field(v: Any, field: str, text: bool) -> Any:
    if text or isinstance(v, str):
        try:
            return _loads(v)
        except ValueError:
            raise DataError(f"field {field!r} must be JSON, got {_shown(v)}") from None
    return v.tolist() if hasattr(v, "tolist") else v


def _number(v: Any, field: str, text: bool) -> float | None:
    if _missing(v, text):
        return None
    if text:
        try:
            out = float(v)
        except ValueError:
            raise DataError(f"field {field!r} must be a number, got {_shown(v)}") from None
    else:
        if isinstance(v, bool) or not isinstance(v, int | float):
            if hasattr(v, "item"):  # numpy scalar from Parquet
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise DataError(f"field {field!r} must be a number, got {_shown(v)}")
        try:
            out = float(v)
        except OverflowError:  # an int beyond float's range: refused as infinite
            out = math.inf
    return out  # NaN and infinity are refused by validate_measurement, naming the field


def _convert(
    rec: dict[str, Any], text: bool, device: str, space_name: str, source_file: str
) -> dict[str, Any]:
    """One record as the keyword arguments of ``add_measurement`` (values unvalidated)."""
    for key, expected in (("device", device), ("space", space_name)):
        got = rec.get(key)
        if not _missing(got, text) and str(got) != expected:
            raise DataError(
                f"field {key!r} is {_shown(got)} but this import is for {key} {expected!r}; "
                f"split the file or pass --{key} {_shown(str(got))}"
            )
    if not _missing(rec.get("arch"), text):
        arch_obj = _json_field(rec["arch"], "arch", text)
    else:
        absent = [k for k in ("ks", "e", "d", "r") if _missing(rec.get(k), text)]
        if absent:
            raise DataError(
                f"missing field 'arch' (or the OFA fields ks, e, d, r: {', '.join(absent)} absent)"
            )
        arch_obj = {k: _json_field(rec[k], k, text) for k in ("ks", "e", "d", "r")}
    if isinstance(arch_obj, dict):
        arch_obj = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in arch_obj.items()}
    if not isinstance(arch_obj, dict):
        raise DataError(f"field 'arch' must be a JSON object, got {_shown(arch_obj)}")
    arch = get_space(space_name).parse(arch_obj)

    if "latency_ms" not in rec:
        raise DataError("missing field 'latency_ms'")
    n_runs_f = _number(rec.get("n_runs"), "n_runs", text)
    if n_runs_f is None:
        n_runs: Any = 0
    elif math.isfinite(n_runs_f) and n_runs_f.is_integer():
        n_runs = int(n_runs_f)
    else:
        raise DataError(f"field 'n_runs' must be an integer >= 0, got {_shown(rec.get('n_runs'))}")
    status = "ok" if _missing(rec.get("status"), text) else rec["status"]
    error = None if _missing(rec.get("error"), text) else str(rec["error"])
    env: dict[str, Any] = {}
    if not _missing(rec.get("env"), text):
        env_obj = _json_field(rec["env"], "env", text)
        if not isinstance(env_obj, dict):
            raise DataError(f"field 'env' must be a JSON object, got {_shown(rec['env'])}")
        env.update(env_obj)
    env["imported_from"] = source_file
    return {
        "arch": arch,
        "latency_ms": _number(rec["latency_ms"], "latency_ms", text),
        "p10": _number(rec.get("p10"), "p10", text),
        "p90": _number(rec.get("p90"), "p90", text),
        "n_runs": n_runs,
        "status": status,
        "error": error,
        "source": "imported",
        "env": env,
    }


# ---------------------------------------------------------------------------- public API
def import_measurements(db: LatencyDB, device: str, space: str, path: Path | str) -> ImportReport:
    """Store the latencies in ``path`` as measurements of ``device``, all or nothing.

    A device unknown to the database is taken from its YAML profile; a device with no profile
    either is created as an external one (``external=True``: imported only, never measured
    from here), both as a YAML profile (:func:`add_device`) and in the database.

    Args:
        db: the latency database.
        device: the device the latencies were measured on.
        space: the architectures' search space.
        path: a ``.jsonl``, ``.csv`` or ``.parquet`` file (see the module docstring).

    Returns:
        What was stored.

    Raises:
        DataError: the file is unreadable, empty, or a record is bad (naming its line, the
            field and the value); nothing is written.
    """
    return store_measurements(db, device, space, path, read_measurements(device, space, path))


def read_measurements(device: str, space: str, path: Path | str) -> list[dict[str, Any]]:
    """Read and validate every record of ``path`` (nothing is written).

    Raises:
        DataError: as :func:`import_measurements`.
    """
    path = Path(path)
    check_device_name(device)
    get_space(space)  # an unknown space fails before the file is read
    rows = []
    first: dict[str, tuple[str, float, str, float]] = {}  # hash: (where, min, where, max)
    for where, rec, text in _records(path):
        try:
            kw = _convert(rec, text, device, space, path.name)
            row = _validate_measurement(**kw)
        except NASError as exc:
            raise DataError(f"{path}: {where}: {exc}") from None
        _check_repeat(first, row, where, path)
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no measurements found")
    return rows


def _check_repeat(seen: dict[str, tuple[str, float, str, float]], row: dict[str, Any],
                  where: str, path: Path) -> None:
    """Refuse a latency of a subnet further than :data:`MAX_REPEAT_RATIO` from another of the
    same subnet earlier in the file (``seen``: the lowest and highest so far)."""
    lat = row["latency_ms"]
    if lat is None:
        return  # a failure conflicts with nothing
    h = row["arch"].hash
    if h not in seen:
        seen[h] = (where, lat, where, lat)
        return
    lo_at, lo, hi_at, hi = seen[h]
    for other_at, other in ((lo_at, lo), (hi_at, hi)):
        if max(lat, other) > MAX_REPEAT_RATIO * min(lat, other):
            raise DataError(
                f"{path}: {other_at} and {where}: subnet {h} has latency_ms {other:g} and "
                f"{lat:g}, more than {MAX_REPEAT_RATIO:g}x apart (repeats of one subnet are "
                "kept within that; these look like two devices, units or settings in one "
                "file): split the file or drop one; nothing imported")
    seen[h] = (lo_at, lo, hi_at, hi) if lo <= lat <= hi else (
        (where, lat, hi_at, hi) if lat < lo else (lo_at, lo, where, lat))


def measurements_fingerprint(rows: list[dict[str, Any]]) -> str:
    """What makes two imports the same measurements: sha256 over each row's subnet, status,
    latency, percentiles, runs and error, in a canonical order (not the file's name, format,
    line order or environment)."""
    keys = sorted(
        json.dumps([r["arch"].space, r["arch"].hash, r["status"], r["latency_ms"], r["p10"],
                    r["p90"], r["n_runs"], r["error"]])
        for r in rows)
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def store_measurements(db: LatencyDB, device: str, space: str, path: Path | str,
                       rows: list[dict[str, Any]], *, profile: DeviceProfile | None = None,
                       kit_id: str | None = None) -> ImportReport:
    """Store rows :func:`read_measurements` returned and record the import, in one
    transaction.

    Args:
        profile: the settings of a device to create when it is unknown (a kit's device);
            created external. Default: an external profile with the default settings.
        kit_id: the kit the rows came from (a kit is imported once).

    Raises:
        AlreadyImportedError: the same measurements (or kit) were imported before, into
            ``db``; nothing is stored.
    """
    path = Path(path)
    fingerprint = measurements_fingerprint(rows)
    prev = db.find_import(fingerprint=fingerprint, kit_id=kit_id)
    if prev is not None:  # before a new device's profile is written
        _already(path, kit_id, prev)
    ensure: DeviceProfile | None = None
    created, profile_path = False, None
    if device not in db.devices():
        try:
            ensure = get_device(device)
        except UnknownNameError:
            base = {} if profile is None else profile.to_dict()
            base.update(
                name=device,
                external=True,
                description=base.get("description")
                or f"External device; latencies imported from {path.name}",
            )
            ensure = DeviceProfile.from_dict(base)
            profile_path = add_device(ensure)
            created = True
    try:
        ids = db.add_import(device, rows, fingerprint=fingerprint, source_file=path.name,
                            kit_id=kit_id, ensure=ensure)
    except AlreadyImportedError as exc:  # a concurrent import of the same came first
        _already(path, kit_id, exc.previous)
    return ImportReport(
        device=device,
        space=space,
        path=path,
        n_rows=len(ids),
        n_failed=sum(r["status"] == "failed" for r in rows),
        measurement_ids=tuple(ids),
        device_created=created,
        profile_path=profile_path,
    )


@dataclass(frozen=True)
class PendingImport:
    """Measurements read and validated by :func:`read_import`, not yet stored.

    Attributes:
        device: the device they go to.
        space: their search space.
        path: the file read.
        rows: validated measurement rows.
        profile: the device's settings, when known from a kit (used to create it).
        kit_id: the kit they came from, else ``None``.
        missing: a kit's model files without a result.
    """

    device: str
    space: str
    path: Path
    rows: list[dict[str, Any]]
    profile: DeviceProfile | None = None
    kit_id: str | None = None
    missing: tuple[str, ...] = ()


def read_import(path: Path | str, device: str | None = None, space: str | None = None, *,
                kit: Path | str | None = None) -> PendingImport:
    """Read and check everything ``nas latency import`` would store; nothing is written.

    A kit folder, or a kit's results file (its manifest beside it, or in ``kit``), is read
    as kit results (device and space from the manifest; when given they must match it); any
    other file as measurements of ``device`` and ``space``, which are then required.

    Raises:
        DataError: a bad file or record, results that are not the kit's (one line).
        ConfigError: ``device`` or ``space`` missing for a file that is not a kit's.
    """
    from nas.measure._kit import kit_files, read_kit_results

    if kit is not None or kit_files(path) is not None:
        res = read_kit_results(path, kit=kit, device=device, space=space)
        return PendingImport(res.device.name, res.space, res.results, res.rows,
                             profile=res.device, kit_id=res.kit_id, missing=res.missing)
    if device is None or space is None:
        absent = " and ".join(f"--{k}" for k, v in (("device", device), ("space", space))
                              if v is None)
        raise ConfigError(f"{absent} needed: {path} is not a latency kit's results, so it does "
                          "not say which device and space it was measured on")
    return PendingImport(device, space, Path(path), read_measurements(device, space, path))


def _already(path: Path, kit_id: str | None, prev: Any) -> None:
    what = (f"the results of kit {kit_id} were" if kit_id is not None and prev.kit_id == kit_id
            else "these measurements were")
    raise AlreadyImportedError(f"{path}: {what} already imported {prev.describe()}; nothing "
                               "imported", prev)


def _authenticate(db: LatencyDB, pending: PendingImport, kit_id: str, trust_manifest: bool
                  ) -> tuple[DeviceProfile | None, tuple[str, ...]]:
    """A kit's results against the database's record of the kit: the profile to create its
    device with and the kit's files without a result, both as recorded."""
    from nas.measure._kit import check_kit_record

    record = db.kit_record(kit_id)
    if record is not None:
        missing = check_kit_record(record, pending.rows, pending.device, pending.space,
                                   pending.path)
        return record.device, missing
    if not trust_manifest:
        raise DataError(
            f"{pending.path}: kit {kit_id} is not recorded in the latency database "
            f"{db.display_url}, so its manifest cannot be checked: import into the database "
            "the kit was made with (--db), or, for a kit made before nas recorded kits, pass "
            "--trust-manifest to check the results against the manifest that came back with "
            "them only; nothing imported")
    prev = db.find_import(kit_id=kit_id)
    if prev is not None:
        _already(pending.path, kit_id, prev)
    # a trusted manifest: once per kit also for kits imported before imports were recorded
    n = sum(1 for r in db.measurements(pending.device, pending.space, status=None)
            if isinstance(r.env.get("kit"), dict) and r.env["kit"].get("id") == kit_id)
    if n:
        raise DataError(f"{pending.path}: kit {kit_id} is already imported ({n} measurement(s) "
                        f"of {pending.space} on {pending.device}, from before imports were "
                        "recorded); nothing imported")
    return pending.profile, pending.missing


def store_import(db: LatencyDB, pending: PendingImport, *,
                 trust_manifest: bool = False) -> ImportReport:
    """Store what :func:`read_import` read, in one transaction, and record the import.

    A kit's results are first checked against the kit as ``db`` recorded it when it was made
    (:func:`~nas.measure._kit.check_kit_record`).

    Args:
        db: the latency database.
        pending: what :func:`read_import` read.
        trust_manifest: import the results of a kit ``db`` has no record of (made before
            kits were recorded), checked against the manifest that came back with them only.

    Raises:
        DataError: results that do not match the kit's record, a kit with no record (without
            ``trust_manifest``), or measurements (a kit's results) already in ``db``
            (:class:`~nas.db.AlreadyImportedError`, naming the first import); nothing is
            stored.
    """
    profile, missing = pending.profile, pending.missing
    if pending.kit_id is not None:
        profile, missing = _authenticate(db, pending, pending.kit_id, trust_manifest)
    report = store_measurements(db, pending.device, pending.space, pending.path, pending.rows,
                                profile=profile, kit_id=pending.kit_id)
    return dataclasses.replace(report, kit_id=pending.kit_id, missing=missing)


def import_results(db: LatencyDB, path: Path | str, device: str | None = None,
                   space: str | None = None, *, kit: Path | str | None = None,
                   trust_manifest: bool = False) -> ImportReport:
    """Import measurements or a kit's results (:func:`read_import`), all or nothing, once
    (:func:`store_import`)."""
    return store_import(db, read_import(path, device, space, kit=kit),
                        trust_manifest=trust_manifest)


def _require_pandas(what: str) -> Any:
    if importlib.util.find_spec("pandas") is None or importlib.util.find_spec("pyarrow") is None:
        raise MissingDependencyError(f"{what} needs pandas and pyarrow: {_PARQUET_HINT}")
    import pandas as pd

    return pd


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "created_at": r["created_at"].isoformat()})


def export_measurements(
    db: LatencyDB,
    path: Path | str,
    device: str | None = None,
    space: str | None = None,
) -> int:
    """Write measurements (all statuses and sources) to CSV or Parquet, chosen by suffix.

    Columns are :data:`EXPORT_COLUMNS`; ``arch`` and ``env`` are JSON text, ``created_at`` is
    UTC. The file is replaced atomically.

    Args:
        db: the latency database.
        path: a ``.csv`` or ``.parquet`` file.
        device: only this device's measurements.
        space: only this search space's.

    Returns:
        The number of measurements written.

    Raises:
        DataError: unknown suffix or an unwritable path.
        MissingDependencyError: Parquet without pandas/pyarrow.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise DataError(
            f"cannot export to {path}: unknown format {path.suffix or '(no suffix)'!r}; "
            f"expected .csv or .parquet"
        )
    pd = _require_pandas("exporting to Parquet") if suffix == ".parquet" else None
    rows = db.measurement_rows(device, space)
    for r in rows:
        r["env"] = json.dumps(r["env"], sort_keys=True, separators=(",", ":"))
    try:
        with atomic_path(path) as tmp:
            if pd is None:
                _write_csv(tmp, rows)
            else:
                df = pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))
                for col in ("latency_ms", "p10", "p90"):
                    df[col] = df[col].astype("float64")
                df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
                df.to_parquet(tmp, index=False)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None
    return len(rows)
