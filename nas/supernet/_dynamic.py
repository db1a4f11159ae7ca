"""Elastic modules, following Once-for-All's protocol.

Each holds the weights of its largest setting and slices them for the active one; ``extract``
returns a plain static module with copies of the active weights. Kernel sizes smaller than the
largest come from a centre crop passed through OFA's learnable kernel-transformation matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.supernet._static import MBConv, SqueezeExcite, make_act

__all__ = [
    "DynamicBatchNorm2d",
    "DynamicLinear",
    "DynamicMBConv",
    "DynamicPointwiseConv2d",
    "DynamicSE",
    "DynamicSeparableConv2d",
]


def _centre(kernel: int, sub: int) -> slice:
    c, dev = kernel // 2, sub // 2
    return slice(c - dev, c + dev + 1)


class DynamicPointwiseConv2d(nn.Module):
    """1x1 convolution whose input and output channels are prefixes of the largest weight."""

    def __init__(self, max_in: int, max_out: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        w = self.weight[:out_channels, : x.shape[1]]
        b = self.bias[:out_channels] if self.bias is not None else None
        return F.conv2d(x, w, b)

    def extract(self, in_channels: int, out_channels: int) -> nn.Conv2d:
        conv = nn.Conv2d(in_channels, out_channels, 1, bias=self.bias is not None)
        conv.weight.data.copy_(self.weight.data[:out_channels, :in_channels])
        if self.bias is not None:
            assert conv.bias is not None
            conv.bias.data.copy_(self.bias.data[:out_channels])
        return conv


class DynamicSeparableConv2d(nn.Module):
    """Depthwise convolution with elastic kernel size and channel count.

    Holds the largest kernel; a smaller one is the centre crop of the next larger (already
    transformed) kernel multiplied by a learnable ``k*k x k*k`` matrix, initialised to the
    identity, shared by all channels of the layer (OFA's kernel transformation).
    """

    def __init__(self, max_channels: int, kernel_sizes: Sequence[int], stride: int) -> None:
        super().__init__()
        self.kernel_sizes = sorted(kernel_sizes)
        self.max_kernel = self.kernel_sizes[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        # He init over the real fan-out of a depthwise filter (k*k), not channels*k*k
        nn.init.normal_(self.weight, std=(2.0 / self.max_kernel**2) ** 0.5)
        for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1], strict=True):
            self.register_parameter(f"transform_{big}to{small}", nn.Parameter(torch.eye(small**2)))

    def kernel(self, kernel: int) -> torch.Tensor:
        """The full-channel ``(max_channels, 1, kernel, kernel)`` filter for ``kernel``."""
        w: torch.Tensor = self.weight
        for big, small in zip(self.kernel_sizes[:0:-1], self.kernel_sizes[-2::-1], strict=True):
            if big <= kernel:
                break
            crop = w[:, :, _centre(big, small), _centre(big, small)]
            matrix = getattr(self, f"transform_{big}to{small}")
            w = F.linear(crop.reshape(-1, small * small), matrix).reshape(
                w.shape[0], 1, small, small
            )
        return w

    def active_filter(self, channels: int, kernel: int) -> torch.Tensor:
        # Recomputed at every call, never cached: a cache keyed on parameter versions goes
        # stale after `.data` updates or `load_state_dict(assign=True)`, and the transform
        # costs little (experiments/benchmarks/supernet_overhead.py).
        if kernel == self.max_kernel:
            return self.weight[:channels]
        return self.kernel(kernel)[:channels]

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.active_filter(c, kernel), None, self.stride, kernel // 2, 1, c)

    def extract(self, channels: int, kernel: int) -> nn.Conv2d:
        conv = nn.Conv2d(channels, channels, kernel, self.stride, kernel // 2, groups=channels,
                         bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.kernel(kernel)[:channels])
        return conv


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``c`` channels of the largest one.

    Slices are views, so running statistics of the active channels update in place.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c], self.bias[:c], use_batch, momentum, self.eps,
        )

    def extract(self, channels: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)
        with torch.no_grad():
            bn.weight.copy_(self.weight[:channels])
            bn.bias.copy_(self.bias[:channels])
            assert self.running_mean is not None
            assert self.running_var is not None
            bn.running_mean.copy_(self.running_mean[:channels])  # type: ignore[union-attr]
            bn.running_var.copy_(self.running_var[:channels])  # type: ignore[union-attr]
            bn.num_batches_tracked.copy_(self.num_batches_tracked)  # type: ignore[union-attr,arg-type]
        return bn

    def reorder(self, idx: torch.Tensor) -> None:
        with torch.no_grad():
            for t in (self.weight, self.bias, self.running_mean, self.running_var):
                assert t is not None
                t.copy_(t.index_select(0, idx))


class DynamicSE(nn.Module):
    """Squeeze-excite whose width follows the active channel count."""

    def __init__(self, max_channels: int, mid_of: dict[int, int]) -> None:
        super().__init__()
        self.mid_of = mid_of  # active channels -> SE hidden width
        max_mid = max(mid_of.values())
        self.reduce = DynamicPointwiseConv2d(max_channels, max_mid, bias=True)
        self.expand = DynamicPointwiseConv2d(max_mid, max_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        y = x.mean((2, 3), keepdim=True)  # (b, c, 1, 1)
        y = torch.relu(self.reduce(y, self.mid_of[c]))
        y = F.hardsigmoid(self.expand(y, c))
        return x * y

    def extract(self, channels: int) -> SqueezeExcite:
        mid = self.mid_of[channels]
        se = SqueezeExcite(channels, mid)
        se.reduce = self.reduce.extract(channels, mid)
        se.expand = self.expand.extract(mid, channels)
        return se


class DynamicLinear(nn.Module):
    """Linear layer whose input features are a prefix of the largest weight's."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, max_in))
        self.bias = nn.Parameter(torch.zeros(out_features))
        bound = max_in**-0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)

    def extract(self, in_features: int) -> nn.Linear:
        lin = nn.Linear(in_features, self.weight.shape[0])
        with torch.no_grad():
            lin.weight.copy_(self.weight[:, :in_features])
            lin.bias.copy_(self.bias)
        return lin


class DynamicMBConv(nn.Module):
    """MBConv with elastic kernel size and expand ratio (fixed input/output widths).

    Args:
        mid_of: expand ratio -> hidden width (``make_divisible(round(cin * e), 8)``).
        se_mid_of: hidden width -> SE width, or None for no squeeze-excite.
    """

    def __init__(
        self, cin: int, cout: int, kernel_sizes: Sequence[int], mid_of: dict[int, int],
        stride: int, act: str, se_mid_of: dict[int, int] | None, eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.act_name = cin, cout, stride, act
        self.mid_of = dict(mid_of)
        max_mid = max(self.mid_of.values())
        self.expand_conv = DynamicPointwiseConv2d(cin, max_mid)
        self.expand_bn = DynamicBatchNorm2d(max_mid, eps=eps)
        self.depthwise = DynamicSeparableConv2d(max_mid, kernel_sizes, stride)
        self.depthwise_bn = DynamicBatchNorm2d(max_mid, eps=eps)
        self.se = DynamicSE(max_mid, se_mid_of) if se_mid_of else None
        self.project_conv = DynamicPointwiseConv2d(max_mid, cout)
        self.project_bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = make_act(act)
        self.residual = stride == 1 and cin == cout
        self.active_kernel = max(kernel_sizes)
        self.active_expand = max(self.mid_of)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.mid_of[self.active_expand]
        y = self.act(self.expand_bn(self.expand_conv(x, mid)))  # (b, mid, h, w)
        y = self.act(self.depthwise_bn(self.depthwise(y, self.active_kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.cout))  # (b, cout, h/s, w/s)
        return x + y if self.residual else y

    def extract(self, kernel: int, expand: int) -> MBConv:
        mid = self.mid_of[expand]
        block = MBConv(self.cin, mid, self.cout, kernel, self.stride, self.act_name,
                       self.se.mid_of[mid] if self.se is not None else None,
                       eps=self.project_bn.eps)
        assert block.expand is not None
        block.expand[0] = self.expand_conv.extract(self.cin, mid)
        block.expand[1] = self.expand_bn.extract(mid)
        block.depthwise[0] = self.depthwise.extract(mid, kernel)
        block.depthwise[1] = self.depthwise_bn.extract(mid)
        if self.se is not None:
            block.se = self.se.extract(mid)
        block.project[0] = self.project_conv.extract(mid, self.cout)
        block.project[1].load_state_dict(self.project_bn.state_dict())
        return block

    @torch.no_grad()
    def reorder_channels(self, expand_stage: int = 0) -> None:
        """Sort hidden channels by importance (L1 norm of the projection's input weights).

        OFA does this before each expand-ratio phase so that the channels kept by smaller
        expand ratios are the most important ones. With ``expand_stage`` = k > 0, the channel
        groups already nested by the k largest ratios keep their order relative to each other.
        """
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))  # (max_mid,)
        if expand_stage > 0:
            widths = sorted(self.mid_of.values(), reverse=True)
            right, base = len(importance), -len(widths) * 1e5
            for left in widths[1 : expand_stage + 1]:
                importance[left:right] += base
                base += 1e5
                right = left
        idx = torch.argsort(importance, descending=True)
        self.project_conv.weight.copy_(self.project_conv.weight.index_select(1, idx))
        self.depthwise_bn.reorder(idx)
        self.depthwise.weight.copy_(self.depthwise.weight.index_select(0, idx))
        if self.se is not None:
            se_imp = self.se.expand.weight.abs().sum(dim=(0, 2, 3))
            se_idx = torch.argsort(se_imp, descending=True)
            self.se.expand.weight.copy_(self.se.expand.weight.index_select(1, se_idx))
            self.se.reduce.weight.copy_(self.se.reduce.weight.index_select(0, se_idx))
            assert self.se.reduce.bias is not None
            assert self.se.expand.bias is not None
            self.se.reduce.bias.copy_(self.se.reduce.bias.index_select(0, se_idx))
            self.se.reduce.weight.copy_(self.se.reduce.weight.index_select(1, idx))
            self.se.expand.weight.copy_(self.se.expand.weight.index_select(0, idx))
            self.se.expand.bias.copy_(self.se.expand.bias.index_select(0, idx))
        self.expand_bn.reorder(idx)
        self.expand_conv.weight.copy_(self.expand_conv.weight.index_select(0, idx))

