"""Evaluation: exact COCO metrics (pycocotools' numbers) and the curves people read."""

from detopt.evaluation.coco import (
    COCO_AREA_RANGES,
    STAT_NAMES,
    CocoEvalResult,
    CocoGroundTruth,
    CocoPredictions,
    DetoptEvalWarning,
    evaluate_coco,
    evaluate_detections,
    load_coco_gt,
    load_coco_predictions,
    predictions_from_detections,
    result_values,
)

__all__ = [
    "COCO_AREA_RANGES",
    "STAT_NAMES",
    "CocoEvalResult",
    "CocoGroundTruth",
    "CocoPredictions",
    "DetoptEvalWarning",
    "evaluate_coco",
    "evaluate_detections",
    "load_coco_gt",
    "load_coco_predictions",
    "predictions_from_detections",
    "result_values",
]
