"""Hugging Face GPT-2 in and out, and the GPT supernet's checkpoints.

In: a ``transformers`` ``GPT2LMHeadModel`` checkpoint folder (``config.json`` and
``model.safetensors`` or ``pytorch_model.bin``) becomes a :class:`GPTSupernet` whose largest
subnet is that model. ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``:
tensors only, a pickle naming any Python object is refused unread. ``transformers`` is not
imported: its config is read and checked here.

Out: a subnet whose layers all have the same heads and MLP width (GPT-2's config has one
``n_head`` and one ``n_inner``) is written as a folder ``GPT2LMHeadModel.from_pretrained``
loads.

GPT-2's ``Conv1D`` layers store their weights as ``(in, out)``; ours are ``nn.Linear``'s
``(out, in)``, so they are transposed both ways.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nas._io import (
    MAX_MODEL_BYTES,
    atomic_new_file,
    atomic_write,
    check_output_file,
    check_path,
    read_bytes,
    read_text,
    sha256_file,
)
from nas.errors import CheckpointError, ExportError
from nas.supernet._gpt import GPTSupernet

__all__ = [
    "export_hf_gpt2",
    "import_hf_gpt2",
    "load_gpt_supernet",
    "read_gpt_checkpoint_meta",
    "save_gpt_supernet",
]

FORMAT = "nas.supernet.gpt"
VERSION = "1"
SOURCE = "huggingface-gpt2"
#: GELU's tanh approximation under the names transformers gives it
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")
_MAX_CONFIG_BYTES = 1 << 20
#: per block: our name -> (GPT-2's name, whether GPT-2's Conv1D stores it transposed)
_BLOCK_NAMES = {
    "ln_1.weight": ("ln_1.weight", False), "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True), "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False), "ln_2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True), "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True), "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
# the causal-mask buffers older transformers saved with every block: not weights
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")


# ---------------------------------------------------------------------- config
def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    text = read_text(path, "Hugging Face config", error=CheckpointError,
                     limit=_MAX_CONFIG_BYTES)
    try:
        cfg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return cfg


def _geometry(cfg: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Our supernet geometry from a GPT-2 config; one CheckpointError line for anything
    this layout does not reproduce."""
    def bad(field: str, value: Any, allowed: str) -> CheckpointError:
        return CheckpointError(f"{path}: {field} {value!r} is not supported ({allowed})")

    if cfg.get("model_type") != "gpt2":
        raise bad("model_type", cfg.get("model_type"), "expected 'gpt2'")
    ints = {}
    for field in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
        value = cfg.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(field, value, "expected a positive integer")
        ints[field] = value
    if ints["n_embd"] % ints["n_head"]:
        raise bad("n_embd", ints["n_embd"], f"must be divisible by n_head {ints['n_head']}")
    n_inner = cfg.get("n_inner")
    if n_inner is None:
        n_inner = 4 * ints["n_embd"]
    elif isinstance(n_inner, bool) or not isinstance(n_inner, int) or n_inner < 1:
        raise bad("n_inner", n_inner, "expected null or a positive integer")
    act = cfg.get("activation_function", "gelu_new")
    if act not in _GELU_TANH:
        raise bad("activation_function", act, f"expected one of {list(_GELU_TANH)}")
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, float | int) or not eps > 0:
        raise bad("layer_norm_epsilon", eps, "expected a positive number")
    for field, want in (("add_cross_attention", False), ("scale_attn_by_inverse_layer_idx", False),
                        ("scale_attn_weights", True), ("tie_word_embeddings", True)):
        if cfg.get(field, want) is not want:
            raise bad(field, cfg.get(field), f"only {str(want).lower()} is")
    return {"vocab_size": ints["vocab_size"], "n_ctx": ints["n_positions"],
            "n_layer": ints["n_layer"], "n_embd": ints["n_embd"], "n_head": ints["n_head"],
            "head_dim": ints["n_embd"] // ints["n_head"], "mlp": n_inner,
            "layer_norm_epsilon": float(eps)}


# ---------------------------------------------------------------------- weights
def _load_bin(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    data = read_bytes(path, "pytorch_model.bin", error=CheckpointError, limit=MAX_MODEL_BYTES)
    if not data:
        raise CheckpointError(f"{path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"it names the Python object {found.group(1)}" if found else \
            "it holds Python objects besides tensors"
        raise CheckpointError(f"{path}: refused unread: {what} (only state_dicts of tensors "
                              "are loaded, since unpickling objects can run code)") from None
    except Exception as exc:  # torch raises many types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path} is truncated, corrupt or not a torch file ({first})"
                              ) from None
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor)
                                               for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a dict of tensors), got "
                              f"{type(obj).__name__}")
    return {str(k): v for k, v in obj.items()}, hashlib.sha256(data).hexdigest()


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    digest = sha256_file(path, "model.safetensors", error=CheckpointError)
    try:
        return load_file(str(path)), digest
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from None


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.is_file():
        state, digest = _load_safetensors(st)
        used = st
    elif pt.is_file():
        state, digest = _load_bin(pt)
        used = pt
    else:
        sharded = [p.name for p in folder.glob("*.index.json")]
        others = sorted(p.name for p in folder.iterdir()
                        if p.suffix in (".h5", ".msgpack", ".ckpt", ".safetensors", ".bin"))
        why = (f"sharded checkpoints ({sharded[0]}) are not supported" if sharded else
               f"found {others}, which are not read" if others else "found neither")
        raise CheckpointError(f"{folder} holds no model.safetensors or pytorch_model.bin: {why}")
    return state, {"file": used.name, "sha256": digest}


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def import_hf_gpt2(folder: Path | str) -> tuple[GPTSupernet, dict[str, Any]]:
    """A :class:`GPTSupernet` whose largest subnet is the GPT-2 checkpoint in ``folder``.

    Args:
        folder: what ``GPT2LMHeadModel.save_pretrained`` wrote (``config.json`` with
            ``model.safetensors`` or ``pytorch_model.bin``); ``GPT2Model``'s names (without
            ``transformer.``) are read too.

    Returns:
        ``(supernet, meta)``: the supernet in eval mode (fp32), and what its checkpoint
        records: source, file, sha256, the config's token ids.

    Raises:
        CheckpointError: one line: a missing or unreadable file, a config this layout does not
            reproduce, a weight missing, extra or of the wrong shape, an untied LM head.
    """
    folder = check_path(folder, "Hugging Face folder", error=CheckpointError)
    if not folder.is_dir():
        raise CheckpointError(f"Hugging Face folder not found: {folder}" if not folder.exists()
                              else f"{folder} is a file; name the folder save_pretrained wrote")
    cfg = _read_config(folder)
    geometry = _geometry(cfg, folder / "config.json")
    raw, info = _read_weights(folder)
    state = {k.removeprefix("transformer."): v for k, v in raw.items()
             if not _MASK_BUFFER.search(k)}
    lm_head = state.pop("lm_head.weight", None)
    net = GPTSupernet(**geometry)
    wanted: dict[str, tuple[str, bool]] = {"wte.weight": ("wte", False),
                                           "wpe.weight": ("wpe", False),
                                           "ln_f.weight": ("ln_f.weight", False),
                                           "ln_f.bias": ("ln_f.bias", False)}
    for i in range(geometry["n_layer"]):
        for ours, (theirs, transposed) in _BLOCK_NAMES.items():
            wanted[f"h.{i}.{theirs}"] = (f"blocks.{i}.{ours}", transposed)
    missing = sorted(set(wanted) - set(state))
    extra = sorted(set(state) - set(wanted))
    where = f"{folder / info['file']}"
    if missing or extra:
        raise CheckpointError(f"{where} is not a GPT-2 of its config.json ("
                              + "; ".join(([f"missing {_few(missing)}"] if missing else [])
                                          + ([f"unexpected {_few(extra)}"] if extra else []))
                              + ")")
    ours_state = net.state_dict()
    with torch.no_grad():
        for theirs, (ours, transposed) in wanted.items():
            tensor = state[theirs]
            tensor = tensor.t() if transposed and tensor.dim() == 2 else tensor
            if tuple(tensor.shape) != tuple(ours_state[ours].shape):
                shape = tuple(state[theirs].shape)
                want = tuple(ours_state[ours].shape)
                raise CheckpointError(f"{where}: {theirs} has shape {shape}, config.json "
                                      f"implies {want[::-1] if transposed else want}")
            ours_state[ours].copy_(tensor.float())
        if lm_head is not None and not torch.equal(lm_head.float(), net.wte):
            raise CheckpointError(f"{where}: lm_head.weight differs from the token embedding; "
                                  "only tied LM heads (tie_word_embeddings) are supported")
    meta: dict[str, Any] = {"source": SOURCE, "hf_file": info["file"],
                            "hf_sha256": info["sha256"]}
    for field in ("bos_token_id", "eos_token_id"):
        if isinstance(cfg.get(field), int) and not isinstance(cfg.get(field), bool):
            meta[field] = cfg[field]
    net.checkpoint_meta = dict(meta)
    return net.eval(), meta


# ---------------------------------------------------------------------- out
def export_hf_gpt2(net: GPTSupernet, arch: Mapping[str, Any] | None, folder: Path | str
                   ) -> Path:
    """Write ``arch`` (default: the active subnet) as a ``GPT2LMHeadModel`` folder
    (``config.json`` and ``model.safetensors``, fp32).

    Raises:
        ExportError: one line: layers with different heads or MLP widths, or heads times
            head size not equal to the embedding width (GPT-2's config cannot say either).
    """
    from safetensors.torch import save_file

    arch = net.active_arch if arch is None else net.check_arch(arch)
    g, e = net.geometry, arch["n_embd"]
    for field, name in (("n_head", "heads"), ("mlp", "MLP width")):
        first = arch[field][0]
        for i, value in enumerate(arch[field]):
            if value != first:
                raise ExportError(f"layer {i} has {name} {value}, layer 0 {first}: GPT-2's "
                                  f"config has one {field} for every layer")
    heads = arch["n_head"][0]
    if heads * g["head_dim"] != e:
        raise ExportError(f"n_head {heads} x head size {g['head_dim']} = "
                          f"{heads * g['head_dim']} differs from n_embd {e}: GPT-2 splits "
                          "n_embd into its heads")
    folder = Path(folder)
    sub = net.extract(arch)
    tensors: dict[str, torch.Tensor] = {
        "transformer.wte.weight": sub.wte, "transformer.wpe.weight": sub.wpe,
        "transformer.ln_f.weight": sub.ln_f["weight"], "transformer.ln_f.bias": sub.ln_f["bias"]}
    for i, block in enumerate(sub.blocks):
        params = dict(block.named_parameters())
        for ours, (theirs, transposed) in _BLOCK_NAMES.items():
            p = params[ours]
            tensors[f"transformer.h.{i}.{theirs}"] = p.t() if transposed else p
    tensors = {k: v.detach().float().contiguous().clone() for k, v in tensors.items()}
    meta = net.checkpoint_meta or {}
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": g["vocab_size"], "n_positions": g["n_ctx"], "n_embd": e,
        "n_layer": arch["n_layer"], "n_head": heads, "n_inner": arch["mlp"][0],
        "activation_function": "gelu_new", "layer_norm_epsilon": g["layer_norm_epsilon"],
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False,
        "tie_word_embeddings": True, "use_cache": True, "initializer_range": 0.02,
        # GPT-2's <|endoftext|> is its last token: kept as imported, else the last token
        "bos_token_id": meta.get("bos_token_id", g["vocab_size"] - 1),
        "eos_token_id": meta.get("eos_token_id", g["vocab_size"] - 1),
        "dtype": "float32",
    }
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_new_file(folder / "model.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        atomic_write(folder / "config.json", json.dumps(config, indent=2) + "\n")
    except OSError as exc:
        raise ExportError(f"cannot write {folder}: {exc.strerror or exc}") from None
    return folder


# ---------------------------------------------------------------------- checkpoints
_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def save_gpt_supernet(net: GPTSupernet, path: Path | str, meta: Mapping[str, Any] | None = None,
                      dtype: str = "float16") -> Path:
    """Write ``net`` as a safetensors checkpoint (atomically), with its geometry.

    Args:
        meta: extra metadata (source, training step ...), stored as JSON.
        dtype: ``float16`` (half the size; the weights round to half precision, which moves
            logits of order 4 by about 5e-3) or ``float32`` (exact).
    """
    from safetensors.torch import save_file

    if dtype not in _DTYPES:
        raise CheckpointError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    path = check_output_file(path, "checkpoint", example="gpt.safetensors",
                             error=CheckpointError)
    tensors = {k: v.detach().to("cpu", _DTYPES[dtype]).contiguous()
               for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "version": VERSION, "family": "gpt",
                "space": net.space_name or "",
                "geometry": json.dumps(net.geometry), "dtype": dtype,
                "extra": json.dumps(dict(meta or {}), default=str)}
    try:
        with atomic_new_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    return path


def read_gpt_checkpoint_meta(path: Path | str) -> dict[str, Any]:
    """A GPT supernet checkpoint's metadata (``geometry`` and ``extra`` parsed)."""
    from safetensors import SafetensorError, safe_open

    path = check_path(path, "checkpoint", error=CheckpointError)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta: dict[str, Any] = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or not a safetensors file "
                              f"({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a GPT supernet checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r}); write one with "
                              "`nas supernet import-hf`")
    for field in ("geometry", "extra"):
        try:
            value = json.loads(meta.get(field) or "{}")
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise CheckpointError(f"checkpoint {path}: metadata {field!r} is not a JSON object")
        meta[field] = value
    return meta


def load_gpt_supernet(path: Path | str, space: Any = None,
                      map_location: str = "cpu") -> GPTSupernet:
    """Read a checkpoint written by :func:`save_gpt_supernet` (weights as fp32, eval mode).

    Args:
        space: if given (a name or a space), the checkpoint must be that space's.

    Raises:
        CheckpointError: missing, truncated or corrupt file, another format, tensors that
            do not match the recorded geometry, or another space's checkpoint.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_gpt_checkpoint_meta(path)
    want = getattr(space, "name", space)
    if want is not None and meta.get("space") and meta["space"] != want:
        raise CheckpointError(f"checkpoint {path} is for space {meta['space']!r}, not {want!r}; "
                              f"pass --space {meta['space']} or a checkpoint of {want}")
    try:
        net = GPTSupernet(**meta["geometry"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: bad geometry in its metadata ({exc})"
                              ) from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc})") from None
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise CheckpointError(f"checkpoint {path} does not match its geometry: "
                              f"{first[0].strip()}") from None
    net = net.to(map_location).eval()
    net.checkpoint_meta = meta["extra"]
    net.space_name = meta.get("space") or None
    return net
