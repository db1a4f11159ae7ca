"""Latency: device profiles, measurement in ONNX Runtime, and per-device latency predictors.

Example:
    >>> from nas.db import LatencyDB
    >>> from nas.latency import fit_predictor, measure_architectures, sample_for_measurement
    >>> db = LatencyDB()
    >>> archs = sample_for_measurement("ofa_mbv3", 200, seed=0)
    >>> measure_architectures("cpu-1t", "ofa_mbv3", archs, db)
    >>> predictor, metrics = fit_predictor("cpu-1t", "ofa_mbv3", "additive", db=db)
    >>> predictor.predict(archs[:3])  # milliseconds

Submodules are imported on first use of a name (scikit-learn and ONNX Runtime are slow to
import), so ``nas devices ...`` does not pay for the predictors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.devices import DeviceProfile, add_device, get_device, list_devices
    from nas.latency._fit import TrainingData, fit_predictor, load_predictor, training_data
    from nas.latency._lut import build_lut
    from nas.latency._measure import (
        NoiseFloor,
        Timer,
        TimingConfig,
        TimingError,
        TimingResult,
        measure_architectures,
        measure_on_devices,
        noise_floor,
        noise_floor_from_db,
        quantize_int8,
        sample_for_measurement,
        time_onnx,
    )
    from nas.latency._metrics import regression_metrics
    from nas.latency._predictors import (
        PREDICTORS,
        AdditivePredictor,
        FlopsPredictor,
        GBDTPredictor,
        HybridPredictor,
        LatencyPredictor,
        LUTPredictor,
        make_predictor,
        predictor_from_state,
    )

_LAZY = {
    "DeviceProfile": "nas.devices",
    "add_device": "nas.devices",
    "get_device": "nas.devices",
    "list_devices": "nas.devices",
    "TrainingData": "nas.latency._fit",
    "fit_predictor": "nas.latency._fit",
    "load_predictor": "nas.latency._fit",
    "training_data": "nas.latency._fit",
    "build_lut": "nas.latency._lut",
    "NoiseFloor": "nas.latency._measure",
    "Timer": "nas.latency._measure",
    "TimingConfig": "nas.latency._measure",
    "TimingError": "nas.latency._measure",
    "TimingResult": "nas.latency._measure",
    "measure_architectures": "nas.latency._measure",
    "measure_on_devices": "nas.latency._measure",
    "noise_floor": "nas.latency._measure",
    "noise_floor_from_db": "nas.latency._measure",
    "quantize_int8": "nas.latency._measure",
    "sample_for_measurement": "nas.latency._measure",
    "time_onnx": "nas.latency._measure",
    "regression_metrics": "nas.latency._metrics",
    "PREDICTORS": "nas.latency._predictors",
    "AdditivePredictor": "nas.latency._predictors",
    "FlopsPredictor": "nas.latency._predictors",
    "GBDTPredictor": "nas.latency._predictors",
    "HybridPredictor": "nas.latency._predictors",
    "LatencyPredictor": "nas.latency._predictors",
    "LUTPredictor": "nas.latency._predictors",
    "make_predictor": "nas.latency._predictors",
    "predictor_from_state": "nas.latency._predictors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nas.latency' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "PREDICTORS",
    "AdditivePredictor",
    "DeviceProfile",
    "FlopsPredictor",
    "GBDTPredictor",
    "HybridPredictor",
    "LUTPredictor",
    "LatencyPredictor",
    "NoiseFloor",
    "Timer",
    "TimingConfig",
    "TimingError",
    "TimingResult",
    "TrainingData",
    "add_device",
    "build_lut",
    "fit_predictor",
    "get_device",
    "list_devices",
    "load_predictor",
    "make_predictor",
    "measure_architectures",
    "measure_on_devices",
    "noise_floor",
    "noise_floor_from_db",
    "predictor_from_state",
    "quantize_int8",
    "regression_metrics",
    "sample_for_measurement",
    "time_onnx",
    "training_data",
]
