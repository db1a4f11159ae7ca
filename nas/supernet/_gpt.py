"""An elastic GPT-2-layout supernet and the static GPT-2-shaped model a subnet extracts to.

Layout (GPT-2's): learned token and position embeddings, pre-LayerNorm blocks of causal
self-attention (fused q/k/v projection) and a GELU (tanh approximation) MLP, a final
LayerNorm, and the LM head tied to the token embedding.

Elastic dimensions, all prefixes of the largest weights: the embedding width (the first
``n_embd`` channels everywhere), the heads of each layer (the first ``h`` heads of q, k and v;
the head size is fixed), the MLP width of each layer (the first ``m`` neurons) and the depth
(which blocks are kept: :func:`_kept_blocks`). An architecture is a plain dict::

    {"n_layer": 2, "n_embd": 32, "n_head": [2, 1], "mlp": [64, 32]}

with one ``n_head`` and one ``mlp`` entry per kept block, in order. LayerNorm over a prefix of
width ``E`` normalises over those ``E`` channels, as a standalone ``E``-wide model does.

Both models run the same functional block (:func:`_block`), so an extracted subnet computes
exactly what the supernet's active subnet does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import ArchitectureError, ConfigError

__all__ = ["GPT", "GPTSupernet"]

#: the KV cache: one ``(k, v)`` per kept block, each ``(batch, heads, seq, head_dim)``
KVCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]

_ARCH_KEYS = ("n_layer", "n_embd", "n_head", "mlp")


def _kept_blocks(n_layer_max: int, n_layer: int,
                 block_order: Sequence[int] | None = None) -> list[int]:
    """Which blocks of ``n_layer_max`` a depth of ``n_layer`` keeps, in running order: the
    first ``n_layer`` of ``block_order`` (a ranking of the blocks), sorted. The default
    ranking ``[L-1, 0, 1, ..., L-2]`` keeps the first ``n_layer - 1`` blocks and the last one
    (which writes what the head reads). The same rule as ``nas.space.kept_blocks``."""
    if not 1 <= n_layer <= n_layer_max:
        raise ArchitectureError(f"n_layer must be in [1, {n_layer_max}], got {n_layer!r}")
    order = block_order if block_order is not None else (n_layer_max - 1,
                                                         *range(n_layer_max - 1))
    return sorted(order[:n_layer])


def _causal_mask(seq: int, past: int, device: torch.device) -> torch.Tensor:
    """``(seq, past + seq)``: True where query ``i`` (position ``past + i``) may attend."""
    return torch.ones(seq, past + seq, dtype=torch.bool, device=device).tril(diagonal=past)


def _block(
    x: torch.Tensor, p: Mapping[str, torch.Tensor], heads: int, head_dim: int, eps: float,
    past: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One pre-LayerNorm transformer block on ``x`` ``(b, s, E)`` with the weights ``p`` (in
    ``nn.Linear``'s ``(out, in)`` orientation, already sliced to the subnet); returns the
    output and this block's ``(k, v)`` including ``past``."""
    b, s, e = x.shape
    y = F.layer_norm(x, (e,), p["ln_1.weight"], p["ln_1.bias"], eps)
    qkv = F.linear(y, p["attn.qkv.weight"], p["attn.qkv.bias"])  # (b, s, 3*h*hd)
    q, k, v = (t.view(b, s, heads, head_dim).transpose(1, 2)  # (b, h, s, hd)
               for t in qkv.split(heads * head_dim, dim=2))
    if past is not None:
        k = torch.cat([past[0], k], dim=2)  # (b, h, past+s, hd)
        v = torch.cat([past[1], v], dim=2)
    n_past = k.shape[2] - s
    if n_past == 0:
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        a = F.scaled_dot_product_attention(q, k, v,
                                           attn_mask=_causal_mask(s, n_past, x.device))
    a = a.transpose(1, 2).reshape(b, s, heads * head_dim)  # (b, s, h*hd)
    x = x + F.linear(a, p["attn.proj.weight"], p["attn.proj.bias"])
    y = F.layer_norm(x, (e,), p["ln_2.weight"], p["ln_2.bias"], eps)
    y = F.gelu(F.linear(y, p["mlp.fc.weight"], p["mlp.fc.bias"]), approximate="tanh")  # (b,s,m)
    x = x + F.linear(y, p["mlp.proj.weight"], p["mlp.proj.bias"])
    return x, (k, v)


def _embed(input_ids: torch.Tensor, wte: torch.Tensor, wpe: torch.Tensor,
           past: KVCache | None) -> torch.Tensor:
    if input_ids.dim() != 2:
        raise ConfigError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
    n_past = past[0][0].shape[2] if past else 0
    seq = input_ids.shape[1]
    if n_past + seq > wpe.shape[0]:
        raise ConfigError(f"context of {n_past + seq} positions ({n_past} cached + {seq} new) "
                          f"is longer than the model's {wpe.shape[0]}")
    pos = torch.arange(n_past, n_past + seq, device=input_ids.device)
    return F.embedding(input_ids, wte) + F.embedding(pos, wpe)  # (b, s, E)


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape))


class _Block(nn.Module):
    """A block's weights (``nn.Linear`` orientation); the supernet's hold the largest ones."""

    def __init__(self, n_embd: int, heads: int, head_dim: int, mlp: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.ln_1 = nn.ParameterDict({"weight": _param(n_embd), "bias": _param(n_embd)})
        self.attn = nn.ModuleDict({
            "qkv": nn.ParameterDict({"weight": _param(3 * inner, n_embd),
                                     "bias": _param(3 * inner)}),
            "proj": nn.ParameterDict({"weight": _param(n_embd, inner), "bias": _param(n_embd)}),
        })
        self.ln_2 = nn.ParameterDict({"weight": _param(n_embd), "bias": _param(n_embd)})
        self.mlp = nn.ModuleDict({
            "fc": nn.ParameterDict({"weight": _param(mlp, n_embd), "bias": _param(mlp)}),
            "proj": nn.ParameterDict({"weight": _param(n_embd, mlp), "bias": _param(n_embd)}),
        })
        self.heads, self.head_dim, self.n_embd, self.n_mlp = heads, head_dim, n_embd, mlp

    def weights(self, n_embd: int, heads: int, mlp: int) -> dict[str, torch.Tensor]:
        """The weights of the subnet block with these widths (prefix slices, no copies)."""
        full = dict(self.named_parameters())
        inner, hd = heads * self.head_dim, self.heads * self.head_dim
        return {
            "ln_1.weight": full["ln_1.weight"][:n_embd], "ln_1.bias": full["ln_1.bias"][:n_embd],
            # q, k and v each keep their first `heads` heads
            "attn.qkv.weight": full["attn.qkv.weight"].view(3, hd, self.n_embd)[
                :, :inner, :n_embd].reshape(3 * inner, n_embd),
            "attn.qkv.bias": full["attn.qkv.bias"].view(3, hd)[:, :inner].reshape(3 * inner),
            "attn.proj.weight": full["attn.proj.weight"][:n_embd, :inner],
            "attn.proj.bias": full["attn.proj.bias"][:n_embd],
            "ln_2.weight": full["ln_2.weight"][:n_embd], "ln_2.bias": full["ln_2.bias"][:n_embd],
            "mlp.fc.weight": full["mlp.fc.weight"][:mlp, :n_embd],
            "mlp.fc.bias": full["mlp.fc.bias"][:mlp],
            "mlp.proj.weight": full["mlp.proj.weight"][:n_embd, :mlp],
            "mlp.proj.bias": full["mlp.proj.bias"][:n_embd],
        }


class GPT(nn.Module):
    """A static GPT-2-shaped language model (as extracted from :class:`GPTSupernet`).

    Heads and MLP width may differ between blocks. ``forward(input_ids, past_key_values,
    use_cache)`` as the supernet's.

    Attributes:
        arch: the architecture it was extracted as (a plain dict).
    """

    def __init__(self, vocab_size: int, n_ctx: int, n_embd: int, n_head: Sequence[int],
                 mlp: Sequence[int], head_dim: int, layer_norm_epsilon: float = 1e-5) -> None:
        super().__init__()
        if len(n_head) != len(mlp):
            raise ConfigError(f"n_head and mlp need one entry per block, got {len(n_head)} "
                              f"and {len(mlp)}")
        self.wte = nn.Parameter(torch.zeros(vocab_size, n_embd))
        self.wpe = nn.Parameter(torch.zeros(n_ctx, n_embd))
        self.blocks = nn.ModuleList(_Block(n_embd, h, head_dim, m)
                                    for h, m in zip(n_head, mlp, strict=True))
        self.ln_f = nn.ParameterDict({"weight": _param(n_embd), "bias": _param(n_embd)})
        self.vocab_size, self.n_ctx = vocab_size, n_ctx
        self.n_embd, self.head_dim = n_embd, head_dim
        self.eps = layer_norm_epsilon
        self.arch: dict[str, Any] = {"n_layer": len(n_head), "n_embd": n_embd,
                                     "n_head": list(n_head), "mlp": list(mlp)}

    def forward(self, input_ids: torch.Tensor, past_key_values: KVCache | None = None,
                use_cache: bool = False) -> torch.Tensor | tuple[torch.Tensor, KVCache]:
        x = _embed(input_ids, self.wte, self.wpe, past_key_values)  # (b, s, E)
        present = []
        for i, block in enumerate(self.blocks):
            assert isinstance(block, _Block)
            x, kv = _block(x, dict(block.named_parameters()), block.heads, self.head_dim,
                           self.eps, past_key_values[i] if past_key_values else None)
            present.append(kv)
        x = F.layer_norm(x, (self.n_embd,), self.ln_f["weight"], self.ln_f["bias"], self.eps)
        logits = F.linear(x, self.wte)  # (b, s, vocab)
        return (logits, tuple(present)) if use_cache else logits


class GPTSupernet(nn.Module):
    """Elastic depth, embedding width, heads and MLP width per layer (see the module doc).

    Args:
        vocab_size: tokens in the vocabulary.
        n_ctx: the longest context (learned positions).
        n_layer: the most blocks.
        n_embd: the widest embedding.
        n_head: the most heads of a block.
        head_dim: the size of every head (fixed).
        mlp: the widest MLP of a block.
        layer_norm_epsilon: every LayerNorm's epsilon.
        block_order: the ranking of the blocks that a depth keeps a prefix of (see
            :func:`_kept_blocks`); default ``[n_layer-1, 0, 1, ..., n_layer-2]``.

    Example:
        >>> net = GPTSupernet(vocab_size=64, n_ctx=32, n_layer=2, n_embd=32, n_head=4,
        ...                   head_dim=8, mlp=128)
        >>> net.set_active({"n_layer": 1, "n_embd": 16, "n_head": [2], "mlp": [64]})
        >>> sub = net.extract()  # a plain GPT with copied weights
    """

    def __init__(self, *, vocab_size: int, n_ctx: int, n_layer: int, n_embd: int, n_head: int,
                 head_dim: int, mlp: int, layer_norm_epsilon: float = 1e-5,
                 block_order: Sequence[int] | None = None) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("n_ctx", n_ctx), ("n_layer", n_layer),
                            ("n_embd", n_embd), ("n_head", n_head), ("head_dim", head_dim),
                            ("mlp", mlp)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(layer_norm_epsilon, float | int) and layer_norm_epsilon > 0):
            raise ConfigError(f"layer_norm_epsilon must be positive, got {layer_norm_epsilon!r}")
        if block_order is not None:
            block_order = list(block_order)
            if sorted(block_order) != list(range(n_layer)):
                raise ConfigError(f"block_order must rank the blocks 0..{n_layer - 1}, each once; "
                                  f"got {block_order}")
        self.geometry: dict[str, Any] = {
            "vocab_size": vocab_size, "n_ctx": n_ctx, "n_layer": n_layer, "n_embd": n_embd,
            "n_head": n_head, "head_dim": head_dim, "mlp": mlp,
            "layer_norm_epsilon": float(layer_norm_epsilon), "block_order": block_order}
        self.wte = nn.Parameter(torch.zeros(vocab_size, n_embd))
        self.wpe = nn.Parameter(torch.zeros(n_ctx, n_embd))
        self.blocks = nn.ModuleList(_Block(n_embd, n_head, head_dim, mlp)
                                    for _ in range(n_layer))
        self.ln_f = nn.ParameterDict({"weight": _param(n_embd), "bias": _param(n_embd)})
        self.eps = float(layer_norm_epsilon)
        self._init_weights()
        #: what the checkpoint this net was read from (or the file it was imported from)
        #: recorded; empty for a new net
        self.checkpoint_meta: dict[str, Any] = {}
        #: the ``gpt`` space it was built for (:meth:`from_space`), or None
        self.space_name: str | None = None
        self.active_arch: dict[str, Any] = self.largest()

    @classmethod
    def from_space(cls, space: Any) -> GPTSupernet:
        """The supernet of a ``gpt`` family space (a name or the space): its largest choices,
        its vocabulary, context, head size, LayerNorm epsilon and block ranking."""
        from nas.space import GPTSpace, get_family_space

        sp = get_family_space(space)
        if not isinstance(sp, GPTSpace):
            raise ConfigError(f"space {sp.name!r} is of the {sp.family!r} family, not 'gpt'")
        spec = sp.spec
        net = cls(vocab_size=spec.vocab_size, n_ctx=spec.n_ctx, n_layer=max(spec.n_layer),
                  n_embd=max(spec.n_embd), n_head=max(spec.n_head), head_dim=spec.head_dim,
                  mlp=max(spec.mlp), layer_norm_epsilon=spec.layer_norm_eps,
                  block_order=spec.block_order)
        net.space_name = sp.name
        return net

    def _init_weights(self) -> None:
        """GPT-2's: normal(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)."""
        n_layer = self.geometry["n_layer"]
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_"):
                nn.init.ones_(p)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
            else:
                nn.init.normal_(p, std=0.02)

    # ------------------------------------------------------------------ architectures
    def largest(self) -> dict[str, Any]:
        g = self.geometry
        return {"n_layer": g["n_layer"], "n_embd": g["n_embd"],
                "n_head": [g["n_head"]] * g["n_layer"], "mlp": [g["mlp"]] * g["n_layer"]}

    def check_arch(self, arch: Any) -> dict[str, Any]:
        """``arch`` (a mapping, or a ``gpt`` space's architecture) as a plain dict, if this
        supernet holds it; else one ArchitectureError line naming the field, the value and
        what is allowed."""
        if hasattr(arch, "to_dict") and not isinstance(arch, Mapping):  # a space's architecture
            arch = arch.to_dict()
        if not isinstance(arch, Mapping):
            raise ArchitectureError(f"a GPT architecture is a mapping with keys "
                                    f"{list(_ARCH_KEYS)}, got {type(arch).__name__}")
        keys = set(arch)
        if keys != set(_ARCH_KEYS):
            missing, extra = sorted(set(_ARCH_KEYS) - keys), sorted(keys - set(_ARCH_KEYS))
            raise ArchitectureError(f"a GPT architecture has exactly the keys {list(_ARCH_KEYS)}"
                                    + (f"; missing {missing}" if missing else "")
                                    + (f"; unknown {extra}" if extra else ""))
        g = self.geometry

        def whole(field: str, value: Any, top: int) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ArchitectureError(f"{field} must be an integer in [1, {top}], got "
                                        f"{value!r}")
            return value

        n_layer = whole("n_layer", arch["n_layer"], g["n_layer"])
        n_embd = whole("n_embd", arch["n_embd"], g["n_embd"])
        lists = {}
        for field in ("n_head", "mlp"):
            values = arch[field]
            if not isinstance(values, Sequence) or isinstance(values, str) \
                    or len(values) != n_layer:
                raise ArchitectureError(f"{field} must be a list of {n_layer} integers (one per "
                                        f"layer, n_layer={n_layer}), got {values!r}")
            lists[field] = [whole(f"{field}[{i}]", v, g[field]) for i, v in enumerate(values)]
        return {"n_layer": n_layer, "n_embd": n_embd, "n_head": lists["n_head"],
                "mlp": lists["mlp"]}

    def set_active(self, arch: Any) -> dict[str, Any]:
        """Make ``arch`` the subnet that ``forward`` runs; returns it as a plain dict."""
        self.active_arch = self.check_arch(arch)
        return self.active_arch

    def set_largest(self) -> dict[str, Any]:
        return self.set_active(self.largest())

    def kept_blocks(self, arch: Mapping[str, Any] | None = None) -> list[int]:
        """The indices of the blocks ``arch`` (default: the active one) runs, in order."""
        arch = self.active_arch if arch is None else self.check_arch(arch)
        return _kept_blocks(self.geometry["n_layer"], arch["n_layer"],
                            self.geometry["block_order"])

    # ------------------------------------------------------------------ running
    def forward(self, input_ids: torch.Tensor, past_key_values: KVCache | None = None,
                use_cache: bool = False) -> torch.Tensor | tuple[torch.Tensor, KVCache]:
        """Logits ``(batch, seq, vocab)`` of the active subnet for ``input_ids`` ``(batch,
        seq)``, following ``past_key_values`` (the cache of the tokens before them, as a
        previous call with ``use_cache=True`` returned it). With ``use_cache``, returns
        ``(logits, cache)``, the cache covering the past and these tokens."""
        arch = self.active_arch
        e = arch["n_embd"]
        if past_key_values is not None and len(past_key_values) != arch["n_layer"]:
            raise ConfigError(f"past_key_values has {len(past_key_values)} layers, the active "
                              f"subnet {arch['n_layer']}")
        x = _embed(input_ids, self.wte[:, :e], self.wpe[:, :e], past_key_values)  # (b, s, e)
        present = []
        for i, j in enumerate(self.kept_blocks()):
            block = self.blocks[j]
            assert isinstance(block, _Block)
            h = arch["n_head"][i]
            x, kv = _block(x, block.weights(e, h, arch["mlp"][i]), h,
                           self.geometry["head_dim"], self.eps,
                           past_key_values[i] if past_key_values else None)
            present.append(kv)
        x = F.layer_norm(x, (e,), self.ln_f["weight"][:e], self.ln_f["bias"][:e], self.eps)
        logits = F.linear(x, self.wte[:, :e])  # (b, s, vocab)
        return (logits, tuple(present)) if use_cache else logits

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract(self, arch: Mapping[str, Any] | None = None) -> GPT:
        """A static :class:`GPT` of ``arch`` (default: the active one) with copies of its
        weights, in the supernet's train/eval mode."""
        arch = self.active_arch if arch is None else self.check_arch(arch)
        g, e = self.geometry, arch["n_embd"]
        sub = GPT(g["vocab_size"], g["n_ctx"], e, arch["n_head"], arch["mlp"], g["head_dim"],
                  self.eps)
        sub.wte.copy_(self.wte[:, :e])
        sub.wpe.copy_(self.wpe[:, :e])
        sub.ln_f["weight"].copy_(self.ln_f["weight"][:e])
        sub.ln_f["bias"].copy_(self.ln_f["bias"][:e])
        for i, j in enumerate(self.kept_blocks(arch)):
            src, dst = self.blocks[j], sub.blocks[i]
            assert isinstance(src, _Block)
            assert isinstance(dst, _Block)
            weights = src.weights(e, arch["n_head"][i], arch["mlp"][i])
            for name, p in dst.named_parameters():
                p.copy_(weights[name])
        sub.arch = copy.deepcopy(arch)
        return sub.train(self.training)


def random_gpt_supernet(space: Any) -> GPTSupernet:
    """A randomly initialised supernet of a ``gpt`` space, in eval mode: what latency is
    measured on (the ``gpt`` family's ``timing_supernet``)."""
    return GPTSupernet.from_space(space).eval()
