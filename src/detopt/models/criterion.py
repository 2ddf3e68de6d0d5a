"""The training criterion of the anchor-free detector: TAL assignment, class loss, CIoU and DFL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detopt import losses as L
from detopt.anchors.generator import anchor_points
from detopt.assign import IGNORE, Assigner, build_assigner
from detopt.errors import DetoptInputError
from detopt.models.heads import decode_outputs
from detopt.registry import Registry

ClsLoss = Callable[[Tensor, Tensor, str], Tensor]
"""``(logits [..., C], soft targets [..., C], reduction) -> loss``."""
BoxLoss = Callable[[Tensor, Tensor], Tensor]
"""``(pred [P, 4] xyxy, target [P, 4] xyxy) -> per-box loss [P]``."""

CLS_LOSSES: Registry[ClsLoss] = Registry("classification loss")
CLS_LOSSES.add("bce", lambda x, t, reduction: F.binary_cross_entropy_with_logits(x, t, reduction=reduction))
CLS_LOSSES.add("focal", lambda x, t, reduction: L.sigmoid_focal_loss(x, t, reduction=reduction))
CLS_LOSSES.add("vfl", lambda x, t, reduction: L.varifocal_loss(x, t, reduction=reduction))
CLS_LOSSES.add("qfl", lambda x, t, reduction: L.quality_focal_loss(x, t, reduction=reduction))

BOX_LOSSES: Registry[BoxLoss] = Registry("box loss")
BOX_LOSSES.add("ciou", L.ciou_loss)
BOX_LOSSES.add("diou", L.diou_loss)
BOX_LOSSES.add("giou", L.giou_loss)
BOX_LOSSES.add("iou", L.iou_loss)


def pad_targets(
    boxes: Tensor, labels: Tensor, batch_index: Tensor, batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenated targets -> padded per image.

    ``boxes: [M, 4]``, ``labels: [M]``, ``batch_index: [M]`` -> ``gt_boxes [B, K, 4]``,
    ``gt_labels [B, K]``, ``gt_mask [B, K]`` with ``K`` the most boxes of one image.
    """
    counts = (
        torch.bincount(batch_index, minlength=batch_size)
        if len(batch_index)
        else torch.zeros(batch_size, dtype=torch.long, device=boxes.device)
    )
    k = int(counts.max()) if batch_size else 0
    gt_boxes = boxes.new_zeros((batch_size, k, 4))
    gt_labels = labels.new_zeros((batch_size, k))
    gt_mask = torch.zeros((batch_size, k), dtype=torch.bool, device=boxes.device)
    if len(batch_index):
        order = torch.sort(batch_index, stable=True).indices
        bi = batch_index[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(bi), device=bi.device) - starts[bi]
        gt_boxes[bi, slot] = boxes[order]
        gt_labels[bi, slot] = labels[order]
        gt_mask[bi, slot] = True
    return gt_boxes, gt_labels, gt_mask


class DetectionCriterion:
    """Loss of the YOLO-style detector (YOLOv8's recipe, with the usual gains).

    - assignment: :class:`TaskAlignedAssigner` (top-10, α 0.5, β 6) on the detached predictions,
      or any assigner (``assigner=build_assigner("atss")``; it gets anchor boxes of
      ``assigner.anchor_cell`` strides); anchors an assigner ignores are left out of the class loss;
    - class: BCE with logits against the assigner's soft targets (or any name of
      :data:`CLS_LOSSES`: ``focal``, ``vfl``, ``qfl``), summed and divided by the sum of the soft
      targets;
    - box: ``1 - CIoU`` of positives (or any name of :data:`BOX_LOSSES`) weighted by their soft
      target, same normaliser;
    - DFL: distribution focal loss of the four side distances (stride units, clamped to
      ``reg_max - 1 - 0.01``), mean over sides, weighted and normalised the same way.

    ``total = (box_gain·box + cls_gain·cls + dfl_gain·dfl) · B``: summed over the images of the
    batch, the convention the usual SGD learning rate (0.01 at a nominal batch of 64) is tuned
    for. Crowd boxes (``targets["crowd"]``) are left out of the targets.

    ``__call__(outputs, targets)``: raw head outputs (``[B, 4·R + C, H_l, W_l]`` per level) and a
    batch from :func:`detopt.data.collate_detections` (``boxes`` in the input's pixels) ->
    ``(total, {"box", "cls", "dfl"} detached floats)``. Losses are computed in float32 even
    under autocast.
    """

    def __init__(
        self,
        num_classes: int,
        strides: Sequence[int],
        reg_max: int = 16,
        assigner: Assigner | None = None,
        cls_loss: str = "bce",
        box_gain: float = 7.5,
        cls_gain: float = 0.5,
        dfl_gain: float = 1.5,
        box_loss: str = "ciou",
    ) -> None:
        self._cls_fn = CLS_LOSSES.get(cls_loss, "cls_loss")
        self._box_fn = BOX_LOSSES.get(box_loss, "box_loss")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.reg_max = reg_max
        self.assigner = assigner or build_assigner("tal")
        self.cls_loss = cls_loss
        self.box_loss = box_loss
        self.gains = {"box": box_gain, "cls": cls_gain, "dfl": dfl_gain}

    def _cls(self, logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
        """Summed class loss; ``valid [B, A]`` leaves out the anchors an assigner ignores."""
        if valid is None:
            return self._cls_fn(logits, target, "sum")
        return self._cls_fn(logits, target, "none")[valid].sum()

    def _anchors_for_assigner(self, d, outputs: Sequence[Tensor]):
        cell = float(getattr(self.assigner, "anchor_cell", 1.0))
        if cell == 1.0:
            return d.anchors
        shapes = [tuple(o.shape[-2:]) for o in outputs]
        return anchor_points(shapes, self.strides, cell_size=cell, dtype=d.boxes.dtype, device=d.boxes.device)

    def __call__(self, outputs: Sequence[Tensor], targets: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        outputs = [o if o.dtype in (torch.float32, torch.float64) else o.float() for o in outputs]
        d = decode_outputs(outputs, self.strides, self.reg_max)
        b = outputs[0].shape[0]
        if d.cls_logits.shape[-1] != self.num_classes:
            raise DetoptInputError(
                f"outputs carry {d.cls_logits.shape[-1]} classes, criterion {self.num_classes}"
            )
        keep = ~targets["crowd"].to(torch.bool)
        device = d.boxes.device
        gt_boxes, gt_labels, gt_mask = pad_targets(
            targets["boxes"][keep].to(device).float(),
            targets["labels"][keep].to(device),
            targets["batch_index"][keep].to(device),
            b,
        )
        res = self.assigner(
            d.cls_logits.detach().sigmoid(), d.boxes.detach(), self._anchors_for_assigner(d, outputs),
            gt_labels, gt_boxes, gt_mask,
        )
        target_scores = res.target_scores.to(d.cls_logits.dtype)
        norm = target_scores.sum().clamp(min=1.0)
        ignored = res.target_labels == IGNORE
        loss_cls = self._cls(d.cls_logits, target_scores, ~ignored if ignored.any() else None) / norm
        fg = res.fg_mask
        if fg.any():
            weight = target_scores.sum(-1)[fg]
            loss_box = (self._box_fn(d.boxes[fg], res.target_boxes[fg]) * weight).sum() / norm
            pts = d.anchors.points[None].expand(b, -1, -1)[fg]
            stride = d.anchors.strides[None].expand(b, -1)[fg][:, None]
            tb = res.target_boxes[fg]
            ltrb = torch.cat((pts - tb[:, :2], tb[:, 2:] - pts), -1) / stride  # [P, 4]
            dfl = L.distribution_focal_loss(d.box_logits[fg].reshape(-1, self.reg_max), ltrb.reshape(-1))
            loss_dfl = (dfl.reshape(-1, 4).mean(-1) * weight).sum() / norm
        else:
            loss_box = loss_dfl = d.boxes.sum() * 0.0
        g = self.gains
        total = (g["box"] * loss_box + g["cls"] * loss_cls + g["dfl"] * loss_dfl) * b
        return total, {
            "box": loss_box.detach().item(),
            "cls": loss_cls.detach().item(),
            "dfl": loss_dfl.detach().item(),
        }
