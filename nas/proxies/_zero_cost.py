"""Analytic and zero-cost proxies: ``params``, ``macs``, ``synflow``, ``naswot``, ``zico``.

Signs (fixed here, higher = predicted better):

``params``, ``macs``
    Larger subnets of one supernet are, as a rule, more accurate: the count itself.
``synflow`` (Tanaka et al., 2020; as a NAS proxy Abdelfattah et al., ICLR 2021)
    ``log sum |theta * dR/dtheta|`` with ``R`` the summed output of the network with absolute
    weights and BatchNorm as identity on an all-ones input, in float64. Higher is better.
``naswot`` (Mellor et al., ICML 2021)
    ``log |det K|``, ``K`` the Hamming-similarity kernel of the binary activation codes of a
    batch of images (ReLU and h-swish units: active when > 0). Higher is better.
``zico`` (Li et al., ICLR 2023)
    Sum over layers of ``log sum_theta mean|g| / std(g)``, gradients over a few batches of
    training images with cross-entropy. Higher is better.

The zero-cost proxies use, by default (``weights=init``), the subnet's weights in a randomly
initialised supernet (seeded by the context, the same for every architecture), as they were
published; ``weights=inherited`` scores the subnet with the trained supernet's weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nas.proxies._base import Proxy, ProxyContext, register_proxy
from nas.space import ArchArrays, Architecture, SearchSpace

if TYPE_CHECKING:  # torch when a zero-cost proxy scores: `params` and `macs` need none
    import torch
    from torch import nn

__all__ = ["MacsProxy", "NaswotProxy", "ParamsProxy", "SynflowProxy", "ZicoProxy"]


class _CostProxy(Proxy):
    """An analytic cost of the subnet (``space.costs``) as its score: no model, so it also
    scores arrays at predictor speed."""

    cost: ClassVar[str] = ""
    cacheable = False
    tags = frozenset({"ofa"})

    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        return ctx.space.costs(archs)[self.cost].astype(np.float64)

    def array_scorer(self, space: SearchSpace) -> Callable[[ArchArrays], np.ndarray]:
        return lambda a: space.costs(a)[self.cost].astype(np.float64)


@register_proxy
class ParamsProxy(_CostProxy):
    name = "params"
    description = "parameter count of the subnet (analytic; more = better)"
    cost = "params"


@register_proxy
class MacsProxy(_CostProxy):
    name = "macs"
    description = "multiply-accumulates at the subnet's resolution (analytic; more = better)"
    cost = "macs"


class _ZeroCost(Proxy):
    """A score of the subnet's weights in a supernet of the OFA family (random by default,
    ``weights=inherited``: the trained one)."""

    tags = frozenset({"ofa"})
    options: ClassVar[dict[str, Any]] = {"weights": "init"}
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"weights": ("init", "inherited")}

    def _subnet(self, arch: Architecture, ctx: ProxyContext) -> nn.Module:
        src = (ctx.require_supernet(f"proxy {self.spec!r}") if self.opts["weights"] == "inherited"
               else ctx.init_supernet())
        sub: nn.Module = src.extract(arch).to(ctx.device)
        for p in sub.parameters():
            p.requires_grad_(True)
        return sub

    def _score(self, archs: Sequence[Architecture], ctx: ProxyContext) -> np.ndarray:
        import torch

        out = np.empty(len(archs))
        for i, arch in enumerate(archs):
            with torch.random.fork_rng():
                torch.manual_seed(ctx.seed)
                out[i] = self._one(self._subnet(arch, ctx), arch, ctx)
        return out

    def _one(self, sub: nn.Module, arch: Architecture, ctx: ProxyContext) -> float:
        raise NotImplementedError


@register_proxy
class SynflowProxy(_ZeroCost):
    name = "synflow"
    description = "log synaptic flow: absolute weights, all-ones input (data-free)"

    def _one(self, sub: nn.Module, arch: Architecture, ctx: ProxyContext) -> float:
        import torch
        from torch import nn

        sub = sub.double().eval()
        with torch.no_grad():
            for m in sub.modules():
                if isinstance(m, nn.BatchNorm2d):  # BatchNorm as identity
                    m.reset_running_stats()
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            for p in sub.parameters():
                p.abs_()
        x = torch.ones(1, 3, arch.r, arch.r, dtype=torch.float64, device=ctx.device)
        sub.zero_grad()
        sub(x).sum().backward()
        total = 0.0
        with torch.no_grad():
            for m in sub.modules():
                if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.grad is not None:
                    total += float((m.weight * m.weight.grad).abs().sum())
        # log keeps the score in range (e^144 for the largest cifar_mbv3 subnet); 0 or an
        # overflow gives a non-finite score, which Proxy.score reports as an error
        return math.log(total) if total > 0 else float("-inf")


@register_proxy
class NaswotProxy(_ZeroCost):
    name = "naswot"
    description = "log|det| of the activation-code kernel of a batch (Mellor 2021)"
    options: ClassVar[dict[str, Any]] = {"weights": "init", "batch_size": 64}
    needs_data = True

    def _one(self, sub: nn.Module, arch: Architecture, ctx: ProxyContext) -> float:
        import torch
        from torch import nn

        x, _y = ctx.train_batches(arch.r, 1, self.opts["batch_size"])[0]
        b = x.shape[0]
        kernel = torch.zeros(b, b, dtype=torch.float64, device=ctx.device)

        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            c = (out.detach() > 0).reshape(b, -1).double()  # (b, units)
            kernel.add_(c @ c.T + (1 - c) @ (1 - c).T)

        handles = [m.register_forward_hook(hook) for m in sub.modules()
                   if isinstance(m, nn.ReLU | nn.Hardswish)]
        try:
            sub.train()
            with torch.no_grad():
                sub(x)
        finally:
            for h in handles:
                h.remove()
        k = kernel.cpu().numpy()
        sign, logdet = np.linalg.slogdet(k)
        if sign <= 0 or not np.isfinite(logdet):  # identical codes: a tiny ridge
            sign, logdet = np.linalg.slogdet(k + 1e-6 * np.trace(k) / b * np.eye(b))
        return float(logdet)


@register_proxy
class ZicoProxy(_ZeroCost):
    name = "zico"
    description = "sum over layers of log(mean|grad| / std(grad)) (Li 2023)"
    options: ClassVar[dict[str, Any]] = {"weights": "init", "batch_size": 64, "batches": 2}
    needs_data = True

    def _one(self, sub: nn.Module, arch: Architecture, ctx: ProxyContext) -> float:
        import torch
        import torch.nn.functional as F
        from torch import nn

        batches = ctx.train_batches(arch.r, max(2, self.opts["batches"]),
                                    self.opts["batch_size"])
        layers = [(n, m) for n, m in sub.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        grads: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
        sub.train()
        for x, y in batches:
            sub.zero_grad()
            F.cross_entropy(sub(x), y).backward()
            for n, m in layers:
                if m.weight.grad is not None:
                    grads[n].append(m.weight.grad.detach().reshape(-1).double().clone())
        score = 0.0
        for gs in grads.values():
            if len(gs) < 2:
                continue
            g = torch.stack(gs)  # (batches, params)
            std = g.std(0, unbiased=False)
            nz = std > 0
            ratio = float((g.abs().mean(0)[nz] / std[nz]).sum())
            if ratio > 0:
                score += math.log(ratio)
        return score
