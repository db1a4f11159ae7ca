"""The ``gpt`` family: decoder-only transformers in GPT-2's layout, elastic.

GPT-2's layout: token and learned position embeddings, ``n_layer`` pre-LayerNorm blocks
(LayerNorm, causal self-attention, residual; LayerNorm, GELU MLP, residual), a final
LayerNorm, and a language-model head tied to the token embedding.

An architecture is a small JSON object::

    {"n_layer": 8, "n_embd": 512, "n_head": [8, 8, ...], "mlp": [2048, ...]}

with ``len(n_head) == len(mlp) == n_layer``. The head size is fixed by the space
(``head_dim``: 64 for ``gpt2``), so layer ``i``'s attention width is ``n_head[i] * head_dim``
(a prefix of the importance-ordered heads); ``n_embd`` is a prefix of the importance-ordered
embedding channels, ``mlp[i]`` a prefix of layer ``i``'s MLP neurons.

Which blocks a depth keeps (:func:`kept_blocks`): the space's ``block_order`` ranks the
supernet's ``L = max(n_layer choices)`` blocks, and a subnet of ``n`` layers keeps the first
``n`` of that ranking, run in their supernet order. The default ranking is
``[L-1, 0, 1, ..., L-2]``: a subnet keeps its first ``n-1`` blocks and the last one (the last
block, which writes what the head reads, is never dropped). Layer ``i`` of an architecture
is the ``i``-th kept block.

Costs, per token at a context of ``C`` positions (the last token of a ``C``-token sequence,
or one decoding step with ``C - 1`` tokens in the KV cache; ``C`` defaults to the space's
``n_ctx`` and may not exceed it), with ``d = n_embd``, ``a_i = n_head[i] * head_dim``,
``m_i = mlp[i]``, ``V = vocab_size``, ``P = n_ctx``:

- MACs = sum over layers of ``3*d*a_i`` (query, key, value) + ``a_i*C`` (QK^T) +
  ``a_i*C`` (attention times V) + ``a_i*d`` (output projection) + ``2*d*m_i`` (MLP), plus
  ``d*V`` (the tied head). LayerNorms, softmax, GELU, additions and embedding look-ups are
  not multiply-accumulates (OFA's spaces leave BatchNorm out the same way).
- Parameters = ``V*d + P*d`` (token and position embeddings, once: the head is tied) +
  sum over layers of ``4*d`` (two LayerNorms) + ``3*d*a_i + 3*a_i`` (c_attn) + ``a_i*d + d``
  (attention c_proj) + ``d*m_i + m_i`` (c_fc) + ``m_i*d + d`` (MLP c_proj), + ``2*d`` (final
  LayerNorm).

Memory (:meth:`GPTSpace.memory`), exact, in bytes, for an exported subnet generating ``B``
sequences with ``C`` positions in its KV cache (``C`` defaults to ``n_ctx``, ``B`` to 1), at
``s`` bytes a value (4: float32, the export's dtype):

- weights = parameters x ``s``: every parameter stored once (the tied head reads the token
  embedding; the ONNX graph holds each parameter as one initializer and no other; torch's
  exporter stores tensors of identical values once, so an untrained subnet whose biases are
  still all zeros stores less);
- KV cache = sum over layers of ``2 * B * n_head[i] * C * head_dim * s``: a key and a value
  ``(B, n_head[i], C, head_dim)`` per layer, the shapes of the export's
  ``past_key_values.{i}.*`` with ``C`` past positions;
- total = weights + KV cache: what generation at context ``C`` keeps, the peak a runtime that
  updates the cache in place needs besides activations (the exported graph returns the cache
  grown by one position, so plain ONNX Runtime holds the old cache beside the new one for
  the step; activations, a few vectors of ``n_embd`` or ``vocab_size`` per token, and the
  graph's constants, hundreds of bytes of shapes and scales, are not counted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import AfterValidator, Field, Strict, field_validator, model_validator

from nas._config import ConfigModel
from nas.errors import ArchitectureError, ConfigError
from nas.space._family import (
    FAMILIES,
    FamilySpace,
    Genome,
    SeedLike,
    SpaceFamily,
    choice_indices,
    missing_param,
    rng_of,
)
from nas.space._space import _is_int, _loads, _read_json_file

__all__ = ["GPTArchitecture", "GPTArrays", "GPTFamily", "GPTGenome", "GPTSpace", "GPTSpec",
           "kept_blocks"]

PosInt = Annotated[int, Strict(), Field(gt=0)]


def _sorted_unique(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(values)))


#: a non-empty list of positive ints, kept sorted and without repeats
Choices = Annotated[tuple[PosInt, ...], Field(min_length=1), AfterValidator(_sorted_unique)]

FIELDS = ("n_layer", "n_embd", "n_head", "mlp")


class GPTSpec(ConfigModel):
    """A ``gpt`` family space (``search_spaces/gpt*.yaml``): the fixed geometry and the
    choices of every elastic dimension."""

    what: ClassVar[str] = "search-space spec"

    name: Annotated[str, Strict(), Field(min_length=1)]
    description: str = ""
    family: Literal["gpt"]
    vocab_size: PosInt
    #: the context the model is trained for: the rows of the position embedding
    n_ctx: PosInt
    #: every head's size (GPT-2: 64)
    head_dim: PosInt
    n_layer: Choices
    n_embd: Choices
    n_head: Choices
    mlp: Choices
    #: the ranking of the supernet's blocks that a depth keeps a prefix of (see
    #: :func:`kept_blocks`); absent: ``[L-1, 0, 1, ..., L-2]``
    block_order: tuple[Annotated[int, Strict(), Field(ge=0)], ...] | None = None
    layer_norm_eps: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("must be one line")
        return value.strip()

    @model_validator(mode="after")
    def _consistent(self) -> GPTSpec:
        depth = max(self.n_layer)
        if self.block_order is not None and sorted(self.block_order) != list(range(depth)):
            raise ValueError(f"block_order must order the blocks 0..{depth - 1} "
                             f"(max n_layer = {depth}), each once; got {list(self.block_order)}")
        if max(self.n_head) * self.head_dim > max(self.n_embd):
            raise ValueError(f"max(n_head) * head_dim = {max(self.n_head) * self.head_dim} is "
                             f"more than max(n_embd) = {max(self.n_embd)}")
        return self


def kept_blocks(space: GPTSpace | GPTSpec, n_layer: int) -> list[int]:
    """The supernet blocks (indices, in running order) that a subnet of ``n_layer`` layers
    keeps: the first ``n_layer`` of the space's ``block_order``, sorted (default ranking
    ``[L-1, 0, ..., L-2]``: the first ``n_layer - 1`` blocks and the last).

    Raises:
        ArchitectureError: ``n_layer`` is not one of the space's choices.
    """
    spec = space.spec if isinstance(space, GPTSpace) else space
    if not _is_int(n_layer) or n_layer not in spec.n_layer:
        raise ArchitectureError(f"n_layer must be one of {list(spec.n_layer)}, got {n_layer!r}")
    depth = max(spec.n_layer)
    order = spec.block_order or (depth - 1, *range(depth - 1))
    return sorted(order[:n_layer])


@dataclass(frozen=True)
class GPTArchitecture:
    """A subnet of a ``gpt`` space: immutable, canonical, hashable (made by the space).

    Attributes:
        space: the space's name.
        n_layer: the number of blocks it runs.
        n_embd: its embedding width.
        n_head: heads per layer (``n_layer`` entries).
        mlp: MLP width per layer (``n_layer`` entries).
    """

    space: str
    n_layer: int
    n_embd: int
    n_head: tuple[int, ...]
    mlp: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """``{"n_layer": int, "n_embd": int, "n_head": [...], "mlp": [...]}``."""
        return {"n_layer": self.n_layer, "n_embd": self.n_embd, "n_head": list(self.n_head),
                "mlp": list(self.mlp)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @cached_property
    def hash(self) -> str:
        """Stable 16-hex-digit id of (space, canonical architecture)."""
        payload = json.dumps({"space": self.space, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"{self.space}:{self.hash}"


@dataclass(frozen=True)
class GPTArrays:
    """A batch of ``gpt`` architectures as integer arrays (the family's batch form, for
    vectorised encodings, costs and scorers).

    ``n_layer`` and ``n_embd`` are ``(n,)``; ``n_head`` and ``mlp`` are ``(n, max_layer)``,
    zero past each architecture's depth.
    """

    n_layer: np.ndarray
    n_embd: np.ndarray
    n_head: np.ndarray
    mlp: np.ndarray

    def __len__(self) -> int:
        return int(self.n_layer.shape[0])


class GPTSpace(FamilySpace):
    """A ``gpt`` family space built from a :class:`GPTSpec` (see the module docstring).

    Attributes:
        max_layer: the supernet's blocks (``max`` of the ``n_layer`` choices); encodings
            have a slot per block, layer ``i`` of an architecture in slot ``i``.
    """

    spec: GPTSpec

    def __init__(self, spec: GPTSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.family = spec.family
        self.tags = frozenset({spec.family})
        self.max_layer = max(spec.n_layer)
        self.head_dim = spec.head_dim
        self.n_ctx = spec.n_ctx
        self.vocab_size = spec.vocab_size

    def __repr__(self) -> str:
        return f"GPTSpace({self.name!r})"

    @property
    def description(self) -> str:
        """One line: the spec's ``description``, else one said by the space's shape."""
        if self.spec.description:
            return str(self.spec.description)
        s = self.spec
        return (f"gpt space: layers {list(s.n_layer)}, width {list(s.n_embd)}, heads "
                f"{list(s.n_head)} of {s.head_dim}, MLP {list(s.mlp)}, vocabulary "
                f"{s.vocab_size}, context {s.n_ctx}")

    # ------------------------------------------------------------------ validation
    def parse(self, obj: Any) -> GPTArchitecture:
        """Validate an architecture and return it in canonical form.

        Args:
            obj: a :class:`GPTArchitecture`, a dict, JSON text, or ``@path`` to a JSON file.

        Raises:
            ArchitectureError: one line naming the field, the bad value and what is allowed.
        """
        if isinstance(obj, GPTArchitecture):
            if obj.space != self.name:
                raise ArchitectureError(
                    f"architecture belongs to space {obj.space!r}, not {self.name!r}")
            obj = obj.to_dict()
        elif isinstance(obj, Path):
            obj = _read_json_file(obj)
        elif isinstance(obj, str):
            text = obj.strip()
            if text.startswith("@"):
                obj = _read_json_file(Path(text[1:]))
            else:
                try:
                    obj = _loads(text)
                except json.JSONDecodeError as exc:
                    raise ArchitectureError(
                        f"arch is not valid JSON ({exc.msg} at line {exc.lineno} column "
                        f"{exc.colno}); expected {{\"n_layer\": int, \"n_embd\": int, "
                        f"\"n_head\": [...], \"mlp\": [...]}}") from exc
        if not isinstance(obj, dict):
            raise ArchitectureError(f"arch must be a JSON object with keys "
                                    f"{', '.join(FIELDS)}; got {type(obj).__name__}")
        return self._validate(obj)

    def _validate(self, raw: dict[str, Any]) -> GPTArchitecture:
        unknown = set(raw) - {*FIELDS, "space"}
        if unknown:
            raise ArchitectureError(f"arch has unknown field(s) {sorted(unknown)}; allowed: "
                                    f"{', '.join(FIELDS)} (space {self.name})")
        if "space" in raw and raw["space"] != self.name:
            raise ArchitectureError(f"arch belongs to space {raw['space']!r}, not {self.name!r}")
        for key in FIELDS:
            if key not in raw:
                raise ArchitectureError(f"arch is missing field {key!r} (space {self.name})")
        s = self.spec
        n_layer = raw["n_layer"]
        if not _is_int(n_layer) or n_layer not in s.n_layer:
            raise ArchitectureError(f"n_layer must be one of {list(s.n_layer)}, got "
                                    f"{n_layer!r} (space {self.name})")
        n_embd = raw["n_embd"]
        if not _is_int(n_embd) or n_embd not in s.n_embd:
            raise ArchitectureError(f"n_embd must be one of {list(s.n_embd)}, got {n_embd!r} "
                                    f"(space {self.name})")
        lists = {}
        for key, allowed in (("n_head", s.n_head), ("mlp", s.mlp)):
            value = raw[key]
            if not isinstance(value, list | tuple):
                raise ArchitectureError(f"{key} must be a list of {n_layer} ints (one per "
                                        f"layer), got {value!r}")
            if len(value) != n_layer:
                raise ArchitectureError(f"{key} must have {n_layer} entries (one per layer, "
                                        f"n_layer = {n_layer}), got {len(value)}")
            for i, v in enumerate(value):
                if not _is_int(v) or v not in allowed:
                    raise ArchitectureError(f"{key}[{i}] must be one of {list(allowed)}, got "
                                            f"{v!r} (layer {i + 1})")
            lists[key] = tuple(int(v) for v in value)
        return GPTArchitecture(self.name, int(n_layer), int(n_embd), lists["n_head"],
                               lists["mlp"])

    def arch(self, n_layer: int, n_embd: int, n_head: Sequence[int],
             mlp: Sequence[int]) -> GPTArchitecture:
        """Shorthand for ``parse({"n_layer": ..., "n_embd": ..., "n_head": ..., "mlp": ...})``."""
        return self._validate({"n_layer": n_layer, "n_embd": n_embd, "n_head": list(n_head),
                               "mlp": list(mlp)})

    def equivalent_forms(self, arch: GPTArchitecture) -> list[dict[str, Any]]:
        """``arch`` with its space's name and with tuples: the same network."""
        return [{**arch.to_dict(), "space": self.name},
                {**arch.to_dict(), "n_head": tuple(arch.n_head), "mlp": tuple(arch.mlp)}]

    def kept_blocks(self, arch: GPTArchitecture) -> list[int]:
        """The supernet blocks ``arch`` runs (:func:`kept_blocks`)."""
        return kept_blocks(self, self.parse(arch).n_layer)

    # ------------------------------------------------------------------ sampling
    def sample(self, seed: SeedLike = None) -> GPTArchitecture:
        """One architecture drawn uniformly per choice (depth, width, each layer's heads and
        MLP width)."""
        rng = rng_of(seed)
        s = self.spec
        n = int(rng.choice(s.n_layer))
        return self.arch(n, int(rng.choice(s.n_embd)),
                         [int(v) for v in rng.choice(s.n_head, n)],
                         [int(v) for v in rng.choice(s.mlp, n)])

    def _extreme(self, pick: Any) -> GPTArchitecture:
        s = self.spec
        n = int(pick(s.n_layer))
        return self.arch(n, int(pick(s.n_embd)), [int(pick(s.n_head))] * n,
                         [int(pick(s.mlp))] * n)

    def largest(self) -> GPTArchitecture:
        return self._extreme(max)

    def smallest(self) -> GPTArchitecture:
        return self._extreme(min)

    def middle(self) -> GPTArchitecture:
        return self._extreme(lambda c: sorted(c)[len(c) // 2])

    def check_workload(self, workload: Any, device: str) -> None:
        """A language model is timed on a prefill or decode workload that fits its context."""
        if workload is None:
            raise ConfigError(
                f"device {device!r} has no workload; space {self.name!r} of the 'gpt' family "
                "is timed on a profile that says prefill or decode (e.g. cpu-1t-decode256; "
                "nas devices list)")
        if workload.tokens > self.spec.n_ctx:
            raise ConfigError(
                f"device {device!r}: {workload.describe()} is longer than the context of "
                f"space {self.name!r} ({self.spec.n_ctx} tokens); choose a workload of at "
                f"most {self.spec.n_ctx} tokens")

    def _slots(self, arch: GPTArchitecture, rng: np.random.Generator) -> tuple[list[int],
                                                                                list[int]]:
        """Heads and MLP widths over every block slot: the architecture's, then draws."""
        s, extra = self.spec, self.max_layer - arch.n_layer
        heads = [*arch.n_head, *(int(v) for v in rng.choice(s.n_head, extra))]
        mlp = [*arch.mlp, *(int(v) for v in rng.choice(s.mlp, extra))]
        return heads, mlp

    def mutate(self, arch: Any, seed: SeedLike = None, prob: float = 0.1) -> GPTArchitecture:
        """Resample each gene with probability ``prob``: the depth, the width, every block
        slot's heads and MLP width (slots past the depth are drawn, and used when the depth
        grows)."""
        rng = rng_of(seed)
        a = self.parse(arch)
        s = self.spec
        heads, mlp = self._slots(a, rng)
        n = int(rng.choice(s.n_layer)) if rng.random() < prob else a.n_layer
        d = int(rng.choice(s.n_embd)) if rng.random() < prob else a.n_embd
        for j in range(self.max_layer):
            if rng.random() < prob:
                heads[j] = int(rng.choice(s.n_head))
            if rng.random() < prob:
                mlp[j] = int(rng.choice(s.mlp))
        return self.arch(n, d, heads[:n], mlp[:n])

    def crossover(self, a: Any, b: Any, seed: SeedLike = None) -> GPTArchitecture:
        """Uniform crossover: depth, width and every slot's heads and MLP width from either
        parent (a slot only one parent has comes from it)."""
        rng = rng_of(seed)
        a, b = self.parse(a), self.parse(b)
        n = a.n_layer if rng.random() < 0.5 else b.n_layer
        d = a.n_embd if rng.random() < 0.5 else b.n_embd
        heads, mlp = [], []
        for j in range(n):
            x = a if j >= b.n_layer else b if j >= a.n_layer else (a if rng.random() < 0.5
                                                                   else b)
            y = a if j >= b.n_layer else b if j >= a.n_layer else (a if rng.random() < 0.5
                                                                   else b)
            heads.append(x.n_head[j])
            mlp.append(y.mlp[j])
        return self.arch(n, d, heads, mlp)

    def size(self) -> int:
        """Number of distinct architectures."""
        s = self.spec
        per_layer = len(s.n_head) * len(s.mlp)
        n: int = len(s.n_embd) * sum(per_layer ** k for k in s.n_layer)  # powers of ints
        return n

    # ------------------------------------------------------------------ the batch form
    def to_arrays(self, archs: Iterable[Any]) -> GPTArrays:
        """Stack architectures into :class:`GPTArrays` (zeros past each one's depth)."""
        return GPTArrays(*self._arrays(archs))

    def from_arrays(self, batch: GPTArrays | Iterable[Any]) -> list[GPTArchitecture]:
        """The canonical architectures of :class:`GPTArrays` (values past a depth ignored),
        or of any iterable of architectures."""
        if not isinstance(batch, GPTArrays):
            return [self.parse(a) for a in batch]
        out = []
        for i in range(len(batch)):
            n = int(batch.n_layer[i])
            out.append(self.arch(n, int(batch.n_embd[i]), batch.n_head[i, :n].tolist(),
                                 batch.mlp[i, :n].tolist()))
        return out

    # ------------------------------------------------------------------ search parameters
    def search_params(self, resolutions: Sequence[int] | None = None
                      ) -> dict[str, tuple[int, ...]]:
        """``n_layer``, ``n_embd``, then per block slot ``n_head.1`` and ``mlp.1`` (heads and
        MLP width of layer 1; those past the depth take no part)."""
        _no_resolutions(self, resolutions)
        s = self.spec
        out: dict[str, tuple[int, ...]] = {"n_layer": tuple(s.n_layer),
                                           "n_embd": tuple(s.n_embd)}
        for j in range(1, self.max_layer + 1):
            out[f"n_head.{j}"] = tuple(s.n_head)
            out[f"mlp.{j}"] = tuple(s.mlp)
        return out

    def to_params(self, arch: Any) -> dict[str, int]:
        a = self.parse(arch)
        s = self.spec
        out = {"n_layer": a.n_layer, "n_embd": a.n_embd}
        for j in range(self.max_layer):
            live = j < a.n_layer
            out[f"n_head.{j + 1}"] = a.n_head[j] if live else min(s.n_head)
            out[f"mlp.{j + 1}"] = a.mlp[j] if live else min(s.mlp)
        return out

    def from_params(self, params: Mapping[str, Any]) -> GPTArchitecture:
        missing = missing_param(self, params)
        if missing is not None:
            raise missing
        n = params["n_layer"]
        if not _is_int(n) or n not in self.spec.n_layer:
            raise ArchitectureError(f"n_layer must be one of {list(self.spec.n_layer)}, got "
                                    f"{n!r} (space {self.name})")
        return self.arch(int(n), params["n_embd"],
                         [params[f"n_head.{j + 1}"] for j in range(n)],
                         [params[f"mlp.{j + 1}"] for j in range(n)])

    def genome(self, resolutions: Sequence[int] | None = None) -> GPTGenome:
        return GPTGenome(self, resolutions)

    # ------------------------------------------------------------------ encodings
    def _arrays(self, archs: Iterable[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
        """``n_layer``, ``n_embd`` (``(n,)``), heads and MLP widths (``(n, max_layer)``,
        zero past the depth)."""
        if isinstance(archs, GPTArrays):
            return archs.n_layer, archs.n_embd, archs.n_head, archs.mlp
        rows = [self.parse(a) for a in archs]
        n = len(rows)
        depth = np.array([a.n_layer for a in rows], dtype=np.int64).reshape(n)
        width = np.array([a.n_embd for a in rows], dtype=np.int64).reshape(n)
        heads = np.zeros((n, self.max_layer), dtype=np.int64)
        mlp = np.zeros((n, self.max_layer), dtype=np.int64)
        for i, a in enumerate(rows):
            heads[i, :a.n_layer] = a.n_head
            mlp[i, :a.n_layer] = a.mlp
        return depth, width, heads, mlp

    def encode(self, archs: Iterable[Any], kind: str = "onehot") -> np.ndarray:
        """Fixed-length float32 features, one row per architecture.

        Args:
            kind: ``"onehot"`` (one-hot of the depth and of the width; per block slot, one-hot
                of the heads and of the MLP width, zeros past the depth) or ``"ordinal"``
                (depth, width, then every slot's heads and MLP width, zero past the depth).
        """
        depth, width, heads, mlp = self._arrays(archs)
        s, n = self.spec, len(depth)
        if kind == "onehot":
            parts = [depth[:, None] == np.asarray(s.n_layer)[None, :],
                     width[:, None] == np.asarray(s.n_embd)[None, :],
                     (heads[:, :, None] == np.asarray(s.n_head)[None, None, :]).reshape(n, -1),
                     (mlp[:, :, None] == np.asarray(s.mlp)[None, None, :]).reshape(n, -1)]
            return np.concatenate(parts, axis=1).astype(np.float32)
        if kind == "ordinal":
            return np.concatenate([depth[:, None], width[:, None], heads, mlp],
                                  axis=1).astype(np.float32)
        raise ValueError(f"encoding kind must be one of {list(self.encoding_kinds)}, got "
                         f"{kind!r}")

    def encoding_size(self, kind: str = "onehot") -> int:
        s = self.spec
        if kind == "onehot":
            return len(s.n_layer) + len(s.n_embd) + self.max_layer * (len(s.n_head) + len(s.mlp))
        if kind == "ordinal":
            return 2 + 2 * self.max_layer
        raise ValueError(f"encoding kind must be one of {list(self.encoding_kinds)}, got "
                         f"{kind!r}")

    # ------------------------------------------------------------------ costs
    def context(self, context: int | None) -> int:
        """The context costs are counted at: ``context``, or the space's ``n_ctx``.

        Raises:
            ArchitectureError: not an int in ``[1, n_ctx]``.
        """
        if context is None:
            return int(self.n_ctx)
        if not _is_int(context) or not 1 <= context <= self.n_ctx:
            raise ArchitectureError(f"context must be an int in [1, {self.n_ctx}] (the "
                                    f"context of space {self.name}), got {context!r}")
        return int(context)

    def costs(self, archs: Iterable[Any], context: int | None = None) -> dict[str, np.ndarray]:
        """MACs per token at ``context`` positions and parameters (module docstring).

        Returns:
            ``macs`` and ``params`` (``(n,)`` int64), and ``layer_macs`` and
            ``layer_params`` (``(n, max_layer)``, zero past the depth).
        """
        c = self.context(context)
        _, d, heads, m = self._arrays(archs)
        att = heads * self.head_dim  # (n, L)
        dd = d[:, None]
        layer_macs = 3 * dd * att + 2 * att * c + att * dd + 2 * dd * m
        macs = layer_macs.sum(1) + d * self.vocab_size
        layer_params, params = self._params(d, heads, m)
        return {"macs": macs.astype(np.int64), "params": params.astype(np.int64),
                "layer_macs": layer_macs.astype(np.int64),
                "layer_params": layer_params.astype(np.int64)}

    #: bytes a value of each dtype :meth:`memory` counts in takes
    DTYPE_BYTES: ClassVar[Mapping[str, int]] = {"float32": 4, "float16": 2, "bfloat16": 2}
    counts_memory = True

    def memory(self, archs: Iterable[Any], context: int | None = None, batch: int = 1,
               dtype: str = "float32") -> dict[str, np.ndarray]:
        """Bytes subnets occupy generating ``batch`` sequences with ``context`` positions in
        their KV cache (module docstring): weights, KV cache and their sum, exact.

        Args:
            context: positions in the cache (default the space's ``n_ctx``; at most that).
            batch: sequences generated together.
            dtype: of the weights and the cache: ``float32`` (the export's), ``float16`` or
                ``bfloat16``.

        Returns:
            ``weights``, ``cache`` and ``total`` (``(n,)`` int64 bytes), and ``layer_cache``
            (``(n, max_layer)``, zero past the depth).

        Raises:
            ArchitectureError: a context, batch or dtype out of range, in one line.
        """
        c = self.context(context)
        if not _is_int(batch) or batch < 1:
            raise ArchitectureError(f"batch must be an int >= 1 (sequences generated "
                                    f"together), got {batch!r}")
        if dtype not in self.DTYPE_BYTES:
            raise ArchitectureError(f"dtype must be one of {list(self.DTYPE_BYTES)}, got "
                                    f"{dtype!r}")
        size = self.DTYPE_BYTES[dtype]
        _, d, heads, m = self._arrays(archs)
        _, params = self._params(d, heads, m)
        layer_cache = 2 * int(batch) * heads * c * self.head_dim * size  # (n, L)
        weights = params * size
        cache = layer_cache.sum(1)
        return {"weights": weights.astype(np.int64), "cache": cache.astype(np.int64),
                "total": (weights + cache).astype(np.int64),
                "layer_cache": layer_cache.astype(np.int64)}

    def _params(self, d: np.ndarray, heads: np.ndarray, m: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Parameters per layer ``(n, L)`` and in all ``(n,)`` (module docstring)."""
        att = heads * self.head_dim  # (n, L)
        dd = d[:, None]
        layer_params = np.where(att > 0, 4 * dd + 3 * dd * att + 3 * att + att * dd + dd
                                + dd * m + m + m * dd + dd, 0)
        params = layer_params.sum(1) + (self.vocab_size + self.n_ctx) * d + 2 * d
        return layer_params, params

    def macs(self, arch: Any, context: int | None = None) -> int:
        """MACs per token at ``context`` positions (default ``n_ctx``)."""
        return int(self.costs([arch], context)["macs"][0])

    def params(self, arch: Any) -> int:
        return int(self.costs([arch])["params"][0])


def _no_resolutions(space: GPTSpace, resolutions: Sequence[int] | None) -> None:
    if resolutions:
        raise ValueError(f"space {space.name} has no resolutions (its architectures take "
                         f"tokens), got {list(resolutions)}")


class GPTGenome(Genome):
    """Subnets of a ``gpt`` space as genomes ``[n_layer, n_embd, n_head_1..n_head_L,
    mlp_1..mlp_L]`` (choice indices, ``L = max_layer``), vectorised; the genes of block
    slots past the depth are 0 in a canonical genome."""

    space: GPTSpace

    def __init__(self, space: GPTSpace, resolutions: Sequence[int] | None = None) -> None:
        _no_resolutions(space, resolutions)
        self.space = space
        self.resolutions = ()
        s = space.spec
        self.depths = np.asarray(s.n_layer, np.int64)
        self.widths = np.asarray(s.n_embd, np.int64)
        self.heads = np.asarray(s.n_head, np.int64)
        self.mlps = np.asarray(s.mlp, np.int64)
        L = self.L = space.max_layer
        self.sizes = np.array([len(self.depths), len(self.widths)] + [len(self.heads)] * L
                              + [len(self.mlps)] * L, np.int64)

    def _live(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.arange(self.L)[None, :] < self.depths[X[:, 0]][:, None]
        return out

    def canonical(self, X: np.ndarray) -> np.ndarray:
        off = ~self._live(X)
        X[:, 2:2 + self.L][off] = 0
        X[:, 2 + self.L:][off] = 0
        return X

    def decode(self, X: np.ndarray) -> GPTArrays:
        live = self._live(X)
        return GPTArrays(n_layer=self.depths[X[:, 0]], n_embd=self.widths[X[:, 1]],
                         n_head=np.where(live, self.heads[X[:, 2:2 + self.L]], 0),
                         mlp=np.where(live, self.mlps[X[:, 2 + self.L:]], 0))

    def encode(self, batch: GPTArrays | Iterable[Any]) -> np.ndarray:
        a = batch if isinstance(batch, GPTArrays) else self.space.to_arrays(batch)

        live = np.arange(self.L)[None, :] < a.n_layer[:, None]
        heads = np.where(live, a.n_head, self.heads[0])
        mlp = np.where(live, a.mlp, self.mlps[0])
        return np.concatenate([
            choice_indices(self.depths, a.n_layer, "n_layer")[:, None],
            choice_indices(self.widths, a.n_embd, "n_embd")[:, None],
            np.where(live, choice_indices(self.heads, heads, "n_head"), 0),
            np.where(live, choice_indices(self.mlps, mlp, "mlp"), 0),
        ], axis=1).astype(np.int64)


@FAMILIES.register
class GPTFamily(SpaceFamily):
    """Decoder-only transformers in GPT-2's layout: ``{"n_layer", "n_embd", "n_head",
    "mlp"}``."""

    name = "gpt"
    description = ("decoder-only transformers in GPT-2's layout: elastic depth, width, heads "
                   "per layer and MLP width per layer")
    Spec = GPTSpec
    Space = GPTSpace
    supernet = "nas.supernet:GPTSupernet"
    checkpoint_meta = "nas.supernet:read_gpt_checkpoint_meta"
    load_supernet = "nas.supernet:load_gpt_supernet"
    timing_supernet = "nas.supernet._gpt:random_gpt_supernet"
    timing_onnx = "nas.export._gpt:gpt_subnet_onnx"
    export_signature = ("prefill: input_ids (batch, seq) int64 -> logits, KV cache; decode: "
                        "one token and the cache -> logits, cache")
    latency_features = "per-token MACs and parameters at a context, per layer"
