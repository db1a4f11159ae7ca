"""Latency measurement in ONNX Runtime: the timing protocol, int8 quantization, storage.

The protocol (``PROTOCOL_VERSION``, recorded with every measurement):

1. Session options come from the device profile and are all set explicitly, never left to
   ORT's defaults (which change between releases and depend on the machine): intra- and
   inter-op thread counts, ``session.intra_op.allow_spinning`` (and the inter-op one), the
   graph optimisation level and sequential execution.
2. One fixed random input of the profile's batch size. Python's garbage collector is off while
   timing, so a collection cannot land inside a run; each run is timed with
   ``time.perf_counter_ns`` around ``InferenceSession.run``, the call an application makes.
3. Warm-up: at least ``warmup_runs`` runs and ``warmup_s`` seconds, so the memory arena, the
   thread pool and the caches reach their steady state before anything is recorded.
4. Runs are recorded in rounds until the median is known to ``target_rel_ci``: the
   distribution-free 95% confidence interval of the median from order statistics (the ranks
   ``n/2 -+ 1.96 sqrt(n)/2``), whose half-width relative to the median must fall below the
   target (0.5% by default). It needs no assumption about the run-time distribution, which is
   skewed with a long right tail (preemption, interrupts), and costs one sort. ``min_runs``,
   ``max_runs`` and ``max_s`` bound the effort; a measurement that stops on a cap is kept and
   flagged (``converged: false`` in its environment record).
5. A measurement whose spread says another process took the core for part of it
   (``p90 / p10`` above ``max_spread`` by more than scheduler-slice jitter) is repeated in a
   fresh session after a pause, up to ``retries`` times, keeping the least disturbed one; the
   spreads of all attempts are recorded.
6. The median is stored as the latency (robust to the tail), with p10, p90, the number of runs
   and an environment fingerprint: CPU model, core count and affinity, load average, library
   versions, the profile and the protocol settings.
7. Relative timing (``TimingConfig.reference``, on by default): a shared machine's speed
   drifts by several percent over minutes (CPU frequency, neighbours on the host), far more
   than the median's own uncertainty, so two measurements of one subnet taken ten minutes
   apart differ by about 6% here (experiments/RESULTS.md, "Latency predictors"). Each subnet
   is therefore timed in alternating blocks of ``round_runs`` runs with a fixed *reference
   subnet* of the space (the first ``block_warmup`` runs of each block unrecorded)
   (every dimension at its middle choice) in the same process, and what is stored is
   ``median(subnet) / median(reference) * anchor``: the ratio cancels whatever slowed both,
   and the *anchor*, the reference's own latency measured once per (device, space, database)
   in several fresh sessions (stored with source ``"reference"``), turns it back into
   milliseconds on one scale for every measurement, whenever it was made. The raw median,
   the reference's median in the same window and the ratio are kept in the environment
   record. Lookup-table block timings stay absolute.

Subnets are exported with one torch thread: OpenMP workers left spinning after a parallel
export would otherwise compete with the timing that follows.

Only one measurement runs at a time per physical device: locally a file lock under the
database's folder (all local CPU profiles share the host's lock, since they share its cores);
under Ray a custom resource (the profile's ``ray_resource``, which a node advertises with
capacity 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.devices import DeviceProfile, get_device
from nas.errors import ConfigError, NASError
from nas.space import Architecture, SearchSpace, get_space

if TYPE_CHECKING:
    import onnxruntime as ort

    from nas.db import LatencyDB
    from nas.supernet import OFASupernet

__all__ = [
    "ANCHOR_SESSIONS",
    "PROTOCOL_VERSION",
    "NoiseFloor",
    "Reference",
    "Timer",
    "TimingConfig",
    "TimingError",
    "TimingResult",
    "device_lock",
    "environment_fingerprint",
    "make_session",
    "measure_architectures",
    "measure_on_devices",
    "noise_floor",
    "noise_floor_from_db",
    "prepare_model",
    "quantize_int8",
    "reference_anchor",
    "sample_for_measurement",
    "time_onnx",
    "time_session",
]

PROTOCOL_VERSION = 3
#: Fresh sessions that time the reference subnet to fix its anchor latency.
ANCHOR_SESSIONS = 5
_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class TimingError(NASError):
    """Timing a model failed (session creation, quantization or a run)."""


@dataclass(frozen=True)
class TimingConfig:
    """Effort and precision of one latency measurement (see the module docstring).

    Attributes:
        warmup_runs: runs before recording, at least.
        warmup_s: seconds of warm-up, at least.
        min_runs: recorded runs before the stopping rule is checked.
        max_runs: recorded runs at most.
        max_s: seconds of recorded runs at most (checked between rounds).
        target_rel_ci: stop when the 95% CI half-width of the median, relative to it, is
            below this.
        round_runs: runs between two checks of the stopping rule.
        seed: seed of the random input.
        max_spread: a measurement whose ``p90 / p10`` exceeds this, and whose ``p90 - p10``
            exceeds ``min_disturbance_ms``, was disturbed (another process took the core for
            part of it; scheduler time slices are milliseconds, so sub-millisecond jitter of
            tiny models does not count): it is repeated in a fresh session after
            ``retry_sleep_s``, up to ``retries`` times, and the least spread one is kept.
        min_disturbance_ms: see ``max_spread``.
        retries: repeats of a disturbed measurement.
        retry_sleep_s: pause before a repeat.
        reference: time each subnet interleaved with the space's reference subnet and store
            its latency relative to it (protocol step 7); measurements with and without it
            are on the same scale only up to the machine's drift.
        block_warmup: with a reference, runs at the start of each block that are not
            recorded (the caches still hold the other model's data): without them the
            smallest OFA subnets came out 10% slower relative to the reference than timed
            alone, with 2 within 2% (experiments/RESULTS.md).
        sessions: fresh session pairs (subnet and reference) a measurement is made in; the
            result is the median over them (the mean of two). Two measurements of one subnet
            in fresh sessions differ by more than the runs within a session say (a session's
            memory placement, the machine between sessions), so more runs in one session do
            not buy what a second session does.
    """

    warmup_runs: int = 5
    warmup_s: float = 0.1
    min_runs: int = 20
    max_runs: int = 400
    max_s: float = 3.0
    target_rel_ci: float = 0.005
    round_runs: int = 10
    seed: int = 0
    max_spread: float = 1.3
    min_disturbance_ms: float = 0.05
    retries: int = 2
    retry_sleep_s: float = 1.0
    reference: bool = True
    block_warmup: int = 2
    sessions: int = 1

    def __post_init__(self) -> None:
        for name in ("warmup_runs", "min_runs", "max_runs", "round_runs", "retries",
                     "block_warmup", "sessions"):
            value = getattr(self, name)
            low = 0 if name in ("warmup_runs", "retries", "block_warmup") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(
                    f"TimingConfig.{name} must be an int >= {low}, got {value!r}"
                )
        if not self.max_spread > 1:
            raise ConfigError(f"TimingConfig.max_spread must be > 1, got {self.max_spread!r}")
        if self.max_runs < self.min_runs:
            raise ConfigError(
                f"TimingConfig.max_runs must be >= min_runs ({self.min_runs}), got "
                f"{self.max_runs}"
            )
        if not self.target_rel_ci > 0:
            raise ConfigError(
                f"TimingConfig.target_rel_ci must be > 0, got {self.target_rel_ci!r}"
            )
        if self.max_s <= 0 or self.warmup_s < 0:
            raise ConfigError(
                f"TimingConfig.max_s must be > 0 and warmup_s >= 0, got {self.max_s!r} and "
                f"{self.warmup_s!r}"
            )

    @classmethod
    def quick(cls) -> TimingConfig:
        """A cheap setting for tests and smoke runs (about 2% precision)."""
        return cls(warmup_runs=2, warmup_s=0.0, min_runs=5, max_runs=40, max_s=0.3,
                   target_rel_ci=0.02, round_runs=5, retries=0, reference=False)


@dataclass(frozen=True)
class TimingResult:
    """One latency measurement, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    n_runs: int
    rel_ci: float
    converged: bool
    seconds: float
    env: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_fingerprint(
    profile: DeviceProfile, config: TimingConfig | None = None
) -> dict[str, Any]:
    """What a latency depends on besides the model: hardware, software, settings."""
    import onnxruntime as ort

    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = []
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {
        "protocol": PROTOCOL_VERSION,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "loadavg": load,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "profile": dataclasses.asdict(profile),
        "threads": {"intra_op": profile.intra_op_threads, "inter_op": profile.inter_op_threads,
                    "allow_spinning": profile.allow_spinning},
        "timing": dataclasses.asdict(config or TimingConfig()),
    }


# ---------------------------------------------------------------------- sessions & timing
def make_session(model: bytes, profile: DeviceProfile) -> ort.InferenceSession:
    """An ``InferenceSession`` with every option the profile fixes set explicitly."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(profile.intra_op_threads)
    opts.inter_op_num_threads = int(profile.inter_op_threads)
    if profile.graph_optimization not in _GRAPH_OPT:
        raise ConfigError(
            f"graph_optimization must be one of {sorted(_GRAPH_OPT)}, got "
            f"{profile.graph_optimization!r} (device {profile.name})"
        )
    opts.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _GRAPH_OPT[profile.graph_optimization]
    )
    if profile.execution_mode not in ("sequential", "parallel"):
        raise ConfigError(
            f"execution_mode must be 'sequential' or 'parallel', got "
            f"{profile.execution_mode!r} (device {profile.name})"
        )
    opts.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL
                           if profile.execution_mode == "sequential"
                           else ort.ExecutionMode.ORT_PARALLEL)
    spin = "1" if profile.allow_spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.log_severity_level = 3
    available = ort.get_available_providers()
    if profile.provider not in available:
        raise TimingError(
            f"execution provider {profile.provider!r} of device {profile.name} is not "
            f"available here; available: {available}"
        )
    try:
        return ort.InferenceSession(model, opts, providers=[profile.provider])
    except Exception as exc:  # ORT raises its own exception types
        raise TimingError(f"cannot create an ORT session: {exc}") from exc


def _median_rel_ci(sorted_ms: np.ndarray) -> float:
    """Relative half-width of the distribution-free 95% CI of the median."""
    n = len(sorted_ms)
    half = 1.96 * np.sqrt(n) / 2
    lo = max(int(np.floor(n / 2 - half)) - 1, 0)  # ranks are 1-based
    hi = min(int(np.ceil(n / 2 + half)) - 1, n - 1)
    med = float(np.median(sorted_ms))
    return float((sorted_ms[hi] - sorted_ms[lo]) / 2 / med) if med > 0 else float("inf")


def _time_runs(runs: Sequence[Callable[[], Any]], cfg: TimingConfig
               ) -> tuple[list[np.ndarray], float]:
    """Warm up, then record ``runs`` in alternating blocks of ``cfg.round_runs`` runs each
    until every median is known to ``cfg.target_rel_ci`` (or a cap). Returns each callable's
    times in ms and the seconds.

    Blocks, not single runs: alternating run by run makes each run start with the other
    model's data in the caches (about 12% slower here), which is not how a deployed model
    runs; within a block a model runs back to back as it would alone, and a block pair
    (tens to hundreds of milliseconds) is still far shorter than the machine's drift."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t_start = time.perf_counter()
        n_warm = 0
        while n_warm < cfg.warmup_runs or time.perf_counter() - t_start < cfg.warmup_s:
            for run in runs:
                run()
            n_warm += 1
            if n_warm >= 50 * max(cfg.warmup_runs, 1):
                break
        times: list[list[int]] = [[] for _ in runs]
        t0 = time.perf_counter()
        clock = time.perf_counter_ns
        while True:
            for run, out in zip(runs, times, strict=True):
                for _ in range(cfg.block_warmup if len(runs) > 1 else 0):
                    run()  # the other model's data leaves the caches
                for _ in range(cfg.round_runs):
                    a = clock()
                    run()
                    out.append(clock() - a)
            n = len(times[0])
            if n >= cfg.min_runs and all(
                _median_rel_ci(np.sort(np.asarray(t, dtype=np.float64))) <= cfg.target_rel_ci
                for t in times
            ):
                break
            if n >= cfg.max_runs or time.perf_counter() - t0 >= cfg.max_s:
                break
        elapsed = time.perf_counter() - t_start
    finally:
        if gc_was_enabled:
            gc.enable()
    return [np.asarray(t, dtype=np.float64) / 1e6 for t in times], elapsed


def _result(arr: np.ndarray, cfg: TimingConfig, seconds: float) -> TimingResult:
    rel_ci = _median_rel_ci(np.sort(arr)) if len(arr) >= 2 else float("inf")
    p10, med, p90 = np.percentile(arr, [10, 50, 90])
    return TimingResult(float(med), float(p10), float(p90), len(arr), float(rel_ci),
                        rel_ci <= cfg.target_rel_ci, float(seconds))


def time_session(
    run: Callable[[], Any], config: TimingConfig | None = None
) -> TimingResult:
    """Time ``run()`` with the protocol: warm-up, then rounds until the median is stable."""
    cfg = config or TimingConfig()
    (arr,), elapsed = _time_runs([run], cfg)
    return _result(arr, cfg, elapsed)


@dataclass(frozen=True)
class Reference:
    """The reference subnet a measurement is timed against (protocol step 7).

    Attributes:
        model: its ONNX model, prepared for the device (quantized for int8 profiles).
        resolution: its input side.
        anchor_ms: its latency on the device, from fresh sessions (the scale of the results).
        arch_hash: its architecture hash, recorded with each measurement.
    """

    model: bytes
    resolution: int
    anchor_ms: float
    arch_hash: str = ""


def _disturbed(res: TimingResult, cfg: TimingConfig) -> bool:
    return (res.p90_ms > cfg.max_spread * res.p10_ms
            and res.p90_ms - res.p10_ms > cfg.min_disturbance_ms)


def _input(profile: DeviceProfile, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(
        (profile.batch_size, *shape)).astype(np.float32)


def _runner(model: bytes, profile: DeviceProfile, x: np.ndarray) -> Callable[[], Any]:
    sess = make_session(model, profile)
    feed = {sess.get_inputs()[0].name: x}
    outputs = [o.name for o in sess.get_outputs()]

    def run() -> Any:
        return sess.run(outputs, feed)

    return run


def time_onnx(
    model: bytes, profile: DeviceProfile, resolution: int,
    config: TimingConfig | None = None, input_shape: tuple[int, ...] | None = None,
    reference: Reference | None = None,
) -> TimingResult:
    """Time an ONNX model (already quantized for int8 profiles) on ``profile``.

    Creates fresh sessions (``config.sessions`` of them, each with its own reference
    session), so repeated calls measure independent sessions (what the noise floor needs).

    Args:
        model: the serialised ONNX model, with one float32 input.
        profile: the device profile that fixes the session options and batch size.
        resolution: side of the input image, for ``(batch, 3, r, r)``.
        config: the protocol's settings.
        input_shape: the input's shape without the batch dimension, instead of
            ``(3, r, r)`` (single blocks for lookup tables).
        reference: time the model alternately with this reference and scale the result to
            the reference's anchor (protocol step 7); p10 and p90 are scaled alike.
    """
    cfg = config or TimingConfig()
    if cfg.sessions == 1:
        return _time_onnx_session(model, profile, resolution, cfg, input_shape, reference)
    t_start = time.perf_counter()
    parts = [_time_onnx_session(model, profile, resolution, cfg, input_shape, reference)
             for _ in range(cfg.sessions)]
    return _combine_sessions(parts, time.perf_counter() - t_start)


def _combine_sessions(parts: list[TimingResult], total_s: float) -> TimingResult:
    """One result from measurements of one model in several fresh sessions: medians of the
    statistics (the mean of two), runs and seconds summed, the spread of the medians and of
    the ratios (with a reference) kept in the environment."""
    def med(values: Iterable[float]) -> float:
        return float(np.median(np.fromiter(values, dtype=np.float64)))

    median_ms = med(r.median_ms for r in parts)
    env = dict(parts[0].env)
    env.update(
        sessions=[round(r.median_ms, 6) for r in parts],
        rel_ci=round(med(r.rel_ci for r in parts) / np.sqrt(len(parts)), 6),
        seconds=round(sum(r.seconds for r in parts), 3), total_s=round(total_s, 3),
        spreads=[s for r in parts for s in r.env.get("spreads", [])],
        disturbed=any(r.env.get("disturbed", False) for r in parts),
        converged=all(r.converged for r in parts),
    )
    refs = [r.env["reference"] for r in parts if "reference" in r.env]
    if len(refs) == len(parts) and refs:
        env["reference"] = {
            **refs[0],
            "raw_median_ms": round(med(x["raw_median_ms"] for x in refs), 6),
            "reference_median_ms": round(med(x["reference_median_ms"] for x in refs), 6),
            "ratio": round(med(x["ratio"] for x in refs), 6),
            "ratios": [x["ratio"] for x in refs],
            "reference_rel_ci": round(med(x["reference_rel_ci"] for x in refs), 6),
        }
    return TimingResult(
        median_ms, med(r.p10_ms for r in parts), med(r.p90_ms for r in parts),
        sum(r.n_runs for r in parts), env["rel_ci"], env["converged"], env["seconds"], env)


def _time_onnx_session(
    model: bytes, profile: DeviceProfile, resolution: int, cfg: TimingConfig,
    input_shape: tuple[int, ...] | None, reference: Reference | None,
) -> TimingResult:
    """``time_onnx`` in one fresh session (pair, with a reference)."""
    shape = tuple(input_shape) if input_shape is not None else (3, resolution, resolution)
    x = _input(profile, shape, cfg.seed)
    x_ref = (_input(profile, (3, reference.resolution, reference.resolution), cfg.seed + 1)
             if reference is not None else None)
    best: TimingResult | None = None
    best_ref: TimingResult | None = None
    spreads = []
    t_start = time.perf_counter()
    for attempt in range(cfg.retries + 1):
        if attempt:
            time.sleep(cfg.retry_sleep_s)
        runs = [_runner(model, profile, x)]
        if reference is not None:
            runs.append(_runner(reference.model, profile, x_ref))  # type: ignore[arg-type]
        try:
            arrays, elapsed = _time_runs(runs, cfg)
        except Exception as exc:
            raise TimingError(f"ORT run failed: {type(exc).__name__}: {exc}") from exc
        res = _result(arrays[0], cfg, elapsed)
        spread = res.p90_ms / res.p10_ms
        spreads.append(round(spread, 4))
        if best is None or spread < best.p90_ms / best.p10_ms:
            best = res
            best_ref = _result(arrays[1], cfg, elapsed) if reference is not None else None
        del runs
        if not _disturbed(res, cfg):
            break
    if best is None:  # pragma: no cover - the loop runs at least once
        raise TimingError("no timing attempt ran")
    env = environment_fingerprint(profile, cfg)
    env.update(rel_ci=round(best.rel_ci, 6), converged=best.converged,
               seconds=round(best.seconds, 3), resolution=resolution, spreads=spreads,
               disturbed=_disturbed(best, cfg),
               total_s=round(time.perf_counter() - t_start, 3))
    if reference is None or best_ref is None:
        return dataclasses.replace(best, env=env)
    scale = reference.anchor_ms / best_ref.median_ms
    env["reference"] = {
        "arch": reference.arch_hash, "anchor_ms": round(reference.anchor_ms, 6),
        "raw_median_ms": round(best.median_ms, 6),
        "reference_median_ms": round(best_ref.median_ms, 6),
        "ratio": round(best.median_ms / best_ref.median_ms, 6),
        "reference_rel_ci": round(best_ref.rel_ci, 6),
    }
    rel_ci = float(np.hypot(best.rel_ci, best_ref.rel_ci))
    env["rel_ci"] = round(rel_ci, 6)
    return dataclasses.replace(
        best, median_ms=best.median_ms * scale, p10_ms=best.p10_ms * scale,
        p90_ms=best.p90_ms * scale, rel_ci=rel_ci,
        converged=best.converged and best_ref.converged, env=env,
    )


# ---------------------------------------------------------------------- int8
class _RandomReader:
    """Calibration batches for ``quantize_static``: standardised random images.

    Inputs of the networks are normalised images, so standard-normal pixels have the right
    range; latency does not depend on the calibrated scales anyway.
    """

    def __init__(self, input_name: str, shape: tuple[int, ...], n_batches: int, seed: int):
        rng = np.random.default_rng(seed)
        self._batches = iter(
            [{input_name: rng.standard_normal(shape).astype(np.float32)}
             for _ in range(n_batches)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


def quantize_int8(
    model: bytes, resolution: int, *, per_channel: bool = True, n_batches: int = 4,
    seed: int = 0, input_name: str = "input", input_shape: tuple[int, ...] | None = None,
) -> bytes:
    """Static QDQ int8 quantization of an fp32 ONNX model with ORT's quantization tool.

    Pre-processing (shape inference and ORT's graph optimisation) first, as ORT recommends;
    then u8 activations and s8 weights (the x86 / ARM fast path), per-channel weight scales
    (the accuracy a deployment would want; it costs no latency), MinMax calibration on
    ``n_batches`` random batches.

    Raises:
        TimingError: if quantization fails.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="nas-int8-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model)
        shape = tuple(input_shape) if input_shape is not None else (3, resolution, resolution)
        reader = _RandomReader(input_name, (1, *shape), n_batches, seed)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                per_channel=per_channel, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:  # the quantization tool raises many types
            raise TimingError(
                f"int8 quantization failed: {type(exc).__name__}: {exc}"
            ) from exc
        return out.read_bytes()


def prepare_model(
    model: bytes, profile: DeviceProfile, resolution: int, *, input_name: str = "input",
    input_shape: tuple[int, ...] | None = None,
) -> bytes:
    """The model as the device runs it: unchanged for fp32, quantized for int8."""
    if profile.precision == "fp32":
        return model
    if profile.precision == "int8":
        return quantize_int8(model, resolution, input_name=input_name, input_shape=input_shape)
    raise ConfigError(
        f"precision must be 'fp32' or 'int8', got {profile.precision!r} (device {profile.name})"
    )


# ---------------------------------------------------------------------- locking
def _lock_dir(db: Any) -> Path:
    env = os.environ.get("NAS_LOCK_DIR")
    if env:
        return Path(env)
    path = getattr(db, "path", None)
    if path is None:
        url = getattr(db, "url", None)
        if url is not None:
            from sqlalchemy.engine import make_url

            u = make_url(str(url))
            if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
                path = u.database
    if path:
        return Path(path).resolve().parent / "locks"
    return Path(tempfile.gettempdir()) / "nas-latency-locks"


def _lock_key(profile: DeviceProfile) -> str:
    # Local profiles differ in settings, not in hardware: they share the host's cores, so
    # they share one lock. External devices are their own hardware.
    if getattr(profile, "external", False) or profile.placement != "local":
        key = profile.ray_resource or profile.name
    else:
        key = f"host-{socket.gethostname()}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


@contextlib.contextmanager
def device_lock(profile: DeviceProfile, lock_dir: Path | str) -> Iterator[Path]:
    """Hold the exclusive file lock of ``profile``'s hardware for one measurement."""
    import fcntl

    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_lock_key(profile)}.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------- Ray
def _time_task(model: bytes, profile_dict: dict[str, Any], resolution: int,
               config_dict: dict[str, Any],
               input_shape: tuple[int, ...] | None = None,
               reference: Reference | None = None) -> TimingResult:
    profile = DeviceProfile(**profile_dict)
    res = time_onnx(model, profile, resolution, TimingConfig(**config_dict), input_shape,
                    reference)
    try:
        import ray

        ctx = ray.get_runtime_context()
        res.env["ray"] = {"node_id": ctx.get_node_id(), "task_id": ctx.get_task_id(),
                          "resource": profile.ray_resource}
    except Exception:  # outside Ray: nothing to add
        pass
    return res


class _RayRunner:
    """Runs timings as Ray tasks pinned to the nodes that advertise the profile's resource."""

    def __init__(self, address: str | None) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is a dependency
            raise NASError("Ray placement needs ray: pip install 'ray[default]'") from exc
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     include_dashboard=False)
        self._ray = ray
        self._remote = ray.remote(_time_task)

    def __call__(self, model: bytes, profile: DeviceProfile, resolution: int,
                 config: TimingConfig, input_shape: tuple[int, ...] | None = None,
                 reference: Reference | None = None) -> TimingResult:
        opts: dict[str, Any] = {"num_cpus": max(1, int(profile.intra_op_threads)),
                                "max_retries": 0}
        if profile.ray_resource:
            opts["resources"] = {profile.ray_resource: 1}
        ref = self._remote.options(**opts).remote(
            model, dataclasses.asdict(profile), resolution, dataclasses.asdict(config),
            input_shape, reference,
        )
        return self._ray.get(ref)


class Timer:
    """Times ONNX models on one device with the protocol, locally under the device's lock or
    as a Ray task, whichever the profile (or a Ray ``address``) asks for.

    Args:
        device: a device name or profile.
        lock_dir: folder of the lock files (default: a temporary folder's).
        address: a Ray cluster address (default ``$RAY_ADDRESS``).
        config: the protocol's settings.
    """

    def __init__(self, device: str | DeviceProfile, *, lock_dir: Path | str | None = None,
                 address: str | None = None, config: TimingConfig | None = None) -> None:
        self.profile = _resolve(device)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.config = config or TimingConfig()
        self.lock_dir = Path(lock_dir) if lock_dir else _lock_dir(None)
        self._ray = _RayRunner(self.address) if _use_ray(self.profile, self.address) else None

    @property
    def uses_ray(self) -> bool:
        return self._ray is not None

    def __call__(self, model: bytes, resolution: int,
                 input_shape: tuple[int, ...] | None = None,
                 reference: Reference | None = None) -> TimingResult:
        if self._ray is not None:
            return self._ray(model, self.profile, resolution, self.config, input_shape,
                             reference)
        with device_lock(self.profile, self.lock_dir):
            return time_onnx(model, self.profile, resolution, self.config, input_shape,
                             reference)


def _use_ray(profile: DeviceProfile, address: str | None) -> bool:
    return profile.placement == "ray" or bool(address)


# ---------------------------------------------------------------------- measuring archs
def _resolve(device: str | DeviceProfile) -> DeviceProfile:
    return device if isinstance(device, DeviceProfile) else get_device(device)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


def _default_supernet(space: SearchSpace) -> OFASupernet:
    from nas.supernet import OFASupernet

    net = OFASupernet(space)
    net.calibrate_random(n_batches=1, batch_size=4)
    return net.eval()


def _export(supernet: OFASupernet, arch: Architecture) -> bytes:
    from nas.export._onnx import onnx_bytes

    return onnx_bytes(supernet.extract(arch), arch.r)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Export with one torch thread: the graphs are small, and idle OpenMP workers that spin
    after a parallel export would compete with the timing that follows it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(enabled: bool, total: int, description: str) -> Any:
    from nas._term import progress_bar

    return progress_bar(description, total, enabled=enabled, fields={"status": ""},
                        field_format="{task.fields[status]}")


def _prepare_for(profile: DeviceProfile, fp32: bytes, resolution: int,
                 cache: dict[str, bytes] | None = None) -> bytes:
    """``prepare_model``, keeping one model per precision in ``cache`` (one subnet's models
    shared by its devices)."""
    if cache is None:
        return prepare_model(fp32, profile, resolution)
    if profile.precision not in cache:
        cache[profile.precision] = prepare_model(fp32, profile, resolution)
    return cache[profile.precision]


def reference_anchor(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB
) -> float | None:
    """The reference subnet's stored anchor latency on a device (median of its fresh-session
    measurements, source ``"reference"``), or None before the first relative measurement."""
    sp = get_space(space)
    name = device.name if isinstance(device, DeviceProfile) else device
    vals = [float(r.latency_ms) for r in db.measurements(name, sp.name, status="ok",
                                                          source="reference")
            if r.latency_ms is not None]
    return float(np.median(vals)) if vals else None


def _reference(
    profile: DeviceProfile, sp: SearchSpace, db: LatencyDB, timer: Timer,
    net: OFASupernet, export: Callable[[OFASupernet, Architecture], bytes],
) -> Reference:
    """The space's reference subnet on ``profile``, its anchor measured first if need be."""
    arch = sp.middle()
    try:
        model = _prepare_for(profile, export(net, arch), arch.r)
    except Exception as exc:
        raise TimingError(f"cannot export the reference subnet of {sp.name} for relative "
                          f"timing: {_error_text(exc)}") from exc
    anchor = reference_anchor(profile, sp, db)
    if anchor is None:
        for _ in range(ANCHOR_SESSIONS):
            res = timer(model, arch.r)
            env = dict(res.env)
            env["anchor_of"] = {"space": sp.name, "arch": arch.hash}
            db.add_measurement(profile.name, arch, latency_ms=res.median_ms, p10=res.p10_ms,
                               p90=res.p90_ms, n_runs=res.n_runs, status="ok",
                               source="reference", env=env)
        anchor = reference_anchor(profile, sp, db)
        assert anchor is not None
    return Reference(model, arch.r, anchor, arch.hash)


def measure_on_devices(
    devices: Sequence[str | DeviceProfile], space: str | SearchSpace,
    archs: Iterable[Architecture | dict[str, Any] | str], db: LatencyDB, *,
    supernet: OFASupernet | None = None, progress: bool = True, address: str | None = None,
    config: TimingConfig | None = None, source: str = "measured",
    exporter: Callable[[OFASupernet, Architecture], bytes] | None = None,
    skip_measured: bool = False,
) -> dict[str, list[int]]:
    """Export each architecture once and time it on every device; store every result.

    An architecture whose export, quantization or timing fails is stored with status
    ``"failed"`` and the error, and the run goes on.

    Args:
        devices: device names or profiles.
        space: the architectures' search space.
        archs: architectures (anything ``space.parse`` accepts).
        db: where the measurements go.
        supernet: the supernet to extract subnets from; by default a randomly initialised
            one (latency does not depend on the weights).
        progress: show a progress bar with an ETA on stderr.
        address: a Ray cluster address; when given (or a profile's placement is ``"ray"``)
            the timing runs as a Ray task on a node with the profile's ``ray_resource``.
        config: the timing protocol's settings.
        source: stored with each measurement (``"measured"``, or ``"noise"`` for repeats).
            With ``config.reference`` (the default), the first relative measurement of a
            (device, space) in ``db`` also stores the reference subnet's anchor timings
            (source ``"reference"``).
        exporter: ``(supernet, arch) -> ONNX bytes``; the default extracts and exports.
        skip_measured: do not measure again an (architecture, device) pair that already has
            a successful measurement of this ``source``; its id is returned instead (resumable
            runs).

    Returns:
        Measurement ids per device name, in the order of ``archs``.
    """
    sp = get_space(space)
    profiles = [_resolve(d) for d in devices]
    parsed = [sp.parse(a) for a in archs]
    cfg = config or TimingConfig()
    export = exporter or _export
    address = address or os.environ.get("RAY_ADDRESS") or None
    lock_dir = _lock_dir(db)
    for p in profiles:
        db.ensure_device(p)
    done: dict[str, dict[Architecture, int]] = {p.name: {} for p in profiles}
    if skip_measured:
        for p in profiles:
            for rec in db.measurements(p.name, sp.name, status="ok", source=source):
                done[p.name].setdefault(rec.arch, rec.id)
    todo = [a for a in parsed if any(a not in done[p.name] for p in profiles)]
    timers = {p.name: Timer(p, lock_dir=lock_dir, address=address, config=cfg)
              for p in profiles} if todo else {}
    net = supernet if supernet is not None or not todo else _default_supernet(sp)
    refs: dict[str, Reference] = {}
    if cfg.reference and todo:
        with _one_torch_thread():
            refs = {p.name: _reference(p, sp, db, timers[p.name], net, export)  # type: ignore[arg-type]
                    for p in profiles}
    ids: dict[str, list[int]] = {p.name: [] for p in profiles}
    names = ",".join(p.name for p in profiles)
    with _one_torch_thread(), _progress(progress, len(todo), f"{sp.name} on {names}") as advance:
        for arch in parsed:
            if arch not in todo:
                for p in profiles:
                    ids[p.name].append(done[p.name][arch])
                continue
            status = ""
            t0 = time.perf_counter()
            try:
                fp32: bytes | None = export(net, arch)  # type: ignore[arg-type]
                export_error = None
            except Exception as exc:
                fp32, export_error = None, f"export: {_error_text(exc)}"
            export_s = time.perf_counter() - t0
            models: dict[str, bytes] = {}
            for p in profiles:
                if arch in done[p.name]:
                    ids[p.name].append(done[p.name][arch])
                    continue
                try:
                    if fp32 is None:
                        raise TimingError(export_error or "export failed")
                    t1 = time.perf_counter()
                    model = _prepare_for(p, fp32, arch.r, models)
                    prepare_s = time.perf_counter() - t1
                    res = timers[p.name](model, arch.r, reference=refs.get(p.name))
                    env = dict(res.env)
                    env.update(placement="ray" if "ray" in env else "local",
                               export_s=round(export_s, 4), prepare_s=round(prepare_s, 4))
                    mid = db.add_measurement(
                        p.name, arch, latency_ms=res.median_ms, p10=res.p10_ms,
                        p90=res.p90_ms, n_runs=res.n_runs, status="ok", source=source,
                        env=env,
                    )
                    status = f"{res.median_ms:.3f} ms"
                except Exception as exc:
                    err = export_error if fp32 is None else _error_text(exc)
                    mid = db.add_measurement(
                        p.name, arch, latency_ms=None, status="failed", error=err,
                        source=source, env={"protocol": PROTOCOL_VERSION},
                    )
                    status = "[red]failed"
                ids[p.name].append(mid)
            advance(status=status)
    return ids


def measure_architectures(
    device: str | DeviceProfile, space: str | SearchSpace,
    archs: Iterable[Architecture | dict[str, Any] | str], db: LatencyDB, *,
    supernet: OFASupernet | None = None, progress: bool = True, address: str | None = None,
    config: TimingConfig | None = None, source: str = "measured",
) -> list[int]:
    """Export, time and store each architecture on one device.

    See :func:`measure_on_devices` for the arguments; failures are stored as ``"failed"``
    and the run goes on.

    Returns:
        The measurement ids, in the order of ``archs``.

    Example:
        >>> db = LatencyDB()
        >>> archs = sample_for_measurement(get_space("tiny"), 10, seed=0)
        >>> ids = measure_architectures("cpu-1t", "tiny", archs, db)
    """
    profile = _resolve(device)
    return measure_on_devices(
        [profile], space, archs, db, supernet=supernet, progress=progress, address=address,
        config=config, source=source,
    )[profile.name]


# ---------------------------------------------------------------------- sampling
def sample_for_measurement(
    space: str | SearchSpace, n: int, seed: int = 0, *,
    exclude: Iterable[Architecture] = (), uniform_share: float = 0.5, n_bins: int = 10,
    pool_size: int | None = None,
) -> list[Architecture]:
    """Architectures to measure: half uniform, half spread evenly over the MAC range.

    Uniform sampling concentrates on mid-sized subnets (every layer averages over its
    choices), so a predictor trained on it alone extrapolates at both ends, where a search
    under a latency budget often ends up. The stratified half is drawn from a large uniform
    pool binned into ``n_bins`` equal-width bins of log-MACs over the pool's range, the same
    number from each bin (quantile bins of a uniform pool would reproduce the uniform
    distribution), plus the smallest and largest subnet at the extreme resolutions.

    Args:
        exclude: architectures already measured; none of them is returned.
        uniform_share: share of uniform samples.
        pool_size: size of the pool for the stratified part (default ``max(20 n, 2000)``,
            capped by the space's size).
    """
    sp = get_space(space)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if not 0 <= uniform_share <= 1:
        raise ConfigError(f"uniform_share must be in [0, 1], got {uniform_share}")
    rng = np.random.default_rng(seed)
    seen = set(exclude)
    total = sp.size(with_resolution=True)
    if n > total - len(seen):
        raise ConfigError(
            f"cannot draw {n} new architectures from {sp.name}: it has {total}, "
            f"{len(seen)} already measured"
        )
    out: list[Architecture] = []

    def take(a: Architecture) -> None:
        if a not in seen and len(out) < n:
            seen.add(a)
            out.append(a)

    n_strat = n - round(n * uniform_share)
    if n_strat > 0:
        for a in (sp.smallest(), sp.largest()):
            if len(out) < min(2, n_strat):
                take(a)
        pool_n = min(pool_size or max(20 * n, 2000), total)
        pool = sp.sample_many(pool_n, rng, unique=pool_n <= sp.size())
        pool = [a for a in dict.fromkeys(pool) if a not in seen]
        if pool:
            logm = np.log(sp.costs(pool)["macs"].astype(np.float64))
            edges = np.linspace(logm.min(), logm.max() + 1e-9, n_bins + 1)
            bins = np.clip(np.searchsorted(edges, logm, side="right") - 1, 0, n_bins - 1)
            members = [list(rng.permutation(np.flatnonzero(bins == b))) for b in range(n_bins)]
            b = 0
            while len(out) < n_strat and any(members):
                if members[b % n_bins]:
                    take(pool[int(members[b % n_bins].pop())])
                b += 1
    tries = 0
    while len(out) < n:
        take(sp.sample(rng))
        tries += 1
        if tries > 1000 * max(n, 1):  # pragma: no cover - only for nearly exhausted spaces
            raise ConfigError(f"could not draw {n} new architectures from {sp.name}")
    order = rng.permutation(len(out))
    return [out[i] for i in order]


# ---------------------------------------------------------------------- noise floor
@dataclass(frozen=True)
class NoiseFloor:
    """How well a measurement repeats: ``|a - b| / mean(a, b)`` over pairs of measurements of
    the same subnet in independent sessions.

    Attributes:
        n: number of pairs.
        median: median relative difference.
        p90: its 90th percentile.
        max: its maximum.
        metrics: the predictor metrics of "measure it again" as a predictor (the first
            measurement is the truth), the floor no predictor can beat.
        rel_diffs: every pair's relative difference.
    """

    n: int
    median: float
    p90: float
    max: float
    metrics: dict[str, float]
    rel_diffs: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "median": self.median, "p90": self.p90, "max": self.max,
                "metrics": self.metrics}


def _arch_of(rec: Any, sp: SearchSpace) -> Architecture:
    a = rec.arch
    return a if isinstance(a, Architecture) else sp.parse(a)


def noise_floor_from_db(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB
) -> NoiseFloor | None:
    """The noise floor from the stored repeats (source ``"noise"``), or None if there are none.

    Each repeat is paired with the first ordinary measurement of the same subnet.
    """
    from nas.latency._metrics import regression_metrics

    sp = get_space(space)
    name = device.name if isinstance(device, DeviceProfile) else device
    first: dict[Architecture, float] = {}
    for rec in db.measurements(name, sp.name, status="ok", source="measured"):
        if rec.latency_ms is not None:
            first.setdefault(_arch_of(rec, sp), float(rec.latency_ms))
    pairs = [
        (first[a], float(rec.latency_ms))
        for rec in db.measurements(name, sp.name, status="ok", source="noise")
        if rec.latency_ms is not None and (a := _arch_of(rec, sp)) in first
    ]
    if not pairs:
        return None
    a_, b_ = np.asarray(pairs).T
    rel = np.abs(a_ - b_) / ((a_ + b_) / 2)
    metrics = regression_metrics(a_, b_) if len(pairs) >= 2 else {}
    return NoiseFloor(len(pairs), float(np.median(rel)), float(np.percentile(rel, 90)),
                      float(rel.max()), metrics, tuple(float(v) for v in rel))


def noise_floor(
    device: str | DeviceProfile, space: str | SearchSpace, db: LatencyDB, *, k: int = 20,
    seed: int = 0, supernet: OFASupernet | None = None, progress: bool = True,
    address: str | None = None, config: TimingConfig | None = None,
) -> NoiseFloor:
    """Re-measure ``k`` already measured subnets in fresh sessions and summarise the spread.

    The repeats are stored with source ``"noise"`` (predictors never train on them).

    Raises:
        NASError: when the device has no measurements of the space yet.
    """
    sp = get_space(space)
    profile = _resolve(device)
    measured = list(dict.fromkeys(
        _arch_of(r, sp) for r in db.measurements(profile.name, sp.name, status="ok",
                                                source="measured")
    ))
    if not measured:
        raise NASError(
            f"no measurements of {sp.name} on {profile.name} yet; run "
            f"`nas latency measure --device {profile.name} --space {sp.name} --n 100` first"
        )
    rng = np.random.default_rng(seed)
    pick = [measured[i] for i in rng.choice(len(measured), min(k, len(measured)), replace=False)]
    measure_architectures(profile, sp, pick, db, supernet=supernet, progress=progress,
                          address=address, config=config, source="noise")
    nf = noise_floor_from_db(profile, sp, db)
    if nf is None:
        raise TimingError(f"every repeat measurement on {profile.name} failed")
    return nf
