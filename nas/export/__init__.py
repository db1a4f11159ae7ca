"""Export of subnets: ONNX + weights + manifest, verified against torch."""

from nas.export._onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_bytes, verify_onnx
from nas.export._package import (
    MANIFEST_FORMAT,
    ExportResult,
    export_subnet,
    load_export,
    sha256_file,
    verify_export,
)

__all__ = [
    "INPUT_NAME",
    "MANIFEST_FORMAT",
    "OUTPUT_NAME",
    "ExportResult",
    "export_onnx",
    "export_subnet",
    "load_export",
    "onnx_bytes",
    "sha256_file",
    "verify_export",
    "verify_onnx",
]
