"""Evaluation of subnets: BatchNorm recalibration and accuracy on a split.

A subnet's BatchNorm statistics in the supernet are those of whatever subnets ran last, so
every evaluation first recalibrates them on a few training batches of that subnet
(Once-for-All's ``set_running_statistics``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import DataError
from nas.space import Architecture
from nas.train._data import BatchLoader, DataSplits, ImageSet, Preprocess

__all__ = ["evaluate", "evaluate_subnet", "middle_arch", "recalibrate_bn", "subnet_by_name"]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    arch: Architecture | dict[str, Any] | str | None,
    loader: Iterable[Any],
    n_batches: int = 8,
    *,
    preprocess: Preprocess | None = None,
) -> int:
    """Reset every BatchNorm's running statistics and set them from ``n_batches`` batches.

    The statistics become the cumulative average over the batches (momentum ``None``) of the
    subnet ``arch``, which is activated first when ``model`` is a supernet. Parameters are not
    touched; ``model`` keeps its train/eval mode.

    Args:
        model: an ``OFASupernet`` or an extracted ``SubNet`` (then ``arch`` only sets the
            resolution and may be None).
        loader: batches ``x`` or ``(x, y, ...)``; ``x`` float and normalised, resized to
            ``arch.r`` when its size differs, or uint8 when ``preprocess`` is given.
        preprocess: turns uint8 batches into inputs at resolution ``arch.r``.

    Returns:
        The number of batches used.

    Raises:
        DataError: ``loader`` yielded no batch.
    """
    set_active = getattr(model, "set_active", None)
    if callable(set_active) and arch is not None:
        arch = set_active(arch)
    r = arch.r if isinstance(arch, Architecture) else None
    if r is None and isinstance(arch, dict):
        r = int(arch["r"])
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    used = 0
    try:
        for batch in loader:
            if used >= n_batches:
                break
            x = batch[0] if isinstance(batch, list | tuple) else batch
            if preprocess is not None:
                if r is None:
                    raise ValueError("recalibrate_bn needs arch (for its resolution) with "
                                     "preprocess")
                x = preprocess(x, r)
            else:
                x = x.to(device)
                if r is not None and x.shape[-1] != r:
                    x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False,
                                      antialias=True)
            model(x)
            used += 1
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        model.train(was_training)
    if used == 0:
        raise DataError("BatchNorm recalibration got no batches (empty training set?)")
    return used


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageSet, r: int, preprocess: Preprocess, *,
    batch_size: int = 256, limit: int | None = None,
) -> dict[str, float]:
    """Top-1 accuracy (a fraction) and mean cross-entropy of ``model`` on ``data`` at ``r``.

    ``model`` runs in eval mode and is left in eval mode.
    """
    model.eval()
    loader = BatchLoader(data, batch_size, limit=limit)
    correct, loss, n = 0, 0.0, 0
    device = next(model.parameters()).device
    for xb, yb in loader.epoch(0):
        x = preprocess(xb, r)
        y = yb.to(device)
        out = model(x)  # (b, classes)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    if n == 0:
        raise DataError("evaluation set is empty")
    return {"acc": correct / n, "loss": loss / n, "n": float(n)}


def evaluate_subnet(
    supernet: Any,
    arch: Architecture | dict[str, Any] | str,
    data: DataSplits,
    *,
    split: str = "val",
    preprocess: Preprocess | None = None,
    bn_batches: int = 8,
    bn_batch_size: int = 128,
    batch_size: int = 256,
    limit: int | None = None,
    seed: int = 0,
    channels_last: bool = True,
) -> dict[str, float]:
    """Accuracy of a subnet with inherited weights after BatchNorm recalibration.

    The subnet is extracted (the supernet is not modified), its BatchNorm statistics are set
    from ``bn_batches`` training batches (a fixed, seeded sample, without augmentation), and it
    is evaluated on ``split`` (``"val"`` or ``"test"``).

    Returns:
        ``acc`` (a fraction), ``loss``, ``n``.
    """
    space = supernet.space
    parsed: Architecture = space.parse(arch)
    target = data.val if split == "val" else data.test if split == "test" else None
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if target is None or len(target) == 0:
        raise DataError(f"{data.source} has no {split} images")
    device = next(supernet.parameters()).device
    pre = preprocess or Preprocess.for_space(space, channels_last=channels_last, device=device)
    sub = supernet.extract(parsed).to(device)
    if channels_last:
        sub = sub.to(memory_format=torch.channels_last)
    loader = BatchLoader(data.train, bn_batch_size, shuffle=True, seed=seed)
    recalibrate_bn(sub, parsed, loader.epoch(0), bn_batches, preprocess=pre)
    return evaluate(sub, target, parsed.r, pre, batch_size=batch_size, limit=limit)


def middle_arch(space: Any) -> Architecture:
    """The subnet with every dimension at its middle choice (and the middle resolution)."""
    return space.middle()  # type: ignore[no-any-return]


def subnet_by_name(space: Any, name: str) -> Architecture:
    """``largest``, ``smallest`` or ``middle``."""
    if name == "largest":
        return space.largest()  # type: ignore[no-any-return]
    if name == "smallest":
        return space.smallest()  # type: ignore[no-any-return]
    if name == "middle":
        return middle_arch(space)
    raise ValueError(f"subnet name must be one of ['largest', 'smallest', 'middle'], got "
                     f"{name!r}")
