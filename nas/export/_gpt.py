"""Export of a GPT subnet for generation: one ONNX graph with a KV cache, verified by greedy
generation in torch and in ONNX Runtime.

The graph (``model.onnx``) takes ``input_ids`` ``(batch, sequence)`` and, per layer ``i``,
``past_key_values.{i}.key`` / ``.value`` ``(batch, heads_i, past_sequence, head_dim)``; it
returns ``logits`` ``(batch, sequence, vocab)`` and ``present.{i}.key`` / ``.value`` (the past
with this call's positions appended). Prefill is a call with an empty past
(``past_sequence = 0``), a decoding step a call with one token and the previous call's
``present`` as the past: one graph, the layout ``onnxruntime-genai``'s decoder models use.
Heads may differ per layer (elastic), so each layer's cache has its own shape; the manifest
lists them.

torch's TorchScript exporter cannot trace :class:`nas.supernet.GPT`'s ``forward`` with
dynamic axes (its LayerNorm takes the width from the input's shape, which the exporter wants
constant), and the dynamo exporter needs ``onnxscript``, which is not installed. So the graph
is traced from :class:`_GenerationGraph`, which runs the same computation on the subnet's own
weights with the widths as constants and an explicit causal mask offset by the past; the
verification compares it with the subnet's own ``forward``, token by token.

The folder is built beside ``out`` and moved into place only once verified (the CNN export's
rule, :mod:`nas.export._package`): a failed export leaves nothing.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import CheckpointError, ConfigError, ExportError
from nas.export._onnx import DEFAULT_OPSET, DEFAULT_RTOL, SCALE_FLOOR
from nas.export._package import (
    MANIFEST_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    ExportResult,
    _check_out,
    _clean_stale,
    _host,
    _make_parent,
    _move_into_place,
    _normalise,
    _remove_empty,
    _versions,
    sha256_file,
)
from nas.supernet import GPT

__all__ = [
    "DEFAULT_NEW_TOKENS",
    "GENAI_CONFIG_FILE",
    "GPT_EXPORT_FILES",
    "GPT_MANIFEST_FORMAT",
    "GPT_TOLERANCE_RULE",
    "export_gpt_subnet",
    "gpt_onnx_bytes",
    "onnx_greedy",
    "verify_gpt_onnx",
]

GPT_MANIFEST_FORMAT = "nas.export.gpt/1"
GENAI_CONFIG_FILE = "genai_config.json"
#: everything a GPT export folder holds; ``overwrite`` replaces a folder of these only
GPT_EXPORT_FILES = frozenset({MODEL_FILE, WEIGHTS_FILE, MANIFEST_FILE, GENAI_CONFIG_FILE})
#: tokens the verification generates (fewer only where the context is shorter)
DEFAULT_NEW_TOKENS = 32
INPUT_IDS = "input_ids"
LOGITS = "logits"
GPT_TOLERANCE_RULE = (
    "max|onnx - torch| <= rtol * max(floor, max|torch|) over the logits of the prompt "
    "(prefill, every position) and of every decoding step, on the prompt's greedy generation"
)
# the cache's positions axis is named after what it holds
_PAST, _TOTAL = "past_sequence", "past_sequence + sequence"


def past_names(layer: int) -> tuple[str, str]:
    return f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"


def present_names(layer: int) -> tuple[str, str]:
    return f"present.{layer}.key", f"present.{layer}.value"


# ---------------------------------------------------------------------- the graph
def _heads(gpt: GPT) -> list[int]:
    """The heads of each of a static GPT's layers."""
    return [int(h) for h in gpt.arch["n_head"]]


class _GenerationGraph(nn.Module):
    """What is traced to ONNX: a static GPT's computation with its widths as constants.

    ``forward(input_ids, *past)`` with ``past`` flat (layer 0's key, its value, layer 1's
    key, ...) returns ``(logits, *present)`` flat the same way. An empty past (0 positions)
    is a prefill.
    """

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt
        self.n_embd = int(gpt.n_embd)
        self.head_dim = int(gpt.head_dim)
        self.heads = _heads(gpt)
        self.eps = float(gpt.eps)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g: Any = self.gpt  # its blocks' weights are reached by name
        e, hd = self.n_embd, self.head_dim
        b, s = input_ids.shape[0], input_ids.shape[1]
        n_past = past[0].shape[2]
        pos = torch.arange(n_past, n_past + s, dtype=torch.long)  # (s,)
        x = g.wte[input_ids] + g.wpe[pos]  # (b, s, E)
        # query at position p sees keys at positions <= p
        allowed = torch.arange(0, n_past + s, dtype=torch.long).unsqueeze(0) <= pos.unsqueeze(1)
        present: list[torch.Tensor] = []
        for i, block in enumerate(g.blocks):
            p = dict(block.named_parameters())
            h = self.heads[i]
            y = F.layer_norm(x, (e,), p["ln_1.weight"], p["ln_1.bias"], self.eps)
            qkv = F.linear(y, p["attn.qkv.weight"], p["attn.qkv.bias"])  # (b, s, 3*h*hd)
            q, k, v = (t.reshape(b, s, h, hd).transpose(1, 2)  # (b, h, s, hd)
                       for t in qkv.split(h * hd, dim=2))
            k = torch.cat([past[2 * i], k], dim=2)  # (b, h, past+s, hd)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))  # (b, h, s, past+s)
            att = att.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            a = (att @ v).transpose(1, 2).reshape(b, s, h * hd)  # (b, s, h*hd)
            x = x + F.linear(a, p["attn.proj.weight"], p["attn.proj.bias"])
            y = F.layer_norm(x, (e,), p["ln_2.weight"], p["ln_2.bias"], self.eps)
            y = F.gelu(F.linear(y, p["mlp.fc.weight"], p["mlp.fc.bias"]), approximate="tanh")
            x = x + F.linear(y, p["mlp.proj.weight"], p["mlp.proj.bias"])
            present += [k, v]
        x = F.layer_norm(x, (e,), g.ln_f["weight"], g.ln_f["bias"], self.eps)
        return (F.linear(x, g.wte), *present)  # (b, s, vocab), then the cache


def _io_names(n_layer: int) -> tuple[list[str], list[str]]:
    inputs, outputs = [INPUT_IDS], [LOGITS]
    for i in range(n_layer):
        inputs += past_names(i)
        outputs += present_names(i)
    return inputs, outputs


def gpt_onnx_bytes(gpt: GPT, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialise a static GPT (:class:`nas.supernet.GPT`) to one ONNX graph with a KV cache
    (module docstring): dynamic batch, sequence and past axes.

    Raises:
        ExportError: torch's exporter failed (one line).
    """
    graph = _GenerationGraph(gpt.eval()).eval()
    heads, hd = graph.heads, graph.head_dim
    inputs, outputs = _io_names(len(heads))
    # traced with a past of 2 positions and 3 new ones: no axis is 0 or 1, so none is
    # mistaken for a constant
    ids = torch.zeros(2, 3, dtype=torch.long)
    past = [torch.zeros(2, h, 2, hd) for h in heads for _ in range(2)]
    axes: dict[str, dict[int, str]] = {INPUT_IDS: {0: "batch", 1: "sequence"},
                                       LOGITS: {0: "batch", 1: "sequence"}}
    for name in inputs[1:]:
        axes[name] = {0: "batch", 2: _PAST}
    for name in outputs[1:]:
        axes[name] = {0: "batch", 2: _TOTAL}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph, (ids, *past), buf,  # type: ignore[arg-type]
                dynamo=False, opset_version=opset, input_names=inputs, output_names=outputs,
                dynamic_axes=axes,  # type: ignore[arg-type]
                # folding would store a transposed copy of the tied embedding for the head
                do_constant_folding=False,
            )
        except Exception as exc:  # torch raises many types; the user needs one message
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: "
                              f"{first[:300]}") from exc
    return buf.getvalue()


# ---------------------------------------------------------------------- generation
def _empty_past(batch: int, heads: Sequence[int], head_dim: int) -> list[np.ndarray]:
    return [np.zeros((batch, h, 0, head_dim), np.float32) for h in heads for _ in range(2)]


def onnx_greedy(session: Any, prompt: np.ndarray, new_tokens: int, heads: Sequence[int],
                head_dim: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy generation in ONNX Runtime and numpy alone: prefill, then one token at a time
    with the cache.

    Args:
        session: an ``onnxruntime.InferenceSession`` of an exported ``model.onnx``.
        prompt: ``(batch, prompt_len)`` int64 token ids.
        heads: the heads of each layer (the manifest's ``cache.heads``).

    Returns:
        ``(tokens (batch, new_tokens), logits)``: ``logits[0]`` is the prefill's
        ``(batch, prompt_len, vocab)``, ``logits[t]`` step ``t``'s ``(batch, 1, vocab)``.
    """
    inputs, _ = _io_names(len(heads))
    ids = np.ascontiguousarray(prompt, dtype=np.int64)
    past = _empty_past(ids.shape[0], heads, head_dim)
    tokens, seen = [], []
    for _ in range(new_tokens):
        logits, *past = session.run(None, dict(zip(inputs, [ids, *past], strict=True)))
        seen.append(logits)
        ids = logits[:, -1].argmax(-1).astype(np.int64)[:, None]  # (batch, 1)
        tokens.append(ids)
    return np.concatenate(tokens, axis=1), seen


@torch.no_grad()
def torch_greedy(gpt: GPT, prompt: np.ndarray, new_tokens: int
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`onnx_greedy` with the static GPT's own ``forward`` and its cache."""
    ids = torch.from_numpy(np.ascontiguousarray(prompt, dtype=np.int64))
    past = None
    tokens, seen = [], []
    for _ in range(new_tokens):
        logits, past = gpt(ids, past, use_cache=True)
        seen.append(logits.numpy())
        ids = logits[:, -1].argmax(-1)[:, None]
        tokens.append(ids.numpy())
    return np.concatenate(tokens, axis=1), seen


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {first[:300]}"
                          ) from None


def verify_gpt_onnx(data: bytes, gpt: GPT, prompt: Sequence[int], new_tokens: int, *,
                    rtol: float = DEFAULT_RTOL, floor: float = SCALE_FLOOR) -> dict[str, Any]:
    """Check the graph and generate greedily from ``prompt`` in torch and in ONNX Runtime.

    The prompt runs as a batch of two (itself, and each token shifted by one), so the dynamic
    batch is checked too. The tokens must be identical, and the logits of the prefill and of every
    decoding step within ``rtol * max(floor, max|torch|)`` (:data:`GPT_TOLERANCE_RULE`).

    Raises:
        ExportError: one line: the checker rejects the graph, ONNX Runtime cannot run it, the
            tokens differ (where, and torch's margin there), or logits differ beyond the bound.
    """
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"onnx.checker rejected the exported graph: {first[:300]}") from None
    heads = _heads(gpt)
    hd = int(gpt.head_dim)
    vocab = int(gpt.vocab_size)
    # a second row, each token shifted by one: (2, prompt_len)
    batch = np.array([list(prompt), [(t + 1) % vocab for t in prompt]], dtype=np.int64)
    want_tokens, want = torch_greedy(gpt.eval(), batch, new_tokens)
    try:
        got_tokens, got = onnx_greedy(_session(data), batch, new_tokens, heads, hd)
    except ExportError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {first[:300]}") from None
    scale = max(float(np.max(np.abs(w))) for w in want)
    allowed = rtol * max(floor, scale) if np.isfinite(scale) else float("nan")
    diff = 0.0
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        if g.shape != w.shape:
            raise ExportError(f"ONNX logits at step {step} have shape {g.shape}, torch's "
                              f"{w.shape}")
        diff = max(diff, float(np.max(np.abs(g - w))))
        if not (np.isfinite(diff) and np.isfinite(allowed)) or diff > allowed:
            raise ExportError(
                f"ONNX Runtime's logits differ from torch's by {diff:.3g} at "
                f"{'the prefill' if step == 0 else f'decoding step {step}'} (allowed "
                f"{allowed:.3g} = rtol {rtol:g} x max({floor:g}, max|torch| {scale:.3g}))")
        mismatch = np.nonzero(got_tokens[:, step] != want_tokens[:, step])[0]
        if mismatch.size:
            row = int(mismatch[0])
            last = w[row, -1]
            t, o = int(want_tokens[row, step]), int(got_tokens[row, step])
            raise ExportError(
                f"greedy generation differs at token {step + 1} of {new_tokens} (batch row "
                f"{row}): torch chose {t}, ONNX Runtime {o} (torch's logits for them differ by "
                f"{abs(float(last[t] - last[o])):.3g}; logits agree within {diff:.3g})")
    return {"prompt": [int(t) for t in prompt], "new_tokens": new_tokens,
            "tokens": [int(t) for t in want_tokens[0]], "identical": True,
            "batch": int(batch.shape[0]), "steps_compared": len(want),
            "max_abs_diff": diff, "max_abs_torch": scale, "rtol": rtol, "floor": floor,
            "allowed": allowed, "rule": GPT_TOLERANCE_RULE, "provider": "CPUExecutionProvider"}


# ---------------------------------------------------------------------- checks
def _gpt_space(space: Any) -> Any:
    from nas.space import GPTSpace, get_family_space

    sp = get_family_space(space)
    if not isinstance(sp, GPTSpace):
        raise ConfigError(f"space {sp.name!r} is of the {sp.family!r} family; the GPT export "
                          "takes a space of the 'gpt' family")
    return sp


def _check_geometry(net: Any, space: Any, checkpoint: Path | str | None) -> None:
    """The supernet must be the space's: the same vocabulary, context, head size, largest
    choices and block ranking; else one CheckpointError line naming the first difference."""
    where = f"checkpoint {checkpoint}" if checkpoint is not None else "the supernet"
    name = getattr(net, "space_name", None)
    if name and name != space.name:
        raise CheckpointError(f"{where} is for space {name!r}, not {space.name!r}; pass "
                              f"--space {name} or a checkpoint of {space.name}")
    s, g = space.spec, net.geometry
    want = {"vocab_size": s.vocab_size, "n_ctx": s.n_ctx, "head_dim": s.head_dim,
            "n_layer": max(s.n_layer), "n_embd": max(s.n_embd), "n_head": max(s.n_head),
            "mlp": max(s.mlp)}
    for field, value in want.items():
        if g.get(field) != value:
            raise CheckpointError(f"{where} has {field} {g.get(field)!r}, space {space.name} "
                                  f"needs {value} (a checkpoint of another shape or "
                                  "vocabulary)")
    order = list(s.block_order) if s.block_order is not None else None
    got = list(g["block_order"]) if g.get("block_order") is not None else None
    if got != order:
        raise CheckpointError(f"{where} ranks its blocks {got}, space {space.name} "
                              f"{order} (a subnet would keep other blocks)")


_TOKENIZER_KINDS = ("bytes", "ids", "gpt2-bpe")


def _tokenizer(net: Any, space: Any) -> dict[str, Any]:
    """How text becomes the model's ids: what the checkpoint records (``tokenizer`` in its
    metadata), else GPT-2's BPE for an imported GPT-2, byte-level ids where the vocabulary
    holds the 256 bytes, and bare ids otherwise."""
    meta = getattr(net, "checkpoint_meta", None) or {}
    vocab = int(space.spec.vocab_size)
    recorded = meta.get("tokenizer")
    if recorded is not None:
        kind = recorded.get("kind") if isinstance(recorded, Mapping) else None
        if kind not in _TOKENIZER_KINDS:
            raise CheckpointError(f"the checkpoint's tokenizer {str(recorded)[:80]!r} is not "
                                  f"understood: expected an object with kind one of "
                                  f"{list(_TOKENIZER_KINDS)}")
        if kind == "bytes" and vocab < 256:
            raise CheckpointError(f"the checkpoint's tokenizer is byte-level, but the "
                                  f"vocabulary has {vocab} tokens (fewer than 256 bytes)")
        eos = recorded.get("eos_token_id")
        if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int)
                                or not 0 <= eos < vocab):
            raise CheckpointError(f"the checkpoint's tokenizer has eos_token_id {eos!r}, "
                                  f"not a token of the vocabulary [0, {vocab})")
    elif meta.get("source") == "huggingface-gpt2":
        kind, eos = "gpt2-bpe", meta.get("eos_token_id", vocab - 1)
    elif vocab >= 256:
        kind, eos = "bytes", (256 if vocab > 256 else None)
    else:
        kind, eos = "ids", None
    how = {
        "bytes": "byte-level: the ids of a text are its UTF-8 bytes (0-255); decode with "
                 "bytes(ids).decode('utf-8', errors='replace')",
        "gpt2-bpe": "GPT-2's byte-level BPE, not included: encode with transformers' "
                    "GPT2TokenizerFast.from_pretrained('gpt2') or tiktoken's 'gpt2'",
        "ids": "no text tokenizer: the model reads token ids in [0, vocab_size)",
    }[kind]
    return {"kind": kind, "vocab_size": vocab, "eos_token_id": eos, "how": how}


def _prompt(prompt: Sequence[int] | str | None, new_tokens: int | None, tokenizer: dict[str, Any],
            n_ctx: int) -> tuple[list[int], int]:
    """The verification's prompt ids and the tokens to generate; one line where they do not
    fit the context (``len(prompt) + new_tokens - 1`` positions: the last token generated is
    never fed back)."""
    vocab = tokenizer["vocab_size"]
    if new_tokens is None:
        new_tokens = min(DEFAULT_NEW_TOKENS, n_ctx)
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        raise ConfigError(f"new_tokens must be a positive integer, got {new_tokens!r}")
    if prompt is None:
        room = max(1, min(8, n_ctx - new_tokens + 1))
        if tokenizer["kind"] == "bytes":
            ids = list(b"ROMEO:\nBut soft, what light"[:room])
        else:
            ids = [(7 * i + 3) % vocab for i in range(room)]
    elif isinstance(prompt, str):
        if tokenizer["kind"] != "bytes":
            raise ConfigError(f"prompt: a text prompt needs a byte-level tokenizer; this "
                              f"model's is {tokenizer['kind']!r}: give token ids")
        ids = list(prompt.encode("utf-8"))
    else:
        ids = list(prompt)
    if not ids:
        raise ConfigError("prompt is empty; give at least one token")
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int | np.integer) or not 0 <= t < vocab:
            raise ConfigError(f"prompt[{i}] must be a token id in [0, {vocab}), got {t!r}")
    need = len(ids) + new_tokens - 1
    if need > n_ctx:
        raise ConfigError(f"prompt of {len(ids)} tokens and {new_tokens} new tokens need "
                          f"{need} positions, more than the model's context of {n_ctx}")
    return [int(t) for t in ids], new_tokens


# ---------------------------------------------------------------------- genai
def _genai_config(arch: Any, space: Any, tokenizer: dict[str, Any], max_length: int
                  ) -> tuple[dict[str, Any] | None, str]:
    """onnxruntime-genai's ``genai_config.json`` for this graph, or None and why not.

    Written from its documented format (a ``decoder`` model: the generic decoder-only type,
    with separate key and value caches named as here; no attention mask or position ids,
    which genai feeds only where the graph has them), not run here: onnxruntime-genai is not
    installed. The cache is not shared between past and present (the graph reads no mask,
    so a preallocated cache's unused positions would be attended to).
    """
    if len(set(arch.n_head)) != 1:
        return None, (f"the layers have different head counts {list(arch.n_head)}: "
                      "genai_config.json has one num_attention_heads and one "
                      "num_key_value_heads for every layer, so onnxruntime-genai cannot "
                      "allocate this cache")
    heads = arch.n_head[0]
    vocab = int(space.spec.vocab_size)
    eos = tokenizer["eos_token_id"] if tokenizer["eos_token_id"] is not None else vocab - 1
    config = {
        "model": {
            "type": "decoder",
            "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos,
            "context_length": int(space.spec.n_ctx), "vocab_size": vocab,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": MODEL_FILE,
                "head_size": int(space.spec.head_dim), "hidden_size": int(arch.n_embd),
                "num_attention_heads": heads, "num_key_value_heads": heads,
                "num_hidden_layers": int(arch.n_layer),
                "inputs": {"input_ids": INPUT_IDS,
                           "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": LOGITS, "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True,
            "length_penalty": 1.0, "max_length": max_length, "min_length": 0,
            "no_repeat_ngram_size": 0, "num_beams": 1, "num_return_sequences": 1,
            "past_present_share_buffer": False, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 1, "top_p": 1.0,
        },
    }
    return config, ("written from onnxruntime-genai's documented format (type 'decoder'); "
                    "not run here (onnxruntime-genai is not installed); no tokenizer files: "
                    "append token ids")


# ---------------------------------------------------------------------- export
def export_gpt_subnet(
    supernet: Any, arch: Any, out: Path | str, *, space: Any = None,
    opset: int = DEFAULT_OPSET, rtol: float = DEFAULT_RTOL, overwrite: bool = False,
    checkpoint: Path | str | None = None, prompt: Sequence[int] | str | None = None,
    new_tokens: int | None = None,
) -> ExportResult:
    """Extract ``arch`` from a :class:`nas.supernet.GPTSupernet` and write a verified folder
    for generation: ``model.onnx`` (one graph, KV cache), ``weights.safetensors`` (the static
    subnet), ``manifest.json`` (how to drive it) and, where every layer has the same heads,
    ``genai_config.json``.

    Args:
        space: the ``gpt`` space (name or object); default the supernet's own.
        rtol: ONNX Runtime's logits must be within ``rtol * max(10, max|torch|)`` of torch's
            (:data:`GPT_TOLERANCE_RULE`).
        prompt: the verification's prompt, token ids or (byte-level tokenizer) text;
            default a few tokens.
        new_tokens: tokens generated greedily (default 32, fewer where the context is
            shorter); the prompt and these must fit the context.
        overwrite: replace ``out`` if it is an export folder (nothing but an export's files).

    Raises:
        ArchitectureError: ``arch`` is outside the space.
        CheckpointError: the supernet is not the space's (shape, vocabulary, blocks) or
            records a tokenizer that is not understood.
        ConfigError: the prompt does not fit the context, or holds ids outside the vocabulary.
        ExportError: ``out`` is refused, the graph fails the checker, or ONNX Runtime's
            generation differs from torch's. ``out`` is then left as it was.
    """
    from safetensors.torch import save_file

    space = _gpt_space(space if space is not None else getattr(supernet, "space_name", None))
    _check_geometry(supernet, space, checkpoint)
    canon = space.parse(arch)
    tokenizer = _tokenizer(supernet, space)
    prompt_ids, new_tokens = _prompt(prompt, new_tokens, tokenizer, int(space.spec.n_ctx))
    _clean_stale(_normalise(Path(out)))  # first: it may put back an export a kill took away
    out = _check_out(Path(out), overwrite, GPT_EXPORT_FILES)
    created = _make_parent(out.parent)
    try:
        sub = supernet.extract(canon.to_dict()).eval()
        tmp = Path(tempfile.mkdtemp(dir=out.parent,
                                    prefix=f".{out.name}.tmp-{_host()}-{os.getpid()}-"))
    except BaseException:
        _remove_empty(created)
        raise
    try:
        data = gpt_onnx_bytes(sub, opset)
        verification = verify_gpt_onnx(data, sub, prompt_ids, new_tokens, rtol=rtol)
        (tmp / MODEL_FILE).write_bytes(data)
        state = {k: v.detach().contiguous() for k, v in sub.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE),
                  metadata={"space": space.name, "arch": canon.to_json()})
        genai, genai_note = _genai_config(canon, space, tokenizer, int(space.spec.n_ctx))
        if genai is not None:
            (tmp / GENAI_CONFIG_FILE).write_text(json.dumps(genai, indent=2) + "\n")
        manifest = _manifest(space, canon, tmp, opset, verification, tokenizer,
                             {"written": genai is not None, "verified": False,
                              "file": GENAI_CONFIG_FILE if genai is not None else None,
                              "note": genai_note})
        if checkpoint is not None:
            ck = Path(checkpoint)
            manifest["checkpoint"] = {"path": str(ck), "sha256": sha256_file(ck)}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    return ExportResult(out, manifest)


def _manifest(space: Any, canon: Any, folder: Path, opset: int, verification: dict[str, Any],
              tokenizer: dict[str, Any], genai: dict[str, Any]) -> dict[str, Any]:
    """How to drive the graph, what it is, and the digests of its files."""
    s = space.spec
    costs = space.costs([canon])
    hd, vocab = int(s.head_dim), int(s.vocab_size)
    heads = [int(h) for h in canon.n_head]
    inputs: list[dict[str, Any]] = [{"name": INPUT_IDS, "shape": ["batch", "sequence"],
                                     "dtype": "int64"}]
    outputs: list[dict[str, Any]] = [{"name": LOGITS, "shape": ["batch", "sequence", vocab],
                                      "dtype": "float32",
                                      "meaning": "next-token scores at every position"}]
    for i, h in enumerate(heads):
        inputs += [{"name": n, "shape": ["batch", h, _PAST, hd], "dtype": "float32"}
                   for n in past_names(i)]
        outputs += [{"name": n, "shape": ["batch", h, _TOTAL, hd], "dtype": "float32"}
                    for n in present_names(i)]
    files = [MODEL_FILE, WEIGHTS_FILE] + ([GENAI_CONFIG_FILE] if genai["written"] else [])
    return {
        "format": GPT_MANIFEST_FORMAT,
        "family": "gpt",
        "space": space.name,
        "arch": canon.to_dict(),
        "arch_hash": canon.hash,
        "macs": int(costs["macs"][0]),
        "macs_context": int(s.n_ctx),
        "macs_meaning": "per token at a context of macs_context positions",
        "params": int(costs["params"][0]),
        "vocab_size": vocab,
        "context_length": int(s.n_ctx),
        "head_dim": hd,
        "n_layer": int(canon.n_layer),
        "n_embd": int(canon.n_embd),
        "n_head": heads,
        "inputs": inputs,
        "outputs": outputs,
        "cache": {
            "layers": len(heads), "heads": heads, "head_dim": hd, "dtype": "float32",
            "layout": "(batch, heads, positions, head_dim), one key and one value per layer",
            "past_names": "past_key_values.{i}.key, past_key_values.{i}.value",
            "present_names": "present.{i}.key, present.{i}.value",
        },
        "generation": {
            "prefill": "input_ids = the prompt (batch, n); every past = zeros (batch, heads_i, "
                       "0, head_dim)",
            "decode": "input_ids = the chosen tokens (batch, 1); past_key_values.{i}.* = the "
                      "previous call's present.{i}.*",
            "next_token": "argmax of logits[:, -1] (greedy), or sample from its softmax",
            "limit": f"past + new positions <= context_length ({s.n_ctx})",
            "batch": "rows of one call share their length (no attention mask, no padding)",
        },
        "tokenizer": tokenizer,
        "genai": genai,
        "opset": opset,
        "versions": _versions(),
        "verification": verification,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": {name: {"sha256": sha256_file(folder / name),
                         "bytes": (folder / name).stat().st_size} for name in files},
    }
