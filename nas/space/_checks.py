"""What every search space must do beyond the shared plug-in contract: the registry's own
checks (``Registry(checks=...)`` of :data:`~nas.space.SPACES`), run by :mod:`nas.testing`
on the shipped spaces and on any registered at run time or by a plug-in package.

Each check takes a space, runs on a few of its architectures (no torch: building the
supernet is the supernet's tests'), and raises ``AssertionError`` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nas.space._arch import Architecture
from nas.space._space import SearchSpace

__all__ = ["CHECKS"]


def _expect(ok: object, message: str) -> None:
    # an explicit raise, not `assert`: the checks must hold under `python -O` too
    if not ok:
        raise AssertionError(message)


def check_is_a_search_space(space: SearchSpace) -> None:
    """A :class:`~nas.space.SearchSpace` whose name is its spec's and whose tags are its
    family."""
    _expect(isinstance(space, SearchSpace), f"{space!r} is not a SearchSpace")
    _expect(space.name == space.spec.name,
            f"space {space.name!r} has the spec of {space.spec.name!r}")
    _expect(space.tags == frozenset({space.family}),
            f"space {space.name!r}: tags {sorted(space.tags)}, family {space.family!r}")


def check_sample_parse_round_trip_is_canonical(space: SearchSpace) -> None:
    """A sampled architecture parses back to itself from its dict, its JSON and itself, and
    the values of layers that do not run do not matter."""
    for arch in space.sample_many(8, seed=0):
        _expect(isinstance(arch, Architecture) and arch.space == space.name,
                f"space {space.name!r} sampled {arch!r}")
        for form in (arch.to_dict(), arch.to_json(), arch):
            _expect(space.parse(form) == arch,
                    f"space {space.name!r}: {arch} does not parse back from {type(form)}")
        md = space.max_depth
        ks = list(arch.ks)
        for s, depth in enumerate(arch.d):
            for i in range(depth, md):
                ks[s * md + i] = max(space.kernel_sizes)
        _expect(space.arch(ks, arch.e, arch.d, arch.r) == arch,
                f"space {space.name!r}: the kernels of layers that do not run change {arch}")


def check_hash_is_stable_and_tells_archs_apart(space: SearchSpace) -> None:
    """An architecture's hash survives JSON, is 16 hex digits, and differs between
    architectures; sampling with a seed repeats."""
    archs = space.sample_many(10, seed=1)
    again = [space.parse(a.to_json()) for a in archs]
    _expect([a.hash for a in archs] == [a.hash for a in again],
            f"space {space.name!r}: hashes change through JSON")
    _expect(all(len(a.hash) == 16 and int(a.hash, 16) >= 0 for a in archs),
            f"space {space.name!r}: a hash is not 16 hex digits")
    _expect(len({a.hash for a in archs}) == len(archs),
            f"space {space.name!r}: distinct architectures share a hash")
    _expect(space.sample(seed=5) == space.sample(seed=5),
            f"space {space.name!r}: sample(seed=5) differs between calls")


def check_encodings_have_the_announced_shape(space: SearchSpace) -> None:
    """Each encoding is ``(n, encoding_size(kind))`` float32, finite, the same from
    architectures and from their arrays, and tells architectures apart."""
    archs = space.sample_many(6, seed=2)
    for kind in ("onehot", "ordinal"):
        X = space.encode(archs, kind=kind)
        _expect(X.shape == (6, space.encoding_size(kind)) and X.dtype == np.float32,
                f"space {space.name!r}: {kind} encoding is {X.shape} {X.dtype}")
        _expect(np.all(np.isfinite(X)), f"space {space.name!r}: {kind} encoding not finite")
        _expect(np.array_equal(space.encode(space.to_arrays(archs), kind=kind), X),
                f"space {space.name!r}: {kind} encoding differs on ArchArrays")
        _expect(len({row.tobytes() for row in X}) == 6,
                f"space {space.name!r}: {kind} encoding gives distinct archs the same row")


def check_largest_and_smallest_are_valid(space: SearchSpace) -> None:
    """The largest, smallest and middle architectures parse, at the extreme
    resolutions."""
    for arch in (space.largest(), space.smallest(), space.middle()):
        _expect(space.parse(arch.to_dict()) == arch,
                f"space {space.name!r}: {arch} does not parse back")
    _expect(space.largest().r == max(space.resolutions),
            f"space {space.name!r}: largest() is not at the largest resolution")
    _expect(space.smallest().r == min(space.resolutions),
            f"space {space.name!r}: smallest() is not at the smallest resolution")


def check_costs_are_positive_and_grow(space: SearchSpace) -> None:
    """MACs and parameters are positive and grow from the smallest to the middle to the
    largest architecture; :meth:`costs` agrees on a batch."""
    small, mid, big = space.smallest(), space.middle(), space.largest()
    for what, cost in (("macs", space.macs), ("params", space.params)):
        c = [cost(a) for a in (small, mid, big)]
        _expect(0 < c[0] <= c[1] <= c[2] and c[0] < c[2],
                f"space {space.name!r}: {what} of smallest, middle, largest are {c}")
    costs = space.costs(space.sample_many(5, seed=3))
    _expect(costs["macs"].shape == (5,) and np.all(costs["macs"] >= space.macs(small)),
            f"space {space.name!r}: costs()['macs'] below the smallest's")
    _expect(np.all(costs["params"] <= space.params(big)),
            f"space {space.name!r}: costs()['params'] above the largest's")


#: the checks of every search space, in order
CHECKS: tuple[Callable[[SearchSpace], None], ...] = (
    check_is_a_search_space, check_sample_parse_round_trip_is_canonical,
    check_hash_is_stable_and_tells_archs_apart, check_encodings_have_the_announced_shape,
    check_largest_and_smallest_are_valid, check_costs_are_positive_and_grow,
)
