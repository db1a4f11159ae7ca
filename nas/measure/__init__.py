"""Measurement: latencies of subnets timed in ONNX Runtime on a device, into the database.

The timing protocol, ONNX Runtime sessions, one measurement per device and host at a time,
Ray placement, measurement kits for devices out of reach and the import of their results, the
noise floor, the scale of relative timings, and which subnets to time. It knows no latency
predictor: :mod:`nas.latency` fits those on what is measured here (and may hand one back, as
``priors``, for the ``informative`` choice of subnets).

Example:
    >>> from nas.measure import run_campaign
    >>> report = run_campaign("cpu-1t", "tiny", "sqlite:///latency.sqlite", n=50, noise=10)
    >>> report.measured, report.scale.ms, report.noise.p90
    >>> report.to_dict()  # what `nas latency measure --json` prints

:func:`run_campaign` is ``nas latency measure`` as one call: choose subnets the device has
not timed, time them into the database, and report (:class:`CampaignReport`).

Submodules are imported on first use of a name (ONNX Runtime and torch are slow to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.measure._campaign import CampaignReport, run_campaign
    from nas.measure._environment import environment_fingerprint
    from nas.measure._import import (
        EXPORT_COLUMNS,
        MAX_REPEAT_RATIO,
        ImportReport,
        PendingImport,
        export_measurements,
        import_measurements,
        import_results,
        measurements_fingerprint,
        read_import,
        store_import,
    )
    from nas.measure._kit import (
        KitReport,
        KitResults,
        check_kit_record,
        kit_profile,
        read_kit_results,
        write_kit,
    )
    from nas.measure._lock import device_lock, lock_dir_for
    from nas.measure._measure import (
        ANCHOR_SESSIONS,
        Exporter,
        measure_architectures,
        measure_on_devices,
        reference_anchor,
    )
    from nas.measure._metrics import METRIC_NAMES, regression_metrics
    from nas.measure._noise import NoiseFloor, noise_floor, noise_floor_from_db
    from nas.measure._placement import Timer, resolve_device
    from nas.measure._prepare import one_torch_thread, prepare_model, quantize_int8
    from nas.measure._sampling import (
        FEW_MEASUREMENTS,
        SELECT_METHODS,
        PriorPredictions,
        PriorSource,
        Selection,
        sample_for_measurement,
        select_for_measurement,
    )
    from nas.measure._scale import Scale, device_scale, on_scale
    from nas.measure._session import Reference, make_session, time_onnx
    from nas.measure._timing import (
        PROTOCOL_VERSION,
        TimingConfig,
        TimingError,
        TimingResult,
        time_session,
    )

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.measure._campaign": ["CampaignReport", "run_campaign"],
        "nas.measure._environment": ["environment_fingerprint"],
        "nas.measure._import": ["EXPORT_COLUMNS", "MAX_REPEAT_RATIO", "ImportReport",
                                "PendingImport", "export_measurements", "import_measurements",
                                "import_results", "measurements_fingerprint", "read_import",
                                "store_import"],
        "nas.measure._kit": ["KitReport", "KitResults", "check_kit_record", "kit_profile",
                             "read_kit_results", "write_kit"],
        "nas.measure._lock": ["device_lock", "lock_dir_for"],
        "nas.measure._measure": ["ANCHOR_SESSIONS", "Exporter", "measure_architectures",
                                 "measure_on_devices", "reference_anchor"],
        "nas.measure._metrics": ["METRIC_NAMES", "regression_metrics"],
        "nas.measure._noise": ["NoiseFloor", "noise_floor", "noise_floor_from_db"],
        "nas.measure._placement": ["Timer", "resolve_device"],
        "nas.measure._prepare": ["one_torch_thread", "prepare_model", "quantize_int8"],
        "nas.measure._sampling": ["FEW_MEASUREMENTS", "SELECT_METHODS", "PriorPredictions",
                                  "PriorSource", "Selection", "sample_for_measurement",
                                  "select_for_measurement"],
        "nas.measure._scale": ["Scale", "device_scale", "on_scale"],
        "nas.measure._session": ["Reference", "make_session", "time_onnx"],
        "nas.measure._timing": ["PROTOCOL_VERSION", "TimingConfig", "TimingError",
                                "TimingResult", "time_session"],
    },
)
