"""What every assigner shares: the result type, input checks, and target building.

Call shape (all assigners)::

    assigner(pred_scores, pred_boxes, anchors, gt_labels, gt_boxes, gt_mask) -> AssignResult

- ``pred_scores: [B, A, C]`` class **probabilities** (sigmoid already applied, detached);
- ``pred_boxes: [B, A, 4]`` decoded xyxy boxes in input pixels (detached);
- ``anchors``: :class:`detopt.anchors.Anchors` (boxes ``[A, 4]``, strides, level sizes); the
  Hungarian matcher, which matches queries, accepts ``None``;
- ``gt_labels: [B, M]`` int64, ``gt_boxes: [B, M, 4]`` xyxy, ``gt_mask: [B, M]`` bool — ground
  truth padded to ``M`` per image; ``gt_mask`` is False on padding, which is never assigned.

Assigners run under ``torch.no_grad`` and never modify their inputs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detopt.anchors import Anchors
from detopt.errors import DetoptInputError

#: ``target_labels`` value of anchors an assigner neither trains as positive nor as negative.
IGNORE = -1


class AssignResult(NamedTuple):
    """Training targets for every anchor.

    Attributes:
        target_labels: ``[B, A]`` int64: the class of the assigned GT on positives, ``C``
            (background) on negatives, ``IGNORE`` (-1) where the assigner ignores the anchor.
        target_boxes: ``[B, A, 4]`` the assigned GT box on positives, 0 elsewhere.
        target_scores: ``[B, A, C]`` classification targets: one-hot of the label times the
            assigner's quality (1, IoU, or the normalised alignment) on positives, 0 elsewhere.
        fg_mask: ``[B, A]`` bool, positives.
        gt_index: ``[B, A]`` int64 index into the padded GT list on positives, -1 elsewhere.
    """

    target_labels: Tensor
    target_boxes: Tensor
    target_scores: Tensor
    fg_mask: Tensor
    gt_index: Tensor


class AssignInputs(NamedTuple):
    """One call's inputs (shapes in the module docstring); ``assign`` implementations take this."""

    pred_scores: Tensor
    pred_boxes: Tensor
    anchors: Anchors | None
    gt_labels: Tensor
    gt_boxes: Tensor
    gt_mask: Tensor


def check_inputs(x: AssignInputs, need_anchors: bool = True) -> None:
    pred_scores, pred_boxes, anchors, gt_labels, gt_boxes, gt_mask = x
    if pred_scores.ndim != 3:
        raise DetoptInputError(f"pred_scores: expected [B, A, C], got {tuple(pred_scores.shape)}")
    b, a, _ = pred_scores.shape
    if pred_boxes.shape != (b, a, 4):
        raise DetoptInputError(f"pred_boxes: expected [{b}, {a}, 4], got {tuple(pred_boxes.shape)}")
    if need_anchors:
        if not isinstance(anchors, Anchors):
            raise DetoptInputError(f"anchors: expected detopt.anchors.Anchors, got {type(anchors).__name__}")
        if len(anchors) != a:
            raise DetoptInputError(f"anchors: {len(anchors)} anchors for {a} predictions")
    if gt_boxes.ndim != 3 or gt_boxes.shape[0] != b or gt_boxes.shape[2] != 4:
        raise DetoptInputError(f"gt_boxes: expected [{b}, M, 4], got {tuple(gt_boxes.shape)}")
    m = gt_boxes.shape[1]
    if gt_labels.shape != (b, m) or gt_mask.shape != (b, m):
        raise DetoptInputError(
            f"gt_labels and gt_mask: expected [{b}, {m}], got {tuple(gt_labels.shape)} and "
            f"{tuple(gt_mask.shape)}"
        )
    if gt_mask.dtype != torch.bool:
        raise DetoptInputError(f"gt_mask: expected bool, got {gt_mask.dtype}")
    c = pred_scores.shape[2]
    valid = gt_labels[gt_mask]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= c):
        raise DetoptInputError(f"gt_labels: classes must be in [0, {c}), got {valid.min()}..{valid.max()}")


class Assigner:
    """Base of every assigner: ``__call__`` checks the inputs and runs :meth:`assign` without
    gradients. Subclasses implement :meth:`assign` (same arguments, already checked)."""

    #: False for matchers that ignore anchors (set prediction); ``anchors`` may then be None.
    needs_anchors: bool = True
    #: Side of the square anchor box of each location, in strides, when a dense anchor-free head
    #: trains with this assigner (1: the grid cell; IoU-based assigners want 5, as PP-YOLOE).
    anchor_cell: float = 1.0
    #: Constructor arguments used when training selects the assigner by name (``assigner=atss``).
    train_defaults: dict = {}  # noqa: RUF012 - read-only

    @torch.no_grad()
    def __call__(
        self,
        pred_scores: Tensor,
        pred_boxes: Tensor,
        anchors: Anchors | None,
        gt_labels: Tensor,
        gt_boxes: Tensor,
        gt_mask: Tensor,
    ) -> AssignResult:
        x = AssignInputs(pred_scores, pred_boxes, anchors, gt_labels, gt_boxes, gt_mask)
        check_inputs(x, self.needs_anchors)
        return self.assign(x)

    def assign(self, x: AssignInputs) -> AssignResult:
        """The targets of checked inputs (``x`` unpacks as the call's arguments)."""
        raise NotImplementedError


def build_targets(
    gt_index: Tensor,
    quality: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    num_classes: int,
    ignore: Tensor | None = None,
) -> AssignResult:
    """Targets from ``gt_index: [B, A]`` (-1 = negative) and ``quality: [B, A]`` (score target)."""
    fg = gt_index >= 0
    safe = gt_index.clamp(min=0)
    if gt_labels.shape[1] == 0:  # no GT slot at all: nothing to gather
        labels = torch.zeros_like(safe)
        boxes = torch.zeros((*safe.shape, 4), dtype=gt_boxes.dtype, device=gt_boxes.device)
    else:
        labels = gt_labels.gather(1, safe)
        boxes = gt_boxes.gather(1, safe[..., None].expand(-1, -1, 4))
    target_labels = torch.where(fg, labels, torch.full_like(labels, num_classes))
    if ignore is not None:
        target_labels = torch.where(ignore & ~fg, torch.full_like(labels, IGNORE), target_labels)
    target_boxes = torch.where(fg[..., None], boxes, torch.zeros_like(boxes))
    scores = torch.zeros((*fg.shape, num_classes + 1), dtype=quality.dtype, device=quality.device)
    scores.scatter_(2, torch.where(fg, labels, num_classes)[..., None], quality[..., None])
    return AssignResult(
        target_labels, target_boxes, scores[..., :num_classes], fg, torch.where(fg, gt_index, -1)
    )
