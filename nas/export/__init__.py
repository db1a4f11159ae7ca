"""Export of subnets: ONNX + weights + manifest, verified against torch.

Submodules are imported on first use of a name (torch is slow to import), so commands that
need none of it (`nas --help`) stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.export._gpt import (
        DEFAULT_NEW_TOKENS,
        GENAI_CONFIG_FILE,
        GPT_EXPORT_FILES,
        GPT_MANIFEST_FORMAT,
        GPT_TOLERANCE_RULE,
        export_gpt_subnet,
        gpt_onnx_bytes,
        onnx_greedy,
        verify_gpt_export,
        verify_gpt_onnx,
    )
    from nas.export._onnx import (
        DEFAULT_RTOL,
        INPUT_NAME,
        OUTPUT_NAME,
        SCALE_FLOOR,
        TOLERANCE_RULE,
        export_onnx,
        onnx_bytes,
        verify_onnx,
    )
    from nas.export._package import (
        MANIFEST_FORMAT,
        ExportResult,
        check_export_out,
        export_subnet,
        load_export,
        sha256_file,
        verify_export,
    )

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.export._gpt": [
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
        ],
        "nas.export._onnx": [
            "DEFAULT_RTOL",
            "INPUT_NAME",
            "OUTPUT_NAME",
            "SCALE_FLOOR",
            "TOLERANCE_RULE",
            "export_onnx",
            "onnx_bytes",
            "verify_onnx",
        ],
        "nas.export._package": [
            "MANIFEST_FORMAT",
            "ExportResult",
            "check_export_out",
            "export_subnet",
            "load_export",
            "sha256_file",
            "verify_export",
        ],
    },
)
