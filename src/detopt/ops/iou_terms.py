"""Element-wise IoU-family terms on broadcastable ``[..., 4] xyxy`` tensors.

The pairwise ops (``box_iou`` & co.), the IoU-family losses and the assigners all compute their
values from these functions, so the three always agree: pairwise calls broadcast ``a[:, None]``
against ``b[None]``, losses pass aligned ``[N, 4]`` pairs, assigners pass batched
``[B, M, 1, 4]`` against ``[B, 1, A, 4]``. Every division is guarded with ``torch.where`` on both
branches, so values *and* gradients stay finite for degenerate boxes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def box_wh(t: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of ``t: [..., 4] xyxy``, clamped at 0 -> ``[...]`` each."""
    return (t[..., 2] - t[..., 0]).clamp(min=0), (t[..., 3] - t[..., 1]).clamp(min=0)


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0 (gradient-safe)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def inter_union_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection, union and IoU of broadcast pairs ``a: [..., 4]``, ``b: [..., 4]``."""
    wa, ha = box_wh(a)
    wb, hb = box_wh(b)
    iw = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    ih = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = wa * ha + wb * hb - inter
    return inter, union, safe_div(inter, union)


def enclosing_wh(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing each broadcast pair."""
    ew = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    eh = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    return ew.clamp(min=0), eh.clamp(min=0)


def giou_penalty(a: Tensor, b: Tensor, union: Tensor) -> Tensor:
    """``(C - U) / C`` with ``C`` the enclosing area (0 where ``C = 0``)."""
    ew, eh = enclosing_wh(a, b)
    c = ew * eh
    return safe_div(c - union, c)


def center_distance_ratio(a: Tensor, b: Tensor) -> Tensor:
    """``d² / c²``: squared centre distance over squared enclosing diagonal (0 when c = 0)."""
    ew, eh = enclosing_wh(a, b)
    c2 = ew * ew + eh * eh
    dx = (a[..., 0] + a[..., 2]) * 0.5 - (b[..., 0] + b[..., 2]) * 0.5
    dy = (a[..., 1] + a[..., 3]) * 0.5 - (b[..., 1] + b[..., 3]) * 0.5
    return safe_div(dx * dx + dy * dy, c2)


def aspect_term(a: Tensor, b: Tensor, eps: float = 0.0) -> Tensor:
    """CIoU's ``v = 4/π² (atan(w_b/h_b) - atan(w_a/h_a))²``, via ``atan2(w, h + eps)``.

    ``eps = 0`` is the exact definition (finite values, and atan2 handles ``h = 0``); losses pass a
    small ``eps`` so the gradient of ``atan2`` at ``w = h = 0`` is finite too.
    """
    wa, ha = box_wh(a)
    wb, hb = box_wh(b)
    diff = torch.atan2(wb, hb + eps) - torch.atan2(wa, ha + eps)
    return (4.0 / (math.pi**2)) * diff * diff


def ciou_alpha(iou: Tensor, v: Tensor) -> Tensor:
    """CIoU's trade-off ``α = v / (1 - IoU + v)`` (0 where the denominator is 0)."""
    return safe_div(v, 1 - iou + v)
