"""MaxIoU assigner (Faster R-CNN / RetinaNet): thresholds on the IoU of anchor boxes with GTs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detopt.assign._common import Assigner, AssignInputs, AssignResult, build_targets
from detopt.assign._geometry import pairwise_iou, resolve_multiple
from detopt.errors import DetoptInputError


@dataclass(eq=False)
class MaxIoUAssigner(Assigner):
    """Positive where the best IoU with a GT is ``>= pos_iou_thr``, negative where it is
    ``< neg_iou_thr``, ignored in between.

    With ``low_quality_match`` every GT also takes the anchors where its IoU is highest (all
    ties), if that IoU is ``>= min_pos_iou`` and > 0, so a GT no anchor overlaps by
    ``pos_iou_thr`` is still learned; these matches override threshold positives (as in
    mmdetection). Deviation from mmdetection, named: an anchor that is the best of several GTs
    goes to the GT it overlaps most (mmdetection: the GT that comes last), which keeps the result
    independent of GT order. Score targets are 1.
    """

    anchor_cell = 5.0
    train_defaults = {"pos_iou_thr": 0.5, "neg_iou_thr": 0.4}  # noqa: RUF012 - RetinaNet's

    pos_iou_thr: float = 0.7
    neg_iou_thr: float = 0.3
    min_pos_iou: float = 0.0
    low_quality_match: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.neg_iou_thr <= self.pos_iou_thr <= 1:
            raise DetoptInputError(
                f"need 0 <= neg_iou_thr <= pos_iou_thr <= 1, got {self.neg_iou_thr} and {self.pos_iou_thr}"
            )

    def assign(self, x: AssignInputs) -> AssignResult:
        pred_scores, _, anchors, gt_labels, gt_boxes, gt_mask = x
        iou = pairwise_iou(gt_boxes, anchors.boxes.to(gt_boxes))  # [B, M, A]
        iou = torch.where(gt_mask[..., None], iou, torch.full_like(iou, -1.0))
        best = iou.amax(1) if iou.shape[1] else iou.new_full(iou.shape[::2], -1.0)
        pos = (iou >= self.pos_iou_thr) & (iou == best[:, None])  # [B, M, A]
        gt_index = resolve_multiple(pos, iou)
        if self.low_quality_match and iou.shape[2]:
            gt_best = iou.amax(2, keepdim=True)  # [B, M, 1]
            ok = gt_mask[..., None] & (gt_best > 0) & (gt_best >= self.min_pos_iou)
            low = resolve_multiple((iou == gt_best) & ok, iou)
            gt_index = torch.where(low >= 0, low, gt_index)
        ignore = (best >= self.neg_iou_thr) & (gt_index < 0)
        quality = torch.ones(gt_index.shape, dtype=pred_scores.dtype, device=pred_scores.device)
        return build_targets(gt_index, quality, gt_labels, gt_boxes, pred_scores.shape[2], ignore)
