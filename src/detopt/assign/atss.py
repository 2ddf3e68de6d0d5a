"""ATSS (Zhang et al. 2020): adaptive IoU threshold from the statistics of close candidates."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detopt.assign._common import Assigner, AssignInputs, AssignResult, build_targets
from detopt.assign._geometry import pairwise_iou, points_in_boxes, resolve_multiple
from detopt.errors import DetoptInputError


@dataclass(eq=False)
class ATSSAssigner(Assigner):
    """For each GT: the ``topk`` anchors per level closest to its centre are candidates; the
    threshold is the mean + standard deviation (unbiased, as ``torch.std``) of their IoUs;
    candidates at or above it whose centre lies inside the GT (margin > ``eps``) are positive.
    An anchor positive for several GTs goes to the one it overlaps most. Score targets are 1.

    For anchor-free heads pass :func:`detopt.anchors.anchor_points` with ``cell_size=5`` (the
    anchor box PP-YOLOE and YOLOv6 use with ATSS).
    """

    anchor_cell = 5.0

    topk: int = 9
    eps: float = 0.01

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise DetoptInputError(f"topk must be >= 1, got {self.topk}")

    def assign(self, x: AssignInputs) -> AssignResult:
        pred_scores, _, anchors, gt_labels, gt_boxes, gt_mask = x
        boxes = anchors.boxes.to(gt_boxes)
        points = anchors.points.to(gt_boxes)
        iou = pairwise_iou(gt_boxes, boxes)  # [B, M, A]
        centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) * 0.5  # [B, M, 2]
        dist = (centres[:, :, None] - points[None, None]).pow(2).sum(-1)  # [B, M, A]
        cand = torch.zeros_like(iou, dtype=torch.bool)
        start = 0
        for size in anchors.level_sizes:
            if size:
                k = min(self.topk, size)
                # stable: anchors of one location share a centre, ties go to the lower index
                idx = dist[..., start : start + size].argsort(dim=-1, stable=True)[..., :k] + start
                cand.scatter_(2, idx, True)
            start += size
        n = cand.sum(-1, keepdim=True).to(iou.dtype)  # [B, M, 1]
        mean = (iou * cand).sum(-1, keepdim=True) / n.clamp(min=1)
        var = ((iou - mean).pow(2) * cand).sum(-1, keepdim=True) / (n - 1).clamp(min=1)
        thr = mean + var.sqrt()
        inside = points_in_boxes(points, gt_boxes, self.eps)
        pos = cand & (iou >= thr) & inside & gt_mask[..., None]
        gt_index = resolve_multiple(pos, iou)
        quality = torch.ones(gt_index.shape, dtype=pred_scores.dtype, device=pred_scores.device)
        return build_targets(gt_index, quality, gt_labels, gt_boxes, pred_scores.shape[2])
