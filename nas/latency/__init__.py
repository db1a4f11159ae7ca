"""Latency prediction: per-device latency predictors fitted on measured subnets.

Predictor kinds (a registry, :data:`PREDICTORS`), their features and lookup tables, fitting
and loading them from the database, transfer from other devices, and the check of a stored
predictor against subnets timed now. Measuring is :mod:`nas.measure`'s (which never imports
this package); its names, and the device profiles of :mod:`nas.devices`, are re-exported here
so that ``from nas.latency import measure_architectures`` keeps working.

Example:
    >>> from nas.db import LatencyDB
    >>> from nas.latency import fit_predictor
    >>> from nas.measure import measure_architectures, sample_for_measurement
    >>> db = LatencyDB()
    >>> archs = sample_for_measurement("ofa_mbv3", 200, seed=0)
    >>> measure_architectures("cpu-1t", "ofa_mbv3", archs, db)
    >>> predictor, metrics = fit_predictor("cpu-1t", "ofa_mbv3", "additive", db=db)
    >>> predictor.predict(archs[:3])  # milliseconds

Submodules are imported on first use of a name (scikit-learn and ONNX Runtime are slow to
import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.devices import DeviceProfile, add_device, get_device, list_devices
    from nas.latency._agree import Agreement, check_agreement, held_out_subnets
    from nas.latency._fit import (
        TrainingData,
        fit_predictor,
        load_predictor,
        prior_predictions,
        training_data,
    )
    from nas.latency._kinds import (
        AdditivePredictor,
        FlopsPredictor,
        GBDTPredictor,
        HybridPredictor,
        LUTPredictor,
    )
    from nas.latency._lut import build_lut
    from nas.latency._predictors import (
        DEFAULT_KIND,
        PREDICTORS,
        LatencyPredictor,
        baseline_class,
        make_predictor,
        predictor_class,
        predictor_from_state,
    )
    from nas.measure import (
        ANCHOR_SESSIONS,
        PROTOCOL_VERSION,
        SELECT_METHODS,
        KitReport,
        KitResults,
        NoiseFloor,
        Reference,
        Scale,
        Selection,
        Timer,
        TimingConfig,
        TimingError,
        TimingResult,
        device_lock,
        device_scale,
        environment_fingerprint,
        import_results,
        make_session,
        measure_architectures,
        measure_on_devices,
        noise_floor,
        noise_floor_from_db,
        on_scale,
        one_torch_thread,
        prepare_model,
        quantize_int8,
        read_kit_results,
        reference_anchor,
        regression_metrics,
        sample_for_measurement,
        select_for_measurement,
        time_onnx,
        time_session,
        write_kit,
    )

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.devices": ["DeviceProfile", "add_device", "get_device", "list_devices"],
        "nas.latency._agree": ["Agreement", "check_agreement", "held_out_subnets"],
        "nas.latency._fit": ["TrainingData", "fit_predictor", "load_predictor",
                             "prior_predictions", "training_data"],
        "nas.latency._kinds": ["AdditivePredictor", "FlopsPredictor", "GBDTPredictor",
                               "HybridPredictor", "LUTPredictor"],
        "nas.latency._lut": ["build_lut"],
        "nas.latency._predictors": ["DEFAULT_KIND", "PREDICTORS", "LatencyPredictor",
                                    "baseline_class", "make_predictor", "predictor_class",
                                    "predictor_from_state"],
        # measurement, re-exported for users of the package before it was split; nas.measure
        # owns these names
        "nas.measure": ["ANCHOR_SESSIONS", "PROTOCOL_VERSION", "SELECT_METHODS", "KitReport",
                        "KitResults", "NoiseFloor", "Reference", "Scale", "Selection", "Timer",
                        "TimingConfig", "TimingError", "TimingResult", "device_lock",
                        "device_scale", "environment_fingerprint", "import_results",
                        "make_session", "measure_architectures", "measure_on_devices",
                        "noise_floor", "noise_floor_from_db", "on_scale", "one_torch_thread",
                        "prepare_model", "quantize_int8", "read_kit_results",
                        "reference_anchor", "regression_metrics", "sample_for_measurement",
                        "select_for_measurement", "time_onnx", "time_session", "write_kit"],
    },
)
