"""The training loop shared by supernet training and fine-tuning.

Both train with the same recipe, built here once: SGD with Nesterov momentum and no weight
decay on BatchNorm parameters and biases (:func:`make_optimizer`), a learning rate warmed up
linearly and then decayed to 0 by a cosine (:class:`Schedule`), cross-entropy with label
smoothing plus knowledge distillation (:func:`kd_loss`), and one epoch/step loop
(:class:`TrainingLoop`) with its progress bar or log lines, seeding and data parallelism.

What differs is what a step trains, a hook of the subclass: supernet training
(:class:`~nas.train.Trainer`) draws a resolution and several subnets per step (progressive
shrinking, the sandwich rule) and distils from a frozen teacher or in place from the largest
subnet; fine-tuning (:func:`~nas.train.finetune`) trains one static subnet at its resolution,
distilled from its supernet's largest subnet when there is a teacher. Fine-tuning is phase 0
of this loop: the same seed, data and settings give it the batches, augmentation, dropout and
learning rates a one-phase supernet run has.

Everything random is seeded by (seed, phase, epoch, step), so a run resumed from the
checkpoint of an epoch does what the uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.train._config import DistillConfig, OptimConfig, PhaseConfig
from nas.train._data import BatchLoader, Preprocess

__all__ = ["EpochStats", "Schedule", "TrainingLoop", "epoch_seed", "kd_loss", "make_adamw",
           "make_optimizer", "soft_targets"]


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    """The seed of an epoch's batch order (distinct per phase and epoch)."""
    return int(np.random.default_rng([seed, phase, epoch]).integers(2**31))


# ---------------------------------------------------------------------- the recipe
def make_optimizer(net: nn.Module, optim: OptimConfig) -> torch.optim.SGD:
    """SGD over the trainable parameters of ``net`` as ``optim`` says.

    Parameters of one dimension (BatchNorm weights and biases, biases) get no weight decay
    when ``optim.no_decay_bn_bias`` (OFA's ``no_decay_keys``). The learning rate is 0 until
    the loop sets it at every step from its :class:`Schedule`.
    """
    groups = _decay_groups(net, optim.no_decay_bn_bias, optim.weight_decay)
    return torch.optim.SGD(groups, lr=0.0, momentum=optim.momentum,
                           nesterov=optim.nesterov and optim.momentum > 0)


def _decay_groups(net: nn.Module, no_decay_1d: bool,
                  weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in net.parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_decay_1d and p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(net: nn.Module, *, weight_decay: float, betas: tuple[float, float]
               ) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``net`` (the language models' optimizer):
    weight decay on matrices and embeddings, none on parameters of one dimension (LayerNorm
    weights, biases). The learning rate is set at every step by the loop."""
    return torch.optim.AdamW(_decay_groups(net, True, weight_decay), lr=0.0, betas=betas)


@dataclass(frozen=True)
class Schedule:
    """The learning rate of a phase: ``warmup_epochs`` of linear warm-up to ``lr``, then a
    cosine to 0 over the rest of its ``epochs``."""

    lr: float
    epochs: int
    warmup_epochs: float = 0.0
    #: the warm-up in steps (instead of ``warmup_epochs``), for runs counted in steps
    warmup_steps: int | None = None

    @classmethod
    def of(cls, phase: PhaseConfig) -> Schedule:
        return cls(phase.lr, phase.epochs, phase.warmup_epochs)

    def lr_at(self, epoch: int, batch: int, steps_per_epoch: int) -> float:
        """The learning rate of step ``batch`` of ``epoch`` (both from 0)."""
        t, total = epoch * steps_per_epoch + batch, self.epochs * steps_per_epoch
        warm = (int(self.warmup_epochs * steps_per_epoch) if self.warmup_steps is None
                else self.warmup_steps)
        if t < warm:
            return self.lr * (t + 1) / warm
        return 0.5 * self.lr * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm)))


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """A teacher's class probabilities at ``temperature`` ``(b, classes)``."""
    return F.softmax(teacher_logits / temperature, dim=1)


def kd_loss(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of a student's ``logits`` against soft targets (OFA's
    ``cross_entropy_loss_with_soft_target``), scaled by ``temperature**2``."""
    logp = F.log_softmax(logits / temperature, dim=1)
    return -(soft * logp).sum(1).mean() * temperature**2


# ---------------------------------------------------------------------- the loop
@dataclass
class EpochStats:
    """What an epoch of :meth:`TrainingLoop.train_epoch` did."""

    loss: float  # mean training loss over its steps
    lr: float  # the learning rate of its last step
    steps: int
    images: int  # over all workers
    seconds: float


class TrainingLoop:
    """The epoch and step loop; a subclass says what a step trains.

    A subclass sets ``net`` (the module whose parameters are trained), ``loader`` (training
    batches of uint8 images) and ``pre`` (their augmentation and normalisation) before the
    first epoch, and implements :meth:`_draw`, :meth:`_forward` and :meth:`_diverged`.

    Args:
        seed: seeds batch order, augmentation, subnets and dropout with (phase, epoch, step).
        batch_size: images per step and worker (for the images/s of log lines).
        optim: optimizer, label smoothing and gradient clipping.
        distill: distillation weight and temperature (``kd_ratio`` 0: none).
        device: where the batches go.
        rank, world_size: this process's place in a data-parallel group; gradients are
            averaged over the group with ``torch.distributed`` (initialised by the caller).
            Only rank 0 shows progress.
        progress: show a rich progress bar (rank 0). Without one, rank 0 says a plain line
            (step, loss, images/s, time left in the epoch) every ``log_every_s`` seconds, so
            the log of a run in the background shows it moving between epochs.
        console: a rich console for messages (None: no messages).
    """

    net: nn.Module
    loader: BatchLoader
    pre: Preprocess
    #: what a batch holds, for log lines: ``img`` (images), ``tok`` (tokens)
    unit: str = "img"

    def __init__(
        self, *, seed: int, batch_size: int, optim: OptimConfig, distill: DistillConfig,
        device: torch.device, rank: int = 0, world_size: int = 1, progress: bool = True,
        console: Any = None, log_every_s: float = 300.0,
    ) -> None:
        self.seed, self.batch_size = seed, batch_size
        self.optim, self.distill = optim, distill
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.main = rank == 0
        self.show_progress = progress and self.main
        self.console = console
        self.log_every_s = log_every_s

    # ------------------------------------------------------------------ what a step trains
    def _draw(self, phase: int, rng: np.random.Generator) -> tuple[int, Sequence[Any]]:
        """The resolution of a step and the subnets it trains (each one forward and backward,
        gradients accumulated), drawn from the step's ``rng``."""
        raise NotImplementedError

    def _forward(self, subnet: Any, x: torch.Tensor) -> torch.Tensor:
        """The logits ``(b, classes)`` of ``subnet`` (one of :meth:`_draw`'s) on ``x``."""
        raise NotImplementedError

    def _diverged(self, value: float, where: tuple[int, int, int],
                  subnets: Sequence[Any]) -> NoReturn:
        """Stop the run: the loss of step ``where`` (phase, epoch, batch) is ``value``, not
        finite."""
        raise NotImplementedError

    def _after_step(self, loss: float) -> None:
        """Called after every optimizer step with its loss."""

    def _inputs(self, xb: torch.Tensor, yb: torch.Tensor, r: int,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch as the model takes it and its targets: images preprocessed at
        resolution ``r`` (augmented with ``gen``) and their labels. A language model's are
        tokens and the next tokens, flattened: every position is a prediction."""
        return self.pre(xb, r, train=True, generator=gen), yb.to(self.device)  # (b, 3, r, r)

    def _stop_now(self) -> bool:
        """Asked after every step: True ends the epoch there (a time budget ran out)."""
        return False

    def _items(self, batch: int) -> int:
        """Items (images, tokens) in a batch of ``batch`` examples, for the rate in logs."""
        return batch

    # ------------------------------------------------------------------ the loop
    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.net, self.optim)

    def train_epoch(
        self, opt: torch.optim.Optimizer, *, phase: int, epoch: int, schedule: Schedule,
        label: str, teacher: nn.Module | None = None, in_place: bool = False,
    ) -> EpochStats:
        """One pass over the training batches, an optimizer step per batch.

        Args:
            phase, epoch: where the run is (they seed the epoch, with ``seed``).
            schedule: the learning rate of every step.
            label: what the progress bar and log lines call the epoch.
            teacher: distil every subnet from its logits (with ``distill.kd_ratio`` > 0).
            in_place: distil the second and later subnets of a step from the first's logits
                (the sandwich rule), without label loss.
        """
        seed = self.seed
        torch.manual_seed(epoch_seed(seed + 7919 * self.rank, phase, epoch))  # dropout
        self.net.train()
        n_steps = len(self.loader)
        loss_sum, images, t0, lr = 0.0, 0, time.perf_counter(), 0.0
        with self._progress_bar(label, n_steps) as tick:
            for b, (xb, yb) in enumerate(self.loader.epoch(epoch_seed(seed, phase, epoch))):
                lr = schedule.lr_at(epoch, b, n_steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                rng = np.random.default_rng([seed, phase, epoch, b])
                loss = self._step(opt, xb, yb, rng, teacher, in_place, where=(phase, epoch, b))
                loss_sum += loss
                images += len(yb) * self.world_size
                self._after_step(loss)
                tick(loss)
                if self._stop_now():
                    n_steps = b + 1
                    break
        return EpochStats(loss=loss_sum / max(1, n_steps), lr=lr, steps=n_steps, images=images,
                          seconds=time.perf_counter() - t0)

    def _step(
        self, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
        rng: np.random.Generator, teacher: nn.Module | None, in_place: bool,
        where: tuple[int, int, int],
    ) -> float:
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        r, subnets = self._draw(where[0], rng)
        x, y = self._inputs(xb, yb, r, gen)
        kd, temp = self.distill.kd_ratio, self.distill.temperature
        ls = self.optim.label_smoothing
        soft = None
        if kd > 0 and teacher is not None and not in_place:
            with torch.no_grad():
                soft = soft_targets(teacher(x), temp)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for j, subnet in enumerate(subnets):
            out = self._forward(subnet, x)  # (b, classes); a language model's (b*s, vocab)
            if in_place and j > 0 and kd > 0:
                assert soft is not None
                loss = kd * kd_loss(out, soft, temp)  # in-place distillation only
            else:
                loss = F.cross_entropy(out, y, label_smoothing=ls)
                if soft is not None:
                    loss = loss + kd * kd_loss(out, soft, temp)
            loss.backward()
            if in_place and j == 0 and kd > 0:
                soft = soft_targets(out.detach(), temp)
            total = total + loss.detach()
        total = self._sync_grads(total) / len(subnets)
        value = float(total)
        if not math.isfinite(value):
            self._diverged(value, where, subnets)
        if self.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.optim.grad_clip)
        opt.step()
        return value

    # ------------------------------------------------------------------ distributed
    def _sync_grads(self, loss: torch.Tensor) -> torch.Tensor:
        """Average gradients (and the loss) over the group: one all-reduce per step.

        Every rank draws the same subnets (seeded by the step), so the parameters with a
        gradient are the same on every rank.
        """
        if self.world_size == 1:
            return loss
        import torch.distributed as dist

        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n
        return flat[-1]

    def _broadcast_weights(self) -> None:
        if self.world_size == 1:
            return
        import torch.distributed as dist

        for t in list(self.net.parameters()) + list(self.net.buffers()):
            dist.broadcast(t.data, 0)

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # ------------------------------------------------------------------ display
    def _say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message, soft_wrap=True, markup=False)

    @contextlib.contextmanager
    def _progress_bar(self, label: str, total: int) -> Iterator[Callable[[float], None]]:
        from nas._term import progress_bar

        if self.main and not self.show_progress:  # a log file: a plain line now and then
            t0 = last = time.perf_counter()
            done = 0

            def line(loss: float) -> None:
                nonlocal done, last
                done += 1
                now = time.perf_counter()
                if now - last >= self.log_every_s and done < total:
                    last = now
                    rate = done / (now - t0)
                    per_s = rate * self._items(self.batch_size) * self.world_size
                    self._say(f"[{label}] step {done}/{total}  loss {loss:.4f}  "
                              f"{per_s:.0f} {self.unit}/s  "
                              f"{(total - done) / rate / 60:.1f} min left in the epoch")

            yield line
            return
        with progress_bar(label, total, enabled=self.show_progress, console=self.console,
                          fields={"loss": float("nan")},
                          field_format="loss {task.fields[loss]:.4f}", transient=True) as adv:
            yield lambda loss: adv(loss=loss)
