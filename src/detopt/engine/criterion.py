"""The training loss a config asks for, built in one place (the trainer and the speed probe)."""

from __future__ import annotations

from torch import nn

from detopt.assign import build_assigner
from detopt.config import TrainConfig
from detopt.models import DetectionCriterion


def criterion_for(cfg: TrainConfig, num_classes: int, model: nn.Module) -> DetectionCriterion:
    """``cfg.assigner`` with ``cfg.cls_loss`` / ``cfg.box_loss`` and the gains, for ``model``'s
    strides and ``reg_max``."""
    return DetectionCriterion(
        num_classes,
        model.strides,
        model.reg_max,
        cls_loss=cfg.cls_loss,
        box_loss=cfg.box_loss,
        assigner=build_assigner(cfg.assigner),
        box_gain=cfg.box_gain,
        cls_gain=cfg.cls_gain,
        dfl_gain=cfg.dfl_gain,
    )
