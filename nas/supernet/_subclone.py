"""Weight subcloning: order a GPT supernet by importance, so every prefix is the best one.

The idea is Samragh et al., 2023, "Weight subcloning: direct initialization of transformers
using larger pretrained ones" (arXiv:2312.09299): a smaller transformer trains much faster
from a larger pretrained one's weights than from random ones, if the kept embedding channels,
heads and MLP neurons are the important ones and the removed blocks are those the output
depends on least. :class:`~nas.supernet.GPTSupernet` keeps prefixes (the first ``n_embd``
channels, the first ``h`` heads and ``m`` neurons of each block) and a ranking of its blocks,
so subcloning here is a permutation of its weights plus a block ranking, measured once on a
calibration batch of token ids:

- **Embedding channels**: the mean magnitude ``|x_c|`` of channel ``c`` of the residual stream,
  averaged over the batch and positions and summed over the ``L + 1`` points where the stream
  is read (each block's input and the final LayerNorm's input). The paper observes that the
  same few channels are large all along the stream, so one ranking serves every layer (the
  width is shared by the embeddings, every block and the tied head).
- **Attention heads** (per block): the mean norm of the head's contribution to the residual
  stream, ``||W_proj[:, head] @ a_head||`` per token (its attention output through its slice
  of the output projection): what dropping the head takes away from the stream.
- **MLP neurons** (per block): the same for neuron ``n``, ``|gelu_n| * ||W_proj[:, n]||``
  averaged over tokens: the mean magnitude of its activation (the paper's measure) weighted by
  how strongly it writes to the stream, so a large activation that is never read ranks low.
- **Blocks**: the mean KL divergence from the largest subnet's next-token distribution to the
  same network with that one block skipped. A shallower subnet keeps the blocks whose removal
  changes the output most. As in the paper, the first and the last block are kept before any
  middle one (``keep_ends``): one skip at a time underrates them, and removing either (what
  reads the embeddings, what writes what the head reads) costs most once several are gone.

Every permutation is one the network computes the same function under (LayerNorm is
symmetric in its channels; a head's q, k, v and its slice of the output projection move
together; a neuron's ``fc`` row and ``proj`` column move together; the tied head moves with
``wte``), so :func:`reorder_by_importance` leaves the largest subnet's logits unchanged (up to
float rounding) and changes only which subnets the prefixes are.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nas.errors import ConfigError, DataError
from nas.supernet._gpt import GPT, GPTSupernet, _Block

__all__ = ["Importance", "apply_importance", "measure_importance", "reorder_by_importance",
           "subclone"]


@dataclass(frozen=True)
class Importance:
    """What :func:`measure_importance` measured, indexed as the supernet was measured (before
    any reordering); every score is non-negative, higher is more important.

    Attributes:
        channels: ``(n_embd,)`` embedding channels.
        heads: ``(n_layer, n_head)`` heads of each block.
        neurons: ``(n_layer, mlp)`` MLP neurons of each block.
        blocks: ``(n_layer,)`` the KL divergence (nats per token) of the output when each
            block alone is skipped.
        block_order: the blocks ranked, most important first (what a depth keeps a prefix of).
    """

    channels: torch.Tensor
    heads: torch.Tensor
    neurons: torch.Tensor
    blocks: torch.Tensor
    block_order: list[int]

    def channel_order(self) -> torch.Tensor:
        """The permutation that puts the channels in descending importance (ties keep their
        order): new channel ``i`` is old channel ``channel_order()[i]``."""
        return torch.argsort(self.channels, descending=True, stable=True)

    def head_order(self) -> torch.Tensor:
        """``(n_layer, n_head)``: each block's heads in descending importance."""
        return torch.argsort(self.heads, dim=1, descending=True, stable=True)

    def neuron_order(self) -> torch.Tensor:
        """``(n_layer, mlp)``: each block's neurons in descending importance."""
        return torch.argsort(self.neurons, dim=1, descending=True, stable=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (for JSON)."""
        return {"channels": self.channels.tolist(), "heads": self.heads.tolist(),
                "neurons": self.neurons.tolist(), "blocks": self.blocks.tolist(),
                "block_order": list(self.block_order)}


def _check_ids(net: GPTSupernet, ids: Any) -> torch.Tensor:
    """``ids`` as a ``(batch, seq)`` long tensor the supernet can run, else one DataError line."""
    g = net.geometry
    if not isinstance(ids, torch.Tensor):
        raise DataError(f"calibration_ids must be a torch tensor of token ids, got "
                        f"{type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise DataError(f"calibration_ids must hold integer token ids, got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise DataError(f"calibration_ids must be (batch, seq), got shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise DataError(f"calibration_ids is empty (shape {tuple(ids.shape)}); give at least "
                        "one sequence of at least one token")
    if ids.shape[1] > g["n_ctx"]:
        raise DataError(f"calibration_ids has sequences of {ids.shape[1]} tokens, longer than "
                        f"the model's context of {g['n_ctx']}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= g["vocab_size"]:
        bad = lo if lo < 0 else hi
        raise DataError(f"calibration_ids has token id {bad}, outside the vocabulary "
                        f"[0, {g['vocab_size'] - 1}]")
    return ids.to(device=net.wte.device, dtype=torch.long)


def _run_largest(net: GPTSupernet, ids: torch.Tensor, skip: int | None = None,
                 record: dict[str, Any] | None = None) -> torch.Tensor:
    """The largest subnet's log-probabilities ``(b, s, vocab)`` for ``ids``, every block in
    order (block ``skip`` left out); with ``record``, fills it with the summed residual-stream
    magnitude per channel and each block's head and neuron contributions. The arithmetic is
    ``nas.supernet._gpt._block``'s, written out to see inside it."""
    g, eps = net.geometry, net.eps
    n_head, hd, e = g["n_head"], g["head_dim"], g["n_embd"]
    b, s = ids.shape
    tokens = b * s
    x = F.embedding(ids, net.wte) + F.embedding(torch.arange(s, device=ids.device),
                                               net.wpe)  # (b, s, E)
    channels = torch.zeros(e, device=ids.device)
    heads, neurons = [], []
    for j, block in enumerate(net.blocks):
        if j == skip:
            continue
        assert isinstance(block, _Block)
        p = dict(block.named_parameters())
        channels += x.abs().sum(dim=(0, 1))
        y = F.layer_norm(x, (e,), p["ln_1.weight"], p["ln_1.bias"], eps)
        q, k, v = (t.view(b, s, n_head, hd).transpose(1, 2)  # (b, h, s, hd)
                   for t in F.linear(y, p["attn.qkv.weight"], p["attn.qkv.bias"]).split(
                       n_head * hd, dim=2))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # (b,s,h,hd)
        w_proj = p["attn.proj.weight"].view(e, n_head, hd)
        per_head = torch.einsum("bshd,ehd->bshe", a, w_proj)  # (b, s, h, E)
        if record is not None:
            heads.append(per_head.norm(dim=3).sum(dim=(0, 1)) / tokens)
        x = x + per_head.sum(dim=2) + p["attn.proj.bias"]
        y = F.layer_norm(x, (e,), p["ln_2.weight"], p["ln_2.bias"], eps)
        act = F.gelu(F.linear(y, p["mlp.fc.weight"], p["mlp.fc.bias"]),
                     approximate="tanh")  # (b, s, m)
        if record is not None:
            neurons.append(act.abs().sum(dim=(0, 1)) / tokens
                           * p["mlp.proj.weight"].norm(dim=0))
        x = x + F.linear(act, p["mlp.proj.weight"], p["mlp.proj.bias"])
    channels += x.abs().sum(dim=(0, 1))
    x = F.layer_norm(x, (e,), net.ln_f["weight"], net.ln_f["bias"], eps)
    if record is not None:
        record.update(channels=channels / tokens, heads=torch.stack(heads),
                      neurons=torch.stack(neurons))
    return F.log_softmax(F.linear(x, net.wte), dim=-1)  # (b, s, vocab)


@torch.no_grad()
def measure_importance(net: GPTSupernet, calibration_ids: torch.Tensor, *,
                       keep_ends: bool = True) -> Importance:
    """Measure the importance of the supernet's channels, heads, neurons and blocks on a
    calibration batch, running its largest subnet (what is measured, and why: the module doc).
    The supernet is not changed.

    Args:
        net: the supernet (its active subnet and train/eval mode are left as they are).
        calibration_ids: ``(batch, seq)`` token ids, ``seq`` at most the model's context; a
            few thousand tokens of the text the subnets are for is plenty.
        keep_ends: rank the first and last block before the middle ones (the paper's rule);
            False ranks every block by its measured effect alone.

    Raises:
        DataError: the ids are not a non-empty ``(batch, seq)`` integer tensor of the model's
            vocabulary and context.
    """
    ids = _check_ids(net, calibration_ids)
    record: dict[str, Any] = {}
    full = _run_largest(net, ids, record=record)
    n_layer = net.geometry["n_layer"]
    blocks = torch.zeros(n_layer)
    if n_layer > 1:
        p_full = full.exp()
        for j in range(n_layer):
            skipped = _run_largest(net, ids, skip=j)
            kl = (p_full * (full - skipped)).sum(dim=-1).mean()  # KL(full || skipped)
            blocks[j] = kl.clamp_min(0.0).cpu()
    ranked = sorted(range(n_layer), key=lambda j: -float(blocks[j]))  # stable: ties keep order
    if keep_ends and n_layer > 2:
        ends = [j for j in ranked if j in (0, n_layer - 1)]
        ranked = ends + [j for j in ranked if j not in (0, n_layer - 1)]
    return Importance(channels=record["channels"].cpu(), heads=record["heads"].cpu(),
                      neurons=record["neurons"].cpu(), blocks=blocks, block_order=ranked)


@torch.no_grad()
def apply_importance(net: GPTSupernet, importance: Importance, *,
                     rank_blocks: bool = True) -> None:
    """Permute ``net``'s weights in place into ``importance``'s orders (channels, each block's
    heads and neurons) and, with ``rank_blocks``, set its block ranking to
    ``importance.block_order``; its largest subnet's function is unchanged.
    """
    g = net.geometry
    n_layer, n_head, hd, e, m = g["n_layer"], g["n_head"], g["head_dim"], g["n_embd"], g["mlp"]
    shapes = {"channels": (e,), "heads": (n_layer, n_head), "neurons": (n_layer, m),
              "blocks": (n_layer,)}
    for field, shape in shapes.items():
        got = tuple(getattr(importance, field).shape)
        if got != shape:
            raise ConfigError(f"importance {field} has shape {got}, the supernet needs {shape}")
    c = importance.channel_order().to(net.wte.device)

    def permute(t: torch.Tensor, index: torch.Tensor, dim: int) -> None:
        t.copy_(t.index_select(dim, index))

    permute(net.wte, c, 1)
    permute(net.wpe, c, 1)
    permute(net.ln_f["weight"], c, 0)
    permute(net.ln_f["bias"], c, 0)
    for j, block in enumerate(net.blocks):
        assert isinstance(block, _Block)
        p = dict(block.named_parameters())
        for name in ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "attn.proj.bias",
                     "mlp.proj.bias"):
            permute(p[name], c, 0)
        permute(p["attn.qkv.weight"], c, 1)
        permute(p["attn.proj.weight"], c, 0)
        permute(p["mlp.fc.weight"], c, 1)
        permute(p["mlp.proj.weight"], c, 0)
        h = importance.head_order()[j].to(c.device)
        # q, k and v each hold n_head heads of hd rows; a head moves with its three parts
        permute(p["attn.qkv.weight"].view(3, n_head, hd, e), h, 1)
        permute(p["attn.qkv.bias"].view(3, n_head, hd), h, 1)
        permute(p["attn.proj.weight"].view(e, n_head, hd), h, 1)
        n = importance.neuron_order()[j].to(c.device)
        permute(p["mlp.fc.weight"], n, 0)
        permute(p["mlp.fc.bias"], n, 0)
        permute(p["mlp.proj.weight"], n, 1)
    if rank_blocks:
        net.geometry["block_order"] = list(importance.block_order)


def reorder_by_importance(net: GPTSupernet, calibration_ids: torch.Tensor, *,
                          keep_ends: bool = True, rank_blocks: bool = True) -> Importance:
    """Reorder ``net`` in place so that every prefix is the most important subset: embedding
    channels, each block's heads and MLP neurons in descending importance, and the block
    ranking (``net.geometry["block_order"]``, saved with the checkpoint) so that a depth keeps
    the blocks the output depends on most. The largest subnet computes the same logits as
    before (up to float rounding); what is measured is in the module doc.

    Args:
        net: the supernet, changed in place (its active subnet and mode are kept).
        calibration_ids: ``(batch, seq)`` token ids (see :func:`measure_importance`).
        keep_ends: rank the first and last block before the middle ones (the paper's rule).
        rank_blocks: set the block ranking; False keeps the supernet's (a ``gpt`` space
            states the ranking its subnets use, and an export checks that the checkpoint's
            agrees), reordering only within the blocks.

    Returns:
        The importances, indexed as the supernet was before (``channel_order()`` and the like
        are the permutations applied).

    Raises:
        DataError: bad calibration ids (one line).

    Example:
        >>> imp = reorder_by_importance(net, ids)   # ids: (batch, seq) token ids
        >>> small = net.extract({"n_layer": 2, "n_embd": 64, "n_head": [2, 2],
        ...                      "mlp": [256, 256]})
    """
    importance = measure_importance(net, calibration_ids, keep_ends=keep_ends)
    apply_importance(net, importance, rank_blocks=rank_blocks)
    return importance


@torch.no_grad()
def subclone(net: GPTSupernet, arch: Mapping[str, Any] | Any, calibration_ids: torch.Tensor,
             *, rescale: bool = True, keep_ends: bool = True) -> GPT:
    """A static :class:`GPT` of ``arch`` initialised from ``net`` by weight subcloning: a copy
    of the supernet reordered by importance (:func:`reorder_by_importance`), ``arch`` extracted
    from it, and, with ``rescale``, the paper's weight scaling. ``net`` itself is not changed.

    Weight scaling: a linear layer that reads ``d`` of the ``D`` channels sums ``d`` terms
    instead of ``D``, so its output shrinks by about ``sqrt(d / D)`` for inputs of similar
    size; the paper multiplies such weights by ``sqrt(D / d)`` to keep the outputs' scale. Here
    every layer that reads the embedding width reads it through a LayerNorm (``ln_1`` before
    q/k/v, ``ln_2`` before the MLP, ``ln_f`` before the tied head), so the LayerNorms' weight
    and bias are scaled instead: the same function as scaling the linear weights, and the
    head's scale is corrected without touching the tied embedding. Layers whose input lost
    heads or MLP neurons are not rescaled: the dropped ones are those that contributed least,
    so the sum lost little. Removed blocks are not compensated either: the residual stream
    simply goes without their (smallest) additions.

    Args:
        net: the pretrained supernet (not changed).
        arch: the subnet (``{"n_layer", "n_embd", "n_head", "mlp"}`` or a space's arch).
        calibration_ids: ``(batch, seq)`` token ids (see :func:`measure_importance`).
        rescale: apply the weight scaling above.
        keep_ends: rank the first and last block before the middle ones (the paper's rule).

    Raises:
        ArchitectureError: ``arch`` is not a subnet of ``net``.
        DataError: bad calibration ids.
    """
    arch = net.check_arch(arch)
    work = copy.deepcopy(net)
    reorder_by_importance(work, calibration_ids, keep_ends=keep_ends)
    sub = work.extract(arch)
    full, e = net.geometry["n_embd"], arch["n_embd"]
    if rescale and e < full:
        scale = math.sqrt(full / e)
        norms = [sub.ln_f] + [getattr(b, name) for b in sub.blocks for name in ("ln_1", "ln_2")]
        for ln in norms:
            ln["weight"].mul_(scale)
            ln["bias"].mul_(scale)
    return sub.train(net.training)
