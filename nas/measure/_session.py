"""Timing an ONNX model in ONNX Runtime sessions: session options from the device profile,
fresh sessions per measurement, retries of disturbed ones and relative timing against a
reference subnet, whose session a campaign shares (protocol steps 1, 2, 5 and 7 of
:mod:`nas.measure._timing`)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.devices import DeviceProfile
from nas.errors import ConfigError
from nas.measure._environment import environment_fingerprint
from nas.measure._timing import (
    TimingConfig,
    TimingError,
    TimingResult,
    _ratio_rel_ci,
    _result,
    _time_runs,
)

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["Reference", "make_session", "time_onnx", "workload_feed"]

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _session_options(profile: DeviceProfile) -> ort.SessionOptions:
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
    return opts


def make_session(model: bytes, profile: DeviceProfile) -> ort.InferenceSession:
    """An ``InferenceSession`` with every option the profile fixes set explicitly."""
    import onnxruntime as ort

    opts = _session_options(profile)
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


@dataclass
class _SharedRun:
    """A reference session kept for the measurements against it: its run, whether it has
    had its warm-up, and how many measurements it has served."""

    run: Callable[[], Any]
    warm: bool = False
    uses: int = 0


@dataclass(frozen=True)
class Reference:
    """The reference subnet a measurement is timed against (protocol step 7).

    With ``TimingConfig.share_reference`` (off by default), the first measurement against it in
    a process creates its session, and every later one reuses that session, warmed up: one
    per (session options, input) it is timed with. A copy sent to another process (a Ray
    task) carries no session and makes its own.

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
    _sessions: dict[str, _SharedRun] = field(default_factory=dict, init=False, repr=False,
                                             compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # an ORT session does not cross processes: a copy starts without one
        return {k: v for k, v in self.__dict__.items() if k not in ("_sessions", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        object.__setattr__(self, "_sessions", {})
        object.__setattr__(self, "_lock", threading.Lock())

    def shared_run(self, profile: DeviceProfile, x: np.ndarray | None, seed: int) -> _SharedRun:
        """The reference's session for ``profile`` and the input of ``seed``: created on the
        first call, the same one after."""
        key = json.dumps([profile.to_dict(), seed], sort_keys=True, default=str)
        with self._lock:
            shared = self._sessions.get(key)
            if shared is None:
                shared = self._sessions[key] = _SharedRun(_runner(self.model, profile, x))
            return shared


def _disturbed(res: TimingResult, cfg: TimingConfig) -> bool:
    return (res.p90_ms > cfg.max_spread * res.p10_ms
            and res.p90_ms - res.p10_ms > cfg.min_disturbance_ms)


def _input(profile: DeviceProfile, shape: tuple[int, ...], seed: int) -> np.ndarray | None:
    """The image batch of a profile without a workload (None with one: its feed is built
    from the session's inputs, :func:`workload_feed`)."""
    if profile.workload is not None:
        return None
    return np.random.default_rng(seed).standard_normal(
        (profile.batch_size, *shape)).astype(np.float32)


def workload_feed(inputs: Iterable[Any], profile: DeviceProfile,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """The inputs of one call of a language model's graph under ``profile``'s workload:
    every symbolic axis the export names (``batch``, ``sequence``, ``past_sequence``) sized
    by the batch and the workload (:meth:`~nas.devices.Workload.dims`); token ids in int64,
    the cache in float32 (random: a call costs the same whatever the values).

    Args:
        inputs: the session's ``get_inputs()`` (``name``, ``shape``, ``type`` each).

    Raises:
        TimingError: an axis the workload does not size, or an input of another type.
    """
    if profile.workload is None:
        raise TimingError(f"device {profile.name} has no workload to feed a language model")
    dims = {"batch": profile.batch_size, **profile.workload.dims()}
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for i in inputs:
        shape = []
        for d in i.shape:
            if isinstance(d, int):
                shape.append(d)
            elif d in dims:
                shape.append(dims[d])
            else:
                raise TimingError(f"input {i.name!r} has an axis {d!r} that a workload does "
                                  f"not size (it sizes {', '.join(sorted(dims))})")
        if i.type == "tensor(int64)":
            feed[i.name] = rng.integers(0, 2, size=shape, dtype=np.int64)
        elif i.type == "tensor(float)":
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            raise TimingError(f"input {i.name!r} is a {i.type}; a workload feeds int64 token "
                              "ids and a float32 cache")
    return feed


def _runner(model: bytes, profile: DeviceProfile, x: np.ndarray | None) -> Callable[[], Any]:
    sess = make_session(model, profile)
    feed = ({sess.get_inputs()[0].name: x} if x is not None
            else workload_feed(sess.get_inputs(), profile))
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
            # full precision: these are read back to put the row on a scale (a rounded
            # anchor of a 0.05 ms subnet is off by 1e-5 of itself)
            "raw_median_ms": med(x["raw_median_ms"] for x in refs),
            "reference_median_ms": med(x["reference_median_ms"] for x in refs),
            "ratio": med(x["ratio"] for x in refs),
            "ratios": [x["ratio"] for x in refs],
            "reference_rel_ci": round(med(x["reference_rel_ci"] for x in refs), 6),
        }
    return TimingResult(
        median_ms, med(r.p10_ms for r in parts), med(r.p90_ms for r in parts),
        sum(r.n_runs for r in parts), env["rel_ci"], env["converged"], env["seconds"], env)


@dataclass
class _Attempts:
    """What :func:`_least_disturbed` keeps: the least spread attempt, its reference's result,
    the interval of the stored quantity in it and whether the stopping rule was met there,
    every attempt's spread, and how the reference session was had (``None``: fresh per
    attempt; else the shared session's uses before this one)."""

    best: TimingResult
    best_ref: TimingResult | None
    rel_ci: float
    converged: bool
    spreads: list[float]
    reference_uses: int | None


def _reference_run(reference: Reference, profile: DeviceProfile, x_ref: np.ndarray | None,
                   cfg: TimingConfig) -> tuple[Callable[[], Any], _SharedRun | None]:
    """The reference's run for one attempt: its shared session (``cfg.share_reference``) or
    a fresh one; the shared session's record, or None."""
    if not cfg.share_reference:
        return _runner(reference.model, profile, x_ref), None
    shared = reference.shared_run(profile, x_ref, cfg.seed + 1)
    return shared.run, shared


def _least_disturbed(
    model: bytes, profile: DeviceProfile, x: np.ndarray | None, cfg: TimingConfig,
    reference: Reference | None, x_ref: np.ndarray | None,
) -> _Attempts:
    """Time in fresh sessions until one is undisturbed (or the retries run out); the least
    spread attempt and what goes with it (protocol step 5). A shared reference session is
    kept across the attempts: what a retry renews is the subnet's session."""
    got: _Attempts | None = None
    spreads: list[float] = []
    shared: _SharedRun | None = None
    uses: int | None = None
    for attempt in range(cfg.retries + 1):
        if attempt:
            time.sleep(cfg.retry_sleep_s)
        runs = [_runner(model, profile, x)]
        warm = [True]
        if reference is not None:
            ref_run, shared = _reference_run(reference, profile, x_ref, cfg)
            runs.append(ref_run)
            warm.append(shared is None or not shared.warm)
            uses = shared.uses if shared is not None else None
        try:
            arrays, elapsed = _time_runs(runs, cfg, warm=warm)
        except Exception as exc:
            raise TimingError(f"ORT run failed: {type(exc).__name__}: {exc}") from exc
        if shared is not None:
            shared.warm = True
        res = _result(arrays[0], cfg, elapsed)
        spread = res.p90_ms / res.p10_ms
        spreads.append(round(spread, 4))
        if got is None or spread < got.best.p90_ms / got.best.p10_ms:
            ref_res = _result(arrays[1], cfg, elapsed) if reference is not None else None
            rel_ci, converged = res.rel_ci, res.converged
            if ref_res is not None:
                rel_ci = _ratio_rel_ci(arrays[0], arrays[1], cfg.round_runs)
                converged = rel_ci <= cfg.target_rel_ci
                if not np.isfinite(rel_ci):  # too few block pairs: both medians' intervals
                    rel_ci = float(np.hypot(res.rel_ci, ref_res.rel_ci))
            got = _Attempts(res, ref_res, rel_ci, converged, spreads, uses)
        del runs
        if not _disturbed(res, cfg):
            break
    if got is None:  # pragma: no cover - the loop runs at least once
        raise TimingError("no timing attempt ran")
    if shared is not None:
        shared.uses += 1
    return got


def _relative(got: _Attempts, reference: Reference, env: dict[str, Any]) -> TimingResult:
    """The best attempt on the anchor's scale: times the ratio of the anchor to the
    reference's median in the same window (protocol step 7); its interval and convergence
    are the ratio's (step 4)."""
    best, best_ref = got.best, got.best_ref
    if best_ref is None:  # pragma: no cover - timed with a reference
        raise TimingError("a relative timing without its reference's result")
    scale = reference.anchor_ms / best_ref.median_ms
    env["reference"] = {
        # full precision: the anchor, medians and ratio are read back to rescale the row
        "arch": reference.arch_hash, "anchor_ms": reference.anchor_ms,
        "raw_median_ms": best.median_ms,
        "reference_median_ms": best_ref.median_ms,
        "ratio": best.median_ms / best_ref.median_ms,
        "reference_rel_ci": round(best_ref.rel_ci, 6),
        # the shared session's earlier measurements (None: a fresh session for this one)
        "session_uses": got.reference_uses,
    }
    env.update(rel_ci=round(got.rel_ci, 6), converged=got.converged)
    return dataclasses.replace(
        best, median_ms=best.median_ms * scale, p10_ms=best.p10_ms * scale,
        p90_ms=best.p90_ms * scale, rel_ci=got.rel_ci, converged=got.converged, env=env,
    )


def _time_onnx_session(
    model: bytes, profile: DeviceProfile, resolution: int, cfg: TimingConfig,
    input_shape: tuple[int, ...] | None, reference: Reference | None,
) -> TimingResult:
    """``time_onnx`` in one fresh session (pair, with a reference)."""
    shape = tuple(input_shape) if input_shape is not None else (3, resolution, resolution)
    x = _input(profile, shape, cfg.seed)
    x_ref = (_input(profile, (3, reference.resolution, reference.resolution), cfg.seed + 1)
             if reference is not None else None)
    t_start = time.perf_counter()
    got = _least_disturbed(model, profile, x, cfg, reference, x_ref)
    best = got.best
    env = environment_fingerprint(profile, cfg)
    env.update(rel_ci=round(best.rel_ci, 6), converged=best.converged,
               seconds=round(best.seconds, 3), resolution=resolution, spreads=got.spreads,
               disturbed=_disturbed(best, cfg),
               total_s=round(time.perf_counter() - t_start, 3))
    if reference is None:
        return dataclasses.replace(best, env=env)
    return _relative(got, reference, env)
