"""Element-wise detection losses.

Every loss returns per-element values and takes ``reduction`` in ``{'none', 'mean', 'sum'}``
(docs/architecture.md). Classification losses take **logits** (never probabilities) and compute the
log-sigmoid terms with ``binary_cross_entropy_with_logits``, which is stable for large logits.
Box losses take aligned ``pred: [N, 4]`` and ``target: [N, 4]`` absolute ``xyxy`` boxes and are
``1 - value`` of the matching member of the IoU family; they share their terms with the pairwise
ops (``detopt.ops.box_iou`` & co.), so a loss equals ``1 -`` the ops' diagonal.

Weighting by anchors, normalising by the number of positives and similar are the caller's job,
through :func:`reduce_loss` (``weight=``, ``normalizer=``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detopt.errors import DetoptInputError
from detopt.ops.iou_terms import (
    aspect_term,
    center_distance_ratio,
    ciou_alpha,
    giou_penalty,
    inter_union_iou,
)

REDUCTIONS = ("none", "mean", "sum")

#: ``eps`` added to heights inside CIoU's ``atan(w / h)`` so its gradient is finite at ``w = h = 0``.
CIOU_EPS = 1e-7


def reduce_loss(
    loss: Tensor,
    reduction: str = "mean",
    weight: Tensor | None = None,
    normalizer: float | Tensor | None = None,
) -> Tensor:
    """Weight then reduce an element-wise ``loss``.

    ``weight`` broadcasts against ``loss``. ``normalizer`` (e.g. the number of positives, or the
    sum of target scores) replaces the element count of ``'mean'``; it is clamped at 1 so an image
    without positives does not divide by zero. ``'none'`` returns the weighted loss unreduced.
    """
    if reduction not in REDUCTIONS:
        raise DetoptInputError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if normalizer is None:
        return loss.mean()
    if isinstance(normalizer, Tensor):
        return loss.sum() / normalizer.clamp(min=1)
    return loss.sum() / max(float(normalizer), 1.0)


def _same_shape(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise DetoptInputError(f"{names}: shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017): ``α_t (1 - p_t)^γ · BCE(logits, targets)``.

    ``logits``, ``targets``: same shape (``targets`` one-hot or soft in ``[0, 1]``, float).
    ``p_t = p·t + (1-p)(1-t)``, ``α_t = α·t + (1-α)(1-t)``; ``alpha < 0`` disables ``α_t``.
    The paper normalises by the number of positives: ``reduce_loss(loss, 'mean', normalizer=n_pos)``.
    """
    _same_shape(logits, targets, "logits, targets")
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return reduce_loss(loss, reduction)


def softmax_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Multi-class (softmax) focal loss: ``-α_y (1 - p_y)^γ log p_y`` per sample.

    ``logits: [N, C]``, ``targets: [N]`` class indices (int64). ``alpha``: ``None`` (no weighting), a
    scalar, or per-class weights ``[C]`` (the usual fix for class imbalance). Returns ``[N]``.
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise DetoptInputError(
            f"logits [N, C] and targets [N] expected, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    targets = targets.long()
    logp = F.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    loss = -((1 - logp.exp()) ** gamma) * logp
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        loss = loss * (a[targets] if a.ndim else a)
    return reduce_loss(loss, reduction)


def quality_focal_loss(logits: Tensor, quality: Tensor, beta: float = 2.0, reduction: str = "none") -> Tensor:
    """Quality focal loss (Li et al. 2020, GFL): ``|y - σ(x)|^β · BCE(x, y)``.

    ``quality``: soft targets, same shape as ``logits`` (the IoU of the box on the positive
    class, 0 elsewhere). With ``y ∈ {0, 1}`` it is exactly the focal loss with ``γ = β`` and no
    ``α`` — the reduction the paper states. Written element-wise over all classes (the paper's
    form; implementations that split positives and negatives compute the same values).
    """
    _same_shape(logits, quality, "logits, quality")
    quality = quality.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, quality, reduction="none")
    loss = ce * (quality - torch.sigmoid(logits)).abs() ** beta
    return reduce_loss(loss, reduction)


def varifocal_loss(
    logits: Tensor, quality: Tensor, alpha: float = 0.75, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Varifocal loss (Zhang et al. 2021, VarifocalNet): asymmetric weighting of ``BCE(x, q)``.

    Where ``q > 0`` (positives) the weight is ``q`` itself; where ``q = 0`` it is ``α p^γ`` with
    ``p = σ(x)``. The weight is not detached (as in the paper's and mmdetection's code).
    """
    _same_shape(logits, quality, "logits, quality")
    quality = quality.to(logits.dtype)
    p = torch.sigmoid(logits)
    pos = quality > 0
    weight = torch.where(pos, quality, alpha * p**gamma)
    ce = F.binary_cross_entropy_with_logits(logits, quality, reduction="none")
    return reduce_loss(ce * weight, reduction)


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0, reduction: str = "none") -> Tensor:
    """Smooth L1 (Huber / β): ``0.5 x² / β`` where ``|x| < β``, else ``|x| - 0.5 β``; ``β = 0`` is L1."""
    _same_shape(pred, target, "pred, target")
    if beta < 0:
        raise DetoptInputError(f"beta: must be >= 0, got {beta}")
    x = (pred - target).abs()
    if beta == 0:
        return reduce_loss(x, reduction)
    loss = torch.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)
    return reduce_loss(loss, reduction)


def _check_aligned(pred: Tensor, target: Tensor) -> None:
    if pred.ndim != 2 or pred.shape[-1] != 4:
        raise DetoptInputError(f"pred: expected [N, 4] xyxy boxes, got shape {tuple(pred.shape)}")
    _same_shape(pred, target, "pred, target")


def iou_loss(pred: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """``1 - IoU`` of aligned pairs ``pred, target: [N, 4] xyxy`` -> ``[N]``."""
    _check_aligned(pred, target)
    return reduce_loss(1 - inter_union_iou(pred, target)[2], reduction)


def giou_loss(pred: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """``1 - GIoU`` (Rezatofighi et al. 2019) of aligned pairs -> ``[N]`` in ``[0, 2]``."""
    _check_aligned(pred, target)
    _, union, iou = inter_union_iou(pred, target)
    return reduce_loss(1 - iou + giou_penalty(pred, target, union), reduction)


def diou_loss(pred: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """``1 - DIoU`` (Zheng et al. 2020): ``1 - IoU + d²/c²`` of aligned pairs -> ``[N]``."""
    _check_aligned(pred, target)
    iou = inter_union_iou(pred, target)[2]
    return reduce_loss(1 - iou + center_distance_ratio(pred, target), reduction)


def ciou_loss(pred: Tensor, target: Tensor, reduction: str = "none", eps: float = CIOU_EPS) -> Tensor:
    """``1 - CIoU`` (Zheng et al. 2020): ``1 - IoU + d²/c² + α v`` of aligned pairs -> ``[N]``.

    As in the paper, ``α = v / (1 - IoU + v)`` is a constant for the gradient (computed under
    ``no_grad``). Deviation, named: ``v`` uses ``atan(w / (h + eps))`` so the gradient stays finite
    for boxes with ``w = h = 0``; ``eps = 0`` gives the exact ``complete_box_iou`` value.
    """
    _check_aligned(pred, target)
    iou = inter_union_iou(pred, target)[2]
    v = aspect_term(pred, target, eps)
    with torch.no_grad():
        alpha = ciou_alpha(iou, v)
    return reduce_loss(1 - iou + center_distance_ratio(pred, target) + alpha * v, reduction)


def distribution_focal_loss(logits: Tensor, target: Tensor, reduction: str = "none") -> Tensor:
    """Distribution focal loss (Li et al. 2020, GFL) for a discretized distance.

    ``logits: [N, reg_max]`` over the bins ``0 .. reg_max - 1``; ``target: [N]`` continuous
    distances in bin units. The target is clamped to ``[0, reg_max - 1 - 0.01]`` *before*
    ``floor``, so the right bin ``floor(t) + 1`` always exists; the left/right weights come from
    the clamped value: ``CE(left)·(right - t) + CE(right)·(t - left)`` -> ``[N]``.
    """
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise DetoptInputError(
            f"logits [N, reg_max] and target [N] expected, got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    reg_max = logits.shape[1]
    if reg_max < 2:
        raise DetoptInputError(f"logits: need at least 2 bins, got {reg_max}")
    t = target.to(logits.dtype).clamp(0, reg_max - 1 - 0.01)
    left = t.floor().long()
    right = left + 1
    w_left = right.to(t.dtype) - t
    w_right = t - left.to(t.dtype)
    logp = F.log_softmax(logits, dim=-1)
    loss = -logp.gather(1, left[:, None])[:, 0] * w_left - logp.gather(1, right[:, None])[:, 0] * w_right
    return reduce_loss(loss, reduction)
