"""Elastic modules, the once-for-all supernet, subnet extraction and checkpoints."""

from nas.supernet._checkpoint import load_supernet, read_checkpoint_meta, save_supernet
from nas.supernet._dynamic import (
    DynamicBatchNorm2d,
    DynamicLinear,
    DynamicMBConv,
    DynamicPointwiseConv2d,
    DynamicSE,
    DynamicSeparableConv2d,
)
from nas.supernet._ofa import OFASupernet
from nas.supernet._static import MBConv, SqueezeExcite, SubNet, conv_bn_act

__all__ = [
    "DynamicBatchNorm2d",
    "DynamicLinear",
    "DynamicMBConv",
    "DynamicPointwiseConv2d",
    "DynamicSE",
    "DynamicSeparableConv2d",
    "MBConv",
    "OFASupernet",
    "SqueezeExcite",
    "SubNet",
    "conv_bn_act",
    "load_supernet",
    "read_checkpoint_meta",
    "save_supernet",
]
