"""Analytic MACs and parameter counts against a hook-based count on the extracted subnet."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from published import OFA_SUBNET
from torch import nn

from nas.space import SearchSpace, get_space
from nas.supernet import OFASupernet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def supernets() -> dict[str, OFASupernet]:
    torch.manual_seed(0)
    return {name: OFASupernet(name).eval()
            for name in ("tiny", "cifar_mbv3", "ofa_mbv3", "ofa_proxyless")}


def hook_count(model: nn.Module, r: int) -> tuple[int, dict[str, int]]:
    """MACs of every Conv2d and Linear in one forward pass of a 1-image batch, per top module.

    Conv2d: output elements (per sample) * in_channels / groups * kh * kw; Linear: in * out.
    Returns the total and a dict keyed by ``blocks.<i>`` for blocks, else the child's name.
    """
    per_module: dict[str, int] = defaultdict(int)
    handles = []
    for name, mod in model.named_modules():
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "blocks" else parts[0]

        def hook(m: nn.Module, inputs, out: torch.Tensor, key: str = key) -> None:
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                per_module[key] += out[0].numel() * m.in_channels // m.groups * kh * kw
            else:
                per_module[key] += m.in_features * m.out_features

        if isinstance(mod, nn.Conv2d | nn.Linear):
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, r, r))
    finally:
        for h in handles:
            h.remove()
    return sum(per_module.values()), dict(per_module)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_against_hooks(space: SearchSpace, net: OFASupernet, archs: list) -> None:
    costs = space.costs(archs)
    for i, arch in enumerate(archs):
        sub = net.extract(arch)
        macs, per_module = hook_count(sub, arch.r)
        assert costs["macs"][i] == macs, arch
        assert costs["params"][i] == n_params(sub), arch
        # per stage: blocks.0 is the fixed first block, then the running layers in order
        # (a fixed-depth last stage's too)
        start = 1
        for s, depth in enumerate(space.stage_depths(arch)):
            names = [f"blocks.{start + i}" for i in range(depth)]
            assert costs["stage_macs"][i, s] == sum(per_module[n] for n in names), (arch, s)
            assert costs["stage_params"][i, s] == sum(
                n_params(sub.blocks[start + i]) for i in range(depth)
            ), (arch, s)
            start += depth


def test_macs_and_params_match_hooks_on_tiny(supernets) -> None:
    space = get_space("tiny")
    archs = [*space.sample_many(40, seed=0), space.largest(), space.smallest()]
    check_against_hooks(space, supernets["tiny"], archs)


def test_macs_and_params_match_hooks_on_cifar_mbv3(supernets) -> None:
    space = get_space("cifar_mbv3")
    archs = [*space.sample_many(15, seed=1), space.largest(), space.smallest()]
    check_against_hooks(space, supernets["cifar_mbv3"], archs)


def test_macs_and_params_match_hooks_on_ofa_mbv3(supernets) -> None:
    space = get_space("ofa_mbv3")
    archs = [space.parse(OFA_SUBNET), space.largest(), space.smallest(),
             *space.sample_many(2, seed=2)]
    check_against_hooks(space, supernets["ofa_mbv3"], archs)


def test_macs_and_params_match_hooks_on_ofa_proxyless(supernets) -> None:
    # (the ProxylessNAS head: feature mix with BN before the pooling; a fixed last stage)
    space = get_space("ofa_proxyless")
    archs = [space.largest(r=128), space.smallest(), space.sample(seed=4)]
    check_against_hooks(space, supernets["ofa_proxyless"], archs)


def test_single_calls_agree_with_the_batch() -> None:
    for name in ("tiny", "cifar_mbv3", "ofa_mbv3", "ofa_proxyless"):
        space = get_space(name)
        archs = space.sample_many(40, seed=3)  # mixed resolutions and depths in one batch
        batch = space.costs(archs)
        assert batch["macs"].dtype == np.int64
        assert batch["params"].dtype == np.int64
        assert batch["macs"].shape == batch["params"].shape == (40,)
        assert batch["stage_macs"].shape == (40, len(space.spec.stages))
        assert list(batch["macs"]) == [space.macs(a) for a in archs]
        assert list(batch["params"]) == [space.params(a) for a in archs]
        again = space.costs(space.to_arrays(archs))
        for key in batch:
            assert np.array_equal(again[key], batch[key])
        # the stages are part of the total, the rest is stem, first block and head
        rest = batch["macs"] - batch["stage_macs"].sum(1)
        assert np.all(rest > 0)
        assert np.all(batch["stage_macs"] > 0)


def test_params_do_not_depend_on_resolution_and_macs_do() -> None:
    space = get_space("ofa_mbv3")
    arch = space.parse(OFA_SUBNET)
    at = [space.parse({**arch.to_dict(), "r": r}) for r in space.resolutions]
    costs = space.costs(at)
    assert len(set(costs["params"].tolist())) == 1
    assert np.all(np.diff(costs["macs"]) > 0)


def _growing_chain(space: SearchSpace) -> list:
    """From the smallest architecture to the largest, making one gene bigger at a time."""
    a = space.smallest()
    ks, e, d, r = list(a.ks), list(a.e), list(a.d), a.r
    chain = [a]
    for s in range(space.n_stages):
        for depth in space.depths[1:]:
            d[s] = depth
            chain.append(space.arch(ks, e, d, r))
    for j in range(space.n_layers):
        for k in space.kernel_sizes[1:]:
            ks[j] = k
            chain.append(space.arch(ks, e, d, r))
        for ex in space.expand_ratios[1:]:
            e[j] = ex
            chain.append(space.arch(ks, e, d, r))
    for r in space.resolutions[1:]:
        chain.append(space.arch(ks, e, d, r))
    return chain


@pytest.mark.parametrize("name", ["tiny", "cifar_mbv3", "ofa_mbv3"])
def test_macs_grow_monotonically_from_smallest_to_largest(name: str) -> None:
    space = get_space(name)
    chain = _growing_chain(space)
    assert chain[-1] == space.largest()
    costs = space.costs(chain)
    assert np.all(np.diff(costs["macs"]) > 0)
    assert np.all(np.diff(costs["params"]) >= 0)
    assert costs["params"][0] < costs["params"][-1]
