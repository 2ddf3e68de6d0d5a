"""Values shared across the library, defined once (foundation layer: imports nothing of detopt).

Post-processing defaults are those of ``detopt predict``/``val`` and the model's
``Postprocessor``; ``ops.postprocess``, the tuner and the config read them from here.
"""

from __future__ import annotations

PAD_VALUE = 114
"""Grey of letterbox borders, mosaic canvases and affine fill (uint8, every channel)."""

SMALL_AREA = 32.0**2
MEDIUM_AREA = 96.0**2
MAX_AREA = 1e5**2
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, MAX_AREA),
    "small": (0.0, SMALL_AREA),
    "medium": (SMALL_AREA, MEDIUM_AREA),
    "large": (MEDIUM_AREA, MAX_AREA),
}
"""COCO's object-size ranges in pixels² (pycocotools' ``Params.areaRng``, bit for bit)."""

IOU_THRESHOLD = 0.7
"""Suppression IoU threshold of post-processing (``iou_thr``; CLI ``--iou-thr``)."""
SCORE_THRESHOLD = 0.001
"""Candidates scoring ``<=`` this are dropped before suppression (``score_thr``; CLI
``--score-thr``) for evaluation; ``detopt predict`` uses its own display default."""
MAX_DET = 300
"""Detections kept per image."""
PRE_NMS_TOPK = 10000
"""Candidates per image entering suppression (the highest scores)."""
