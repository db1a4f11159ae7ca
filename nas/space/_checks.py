"""What every search space and every space family must do beyond the shared plug-in
contract: the registries' own checks (``Registry(checks=...)`` of :data:`~nas.space.SPACES`
and :data:`~nas.space.FAMILIES`), run by :mod:`nas.testing` on the shipped spaces and
families and on any registered at run time or by a plug-in package.

The space checks (:data:`CHECKS`) use only the interface every family's spaces answer
(:class:`~nas.space.FamilySpace`): one suite for every family. The family checks
(:data:`FAMILY_CHECKS`) check the family's declared parts and run the space checks on one of
its spaces. Each check runs on a few architectures (no torch: building the supernet is the
supernet's tests'), and raises ``AssertionError`` naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from nas._config import ConfigModel
from nas.errors import ArchitectureError, ConfigError
from nas.space._family import FAMILIES, FamilySpace, Genome, ParamsGenome, SpaceFamily

__all__ = ["CHECKS", "FAMILY_CHECKS"]


def _expect(ok: object, message: str) -> None:
    # an explicit raise, not `assert`: the checks must hold under `python -O` too
    if not ok:
        raise AssertionError(message)


def check_is_a_search_space(space: FamilySpace) -> None:
    """A space of a registered family (an instance of its ``Space``), whose name is its
    spec's and whose tags are its family."""
    _expect(isinstance(space, FamilySpace), f"{space!r} is not a SearchSpace")
    _expect(space.name == space.spec.name,
            f"space {space.name!r} has the spec of {space.spec.name!r}")
    _expect(space.tags == frozenset({space.family}),
            f"space {space.name!r}: tags {sorted(space.tags)}, family {space.family!r}")
    _expect(space.family in FAMILIES and isinstance(space, FAMILIES.get(space.family).Space),
            f"space {space.name!r}: family {space.family!r} is not registered, or the space "
            "is not of its Space class")


def check_sample_parse_round_trip_is_canonical(space: FamilySpace) -> None:
    """A sampled architecture parses back to itself from its dict, its JSON and itself, and
    from the space's other forms of the same network (:meth:`equivalent_forms`: values that
    take no part in the network do not matter)."""
    for arch in space.sample_many(8, seed=0):
        _expect(getattr(arch, "space", None) == space.name,
                f"space {space.name!r} sampled {arch!r}")
        for form in (arch.to_dict(), arch.to_json(), arch, *space.equivalent_forms(arch)):
            _expect(space.parse(form) == arch,
                    f"space {space.name!r}: {arch} does not parse back from {form!r}")
        _expect(json.loads(arch.to_json()) == arch.to_dict(),
                f"space {space.name!r}: to_json() is not to_dict() as JSON")


def check_hash_is_stable_and_tells_archs_apart(space: FamilySpace) -> None:
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


def check_encodings_have_the_announced_shape(space: FamilySpace) -> None:
    """Each encoding is ``(n, encoding_size(kind))`` float32 for every architecture (the
    smallest and the largest too: a fixed length), finite, the same row for an architecture
    in any batch, and tells architectures apart."""
    archs = space.sample_many(6, seed=2)
    for kind in space.encoding_kinds:
        X = space.encode(archs, kind=kind)
        _expect(X.shape == (6, space.encoding_size(kind)) and X.dtype == np.float32,
                f"space {space.name!r}: {kind} encoding is {X.shape} {X.dtype}")
        _expect(np.all(np.isfinite(X)), f"space {space.name!r}: {kind} encoding not finite")
        ends = space.encode([space.smallest(), space.largest()], kind=kind)
        _expect(ends.shape == (2, X.shape[1]),
                f"space {space.name!r}: {kind} encoding of the smallest and largest is "
                f"{ends.shape}, not (2, {X.shape[1]})")
        _expect(np.array_equal(space.encode(archs[3:4], kind=kind), X[3:4]),
                f"space {space.name!r}: {kind} encoding of an arch depends on its batch")
        _expect(np.array_equal(space.encode(space.to_arrays(archs), kind=kind), X),
                f"space {space.name!r}: {kind} encoding differs on the batch form")
        _expect(len({row.tobytes() for row in X}) == 6,
                f"space {space.name!r}: {kind} encoding gives distinct archs the same row")


def check_largest_and_smallest_are_valid(space: FamilySpace) -> None:
    """The largest, smallest and middle architectures parse (at the extreme resolutions,
    for a family with resolutions)."""
    for arch in (space.largest(), space.smallest(), space.middle()):
        _expect(space.parse(arch.to_dict()) == arch,
                f"space {space.name!r}: {arch} does not parse back")
    resolutions = space.resolutions
    if resolutions and hasattr(space.largest(), "r"):
        _expect(space.largest().r == max(resolutions),
                f"space {space.name!r}: largest() is not at the largest resolution")
        _expect(space.smallest().r == min(resolutions),
                f"space {space.name!r}: smallest() is not at the smallest resolution")


def check_costs_are_positive_and_grow(space: FamilySpace) -> None:
    """MACs and parameters are positive and grow from the smallest to the middle to the
    largest architecture; :meth:`costs` agrees on a batch."""
    small, mid, big = space.smallest(), space.middle(), space.largest()
    for what, cost in (("macs", space.macs), ("params", space.params)):
        c = [cost(a) for a in (small, mid, big)]
        _expect(0 < c[0] <= c[1] <= c[2] and c[0] < c[2],
                f"space {space.name!r}: {what} of smallest, middle, largest are {c}")
    archs = space.sample_many(5, seed=3)
    costs = space.costs(archs)
    _expect(costs["macs"].shape == (5,) and np.all(costs["macs"] >= space.macs(small)),
            f"space {space.name!r}: costs()['macs'] below the smallest's")
    _expect(np.all(costs["params"] <= space.params(big)),
            f"space {space.name!r}: costs()['params'] above the largest's")
    _expect([space.macs(a) for a in archs] == costs["macs"].tolist(),
            f"space {space.name!r}: macs() and costs()['macs'] disagree")


def check_memory_is_counted_or_refused(space: FamilySpace) -> None:
    """A family that counts memory (:attr:`~FamilySpace.counts_memory`) gives ``weights``,
    ``cache`` and ``total`` as ``(n,)`` int64 bytes, total their sum, weights positive and
    the same for any batch, the cache per sequence (twice as much for two), growing from the
    smallest to the largest architecture, the same row for an architecture in any batch;
    one that does not refuses :meth:`~FamilySpace.memory` in one ``ConfigError`` line."""
    small, big = space.smallest(), space.largest()
    if not space.counts_memory:
        try:
            space.memory([small])
        except ConfigError as exc:
            _expect("\n" not in str(exc), f"space {space.name!r}: memory()'s refusal is not "
                    f"one line: {exc}")
            return
        raise AssertionError(f"space {space.name!r}: counts_memory is False, but memory() "
                             "did not refuse")
    archs = [small, *space.sample_many(4, seed=5), big]
    one, two = space.memory(archs), space.memory(archs, batch=2)
    for key in ("weights", "cache", "total"):
        v = one[key]
        _expect(isinstance(v, np.ndarray) and v.shape == (len(archs),) and v.dtype == np.int64,
                f"space {space.name!r}: memory()[{key!r}] is not ({len(archs)},) int64")
    _expect(np.array_equal(one["total"], one["weights"] + one["cache"]),
            f"space {space.name!r}: memory()'s total is not weights + cache")
    _expect(np.all(one["weights"] > 0) and np.all(one["cache"] >= 0),
            f"space {space.name!r}: memory() has weights <= 0 or a negative cache")
    _expect(np.array_equal(two["weights"], one["weights"])
            and np.array_equal(two["cache"], 2 * one["cache"]),
            f"space {space.name!r}: memory(batch=2) is not the same weights and twice the cache")
    _expect(one["total"][0] < one["total"][-1] and np.all(one["total"] >= one["total"][0])
            and np.all(one["total"] <= one["total"][-1]),
            f"space {space.name!r}: memory of smallest, samples, largest: "
            f"{one['total'].tolist()}")
    _expect(int(space.memory([archs[2]])["total"][0]) == int(one["total"][2]),
            f"space {space.name!r}: memory() of an architecture differs in another batch")


def check_mutate_and_crossover_stay_in_the_space(space: FamilySpace) -> None:
    """Mutants and children are canonical architectures of the space, repeat with a seed;
    no mutation keeps the parent, a child of one parent is that parent."""
    archs = space.sample_many(6, seed=4)
    for i, a in enumerate(archs):
        b = archs[(i + 1) % len(archs)]
        for child in (space.mutate(a, seed=i, prob=0.5), space.crossover(a, b, seed=i)):
            _expect(space.parse(child.to_dict()) == child and child.space == space.name,
                    f"space {space.name!r}: {child} from {a} is not in the space")
        _expect(space.mutate(a, seed=i, prob=0.5) == space.mutate(a, seed=i, prob=0.5),
                f"space {space.name!r}: mutate(seed={i}) differs between calls")
        _expect(space.mutate(a, seed=i, prob=0.0) == a,
                f"space {space.name!r}: mutate(prob=0) changed {a}")
        _expect(space.crossover(a, a, seed=i) == a,
                f"space {space.name!r}: crossover of {a} with itself changed it")
    mutants = {space.mutate(archs[0], seed=s, prob=1.0) for s in range(10)}
    _expect(len(mutants) > 1, f"space {space.name!r}: mutate(prob=1) always gives one arch")


def check_bad_input_is_one_line(space: FamilySpace) -> None:
    """Bad architectures (not JSON, not an object, an unknown or a missing field, a field
    of the wrong type or out of the space) raise one ``ArchitectureError`` line that names
    the field."""
    good = space.largest().to_dict()
    bad: list[tuple[Any, str]] = [("{not json", "JSON"), ("[1, 2]", "object"),
                                  ({**good, "no_such_field": 1}, "no_such_field")]
    for key in good:
        bad.append(({k: v for k, v in good.items() if k != key}, key))
        bad.append(({**good, key: -1}, key))
        bad.append(({**good, key: "x"}, key))
    for value, names in bad:
        try:
            space.parse(value)
        except ArchitectureError as exc:
            msg = str(exc)
            _expect("\n" not in msg and names in msg,
                    f"space {space.name!r}: {value!r} gave {msg!r}: not one line naming "
                    f"{names!r}")
        else:
            raise AssertionError(f"space {space.name!r}: {value!r} was accepted")


def check_batch_form_round_trips(space: FamilySpace) -> None:
    """The batch form (:meth:`~FamilySpace.to_arrays`) gives back the architectures
    (:meth:`~FamilySpace.from_arrays`), and :meth:`~FamilySpace.costs` of it are those of
    the architectures."""
    archs = space.sample_many(6, seed=5)
    batch = space.to_arrays(archs)
    _expect(space.from_arrays(batch) == archs,
            f"space {space.name!r}: from_arrays(to_arrays(archs)) differs from archs")
    _expect(space.from_arrays(archs) == archs,
            f"space {space.name!r}: from_arrays of the architectures themselves differs")
    want, got = space.costs(archs), space.costs(batch)
    for key in ("macs", "params"):
        _expect(np.array_equal(want[key], got[key]),
                f"space {space.name!r}: costs()[{key!r}] differ on the batch form")


def check_search_params_round_trip(space: FamilySpace) -> None:
    """:meth:`~FamilySpace.search_params` is a non-empty mapping of names to sorted, distinct
    int choices; :meth:`~FamilySpace.to_params` gives every one of them a value among its
    choices, and :meth:`~FamilySpace.from_params` gives the architecture back; any choice of
    every parameter (what a sampler draws) is an architecture of the space, canonical; a
    missing parameter is one ``ArchitectureError`` line naming it."""
    params = space.search_params()
    _expect(isinstance(params, dict) and params, f"space {space.name!r}: no search_params")
    for name, choices in params.items():
        _expect(isinstance(name, str) and name and isinstance(choices, tuple) and choices
                and all(isinstance(c, int) and not isinstance(c, bool) for c in choices)
                and list(choices) == sorted(set(choices)),
                f"space {space.name!r}: search parameter {name!r} has choices {choices!r}, "
                "not sorted distinct ints")
    archs = [*space.sample_many(8, seed=6), space.smallest(), space.largest(), space.middle()]
    for arch in archs:
        p = space.to_params(arch)
        _expect(list(p) == list(params),
                f"space {space.name!r}: to_params({arch}) has keys {list(p)}, not "
                f"search_params()'s")
        bad = [k for k, v in p.items() if v not in params[k]]
        _expect(not bad, f"space {space.name!r}: to_params({arch}) gives {bad[:1]} a value "
                "outside its choices")
        _expect(space.from_params(p) == arch,
                f"space {space.name!r}: from_params(to_params({arch})) is not {arch}")
    rng = np.random.default_rng(7)
    for _ in range(8):
        drawn = {k: int(rng.choice(c)) for k, c in params.items()}
        arch = space.from_params(drawn)
        _expect(space.parse(arch.to_dict()) == arch and arch.space == space.name,
                f"space {space.name!r}: from_params({drawn}) is not in the space")
        _expect(space.from_params(space.to_params(arch)) == arch,
                f"space {space.name!r}: from_params({drawn}) is not canonical")
    first = next(iter(params))
    try:
        space.from_params({k: v for k, v in space.to_params(archs[0]).items() if k != first})
    except ArchitectureError as exc:
        _expect("\n" not in str(exc) and first in str(exc),
                f"space {space.name!r}: params without {first!r} gave {str(exc)!r}")
    else:
        raise AssertionError(f"space {space.name!r}: params without {first!r} were accepted")


def _check_genome(space: FamilySpace, genome: Genome, what: str) -> None:
    _expect(isinstance(genome, Genome) and genome.space is space,
            f"space {space.name!r}: {what} is not a Genome of the space")
    sizes = genome.sizes
    _expect(sizes.ndim == 1 and len(sizes) and np.all(sizes >= 1),
            f"space {space.name!r}: {what} sizes {sizes!r}")
    X = genome.canonical(np.random.default_rng(8).integers(0, sizes, size=(40, len(sizes))))
    _expect(np.array_equal(genome.canonical(X.copy()), X),
            f"space {space.name!r}: {what} canonical() is not idempotent")
    archs = genome.archs(X)
    _expect(len(archs) == len(X) and all(
        space.parse(a.to_dict()) == a and a.space == space.name for a in archs),
        f"space {space.name!r}: {what} decodes to architectures outside the space")
    _expect(len(np.unique(X, axis=0)) == len(set(archs)),
            f"space {space.name!r}: {what} gives one network two canonical genomes (or "
            "two networks one)")
    _expect(np.array_equal(genome.encode(space.to_arrays(archs)), X)
            and np.array_equal(genome.encode(archs), X),
            f"space {space.name!r}: {what} encode() does not give the genomes back")
    costs = space.costs(genome.decode(X))
    _expect(np.array_equal(costs["macs"], space.costs(archs)["macs"]),
            f"space {space.name!r}: {what} decode() costs differ from its architectures'")
    _expect(genome.archs(genome.smallest())[0] == space.smallest()
            and genome.archs(genome.largest())[-1] == space.largest(),
            f"space {space.name!r}: {what} smallest()/largest() are not the space's")


def check_genome_round_trips(space: FamilySpace) -> None:
    """The space's genome (:meth:`~FamilySpace.genome`), and the one built from its search
    parameters (:class:`ParamsGenome`, every family's default): canonical genomes decode to
    architectures of the space and encode back, one genome per network, and their smallest
    and largest are the space's."""
    _check_genome(space, space.genome(), "genome()")
    _check_genome(space, ParamsGenome(space), "ParamsGenome")


#: the checks of every search space, of every family, in order
CHECKS: tuple[Callable[[Any], None], ...] = (
    check_is_a_search_space, check_sample_parse_round_trip_is_canonical,
    check_hash_is_stable_and_tells_archs_apart, check_encodings_have_the_announced_shape,
    check_largest_and_smallest_are_valid, check_costs_are_positive_and_grow,
    check_memory_is_counted_or_refused, check_mutate_and_crossover_stay_in_the_space,
    check_bad_input_is_one_line,
    check_batch_form_round_trips, check_search_params_round_trip, check_genome_round_trips,
)


# ---------------------------------------------------------------------- families
def _spaces_of(family: type[SpaceFamily]) -> list[FamilySpace]:
    from nas.space._registry import SPACES

    return [sp for _, sp in SPACES.items() if sp.family == family.name]


def check_family_declares_its_parts(family: type[SpaceFamily]) -> None:
    """A :class:`SpaceFamily` with a ``Spec`` model (``name``, ``description`` and a
    ``family`` field), a ``Space`` class of :class:`FamilySpace`, its supernet as
    ``"module:Class"`` (its checkpoint reader and loader, when named, as
    ``"module:function"``), and its export signature and latency features said."""
    _expect(isinstance(family, type) and issubclass(family, SpaceFamily),
            f"{family!r} is not a SpaceFamily")
    spec = getattr(family, "Spec", None)
    _expect(isinstance(spec, type) and issubclass(spec, ConfigModel)
            and {"name", "description", "family"} <= set(spec.model_fields),
            f"family {family.name!r}: Spec must be a ConfigModel with name, description, "
            "family")
    space = getattr(family, "Space", None)
    _expect(isinstance(space, type) and issubclass(space, FamilySpace),
            f"family {family.name!r}: Space must subclass FamilySpace")
    module, _, cls = family.supernet.partition(":")
    _expect(module and cls.isidentifier(),
            f"family {family.name!r}: supernet {family.supernet!r} is not 'module:Class'")
    for attr in ("checkpoint_meta", "load_supernet", "timing_supernet", "timing_onnx"):
        # optional; when named, in importable form
        target = getattr(family, attr)
        module, _, fn = target.partition(":")
        _expect(not target or (module and fn.isidentifier()),
                f"family {family.name!r}: {attr} {target!r} is not 'module:function'")
    for attr in ("export_signature", "latency_features"):
        text = getattr(family, attr)
        _expect(isinstance(text, str) and text.strip() and "\n" not in text,
                f"family {family.name!r}: {attr} must be one line")


def check_family_has_spaces(family: type[SpaceFamily]) -> None:
    """At least one registered space of the family, each an instance of its ``Space``, its
    spec one of its ``Spec``, built the same from that spec."""
    spaces = _spaces_of(family)
    _expect(spaces, f"family {family.name!r} has no registered space")
    for sp in spaces:
        _expect(isinstance(sp, family.Space) and isinstance(sp.spec, family.Spec),
                f"family {family.name!r}: space {sp.name!r} is not of its Space and Spec")
        _expect(family.make_space(sp.spec).largest() == sp.largest(),
                f"family {family.name!r}: space {sp.name!r} built anew differs")


def check_family_spaces_pass_the_space_checks(family: type[SpaceFamily]) -> None:
    """The space checks (:data:`CHECKS`) pass on the family's smallest space."""
    spaces = _spaces_of(family)
    _expect(spaces, f"family {family.name!r} has no registered space")
    small = min(spaces, key=lambda sp: (sp.size(), sp.name))
    for check in CHECKS:
        check(small)


#: the checks of every space family, in order
FAMILY_CHECKS: tuple[Callable[[Any], None], ...] = (
    check_family_declares_its_parts, check_family_has_spaces,
    check_family_spaces_pass_the_space_checks,
)
