"""Export of a subnet as a self-describing folder: ONNX, weights and a manifest.

The folder is built next to ``out`` and renamed into place only after verification passed, so
a failed export leaves nothing half-written behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas import _io
from nas.errors import ExportError
from nas.export._onnx import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, onnx_bytes, verify_onnx
from nas.space import Architecture

__all__ = [
    "MANIFEST_FORMAT",
    "ExportResult",
    "export_subnet",
    "load_export",
    "sha256_file",
    "verify_export",
]

MANIFEST_FORMAT = "nas.export/1"
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"


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


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise ExportError(
                f"--out {out} exists and is not empty; pass --overwrite to replace it"
            )


def export_subnet(
    supernet: Any, arch: Architecture | dict[str, Any] | str, out: Path | str, *,
    opset: int = DEFAULT_OPSET, atol: float = 1e-4, overwrite: bool = False,
    extra: dict[str, Any] | None = None, checkpoint: Path | str | None = None,
) -> ExportResult:
    """Extract ``arch`` from ``supernet`` and write a verified export folder.

    The folder holds ``model.onnx`` (dynamic batch), ``weights.safetensors`` (the static
    subnet's state dict) and ``manifest.json`` (space, canonical arch, hash, resolution, MACs,
    params, input/output names and shapes, preprocessing, opset, package versions, sha256 of
    each file, the verification result, and ``extra``).

    Raises:
        ExportError: if ``out`` is not empty (without ``overwrite``), the ONNX checker rejects
            the graph, or ONNX Runtime disagrees with torch by more than ``atol``. ``out`` is
            then left as it was.
    """
    from safetensors.torch import save_file

    space = supernet.space
    canon: Architecture = space.parse(arch)
    out = Path(out)
    _check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    sub = supernet.extract(canon).eval()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        data = onnx_bytes(sub, canon.r, opset)
        (tmp / MODEL_FILE).write_bytes(data)
        state = {k: v.detach().contiguous() for k, v in sub.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE),
                  metadata={"space": space.name, "arch": canon.to_json()})
        verification = verify_onnx(data, sub, canon.r, atol=atol)
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
        raise
    return ExportResult(out, manifest)


def _manifest(space: Any, canon: Architecture, folder: Path, opset: int,
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
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{folder} is not an export folder: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(_io.read_text(path, "manifest", error=ExportError))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(
            f"{path}: format {manifest.get('format')!r} is not {MANIFEST_FORMAT!r}"
        )
    return manifest


def load_export(folder: Path | str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the static torch subnet of an export folder (weights via safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from nas.supernet import OFASupernet

    folder = Path(folder)
    manifest = _read_manifest(folder)
    skeleton = OFASupernet(manifest["space"])
    sub = skeleton.extract(manifest["arch"])
    try:
        sub.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ExportError(f"cannot load {folder / WEIGHTS_FILE}: {exc}") from None
    return sub.eval(), manifest


def verify_export(folder: Path | str, *, atol: float = 1e-4) -> dict[str, Any]:
    """Check an export folder: file hashes, the ONNX graph, and ONNX Runtime against torch.

    Raises:
        ExportError: naming the first thing that does not match.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder)
    for name, info in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ExportError(f"{path} is missing")
        digest = sha256_file(path)
        if digest != info["sha256"]:
            raise ExportError(
                f"{path}: sha256 {digest[:12]}... does not match the manifest's "
                f"{info['sha256'][:12]}... (file changed or truncated)"
            )
    sub, manifest = load_export(folder)
    result = verify_onnx(folder / MODEL_FILE, sub, manifest["resolution"], atol=atol)
    return {"folder": str(folder), "space": manifest["space"], "arch_hash": manifest["arch_hash"],
            **result}
