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
from functools import lru_cache
from typing import Any

import numpy as np

from nas.errors import ConfigError

__all__ = ["GPT_FEATURES", "GPTFeatures", "gpt_features"]

#: the feature names, in column order
GPT_FEATURES = ("linear_mmacs", "attention_mmacs", "weight_mb", "cache_mb", "blocks",
                "activation_mvalues", "call")


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
        """``(n, F)`` float64 features of architectures (or the space's ``GPTArrays``)."""
        from nas.space import get_family_space

        sp: Any = get_family_space(self.space)
        arrays: Any = sp.to_arrays(archs) if not hasattr(archs, "n_head") else archs
        d = arrays.n_embd.astype(np.float64)
        att = arrays.n_head.astype(np.float64) * sp.head_dim  # (n, L), 0 past the depth
        m = arrays.mlp.astype(np.float64)
        t, s, vocab = float(self.tokens), float(self.positions), float(sp.vocab_size)
        dd = d[:, None]
        linear = t * (3 * dd * att + att * dd + 2 * dd * m).sum(1) + t * d * vocab
        attention = 2 * t * s * att.sum(1)
        params = sp.costs(arrays)["params"].astype(np.float64)
        cache = 2 * (s + (s - t)) * att.sum(1)  # present written (S), past read (S - T)
        blocks = arrays.n_layer.astype(np.float64)
        live = att > 0
        acts = t * (np.where(live, 4 * dd + 5 * att + 2 * m, 0.0).sum(1) + d + vocab)
        return np.stack([linear / 1e6, attention / 1e6, 4 * params / 1e6, 4 * cache / 1e6,
                         blocks, acts / 1e6, np.ones_like(d)], axis=1)

    def macs(self, archs: Iterable[Any] | Any) -> np.ndarray:
        """MACs of one call, millions (``linear_mmacs + attention_mmacs``)."""
        x = self.transform(archs)
        return np.asarray(x[:, 0] + x[:, 1])


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
