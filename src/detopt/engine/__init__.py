"""Training engine: the loop, schedules, EMA, optimizers, checkpoints and validation.

Names are loaded on first use (PEP 562), so ``import detopt.engine.checkpoint`` (what inference
needs) does not import the trainer.
"""

from __future__ import annotations

from detopt._lazy import lazy_names

_WHERE = {
    "Callback": "callbacks",
    "atomic_save": "checkpoint",
    "export_safetensors": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_safetensors": "checkpoint",
    "model_from_checkpoint": "checkpoint",
    "ModelEMA": "ema",
    "build_optimizer": "optim",
    "param_groups": "optim",
    "set_hyperparameters": "optim",
    "EpochPlan": "plan",
    "Schedule": "schedules",
    "lr_factor": "schedules",
    "DetoptTrainingError": "trainer",
    "EpochSampler": "trainer",
    "ModelTrainer": "trainer",
    "Trainer": "trainer",
    "coco_records": "validate",
    "evaluate_detector": "validate",
    "predict_batches": "validate",
}


__getattr__ = lazy_names(__name__, _WHERE)


def __dir__() -> list[str]:
    return sorted(_WHERE)


__all__ = sorted(_WHERE)
