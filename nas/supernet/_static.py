"""Plain, static modules: the layers an extracted subnet is made of (no elastic code)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["MBConv", "SqueezeExcite", "SubNet", "conv_bn_act", "make_act"]


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "h_swish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"activation must be one of ['relu', 'relu6', 'h_swish'], got {name!r}")


def conv_bn_act(
    cin: int, cout: int, kernel: int, stride: int, act: str | None, groups: int = 1,
    eps: float = 1e-5,
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=eps),
    ]
    if act is not None:
        layers.append(make_act(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-excite as in MobileNetV3: mean pool, 1x1 reduce, ReLU, 1x1 expand, h-sigmoid."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)  # (b, c, 1, 1)
        y = torch.relu(self.reduce(y))
        y = nn.functional.hardsigmoid(self.expand(y))
        return x * y


class MBConv(nn.Module):
    """Inverted-residual block: [1x1 expand] -> kxk depthwise [-> SE] -> 1x1 project."""

    def __init__(
        self, cin: int, mid: int, cout: int, kernel: int, stride: int, act: str,
        se_mid: int | None, has_expand: bool = True, eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.expand = conv_bn_act(cin, mid, 1, 1, act, eps=eps) if has_expand else None
        self.depthwise = conv_bn_act(mid, mid, kernel, stride, act, groups=mid, eps=eps)
        self.se = SqueezeExcite(mid, se_mid) if se_mid else None
        self.project = conv_bn_act(mid, cout, 1, 1, None, eps=eps)
        self.residual = stride == 1 and cin == cout
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x  # (b, mid, h, w)
        y = self.depthwise(y)  # (b, mid, h/s, w/s)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)  # (b, cout, h/s, w/s)
        return x + y if self.residual else y


class SubNet(nn.Module):
    """A static MobileNetV3-family network, as extracted from a supernet.

    The head is MobileNetV3's (``final_expand``, pooling, ``feature_mix``) or, with
    ``final_expand`` None and ``mix_before_pool``, ProxylessNAS's (``feature_mix``, pooling).

    Attributes:
        arch: the architecture in OFA's format (a plain dict), for manifests.
        space: the search space's name.
    """

    def __init__(
        self, stem: nn.Module, blocks: list[nn.Module], final_expand: nn.Module | None,
        feature_mix: nn.Module, classifier: nn.Linear, dropout: float,
        space: str = "", arch: dict[str, Any] | None = None, mix_before_pool: bool = False,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.final_expand = final_expand
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_mix = feature_mix
        self.mix_before_pool = mix_before_pool
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier
        self.space = space
        self.arch = dict(arch or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (b, c0, r/2, r/2)
        x = self.blocks(x)
        if self.final_expand is not None:
            x = self.final_expand(x)
        if self.mix_before_pool:
            x = self.feature_mix(x)  # (b, feature_mix, h, w)
        x = self.pool(x)  # (b, c, 1, 1)
        if not self.mix_before_pool:
            x = self.feature_mix(x)
        x = torch.flatten(x, 1)  # (b, feature_mix)
        return self.classifier(self.dropout(x))
