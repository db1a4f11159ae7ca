"""Export of a subnet as a self-describing folder: ONNX, weights and a manifest.

The folder is built next to ``out`` and renamed into place only after verification passed, so
a failed export leaves nothing half-written behind. The temporary folder's name carries the
host and process id of its writer (``.<out>.tmp-<host>-<pid>-<random>``); a process killed
mid-export cannot remove it, so the next export to that parent folder removes the temporary
folders of writers that are no longer running.

``overwrite`` replaces an export folder only: one that holds nothing but an export's own
files. Anything else in ``out`` is the user's, and is never deleted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nas import _io
from nas._config import format_validation_error
from nas.errors import ExportError, NASError
from nas.export._onnx import (
    DEFAULT_OPSET,
    DEFAULT_RTOL,
    INPUT_NAME,
    OUTPUT_NAME,
    SCALE_FLOOR,
    onnx_bytes,
    verify_onnx,
)
from nas.space import Architecture, SearchSpace

__all__ = [
    "MANIFEST_FORMAT",
    "ExportResult",
    "check_export_out",
    "export_subnet",
    "load_export",
    "sha256_file",
    "verify_export",
]

MANIFEST_FORMAT = "nas.export/1"
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
#: everything an export folder holds; ``overwrite`` replaces a folder of these only
EXPORT_FILES = frozenset({MODEL_FILE, WEIGHTS_FILE, MANIFEST_FILE})


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.out / MODEL_FILE


def sha256_file(path: Path | str) -> str:
    """The sha256 of a file, hex (a missing or unreadable one: ``ExportError``)."""
    return _io.sha256_file(path, "file", error=ExportError)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    import nas

    return {"nas": nas.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _host() -> str:
    # a host name with a "-" would be ambiguous in the temporary folder's name
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _clean_stale(out: Path) -> None:
    """Remove what exports of ``out`` killed on this host left beside it.

    ``.<name>.tmp-<host>-<pid>-*`` is a folder being built; ``.<name>.old-<host>-<pid>`` an
    export being replaced (put back if the kill came between the two renames).
    """
    name = re.escape(out.name)
    pattern = re.compile(rf"^\.{name}\.(?:(tmp)-([\w.]+)-(\d+)-\w+|(old)-([\w.]+)-(\d+))$")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    host = _host()
    for entry in entries:
        m = pattern.match(entry.name)
        if not m:
            continue
        kind, owner, pid = (m.group(1, 2, 3) if m.group(1) else m.group(4, 5, 6))
        if owner != host or _pid_alive(int(pid)):
            continue
        if kind == "old" and not out.exists() and entry.is_dir():
            with contextlib.suppress(OSError):  # put back; if that fails, leave it be
                os.replace(entry, out)
        else:
            shutil.rmtree(entry, ignore_errors=True)


def _normalise(out: Path) -> Path:
    return _io.check_path(os.path.normpath(Path.cwd() / out), "--out", error=ExportError)


def _check_out(out: Path, overwrite: bool, files: frozenset[str] = EXPORT_FILES) -> Path:
    """``out`` as an absolute, normalised path, refused where an export must not go.

    ``sub/..`` is the working folder (and creates no ``sub/``); the working folder, a folder
    that holds it and the file system's root are refused; ``files`` are the names an export
    folder holds (what ``overwrite`` may replace).
    """
    out = _normalise(out)
    if not out.name or out == out.parent:
        raise ExportError(f"--out {out} is the root of the file system; name a folder")
    cwd = Path.cwd().resolve()
    resolved = out.resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise ExportError(f"--out {out} is the working folder or holds it; name a new folder "
                          "(e.g. --out export/)")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is not a folder")
        try:
            held = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise ExportError(f"--out {out} cannot be read: {exc.strerror or exc}") from None
        if held and not overwrite:
            raise ExportError(
                f"--out {out} exists and is not empty; pass --overwrite to replace it"
            )
        foreign = [n for n in held if n not in files or not (out / n).is_file()]
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ExportError(
                f"--out {out} holds files that are not part of an export ({shown}); "
                "--overwrite replaces an export folder only: move them away or choose "
                "another --out"
            )
    return out


def check_export_out(out: Path | str, overwrite: bool = False) -> Path:
    """Refuse ``out`` where an export may not go, before anything is made to export: a
    folder that is not empty (without ``overwrite``), holds files that are not an export's,
    the working folder or the root. Returns it absolute and normalised."""
    return _check_out(Path(out), overwrite)


def _make_parent(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    created = []
    p = folder
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise ExportError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            return


class SubnetSource(Protocol):
    """What :func:`export_subnet` needs of a supernet (an ``OFASupernet``, or a stand-in
    holding one trained subnet): its space, and the static subnet of an architecture."""

    @property
    def space(self) -> SearchSpace: ...

    def extract(self, arch: Architecture) -> torch.nn.Module: ...


def export_subnet(
    supernet: SubnetSource, arch: Architecture | dict[str, Any] | str, out: Path | str, *,
    opset: int = DEFAULT_OPSET, rtol: float = DEFAULT_RTOL, overwrite: bool = False,
    extra: dict[str, Any] | None = None, checkpoint: Path | str | None = None,
) -> ExportResult:
    """Extract ``arch`` from ``supernet`` and write a verified export folder.

    The folder holds ``model.onnx`` (dynamic batch), ``weights.safetensors`` (the static
    subnet's state dict) and ``manifest.json`` (space, canonical arch, hash, resolution, MACs,
    params, input/output names and shapes, preprocessing, opset, package versions, sha256 of
    each file, the verification result, and ``extra``).

    Args:
        rtol: ONNX Runtime and torch must agree within ``rtol * max(10, max|torch|)``
            (:data:`nas.export.TOLERANCE_RULE`); the manifest states the bound applied.
        overwrite: replace ``out`` if it is an export folder (nothing but an export's files).

    Raises:
        ExportError: if ``out`` is not empty (without ``overwrite``) or holds files that are
            not an export's, the ONNX checker rejects the graph, or ONNX Runtime disagrees
            with torch by more than the tolerance. ``out`` is then left as it was, and no
            folder is created.
    """
    from safetensors.torch import save_file

    space = supernet.space
    # the resolution is a deployment choice: a published subnet fine-tuned off the search
    # grid (OFA's at 260, say) exports at its own size
    canon: Architecture = space.parse(arch, off_grid=True)
    _clean_stale(_normalise(Path(out)))  # first: it may put back an export a kill took away
    out = _check_out(Path(out), overwrite)
    created = _make_parent(out.parent)
    try:
        sub = supernet.extract(canon).eval()
        tmp = Path(tempfile.mkdtemp(dir=out.parent,
                                    prefix=f".{out.name}.tmp-{_host()}-{os.getpid()}-"))
    except BaseException:
        _remove_empty(created)
        raise
    try:
        data = onnx_bytes(sub, canon.r, opset)
        (tmp / MODEL_FILE).write_bytes(data)
        state = {k: v.detach().contiguous() for k, v in sub.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE),
                  metadata={"space": space.name, "arch": canon.to_json()})
        verification = verify_onnx(data, sub, canon.r, rtol=rtol)
        manifest = _manifest(space, canon, tmp, opset, verification)
        if checkpoint is not None:
            ck = Path(checkpoint)
            manifest["checkpoint"] = {"path": str(ck), "sha256": sha256_file(ck)}
        if extra:
            manifest["extra"] = extra
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    return ExportResult(out, manifest)


def _manifest(space: SearchSpace, canon: Architecture, folder: Path, opset: int,
              verification: dict[str, Any]) -> dict[str, Any]:
    """What a consumer needs to run the exported model, and the digests of its files."""
    costs = space.costs([canon])
    pre = space.spec.preprocessing
    return {
        "format": MANIFEST_FORMAT,
        "space": space.name,
        "arch": canon.to_dict(),
        "arch_hash": canon.hash,
        "resolution": canon.r,
        "macs": int(costs["macs"][0]),
        "params": int(costs["params"][0]),
        "num_classes": space.spec.num_classes,
        "inputs": [{"name": INPUT_NAME, "shape": ["batch", 3, canon.r, canon.r],
                    "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": ["batch", space.spec.num_classes],
                     "dtype": "float32", "meaning": "unnormalised class scores"}],
        "preprocessing": {
            "resolution": canon.r, "channel_order": pre.channel_order, "layout": "NCHW",
            "scale": pre.scale, "mean": list(pre.mean), "std": list(pre.std),
            "resize": pre.resize,
            "formula": "input = (pixel * scale - mean) / std, per channel",
        },
        "opset": opset,
        "versions": _versions(),
        "verification": verification,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": {
            name: {"sha256": sha256_file(folder / name),
                   "bytes": (folder / name).stat().st_size}
            for name in (MODEL_FILE, WEIGHTS_FILE)
        },
    }


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap the finished folder ``tmp`` in for ``out`` (``nas._io`` has files, not folders)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{_host()}-{os.getpid()}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


class _FileEntry(BaseModel):
    sha256: str
    bytes: int | None = None


class _Verification(BaseModel):
    rtol: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    floor: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class _Manifest(BaseModel):
    """The parts of a manifest that loading and verifying an export read (the rest is kept)."""

    model_config = ConfigDict(extra="allow")

    format: Literal["nas.export/1"]
    space: str
    arch: dict[str, Any]
    resolution: Annotated[int, Field(ge=1, le=4096)]
    files: dict[Literal["model.onnx", "weights.safetensors"], _FileEntry]
    verification: _Verification = _Verification()


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = _io.check_path(folder / MANIFEST_FILE, "export folder", error=ExportError)
    if not path.is_file():
        raise ExportError(f"{folder} is not an export folder: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(_io.read_text(path, "manifest", error=ExportError))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError):  # over 4300 digits, or nested too deep
        raise ExportError(f"{path} is not a manifest (a number too long or nesting too "
                          "deep)") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path} is not a manifest: a JSON object was expected, got "
                          f"{type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(
            f"{path}: format {_short(manifest.get('format'))} is not {MANIFEST_FORMAT!r}"
        )
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as exc:
        raise ExportError(format_validation_error(exc, str(path))) from None
    return manifest


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_export(folder: Path | str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the static torch subnet of an export folder (weights via safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from nas.supernet import OFASupernet

    folder = Path(folder)
    manifest = _read_manifest(folder)
    skeleton = OFASupernet(manifest["space"])
    arch = skeleton.space.parse(manifest["arch"], off_grid=True)
    if arch.r != manifest["resolution"]:
        raise ExportError(f"{folder / MANIFEST_FILE}: resolution {manifest['resolution']} is "
                          f"not the arch's r={arch.r}")
    sub = skeleton.extract(arch)
    try:
        sub.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"cannot load {folder / WEIGHTS_FILE}: {first[:300]}") from None
    return sub.eval(), manifest


def _check_links(folder: Path) -> None:
    """Refuse an export's file that is a symlink out of its folder: the folder would vouch
    for a file it does not hold (another export's weights, say), and hashes follow links."""
    _io.check_path(folder / MANIFEST_FILE, "export folder", error=ExportError)  # a name at all
    root = folder.resolve()
    for name in sorted(EXPORT_FILES):
        path = folder / name
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ExportError(f"{path} is a symlink out of the export folder (to "
                              f"{os.readlink(path)}); an export holds its own files: copy it "
                              "in place of the link")


def _check_claims(folder: Path, manifest: dict[str, Any]) -> None:
    """Re-derive what the manifest says of the subnet from its architecture: the hash,
    resolution, MACs, parameters, classes and tensor shapes; and the architecture the
    weights file records. A manifest is not signed: each claim is checked, none trusted."""
    from safetensors import SafetensorError, safe_open

    from nas.space import get_space

    where = folder / MANIFEST_FILE
    try:
        space = get_space(manifest["space"])
        arch = space.parse(manifest["arch"], off_grid=True)
    except NASError as exc:
        raise ExportError(f"{where}: {exc}") from None
    costs = space.costs([arch])
    classes = space.spec.num_classes
    derived: dict[str, Any] = {
        "arch_hash": arch.hash, "resolution": arch.r, "macs": int(costs["macs"][0]),
        "params": int(costs["params"][0]), "num_classes": classes,
    }
    for key, value in derived.items():
        if key in manifest and manifest[key] != value:
            raise ExportError(f"{where}: {key} {_short(manifest[key])} is not the "
                              f"architecture's ({value}); the manifest was edited")
    shapes = {"inputs": ["batch", 3, arch.r, arch.r], "outputs": ["batch", classes]}
    for key, shape in shapes.items():
        entries = manifest.get(key)
        if entries is not None and (not isinstance(entries, list) or len(entries) != 1
                                    or not isinstance(entries[0], dict)
                                    or entries[0].get("shape") != shape):
            raise ExportError(f"{where}: {key} {_short(entries)} is not the subnet's (one "
                              f"tensor of shape {shape})")
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as fh:
            recorded = (fh.metadata() or {}).get("arch")
    except (SafetensorError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"cannot read {folder / WEIGHTS_FILE}: {first[:300]}") from None
    if recorded is not None and recorded != arch.to_json():
        raise ExportError(f"{folder / WEIGHTS_FILE} holds the weights of architecture "
                          f"{_short(recorded)}, not the manifest's {arch.to_json()}")


def _peek_format(folder: Path) -> Any:
    """The ``format`` a folder's manifest names, or None where there is none to read (the
    checks of the format's own verification then say what is wrong)."""
    try:
        if not (folder / MANIFEST_FILE).is_file():  # a FIFO would block the read
            return None
        manifest = json.loads(_io.read_bytes(folder / MANIFEST_FILE, "manifest",
                                             error=ExportError))
    except (NASError, OSError, ValueError, RecursionError):  # unreadable, not JSON or UTF-8
        return None
    return manifest.get("format") if isinstance(manifest, dict) else None


def verify_export(folder: Path | str, *, rtol: float | None = None) -> dict[str, Any]:
    """Check an export folder: its files (no symlink out of it), their sizes and hashes,
    every claim of the manifest re-derived from its architecture (hash, resolution, MACs,
    parameters, classes, shapes, the weights' own architecture), the ONNX graph, and ONNX
    Runtime against torch.

    Args:
        rtol: the tolerance of the comparison (see :func:`nas.export.verify_onnx`); default
            :data:`nas.export.DEFAULT_RTOL`, the one exports are written with.

    A folder of another format this package writes (a GPT export, ``nas.export.gpt/1``) is
    checked by its own verification (:func:`nas.export.verify_gpt_export`).

    Raises:
        ExportError: naming the first thing that does not match.
    """
    folder = Path(folder)
    fmt = _peek_format(folder)
    if fmt is not None and fmt != MANIFEST_FORMAT:
        from nas.export._gpt import GPT_MANIFEST_FORMAT, verify_gpt_export

        if fmt == GPT_MANIFEST_FORMAT:
            return verify_gpt_export(folder, rtol=rtol)
    _check_links(folder)
    manifest = _read_manifest(folder)
    files = manifest["files"]
    for name in (MODEL_FILE, WEIGHTS_FILE):
        if name not in files:
            raise ExportError(f"{folder / MANIFEST_FILE}: files has no entry for {name}")
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            raise ExportError(f"{path} is missing")
        digest = sha256_file(path)
        if digest != info["sha256"]:
            raise ExportError(
                f"{path}: sha256 {digest[:12]}... does not match the manifest's "
                f"{str(info['sha256'])[:12]}... (file changed or truncated)"
            )
        claimed, size = info.get("bytes"), path.stat().st_size
        if claimed is not None and claimed != size:
            raise ExportError(f"{path}: {size} bytes, the manifest says {claimed}")
    _check_claims(folder, manifest)
    sub, manifest = load_export(folder)
    # the manifest states the tolerance it was exported with, but a manifest is not signed:
    # the check applies this version's bound, never a looser one read from the file
    result = verify_onnx(folder / MODEL_FILE, sub, manifest["resolution"],
                         rtol=rtol or DEFAULT_RTOL, floor=SCALE_FLOOR)
    return {"folder": str(folder), "space": manifest["space"],
            "arch_hash": manifest.get("arch_hash"), **result}
