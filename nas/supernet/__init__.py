"""Elastic modules, the once-for-all supernet, subnet extraction and checkpoints.

Submodules are imported on first use of a name (torch is slow to import), so commands that
need none of it (`nas --help`) stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.supernet._checkpoint import load_supernet, read_checkpoint_meta, save_supernet
    from nas.supernet._convert import (
        OFA_SPACES,
        export_ofa_checkpoint,
        import_ofa_checkpoint,
        ofa_state_dict,
        read_ofa_state_dict,
    )
    from nas.supernet._dynamic import (
        DynamicBatchNorm2d,
        DynamicLinear,
        DynamicMBConv,
        DynamicPointwiseConv2d,
        DynamicSE,
        DynamicSeparableConv2d,
    )
    from nas.supernet._gpt import GPT, GPTSupernet
    from nas.supernet._hf import (
        export_hf_gpt2,
        import_hf_gpt2,
        load_gpt_supernet,
        read_gpt_checkpoint_meta,
        save_gpt_supernet,
    )
    from nas.supernet._ofa import OFASupernet
    from nas.supernet._static import (
        MBConv,
        SqueezeExcite,
        SubNet,
        conv_bn_act,
    )
    from nas.supernet._subclone import (
        Importance,
        apply_importance,
        measure_importance,
        reorder_by_importance,
        subclone,
    )

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.supernet._checkpoint": [
            "load_supernet",
            "read_checkpoint_meta",
            "save_supernet",
        ],
        "nas.supernet._convert": [
            "OFA_SPACES",
            "export_ofa_checkpoint",
            "import_ofa_checkpoint",
            "ofa_state_dict",
            "read_ofa_state_dict",
        ],
        "nas.supernet._dynamic": [
            "DynamicBatchNorm2d",
            "DynamicLinear",
            "DynamicMBConv",
            "DynamicPointwiseConv2d",
            "DynamicSE",
            "DynamicSeparableConv2d",
        ],
        "nas.supernet._gpt": [
            "GPT",
            "GPTSupernet",
        ],
        "nas.supernet._hf": [
            "export_hf_gpt2",
            "import_hf_gpt2",
            "load_gpt_supernet",
            "read_gpt_checkpoint_meta",
            "save_gpt_supernet",
        ],
        "nas.supernet._ofa": [
            "OFASupernet",
        ],
        "nas.supernet._static": [
            "MBConv",
            "SqueezeExcite",
            "SubNet",
            "conv_bn_act",
        ],
        "nas.supernet._subclone": [
            "Importance",
            "apply_importance",
            "measure_importance",
            "reorder_by_importance",
            "subclone",
        ],
    },
)
