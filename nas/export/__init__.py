"""Export of subnets: ONNX + weights + manifest, verified against torch."""

from nas.export._onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, onnx_bytes, verify_onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "onnx_bytes", "verify_onnx"]
