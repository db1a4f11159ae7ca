"""Supernet checkpoints: safetensors files (no pickle) with the space name in the metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._io import atomic_new_file, check_output_file, check_path
from nas.errors import CheckpointError
from nas.space import SearchSpace, get_space

if TYPE_CHECKING:  # torch is imported on first use
    from nas.supernet._ofa import OFASupernet

__all__ = ["load_supernet", "read_checkpoint_meta", "save_supernet"]

FORMAT = "nas.supernet"
VERSION = "1"


def save_supernet(model: OFASupernet, path: Path | str,
                  meta: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights to ``path`` atomically (a crash leaves the old file intact).

    Args:
        meta: extra string-able metadata (training phase, epoch, accuracy ...).
    """
    from safetensors.torch import save_file

    path = check_output_file(path, "checkpoint", example="supernet.safetensors",
                             error=CheckpointError)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": VERSION, "space": model.space.name,
                "extra": json.dumps(meta or {}, default=str)}
    try:
        with atomic_new_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    return path


def read_checkpoint_meta(path: Path | str) -> dict[str, Any]:
    """The checkpoint's metadata (``space``, ``format``, ``version``, ``extra``)."""
    from safetensors import SafetensorError, safe_open

    path = check_path(path, "checkpoint", error=CheckpointError)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a supernet checkpoint ({exc})"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a supernet checkpoint (format {meta.get('format')!r}, "
            f"expected {FORMAT!r}); write one with `nas supernet init`"
        )
    space = meta.get("space")
    if not space:
        raise CheckpointError(f"checkpoint {path} names no search space in its metadata; "
                              "write one with `nas supernet init` or `nas train`")
    try:
        extra = json.loads(meta.get("extra") or "{}")
    except (ValueError, RecursionError):  # bad JSON, 4300+ digits, deep nesting
        extra = None
    if not isinstance(extra, dict):
        raise CheckpointError(f"checkpoint {path}: metadata 'extra' is not a JSON object; the "
                              "file was not written by nas")
    meta["extra"] = extra
    meta.setdefault("version", "?")
    return meta


def load_supernet(
    path: Path | str, space: str | SearchSpace | None = None, map_location: str = "cpu"
) -> OFASupernet:
    """Read a checkpoint into a new ``OFASupernet`` (in eval mode).

    Args:
        space: if given, the checkpoint must belong to it.
        map_location: the device the returned model's weights are on (``"cpu"``, ``"cuda"``).

    Raises:
        CheckpointError: missing, truncated or corrupt file, or another space's checkpoint.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from nas.supernet._ofa import OFASupernet

    path = Path(path)
    meta = read_checkpoint_meta(path)
    ck_space = meta.get("space", "")
    if space is not None:
        want = get_space(space).name
        if ck_space != want:
            raise CheckpointError(
                f"checkpoint {path} is for space {ck_space!r}, not {want!r}; pass "
                f"--space {ck_space} or a checkpoint of {want}"
            )
    model = OFASupernet(ck_space)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise CheckpointError(
            f"checkpoint {path} does not match space {ck_space!r}: {first[0].strip()}"
        ) from None
    # load_state_dict copies into the model's own tensors: move the model, not the state
    model = model.to(map_location).eval()
    model.checkpoint_meta = meta["extra"]
    return model


