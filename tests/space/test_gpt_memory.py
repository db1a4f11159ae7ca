"""Memory of a gpt subnet (weights + KV cache at a context), counted exactly without a model,
and what an exported subnet actually stores: its ONNX initializers, its weights file, and the
cache tensors its graph takes and returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.errors import ArchitectureError, ConfigError
from nas.space import GPTSpace, get_space
from nas.space._checks import check_memory_is_counted_or_refused

SPACE = "gpt_tiny"  # vocabulary 64, context 32, heads of 8
# heads differ per layer: each layer's cache has its own size
ELASTIC = {"n_layer": 3, "n_embd": 32, "n_head": [4, 1, 2], "mlp": [128, 32, 64]}


def _space() -> GPTSpace:
    sp = get_space(SPACE)
    assert isinstance(sp, GPTSpace)
    return sp


def _tensor_shapes(arch: dict[str, Any], vocab: int, n_ctx: int, head_dim: int
                   ) -> list[tuple[int, ...]]:
    """Every tensor of a GPT-2-layout subnet, by hand (the head is tied to wte)."""
    d = arch["n_embd"]
    shapes: list[tuple[int, ...]] = [(vocab, d), (n_ctx, d), (d,), (d,)]  # wte, wpe, ln_f
    for h, m in zip(arch["n_head"], arch["mlp"], strict=True):
        a = h * head_dim
        shapes += [(d,), (d,), (3 * a, d), (3 * a,), (d, a), (d,),  # ln_1, qkv, proj
                   (d,), (d,), (m, d), (m,), (d, m), (d,)]  # ln_2, fc, proj
    return shapes


# ---------------------------------------------------------------------- counting
def test_memory_is_a_hand_count_on_gpt_tiny() -> None:
    sp = _space()
    weights = 4 * sum(int(np.prod(s)) for s in _tensor_shapes(ELASTIC, 64, 32, 8))
    assert weights == 102_432
    m = sp.memory([ELASTIC])
    assert m["weights"].tolist() == [weights]
    # a key and a value (batch, heads, positions, head_dim) per layer, 4 bytes each
    assert m["layer_cache"].tolist() == [[2 * 4 * 32 * 8 * 4, 2 * 1 * 32 * 8 * 4,
                                          2 * 2 * 32 * 8 * 4]]
    assert m["cache"].tolist() == [14_336]
    assert m["total"].tolist() == [weights + 14_336]
    # two sequences with 5 positions each; half the bytes in float16
    m = sp.memory([ELASTIC], context=5, batch=2)
    assert (int(m["weights"][0]), int(m["cache"][0])) == (weights, 2 * 2 * 7 * 5 * 8 * 4)
    m16 = sp.memory([ELASTIC], context=5, batch=2, dtype="float16")
    assert int(m16["total"][0]) * 2 == int(m["total"][0])


def test_gpt2_small_is_its_known_size() -> None:
    sp = get_space("gpt2")
    m = sp.memory([sp.largest()])
    assert int(m["weights"][0]) == 124_439_808 * 4  # GPT-2 small's parameters, float32
    assert int(m["cache"][0]) == 72 * 2**20  # 12 layers x 12 heads x 1024 x 64, key and value


def test_memory_of_a_batch_is_that_of_each_architecture() -> None:
    sp = _space()
    archs = [sp.smallest(), *sp.sample_many(6, seed=2), sp.largest()]
    batch = sp.memory(archs, context=9)
    for i, a in enumerate(archs):
        one = sp.memory([a], context=9)
        assert {k: int(v[0]) for k, v in one.items() if k != "layer_cache"} == {
            k: int(batch[k][i]) for k in ("weights", "cache", "total")}
    assert np.array_equal(sp.memory(sp.to_arrays(archs), context=9)["total"], batch["total"])
    assert np.array_equal(batch["weights"], 4 * sp.costs(archs)["params"])
    # memory grows with every choice: the smallest subnet takes the least
    assert int(batch["total"].argmin()) == 0


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"context": 0}, "context must be an int in [1, 32] (the context of space gpt_tiny), got 0"),
    ({"context": 33}, "got 33"),
    ({"batch": 0}, "batch must be an int >= 1 (sequences generated together), got 0"),
    ({"batch": True}, "got True"),
    ({"dtype": "int8"}, "dtype must be one of ['float32', 'float16', 'bfloat16'], got 'int8'"),
])
def test_a_bad_context_batch_or_dtype_is_one_line(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ArchitectureError) as info:
        _space().memory([ELASTIC], **kwargs)
    assert "\n" not in str(info.value)
    assert needle in str(info.value)


def test_an_ofa_space_does_not_count_memory() -> None:
    sp = get_space("tiny")
    assert not sp.counts_memory
    with pytest.raises(ConfigError) as info:
        sp.memory([sp.smallest()])
    assert str(info.value) == ("space tiny of the 'ofa' family does not count memory (weights "
                               "and KV cache are counted for the 'gpt' family); use params for "
                               "its size")


def test_the_family_contract_catches_a_wrong_memory() -> None:
    class Off(GPTSpace):
        def memory(self, archs: Any, context: int | None = None, batch: int = 1,
                   dtype: str = "float32") -> dict[str, np.ndarray]:
            m = super().memory(archs, context, batch, dtype)
            return {**m, "total": m["total"] + 1}  # not weights + cache

    class Silent(GPTSpace):
        counts_memory = False  # says it does not count memory, but does not refuse

    check_memory_is_counted_or_refused(_space())
    for cls, needle in ((Off, r"total is not weights \+ cache"), (Silent, "did not refuse")):
        with pytest.raises(AssertionError, match=needle):
            check_memory_is_counted_or_refused(cls(_space().spec))


# ---------------------------------------------------------------------- an exported subnet
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ELASTIC exported from gpt_tiny's supernet with every parameter random: a trained
    subnet's tensors all differ (torch's exporter stores tensors of identical values once,
    so a fresh supernet's zero biases would be stored once for many)."""
    import torch

    from nas.export import export_gpt_subnet
    from nas.supernet import GPTSupernet

    torch.manual_seed(0)
    net = GPTSupernet.from_space(SPACE)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.5)
    out = tmp_path_factory.mktemp("gpt_memory") / "e"
    export_gpt_subnet(net.eval(), ELASTIC, out, space=SPACE)
    return out


def test_the_weights_are_what_the_exported_graph_and_weights_file_store(exported: Path) -> None:
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load_file

    weights = int(_space().memory([ELASTIC])["weights"][0])
    model = onnx.load(str(exported / "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert sum(a.nbytes for a in inits.values()) == weights
    # every initializer is a parameter of the subnet (the weights file's, by name), and
    # every parameter is one initializer: the tied head adds none
    stored = load_file(str(exported / "weights.safetensors"))
    assert {name.removeprefix("gpt.") for name in inits} == set(stored)
    assert sum(a.nbytes for a in stored.values()) == weights
    # the graph's other tensors are not weights: Constant nodes of scalars and shapes
    constants = [numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant"
                 for a in n.attribute if a.name == "value"]
    assert constants
    assert max(c.size for c in constants) <= 4


@pytest.mark.parametrize(("context", "batch"), [(None, 1), (7, 2)])
def test_the_cache_is_what_the_exported_graph_holds(exported: Path, context: int | None,
                                                    batch: int) -> None:
    import onnxruntime as ort

    sp = _space()
    c = sp.context(context)
    cache = int(sp.memory([ELASTIC], context=context, batch=batch)["cache"][0])
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["cache"]["heads"] == ELASTIC["n_head"]
    itemsize = np.dtype(manifest["cache"]["dtype"]).itemsize
    # the graph's cache inputs, with `past_sequence` positions = the context
    dims = {"batch": batch, "past_sequence": c}
    past = [i for i in manifest["inputs"] if i["name"].startswith("past_key_values.")]
    assert len(past) == 2 * ELASTIC["n_layer"]
    assert sum(int(np.prod([dims.get(d, d) for d in i["shape"]])) * itemsize
               for i in past) == cache
    # and what ONNX Runtime returns after a prefill of `context` tokens
    sess = ort.InferenceSession(str(exported / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    feed: dict[str, np.ndarray] = {"input_ids": np.arange(batch * c, dtype=np.int64)
                                   .reshape(batch, c) % sp.vocab_size}
    for i, h in enumerate(manifest["cache"]["heads"]):
        for kv in ("key", "value"):
            feed[f"past_key_values.{i}.{kv}"] = np.zeros((batch, h, 0, sp.head_dim), np.float32)
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, feed), strict=True))
    assert sum(v.nbytes for k, v in outs.items() if k.startswith("present.")) == cache


# ---------------------------------------------------------------------- the command
def test_arch_info_shows_memory_at_the_context(run_nas: Any) -> None:
    sp = _space()
    code, out, _ = run_nas(["arch", "info", "-s", SPACE, "-a", json.dumps(ELASTIC),
                            "--context", "8", "--json"])
    assert code == 0, out
    mem = json.loads(out)["memory"]
    m = sp.memory([ELASTIC], context=8)
    assert mem == {"unit": "bytes", "context": 8, "batch": 1, "dtype": "float32",
                   "weights": 102_432, "cache": int(m["cache"][0]),
                   "total": int(m["total"][0]),
                   "layer_cache": m["layer_cache"][0].tolist()}
    code, out, _ = run_nas(["arch", "info", "-s", SPACE, "-a", json.dumps(ELASTIC)])
    assert code == 0
    text = " ".join(out.split())
    assert (f"memory at context 32 (float32, batch 1): weights {102_432 / 2**20:.4g} MiB + KV "
            f"cache {14_336 / 2**20:.4g} MiB = {116_768 / 2**20:.4g} MiB (116,768 bytes)"
            ) in text
