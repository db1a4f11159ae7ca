"""Space families: the plug-in that owns an architecture format (registry :data:`FAMILIES`).

A search space belongs to a family (its spec's ``family``). The family is what knows the
shape of an architecture: its JSON format, parsing and canonical form, validation, sampling,
mutation and crossover, fixed-length encodings for predictors, MACs and parameters, and the
names of what the layers above build from it (its supernet class, its export signature, its
latency features). Code above :mod:`nas.space` asks the space (and through it the family);
it never looks inside an architecture.

Two families ship: ``ofa`` (Once-for-All's convolutional MobileNetV3/ProxylessNAS spaces,
``{"ks", "e", "d", "r"}``: :class:`~nas.space.SearchSpace`) and ``gpt`` (decoder-only
transformers in GPT-2's layout, ``{"n_layer", "n_embd", "n_head", "mlp"}``:
:class:`~nas.space.GPTSpace`).

Adding a third family is one registered class and a YAML file:

1. subclass :class:`SpaceFamily`, decorated ``@FAMILIES.register``, with its ``name`` (the
   value spec files give as ``family``), ``description``, ``Spec`` (a
   :class:`~nas._config.ConfigModel` of its YAML, with a ``name``, a one-line
   ``description`` and ``family: Literal["<name>"]``) and ``Space`` (a :class:`FamilySpace`
   subclass implementing the abstract methods below), and the names of its ``supernet``,
   ``export_signature`` and ``latency_features``;
2. write ``search_spaces/<space>.yaml`` with ``family: <name>`` (or call
   :func:`~nas.space.register_space` with it).

Every family is then tested by the family contract (:mod:`nas.space._checks`, run by
``tests/space/test_family_contract.py`` on every registered family and space), and every
space by the spaces' checks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from nas._config import ConfigModel
from nas._plugin import NoOptions, Plugin
from nas._registry import Registry
from nas.errors import ArchitectureError

__all__ = ["FAMILIES", "FamilySpace", "SeedLike", "SpaceFamily", "rng_of"]

SeedLike = int | np.random.Generator | None


def rng_of(seed: SeedLike) -> np.random.Generator:
    """A generator from a seed (a generator passes through)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class FamilySpace(ABC):
    """What every space of every family answers (the interface above :mod:`nas.space`).

    A space is an instance plug-in of :data:`~nas.space.SPACES`: ``name`` and
    ``description`` from its spec, no ``Options`` (the spec is its settings), ``tags`` its
    family. Architectures are immutable, hashable objects with ``space``, ``to_dict()``,
    ``to_json()`` and ``hash`` (16 hex digits), made only by the space (``parse``,
    ``sample``...), always in canonical form.
    """

    #: a space takes no options: its spec is its settings (the plug-in contract)
    Options: ClassVar[type[ConfigModel]] = NoOptions
    #: the encodings :meth:`encode` knows, the default first
    encoding_kinds: ClassVar[tuple[str, ...]] = ("onehot", "ordinal")

    name: str
    family: str
    tags: frozenset[str]
    spec: Any

    @abstractmethod
    def __init__(self, spec: Any) -> None:
        """The space of ``spec`` (its family's ``Spec``)."""

    @property
    @abstractmethod
    def description(self) -> str:
        """One line for listings."""

    @abstractmethod
    def parse(self, obj: Any) -> Any:
        """Validate an architecture (its object, dict, JSON text or ``@file``) and return it
        in canonical form; :class:`~nas.errors.ArchitectureError` in one line otherwise."""

    @abstractmethod
    def sample(self, seed: SeedLike = None) -> Any:
        """One architecture drawn uniformly per choice."""

    @abstractmethod
    def largest(self) -> Any:
        """The largest subnet (every choice at its maximum)."""

    @abstractmethod
    def smallest(self) -> Any:
        """The smallest subnet (every choice at its minimum)."""

    @abstractmethod
    def middle(self) -> Any:
        """Every choice at its middle value (the upper middle of an even count)."""

    @abstractmethod
    def mutate(self, arch: Any, seed: SeedLike = None, prob: float = 0.1) -> Any:
        """Each gene resampled with probability ``prob``; the result is in the space."""

    @abstractmethod
    def crossover(self, a: Any, b: Any, seed: SeedLike = None) -> Any:
        """Each gene from either parent; the result is in the space."""

    @abstractmethod
    def size(self) -> int:
        """Number of distinct architectures."""

    @abstractmethod
    def encode(self, archs: Iterable[Any], kind: str = "onehot") -> np.ndarray:
        """Fixed-length float32 features, one row per architecture."""

    @abstractmethod
    def encoding_size(self, kind: str = "onehot") -> int:
        """Length of a row of :meth:`encode`."""

    @abstractmethod
    def costs(self, archs: Iterable[Any]) -> dict[str, np.ndarray]:
        """``macs`` and ``params`` (``(n,)`` int64) of many architectures, no model built."""

    @abstractmethod
    def macs(self, arch: Any) -> int:
        """Multiply-accumulates of one forward pass of ``arch`` (the family says of what)."""

    @abstractmethod
    def params(self, arch: Any) -> int:
        """Trainable parameters of the extracted subnet."""

    def equivalent_forms(self, arch: Any) -> list[dict[str, Any]]:
        """Other dicts that denote the same network as ``arch`` (values that take no part in
        it changed), which must parse to ``arch``: what the family contract checks its
        canonical form with. None by default."""
        return []

    def sample_many(self, n: int, seed: SeedLike = None, unique: bool = True) -> list[Any]:
        """``n`` architectures; distinct ones when ``unique`` (the space must be large enough)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = rng_of(seed)
        if not unique:
            return [self.sample(rng) for _ in range(n)]
        if n > self.size():
            raise ArchitectureError(f"cannot draw {n} distinct architectures from {self.name}: "
                                    f"it has {self.size()}")
        seen: dict[Any, None] = {}
        while len(seen) < n:
            seen.setdefault(self.sample(rng))
        return list(seen)


class SpaceFamily(Plugin):
    """A family of search spaces: a plug-in of :data:`FAMILIES` (see the module docstring).

    Attributes:
        Spec: the model of its spaces' YAML files.
        Space: the class of its spaces (built from a ``Spec``).
        supernet: the weight-sharing model its spaces train, as ``"module:Class"`` (the
            layers above import it; :mod:`nas.space` imports no torch).
        export_signature: what an exported subnet takes and returns (its manifest's inputs).
        latency_features: what latency predictors of its spaces are fitted on.
    """

    Spec: ClassVar[type[ConfigModel]]
    Space: ClassVar[type[FamilySpace]]
    supernet: ClassVar[str] = ""
    export_signature: ClassVar[str] = ""
    latency_features: ClassVar[str] = ""

    @classmethod
    def make_space(cls, spec: Any) -> FamilySpace:
        """The space of ``spec`` (one of this family's ``Spec``)."""
        return cls.Space(spec)


#: the registered space families (``nas plugins list -r space-families``)
FAMILIES: Registry[type[SpaceFamily]] = Registry(
    "space family", builtins=["nas.space._space", "nas.space._gpt"],
    checks="nas.space._checks:FAMILY_CHECKS")
