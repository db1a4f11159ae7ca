"""Latency measurement: the timing protocol, int8, failures, sampling, noise floor, Ray."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nas.db import LatencyDB
from nas.devices import DeviceProfile
from nas.errors import ConfigError, NASError
from nas.latency import training_data
from nas.measure import (
    TimingConfig,
    _lock,
    _measure,
    _session,
    _timing,
    measure_architectures,
    noise_floor,
    quantize_int8,
    sample_for_measurement,
)
from nas.space import get_space

QUICK = TimingConfig.quick()


@pytest.fixture
def db(tmp_path: Path) -> LatencyDB:
    return LatencyDB(f"sqlite:///{tmp_path / 'latency.sqlite'}")


class _FakeClock:
    """Replaces ``time.perf_counter_ns``; each timed run advances it by a chosen duration."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_stopping_rule_stops_early_on_a_stable_median(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(_timing.time, "perf_counter_ns", clock)

    def run() -> None:
        clock.now += 1_000_000  # exactly 1 ms every run

    cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=20, max_runs=400, round_runs=10)
    res = _timing.time_session(run, cfg)
    assert res.converged
    assert res.n_runs == 20
    assert res.median_ms == pytest.approx(1.0)
    assert res.p10_ms == res.p90_ms == pytest.approx(1.0)


def test_stopping_rule_caps_runs_on_a_noisy_median(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(_timing.time, "perf_counter_ns", clock)
    rng = np.random.default_rng(0)

    def run() -> None:
        clock.now += int(1e6 * rng.uniform(0.5, 1.5))  # +-50%: never within 0.5%

    cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=10, max_runs=60, max_s=60.0,
                       round_runs=10)
    res = _timing.time_session(run, cfg)
    assert not res.converged
    assert res.n_runs == 60
    assert res.p10_ms < res.median_ms < res.p90_ms
    assert res.rel_ci > cfg.target_rel_ci


def test_interleaved_reference_cancels_a_drifting_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(_timing.time, "perf_counter_ns", clock)
    calls = [0]

    def runner(ms: float):  # type: ignore[no-untyped-def]
        def run() -> None:  # a third of the way in, another job makes the machine 40% slower
            calls[0] += 1
            clock.now += int(1e6 * ms * (1.0 if calls[0] < 90 else 1.4))
        return run

    cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=140, max_runs=200, max_s=1e9,
                       round_runs=10)
    (target, ref), _ = _timing._time_runs([runner(2.0), runner(1.0)], cfg)
    # blocks of 10 runs each, alternating; the block pair the slowdown fell between has
    # another ratio, so the ratio's interval (protocol 4) never meets its target: max_runs
    assert len(target) == len(ref) == 200
    assert float(np.median(target)) == pytest.approx(2.8)  # the raw median moved 40%...
    assert float(np.median(target) / np.median(ref)) == pytest.approx(2.0)  # ...the ratio to
    # a reference timed alternately with it did not


def test_block_warmup_keeps_cold_runs_out_of_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(_timing.time, "perf_counter_ns", clock)
    last = [""]

    def runner(name: str, ms: float):  # type: ignore[no-untyped-def]
        def run() -> None:  # the first run after the other model's block is 3x slower
            cold = last[0] != name
            last[0] = name
            clock.now += int(1e6 * ms * (3.0 if cold else 1.0))
        return run

    def times(block_warmup: int) -> list[np.ndarray]:
        cfg = TimingConfig(warmup_runs=1, warmup_s=0.0, min_runs=40, max_runs=40,
                           round_runs=4, block_warmup=block_warmup)
        return _timing._time_runs([runner("t", 1.0), runner("r", 2.0)], cfg)[0]

    cold_t, _ = times(0)
    assert cold_t.max() == pytest.approx(3.0)  # every block starts cold...
    assert np.median(cold_t) == pytest.approx(1.0)
    warm_t, warm_r = times(1)
    assert len(warm_t) == len(warm_r) == 40
    assert warm_t.max() == pytest.approx(1.0)
    assert warm_r.max() == pytest.approx(2.0)
    # when the first run of each block is left unrecorded
    with pytest.raises(ConfigError, match="block_warmup"):
        TimingConfig(block_warmup=-1)


@pytest.fixture(scope="module")
def tiny_pair() -> tuple:
    """The tiny space's smallest and middle (reference) subnets, exported: (small, mid,
    models by arch)."""
    from nas.export import onnx_bytes
    from nas.supernet import OFASupernet

    net = OFASupernet("tiny").eval()
    small, mid = net.space.smallest(), net.space.middle()
    return small, mid, {a: onnx_bytes(net.extract(a), a.r) for a in (small, mid)}


def test_relative_timing_scales_to_the_anchor(tiny_pair: tuple) -> None:
    small, mid, models = tiny_pair
    prof = DeviceProfile("t-1t")
    cfg = TimingConfig(warmup_runs=5, warmup_s=0.0, min_runs=30, max_runs=200, max_s=1.0,
                       target_rel_ci=0.02, retries=0)
    # the reference timed against itself comes out at its anchor, whatever the anchor
    ref = _session.Reference(models[mid], mid.r, anchor_ms=5.0, arch_hash=mid.hash)
    res = _session.time_onnx(models[mid], prof, mid.r, cfg, reference=ref)
    assert res.median_ms == pytest.approx(5.0, rel=0.15)
    env = res.env["reference"]
    assert env["arch"] == mid.hash
    assert env["anchor_ms"] == 5.0
    assert env["ratio"] == pytest.approx(res.median_ms / 5.0, rel=1e-4)
    assert res.p10_ms <= res.median_ms <= res.p90_ms
    # a smaller subnet is faster than the reference, on the anchor's scale
    small_res = _session.time_onnx(models[small], prof, small.r, cfg, reference=ref)
    assert small_res.env["reference"]["ratio"] < 1
    assert small_res.median_ms == pytest.approx(
        5.0 * small_res.env["reference"]["raw_median_ms"]
        / small_res.env["reference"]["reference_median_ms"], rel=1e-4)


def test_several_sessions_combine_into_their_median(tiny_pair: tuple) -> None:
    small, mid, models = tiny_pair
    prof = DeviceProfile("t-1t")
    ref = _session.Reference(models[mid], mid.r, anchor_ms=5.0, arch_hash=mid.hash)
    cfg = TimingConfig(warmup_runs=3, warmup_s=0.0, min_runs=20, max_runs=60, max_s=0.5,
                       target_rel_ci=0.05, retries=0, sessions=3)
    res = _session.time_onnx(models[small], prof, small.r, cfg, reference=ref)
    env = res.env
    # three fresh session pairs, each with its own ratio; the result is their median
    assert len(env["sessions"]) == 3
    assert len(env["reference"]["ratios"]) == 3
    assert res.median_ms == pytest.approx(float(np.median(env["sessions"])), rel=1e-5)
    assert env["reference"]["ratio"] == pytest.approx(
        float(np.median(env["reference"]["ratios"])), rel=1e-5)
    assert res.median_ms == pytest.approx(5.0 * env["reference"]["ratio"], rel=1e-4)
    assert res.n_runs >= 3 * 20
    assert res.p10_ms <= res.median_ms <= res.p90_ms
    # without a reference too, and one session is the plain protocol
    solo = _session.time_onnx(models[small], prof, small.r,
                              cfg.replace(reference=False, sessions=2))
    assert len(solo.env["sessions"]) == 2
    assert "reference" not in solo.env
    one = _session.time_onnx(models[small], prof, small.r, cfg.replace(sessions=1),
                             reference=ref)
    assert "sessions" not in one.env
    with pytest.raises(ConfigError, match="sessions"):
        TimingConfig(sessions=0)


def test_relative_measurements_are_put_on_the_campaigns_scale(db: LatencyDB) -> None:
    sp = get_space("tiny")
    rel = TimingConfig(warmup_runs=2, warmup_s=0.0, min_runs=5, max_runs=40, max_s=0.3,
                       target_rel_ci=0.02, round_runs=5, retries=0)  # quick, but relative
    assert rel.reference
    assert not QUICK.reference
    archs = sample_for_measurement(sp, 3, seed=5)
    ids = measure_architectures("cpu-1t", sp, archs[:2], db, progress=False, config=rel)
    anchors = db.measurements("cpu-1t", "tiny", source="reference")
    assert len(anchors) == _measure.ANCHOR_SESSIONS
    assert {a.arch for a in anchors} == {sp.middle()}
    first = float(np.median([a.latency_ms for a in anchors]))
    recs = {r.id: r for r in db.measurements("cpu-1t", "tiny", source="measured")}
    blocks = [recs[i].env["reference"]["reference_median_ms"] for i in ids]
    for i in ids:  # the first measurements are stored on the anchor sessions' scale
        env = recs[i].env
        assert env["protocol"] == _timing.PROTOCOL_VERSION
        assert env["reference"]["anchor_ms"] == pytest.approx(first, rel=1e-5)
        assert recs[i].latency_ms == pytest.approx(first * env["reference"]["ratio"], rel=1e-4)
    # the scale is now every timing of the reference: the sessions and both blocks
    scale = _measure.reference_anchor("cpu-1t", sp, db)
    assert scale == pytest.approx(
        float(np.median([a.latency_ms for a in anchors] + blocks)), rel=1e-9)
    measure_architectures("cpu-1t", sp, archs[2:], db, progress=False, config=rel)
    assert len(db.measurements("cpu-1t", "tiny", source="reference")) == \
        _measure.ANCHOR_SESSIONS  # measured once per (device, space, database)
    recs = {r.id: r for r in db.measurements("cpu-1t", "tiny", source="measured")}
    assert len(recs) == 3
    (third,) = (r for i, r in recs.items() if i not in ids)
    assert third.env["reference"]["anchor_ms"] == pytest.approx(scale, rel=1e-4)
    # read back, all three are on the latest scale: ratio x the median of all five sessions
    # and three blocks (the anchor's timings are neither training data nor measured subnets)
    final = _measure.reference_anchor("cpu-1t", sp, db)
    data = training_data("cpu-1t", "tiny", db)
    assert len(data) == 3
    for a, y in zip(data.archs, data.y, strict=True):
        (rec,) = (r for r in recs.values() if r.arch == a)
        assert y == pytest.approx(final * rec.env["reference"]["ratio"], rel=1e-4)


def test_median_ci_shrinks_with_more_runs() -> None:
    rng = np.random.default_rng(1)
    few = np.sort(rng.normal(10, 0.5, 20))
    many = np.sort(rng.normal(10, 0.5, 2000))
    assert _timing._median_rel_ci(many) < _timing._median_rel_ci(few)
    assert _timing._median_rel_ci(np.full(30, 2.0)) == 0.0


def test_timing_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="max_runs"):
        TimingConfig(min_runs=50, max_runs=10)
    with pytest.raises(ConfigError, match="target_rel_ci"):
        TimingConfig(target_rel_ci=0)


def test_real_measurement_lands_in_db_with_sane_fields(db: LatencyDB) -> None:
    sp = get_space("tiny")
    archs = sample_for_measurement(sp, 3, seed=0)
    ids = measure_architectures("cpu-1t", sp, archs, db, progress=False, config=QUICK)
    assert len(ids) == 3
    recs = {r.id: r for r in db.measurements("cpu-1t", "tiny")}
    for i, arch in zip(ids, archs, strict=True):
        rec = recs[i]
        assert rec.arch == arch
        assert rec.status == "ok"
        assert rec.source == "measured"
        assert 0 < rec.p10 <= rec.latency_ms <= rec.p90 < 1000
        assert QUICK.min_runs <= rec.n_runs <= QUICK.max_runs
        env = rec.env
        assert env["cpu_model"]
        assert env["onnxruntime"]
        assert env["profile"]["name"] == "cpu-1t"
        assert env["threads"] == {"intra_op": 1, "inter_op": 1, "allow_spinning": True}
        assert env["timing"]["target_rel_ci"] == QUICK.target_rel_ci
        assert env["resolution"] == arch.r
        assert env["placement"] == "local"


def test_a_profile_s_input_resolution_is_what_every_subnet_is_timed_at(db: LatencyDB) -> None:
    """Subnets of two resolutions on a small-input profile: both timed at its side (the
    model's declared input and the record say so), int8 calibrated at it too."""
    import onnx

    from nas.measure._prepare import prepare_model
    from nas.measure._session import make_session
    from nas.supernet import OFASupernet

    sp = get_space("tiny")
    archs = [sp.smallest(min(sp.resolutions)), sp.largest(max(sp.resolutions))]
    prof = DeviceProfile("tiny-r8", input_resolution=8)
    ids = measure_architectures(prof, sp, archs, db, progress=False, config=QUICK)
    recs = {r.id: r for r in db.measurements("tiny-r8", "tiny")}
    assert [recs[i].env["resolution"] for i in ids] == [8, 8]
    assert all(recs[i].status == "ok" for i in ids)
    net = OFASupernet("tiny").eval()
    from nas.export import onnx_bytes

    fp32 = onnx_bytes(net.extract(archs[1]), archs[1].r)
    for precision in ("fp32", "int8"):
        model = prepare_model(fp32, prof.replace(precision=precision), archs[1].r)
        dims = onnx.load_from_string(model).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims[1:]] == [3, 8, 8]
        sess = make_session(model, prof)
        out = sess.run(None, {sess.get_inputs()[0].name:
                              np.zeros((1, 3, 8, 8), dtype=np.float32)})
        assert out[0].shape[0] == 1


def test_session_options_follow_the_profile() -> None:
    import onnxruntime as ort

    from nas.export import onnx_bytes
    from nas.supernet import OFASupernet

    net = OFASupernet("tiny").eval()
    model = onnx_bytes(net.extract(net.space.smallest()), 16)
    prof = DeviceProfile("t-2t", intra_op_threads=2, graph_optimization="basic",
                         allow_spinning=False)
    sess = _session.make_session(model, prof)
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.inter_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.slow
def test_int8_end_to_end_on_tiny(db: LatencyDB) -> None:
    import onnx

    from nas.export import onnx_bytes
    from nas.supernet import OFASupernet

    sp = get_space("tiny")
    net = OFASupernet(sp)
    net.calibrate_random(n_batches=1, batch_size=2)
    arch = sp.largest()
    q = quantize_int8(onnx_bytes(net.eval().extract(arch), arch.r), arch.r)
    ops = {n.op_type for n in onnx.load_from_string(q).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    ids = measure_architectures("cpu-1t-int8", sp, [arch, sp.smallest()], db,
                                supernet=net, progress=False, config=QUICK)
    recs = {r.id: r for r in db.measurements("cpu-1t-int8", "tiny", status=None)}
    assert [recs[i].status for i in ids] == ["ok", "ok"]
    assert recs[ids[0]].env["profile"]["precision"] == "int8"
    assert recs[ids[0]].latency_ms > 0


def test_failed_export_is_recorded_and_the_run_goes_on(
    db: LatencyDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp = get_space("tiny")
    archs = sample_for_measurement(sp, 3, seed=2)
    bad = archs[1]
    real = _measure._family_export(sp)  # the ofa family's timing_onnx

    def flaky(net, arch):  # type: ignore[no-untyped-def]
        if arch == bad:
            raise RuntimeError("boom: cannot export this one")
        return real(net, arch)

    monkeypatch.setattr(_measure, "_family_export", lambda space: flaky)
    ids = measure_architectures("cpu-1t", sp, archs, db, progress=False, config=QUICK)
    recs = {r.id: r for r in db.measurements("cpu-1t", "tiny", status=None)}
    statuses = [recs[i].status for i in ids]
    assert statuses == ["ok", "failed", "ok"]
    failed = recs[ids[1]]
    assert failed.latency_ms is None
    assert "boom: cannot export this one" in failed.error
    # failed rows never reach the predictors
    assert bad not in training_data("cpu-1t", "tiny", db).archs


def test_skip_measured_resumes(db: LatencyDB) -> None:
    sp = get_space("tiny")
    archs = sample_for_measurement(sp, 2, seed=3)
    first = _measure.measure_on_devices(["cpu-1t"], sp, archs[:1], db, progress=False,
                                        config=QUICK)
    again = _measure.measure_on_devices(["cpu-1t"], sp, archs, db, progress=False,
                                        config=QUICK, skip_measured=True)
    assert again["cpu-1t"][0] == first["cpu-1t"][0]
    assert len(db.measurements("cpu-1t", "tiny")) == 2


def test_sampling_covers_the_mac_range_and_excludes() -> None:
    sp = get_space("ofa_mbv3")
    uniform = sp.costs(sp.sample_many(400, seed=0))["macs"]
    picked = sample_for_measurement(sp, 60, seed=0)
    assert len(set(picked)) == 60
    macs = sp.costs(picked)["macs"]
    assert macs.min() < np.percentile(uniform, 1)
    assert macs.max() > np.percentile(uniform, 99)
    more = sample_for_measurement(sp, 20, seed=0, exclude=picked)
    assert not set(more) & set(picked)
    with pytest.raises(ConfigError, match="n must be"):
        sample_for_measurement(sp, -1)


def test_noise_floor_remeasures_in_fresh_sessions(db: LatencyDB) -> None:
    sp = get_space("tiny")
    with pytest.raises(NASError, match="nas latency measure"):
        noise_floor("cpu-1t", sp, db, k=2, progress=False, config=QUICK)
    archs = sample_for_measurement(sp, 3, seed=4)
    measure_architectures("cpu-1t", sp, archs, db, progress=False, config=QUICK)
    nf = noise_floor("cpu-1t", sp, db, k=2, progress=False, config=QUICK)
    assert nf.n == 2
    assert len(nf.rel_diffs) == 2
    assert 0 <= nf.median <= nf.p90 <= nf.max
    assert len(db.measurements("cpu-1t", "tiny", source="noise")) == 2
    assert len(training_data("cpu-1t", "tiny", db)) == 3  # repeats are not training data


def test_device_lock_serialises_measurements(tmp_path: Path) -> None:
    prof = DeviceProfile("lock-test")
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with _lock.device_lock(prof, tmp_path):
            held.set()
            order.append("a-start")
            time.sleep(0.3)
            order.append("a-end")

    t = threading.Thread(target=first)
    t.start()
    held.wait(5)
    with _lock.device_lock(prof, tmp_path):
        order.append("b")
    t.join()
    assert order == ["a-start", "a-end", "b"]
    # local CPU profiles share the host's cores, hence one lock
    other = DeviceProfile("lock-test-2t", intra_op_threads=2)
    assert _lock._lock_key(prof) == _lock._lock_key(other)


@pytest.mark.ray
@pytest.mark.slow
def test_measurement_runs_as_a_ray_task_on_the_device_resource(db: LatencyDB) -> None:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=1, resources={"device:test": 1},
             include_dashboard=False,
             log_to_driver=False)
    try:
        prof = DeviceProfile("ray-test", placement="ray", ray_resource="device:test")
        sp = get_space("tiny")
        ids = measure_architectures(prof, sp, [sp.smallest()], db, progress=False,
                                    config=QUICK)
        rec = db.measurements("ray-test", "tiny")[0]
        assert rec.id == ids[0]
        assert rec.status == "ok"
        assert rec.env["placement"] == "ray"
        assert rec.env["ray"]["resource"] == "device:test"
        assert rec.env["ray"]["task_id"]
    finally:
        ray.shutdown()
