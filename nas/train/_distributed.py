"""Data-parallel supernet training on Ray Train (``ray.train.torch.TorchTrainer``).

Each Ray worker runs a :class:`~nas.train.Trainer` as one rank of a ``torch.distributed``
group (gloo on CPUs, NCCL on GPUs) that Ray Train sets up. Every rank draws the same subnets
and resolutions at each step (they are seeded by the step), trains on its own shard of the
batch order, and gradients are averaged with one all-reduce per step, as Once-for-All does
with Horovod. Rank 0 evaluates and writes the checkpoints and metrics into ``out``.

Locally, ``ray.init()`` starts a Ray instance; on a cluster pass ``address`` (or set
``RAY_ADDRESS``). On a multi-node cluster ``out`` and the data source must be on storage every
node sees (NFS or similar): checkpoints are plain files, so ``--resume`` works the same.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nas._ray import start_ray
from nas.errors import ConfigError, MissingDependencyError, TrainingError
from nas.train._config import TrainConfig, config_from_dict
from nas.train._trainer import Progress, TrainResult, load_data

__all__ = ["train_distributed"]


def _worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """The training function of each Ray worker."""
    import ray.train
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = loop_config.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    device: Any = "cpu"
    if loop_config["device"] == "cuda":
        import ray.train.torch

        device = ray.train.torch.get_device()
    from nas.train._trainer import Trainer

    config = config_from_dict(loop_config["config"], where="config")

    # metrics go to OUT/metrics.csv and the return value; no ray.train.report per epoch
    trainer = Trainer(config, loop_config["out"], device=device, rank=rank, world_size=world,
                      progress=bool(loop_config["progress"]))
    try:
        result = trainer.run(resume=bool(loop_config["resume"]))
    except Exception as exc:
        # keep the one-line message of our own errors through Ray's wrapping
        raise RuntimeError(f"NASERROR[{type(exc).__name__}]: {exc}") from exc
    return {"progress": asdict(result.progress), "metrics": result.metrics[-1:]}


def train_distributed(
    config: TrainConfig,
    out: Path | str | None = None,
    *,
    workers: int = 2,
    address: str | None = None,
    device: str = "cpu",
    resume: bool = False,
    cpus_per_worker: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train with ``workers`` data-parallel Ray Train workers.

    Args:
        address: a Ray cluster (``ray://...`` or ``host:port``); default ``$RAY_ADDRESS``,
            else a local Ray instance.
        device: ``"cuda"`` gives each worker one GPU (NCCL); ``"cpu"`` uses gloo.
        cpus_per_worker: CPUs reserved per worker, also its torch thread count (default:
            this machine's CPUs divided among the workers, at least 1).

    Raises:
        MissingDependencyError: Ray Train is not installed.
        TrainingError: a worker failed (its message is passed on).
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    try:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError:
        raise MissingDependencyError(
            "data-parallel training needs Ray Train: pip install 'ray[train]'"
        ) from None
    out = Path(out if out is not None else config.out).resolve()
    # decode the images once here, so the workers read the cache instead of racing to build it
    load_data(config)
    if cpus_per_worker is None:
        cpus_per_worker = max(1, (os.cpu_count() or 1) // workers)
    # a local instance is bound to loopback and reaped with this process (nas._ray)
    start_ray(address, num_cpus=max(os.cpu_count() or 1, workers * cpus_per_worker),
              log_to_driver=True, logging_level=logging.WARNING)
    trainer = TorchTrainer(
        _worker,  # type: ignore[arg-type]
        train_loop_config={"config": config.to_dict(), "out": str(out), "device": device,
                           "resume": resume, "progress": progress, "threads": cpus_per_worker},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=device == "cuda",
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name="train", storage_path=str(out / "ray"),
                             failure_config=FailureConfig(max_failures=0), **_quiet()),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        raise TrainingError(_worker_message(exc)) from None
    if result.error is not None:
        raise TrainingError(_worker_message(result.error))
    ret = getattr(result, "return_value", None) or {}
    prog = Progress(**ret.get("progress", {}))
    return TrainResult(out, out / "supernet.safetensors", prog, list(ret.get("metrics", [])))


def _quiet() -> dict[str, Any]:
    """Ray Train's own logging at WARNING (it logs every report at INFO), where supported."""
    try:
        from ray.train import LoggingConfig  # Ray Train v2
    except ImportError:
        return {}
    return {"logging_config": LoggingConfig(log_level="WARNING")}


def _worker_message(exc: BaseException) -> str:
    text = str(exc)
    marker = "NASERROR["
    if marker in text:
        start = text.index(marker)
        line = text[start:].splitlines()[0]
        return line.split("]: ", 1)[-1]
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"data-parallel training failed: {first}"
