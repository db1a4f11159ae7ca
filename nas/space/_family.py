"""Space families: the plug-in that owns an architecture format (registry :data:`FAMILIES`).

A search space belongs to a family (its spec's ``family``). The family is what knows the
shape of an architecture: its JSON format, parsing and canonical form, validation, sampling,
mutation and crossover, fixed-length encodings for predictors, MACs and parameters (and
memory, where it counts it: :meth:`FamilySpace.memory`), and the
names of what the layers above build from it (its supernet class, its export signature, its
latency features). Code above :mod:`nas.space` asks the space (and through it the family);
it never looks inside an architecture.

What a search needs is part of that interface, as plain data (no optimiser is imported
here): :meth:`FamilySpace.search_params` (every parameter of a search and its choices, in a
fixed order), :meth:`~FamilySpace.to_params` and :meth:`~FamilySpace.from_params` (an
architecture as those parameters and back: an Optuna trial's), the batch form
(:meth:`~FamilySpace.to_arrays`, :meth:`~FamilySpace.from_arrays`: what :meth:`~FamilySpace.costs`,
:meth:`~FamilySpace.encode` and array scorers take), and :meth:`~FamilySpace.genome`
(architectures as rows of choice indices, vectorised: what an evolution works on;
:class:`ParamsGenome`, built from the parameters, unless the family has a faster one).

Two families ship: ``ofa`` (Once-for-All's convolutional MobileNetV3/ProxylessNAS spaces,
``{"ks", "e", "d", "r"}``: :class:`~nas.space.SearchSpace`) and ``gpt`` (decoder-only
transformers in GPT-2's layout, ``{"n_layer", "n_embd", "n_head", "mlp"}``:
:class:`~nas.space.GPTSpace`).

Adding a third family is one registered class and a YAML file:

1. subclass :class:`SpaceFamily`, decorated ``@FAMILIES.register``, with its ``name`` (the
   value spec files give as ``family``), ``description``, ``Spec`` (a
   :class:`~nas._config.ConfigModel` of its YAML, with a ``name``, a one-line
   ``description`` and ``family: Literal["<name>"]``) and ``Space`` (a :class:`FamilySpace`
   subclass implementing the abstract methods below; the batch form and the genome have
   defaults built on them), and the names of its ``supernet`` (with ``checkpoint_meta`` and
   ``load_supernet``, the functions that read its checkpoints), ``export_signature`` and
   ``latency_features``;
2. write ``search_spaces/<space>.yaml`` with ``family: <name>`` (or call
   :func:`~nas.space.register_space` with it).

Every family is then tested by the family contract (:mod:`nas.space._checks`, run by
``tests/space/test_family_contract.py`` on every registered family and space), and every
space by the spaces' checks.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from nas._config import ConfigModel
from nas._plugin import NoOptions, Plugin
from nas._registry import Registry
from nas.errors import ArchitectureError, ConfigError

__all__ = ["FAMILIES", "FamilySpace", "Genome", "ParamsGenome", "SearchParams", "SeedLike",
           "SpaceFamily", "family_part", "rng_of"]

SeedLike = int | np.random.Generator | None
#: a search's parameters: name -> its choices (sorted ints), in a fixed order
SearchParams = dict[str, tuple[int, ...]]


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
    #: the input resolutions an architecture chooses among, for a family whose input size
    #: is part of the architecture (OFA's image spaces); empty where it is not. A device
    #: that prices only some of them narrows a search to those (``resolutions=`` of
    #: :meth:`search_params` and :meth:`genome`).
    resolutions: tuple[int, ...] = ()

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

    def check_workload(self, workload: Any, device: str) -> None:
        """Whether subnets of this space can be timed on a device profile with ``workload``
        (its :class:`~nas.devices.Workload`, or None); one :class:`ConfigError` line naming
        the device if not. By default a space is timed on profiles without one (a workload
        is a language model's prefill or decode)."""
        if workload is not None:
            raise ConfigError(
                f"device {device!r} times a language model ({workload.describe()}); space "
                f"{self.name!r} of the {self.family!r} family is timed on a device without a "
                "workload (nas devices list)")

    @abstractmethod
    def mutate(self, arch: Any, seed: SeedLike = None, prob: float = 0.1) -> Any:
        """Each gene resampled with probability ``prob``; the result is in the space."""

    @abstractmethod
    def crossover(self, a: Any, b: Any, seed: SeedLike = None) -> Any:
        """Each gene from either parent; the result is in the space."""

    @abstractmethod
    def size(self) -> int:
        """Number of distinct architectures."""

    def n_architectures(self) -> int:
        """Distinct architectures that sampling can draw, every input setting counted (an
        image space's resolutions); :meth:`size` unless the family has such a setting."""
        return self.size()

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

    #: whether :meth:`memory` counts this family's subnets (a family that does not refuses
    #: it, and a search refuses a ``memory`` objective or constraint on its spaces)
    counts_memory: ClassVar[bool] = False

    def memory(self, archs: Iterable[Any], context: int | None = None, batch: int = 1,
               dtype: str = "float32") -> dict[str, np.ndarray]:
        """Exact bytes that deployed subnets occupy, no model built: ``weights`` (their
        parameters as the export stores them), ``cache`` (what a subnet keeps between calls
        with ``context`` positions seen, for ``batch`` sequences) and ``total``, each
        ``(n,)`` int64. A family that counts memory sets :attr:`counts_memory` and says what
        it counts (the ``gpt`` family: weights and the KV cache).

        Raises:
            ConfigError: the family does not count memory (this default), in one line.
        """
        raise ConfigError(f"space {self.name} of the {self.family!r} family does not count "
                          "memory (weights and KV cache are counted for the 'gpt' family); "
                          "use params for its size")

    # ------------------------------------------------------------------ what a search uses
    @abstractmethod
    def search_params(self, resolutions: Sequence[int] | None = None) -> SearchParams:
        """Every parameter of a search over the space: name -> its choices (sorted ints), in
        a fixed order (a sampler draws them in it). Every combination of choices is an
        architecture (:meth:`from_params`); values that take no part in it (e.g. of layers
        past the depth) are ignored there.

        Args:
            resolutions: narrow the resolutions to these (a subset of :attr:`resolutions`;
                default all of them).

        Raises:
            ValueError: a resolution the space does not have.
        """

    @abstractmethod
    def to_params(self, arch: Any) -> dict[str, int]:
        """``arch`` as the search's parameters (every key of :meth:`search_params`; those
        that take no part in it at their smallest choice)."""

    @abstractmethod
    def from_params(self, params: Mapping[str, Any]) -> Any:
        """The canonical architecture of a search's parameters (``to_params``' inverse).

        Raises:
            ArchitectureError: a parameter missing or a value out of the space, in one line.
        """

    def to_arrays(self, archs: Iterable[Any]) -> Any:
        """A batch of architectures in the family's batch form, which :meth:`costs`,
        :meth:`encode`, :meth:`from_arrays`, the genome and array scorers (proxies, latency
        predictors) take. By default the parsed architectures themselves, in a list."""
        return [self.parse(a) for a in archs]

    def from_arrays(self, batch: Any) -> list[Any]:
        """The canonical architectures of a batch (:meth:`to_arrays`' form, or any iterable
        of architectures)."""
        return [self.parse(a) for a in batch]

    def genome(self, resolutions: Sequence[int] | None = None) -> Genome:
        """The space's architectures as genomes (rows of choice indices) over the search's
        parameters, at ``resolutions`` (see :meth:`search_params`). By default a
        :class:`ParamsGenome`; a family overrides it with a vectorised one."""
        return ParamsGenome(self, resolutions)

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


def choice_indices(choices: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
    """The index of each of ``values`` in ``choices`` (sorted): a genome's genes.

    Raises:
        ValueError: a value that is not one of the choices, naming ``what`` it is.
    """
    i = np.searchsorted(choices, values)
    bad = (i >= len(choices)) | (choices[np.minimum(i, len(choices) - 1)] != values)
    if bad.any():
        raise ValueError(f"{what} {int(values[bad][0])} is not one of {choices.tolist()}")
    return i


def missing_param(space: FamilySpace, params: Mapping[str, Any]) -> ArchitectureError | None:
    """The error for the first of ``space``'s search parameters ``params`` lacks (None when it
    has every one): for :meth:`FamilySpace.from_params`."""
    for key in space.search_params():
        if key not in params:
            return ArchitectureError(f"params lack {key!r} (a parameter of space {space.name}; "
                                     f"it has {len(space.search_params())})")
    return None


class Genome(ABC):
    """A space's architectures as genomes: fixed-length rows of choice indices (int), each
    gene ranging over ``sizes[j]`` choices, vectorised over many rows (what an evolution
    works on; built by :meth:`FamilySpace.genome`).

    A genome is canonical when every gene that takes no part in its network is 0: two
    canonical genomes are equal exactly when their networks are. Index 0 of a gene is its
    smallest choice.

    Attributes:
        space: the space.
        sizes: ``(n_genes,)`` int64: the choices of each gene.
        resolutions: the resolutions the genome ranges over (empty for a family without).
    """

    space: FamilySpace
    sizes: np.ndarray
    resolutions: tuple[int, ...]

    @property
    def n_genes(self) -> int:
        return len(self.sizes)

    @abstractmethod
    def canonical(self, X: np.ndarray) -> np.ndarray:
        """``X`` with every gene that takes no part in its network set to 0 (in place;
        returned)."""

    @abstractmethod
    def decode(self, X: np.ndarray) -> Any:
        """Canonical genomes as a batch (:meth:`FamilySpace.to_arrays`' form)."""

    @abstractmethod
    def encode(self, batch: Any) -> np.ndarray:
        """Canonical genomes ``(n, n_genes)`` int64 of a batch (the batch form, or any
        iterable of architectures).

        Raises:
            ValueError: a choice or resolution the genome does not have.
        """

    def archs(self, X: np.ndarray) -> list[Any]:
        """The canonical architectures of genomes."""
        return self.space.from_arrays(self.decode(X))

    def smallest(self) -> np.ndarray:
        """Genomes of the smallest subnet, one per resolution (ascending), or one."""
        return self.canonical(np.zeros((1, self.n_genes), np.int64))

    def largest(self) -> np.ndarray:
        """Genomes of the largest subnet, one per resolution (ascending), or one."""
        return self.canonical((self.sizes - 1)[None, :].astype(np.int64))


class ParamsGenome(Genome):
    """The genome every family has: one gene per search parameter
    (:meth:`FamilySpace.search_params`, in its order), made canonical through
    :meth:`~FamilySpace.from_params` and :meth:`~FamilySpace.to_params`, one architecture at
    a time (a family with a vectorised form overrides :meth:`FamilySpace.genome`)."""

    def __init__(self, space: FamilySpace, resolutions: Sequence[int] | None = None) -> None:
        self.space = space
        params = space.search_params(resolutions)
        self.names = tuple(params)
        self.choices = [np.asarray(c, np.int64) for c in params.values()]
        self.sizes = np.array([len(c) for c in self.choices], np.int64)
        self.resolutions = tuple(sorted(resolutions or space.resolutions))

    def _arch(self, row: np.ndarray) -> Any:
        return self.space.from_params({n: int(c[i]) for n, c, i in
                                       zip(self.names, self.choices, row.tolist(), strict=True)})

    def _row(self, arch: Any) -> list[int]:
        params = self.space.to_params(arch)
        out = []
        for name, c in zip(self.names, self.choices, strict=True):
            hit = np.flatnonzero(c == params[name])
            if not len(hit):
                raise ValueError(f"{name} {params[name]} is not one of {c.tolist()}")
            out.append(int(hit[0]))
        return out

    def canonical(self, X: np.ndarray) -> np.ndarray:
        for i in range(len(X)):
            X[i] = self._row(self._arch(X[i]))
        return X

    def decode(self, X: np.ndarray) -> Any:
        return self.space.to_arrays([self._arch(x) for x in X])

    def encode(self, batch: Any) -> np.ndarray:
        rows = [self._row(a) for a in self.space.from_arrays(batch)]
        return np.asarray(rows, np.int64).reshape(len(rows), self.n_genes)


class SpaceFamily(Plugin):
    """A family of search spaces: a plug-in of :data:`FAMILIES` (see the module docstring).

    Attributes:
        Spec: the model of its spaces' YAML files.
        Space: the class of its spaces (built from a ``Spec``).
        supernet: the weight-sharing model its spaces train, as ``"module:Class"`` (the
            layers above import it; :mod:`nas.space` imports no torch).
        checkpoint_meta: ``"module:function"``: ``f(path) -> dict``, a supernet
            checkpoint's metadata (its ``space`` among it) read without building the model;
            :class:`~nas.errors.CheckpointError` for a file that is not one of this family's.
        load_supernet: ``"module:function"``: ``f(path, space=None, map_location="cpu")``,
            the supernet of a checkpoint in eval mode (``space``: it must be that space's).
        timing_supernet: ``"module:function"``: ``f(space)``, a randomly initialised
            supernet to time subnets of (latency does not depend on the weights).
        timing_onnx: ``"module:function"``: ``f(supernet, arch) -> bytes``, the ONNX model
            a device times for ``arch`` (its inputs as the family's device workloads say).
        export_signature: what an exported subnet takes and returns (its manifest's inputs).
        latency_features: what latency predictors of its spaces are fitted on.

    The layers above reach the named functions through :meth:`part` (or
    :func:`family_part`), never by the family's name.
    """

    Spec: ClassVar[type[ConfigModel]]
    Space: ClassVar[type[FamilySpace]]
    supernet: ClassVar[str] = ""
    checkpoint_meta: ClassVar[str] = ""
    load_supernet: ClassVar[str] = ""
    timing_supernet: ClassVar[str] = ""
    timing_onnx: ClassVar[str] = ""
    export_signature: ClassVar[str] = ""
    latency_features: ClassVar[str] = ""

    @classmethod
    def make_space(cls, spec: Any) -> FamilySpace:
        """The space of ``spec`` (one of this family's ``Spec``)."""
        return cls.Space(spec)

    @classmethod
    def part(cls, name: str) -> Any:
        """What the family names for ``name`` (one of ``supernet``, ``checkpoint_meta``,
        ``load_supernet``, ``timing_supernet``, ``timing_onnx``), imported now.

        Raises:
            ConfigError: the family names none (a family without a supernet, say).
        """
        target = getattr(cls, name, "") if name in _PARTS else ""
        if not target:
            raise ConfigError(f"space family {cls.name!r} names no {name} (parts a family can "
                              f"name: {', '.join(_PARTS)})")
        module, _, attr = str(target).partition(":")
        return getattr(importlib.import_module(module), attr)


_PARTS = ("supernet", "checkpoint_meta", "load_supernet", "timing_supernet", "timing_onnx")


def family_part(space: FamilySpace, name: str) -> Any:
    """:meth:`SpaceFamily.part` of ``space``'s family: e.g.
    ``family_part(space, "load_supernet")(path, space=space)``."""
    return FAMILIES.get(space.family).part(name)


#: the registered space families (``nas plugins list -r space-families``)
FAMILIES: Registry[type[SpaceFamily]] = Registry(
    "space family", builtins=["nas.space._space", "nas.space._gpt"],
    checks="nas.space._checks:FAMILY_CHECKS")
