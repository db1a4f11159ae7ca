"""The timing protocol: its settings, its results and the stopping rule of one timing.

The protocol (``PROTOCOL_VERSION``, recorded with every measurement; version 4 since the
changes listed at the end):

1. Session options come from the device profile and are all set explicitly, never left to
   ORT's defaults (which change between releases and depend on the machine): intra- and
   inter-op thread counts, ``session.intra_op.allow_spinning`` (and the inter-op one), the
   graph optimisation level and sequential execution.
2. One fixed random input of the profile's batch size. Python's garbage collector is off while
   timing, so a collection cannot land inside a run; each run is timed with
   ``time.perf_counter_ns`` around ``InferenceSession.run``, the call an application makes.
3. Warm-up: at least ``warmup_runs`` runs and ``warmup_s`` seconds of every session that has
   not run yet, so the memory arena, the thread pool and the caches reach their steady state
   before anything is recorded (a shared reference session, step 7, is warmed up once).
4. Runs are recorded in rounds until the stored quantity is known to ``target_rel_ci`` (1%
   by default), at least ``min_runs`` and at most ``max_runs`` runs and ``max_s`` seconds; a
   measurement that stops on a cap is kept and flagged (``converged: false`` in its
   environment record).

   - Timed alone, the stored quantity is the median: its distribution-free 95% confidence
     interval from order statistics (the ranks ``n/2 -+ 1.96 sqrt(n)/2``), whose half-width
     relative to the median must fall below the target. It needs no assumption about the
     run-time distribution, which is skewed with a long right tail (preemption, interrupts),
     and costs one sort.
   - Timed against the reference (step 7), the stored quantity is the *ratio* of the two
     medians, and its interval is what must fall below the target, not each median's: each
     pair of blocks (the subnet's, then the reference's, a fraction of a second apart) gives
     the log-ratio of its block medians, and the 95% t-interval of their mean,
     ``t(B-1) * sd / sqrt(B)`` over the ``B`` pairs, is the relative half-width. A pair shares
     the machine's speed of its moment, so a drift that slows both cancels in it, where the
     two medians' own intervals counted it twice against the measurement. At least 3 block
     pairs are recorded, whatever ``min_runs`` and ``max_s`` say (two lucky pairs prove
     nothing); a measurement stopped with fewer (``max_runs``) records the two medians'
     intervals combined instead.
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
   record. Lookup-table block timings stay absolute. With ``share_reference`` (off by default)
   the reference's session is created and warmed up once per
   :class:`~nas.measure._session.Reference` in a process (one per device and campaign) and
   serves every subnet measured against it; each subnet still gets a fresh session of its
   own (a Ray task gets a copy of the reference without its session, so under Ray
   placement each measurement creates its own, as in version 3). The ratios of one campaign
   then share the reference session's offset, which the scale mostly takes back (its pool
   holds that session's block medians), and which a noise floor measured in a later
   campaign includes.

Version 4 (issue #27, "a measurement in a third of the time") changed, against version 3:

- the stopping rule with a reference is on the ratio's interval (step 4; version 3
  required each median to 0.5% on its own, which rarely happened before the cap: 2.7-2.9 s
  per measurement against a 3 s cap on a quiet 2-core EPYC, experiments/RESULTS.md);
- ``target_rel_ci`` 0.5% -> 1%, now of the ratio; ``max_s`` 3 s -> 0.75 s, yet never
  fewer than 3 block pairs (the largest OFA subnets need about that);
  ``min_runs`` 20 -> 30 (3 block pairs);
- the reference's session and its warm-up are shared by a campaign (step 7; version 3
  created a fresh pair of sessions, both warmed up, per attempt), and ``warmup_s`` 0.1 s ->
  0.05 s: the subnet now warms up alone, so it gets no fewer runs than in the 0.1 s version
  3 split between the two models (and never fewer than ``warmup_runs``);
- ``retry_sleep_s`` 1 s -> 0.5 s (a retry costs about a third of what it did).

The time saved bought no precision where it matters: the noise floor of version 3 (two
measurements of one subnet in fresh sessions minutes apart) was set by the machine between
the two, not by the runs within one; twice the time per measurement did not lower it
(experiments/RESULTS.md, "Latency predictors"). A ratio known to 1% (95%) has a standard
error of 0.5% at most (when it converges), against about 1.8% between sessions.
Measurements of versions 3 and 4 are on one scale (the same ratio of medians times the same
pool); each record says its version. ``experiments/benchmarks/measure_speed.py`` measures
both side by side.

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

PROTOCOL_VERSION = 4


class TimingError(NASError):
    """Timing a model failed (session creation, quantization or a run)."""


class TimingConfig(ConfigModel):
    """Effort and precision of one latency measurement (see the module docstring).

    Frozen: derive a variant with :meth:`replace`. A bad value raises a one-line
    :class:`~nas.errors.ConfigError` naming the field.

    Attributes:
        warmup_runs: runs before recording, at least.
        warmup_s: seconds of warm-up, at least.
        min_runs: recorded runs before the stopping rule is checked (with a reference, the
            ratio's interval needs :data:`MIN_BLOCK_PAIRS` blocks of ``round_runs`` too).
        max_runs: recorded runs at most.
        max_s: seconds of recorded runs at most (checked between rounds; with a reference,
            only once :data:`MIN_BLOCK_PAIRS` block pairs are recorded).
        target_rel_ci: stop when the 95% CI half-width of the stored quantity, relative to
            it, is below this: the median timed alone, the ratio to the reference's median
            with a reference (protocol step 4).
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
        sessions: fresh sessions of the subnet (with the reference's, unless it is shared)
            a measurement is made in; the result is the median over them (the mean of two).
            Two measurements of one subnet in fresh sessions differ by more than the runs
            within a session say (a session's memory placement, the machine between
            sessions), so more runs in one session do not buy what a second session does.
        share_reference: with a reference, time every measurement against one session of
            it, created and warmed up on first use and kept by the
            :class:`~nas.measure._session.Reference` (one per device and campaign), instead
            of a fresh one per measurement (protocol step 7). Off by default: a campaign's
            ratios then share one session's offset, which a repeat in another campaign does
            not (the suspected cause of protocol 4's first noise floor with it on, 2.1%
            against protocol 3's 1.3%), and the same model timed against its own shared
            session came out at 0.67 of its anchor once beside a busy process.
    """

    what: ClassVar[str] = "TimingConfig"
    #: Names of the presets :meth:`preset` knows.
    PRESETS: ClassVar[tuple[str, ...]] = ("default", "quick")

    warmup_runs: StrictInt = Field(5, ge=0)
    warmup_s: float = Field(0.05, ge=0)
    min_runs: StrictInt = Field(30, ge=1)
    max_runs: StrictInt = Field(400, ge=1)
    max_s: float = Field(0.75, gt=0)
    target_rel_ci: float = Field(0.01, gt=0)
    round_runs: StrictInt = Field(10, ge=1)
    seed: int = 0
    max_spread: float = Field(1.3, gt=1)
    min_disturbance_ms: float = 0.05
    retries: StrictInt = Field(2, ge=0)
    retry_sleep_s: float = 0.5
    reference: bool = True
    block_warmup: StrictInt = Field(2, ge=0)
    sessions: StrictInt = Field(1, ge=1)
    share_reference: bool = False

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


#: 97.5% quantiles of Student's t with 1 to 30 degrees of freedom (beyond: 1.96 + 2.4 / df,
#: within 0.002 of it).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

#: Block pairs the ratio's interval needs at least (protocol step 4).
MIN_BLOCK_PAIRS = 3


def _t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def _ratio_rel_ci(model: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray,
                  round_runs: int) -> float:
    """Relative half-width of the 95% CI of ``median(model) / median(reference)`` from the
    block pairs (protocol step 4): the t-interval of the mean log-ratio of the pairs' block
    medians. Infinite with fewer than :data:`MIN_BLOCK_PAIRS` pairs."""
    n_blocks = min(len(model), len(reference)) // round_runs
    if n_blocks < MIN_BLOCK_PAIRS:
        return float("inf")
    n = n_blocks * round_runs
    a = np.median(np.asarray(model[:n], dtype=np.float64).reshape(n_blocks, round_runs), axis=1)
    b = np.median(np.asarray(reference[:n], dtype=np.float64).reshape(n_blocks, round_runs),
                  axis=1)
    if np.any(a <= 0) or np.any(b <= 0):
        return float("inf")
    d = np.log(a) - np.log(b)
    half = _t975(n_blocks - 1) * float(np.std(d, ddof=1)) / np.sqrt(n_blocks)
    return float(np.expm1(half))


def _converged(times: Sequence[Sequence[int]], cfg: TimingConfig) -> bool:
    """The stopping rule (protocol step 4): one callable, its median to ``target_rel_ci``;
    a model and its reference, the ratio of their medians."""
    if len(times[0]) < cfg.min_runs:
        return False
    if len(times) == 2:
        return _ratio_rel_ci(times[0], times[1], cfg.round_runs) <= cfg.target_rel_ci
    return all(
        _median_rel_ci(np.sort(np.asarray(t, dtype=np.float64))) <= cfg.target_rel_ci
        for t in times
    )


def _warm_up(runs: Sequence[Callable[[], Any]], cfg: TimingConfig) -> None:
    if not runs:
        return
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
        if _converged(times, cfg):
            return times
        n = len(times[0])
        if n >= cfg.max_runs:
            return times
        if (time.perf_counter() - t0 >= cfg.max_s
                and (len(runs) == 1 or n >= MIN_BLOCK_PAIRS * cfg.round_runs)):
            return times  # the time cap, once a ratio has its block pairs


def _time_runs(runs: Sequence[Callable[[], Any]], cfg: TimingConfig,
               warm: Sequence[bool] | None = None) -> tuple[list[np.ndarray], float]:
    """Warm up, then record ``runs`` in alternating blocks of ``cfg.round_runs`` runs each
    until the stored quantity is known to ``cfg.target_rel_ci`` (or a cap): the median of
    one callable, the ratio of a model's median to its reference's for two (protocol step
    4). Returns each callable's times in ms and the seconds.

    Args:
        warm: per callable, whether it still needs its warm-up (default: every one); a
            shared reference session already warmed up does not.

    Blocks, not single runs: alternating run by run makes each run start with the other
    model's data in the caches (about 12% slower here), which is not how a deployed model
    runs; within a block a model runs back to back as it would alone, and a block pair
    (tens to hundreds of milliseconds) is still far shorter than the machine's drift."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t_start = time.perf_counter()
        _warm_up([r for i, r in enumerate(runs) if warm is None or warm[i]], cfg)
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
