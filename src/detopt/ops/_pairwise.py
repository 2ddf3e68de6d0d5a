"""torch pair measures shared by the torch twins of the NMS family (GPU and export path):
areas, the IoU matrix, the DIoU penalty and the score order. Twins of ``_grid``'s numba
measures, expression by expression.
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK = 4096  # rows of the pairwise matrix computed at once (bounds temporary memory)


def areas(b: Tensor) -> Tensor:
    """``b: [N, 4] xyxy`` -> ``[N]`` with widths/heights clamped at 0."""
    return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)


def iou_matrix(a: Tensor, b: Tensor, area_a: Tensor, area_b: Tensor) -> Tensor:
    """IoU of ``a: [N, 4]`` with ``b: [M, 4]`` -> ``[N, M]`` (0 where they do not intersect)."""
    iw = torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    ih = torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    ok = (iw > 0) & (ih > 0) & (union > 0)
    return torch.where(ok, inter / torch.where(ok, union, 1), 0)


def diou_penalty(a: Tensor, b: Tensor, beta: float) -> Tensor:
    """``(d² / c²) ** beta`` of ``a: [N, 4]`` against ``b: [M, 4]`` -> ``[N, M]``."""
    ew = (torch.maximum(a[:, None, 2], b[None, :, 2]) - torch.minimum(a[:, None, 0], b[None, :, 0]))
    eh = (torch.maximum(a[:, None, 3], b[None, :, 3]) - torch.minimum(a[:, None, 1], b[None, :, 1]))
    ew = ew.clamp(min=0)
    eh = eh.clamp(min=0)
    c2 = ew * ew + eh * eh
    cxa = (a[:, 0] + a[:, 2]) * 0.5
    cya = (a[:, 1] + a[:, 3]) * 0.5
    cxb = (b[:, 0] + b[:, 2]) * 0.5
    cyb = (b[:, 1] + b[:, 3]) * 0.5
    dx = cxa[:, None] - cxb[None, :]
    dy = cya[:, None] - cyb[None, :]
    d2 = dx * dx + dy * dy
    pen = torch.where(c2 > 0, d2 / torch.where(c2 > 0, c2, 1), 0)
    if beta != 1:
        pen = pen.pow(torch.tensor(beta, dtype=pen.dtype, device=pen.device))
    return pen


def score_order(scores: Tensor) -> Tensor:
    """Indices by decreasing score, ties by lower index."""
    return torch.sort(scores, descending=True, stable=True).indices
