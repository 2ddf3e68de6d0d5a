"""Pure functions on boxes: conversion, IoU family, and the whole NMS family.

numpy arrays in give numpy arrays out; tensors in give tensors out. CPU inputs run numba
kernels, tensors on other devices (and tracing/export) run vectorized torch.
"""

from detopt.ops.boxes import (
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    complete_box_iou,
    distance_box_iou,
    generalized_box_iou,
)
from detopt.ops.nms import (
    batched_diou_nms,
    batched_nms,
    batched_soft_nms,
    diou_nms,
    matrix_nms,
    nms,
    soft_nms,
)
from detopt.ops.postprocess import METHODS as POSTPROCESS_METHODS
from detopt.ops.postprocess import postprocess
from detopt.ops.wbf import weighted_boxes_fusion

__all__ = [
    "POSTPROCESS_METHODS",
    "batched_diou_nms",
    "batched_nms",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes",
    "complete_box_iou",
    "diou_nms",
    "distance_box_iou",
    "generalized_box_iou",
    "matrix_nms",
    "nms",
    "postprocess",
    "soft_nms",
    "weighted_boxes_fusion",
]
