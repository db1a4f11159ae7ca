"""The timing protocol: its settings, its results and the stopping rule of one timing.

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

ORT sessions and relative timing are in :mod:`nas.measure._session`, int8 models in
:mod:`nas.measure._prepare`, the per-device lock in :mod:`nas.measure._lock`, Ray placement in
:mod:`nas.measure._placement`, and measuring subnets into the database in
:mod:`nas.measure._measure`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, StrictInt, ValidationError, ValidationInfo, field_validator

from nas._config import ConfigModel, format_validation_error
from nas.errors import ConfigError, NASError

__all__ = [
    "PROTOCOL_VERSION",
    "TimingConfig",
    "TimingError",
    "TimingResult",
    "time_session",
]

PROTOCOL_VERSION = 3


class TimingError(NASError):
    """Timing a model failed (session creation, quantization or a run)."""


class TimingConfig(ConfigModel):
    """Effort and precision of one latency measurement (see the module docstring).

    Frozen: derive a variant with :meth:`replace`. A bad value raises a one-line
    :class:`~nas.errors.ConfigError` naming the field.

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

    what: ClassVar[str] = "TimingConfig"
    #: Names of the presets :meth:`preset` knows.
    PRESETS: ClassVar[tuple[str, ...]] = ("default", "quick")

    warmup_runs: StrictInt = Field(5, ge=0)
    warmup_s: float = Field(0.1, ge=0)
    min_runs: StrictInt = Field(20, ge=1)
    max_runs: StrictInt = Field(400, ge=1)
    max_s: float = Field(3.0, gt=0)
    target_rel_ci: float = Field(0.005, gt=0)
    round_runs: StrictInt = Field(10, ge=1)
    seed: int = 0
    max_spread: float = Field(1.3, gt=1)
    min_disturbance_ms: float = 0.05
    retries: StrictInt = Field(2, ge=0)
    retry_sleep_s: float = 1.0
    reference: bool = True
    block_warmup: StrictInt = Field(2, ge=0)
    sessions: StrictInt = Field(1, ge=1)

    def __init__(self, **data: Any) -> None:
        # Keyword construction in code gets the same one-line error as a YAML file.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, self.what)) from None

    @field_validator("max_runs")
    @classmethod
    def _max_at_least_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_runs")
        if low is not None and value < low:
            raise ValueError(f"must be >= min_runs ({low})")
        return value

    @classmethod
    def quick(cls) -> TimingConfig:
        """A cheap setting for tests and smoke runs (about 2% precision, absolute)."""
        return cls(warmup_runs=2, warmup_s=0.0, min_runs=5, max_runs=40, max_s=0.3,
                   target_rel_ci=0.02, round_runs=5, retries=0, reference=False)

    @classmethod
    def preset(cls, name: str, what: str = "timing preset") -> TimingConfig:
        """The settings called ``name``: ``"default"`` or ``"quick"``.

        Raises:
            ConfigError: another name (the message calls it ``what``).
        """
        if name == "quick":
            return cls.quick()
        if name == "default":
            return cls()
        raise ConfigError(f"{what} must be 'default' or 'quick', got {name!r}")

    def replace(self, **changes: Any) -> TimingConfig:
        """A copy with ``changes``, validated like a new one."""
        return type(self)(**{**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (recorded with each measurement)."""
        return self.model_dump()


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


def _median_rel_ci(sorted_ms: np.ndarray) -> float:
    """Relative half-width of the distribution-free 95% CI of the median."""
    n = len(sorted_ms)
    half = 1.96 * np.sqrt(n) / 2
    lo = max(int(np.floor(n / 2 - half)) - 1, 0)  # ranks are 1-based
    hi = min(int(np.ceil(n / 2 + half)) - 1, n - 1)
    med = float(np.median(sorted_ms))
    return float((sorted_ms[hi] - sorted_ms[lo]) / 2 / med) if med > 0 else float("inf")


def _warm_up(runs: Sequence[Callable[[], Any]], cfg: TimingConfig) -> None:
    t_start = time.perf_counter()
    n_warm = 0
    while n_warm < cfg.warmup_runs or time.perf_counter() - t_start < cfg.warmup_s:
        for run in runs:
            run()
        n_warm += 1
        if n_warm >= 50 * max(cfg.warmup_runs, 1):
            break


def _record(runs: Sequence[Callable[[], Any]], cfg: TimingConfig) -> list[list[int]]:
    """Blocks of ``round_runs`` timed runs per callable, alternating, until the stopping rule
    (or a cap) says enough; nanoseconds."""
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
            return times
        if n >= cfg.max_runs or time.perf_counter() - t0 >= cfg.max_s:
            return times


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
        _warm_up(runs, cfg)
        times = _record(runs, cfg)
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
