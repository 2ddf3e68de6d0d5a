"""Hungarian matcher for set prediction (DETR, Carion et al. 2020; focal class cost of
Deformable DETR): a one-to-one matching of queries to GTs at minimum total cost."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from detopt.assign._common import Assigner, AssignInputs, AssignResult, build_targets
from detopt.errors import DetoptInputError
from detopt.ops.iou_terms import giou_penalty, inter_union_iou


def _cxcywh(b: Tensor) -> Tensor:
    return torch.cat(((b[..., :2] + b[..., 2:]) * 0.5, b[..., 2:] - b[..., :2]), -1)


@dataclass(eq=False)
class HungarianMatcher(Assigner):
    """Cost of query ``q`` and GT ``g``::

        cost_class · (pos - neg)[q, label_g] + cost_l1 · |cxcywh_q - cxcywh_g|₁ / l1_normalizer
            - cost_giou · GIoU(box_q, box_g)

    with the focal class cost ``pos = α (1-p)^γ (-log p)``, ``neg = (1-α) p^γ (-log(1-p))``.
    Boxes are xyxy in any unit; ``l1_normalizer`` divides the L1 term (DETR's boxes are
    normalised to ``[0, 1]``; pass the image size when boxes are in pixels). Every GT gets
    exactly one query when there are at least as many queries as GTs; ``anchors`` is unused.
    Score targets are 1.
    """

    needs_anchors = False

    cost_class: float = 2.0
    cost_l1: float = 5.0
    cost_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    l1_normalizer: float = 1.0

    def __post_init__(self) -> None:
        if self.l1_normalizer <= 0:
            raise DetoptInputError(f"l1_normalizer must be positive, got {self.l1_normalizer}")

    def cost_matrix(self, scores: Tensor, boxes: Tensor, labels: Tensor, gt: Tensor) -> Tensor:
        """``scores [Q, C]`` probabilities, ``boxes [Q, 4]``, ``labels [n]``, ``gt [n, 4]`` -> ``[Q, n]``."""
        p = scores[:, labels.long()].to(boxes.dtype)  # [Q, n]
        pos = self.focal_alpha * (1 - p) ** self.focal_gamma * -torch.log(p + 1e-8)
        neg = (1 - self.focal_alpha) * p**self.focal_gamma * -torch.log(1 - p + 1e-8)
        l1 = torch.cdist(_cxcywh(boxes), _cxcywh(gt), p=1) / self.l1_normalizer
        a, g = boxes[:, None], gt[None]
        _, union, iou = inter_union_iou(a, g)
        giou = iou - giou_penalty(a, g, union)
        return self.cost_class * (pos - neg) + self.cost_l1 * l1 - self.cost_giou * giou

    def assign(self, x: AssignInputs) -> AssignResult:
        pred_scores, pred_boxes, _, gt_labels, gt_boxes, gt_mask = x  # queries need no anchors
        b, q, c = pred_scores.shape
        gt_index = torch.full((b, q), -1, dtype=torch.long, device=pred_boxes.device)
        for i in range(b):
            valid = gt_mask[i].nonzero()[:, 0]
            if len(valid) == 0 or q == 0:
                continue
            cost = self.cost_matrix(
                pred_scores[i], pred_boxes[i], gt_labels[i, valid], gt_boxes[i, valid].to(pred_boxes.dtype)
            )
            rows, cols = linear_sum_assignment(cost.double().cpu().numpy())
            gt_index[i, torch.as_tensor(rows, device=gt_index.device)] = valid[
                torch.as_tensor(cols, device=valid.device)
            ]
        quality = torch.ones((b, q), dtype=pred_scores.dtype, device=pred_scores.device)
        return build_targets(gt_index, quality, gt_labels, gt_boxes, c)
