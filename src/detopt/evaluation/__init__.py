"""Evaluation: exact COCO metrics (pycocotools' numbers) and the curves people read."""

from detopt.evaluation.coco import (
    COCO_AREA_RANGES,
    STAT_NAMES,
    CocoEvalResult,
    CocoGroundTruth,
    CocoPredictions,
    DetoptEvalWarning,
    evaluate_coco,
    load_coco_gt,
    load_coco_predictions,
)

__all__ = [
    "COCO_AREA_RANGES",
    "STAT_NAMES",
    "CocoEvalResult",
    "CocoGroundTruth",
    "CocoPredictions",
    "DetoptEvalWarning",
    "evaluate_coco",
    "load_coco_gt",
    "load_coco_predictions",
]
