"""The elastic GPT supernet: prefixes, depth, the KV cache and extraction to a static GPT."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nas.errors import ArchitectureError, ConfigError
from nas.supernet import GPT, GPTSupernet
from nas.supernet._gpt import _kept_blocks

GEOMETRY: dict[str, Any] = {"vocab_size": 64, "n_ctx": 24, "n_layer": 3, "n_embd": 32,
                            "n_head": 4, "head_dim": 8, "mlp": 96}
SMALL = {"n_layer": 2, "n_embd": 20, "n_head": [3, 1], "mlp": [50, 7]}


@pytest.fixture(scope="module")
def net() -> GPTSupernet:
    torch.manual_seed(0)
    net = GPTSupernet(**GEOMETRY).eval()
    with torch.no_grad():  # weights of order 1, so logits differ between subnets clearly
        for name, p in net.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "weight" in name else 0.1))
    return net


def _ids(batch: int = 2, seq: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, GEOMETRY["vocab_size"], (batch, seq),
                         generator=torch.Generator().manual_seed(seed))


def test_kept_blocks_are_the_first_ones_and_the_last() -> None:
    assert _kept_blocks(6, 6) == [0, 1, 2, 3, 4, 5]
    assert _kept_blocks(6, 4) == [0, 1, 2, 5]
    assert _kept_blocks(6, 1) == [5]
    with pytest.raises(ArchitectureError, match=r"n_layer must be in \[1, 6\], got 7"):
        _kept_blocks(6, 7)


def test_a_subnet_is_a_standalone_model_of_the_prefix_weights(net: GPTSupernet) -> None:
    """Written independently of the supernet's slicing: a GPT built from hand-picked
    prefixes (q, k and v each keep their first heads) computes what the active subnet does."""
    ids = _ids()
    net.set_active(SMALL)
    e, hd = SMALL["n_embd"], GEOMETRY["head_dim"]
    ref = GPT(GEOMETRY["vocab_size"], GEOMETRY["n_ctx"], e, SMALL["n_head"], SMALL["mlp"], hd)
    sd = net.state_dict()
    with torch.no_grad():
        ref.wte.copy_(sd["wte"][:, :e])
        ref.wpe.copy_(sd["wpe"][:, :e])
        ref.ln_f["weight"].copy_(sd["ln_f.weight"][:e])
        ref.ln_f["bias"].copy_(sd["ln_f.bias"][:e])
        for i, j in enumerate([0, 2]):  # 2 of 3 layers: the first and the last
            h, m = SMALL["n_head"][i], SMALL["mlp"][i]
            src = {k.removeprefix(f"blocks.{j}."): v for k, v in sd.items()
                   if k.startswith(f"blocks.{j}.")}
            full = GEOMETRY["n_head"] * hd
            rows = torch.cat([torch.arange(h * hd) + part * full for part in range(3)])
            dst = dict(ref.blocks[i].named_parameters())
            dst["attn.qkv.weight"].copy_(src["attn.qkv.weight"][rows, :e])
            dst["attn.qkv.bias"].copy_(src["attn.qkv.bias"][rows])
            dst["attn.proj.weight"].copy_(src["attn.proj.weight"][:e, :h * hd])
            dst["mlp.fc.weight"].copy_(src["mlp.fc.weight"][:m, :e])
            dst["mlp.fc.bias"].copy_(src["mlp.fc.bias"][:m])
            dst["mlp.proj.weight"].copy_(src["mlp.proj.weight"][:e, :m])
            for name in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias",
                         "attn.proj.bias", "mlp.proj.bias"):
                dst[name].copy_(src[name][:e])
    got = net(ids)
    assert got.shape == (2, 10, GEOMETRY["vocab_size"])
    torch.testing.assert_close(got, ref(ids), rtol=0, atol=1e-5)
    net.set_largest()
    assert (net(ids) - got).abs().max() > 0.1  # the largest subnet is another model


def test_extract_gives_the_active_subnets_logits(net: GPTSupernet) -> None:
    ids = _ids()
    for arch in (SMALL, net.largest(), {"n_layer": 1, "n_embd": 8, "n_head": [1], "mlp": [1]}):
        net.set_active(arch)
        sub = net.extract()
        assert isinstance(sub, GPT)
        assert not sub.training
        assert sub.arch == arch
        assert len(sub.blocks) == arch["n_layer"]
        torch.testing.assert_close(sub(ids), net(ids), rtol=0, atol=1e-5)
    n_sub = sum(p.numel() for p in net.extract(SMALL).parameters())
    assert n_sub < sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("model", ["supernet", "extracted"])
def test_decoding_with_the_cache_gives_the_full_forwards_logits(net: GPTSupernet,
                                                                model: str) -> None:
    ids = _ids(seq=12)
    net.set_active(SMALL)
    run = net if model == "supernet" else net.extract()
    full = run(ids)
    logits, cache = run(ids[:, :5], use_cache=True)  # prefill
    steps = [logits]
    for t in range(5, 12):  # then one token at a time
        logits, cache = run(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    assert len(cache) == SMALL["n_layer"]
    for (k, v), h in zip(cache, SMALL["n_head"], strict=True):
        assert k.shape == v.shape == (2, h, 12, GEOMETRY["head_dim"])


def test_bad_architectures_and_inputs_are_one_line(net: GPTSupernet) -> None:
    cases = [
        ({**SMALL, "n_embd": 33}, r"n_embd must be an integer in \[1, 32\], got 33"),
        ({**SMALL, "n_head": [3]}, r"n_head must be a list of 2 integers"),
        ({**SMALL, "mlp": [50, 97]}, r"mlp\[1\] must be an integer in \[1, 96\], got 97"),
        ({**SMALL, "n_layer": 0}, r"n_layer must be an integer in \[1, 3\], got 0"),
        ({"n_layer": 1}, r"missing \['mlp', 'n_embd', 'n_head'\]"),
        ({**SMALL, "ks": [3]}, r"unknown \['ks'\]"),
    ]
    for arch, message in cases:
        with pytest.raises(ArchitectureError, match=message):
            net.set_active(arch)
    net.set_largest()
    with pytest.raises(ConfigError,
                       match=r"context of 25 positions .* longer than the model's 24"):
        net(_ids(seq=25))


def test_a_gpt_space_builds_its_supernet_and_runs_its_architectures(tmp_path: Any) -> None:
    from nas.space import get_family_space, kept_blocks

    space = get_family_space("gpt_tiny")
    net = GPTSupernet.from_space("gpt_tiny").eval()
    assert net.space_name == "gpt_tiny"
    largest = space.largest()
    assert net.largest() == largest.to_dict()
    ids = torch.randint(0, net.geometry["vocab_size"], (1, 6))
    for seed in range(3):
        arch = space.sample(seed)
        assert net.set_active(arch) == arch.to_dict()
        assert net.kept_blocks() == kept_blocks(space, arch.n_layer)  # the space's depth rule
        torch.testing.assert_close(net.extract()(ids), net(ids), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="of the 'ofa' family, not 'gpt'"):
        GPTSupernet.from_space("cifar_mbv3")


def test_a_block_ranking_chooses_the_blocks_a_depth_keeps() -> None:
    net = GPTSupernet(**GEOMETRY, block_order=[1, 2, 0]).eval()
    arch = {"n_layer": 2, "n_embd": 32, "n_head": [4, 4], "mlp": [96, 96]}
    assert net.kept_blocks(arch) == [1, 2]
    net.set_active(arch)
    sub = net.extract()
    torch.testing.assert_close(sub.blocks[0].ln_1["weight"], net.blocks[1].ln_1["weight"])
    torch.testing.assert_close(sub(_ids()), net(_ids()), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match=r"block_order must rank the blocks 0\.\.2"):
        GPTSupernet(**GEOMETRY, block_order=[0, 0, 1])
