"""Task-aligned assigner (TOOD, Feng et al. 2021), the assigner of YOLOv8-style heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from detopt.assign._common import Assigner, AssignInputs, AssignResult, build_targets
from detopt.assign._geometry import points_in_boxes, resolve_multiple
from detopt.errors import DetoptInputError
from detopt.ops.iou_terms import inter_union_iou


@dataclass(eq=False)
class TaskAlignedAssigner(Assigner):
    """Alignment ``t = s^α · u^β`` (``s`` the predicted score of the GT's class, ``u`` the IoU of
    the predicted box with the GT); for each GT the ``topk`` anchors of highest ``t`` among those
    whose point lies inside the GT are positive. An anchor positive for several GTs keeps the GT
    with the highest IoU (among those it is positive for; Ultralytics takes the argmax over all
    GTs, which can hand an anchor to a GT that did not select it).

    Score target: ``t`` normalised per GT so its largest value equals that GT's largest IoU
    over its positives (TOOD's ``t̂``), exactly: Ultralytics divides by ``max t + 1e-9``, which
    zeroes the targets whenever the alignments are far below 1e-9 — the usual case early in
    training on small objects (``u^6`` of a 0.03 IoU is 7e-10), so the box loss then gets no weight.
    ``eps`` is the margin of the point-inside-box test.
    """

    train_defaults = {"topk": 10, "alpha": 0.5, "beta": 6.0}  # noqa: RUF012 - YOLOv8's

    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0
    eps: float = 1e-9

    def __post_init__(self) -> None:
        if self.topk < 1:
            raise DetoptInputError(f"topk must be >= 1, got {self.topk}")

    def assign(self, x: AssignInputs) -> AssignResult:
        pred_scores, pred_boxes, anchors, gt_labels, gt_boxes, gt_mask = x
        b, a, c = pred_scores.shape
        m = gt_boxes.shape[1]
        if m == 0 or a == 0:
            idx = torch.full((b, a), -1, dtype=torch.long, device=pred_scores.device)
            return build_targets(idx, pred_scores.new_zeros((b, a)), gt_labels, gt_boxes, c)
        dtype = pred_boxes.dtype
        gt = gt_boxes.to(dtype)
        inside = points_in_boxes(anchors.points.to(dtype), gt, self.eps) & gt_mask[..., None]  # [B, M, A]
        # IoU and alignment only where they can matter: anchor points inside a GT (sparse)
        bi, mi, ai = inside.nonzero(as_tuple=True)
        iou_v = inter_union_iou(gt[bi, mi], pred_boxes[bi, ai])[2].clamp(min=0)
        score_v = pred_scores[bi, ai, gt_labels[bi, mi]].to(dtype)
        align_v = score_v.pow(self.alpha) * iou_v.pow(self.beta)
        iou = torch.zeros(inside.shape, dtype=dtype, device=inside.device)
        iou[bi, mi, ai] = iou_v
        align = torch.zeros_like(iou)
        align[bi, mi, ai] = align_v
        ranked = torch.full_like(iou, -1.0)
        ranked[bi, mi, ai] = align_v
        k = min(self.topk, a)
        top = ranked.topk(k, dim=-1).indices
        pos = torch.zeros_like(inside).scatter_(2, top, True) & inside
        gt_index = resolve_multiple(pos, iou)
        fg = gt_index >= 0
        pos = pos & (torch.arange(m, device=pos.device)[None, :, None] == gt_index[:, None])
        align_pos = align * pos
        max_align = align_pos.amax(-1, keepdim=True)  # [B, M, 1]
        max_iou = (iou * pos).amax(-1, keepdim=True)
        tiny = torch.finfo(dtype).tiny
        norm = align_pos * max_iou / max_align.clamp(min=tiny)
        norm = torch.where(max_align > 0, norm, 0).amax(1)  # [B, A]
        quality = torch.where(fg, norm, 0).to(pred_scores.dtype)
        return build_targets(gt_index, quality, gt_labels, gt_boxes, c)
