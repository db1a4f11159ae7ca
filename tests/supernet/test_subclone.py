"""Weight subcloning: importance measured on a calibration batch, the supernet reordered so that
every prefix is the most important subset (the function unchanged), and subclones."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from expect import one_error

from nas.errors import ArchitectureError, DataError
from nas.supernet import (
    GPT,
    GPTSupernet,
    load_gpt_supernet,
    measure_importance,
    reorder_by_importance,
    save_gpt_supernet,
    subclone,
)

GEOMETRY: dict[str, Any] = {"vocab_size": 64, "n_ctx": 24, "n_layer": 4, "n_embd": 32,
                            "n_head": 4, "head_dim": 8, "mlp": 96}
DEAD_CHANNELS = [0, 3, 5]  # at the front: only a reordering can move them to the end
DEAD_HEAD = (1, 0)  # (block, head)
DEAD_NEURONS = (2, list(range(10)))  # (block, neurons)
NO_OP_BLOCK = 1


def _net(seed: int = 0) -> GPTSupernet:
    torch.manual_seed(seed)
    net = GPTSupernet(**GEOMETRY).eval()
    with torch.no_grad():  # weights of order 1, so that subnets differ clearly
        for name, p in net.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "weight" in name else 0.1))
    return net


def _ids(batch: int = 3, seq: int = 20, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, GEOMETRY["vocab_size"], (batch, seq),
                         generator=torch.Generator().manual_seed(seed))


def _planted() -> GPTSupernet:
    """A net with parts that contribute nothing: three embedding channels that stay zero all
    along the residual stream, one head, ten MLP neurons, and a block that adds nothing."""
    net = _net()
    hd = GEOMETRY["head_dim"]
    with torch.no_grad():
        net.wte[:, DEAD_CHANNELS] = 0
        net.wpe[:, DEAD_CHANNELS] = 0
        for block in net.blocks:
            for name in ("attn.proj", "mlp.proj"):
                layer = block.get_submodule(name)
                layer["weight"][DEAD_CHANNELS] = 0
                layer["bias"][DEAD_CHANNELS] = 0
        j, h = DEAD_HEAD
        net.blocks[j].attn["proj"]["weight"][:, h * hd:(h + 1) * hd] = 0
        j, neurons = DEAD_NEURONS
        net.blocks[j].mlp["fc"]["weight"][neurons] = 0
        net.blocks[j].mlp["fc"]["bias"][neurons] = 0  # gelu(0) = 0
        for name in ("attn.proj", "mlp.proj"):
            layer = net.blocks[NO_OP_BLOCK].get_submodule(name)
            layer["weight"].zero_()
            layer["bias"].zero_()
    return net


def _dropping_the_dead_parts(net: GPTSupernet) -> dict[str, Any]:
    """The subnet of every block but the no-op one, without the dead head and neurons."""
    largest = net.largest()
    n_head = {j: largest["n_head"][0] for j in range(GEOMETRY["n_layer"])}
    mlp = {j: largest["mlp"][0] for j in range(GEOMETRY["n_layer"])}
    n_head[DEAD_HEAD[0]] -= 1
    mlp[DEAD_NEURONS[0]] -= len(DEAD_NEURONS[1])
    kept = [j for j in range(GEOMETRY["n_layer"]) if j != NO_OP_BLOCK]
    return {"n_layer": len(kept), "n_embd": GEOMETRY["n_embd"],
            "n_head": [n_head[j] for j in kept], "mlp": [mlp[j] for j in kept]}


def test_reordering_leaves_the_largest_subnets_logits_unchanged() -> None:
    net = _net()
    net.set_active({"n_layer": 2, "n_embd": 16, "n_head": [2, 1], "mlp": [40, 8]})
    net.set_largest()
    ids = _ids(seed=7)  # not the calibration batch
    before = net(ids)
    wte = net.wte.detach().clone()
    importance = reorder_by_importance(net, _ids())
    torch.testing.assert_close(net(ids), before, rtol=0, atol=1e-5)
    assert not torch.equal(net.wte, wte)  # the weights did move
    assert net.geometry["block_order"] == importance.block_order
    assert sorted(importance.block_order) == list(range(GEOMETRY["n_layer"]))
    assert not net.training  # mode and active subnet kept
    assert net.active_arch == net.largest()
    json.dumps(importance.to_dict())  # plain lists


def test_after_reordering_the_importance_measured_again_is_in_descending_order() -> None:
    net = _net()
    ids = _ids()
    first = reorder_by_importance(net, ids)
    again = measure_importance(net, ids)
    torch.testing.assert_close(again.channels, first.channels[first.channel_order()])
    torch.testing.assert_close(again.heads, first.heads.gather(1, first.head_order()))
    torch.testing.assert_close(again.neurons, first.neurons.gather(1, first.neuron_order()))
    for scores in (again.channels, *again.heads, *again.neurons):
        assert (scores[:-1] >= scores[1:] - 1e-4).all()


def test_parts_that_contribute_nothing_are_moved_last_and_a_depth_drops_the_no_op_block(
) -> None:
    net = _planted()
    ids = _ids(seed=7)
    before = net(ids)
    importance = reorder_by_importance(net, _ids())
    torch.testing.assert_close(net(ids), before, rtol=0, atol=1e-5)
    # the dead channels are the last three, and measured as unimportant
    assert set(importance.channel_order()[-3:].tolist()) == set(DEAD_CHANNELS)
    assert float(importance.channels[DEAD_CHANNELS].max()) == 0.0
    assert torch.equal(net.wte[:, -3:], torch.zeros(GEOMETRY["vocab_size"], 3))
    # the no-op block is ranked last, the first and the last block first
    assert importance.block_order[-1] == NO_OP_BLOCK
    assert set(importance.block_order[:2]) == {0, GEOMETRY["n_layer"] - 1}
    assert float(importance.blocks[NO_OP_BLOCK]) < 1e-6 < float(importance.blocks.max())
    # a subnet without the dead head, neurons and block computes what the largest does
    small = _dropping_the_dead_parts(net)
    assert net.kept_blocks(small) == [0, 2, 3]
    net.set_active(small)
    torch.testing.assert_close(net(ids), before, rtol=0, atol=1e-5)


def test_a_subclone_keeps_the_important_parts_where_a_plain_prefix_does_not() -> None:
    net = _planted()
    ids = _ids(seed=7)
    reference = net(ids)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    arch = _dropping_the_dead_parts(net)
    sub = subclone(net, arch, _ids())
    assert isinstance(sub, GPT)
    assert sub.arch == arch
    torch.testing.assert_close(sub(ids), reference, rtol=0, atol=1e-5)
    plain = net.extract(arch)  # the first heads, neurons and blocks, without reordering
    assert (plain(ids) - reference).abs().max() > 0.1
    # the supernet itself is left as it was
    assert net.geometry["block_order"] is None
    for name, value in net.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_a_narrower_subclone_has_its_layernorms_scaled_as_the_paper_scales_weights() -> None:
    net = _net()
    arch = {"n_layer": 2, "n_embd": 8, "n_head": [2, 2], "mlp": [48, 48]}
    scaled = subclone(net, arch, _ids())
    plain = subclone(net, arch, _ids(), rescale=False)
    factor = math.sqrt(GEOMETRY["n_embd"] / arch["n_embd"])
    for a, b in zip(scaled.parameters(), plain.parameters(), strict=True):
        assert a.shape == b.shape
    scaled_p, plain_p = dict(scaled.named_parameters()), dict(plain.named_parameters())
    for name, value in plain_p.items():
        expected = value * factor if ".ln_" in f".{name}" else value
        torch.testing.assert_close(scaled_p[name], expected, msg=name)
    # at full width nothing is scaled
    full = {**arch, "n_embd": GEOMETRY["n_embd"]}
    for a, b in zip(subclone(net, full, _ids()).parameters(),
                    subclone(net, full, _ids(), rescale=False).parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_reordered_supernet_keeps_its_block_ranking_through_a_checkpoint(tmp_path: Any
                                                                           ) -> None:
    net = _planted()
    importance = reorder_by_importance(net, _ids())
    path = save_gpt_supernet(net, tmp_path / "reordered.safetensors", dtype="float32")
    loaded = load_gpt_supernet(path)
    assert loaded.geometry["block_order"] == importance.block_order
    small = _dropping_the_dead_parts(net)
    assert loaded.kept_blocks(small) == net.kept_blocks(small)
    ids = _ids(seed=7)
    loaded.set_active(small)
    net.set_active(small)
    torch.testing.assert_close(loaded(ids), net(ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("ids", "message"), [
    ([[1, 2, 3]], r"must be a torch tensor of token ids, got list"),
    (torch.rand(2, 5), r"must hold integer token ids, got dtype torch.float32"),
    (torch.tensor([1, 2, 3]), r"must be \(batch, seq\), got shape \(3,\)"),
    (torch.zeros(0, 5, dtype=torch.long), r"is empty \(shape \(0, 5\)\)"),
    (torch.zeros(2, 0, dtype=torch.long), r"is empty \(shape \(2, 0\)\)"),
    (torch.full((1, 4), 64), r"has token id 64, outside the vocabulary \[0, 63\]"),
    (torch.full((1, 4), -1), r"has token id -1, outside the vocabulary \[0, 63\]"),
    (torch.zeros(1, 25, dtype=torch.long),
     r"has sequences of 25 tokens, longer than the model's context of 24"),
])
def test_bad_calibration_ids_are_one_line(ids: Any, message: str) -> None:
    net = _net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(DataError, match=r"^calibration_ids " + message) as err:
        reorder_by_importance(net, ids)
    assert "\n" not in str(err.value)
    for name, value in net.state_dict().items():  # nothing changed
        assert torch.equal(value, state[name])
    assert net.geometry["block_order"] is None


def test_a_subclone_of_an_architecture_the_supernet_lacks_is_one_line() -> None:
    with pytest.raises(ArchitectureError, match=r"n_embd must be an integer in \[1, 32\], "
                       r"got 40"):
        subclone(_net(), {"n_layer": 1, "n_embd": 40, "n_head": [1], "mlp": [8]}, _ids())


def test_the_first_and_last_block_are_kept_first_as_the_paper_does_unless_told_not_to() -> None:
    net = _net()
    with torch.no_grad():  # the first block adds nothing: measured alone, it matters least
        for name in ("attn.proj", "mlp.proj"):
            layer = net.blocks[0].get_submodule(name)
            layer["weight"].zero_()
            layer["bias"].zero_()
    paper = measure_importance(net, _ids())
    assert float(paper.blocks[0]) < 1e-6
    assert set(paper.block_order[:2]) == {0, GEOMETRY["n_layer"] - 1}
    measured = measure_importance(net, _ids(), keep_ends=False)
    assert measured.block_order[-1] == 0
    middle = [1, 2]  # ranked by their measured effect either way
    assert [j for j in measured.block_order if j in middle] == \
        [j for j in paper.block_order if j in middle]


def test_nas_supernet_subclone_writes_a_reordered_checkpoint(run_nas: Any, tmp_path: Any
                                                             ) -> None:
    net = _planted()
    ck = save_gpt_supernet(net, tmp_path / "net.safetensors", dtype="float32")
    np.save(tmp_path / "ids.npy", _ids(batch=1, seq=60).numpy().ravel())  # 1-D: windows of 24
    out = tmp_path / "reordered.safetensors"
    code, stdout, err = run_nas(["supernet", "subclone", str(ck), "--calibration",
                                 str(tmp_path / "ids.npy"), "--out", str(out), "--json"])
    assert code == 0, err
    report = json.loads(stdout)
    assert report["calibration_tokens"] == 48
    assert report["block_order"][-1] == NO_OP_BLOCK
    loaded = load_gpt_supernet(out)
    assert loaded.geometry["block_order"] == report["block_order"]
    assert loaded.checkpoint_meta["subcloned"]["calibration"] == "ids.npy"
    ids = _ids(seed=7)
    torch.testing.assert_close(loaded(ids), net(ids), rtol=0, atol=1e-5)
    loaded.set_active(_dropping_the_dead_parts(loaded))
    torch.testing.assert_close(loaded(ids), net(ids), rtol=0, atol=1e-5)
    # the space's ranking kept on request
    code, _, err = run_nas(["supernet", "subclone", str(ck), "-c", str(tmp_path / "ids.npy"),
                            "-o", str(out), "--overwrite", "--keep-block-order"])
    assert code == 0, err
    assert load_gpt_supernet(out).geometry["block_order"] is None


def test_nas_supernet_subclone_refuses_bad_calibration_files_in_one_line(
        run_nas: Any, tmp_path: Any) -> None:
    ck = save_gpt_supernet(_net(), tmp_path / "net.safetensors", dtype="float32")
    cases = {
        "text.npy": (b"not numpy", "is not a NumPy .npy file"),
        "floats.npy": (np.zeros((2, 4)), "must hold integer token ids, got float64"),
        "big.npy": (np.full((2, 4), 64), "has token id 64, outside the vocabulary [0, 63]"),
        "long.npy": (np.zeros((2, 30), dtype=np.int64),
                     "has sequences of 30 tokens, longer than the model's context of 24"),
        "empty.npy": (np.zeros(0, dtype=np.int64), "is empty"),
    }
    out = tmp_path / "out.safetensors"
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.save(path, content)
        one_error(run_nas(["supernet", "subclone", str(ck), "-c", str(path), "-o", str(out)]),
                  f"--calibration {path}", message)
        assert not out.exists()
