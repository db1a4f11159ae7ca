"""What every registered search space must do, run against each of them.

Parametrized from the registry: a new space (one YAML file in ``search_spaces/``) is tested by
adding it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.space import Architecture, SearchSpace, get_space, list_spaces
from nas.supernet import OFASupernet

SPACES = list_spaces()


@pytest.fixture(params=SPACES)
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return get_space(request.param)


def test_there_are_spaces_to_test() -> None:
    assert "tiny" in SPACES


def test_sample_parse_round_trip_is_canonical(space: SearchSpace) -> None:
    for arch in space.sample_many(8, seed=0):
        assert isinstance(arch, Architecture) and arch.space == space.name
        assert space.parse(arch.to_dict()) == arch
        assert space.parse(arch.to_json()) == arch
        assert space.parse(arch) == arch
        # layers beyond a stage's depth do not matter: any value there gives the same arch
        md = space.max_depth
        ks = list(arch.ks)
        for s, depth in enumerate(arch.d):
            for i in range(depth, md):
                ks[s * md + i] = max(space.kernel_sizes)
        assert space.arch(ks, arch.e, arch.d, arch.r) == arch


def test_hash_is_stable_and_tells_archs_apart(space: SearchSpace) -> None:
    archs = space.sample_many(10, seed=1)
    again = [space.parse(a.to_json()) for a in archs]
    assert [a.hash for a in archs] == [a.hash for a in again]
    assert all(len(a.hash) == 16 and int(a.hash, 16) >= 0 for a in archs)
    assert len({a.hash for a in archs}) == len(archs)
    assert space.sample(seed=5) == space.sample(seed=5)


@pytest.mark.parametrize("kind", ["onehot", "ordinal"])
def test_encodings_have_the_announced_shape(space: SearchSpace, kind: str) -> None:
    archs = space.sample_many(6, seed=2)
    X = space.encode(archs, kind=kind)
    assert X.shape == (6, space.encoding_size(kind)) and X.dtype == np.float32
    assert np.all(np.isfinite(X))
    np.testing.assert_array_equal(space.encode(space.to_arrays(archs), kind=kind), X)
    assert len({row.tobytes() for row in X}) == 6  # distinct archs, distinct rows


def test_largest_and_smallest_are_valid(space: SearchSpace) -> None:
    for arch in (space.largest(), space.smallest(), space.middle()):
        assert space.parse(arch.to_dict()) == arch
    assert space.largest().r == max(space.resolutions)
    assert space.smallest().r == min(space.resolutions)


def test_costs_are_positive_and_grow_from_smallest_to_largest(space: SearchSpace) -> None:
    small, mid, big = space.smallest(), space.middle(), space.largest()
    macs = [space.macs(a) for a in (small, mid, big)]
    params = [space.params(a) for a in (small, mid, big)]
    assert 0 < macs[0] <= macs[1] <= macs[2] and macs[0] < macs[2]
    assert 0 < params[0] <= params[1] <= params[2] and params[0] < params[2]
    costs = space.costs(space.sample_many(5, seed=3))
    assert costs["macs"].shape == (5,) and np.all(costs["macs"] >= macs[0])
    assert np.all(costs["params"] <= params[2])


def test_supernet_builds_and_extracts_the_smallest_subnet(space: SearchSpace) -> None:
    torch.manual_seed(0)
    net = OFASupernet(space)
    arch = space.smallest()  # the smallest resolution keeps this fast for the big spaces
    sub = net.extract(arch).eval()
    assert sum(p.numel() for p in sub.parameters()) == space.params(arch)
    with torch.no_grad():
        y = sub(torch.zeros(1, 3, arch.r, arch.r))
    assert y.shape == (1, space.spec.num_classes)
