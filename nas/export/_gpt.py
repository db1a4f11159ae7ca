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
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from torch import nn

from nas import _io
from nas._config import format_validation_error
from nas.errors import CheckpointError, ConfigError, ExportError, NASError
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
    _short,
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
    "verify_gpt_export",
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


def gpt_subnet_onnx(supernet: Any, arch: Any) -> bytes:
    """The ONNX model a device times for a ``gpt`` architecture: the subnet extracted from
    ``supernet`` as one graph with a KV cache (the ``gpt`` family's ``timing_onnx``; a
    device profile's workload says how it is called)."""
    return gpt_onnx_bytes(supernet.extract(arch.to_dict()).eval())


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
                              f"model's is {tokenizer['kind']!r}: give token ids (nas export: "
                              "--prompt ids:1,2,3)")
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


def _io_entries(heads: Sequence[int], hd: int, vocab: int
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The manifest's ``inputs`` and ``outputs``: the graph's tensors, in its order."""
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
    return inputs, outputs


def _cache_entry(heads: Sequence[int], hd: int) -> dict[str, Any]:
    return {
        "layers": len(heads), "heads": list(heads), "head_dim": hd, "dtype": "float32",
        "layout": "(batch, heads, positions, head_dim), one key and one value per layer",
        "past_names": "past_key_values.{i}.key, past_key_values.{i}.value",
        "present_names": "present.{i}.key, present.{i}.value",
    }


def _manifest(space: Any, canon: Any, folder: Path, opset: int, verification: dict[str, Any],
              tokenizer: dict[str, Any], genai: dict[str, Any]) -> dict[str, Any]:
    """How to drive the graph, what it is, and the digests of its files."""
    s = space.spec
    costs = space.costs([canon])
    hd, vocab = int(s.head_dim), int(s.vocab_size)
    heads = [int(h) for h in canon.n_head]
    inputs, outputs = _io_entries(heads, hd, vocab)
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
        "cache": _cache_entry(heads, hd),
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


# ---------------------------------------------------------------------- verify
class _GPTFileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: StrictStr
    bytes: Annotated[StrictInt, Field(ge=0)]


class _GPTVerification(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt: Annotated[list[StrictInt], Field(min_length=1)]
    new_tokens: Annotated[StrictInt, Field(ge=1)]
    tokens: list[StrictInt]


class _GPTManifest(BaseModel):
    """The parts of a GPT manifest that verifying reads (the rest is checked against what
    the architecture gives, or kept)."""

    model_config = ConfigDict(extra="allow")

    format: Literal["nas.export.gpt/1"]
    space: StrictStr
    arch: dict[str, Any]
    tokenizer: dict[str, Any]
    files: dict[Literal["model.onnx", "weights.safetensors", "genai_config.json"],
                _GPTFileEntry]
    verification: _GPTVerification


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:300]


def _read_gpt_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{folder} is not an export folder: {MANIFEST_FILE} is missing")
    data = _io.read_bytes(path, "manifest", error=ExportError)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ExportError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError):  # over 4300 digits, or nested too deep
        raise ExportError(f"{path} is not a manifest (a number too long or nesting too "
                          "deep)") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path} is not a manifest: a JSON object was expected, got "
                          f"{type(manifest).__name__}")
    try:
        _GPTManifest.model_validate(manifest)
    except ValidationError as exc:
        raise ExportError(format_validation_error(exc, str(path))) from None
    return manifest


def _check_gpt_links(folder: Path) -> None:
    """Refuse any entry of the folder that is a symlink out of it: hashes follow links, and
    the folder would vouch for a file it does not hold."""
    _io.check_path(folder / MANIFEST_FILE, "export folder", error=ExportError)
    if not folder.is_dir():
        raise ExportError(f"{folder} is not an export folder (not a folder)")
    root = folder.resolve()
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ExportError(f"{folder} cannot be read: {exc.strerror or exc}") from None
    for path in entries:
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ExportError(f"{path} is a symlink out of the export folder (to "
                              f"{os.readlink(path)}); an export holds its own files: copy it "
                              "in place of the link")


def _check_gpt_files(folder: Path, manifest: dict[str, Any]) -> None:
    """The folder holds the manifest and the files it lists, nothing else; each of the size
    and sha256 the manifest says."""
    files: dict[str, Any] = manifest["files"]
    for name in (MODEL_FILE, WEIGHTS_FILE):
        if name not in files:
            raise ExportError(f"{folder / MANIFEST_FILE}: files has no entry for {name}")
    own = {MANIFEST_FILE, *files}
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in own)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ExportError(f"{folder} holds files that are not the export's ({shown}); an "
                          f"export folder holds {MANIFEST_FILE} and the files it lists "
                          f"({', '.join(sorted(files))}) only")
    for name, info in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            raise ExportError(f"{path} is missing (the manifest lists it)")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise ExportError(f"{path}: {size} bytes, the manifest says {info['bytes']}")
        digest = sha256_file(path)
        if digest != info["sha256"]:
            raise ExportError(
                f"{path}: sha256 {digest[:12]}... does not match the manifest's "
                f"{str(info['sha256'])[:12]}... (file changed or swapped)")


def _first_difference(got: Any, want: Any, at: str = "") -> tuple[str, Any, Any]:
    """Where two JSON values first differ (``[i]`` / ``.key`` after ``at``), and the two
    values there."""
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if g != w:
                return _first_difference(g, w, f"{at}[{i}]")
    if isinstance(got, dict) and isinstance(want, dict) and set(got) == set(want):
        for k in want:
            if got[k] != want[k]:
                return _first_difference(got[k], want[k], f"{at}.{k}")
    return at, got, want


def _check_gpt_claims(folder: Path, manifest: dict[str, Any]) -> tuple[Any, Any]:
    """Re-derive from the space and the architecture what the manifest says of the subnet:
    the canonical form, its hash, MACs per token, parameters, sizes, the graph's tensors and
    the cache. Returns ``(space, arch)``."""
    where = folder / MANIFEST_FILE
    try:
        space = _gpt_space(manifest["space"])
        arch = space.parse(manifest["arch"])
    except NASError as exc:
        raise ExportError(f"{where}: {exc}") from None
    if manifest["arch"] != arch.to_dict():
        raise ExportError(f"{where}: arch {_short(manifest['arch'])} is not in canonical form "
                          f"({arch.to_json()})")
    if manifest.get("arch_hash") != arch.hash:
        raise ExportError(f"{where}: arch_hash {_short(manifest.get('arch_hash'))} is not the "
                          f"hash of its arch {arch.to_json()} ({arch.hash}); the manifest was "
                          "edited")
    s = space.spec
    heads = [int(h) for h in arch.n_head]
    hd, vocab = int(s.head_dim), int(s.vocab_size)
    inputs, outputs = _io_entries(heads, hd, vocab)
    derived: dict[str, Any] = {
        "family": "gpt", "macs": space.macs(arch), "macs_context": int(s.n_ctx),
        "params": space.params(arch), "vocab_size": vocab, "context_length": int(s.n_ctx),
        "head_dim": hd, "n_layer": int(arch.n_layer), "n_embd": int(arch.n_embd),
        "n_head": heads, "inputs": inputs, "outputs": outputs,
        "cache": _cache_entry(heads, hd),
    }
    for key, value in derived.items():
        if key not in manifest:
            raise ExportError(f"{where}: {key} is missing (the architecture's is "
                              f"{_short(value)})")
        if manifest[key] != value:
            at, got, want = _first_difference(manifest[key], value, key)
            raise ExportError(f"{where}: {at} {_short(got)} is not the architecture's "
                              f"({_short(want)}); the manifest was edited")
    tok = manifest["tokenizer"]
    if tok.get("kind") not in _TOKENIZER_KINDS:
        raise ExportError(f"{where}: tokenizer.kind {_short(tok.get('kind'))} is not one of "
                          f"{list(_TOKENIZER_KINDS)}")
    if tok.get("vocab_size") != vocab:
        raise ExportError(f"{where}: tokenizer.vocab_size {_short(tok.get('vocab_size'))} is "
                          f"not the space's ({vocab})")
    return space, arch


def _check_genai(folder: Path, manifest: dict[str, Any], space: Any, arch: Any) -> None:
    """``genai_config.json``, where listed, is the one this graph's architecture gets (and
    where not listed, none was due)."""
    listed = GENAI_CONFIG_FILE in manifest["files"]
    want, note = _genai_config(arch, space, manifest["tokenizer"], int(space.spec.n_ctx))
    path = folder / GENAI_CONFIG_FILE
    if listed and want is None:
        raise ExportError(f"{path} is listed, but none is written for this architecture: "
                          f"{note}")
    if not listed:
        return
    try:
        got = json.loads(_io.read_text(path, GENAI_CONFIG_FILE, error=ExportError))
    except (ValueError, RecursionError):
        raise ExportError(f"{path} is not valid JSON") from None
    if got != want:
        at = _first_difference(got, want)[0].lstrip(".") or "the top"
        raise ExportError(f"{path} is not the configuration of this architecture's graph: it "
                          f"differs at {at}")


def _check_graph(folder: Path, data: bytes, manifest: dict[str, Any]) -> None:
    """The graph's inputs and outputs, in order, are the manifest's: names, shapes (each
    layer's cache) and types."""
    path = folder / MODEL_FILE
    try:
        session = _session(data)
    except ExportError as exc:
        raise ExportError(f"{path}: {exc}") from None
    types = {"int64": "tensor(int64)", "float32": "tensor(float)"}
    for key, tensors in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        want = manifest[key]
        got = [{"name": t.name, "shape": list(t.shape), "type": t.type} for t in tensors]
        if [g["name"] for g in got] != [w["name"] for w in want]:
            raise ExportError(f"{path}: the graph's {key} {_short([g['name'] for g in got])} "
                              f"are not the manifest's {_short([w['name'] for w in want])}")
        for g, w in zip(got, want, strict=True):
            if g["shape"] != w["shape"] or g["type"] != types.get(w["dtype"]):
                raise ExportError(f"{path}: the graph's {g['name']} is {g['type']} "
                                  f"{g['shape']}, the manifest says {w['dtype']} {w['shape']}")


def _load_weights(folder: Path, space: Any, arch: Any) -> GPT:
    """The static GPT of ``arch`` with the weights file's tensors: the file's own record of
    its space and architecture, and every tensor's name and shape, checked first."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    s = space.spec
    gpt = GPT(int(s.vocab_size), int(s.n_ctx), int(arch.n_embd), list(arch.n_head),
              list(arch.mlp), int(s.head_dim), float(s.layer_norm_eps))
    want = {k: list(v.shape) for k, v in gpt.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            got = {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError) as exc:
        raise ExportError(f"cannot read {path}: {_first_line(exc)}") from None
    if meta.get("space") != space.name or meta.get("arch") != arch.to_json():
        raise ExportError(f"{path} holds the weights of {meta.get('space')!r} architecture "
                          f"{_short(meta.get('arch'))}, not the manifest's {space.name!r} "
                          f"{arch.to_json()}")
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        what = (f"lacks {', '.join(missing[:3])}" if missing
                else f"has tensors the architecture has not ({', '.join(extra[:3])})")
        raise ExportError(f"{path} {what}{', ...' if len(missing or extra) > 3 else ''}")
    for name, shape in want.items():
        if got[name] != shape:
            raise ExportError(f"{path}: {name} has shape {got[name]}, the architecture's is "
                              f"{shape}")
    try:
        gpt.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ExportError(f"cannot load {path}: {_first_line(exc)}") from None
    gpt.arch = arch.to_dict()
    return gpt.eval()


def verify_gpt_export(folder: Path | str, *, rtol: float | None = None) -> dict[str, Any]:
    """Check a GPT export folder (``nas.export.gpt/1``) as :func:`nas.export.verify_export`
    checks a CNN's: nothing in it but the manifest and the files it lists (no symlink out of
    it), their sizes and hashes; every claim of the manifest re-derived from the space and
    the architecture (canonical form, hash, MACs per token, parameters, sizes, the graph's
    tensors and each layer's cache, ``genai_config.json``); the graph's inputs and outputs
    against the manifest, the weights' names and shapes against the architecture; then the
    recorded greedy generation re-run in plain ONNX Runtime and in torch (on the weights
    file): the recorded tokens, identical.

    Args:
        rtol: the logits' tolerance (:data:`GPT_TOLERANCE_RULE`); default
            :data:`nas.export.DEFAULT_RTOL`, never a looser one read from the manifest.

    Raises:
        ExportError: one line naming the first thing that does not match.
    """
    folder = Path(folder)
    _check_gpt_links(folder)
    manifest = _read_gpt_manifest(folder)
    _check_gpt_files(folder, manifest)
    space, arch = _check_gpt_claims(folder, manifest)
    _check_genai(folder, manifest, space, arch)
    data = _io.read_bytes(folder / MODEL_FILE, "ONNX model", error=ExportError,
                          limit=_io.MAX_MODEL_BYTES)
    _check_graph(folder, data, manifest)
    gpt = _load_weights(folder, space, arch)
    where = folder / MANIFEST_FILE
    recorded = manifest["verification"]
    try:
        prompt, new_tokens = _prompt(recorded["prompt"], recorded["new_tokens"],
                                     manifest["tokenizer"], int(space.spec.n_ctx))
    except ConfigError as exc:
        raise ExportError(f"{where}: verification.{exc}") from None
    if len(recorded["tokens"]) != new_tokens:
        raise ExportError(f"{where}: verification.tokens has {len(recorded['tokens'])} tokens, "
                          f"new_tokens says {new_tokens}")
    try:
        result = verify_gpt_onnx(data, gpt, prompt, new_tokens, rtol=rtol or DEFAULT_RTOL)
    except ExportError as exc:
        raise ExportError(f"{folder / MODEL_FILE}: {exc}") from None
    for i, (want, got) in enumerate(zip(recorded["tokens"], result["tokens"], strict=True)):
        if want != got:
            raise ExportError(
                f"{where}: verification.tokens[{i}] is {want}, but the graph generates {got} "
                f"there from the recorded prompt (greedy; ONNX Runtime and torch agree); the "
                "manifest was edited")
    return {"folder": str(folder), "format": GPT_MANIFEST_FORMAT, "space": space.name,
            "arch_hash": arch.hash, "macs": manifest["macs"], "params": manifest["params"],
            "files": sorted(manifest["files"]), **result}
