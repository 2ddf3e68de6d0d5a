"""Matrix NMS (SOLOv2) on boxes: the numba kernel (CPU, multi-level grid), its torch twin and
the public function.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch
from torch import Tensor

from detopt.errors import DetoptInputError
from detopt.ops._array import ArrayLike, check_threshold
from detopt.ops._grid import JIT, columns_of, level_grid, level_query, pair_iou, sort_by_score
from detopt.ops._pairwise import areas, iou_matrix, score_order
from detopt.ops.nms._prepared import Prepared

_MATRIX_EPS = 1e-12


@nb.njit(**JIT)
def matrix_nms_kernel(boxes, scores, labels, use_labels, gaussian, sigma, eps):
    """Matrix NMS (SOLOv2, Wang et al. 2020) on boxes. Returns the decay factor of every box
    in input order; only pairs that intersect (same label) contribute, which equals the dense
    matrix formula (the other terms are >= 1 and the minimum is capped at 1 by the top box).
    """
    n = boxes.shape[0]
    x1, y1, x2, y2, area = columns_of(boxes)
    order = sort_by_score(scores)
    rank = np.empty(n, np.int64)
    for r in range(n):
        rank[order[r]] = r
    grid = level_grid(x1, y1, x2, y2, area, order)
    buf = np.empty(max(n, 1), np.int64)
    comp = np.zeros(n, scores.dtype)
    one = np.ones(1, scores.dtype)[0]
    decay = np.empty(n, scores.dtype)
    for r in range(n):
        j = order[r]
        best = comp[j]
        dmin = one
        if area[j] > 0:
            jx1, jy1, jx2, jy2, ja = x1[j], y1[j], x2[j], y2[j], area[j]
            cnt = level_query(grid, jx1, jy1, jx2, jy2, 0.0, buf)
            for t in range(cnt):
                i = buf[t]
                if rank[i] >= r:
                    continue
                if use_labels and labels[i] != labels[j]:
                    continue
                iou = pair_iou(x1[i], y1[i], x2[i], y2[i], area[i], jx1, jy1, jx2, jy2, ja)
                if not iou > 0:
                    continue
                if iou > best:
                    best = iou
                ci = comp[i]
                if gaussian:
                    ratio = np.exp(-(sigma * (iou * iou))) / np.exp(-(sigma * (ci * ci)))
                else:
                    ratio = (one - iou) / max(one - ci, eps)
                if ratio < dmin:
                    dmin = ratio
        comp[j] = best
        decay[j] = dmin
    return decay


# --------------------------------------------------------------------------- torch twin
def matrix_nms_decay_torch(boxes: Tensor, scores: Tensor, labels: Tensor | None, gaussian: bool,
                     sigma: float, eps: float) -> Tensor:
    """SOLOv2 matrix decay factors in input order (dense ``[N, N]`` formula)."""
    n = boxes.shape[0]
    if n == 0:
        return scores.new_zeros(0)
    order = score_order(scores)
    b = boxes[order]
    area = areas(b)
    iou = iou_matrix(b, b, area, area).triu(1)
    if labels is not None:
        lab = labels[order]
        iou = torch.where(lab[:, None] == lab[None, :], iou, 0)
    comp = iou.max(0).values[:, None]
    dt = b.dtype
    if gaussian:
        sig = torch.tensor(sigma, dtype=dt, device=b.device)
        ratio = torch.exp(-(sig * (iou * iou))) / torch.exp(-(sig * (comp * comp)))
    else:
        ratio = (1 - iou) / (1 - comp).clamp(min=torch.tensor(eps, dtype=dt, device=b.device))
    decay_sorted = ratio.min(0).values
    decay = torch.empty_like(decay_sorted)
    decay[order] = decay_sorted
    return decay


# --------------------------------------------------------------------------- public
def matrix_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike | None = None,
               kernel: str = "gaussian", sigma: float = 2.0) -> ArrayLike:
    """Matrix NMS (SOLOv2, Wang et al. 2020) applied to boxes, per label when given.

    For boxes sorted by decreasing score, ``decay_j = min_i f(iou_ij) / f(comp_i)`` over
    higher-scored boxes i of the same label, where ``comp_i`` is the largest IoU of box i with
    a box above it. Gaussian ``f(x) = exp(-sigma · x²)``; linear ``f(x) = 1 - x`` with the
    denominator clamped at 1e-12 (deviation from the paper: exact duplicates give 0, not NaN).

    Returns:
        ``[N]`` decayed scores ``scores · decay`` in input order (nothing is removed; threshold
        them or take the top-k afterwards).
    """
    if kernel not in ("gaussian", "linear"):
        raise DetoptInputError(f"kernel: expected 'gaussian' or 'linear', got {kernel!r}")
    sigma = check_threshold(sigma, "sigma")
    p = Prepared(boxes, scores, labels)
    gaussian = kernel == "gaussian"
    if p.torch_path:
        s = p.t_scores()
        return s * matrix_nms_decay_torch(p.t_boxes(), s, p.t_labels(), gaussian, sigma,
                                                 _MATRIX_EPS)
    s = p.np_scores()
    decay = matrix_nms_kernel(p.np_boxes(), s, p.np_labels(), p.labels is not None,
                                       gaussian, p.scalar(sigma), p.scalar(_MATRIX_EPS))
    return p.out(s * decay)
