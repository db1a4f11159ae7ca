"""ONNX export of static subnets and its verification against torch."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.errors import ExportError

__all__ = [
    "DEFAULT_RTOL",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SCALE_FLOOR",
    "TOLERANCE_RULE",
    "export_onnx",
    "onnx_bytes",
    "verify_onnx",
]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17

# ONNX Runtime and torch sum in different orders, so float32 rounding grows with the size of
# the outputs: logits of magnitude ~90 differ by ~1e-4 (a relative 1e-6) with nothing wrong.
# The check is therefore relative to the outputs' scale, max |torch|. The floor keeps small
# outputs to an absolute 1e-4 (RTOL * SCALE_FLOOR), the bound used before, so near-zero
# logits cannot pass a broken graph.
#: allowed difference, as a fraction of the outputs' scale
DEFAULT_RTOL = 1e-5
#: smallest scale the tolerance is taken of
SCALE_FLOOR = 10.0
#: how the tolerance is measured (stated in each manifest)
TOLERANCE_RULE = "max|onnx - torch| <= rtol * max(floor, max|torch|), on random N(0, 1) input"


def onnx_bytes(model: nn.Module, resolution: int, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialise ``model`` (a static subnet) to ONNX with a dynamic batch dimension.

    Uses torch's TorchScript-based exporter: for these small convolutional graphs it takes
    tens of milliseconds where the dynamo exporter takes seconds (experiments/benchmarks/
    export.py measures both).
    """
    model = model.eval()
    buf = io.BytesIO()
    dummy = torch.zeros(1, 3, resolution, resolution)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (dummy,), buf,  # type: ignore[arg-type]
                dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        except Exception as exc:  # torch raises many types; the user needs one message
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    return buf.getvalue()


def export_onnx(
    model: nn.Module, resolution: int, path: Path | str, opset: int = DEFAULT_OPSET
) -> Path:
    """Write ``model`` to ``path`` as ONNX (input ``input``: (batch, 3, r, r), output
    ``logits``)."""
    path = Path(path)
    path.write_bytes(onnx_bytes(model, resolution, opset))
    return path


def verify_onnx(
    onnx_model: Path | str | bytes, model: nn.Module, resolution: int, *, batch: int = 2,
    rtol: float = DEFAULT_RTOL, floor: float = SCALE_FLOOR, seed: int = 0,
) -> dict[str, Any]:
    """Check the ONNX graph and compare ONNX Runtime's output with torch's on random input.

    The outputs must agree within ``rtol * max(floor, max|torch|)`` (:data:`TOLERANCE_RULE`):
    a tolerance relative to the logits' scale, since float32 rounding grows with it.

    Raises:
        ExportError: if ``onnx.checker`` rejects the graph or the outputs differ by more
            than the tolerance.

    Returns:
        ``max_abs_diff``, ``max_abs_torch`` (the scale), ``rtol``, ``floor``, ``allowed``
        (the bound this check applied), ``rule``, ``batch``, ``provider`` and
        ``output_abs_mean``.
    """
    import onnx
    import onnxruntime as ort

    from nas import _io

    data = (onnx_model if isinstance(onnx_model, bytes)
            else _io.read_bytes(onnx_model, "ONNX model", error=ExportError,
                              limit=_io.MAX_MODEL_BYTES))
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc
    x = np.random.default_rng(seed).standard_normal((batch, 3, resolution, resolution))
    x = x.astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    except Exception as exc:  # onnxruntime's own exception types; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {first[:300]}") from None
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from torch's {want.shape}")
    diff = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    allowed = rtol * max(floor, scale) if np.isfinite(scale) else float("nan")
    if not (np.isfinite(diff) and np.isfinite(allowed)) or diff > allowed:
        raise ExportError(
            f"ONNX Runtime output differs from torch's by {diff:.3g} (allowed {allowed:.3g} = "
            f"rtol {rtol:g} x max({floor:g}, max|torch| {scale:.3g}))"
        )
    return {"max_abs_diff": diff, "max_abs_torch": scale, "rtol": rtol, "floor": floor,
            "allowed": allowed, "rule": TOLERANCE_RULE, "batch": batch,
            "provider": "CPUExecutionProvider", "output_abs_mean": float(np.abs(want).mean())}


def subnet_onnx(supernet: Any, arch: Any) -> bytes:
    """The ONNX model a device times for an ``ofa`` architecture: the subnet extracted from
    ``supernet`` at its resolution, batch axis dynamic (the ``ofa`` family's ``timing_onnx``)."""
    return onnx_bytes(supernet.extract(arch), arch.r)
