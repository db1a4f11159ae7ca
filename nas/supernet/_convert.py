"""Once-for-All's supernet checkpoints to ours and back.

OFA publishes its ImageNet supernets as the ``state_dict`` of its own classes
(``OFAMobileNetV3`` at width 1.0 and 1.2, ``OFAProxylessNASNets`` at width 1.3), pickled by
``torch.save`` and usually wrapped as ``{"state_dict": ...}``. Our ``OFASupernet`` computes
what OFA's computes (the same slicing, the same kernel-transform matrices), so a conversion is a
renaming: every OFA tensor has exactly one counterpart here, of the same shape, and the
extracted subnets give OFA's logits.

Files are read with ``torch.load(weights_only=True)`` only: tensors and plain containers are
unpickled, a pickle that names any other Python object is refused unread (unpickling objects can
run code).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from nas._io import (
    MAX_MODEL_BYTES,
    atomic_new_file,
    check_output_file,
    check_path,
    read_bytes,
)
from nas.errors import CheckpointError, ConfigError, UnknownNameError
from nas.space import get_space
from nas.supernet._ofa import OFASupernet

__all__ = [
    "OFA_SPACES",
    "export_ofa_checkpoint",
    "import_ofa_checkpoint",
    "ofa_state_dict",
    "read_ofa_state_dict",
]

#: our space -> (OFA's class, its width_mult): the supernets OFA publishes
OFA_SPACES: dict[str, tuple[str, float]] = {
    "ofa_mbv3": ("OFAMobileNetV3", 1.0),
    "ofa_mbv3_w12": ("OFAMobileNetV3", 1.2),
    "ofa_proxyless": ("OFAProxylessNASNets", 1.3),
}

#: what the metadata of a converted checkpoint says it is
SOURCE = "converted from OFA"

# Our static modules (stem, first block, head) -> OFA's names. OFA's static layers wrap
# nn.Conv2d/BatchNorm2d/Linear once (`conv.`, `bn.`, `linear.`).
_STATIC = (
    ("stem.0.", "first_conv.conv."),
    ("stem.1.", "first_conv.bn."),
    ("first_block.expand.0.", "blocks.0.conv.inverted_bottleneck.conv."),
    ("first_block.expand.1.", "blocks.0.conv.inverted_bottleneck.bn."),
    ("first_block.depthwise.0.", "blocks.0.conv.depth_conv.conv."),
    ("first_block.depthwise.1.", "blocks.0.conv.depth_conv.bn."),
    ("first_block.se.reduce.", "blocks.0.conv.depth_conv.se.fc.reduce."),
    ("first_block.se.expand.", "blocks.0.conv.depth_conv.se.fc.expand."),
    ("first_block.project.0.", "blocks.0.conv.point_linear.conv."),
    ("first_block.project.1.", "blocks.0.conv.point_linear.bn."),
    ("final_expand.0.", "final_expand_layer.conv."),
    ("final_expand.1.", "final_expand_layer.bn."),
    ("feature_mix.0.", "feature_mix_layer.conv."),
    ("feature_mix.1.", "feature_mix_layer.bn."),
    ("classifier.", "classifier.linear."),
)
# Inside an elastic block: OFA's dynamic layers wrap the static one a second time
# (DynamicConv2d.conv, DynamicBatchNorm2d.bn), hence `conv.conv.` and `bn.bn.`.
_DYNAMIC = (
    ("expand_conv.", "inverted_bottleneck.conv.conv."),
    ("expand_bn.", "inverted_bottleneck.bn.bn."),
    ("depthwise.weight", "depth_conv.conv.conv.weight"),
    ("depthwise_bn.", "depth_conv.bn.bn."),
    ("se.reduce.", "depth_conv.se.fc.reduce."),
    ("se.expand.", "depth_conv.se.fc.expand."),
    ("project_conv.", "point_linear.conv.conv."),
    ("project_bn.", "point_linear.bn.bn."),
)
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_TRANSFORM = re.compile(r"depthwise\.transform_(\d+)to(\d+)")
# OFA's checkpoints of 2019-2020 call each block's layer `mobile_inverted_conv` where its code
# now says `conv` (OFAMobileNetV3.load_state_dict renames them); both are read
_OLD_BLOCK = ".mobile_inverted_conv."
_DW = ".depth_conv.conv."  # an elastic depthwise layer's tensors
_NEW_BLOCK = ".conv."
# torch.save's two formats: a zip archive, or the legacy pickle that opens with torch's magic
# number (pickle protocol 2, a 10-byte long)
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"


def _ofa_key(ours: str) -> str:
    """OFA's name for our state_dict key ``ours`` (current naming: blocks' layer is `conv`)."""
    for mine, theirs in _STATIC:
        if ours.startswith(mine):
            return theirs + ours[len(mine):]
    m = _BLOCK.fullmatch(ours)
    if m is not None:
        # OFA's blocks[0] is the first block; our elastic blocks follow it
        head, rest = f"blocks.{int(m.group(1)) + 1}.conv.", m.group(2)
        t = _TRANSFORM.fullmatch(rest)
        if t is not None:
            return f"{head}depth_conv.conv.{t.group(1)}to{t.group(2)}_matrix"
        for mine, theirs in _DYNAMIC:
            if rest.startswith(mine):
                return head + theirs + rest[len(mine):]
    # a module of ours without an OFA counterpart: the supernet changed, not the input
    raise RuntimeError(f"no OFA name for supernet tensor {ours!r}; update "
                       "nas/supernet/_convert.py's name tables")


def _ofa_order(keys: Iterable[str]) -> list[str]:
    """``keys`` (OFA names, in our module order) in the order of OFA's own ``state_dict``.

    They differ in one place: OFA's depthwise layer holds its transform matrices itself (3 by 3
    first) and the weight in a child module, so the matrices come before the weight.
    """
    out: list[str] = []
    group: list[str] = []

    def rank(k: str) -> int:
        m = re.search(r"\.(\d+)to(\d+)_matrix$", k)
        return int(m.group(2)) if m else 1 << 30

    def layer(k: str) -> str:
        return k[: k.index(_DW)]

    for k in keys:
        if _DW in k and k.startswith("blocks."):
            if group and layer(group[0]) != layer(k):
                out.extend(sorted(group, key=rank))
                group = []
            group.append(k)
            continue
        out.extend(sorted(group, key=rank))
        group = []
        out.append(k)
    out.extend(sorted(group, key=rank))
    return out


def _check_space(space: str) -> str:
    if space not in OFA_SPACES:
        raise ConfigError(f"--space {space!r}: OFA publishes supernets of "
                          f"{', '.join(OFA_SPACES)} only")
    try:
        return get_space(space).name
    except UnknownNameError:
        raise ConfigError(f"--space {space!r}: this version of nas has no such search space "
                          "yet") from None


def _expected_shapes(space: str) -> dict[str, tuple[torch.Size, bool]]:
    """OFA name -> (shape, is floating point) of ``space``'s supernet, without its memory."""
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        net = OFASupernet(space)
    return {_ofa_key(k): (v.shape, v.is_floating_point()) for k, v in net.state_dict().items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def read_ofa_state_dict(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of an OFA checkpoint file, read without unpickling any object.

    Args:
        path: a ``torch.save`` file (legacy or zip serialization) of a ``state_dict``, or of a
            dict that holds one under ``"state_dict"`` (as OFA publishes them).

    Returns:
        ``(state_dict, info)``; ``info`` has ``file``, ``sha256``, ``serialization`` (``zip`` or
        ``legacy``) and ``wrapped`` (whether it was under ``"state_dict"``).

    Raises:
        CheckpointError: one line: a missing, empty, truncated or corrupt file, not a torch
            file, a pickle that names Python objects (refused unread), or not a state_dict.
    """
    path = check_path(path, "OFA checkpoint", error=CheckpointError)
    data = read_bytes(path, "OFA checkpoint", error=CheckpointError, limit=MAX_MODEL_BYTES)
    if not data:
        raise CheckpointError(f"OFA checkpoint {path} is empty (0 bytes)")
    zipped = data.startswith(_ZIP_MAGIC)
    legacy = data.startswith(_LEGACY_MAGIC)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False: exactly what must not be done here
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if not (found or zipped or legacy or data.startswith(b"\x80")):
            raise CheckpointError(f"OFA checkpoint {path} is not a torch file (it starts with "
                                  f"{data[:8]!r}; expected a torch.save file, zip or legacy)"
                                  ) from None
        what = f"it names the Python object {found.group(1)}" if found else (
            "it holds Python objects besides tensors" if zipped or legacy else
            "it is a bare pickle, not a torch.save file")
        raise CheckpointError(f"OFA checkpoint {path}: refused unread: {what} (only plain "
                              "state_dicts of tensors are loaded, since unpickling objects "
                              "can run code)") from None
    except Exception as exc:  # torch raises many types for a damaged file: all mean refused
        if zipped or legacy:
            raise CheckpointError(
                f"OFA checkpoint {path} is truncated or corrupt ({len(data)} bytes; torch: "
                f"{_first_line(exc) if str(exc).strip() else type(exc).__name__})") from None
        raise CheckpointError(f"OFA checkpoint {path} is not a torch file (it starts with "
                              f"{data[:8]!r}; expected a torch.save file, zip or legacy)"
                              ) from None
    wrapped = isinstance(obj, dict) and isinstance(obj.get("state_dict"), Mapping)
    if wrapped:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        got = "an empty dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise CheckpointError(f"OFA checkpoint {path}: expected a state_dict (a dict of "
                              f"tensors, or one under 'state_dict'), got {got}")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"OFA checkpoint {path}: state_dict[{key!r}] is a "
                                  f"{type(value).__name__}, not a tensor")
    info = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "serialization": "zip" if zipped else "legacy", "wrapped": wrapped}
    return {str(k): v for k, v in obj.items()}, info


def _few(keys: list[str], n: int = 3) -> str:
    more = f" ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _shape(s: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in s) + "]"


def _matching_space(state: Mapping[str, torch.Tensor], but: str) -> str | None:
    """Another OFA space whose supernet ``state`` fits exactly, for a hint."""
    for name in OFA_SPACES:
        if name == but:
            continue
        try:
            want = _expected_shapes(get_space(name).name)
        except UnknownNameError:
            continue
        keys = set(want) - {k for k in want if k.endswith(".num_batches_tracked")}
        if keys <= set(state) <= set(want) and all(
            state[k].shape == want[k][0] for k in state
        ):
            return name
    return None


def import_ofa_checkpoint(path: Path | str, space: str) -> OFASupernet:
    """Read an OFA supernet checkpoint into a new ``OFASupernet`` of ``space`` (eval mode).

    Every tensor of OFA's state_dict is matched to ours by name and shape (weights, BatchNorm
    statistics and ``num_batches_tracked``, squeeze-excite, the kernel-transform matrices, the
    classifier); nothing may be missing or left over. The returned net's ``checkpoint_meta``
    says where it came from; save it with
    ``save_supernet(net, out, meta=net.checkpoint_meta)``.

    Example:
        >>> net = import_ofa_checkpoint("ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3")
        >>> save_supernet(net, "ofa_mbv3.safetensors", meta=net.checkpoint_meta)

    Args:
        path: the checkpoint (see :func:`read_ofa_state_dict`).
        space: ``ofa_mbv3`` (``OFAMobileNetV3``, width 1.0), ``ofa_mbv3_w12`` (width 1.2) or
            ``ofa_proxyless`` (``OFAProxylessNASNets``, width 1.3).

    Raises:
        ConfigError: ``space`` is not one of OFA's.
        CheckpointError: one line: the file cannot be read (see :func:`read_ofa_state_dict`),
            or it is not ``space``'s supernet (the first tensor of another shape, expected vs
            got; the first missing or unexpected names), or it holds NaN or infinite values.
    """
    space = _check_space(space)
    state, info = read_ofa_state_dict(path)
    where = f"OFA checkpoint {path}"
    cls, width = OFA_SPACES[space]
    what = f"{cls} width {width}"

    old = [k for k in state if _OLD_BLOCK in k]
    block_name = "conv"
    if old:
        if any(re.match(r"blocks\.\d+\.conv\.", k) for k in state):
            raise CheckpointError(f"{where} names its blocks' layers both "
                                  "'mobile_inverted_conv' and 'conv'; expected one or the other")
        block_name = "mobile_inverted_conv"
        state = {k.replace(_OLD_BLOCK, _NEW_BLOCK, 1): v for k, v in state.items()}

    want = _expected_shapes(space)
    counters = [k for k in want if k.endswith(".num_batches_tracked")]
    # torch < 0.4.1 wrote no BatchNorm counters; they do not change what a net computes
    has_counters = any(k in state for k in counters)
    required = [k for k in want if has_counters or k not in counters]
    missing = [k for k in required if k not in state]
    unexpected = [k for k in state if k not in want]

    def hint() -> str:
        other = _matching_space(state, space)
        return f"; it is the supernet of space {other} (pass --space {other})" if other else ""

    if missing or unexpected:
        parts = ([f"missing {_few(missing)}"] if missing else []) + (
            [f"unexpected {_few(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{where} is not the {what} supernet of space {space}: "
                              f"{'; '.join(parts)}{hint()}")
    for key in required:
        shape, floating = want[key]
        got = state[key]
        if got.shape != shape:
            raise CheckpointError(f"{where} is not the {what} supernet of space {space}: "
                                  f"{key} has shape {_shape(got.shape)}, expected "
                                  f"{_shape(shape)}{hint()}")
        if got.is_floating_point() != floating:
            raise CheckpointError(f"{where}: {key} holds {got.dtype}, expected "
                                  f"{'a floating point' if floating else 'an integer'} tensor")
        if floating and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{where}: {key} holds NaN or infinite values")

    net = OFASupernet(space)
    ours = {}
    for key, mine in net.state_dict().items():
        theirs = _ofa_key(key)
        ours[key] = state[theirs] if theirs in state else torch.zeros_like(mine)
    net.load_state_dict(ours, strict=True)
    net.eval()
    meta: dict[str, Any] = {
        "source": SOURCE, "ofa_file": info["file"], "ofa_sha256": info["sha256"],
        "ofa_class": cls, "ofa_width_mult": width,
        "ofa_serialization": info["serialization"], "ofa_wrapped": info["wrapped"],
        "ofa_block_name": block_name, "ofa_num_batches_tracked": has_counters,
    }
    net.checkpoint_meta = meta
    return net


def ofa_state_dict(net: OFASupernet) -> dict[str, torch.Tensor]:
    """``net``'s weights as OFA's ``state_dict`` of its space, in OFA's names and order.

    A net converted from OFA keeps the naming of its source file (``net.checkpoint_meta``):
    blocks' layers called ``mobile_inverted_conv`` and BatchNorm counters absent, if they were.

    Raises:
        CheckpointError: ``net``'s space has no OFA counterpart.
    """
    name = net.space.name
    if name not in OFA_SPACES:
        raise CheckpointError(f"supernet of space {name!r} has no OFA counterpart; OFA "
                              f"publishes supernets of {', '.join(OFA_SPACES)} only")
    meta = net.checkpoint_meta
    counters = meta.get("ofa_num_batches_tracked", True) is not False
    old = meta.get("ofa_block_name") == "mobile_inverted_conv"
    state: dict[str, torch.Tensor] = {}
    for key, value in net.state_dict().items():
        if not counters and key.endswith(".num_batches_tracked"):
            continue
        theirs = _ofa_key(key)
        if old and theirs.startswith("blocks."):
            theirs = theirs.replace(_NEW_BLOCK, _OLD_BLOCK, 1)
        state[theirs] = value.detach().cpu().clone()
    return {k: state[k] for k in _ofa_order(state)}


def export_ofa_checkpoint(
    checkpoint: Path | str | OFASupernet, out: Path | str, *, wrap: bool | None = None
) -> Path:
    """Write a supernet as OFA's checkpoint (``torch.save`` of OFA's ``state_dict``).

    Args:
        checkpoint: our checkpoint file (``.safetensors``) or a loaded ``OFASupernet``.
        out: the file to write (atomically: a failure leaves no file).
        wrap: write ``{"state_dict": ...}`` as OFA publishes them (``OFAMobileNetV3``'s model
            zoo reads ``torch.load(f)["state_dict"]``), or the bare state_dict. Default: as
            the OFA file it was converted from, else wrapped. The serialization (zip or legacy)
            is also that of the source file, else zip.

    Returns:
        ``out``.

    Raises:
        CheckpointError: an unreadable checkpoint, a space without OFA counterpart, or an
            ``out`` that cannot be written.
    """
    from nas.supernet._checkpoint import load_supernet

    net = checkpoint if isinstance(checkpoint, OFASupernet) else load_supernet(checkpoint)
    state = ofa_state_dict(net)
    meta = net.checkpoint_meta
    if wrap is None:
        wrap = meta.get("ofa_wrapped", True) is not False
    legacy = meta.get("ofa_serialization") == "legacy"
    path = check_output_file(out, "--out", example="ofa_mbv3.pth", error=CheckpointError)
    try:
        with atomic_new_file(path) as tmp:
            torch.save({"state_dict": state} if wrap else state, tmp,
                       _use_new_zipfile_serialization=not legacy)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk so
        reason = exc.strerror if isinstance(exc, OSError) else None
        raise CheckpointError(f"cannot write {path}: {reason or _first_line(exc)}") from None
    return path
