"""Geometry the assigners share: IoU of ground truth with anchors, points inside boxes, and the
tie-break of an anchor positive for several ground-truth boxes (``[B, M, A]`` layouts)."""

from __future__ import annotations

import torch
from torch import Tensor

from detopt.ops.iou_terms import inter_union_iou


def pairwise_iou(gt_boxes: Tensor, boxes: Tensor) -> Tensor:
    """IoU of ``gt_boxes: [B, M, 4]`` with ``boxes: [B, A, 4]`` (or ``[A, 4]``) -> ``[B, M, A]``."""
    if boxes.ndim == 2:
        boxes = boxes[None]
    return inter_union_iou(gt_boxes[:, :, None], boxes[:, None])[2]


def points_in_boxes(points: Tensor, gt_boxes: Tensor, eps: float = 1e-9) -> Tensor:
    """``points: [A, 2]`` strictly inside ``gt_boxes: [B, M, 4]`` (margins > eps) -> ``[B, M, A]``."""
    x, y = points[:, 0], points[:, 1]
    g = gt_boxes[..., None, :]
    return (x > g[..., 0] + eps) & (y > g[..., 1] + eps) & (x < g[..., 2] - eps) & (y < g[..., 3] - eps)


def resolve_multiple(pos: Tensor, score: Tensor) -> Tensor:
    """Keep, for every anchor positive for several GTs, only the GT with the highest ``score``.

    ``pos: [B, M, A]`` bool, ``score: [B, M, A]`` -> ``gt_index: [B, A]`` (-1 where no positive).
    Ties go to the lower GT index.
    """
    if pos.shape[1] == 0:
        return torch.full((pos.shape[0], pos.shape[2]), -1, dtype=torch.long, device=pos.device)
    masked = torch.where(pos, score, torch.full_like(score, -float("inf")))
    idx = masked.argmax(1)
    return torch.where(pos.any(1), idx, torch.full_like(idx, -1))
