"""Proxies of the ``gpt`` family (language models).

``perplexity``
    Validation perplexity of the subnet with the supernet's weights (inherited), on held-out
    text: by default the shipped validation works of ``gpt_shakespeare``
    (``nas/_data/lm/shakespeare_val``), byte-level. The score is ``-log(perplexity)``, i.e.
    minus the mean next-token cross-entropy in nats: higher is better, and it orders subnets
    exactly as perplexity does, reversed.
``nonembedding-params``
    LiteTransformerSearch's training-free proxy (Javaheripi et al., NeurIPS 2022): the number
    of parameters outside the token and position embeddings (the decoder blocks'). More is
    better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from nas.errors import ConfigError
from nas.proxies._base import Proxy, ProxyContext, register_proxy
from nas.space import Architecture

__all__ = ["NonEmbeddingParamsProxy", "PerplexityProxy", "score_of_perplexity"]


def score_of_perplexity(ppl: np.ndarray | float) -> np.ndarray:
    """The ``perplexity`` proxy's score of a perplexity: ``-log(ppl)``."""
    return -np.log(np.asarray(ppl, dtype=np.float64))


@register_proxy
class PerplexityProxy(Proxy):
    name = "perplexity"
    description = ("-log(validation perplexity) with inherited weights, byte-level, on the "
                   "shipped held-out Shakespeare works or text=PATH (higher is better)")
    tags = frozenset({"gpt"})
    options: ClassVar[dict[str, Any]] = {"tokens": 32768, "batch_size": 16, "text": ""}
    needs_supernet = True

    def _windows(self, ctx: ProxyContext) -> Any:
        from nas._data import shipped_text
        from nas.train import BYTE_VOCAB, encode_works, read_text_corpus, windows

        vocab = getattr(ctx.space, "vocab_size", None)
        if vocab != BYTE_VOCAB:
            raise ConfigError(f"proxy 'perplexity' reads byte-level text: space "
                              f"{ctx.space.name} has a vocabulary of {vocab}, not {BYTE_VOCAB}")
        key = ("lm_windows", self.opts["text"], self.opts["tokens"])
        if key not in ctx._memo:
            src = self.opts["text"] or shipped_text()
            corpus = read_text_corpus(src)
            ids = encode_works([t for _, t in corpus.works])
            ctx._memo[key] = windows(ids, int(ctx.space.n_ctx), self.opts["tokens"])  # type: ignore[attr-defined]
        return ctx._memo[key]

    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        from nas.train import lm_loss

        net = ctx.require_supernet("proxy 'perplexity'")
        wins = self._windows(ctx)
        # -log(ppl) is minus the mean cross-entropy in nats
        return np.asarray([-lm_loss(net, a.to_dict(), wins, self.opts["batch_size"],
                                    ctx.device) for a in archs], dtype=np.float64)


@register_proxy
class NonEmbeddingParamsProxy(Proxy):
    name = "nonembedding-params"
    description = ("parameters outside the token and position embeddings (LiteTransformerSearch"
                   "'s training-free proxy; more = better)")
    tags = frozenset({"gpt"})
    cacheable = False

    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        costs = ctx.space.costs(archs)
        return np.asarray(costs["layer_params"].sum(1), dtype=np.float64)

    def array_scorer(self, space: Any) -> Callable[[Any], np.ndarray]:
        """Analytic: scores a batch (``space.to_arrays``' form) in this process, so a search
        with it runs at predictor speed."""
        self._check_tags(space)
        return lambda a: np.asarray(space.costs(a)["layer_params"].sum(1), dtype=np.float64)
