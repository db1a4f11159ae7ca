"""Latency: measurement in ONNX Runtime, and per-device latency predictors.

Example:
    >>> from nas.db import LatencyDB
    >>> from nas.latency import fit_predictor, measure_architectures, sample_for_measurement
    >>> db = LatencyDB()
    >>> archs = sample_for_measurement("ofa_mbv3", 200, seed=0)
    >>> measure_architectures("cpu-1t", "ofa_mbv3", archs, db)
    >>> predictor, metrics = fit_predictor("cpu-1t", "ofa_mbv3", "additive", db=db)
    >>> predictor.predict(archs[:3])  # milliseconds

Submodules are imported on first use of a name (scikit-learn and ONNX Runtime are slow to
import). Device profiles live in :mod:`nas.devices`; their names are re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.devices import DeviceProfile, add_device, get_device, list_devices
    from nas.latency._agree import Agreement, check_agreement, held_out_subnets
    from nas.latency._environment import environment_fingerprint
    from nas.latency._fit import TrainingData, fit_predictor, load_predictor, training_data
    from nas.latency._import import import_results
    from nas.latency._kinds import (
        AdditivePredictor,
        FlopsPredictor,
        GBDTPredictor,
        HybridPredictor,
        LUTPredictor,
    )
    from nas.latency._kit import KitReport, KitResults, read_kit_results, write_kit
    from nas.latency._lock import device_lock
    from nas.latency._lut import build_lut
    from nas.latency._measure import (
        ANCHOR_SESSIONS,
        measure_architectures,
        measure_on_devices,
        reference_anchor,
    )
    from nas.latency._metrics import regression_metrics
    from nas.latency._noise import NoiseFloor, noise_floor, noise_floor_from_db
    from nas.latency._placement import Timer
    from nas.latency._predictors import (
        DEFAULT_KIND,
        PREDICTORS,
        LatencyPredictor,
        baseline_class,
        make_predictor,
        predictor_class,
        predictor_from_state,
    )
    from nas.latency._prepare import one_torch_thread, prepare_model, quantize_int8
    from nas.latency._sampling import (
        SELECT_METHODS,
        Selection,
        sample_for_measurement,
        select_for_measurement,
    )
    from nas.latency._scale import Scale, device_scale, on_scale
    from nas.latency._session import Reference, make_session, time_onnx
    from nas.latency._timing import (
        PROTOCOL_VERSION,
        TimingConfig,
        TimingError,
        TimingResult,
        time_session,
    )

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.devices": ["DeviceProfile", "add_device", "get_device", "list_devices"],
        "nas.latency._agree": ["Agreement", "check_agreement", "held_out_subnets"],
        "nas.latency._environment": ["environment_fingerprint"],
        "nas.latency._fit": ["TrainingData", "fit_predictor", "load_predictor",
                             "training_data"],
        "nas.latency._kinds": ["AdditivePredictor", "FlopsPredictor", "GBDTPredictor",
                               "HybridPredictor", "LUTPredictor"],
        "nas.latency._lock": ["device_lock"],
        "nas.latency._import": ["import_results"],
        "nas.latency._kit": ["KitReport", "KitResults", "read_kit_results", "write_kit"],
        "nas.latency._lut": ["build_lut"],
        "nas.latency._measure": ["ANCHOR_SESSIONS", "measure_architectures",
                                 "measure_on_devices", "reference_anchor"],
        "nas.latency._metrics": ["regression_metrics"],
        "nas.latency._noise": ["NoiseFloor", "noise_floor", "noise_floor_from_db"],
        "nas.latency._placement": ["Timer"],
        "nas.latency._predictors": ["DEFAULT_KIND", "PREDICTORS", "LatencyPredictor",
                                    "baseline_class", "make_predictor", "predictor_class",
                                    "predictor_from_state"],
        "nas.latency._prepare": ["one_torch_thread", "prepare_model", "quantize_int8"],
        "nas.latency._scale": ["Scale", "device_scale", "on_scale"],
        "nas.latency._sampling": ["SELECT_METHODS", "Selection", "sample_for_measurement",
                                  "select_for_measurement"],
        "nas.latency._session": ["Reference", "make_session", "time_onnx"],
        "nas.latency._timing": ["PROTOCOL_VERSION", "TimingConfig", "TimingError",
                                "TimingResult", "time_session"],
    },
)
