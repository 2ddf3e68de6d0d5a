"""The training criterion of the anchor-free detector: TAL assignment, class loss, CIoU and DFL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from detopt.assign import TaskAlignedAssigner
from detopt.assign._common import Assigner
from detopt.errors import DetoptInputError
from detopt.losses import ciou_loss, distribution_focal_loss, quality_focal_loss, varifocal_loss
from detopt.models.heads import decode_outputs

CLS_LOSSES = ("bce", "vfl", "qfl")


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

    - assignment: :class:`TaskAlignedAssigner` (top-10, α 0.5, β 6) on the detached predictions;
    - class: BCE with logits against the assigner's soft targets (or ``vfl`` / ``qfl``), summed
      and divided by the sum of the soft targets;
    - box: ``1 - CIoU`` of positives weighted by their soft target, same normaliser;
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
    ) -> None:
        if cls_loss not in CLS_LOSSES:
            raise DetoptInputError(f"cls_loss: expected one of {CLS_LOSSES}, got {cls_loss!r}")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.reg_max = reg_max
        self.assigner = assigner or TaskAlignedAssigner(topk=10, alpha=0.5, beta=6.0)
        self.cls_loss = cls_loss
        self.gains = {"box": box_gain, "cls": cls_gain, "dfl": dfl_gain}

    def _cls(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.cls_loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        if self.cls_loss == "vfl":
            return varifocal_loss(logits, target, reduction="sum")
        return quality_focal_loss(logits, target, reduction="sum")

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
            d.cls_logits.detach().sigmoid(), d.boxes.detach(), d.anchors, gt_labels, gt_boxes, gt_mask
        )
        target_scores = res.target_scores.to(d.cls_logits.dtype)
        norm = target_scores.sum().clamp(min=1.0)
        loss_cls = self._cls(d.cls_logits, target_scores) / norm
        fg = res.fg_mask
        if fg.any():
            weight = target_scores.sum(-1)[fg]
            loss_box = (ciou_loss(d.boxes[fg], res.target_boxes[fg]) * weight).sum() / norm
            pts = d.anchors.points[None].expand(b, -1, -1)[fg]
            stride = d.anchors.strides[None].expand(b, -1)[fg][:, None]
            tb = res.target_boxes[fg]
            ltrb = torch.cat((pts - tb[:, :2], tb[:, 2:] - pts), -1) / stride  # [P, 4]
            dfl = distribution_focal_loss(d.box_logits[fg].reshape(-1, self.reg_max), ltrb.reshape(-1))
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
