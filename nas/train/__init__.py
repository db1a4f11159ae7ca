"""Supernet training: datasets, progressive shrinking / sandwich training, evaluation, and
fine-tuning of exported subnets (``finetune``).

Example:
    >>> from nas.train import load_config, train_supernet
    >>> result = train_supernet(load_config("experiments/cifar10_supernet/smoke.yaml"))
    >>> result.checkpoint  # runs/.../supernet.safetensors
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

if TYPE_CHECKING:
    from nas.train._config import (
        TASKS,
        AugmentConfig,
        DataConfig,
        DistillConfig,
        EvalConfig,
        LMDataConfig,
        LMEvalConfig,
        LMOptimConfig,
        LMTrainConfig,
        OptimConfig,
        PhaseConfig,
        TrainConfig,
        config_from_dict,
        is_lm_config,
        load_any_config,
        load_config,
    )
    from nas.train._data import (
        BatchLoader,
        DataSplits,
        ImageSet,
        Preprocess,
        default_cache_dir,
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
    from nas.train._finetune import (
        QUIET,
        FinetuneConfig,
        FinetuneResult,
        FinetuneWatch,
        finetune,
        work_dir_for,
    )
    from nas.train._formats import DATA_FORMATS, FORMATS, DataFormat, TextCorpus, detect_format
    from nas.train._lm import LMTrainer, LMTrainResult, train_lm
    from nas.train._text import (
        BYTE_VOCAB,
        EOT,
        TextSplits,
        TokenBatches,
        encode_works,
        lm_loss,
        load_text_splits,
        read_text_corpus,
        windows,
    )
    from nas.train._trainer import Progress, Trainer, TrainResult, load_data, train_supernet

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "nas.train._config": [
            "TASKS",
            "AugmentConfig",
            "DataConfig",
            "DistillConfig",
            "EvalConfig",
            "LMDataConfig",
            "LMEvalConfig",
            "LMOptimConfig",
            "LMTrainConfig",
            "OptimConfig",
            "PhaseConfig",
            "TrainConfig",
            "config_from_dict",
            "is_lm_config",
            "load_any_config",
            "load_config",
        ],
        "nas.train._data": [
            "BatchLoader",
            "DataSplits",
            "ImageSet",
            "Preprocess",
            "default_cache_dir",
            "load_dataset",
        ],
        "nas.train._distributed": [
            "train_distributed",
        ],
        "nas.train._finetune": [
            "QUIET",
            "FinetuneConfig",
            "FinetuneResult",
            "FinetuneWatch",
            "finetune",
            "work_dir_for",
        ],
        "nas.train._formats": [
            "DATA_FORMATS",
            "FORMATS",
            "DataFormat",
            "TextCorpus",
            "detect_format",
        ],
        "nas.train._lm": [
            "LMTrainResult",
            "LMTrainer",
            "train_lm",
        ],
        "nas.train._text": [
            "BYTE_VOCAB",
            "EOT",
            "TextSplits",
            "TokenBatches",
            "encode_works",
            "lm_loss",
            "load_text_splits",
            "read_text_corpus",
            "windows",
        ],
        "nas.train._eval": [
            "evaluate",
            "evaluate_subnet",
            "middle_arch",
            "recalibrate_bn",
            "subnet_by_name",
        ],
        "nas.train._trainer": [
            "Progress",
            "Trainer",
            "TrainResult",
            "load_data",
            "train_supernet",
        ],
    },
)
