"""Supernet training: datasets, progressive shrinking / sandwich training, evaluation.

Example:
    >>> from nas.train import load_config, train_supernet
    >>> result = train_supernet(load_config("experiments/cifar10_supernet/smoke.yaml"))
    >>> result.checkpoint  # runs/.../supernet.safetensors
"""

from nas.train._config import (
    TASKS,
    AugmentConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    OptimConfig,
    PhaseConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from nas.train._data import (
    FORMATS,
    BatchLoader,
    DataSplits,
    ImageSet,
    Preprocess,
    default_cache_dir,
    detect_format,
    load_dataset,
)
from nas.train._distributed import train_distributed
from nas.train._eval import (
    evaluate,
    evaluate_subnet,
    middle_arch,
    recalibrate_bn,
    subnet_by_name,
)
from nas.train._trainer import Progress, Trainer, TrainResult, load_data, train_supernet

__all__ = [
    "FORMATS",
    "TASKS",
    "AugmentConfig",
    "BatchLoader",
    "DataConfig",
    "DataSplits",
    "DistillConfig",
    "EvalConfig",
    "ImageSet",
    "OptimConfig",
    "PhaseConfig",
    "Preprocess",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "config_from_dict",
    "default_cache_dir",
    "detect_format",
    "evaluate",
    "evaluate_subnet",
    "load_config",
    "load_data",
    "load_dataset",
    "middle_arch",
    "recalibrate_bn",
    "subnet_by_name",
    "train_distributed",
    "train_supernet",
]
