"""Protocol 4: the stopping rule on the stored ratio, the reference session a campaign shares,
retries of disturbed measurements. Runs are faked (a clock each run advances by a chosen
duration), so every number here is exact."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from nas.devices import DeviceProfile
from nas.measure import TimingConfig, _session, _timing


class _FakeClock:
    """Replaces ``time.perf_counter_ns``; each run advances it by a chosen duration."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _FakeClock:
    c = _FakeClock()
    monkeypatch.setattr(_timing.time, "perf_counter_ns", c)
    return c


def test_a_drift_that_slows_both_models_does_not_keep_the_ratio_from_converging(
    clock: _FakeClock,
) -> None:
    """The machine's speed wanders by +-15% from one block pair to the next, subnet and
    reference alike, with 1% noise per run: each median's own interval stays wide (protocol
    3 would have recorded to the cap), the ratio's is met early and its value is the true
    one."""
    rng = np.random.default_rng(3)
    speed = rng.uniform(0.85, 1.15, size=100)
    n = [0]
    cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=30, max_runs=400, max_s=1e9,
                       round_runs=10, block_warmup=2)
    pair_runs = 2 * (cfg.block_warmup + cfg.round_runs)

    def runner(ms: float) -> Callable[[], None]:
        def run() -> None:
            n[0] += 1  # the first two runs are the warm-up, then block pairs
            factor = speed[max(n[0] - 3, 0) // pair_runs]
            clock.now += int(1e6 * ms * factor * rng.lognormal(0.0, 0.01))
        return run

    (target, ref), _ = _timing._time_runs([runner(2.0), runner(1.0)], cfg)
    assert len(target) == len(ref) < 400  # stopped on the rule, not the cap
    ratio_ci = _timing._ratio_rel_ci(target, ref, cfg.round_runs)
    assert ratio_ci <= cfg.target_rel_ci
    assert float(np.median(target) / np.median(ref)) == pytest.approx(2.0, rel=cfg.target_rel_ci)
    # each median's own interval (what protocol 3 asked to meet) is far wider
    assert _timing._median_rel_ci(np.sort(target)) > 3 * cfg.target_rel_ci
    assert _timing._median_rel_ci(np.sort(ref)) > 3 * cfg.target_rel_ci


def test_the_ratio_rule_needs_three_block_pairs(clock: _FakeClock) -> None:
    """Identical runs satisfy any interval, yet fewer than three block pairs never stop a
    relative measurement, nor does the time cap: two lucky pairs prove nothing."""
    rng = np.random.default_rng(0)

    def runner(ms: float, noise: float = 0.0) -> Callable[[], None]:
        def run() -> None:
            clock.now += int(1e6 * ms * rng.uniform(1 - noise, 1 + noise))
        return run

    cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=1, max_runs=400, round_runs=10)
    (target, ref), _ = _timing._time_runs([runner(2.0), runner(1.0)], cfg)
    assert len(target) == len(ref) == _timing.MIN_BLOCK_PAIRS * 10
    (alone,), _ = _timing._time_runs([runner(2.0)], cfg)
    assert len(alone) == 10  # timed alone, the median's interval: one round
    capped = cfg.replace(max_s=1e-9)  # over at once; noisy runs never meet the rule
    (target, ref), _ = _timing._time_runs([runner(2.0, 0.4), runner(1.0, 0.4)], capped)
    assert len(target) == len(ref) == _timing.MIN_BLOCK_PAIRS * 10
    (alone,), _ = _timing._time_runs([runner(2.0, 0.4)], capped)
    assert len(alone) == 10


def test_a_noisy_ratio_records_to_the_cap_and_is_flagged(clock: _FakeClock) -> None:
    rng = np.random.default_rng(0)

    def runner(ms: float) -> Callable[[], None]:
        def run() -> None:  # +-40% per run: the ratio is never known to 1% in 60 runs
            clock.now += int(1e6 * ms * rng.uniform(0.6, 1.4))
        return run

    cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=30, max_runs=60, max_s=1e9,
                       round_runs=10)
    (target, ref), _ = _timing._time_runs([runner(2.0), runner(1.0)], cfg)
    assert len(target) == 60
    assert _timing._ratio_rel_ci(target, ref, cfg.round_runs) > cfg.target_rel_ci


# ---------------------------------------------------------------- sessions, faked
class _FakeSessions:
    """Stands in for ORT sessions: each model (its bytes) runs for a fixed time, or for the
    times a list of them gives, one per session created; counts sessions and runs."""

    def __init__(self, clock: _FakeClock, ms: dict[bytes, Any]) -> None:
        self.clock = clock
        self.ms = ms
        self.created: Counter[bytes] = Counter()
        self.runs: Counter[bytes] = Counter()

    def __call__(self, model: bytes, profile: DeviceProfile,
                 x: np.ndarray | None) -> Callable[[], None]:
        spec = self.ms[model]
        self.created[model] += 1
        if isinstance(spec, list):  # one run-time function per session, in order
            per_run = spec[self.created[model] - 1]
        else:
            def per_run(i: int, v: float = spec) -> float:
                return v
        count = [0]

        def run() -> None:
            count[0] += 1
            self.runs[model] += 1
            self.clock.now += int(1e6 * per_run(count[0]))
        return run


#: a campaign that shares one reference session (not the default: see TimingConfig)
CFG = TimingConfig(warmup_runs=3, warmup_s=0.0, min_runs=30, max_runs=200, max_s=1e9,
                   round_runs=10, block_warmup=2, retries=2, retry_sleep_s=0.0,
                   share_reference=True)


@pytest.fixture
def fake(clock: _FakeClock, monkeypatch: pytest.MonkeyPatch) -> _FakeSessions:
    f = _FakeSessions(clock, {b"sub": 2.0, b"ref": 1.0})
    monkeypatch.setattr(_session, "_runner", f)
    return f


def test_a_shared_reference_session_puts_results_on_the_same_anchor_scale(
    fake: _FakeSessions,
) -> None:
    prof = DeviceProfile("fake-1t")
    shared_ref = _session.Reference(b"ref", 8, anchor_ms=5.0, arch_hash="mid")
    shared = [_session.time_onnx(b"sub", prof, 8, CFG, reference=shared_ref) for _ in range(3)]
    # one reference session for the three measurements, warmed up once; a subnet session each
    assert fake.created == Counter({b"sub": 3, b"ref": 1})
    per_measurement = 3 * (CFG.block_warmup + CFG.round_runs)  # three block pairs
    assert fake.runs[b"ref"] == CFG.warmup_runs + 3 * per_measurement
    assert [r.env["reference"]["session_uses"] for r in shared] == [0, 1, 2]
    # a fresh reference session per measurement (protocol 3's way): the same results
    fresh_ref = _session.Reference(b"ref", 8, anchor_ms=5.0, arch_hash="mid")
    fresh = [_session.time_onnx(b"sub", prof, 8, CFG.replace(share_reference=False),
                                reference=fresh_ref) for _ in range(3)]
    assert fake.created[b"ref"] == 1 + 3
    assert [r.env["reference"]["session_uses"] for r in fresh] == [None] * 3
    for r in shared + fresh:
        assert r.median_ms == pytest.approx(10.0)  # ratio 2 on the anchor's 5 ms
        assert r.env["reference"]["ratio"] == pytest.approx(2.0)
        assert r.converged
        assert r.rel_ci == pytest.approx(0.0, abs=1e-9)
    # a copy in another process (a Ray task) carries no session: it makes its own
    copy = pickle.loads(pickle.dumps(shared_ref))
    assert copy == shared_ref
    again = _session.time_onnx(b"sub", prof, 8, CFG, reference=copy)
    assert fake.created[b"ref"] == 5
    assert again.env["reference"]["session_uses"] == 0
    assert again.median_ms == pytest.approx(10.0)


def test_a_disturbed_measurement_is_retried_in_a_fresh_subnet_session(
    clock: _FakeClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The subnet's first session is disturbed (every other run 3x slower: p90/p10 = 3),
    its second is not: the retry is kept, both spreads are recorded, and the shared
    reference session serves both attempts."""
    def disturbed(i: int) -> float:
        return 6.0 if i % 2 else 2.0

    def clean(i: int) -> float:
        return 2.0

    fake = _FakeSessions(clock, {b"sub": [disturbed, clean, clean], b"ref": 1.0})
    monkeypatch.setattr(_session, "_runner", fake)
    sleeps: list[float] = []
    monkeypatch.setattr(_session.time, "sleep", sleeps.append)
    ref = _session.Reference(b"ref", 8, anchor_ms=5.0, arch_hash="mid")
    res = _session.time_onnx(b"sub", DeviceProfile("fake-1t"), 8,
                             CFG.replace(retry_sleep_s=0.25), reference=ref)
    assert fake.created == Counter({b"sub": 2, b"ref": 1})
    assert sleeps == [0.25]
    assert len(res.env["spreads"]) == 2
    assert res.env["spreads"][0] == pytest.approx(3.0)
    assert res.env["spreads"][1] == pytest.approx(1.0)
    assert not res.env["disturbed"]
    assert res.median_ms == pytest.approx(10.0)
    assert res.env["reference"]["session_uses"] == 0  # one measurement, however many tries
    nxt = _session.time_onnx(b"sub", DeviceProfile("fake-1t"), 8, CFG, reference=ref)
    assert nxt.env["reference"]["session_uses"] == 1


def test_a_measurement_stopped_before_three_block_pairs_is_flagged(fake: _FakeSessions) -> None:
    """``max_runs`` below three block pairs: the ratio has no interval of its own, so the
    record carries the two medians' (finite, JSON-safe) and says it did not converge."""
    ref = _session.Reference(b"ref", 8, anchor_ms=5.0, arch_hash="mid")
    res = _session.time_onnx(b"sub", DeviceProfile("fake-1t"), 8,
                             CFG.replace(min_runs=10, max_runs=20), reference=ref)
    assert res.n_runs == 20
    assert res.median_ms == pytest.approx(10.0)
    assert not res.converged
    assert res.env["converged"] is False
    assert np.isfinite(res.env["rel_ci"])
