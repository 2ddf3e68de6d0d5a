"""Greedy NMS and DIoU-NMS: the numba kernel (CPU, multi-level grid), its torch twin (GPU and
export: the Cluster-NMS fixed point) and the public functions. Both paths give the same indices.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch
from torch import Tensor

from detopt.errors import DetoptInputError
from detopt.ops._array import ArrayLike, check_threshold
from detopt.ops._grid import (
    JIT,
    centers_of,
    columns_of,
    label_groups,
    level_grid,
    level_query,
    level_remove,
    pair_diou_penalty,
    pair_iou,
    sort_by_score,
)
from detopt.ops._pairwise import BLOCK, areas, diou_penalty, iou_matrix, score_order
from detopt.ops.nms._prepared import Prepared


@nb.njit(**JIT)
def _greedy_members(x1, y1, x2, y2, area, cx, cy, members, thr, diou, beta, suppressed):
    """Greedy NMS over ``members`` (indices sorted by decreasing score).

    Suppress j (later) when crit(i, j) > thr for a kept i, crit = IoU or IoU - (d²/c²)^β.
    Marks ``suppressed`` in place.
    """
    n = members.shape[0]
    if n == 0:
        return
    if thr < 0:
        # Pairs that do not intersect can exceed a negative threshold: compare with every
        # kept box (O(N·K)), no spatial pruning.
        kept = np.empty(n, np.int64)
        nk = 0
        for m in range(n):
            j = members[m]
            for k in range(nk):
                i = kept[k]
                v = pair_iou(x1[i], y1[i], x2[i], y2[i], area[i], x1[j], y1[j], x2[j], y2[j], area[j])
                if diou:
                    v = v - pair_diou_penalty(x1[i], y1[i], x2[i], y2[i], cx[i], cy[i],
                                       x1[j], y1[j], x2[j], y2[j], cx[j], cy[j], beta)
                if v > thr:
                    suppressed[j] = True
                    break
            if not suppressed[j]:
                kept[nk] = j
                nk += 1
        return
    # gather in score order: local position == rank, cell lists come out rank-sorted
    gx1 = np.empty(n, x1.dtype)
    gy1 = np.empty(n, x1.dtype)
    gx2 = np.empty(n, x1.dtype)
    gy2 = np.empty(n, x1.dtype)
    ga = np.empty(n, x1.dtype)
    gcx = np.empty(n, x1.dtype)
    gcy = np.empty(n, x1.dtype)
    for m in range(n):
        i = members[m]
        gx1[m] = x1[i]
        gy1[m] = y1[i]
        gx2[m] = x2[i]
        gy2[m] = y2[i]
        ga[m] = area[i]
        gcx[m] = cx[i]
        gcy[m] = cy[i]
    grid = level_grid(gx1, gy1, gx2, gy2, ga, np.arange(n))
    sup = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int64)
    for r in range(n):
        if sup[r] or ga[r] <= 0:
            continue
        level_remove(grid, r)
        rx1, ry1, rx2, ry2, ra = gx1[r], gy1[r], gx2[r], gy2[r], ga[r]
        cnt = level_query(grid, rx1, ry1, rx2, ry2, thr, buf)
        for t in range(cnt):
            q = buf[t]
            if q <= r or sup[q]:
                continue
            v = pair_iou(rx1, ry1, rx2, ry2, ra, gx1[q], gy1[q], gx2[q], gy2[q], ga[q])
            if not v > thr:
                continue
            if diou:
                v = v - pair_diou_penalty(rx1, ry1, rx2, ry2, gcx[r], gcy[r],
                                   gx1[q], gy1[q], gx2[q], gy2[q], gcx[q], gcy[q], beta)
                if not v > thr:
                    continue
            sup[q] = True
            level_remove(grid, q)
    for m in range(n):
        if sup[m]:
            suppressed[members[m]] = True


@nb.njit(**JIT)
def nms_kernel(boxes, scores, labels, use_labels, thr, diou, beta):
    """Greedy (DIoU-)NMS, per label when ``use_labels``. Returns kept indices (int64) sorted
    by decreasing score, ties by lower index."""
    n = boxes.shape[0]
    x1, y1, x2, y2, area = columns_of(boxes)
    cx, cy = centers_of(x1, y1, x2, y2)
    order = sort_by_score(scores)
    suppressed = np.zeros(n, np.bool_)
    if use_labels:
        grouped, bounds = label_groups(labels, order)
        for g in range(bounds.shape[0] - 1):
            _greedy_members(x1, y1, x2, y2, area, cx, cy, grouped[bounds[g] : bounds[g + 1]], thr, diou,
                    beta, suppressed)
    else:
        _greedy_members(x1, y1, x2, y2, area, cx, cy, order, thr, diou, beta, suppressed)
    nk = 0
    for r in range(n):
        if not suppressed[order[r]]:
            nk += 1
    keep = np.empty(nk, np.int64)
    k = 0
    for r in range(n):
        if not suppressed[order[r]]:
            keep[k] = order[r]
            k += 1
    return keep


# --------------------------------------------------------------------------- torch twin
def nms_torch(boxes: Tensor, scores: Tensor, labels: Tensor | None, thr: float, diou: bool = False,
        beta: float = 1.0) -> Tensor:
    """Greedy (DIoU-)NMS by the Cluster-NMS fixed point (Zheng et al. 2021).

    ``keep[j] = not any(keep[i] and S[i, j] for i < j)`` iterated from all-ones converges to
    the greedy result: after t rounds the first t + 1 entries are final.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = score_order(scores)
    b = boxes[order]
    area = areas(b)
    lab = labels[order] if labels is not None else None
    thr_t = torch.tensor(thr, dtype=b.dtype, device=b.device)
    cols = torch.arange(n, device=b.device)
    sup = torch.zeros((n, n), dtype=torch.bool, device=b.device)
    for s0 in range(0, n, BLOCK):
        rows = slice(s0, min(n, s0 + BLOCK))
        v = iou_matrix(b[rows], b, area[rows], area)
        if diou:
            v = v - diou_penalty(b[rows], b, beta)
        m = (v > thr_t) & (cols[None, :] > cols[rows, None])
        if lab is not None:
            m &= lab[rows, None] == lab[None, :]
        sup[rows] = m
    keep = torch.ones(n, dtype=torch.bool, device=b.device)
    while True:
        new = ~(sup & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


# --------------------------------------------------------------------------- public
def _run(p: Prepared, thr: float, diou: bool, beta: float) -> ArrayLike:
    if p.torch_path:
        return nms_torch(p.t_boxes(), p.t_scores(), p.t_labels(), thr, diou, beta)
    keep = nms_kernel(p.np_boxes(), p.np_scores(), p.np_labels(), p.labels is not None,
                               p.scalar(thr), diou, p.scalar(beta))
    return p.out(keep)


def _diou(p: Prepared, iou_threshold: float, beta: float) -> ArrayLike:
    beta = check_threshold(beta, "beta")
    if beta <= 0:
        raise DetoptInputError(f"beta: must be > 0, got {beta}")
    return _run(p, check_threshold(iou_threshold, "iou_threshold"), True, beta)


def nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float) -> ArrayLike:
    """Greedy non-maximum suppression (torchvision semantics).

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scored box is
            ``> iou_threshold``.

    Returns:
        ``[K]`` int64 indices of the kept boxes, by decreasing score (ties: lower index first).
    """
    p = Prepared(boxes, scores)
    return _run(p, check_threshold(iou_threshold, "iou_threshold"), False, 1.0)


def batched_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike,
                iou_threshold: float) -> ArrayLike:
    """NMS run independently per label (boxes of different labels never suppress each other).

    Args:
        boxes: ``[N, 4]`` xyxy. scores: ``[N]``. labels: ``[N]`` integer class ids.

    Returns:
        ``[K]`` int64 indices, by decreasing score over all labels (ties: lower index first).
    """
    p = Prepared(boxes, scores, labels)
    return _run(p, check_threshold(iou_threshold, "iou_threshold"), False, 1.0)


def diou_nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float,
             beta: float = 1.0) -> ArrayLike:
    """DIoU-NMS (Zheng et al. 2020): drop a box when ``IoU - (d²/c²)^β > iou_threshold`` with
    a kept, higher-scored box (d: centre distance, c: diagonal of the enclosing box).

    Returns ``[K]`` int64 indices by decreasing score.
    """
    return _diou(Prepared(boxes, scores), iou_threshold, beta)


def batched_diou_nms(boxes: ArrayLike, scores: ArrayLike, labels: ArrayLike,
                     iou_threshold: float, beta: float = 1.0) -> ArrayLike:
    """:func:`diou_nms` run independently per label."""
    return _diou(Prepared(boxes, scores, labels), iou_threshold, beta)
