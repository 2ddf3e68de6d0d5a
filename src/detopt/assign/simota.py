"""SimOTA (YOLOX, Ge et al. 2021): optimal-transport-style assignment with a dynamic k per GT."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from detopt.assign._common import Assigner, AssignInputs, AssignResult, build_targets
from detopt.assign._geometry import pairwise_iou, points_in_boxes
from detopt.errors import DetoptInputError

_OUTSIDE_COST = 1e5


@dataclass(eq=False)
class SimOTAAssigner(Assigner):
    """For each image: candidates are anchors whose point lies inside a GT or within
    ``center_radius · stride`` of its centre (the centre prior). The cost of GT ``g`` and
    candidate ``a`` is ``cls_weight · BCE(p_a, onehot(g)) summed over classes + iou_weight ·
    (-log(IoU + 1e-8))`` plus a large constant unless ``a`` is both inside ``g`` and in its
    centre region. GT ``g`` takes its ``k_g`` cheapest candidates with ``k_g = max(1,
    ⌊sum of its top-``candidate_topk`` IoUs⌋)``; an anchor taken by several GTs keeps the
    cheapest. Score target: the IoU of the prediction with its GT (YOLOX).
    """

    center_radius: float = 2.5
    candidate_topk: int = 10
    iou_weight: float = 3.0
    cls_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.center_radius <= 0 or self.candidate_topk < 1:
            raise DetoptInputError(
                "need center_radius > 0 and candidate_topk >= 1, "
                f"got {self.center_radius}, {self.candidate_topk}"
            )

    def assign(self, x: AssignInputs) -> AssignResult:
        pred_scores, pred_boxes, anchors, gt_labels, gt_boxes, gt_mask = x
        b, a, c = pred_scores.shape
        dtype = pred_boxes.dtype
        points = anchors.points.to(dtype)
        strides = anchors.strides.to(dtype)
        gt_index = torch.full((b, a), -1, dtype=torch.long, device=pred_boxes.device)
        quality = torch.zeros((b, a), dtype=pred_scores.dtype, device=pred_scores.device)
        for i in range(b):
            valid = gt_mask[i].nonzero()[:, 0]
            if len(valid) == 0 or a == 0:
                continue
            gi, qi = self._assign_image(
                pred_scores[i],
                pred_boxes[i],
                points,
                strides,
                gt_labels[i, valid],
                gt_boxes[i, valid].to(dtype),
            )
            gt_index[i] = torch.where(gi >= 0, valid[gi.clamp(min=0)], -1)
            quality[i] = qi.to(quality.dtype)
        return build_targets(gt_index, quality, gt_labels, gt_boxes, c)

    def _assign_image(
        self, scores: Tensor, boxes: Tensor, points: Tensor, strides: Tensor, labels: Tensor, gt: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One image: ``scores [A, C]``, ``boxes [A, 4]``, ``gt [n, 4]`` -> (gt index [A], IoU [A])."""
        a = len(points)
        in_box = points_in_boxes(points, gt[None])[0]  # [n, A]
        centre = (gt[:, :2] + gt[:, 2:]) * 0.5
        r = self.center_radius * strides  # [A]
        in_ctr = ((points[None] - centre[:, None]).abs() < r[None, :, None]).all(-1)  # [n, A]
        cand = (in_box | in_ctr).any(0).nonzero()[:, 0]
        gt_index = torch.full((a,), -1, dtype=torch.long, device=points.device)
        quality = torch.zeros(a, dtype=boxes.dtype, device=points.device)
        if len(cand) == 0:
            return gt_index, quality
        iou = pairwise_iou(gt[None], boxes[cand][None])[0]  # [n, Ac]
        p = scores[cand].to(boxes.dtype)  # [Ac, C]
        onehot = F.one_hot(labels.long(), scores.shape[1]).to(p.dtype)  # [n, C]
        cls_cost = F.binary_cross_entropy(
            p[None].expand(len(gt), -1, -1), onehot[:, None].expand(-1, len(cand), -1), reduction="none"
        ).sum(-1)
        cost = self.cls_weight * cls_cost + self.iou_weight * -torch.log(iou + 1e-8)
        cost = cost + _OUTSIDE_COST * ~(in_box[:, cand] & in_ctr[:, cand])
        k = min(self.candidate_topk, len(cand))
        dynamic_k = iou.topk(k, dim=1).values.sum(1).int().clamp(min=1)  # [n]
        rank = cost.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
        match = rank < dynamic_k[:, None]  # [n, Ac]
        masked = torch.where(match, cost, torch.full_like(cost, float("inf")))
        owner = masked.argmin(0)  # cheapest GT for each candidate
        taken = match.any(0)
        gt_index[cand[taken]] = owner[taken]
        quality[cand[taken]] = iou[owner[taken], taken.nonzero()[:, 0]]
        return gt_index, quality
