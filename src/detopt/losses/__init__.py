"""The loss library: element-wise functions with one ``reduction`` argument (docs/architecture.md)."""

from detopt.losses.functional import (
    REDUCTIONS,
    ciou_loss,
    diou_loss,
    distribution_focal_loss,
    giou_loss,
    iou_loss,
    quality_focal_loss,
    reduce_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
    softmax_focal_loss,
    varifocal_loss,
)

__all__ = [
    "REDUCTIONS",
    "ciou_loss",
    "diou_loss",
    "distribution_focal_loss",
    "giou_loss",
    "iou_loss",
    "quality_focal_loss",
    "reduce_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "softmax_focal_loss",
    "varifocal_loss",
]
