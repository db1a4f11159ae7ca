"""Latency features of a ``gpt`` space's subnets for one timed call (issue 26 item 3).

A language model's call is what its device's workload says (:class:`~nas.devices.Workload`):
``T`` new tokens attending over ``S`` positions (prefill: ``T = S = P``; decode with the KV
cache: ``T = 1``, ``S = C``; decode recomputed: ``T = S = C``). The exported graph
(:mod:`nas.export._gpt`) runs, per block of ``h`` heads of ``hd`` (``A = h hd``) on a width
``d`` with an MLP of ``m``: LayerNorm, the QKV projection (``T d 3A`` MACs), scores and their
weighted sum (``2 T S A``), the output projection (``T A d``), LayerNorm and the MLP
(``2 T d m``); it concatenates the past with the new keys and values (``2 S A`` values
copied); then the final LayerNorm and the tied head (``T d V``).

Where the time goes differs by workload, which is why the features are several (Spearman
of MACs against decode latency is what issue 26 measures):

``linear_mmacs``
    MACs of the projections, MLPs and head, millions: the compute that grows with tokens.
``attention_mmacs``
    MACs of scores and weighted sums, millions (``2 T S A`` summed over blocks).
``weight_mb``
    Megabytes of float32 weights the call reads (every weight once, whatever ``T``): what
    a memory-bound decode step costs.
``cache_mb``
    Megabytes of cache the call reads and writes (past and present, float32).
``blocks``
    The number of blocks: operators launched per call grow with it (dispatch overhead,
    what batch-1 decode on a fast core is bound by).
``activation_mvalues``
    Activation values written, millions (``T`` times the widths of the block's tensors).
``call``
    1: what a call costs whatever the subnet (the session's own overhead).

Every feature is a sum over blocks plus a term of the embedding and head, exact from the
architecture (no table to build), so any model linear in them is again a sum of per-block
costs (what the ``additive`` kind fits).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from nas.errors import ArchitectureError, ConfigError

__all__ = ["GPT_FEATURES", "GPTFeatures", "gpt_features"]

#: the feature names, in column order
GPT_FEATURES = ("linear_mmacs", "attention_mmacs", "weight_mb", "cache_mb", "blocks",
                "activation_mvalues", "call")
#: the column of ``blocks`` (the depth itself, not a sum over slots)
_BLOCKS = GPT_FEATURES.index("blocks")
#: what each feature is counted in: millions, or ones (``blocks``, ``call``)
_DIVISOR = np.array([1e6, 1e6, 1e6, 1e6, 1.0, 1e6, 1.0])
#: the index of a value a space does not offer: any row built with it is negative
_NOT_OFFERED = -(2**40)


def _workload_dims(space: Any, workload: Mapping[str, Any] | Any) -> tuple[int, int]:
    """``(T, S)``: new tokens and attended positions of one call under ``workload``."""
    from nas.devices import Workload

    if workload is None:
        raise ConfigError(f"space {space.name!r} of the 'gpt' family is priced per workload: "
                          "fit the predictor for a device whose profile says prefill or "
                          "decode (e.g. cpu-1t-decode256)")
    w = workload if isinstance(workload, Workload) else Workload.from_dict(
        dict(workload), where="workload")
    space.check_workload(w, "of the predictor")
    dims = w.dims()
    t, past = int(dims["sequence"]), int(dims["past_sequence"])
    return t, past + t


@dataclass(frozen=True)
class GPTFeatures:
    """The features of one space under one workload (see the module docstring).

    Attributes:
        space: the space's name.
        tokens: ``T``, the call's new tokens.
        positions: ``S``, the positions it attends over.
        names: the feature names (:data:`GPT_FEATURES`).
        groups: each feature's group (all ``"aggregate"``: network-wide sums).
    """

    space: str
    tokens: int
    positions: int
    names: tuple[str, ...] = GPT_FEATURES
    groups: tuple[str, ...] = ("aggregate",) * len(GPT_FEATURES)

    def transform(self, archs: Iterable[Any] | Any) -> np.ndarray:
        """``(n, F)`` float64 features of architectures (or the space's ``GPTArrays``).

        Raises:
            ArchitectureError: ``GPTArrays`` with a width, heads or MLP width the space
                does not offer.
        """
        tab = self._tab
        a: Any = archs
        if not hasattr(a, "n_head") or hasattr(a, "space"):  # not yet the batch form
            from nas.space import get_family_space

            a = get_family_space(self.space).to_arrays(archs)
        # one row of the per-layer table for each (width, heads, MLP width) of every slot
        # (a slot past the depth has heads and MLP 0: a row of zeros), then one sum
        d_idx = tab.width_index.take(a.n_embd, mode="clip")
        row = (d_idx[:, None] * tab.n_heads + tab.heads_index.take(a.n_head, mode="clip")
               ) * tab.n_mlp + tab.mlp_index.take(a.mlp, mode="clip")
        if len(row) and row.min() < 0:
            raise ArchitectureError(
                f"GPTArrays hold a width, heads or MLP width that space {self.space!r} does "
                "not offer")
        total = tab.per_layer.take(row, axis=0).sum(axis=1) + tab.fixed.take(d_idx, axis=0)
        total[:, _BLOCKS] = a.n_layer
        return np.asarray(total / tab.divisor)

    @cached_property
    def _tab(self) -> _Tables:
        return _tables(self.space, self.tokens, self.positions)

    def macs(self, archs: Iterable[Any] | Any) -> np.ndarray:
        """MACs of one call, millions (``linear_mmacs + attention_mmacs``)."""
        return self.macs_of(self.transform(archs))

    @staticmethod
    def macs_of(features: np.ndarray) -> np.ndarray:
        """The MACs of one call, millions, from the ``(n, F)`` features of :meth:`transform`."""
        return np.asarray(features[:, 0] + features[:, 1])


@dataclass(frozen=True)
class _Tables:
    """The features of one space under one workload as integer tables: every feature is a
    sum over block slots of a function of the slot's (width, heads, MLP width), plus a
    function of the width alone, all whole numbers (MACs, values, bytes), so a sum of
    table rows in int64 is exact and ``total / divisor`` is the very float the formulas of
    the module docstring give, whatever the order of the sum.

    Attributes:
        per_layer: ``(D * H * M, F)`` one slot's contribution, by width index, heads index
            and MLP-width index (heads and MLP width 0, a slot past the depth: index 0).
        fixed: ``(D, F)`` the embedding, head and call's contribution, by width index.
        width_index, heads_index, mlp_index: each value's index (``_NOT_OFFERED`` for one
            the space does not offer, and past the largest: ``take(mode="clip")``).
        n_heads, n_mlp: ``H`` and ``M``, the choices and 0.
        divisor: ``(F,)`` what each feature is counted in.
    """

    per_layer: np.ndarray
    fixed: np.ndarray
    width_index: np.ndarray
    heads_index: np.ndarray
    mlp_index: np.ndarray
    n_heads: int
    n_mlp: int
    divisor: np.ndarray


def _index_of(values: np.ndarray) -> np.ndarray:
    out = np.full(int(values.max()) + 2, _NOT_OFFERED, dtype=np.intp)
    out[values] = np.arange(len(values))
    return out


@lru_cache(maxsize=64)
def _tables(space: str, tokens: int, positions: int) -> _Tables:
    """The tables of ``space`` with ``tokens`` new tokens over ``positions`` positions."""
    from nas.space import GPTArrays, get_family_space

    sp: Any = get_family_space(space)
    s = sp.spec
    widths = np.asarray(s.n_embd, dtype=np.int64)
    heads = np.asarray((0, *s.n_head), dtype=np.int64)  # 0: a slot past the depth
    mlps = np.asarray((0, *s.mlp), dtype=np.int64)
    t, pos, vocab = int(tokens), int(positions), int(sp.vocab_size)
    # every (width, heads, MLP width) as one slot
    d, h, m = (g.ravel() for g in np.meshgrid(widths, heads, mlps, indexing="ij"))
    att = h * int(sp.head_dim)
    live = att > 0
    # parameters as the space counts them: its own per-layer count, and the rest by width
    one_slot = GPTArrays(n_layer=np.ones_like(d), n_embd=d,
                         n_head=np.pad(h[:, None], ((0, 0), (0, sp.max_layer - 1))),
                         mlp=np.pad(m[:, None], ((0, 0), (0, sp.max_layer - 1))))
    layer_params = sp.costs(one_slot)["layer_params"][:, 0]
    no_slot = GPTArrays(n_layer=np.zeros_like(widths), n_embd=widths,
                        n_head=np.zeros((len(widths), sp.max_layer), dtype=np.int64),
                        mlp=np.zeros((len(widths), sp.max_layer), dtype=np.int64))
    fixed_params = sp.costs(no_slot)["params"]
    zero = np.zeros_like(d)
    per_layer = np.stack([
        t * (3 * d * att + att * d + 2 * d * m),  # linear_mmacs
        2 * t * pos * att,  # attention_mmacs
        4 * layer_params,  # weight_mb
        4 * 2 * (pos + (pos - t)) * att,  # cache_mb: present written, past read
        zero,  # blocks: the depth, set apart
        t * np.where(live, 4 * d + 5 * att + 2 * m, 0),  # activation_mvalues
        zero,  # call
    ], axis=1).astype(np.int64)
    fixed = np.stack([t * widths * vocab, 0 * widths, 4 * fixed_params, 0 * widths,
                      0 * widths, t * (widths + vocab), np.ones_like(widths)],
                     axis=1).astype(np.int64)
    for arr in (per_layer, fixed):
        arr.setflags(write=False)  # shared by every predictor of the space and workload
    return _Tables(per_layer=per_layer, fixed=fixed, width_index=_index_of(widths),
                   heads_index=_index_of(heads), mlp_index=_index_of(mlps),
                   n_heads=len(heads), n_mlp=len(mlps), divisor=_DIVISOR)


def gpt_features(space: Any, workload: Mapping[str, Any] | Any) -> GPTFeatures:
    """The features of ``space`` (a ``gpt`` family space) under a device's ``workload``
    (validated once per space and workload: predictors ask at every call).

    Raises:
        ConfigError: no workload, or one the space cannot run (longer than its context).
    """
    if isinstance(workload, Mapping):
        return _cached(space.name, tuple(sorted(workload.items())))
    t, s = _workload_dims(space, workload)
    return GPTFeatures(space.name, t, s)


@lru_cache(maxsize=64)
def _cached(space: str, workload: tuple[tuple[str, Any], ...]) -> GPTFeatures:
    from nas.space import get_family_space

    t, s = _workload_dims(get_family_space(space), dict(workload))
    return GPTFeatures(space, t, s)
