"""The once-for-all MobileNetV3-family supernet (OFA's MobileNetV3 and ProxylessNAS layouts)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.space import Architecture, SearchSpace, get_space
from nas.supernet._dynamic import DynamicLinear, DynamicMBConv
from nas.supernet._static import MBConv, SubNet, conv_bn_act, make_act

__all__ = ["OFASupernet"]


class OFASupernet(nn.Module):
    """Elastic kernel size, expand ratio and depth; any input resolution of its space.

    Modules: ``stem``, ``first_block``, ``blocks`` (one per layer slot of the space, the
    fixed-depth last stage's included), then the head: ``final_expand`` (None in the
    ProxylessNAS layout), ``feature_mix`` (conv + act after the pooling, or conv + BN + act
    before it with ``spec.head.feature_mix_before_pool``) and ``classifier``.

    Example:
        >>> net = OFASupernet("cifar_mbv3")
        >>> arch = net.sample_active(seed=0)
        >>> sub = net.extract(arch)  # plain nn.Module with copied weights
    """

    def __init__(self, space: str | SearchSpace) -> None:
        super().__init__()
        self.space = get_space(space)
        sp = self.space.spec
        eps = sp.bn_eps
        self.stem = conv_bn_act(3, sp.stem.channels, sp.stem.kernel, sp.stem.stride, sp.stem.act,
                                eps=eps)
        fb = sp.first_block
        c0 = sp.stem.channels
        self.first_block = MBConv(
            c0, c0, fb.channels, fb.kernel, fb.stride, fb.act,
            self.space.se_channels(c0) if fb.se else None, has_expand=False, eps=eps,
        )
        blocks = []
        for _s, _i, cin, cout, stride, se in self.space.layer_plan:
            st = sp.stages[_s]
            mid_of = {e: self.space.mid_channels(cin, e) for e in self.space.expand_ratios}
            se_mid_of = {m: self.space.se_channels(m) for m in mid_of.values()} if se else None
            blocks.append(DynamicMBConv(cin, cout, self.space.kernel_sizes, mid_of, stride,
                                        st.act, se_mid_of, eps=eps))
        self.blocks = nn.ModuleList(blocks)
        last, head = sp.stages[-1].channels, sp.head
        self.final_expand: nn.Module | None = None
        if head.final_expand is None:  # ProxylessNAS: conv + BN + act, then the pooling
            self.feature_mix: nn.Module = conv_bn_act(last, head.feature_mix, 1, 1, head.act,
                                                      eps=eps)
        else:  # MobileNetV3: final expand, pooling, feature mix without BN
            self.final_expand = conv_bn_act(last, head.final_expand, 1, 1, head.act, eps=eps)
            self.feature_mix = nn.Sequential(
                nn.Conv2d(head.final_expand, head.feature_mix, 1, bias=False),
                make_act(head.act))
        self.mix_before_pool = head.feature_mix_before_pool
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(sp.head.dropout)
        self.classifier = DynamicLinear(sp.head.feature_mix, sp.num_classes)
        self._init_weights()
        # What the checkpoint this net was read from (or the OFA file it was converted from)
        # recorded; empty for a new net.
        self.checkpoint_meta: dict[str, Any] = {}
        self.active_arch: Architecture = self.space.largest()
        self.set_active(self.active_arch)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ elastic control
    def set_active(self, arch: Architecture | dict[str, Any] | str) -> Architecture:
        """Make ``arch`` the subnet that ``forward`` runs; returns it in canonical form."""
        arch = self.space.parse(arch)
        for block, k, e in zip(self.blocks, arch.ks, arch.e, strict=True):
            assert isinstance(block, DynamicMBConv)
            block.active_kernel, block.active_expand = k, e
        self.active_arch = arch
        return arch

    def sample_active(self, seed: int | np.random.Generator | None = None) -> Architecture:
        """Activate a random architecture (uniform per choice) and return it."""
        return self.set_active(self.space.sample(seed))

    def set_largest(self) -> Architecture:
        return self.set_active(self.space.largest())

    def set_smallest(self) -> Architecture:
        return self.set_active(self.space.smallest())

    def active_blocks(self) -> list[DynamicMBConv]:
        md = self.space.max_depth
        out: list[DynamicMBConv] = []
        for s, depth in enumerate(self.space.stage_depths(self.active_arch)):
            out.extend(self.blocks[s * md + i] for i in range(depth))  # type: ignore[misc]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (b, c0, r/2, r/2)
        x = self.first_block(x)
        for block in self.active_blocks():
            x = block(x)
        if self.final_expand is not None:
            x = self.final_expand(x)
        if self.mix_before_pool:
            x = self.feature_mix(x)  # (b, feature_mix, h, w)
        x = self.pool(x)  # (b, c, 1, 1)
        if not self.mix_before_pool:
            x = self.feature_mix(x)
        x = torch.flatten(x, 1)  # (b, feature_mix)
        return self.classifier(self.dropout(x))

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract(self, arch: Architecture | dict[str, Any] | str | None = None) -> SubNet:
        """A static copy of ``arch`` (default: the active one) with its current weights.

        The result has no elastic code: plain Conv2d, BatchNorm2d, Linear and activations,
        ready for ``torch.onnx.export``. It is in the same train/eval mode as the supernet.
        ``arch`` may have a resolution off the search grid (a deployment choice: the subnet
        runs at any input size).
        """
        arch = self.active_arch if arch is None else self.space.parse(arch, off_grid=True)
        md = self.space.max_depth
        blocks: list[nn.Module] = [copy.deepcopy(self.first_block)]
        for s, depth in enumerate(self.space.stage_depths(arch)):
            for i in range(depth):
                j = s * md + i
                block = self.blocks[j]
                assert isinstance(block, DynamicMBConv)
                blocks.append(block.extract(arch.ks[j], arch.e[j]))
        sub = SubNet(
            copy.deepcopy(self.stem), blocks, copy.deepcopy(self.final_expand),
            copy.deepcopy(self.feature_mix),
            self.classifier.extract(self.space.spec.head.feature_mix),
            self.space.spec.head.dropout, space=self.space.name, arch=arch.to_dict(),
            mix_before_pool=self.mix_before_pool,
        )
        return sub.train(self.training)

    @torch.no_grad()
    def calibrate_random(self, n_batches: int = 2, batch_size: int = 8, seed: int = 0) -> None:
        """Set BatchNorm statistics from random inputs through the largest subnet.

        For randomly initialised supernets only: their eval-mode outputs are then of the
        order of 1 rather than vanishing, so exports of them verify something.
        """
        gen = torch.Generator().manual_seed(seed)
        was_training, arch = self.training, self.active_arch
        self.set_largest()
        bns = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        self.train()
        r = max(self.space.resolutions)
        for _ in range(n_batches):
            self(torch.randn(batch_size, 3, r, r, generator=gen))
        for bn in bns:
            bn.momentum = 0.1
        self.train(was_training)
        self.set_active(arch)

    @torch.no_grad()
    def reorder_channels(self, expand_stage: int = 0) -> None:
        """Sort every block's hidden channels by importance (OFA, before width shrinking)."""
        for block in self.blocks:
            assert isinstance(block, DynamicMBConv)
            block.reorder_channels(expand_stage)


def random_ofa_supernet(space: Any) -> OFASupernet:
    """A randomly initialised supernet of ``space`` with BatchNorm statistics from random
    inputs, in eval mode: what latency is measured on (it does not depend on the weights;
    the ``ofa`` family's ``timing_supernet``)."""
    net = OFASupernet(space)
    net.calibrate_random(n_batches=1, batch_size=4)
    return net.eval()
