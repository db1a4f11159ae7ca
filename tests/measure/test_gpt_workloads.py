"""Language models timed in ONNX Runtime (issue 26 items 1-2): device profiles that say the
workload (prefill at a prompt length, decode at a context with the KV cache or recomputed),
the inputs a call is fed, int8 by dynamic quantisation, measurements stored like the CNN
family's, and the workloads a space cannot run refused in one line with nothing stored."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from nas.db import LatencyDB
from nas.devices import DeviceProfile, get_device
from nas.errors import ConfigError
from nas.export import gpt_onnx_bytes
from nas.measure import TimingConfig, measure_architectures
from nas.measure._prepare import prepare_model
from nas.measure._session import make_session, workload_feed
from nas.space import get_space
from nas.supernet import GPTSupernet

SPACE = "gpt_tiny"  # context 32


def _profile(name: str, **workload: object) -> DeviceProfile:
    return DeviceProfile(name, workload=dict(workload))


@pytest.fixture(scope="module")
def model() -> tuple[bytes, list[int], int]:
    """A gpt_tiny subnet's graph with its heads per layer and head size."""
    sp = get_space(SPACE)
    arch = sp.largest()
    net = GPTSupernet.from_space(sp).eval()
    return gpt_onnx_bytes(net.extract(arch.to_dict())), list(arch.n_head), sp.spec.head_dim


@pytest.mark.parametrize(("workload", "ids", "past"), [
    ({"phase": "prefill", "prompt": 16}, (2, 16), 0),
    ({"phase": "decode", "context": 32}, (2, 1), 31),
    ({"phase": "decode", "context": 32, "cache": "recompute"}, (2, 32), 0),
])
def test_a_call_is_fed_what_its_workload_says(model, workload, ids, past) -> None:
    data, heads, hd = model
    profile = DeviceProfile("t", batch_size=2, workload=workload)
    sess = make_session(data, profile)
    feed = workload_feed(sess.get_inputs(), profile)
    assert feed["input_ids"].shape == ids
    assert str(feed["input_ids"].dtype) == "int64"
    for i, h in enumerate(heads):
        for part in ("key", "value"):
            assert feed[f"past_key_values.{i}.{part}"].shape == (2, h, past, hd)
    logits = sess.run(["logits"], feed)[0]
    assert logits.shape == (*ids, get_space(SPACE).spec.vocab_size)


def test_int8_language_models_are_quantised_dynamically(model) -> None:
    data, _, _ = model
    int8 = prepare_model(data, _profile("t8", phase="decode", context=8).replace(
        precision="int8"), 0)
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}
    assert "DynamicQuantizeLinear" in ops  # activations quantised per call: no calibration
    assert {"MatMulInteger", "QLinearMatMul"} & ops or "DynamicQuantizeMatMul" in ops
    assert len(int8) < len(data)


def test_subnets_are_measured_on_each_workload_and_stored(tmp_path: Path) -> None:
    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    sp = get_space(SPACE)
    archs = [sp.smallest(), sp.largest(), sp.sample(3)]
    profiles = [_profile("t-prefill16", phase="prefill", prompt=16),
                _profile("t-decode32", phase="decode", context=32),
                _profile("t-decode32-re", phase="decode", context=32, cache="recompute"),
                _profile("t-decode32-int8", phase="decode", context=32).replace(
                    precision="int8")]
    relative = TimingConfig.quick().replace(reference=True)  # the protocol's relative timing
    for p in profiles:
        ids = measure_architectures(p, SPACE, archs, db, progress=False, config=relative)
        recs = {r.id: r for r in db.measurements(p.name, SPACE, status=None)}
        got = [recs[i] for i in ids]
        assert [r.status for r in got] == ["ok"] * 3, [r.error for r in got]
        assert [r.arch for r in got] == archs
        assert all(r.latency_ms and r.latency_ms > 0 for r in got)
        # the reference subnet's anchor sessions, then the measurements relative to it
        assert {r.source for r in db.measurements(p.name, SPACE)} == {"reference", "measured"}
        assert all(r.env["reference"]["arch"] == sp.middle().hash for r in got)
        assert db.device_profile(p.name) == p


@pytest.mark.parametrize(("device", "space", "words"), [
    ("cpu-1t-decode256", "tiny", "device 'cpu-1t-decode256' times a language model (decode "
     "at context 256 (KV cache)); space 'tiny' of the 'ofa' family is timed on a device "
     "without a workload"),
    ("cpu-1t", SPACE, "device 'cpu-1t' has no workload; space 'gpt_tiny' of the 'gpt' family "
     "is timed on a profile that says prefill or decode"),
    ("cpu-1t-prefill128", SPACE, "device 'cpu-1t-prefill128': prefill 128 tokens is longer "
     "than the context of space 'gpt_tiny' (32 tokens)"),
])
def test_a_workload_the_space_cannot_run_is_one_line_and_nothing_is_stored(
        tmp_path: Path, device: str, space: str, words: str) -> None:
    db = LatencyDB(f"sqlite:///{tmp_path / 'lat.sqlite'}")
    sp = get_space(space)
    with pytest.raises(ConfigError) as info:
        measure_architectures(device, space, [sp.smallest()], db, progress=False,
                              config=TimingConfig.quick())
    assert words in str(info.value)
    assert "\n" not in str(info.value)
    assert db.devices() == []


def test_the_shipped_language_model_profiles() -> None:
    decode = get_device("cpu-1t-decode256")
    assert decode.tags == frozenset({"gpt"})
    assert decode.workload is not None
    assert decode.workload.dims() == {"sequence": 1, "past_sequence": 255}
    assert get_device("cpu-1t-prefill128").workload.dims() == {  # type: ignore[union-attr]
        "sequence": 128, "past_sequence": 0}
    assert get_device("cpu-1t-decode256-int8").precision == "int8"
    assert get_device("cpu-1t").tags == frozenset()
    # the shipped language model's space runs all three
    sp = get_space("gpt_shakespeare")
    for name in ("cpu-1t-prefill128", "cpu-1t-decode256", "cpu-1t-decode256-int8"):
        p = get_device(name)
        sp.check_workload(p.workload, p.name)


@pytest.mark.parametrize(("workload", "words"), [
    ({"phase": "decode"}, "workload = {'phase': 'decode'}: a decode workload needs context"),
    ({"phase": "prefill", "prompt": 0}, "workload.prompt = 0: must be an integer in [1, "),
    ({"phase": "decode", "context": 1}, "workload.context = 1: must be an integer in [2, "),
    ({"phase": "prefill", "prompt": 4, "context": 8}, "context is for a decode workload"),
    ({"phase": "prefill", "prompt": 4, "cache": "recompute"}, "cache is for a decode workload"),
    ({"phase": "train", "prompt": 4}, "workload.phase = 'train': must be one of ['prefill', "
     "'decode']"),
    ({"phase": "decode", "context": 8, "cache": "paged"}, "workload.cache = 'paged': must be "
     "one of ['kv', 'recompute']"),
    ({"phase": "decode", "context": 8, "batch": 2}, "workload.batch"),
    ("decode", "workload = 'decode': must be null or a mapping"),
])
def test_a_bad_workload_is_one_line_naming_the_field(workload: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        DeviceProfile.from_dict({"name": "lm", "workload": workload}, where="lm.yaml")
    msg = str(info.value)
    assert msg.startswith("lm.yaml: ")
    assert words in msg
    assert "\n" not in msg
