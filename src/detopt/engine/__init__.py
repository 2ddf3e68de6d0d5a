"""Training engine: the loop, schedules, EMA, optimizers, checkpoints and validation."""

from detopt.engine.checkpoint import (
    atomic_save,
    export_safetensors,
    load_checkpoint,
    load_safetensors,
    model_from_checkpoint,
)
from detopt.engine.ema import ModelEMA
from detopt.engine.optim import build_optimizer, param_groups, set_hyperparameters
from detopt.engine.schedules import Schedule, lr_factor
from detopt.engine.trainer import DetoptTrainingError, EpochSampler, Trainer
from detopt.engine.validate import coco_records, evaluate_detector, predict_batches

__all__ = [
    "DetoptTrainingError",
    "EpochSampler",
    "ModelEMA",
    "Schedule",
    "Trainer",
    "atomic_save",
    "build_optimizer",
    "coco_records",
    "evaluate_detector",
    "export_safetensors",
    "load_checkpoint",
    "load_safetensors",
    "lr_factor",
    "model_from_checkpoint",
    "param_groups",
    "predict_batches",
    "set_hyperparameters",
]
