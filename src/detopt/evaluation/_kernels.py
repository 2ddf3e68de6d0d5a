"""numba kernels of the COCO bbox evaluation (matching and accumulation).

They reproduce pycocotools' ``COCOeval`` (``evaluateImg`` and ``accumulate``) operation for
operation in float64, so the numbers agree bit for bit, but over flat arrays:

* ground truth is sorted by (category, image, file order) and detections by (category, image,
  -score, file order); an (image, category) pair is a run of equal keys in both arrays;
* ``match_pairs`` computes each pair's IoU matrix with pycocotools' ``bbIou`` arithmetic and runs
  the greedy matching for every area range and IoU threshold; a detection's outcome is one
  ``int8`` per (area range, threshold): 0 false positive, 1 true positive, 2 ignored;
* ``accumulate`` walks each category's detections in pycocotools' global order (-score, image,
  rank) and writes the 101-point interpolated precision, the recall and the score arrays.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = {"cache": True, "nogil": True}

FALSE_POSITIVE = 0
TRUE_POSITIVE = 1
IGNORED = 2


@nb.njit(**_JIT)
def pair_bounds(gt_key: np.ndarray, dt_key: np.ndarray) -> np.ndarray:
    """Runs of equal keys in two sorted key arrays, merged.

    gt_key: int64[G] sorted, dt_key: int64[D] sorted.
    Returns int64[P, 4] rows (gt_start, gt_end, dt_start, dt_end), one per distinct key.
    """
    n_g = gt_key.shape[0]
    n_d = dt_key.shape[0]
    out = np.empty((n_g + n_d, 4), np.int64)
    i = 0
    j = 0
    p = 0
    while i < n_g or j < n_d:
        if j >= n_d or (i < n_g and gt_key[i] <= dt_key[j]):
            key = gt_key[i]
        else:
            key = dt_key[j]
        i0 = i
        while i < n_g and gt_key[i] == key:
            i += 1
        j0 = j
        while j < n_d and dt_key[j] == key:
            j += 1
        out[p, 0] = i0
        out[p, 1] = i
        out[p, 2] = j0
        out[p, 3] = j
        p += 1
    return out[:p]


@nb.njit(**_JIT, inline="always")
def bb_iou(dx: float, dy: float, dw: float, dh: float, gx: float, gy: float, gw: float, gh: float,
           crowd: bool) -> float:
    """pycocotools ``bbIou`` for one pair of xywh boxes (float64, same operation order).
    Scalars, not array rows: array arguments cost atomic reference counting per call."""
    w = min(dw + dx, gw + gx) - max(dx, gx)
    if w <= 0:
        return 0.0
    h = min(dh + dy, gh + gy) - max(dy, gy)
    if h <= 0:
        return 0.0
    inter = w * h
    da = dw * dh
    if crowd:
        return inter / da
    return inter / (da + gw * gh - inter)


@nb.njit(**_JIT, parallel=True)
def match_pairs(bounds: np.ndarray, gt_box: np.ndarray, gt_area: np.ndarray, gt_crowd: np.ndarray,
                gt_id_zero: np.ndarray, dt_box: np.ndarray, area_lo: np.ndarray, area_hi: np.ndarray,
                iou_thrs: np.ndarray, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of every (image, category) pair.

    bounds: int64[P, 4] from ``pair_bounds``; gt_box: float64[G, 4] xywh; gt_area: float64[G];
    gt_crowd, gt_id_zero: bool[G]; dt_box: float64[D, 4] xywh sorted by -score within a pair;
    area_lo, area_hi: float64[A]; iou_thrs: float64[T]; max_det: detections kept per pair.
    Returns (status int8[A, T, D] -- 0 FP, 1 TP, 2 ignored --, rank int64[D] -- position of the
    detection within its pair; detections with rank >= max_det are not evaluated).
    """
    n_area = area_lo.shape[0]
    n_thr = iou_thrs.shape[0]
    n_det = dt_box.shape[0]
    status = np.full((n_area, n_thr, n_det), IGNORED, np.int8)
    rank = np.empty(n_det, np.int64)
    for p in nb.prange(bounds.shape[0]):
        g0, g1, d0, d1 = bounds[p, 0], bounds[p, 1], bounds[p, 2], bounds[p, 3]
        for r in range(d1 - d0):
            rank[d0 + r] = r
        n_d = min(d1 - d0, max_det)
        n_g = g1 - g0
        if n_d == 0:
            continue
        ious = np.zeros((n_d, max(n_g, 1)))
        for di in range(n_d):
            d = d0 + di
            for gi in range(n_g):
                g = g0 + gi
                ious[di, gi] = bb_iou(dt_box[d, 0], dt_box[d, 1], dt_box[d, 2], dt_box[d, 3],
                                      gt_box[g, 0], gt_box[g, 1], gt_box[g, 2], gt_box[g, 3], gt_crowd[g])
        order = np.empty(n_g, np.int64)
        ignore = np.empty(n_g, np.bool_)
        taken = np.empty(n_g, np.bool_)
        for a in range(n_area):
            lo = area_lo[a]
            hi = area_hi[a]
            # ground truth order: regular first, then ignored, each in file order (stable)
            k = 0
            for gi in range(n_g):
                g = g0 + gi
                ignore[gi] = gt_crowd[g] or gt_area[g] < lo or gt_area[g] > hi
                if not ignore[gi]:
                    order[k] = gi
                    k += 1
            for gi in range(n_g):
                if ignore[gi]:
                    order[k] = gi
                    k += 1
            for t in range(n_thr):
                taken[:] = False
                thr = min(iou_thrs[t], 1 - 1e-10)
                for di in range(n_d):
                    best = thr
                    m = -1
                    for oi in range(n_g):
                        gi = order[oi]
                        if taken[gi] and not gt_crowd[g0 + gi]:
                            continue
                        if m > -1 and not ignore[m] and ignore[gi]:
                            break
                        v = ious[di, gi]
                        if v < best:
                            continue
                        best = v
                        m = gi
                    d = d0 + di
                    # pycocotools stores the matched ground-truth id and tests it for != 0: a
                    # match to an annotation with id 0 counts as no match (reproduced on purpose)
                    matched = m > -1 and not gt_id_zero[g0 + m]
                    if m > -1:
                        taken[m] = True
                    if m > -1 and ignore[m]:
                        status[a, t, d] = IGNORED
                    elif not matched:
                        area = dt_box[d, 2] * dt_box[d, 3]
                        status[a, t, d] = IGNORED if (area < lo or area > hi) else FALSE_POSITIVE
                    else:
                        status[a, t, d] = TRUE_POSITIVE
    return status, rank


@nb.njit(**_JIT, parallel=True)
def accumulate(order: np.ndarray, cat_start: np.ndarray, rank: np.ndarray, status: np.ndarray,
               score: np.ndarray, n_positive: np.ndarray, max_dets: np.ndarray, rec_thrs: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pycocotools ``accumulate`` over flat arrays.

    order: int64[D] detection indices, category by category, each sorted as pycocotools sorts
    (-score, image, rank); cat_start: int64[K + 1] offsets into ``order``; rank: int64[D];
    status: int8[A, T, D]; score: float64[D]; n_positive: int64[K, A] non-ignored ground truth;
    max_dets: int64[M] ascending; rec_thrs: float64[R].
    Returns precision float64[T, R, K, A, M], recall float64[T, K, A, M], scores float64[T, R, K, A, M]
    (-1 where a category has no non-ignored ground truth in the area range).
    """
    n_area, n_thr = status.shape[0], status.shape[1]
    n_cat = cat_start.shape[0] - 1
    n_max = max_dets.shape[0]
    n_rec = rec_thrs.shape[0]
    precision = -np.ones((n_thr, n_rec, n_cat, n_area, n_max))
    recall = -np.ones((n_thr, n_cat, n_area, n_max))
    scores = -np.ones((n_thr, n_rec, n_cat, n_area, n_max))
    eps = np.spacing(1.0)
    for k in nb.prange(n_cat):
        c0 = cat_start[k]
        c1 = cat_start[k + 1]
        sel = np.empty(c1 - c0, np.int64)
        rc = np.empty(c1 - c0)
        pr = np.empty(c1 - c0)
        for m in range(n_max):
            nd = 0
            for i in range(c0, c1):
                if rank[order[i]] < max_dets[m]:
                    sel[nd] = order[i]
                    nd += 1
            for a in range(n_area):
                npig = n_positive[k, a]
                if npig == 0:
                    continue
                for t in range(n_thr):
                    tp = 0.0
                    fp = 0.0
                    for i in range(nd):
                        s = status[a, t, sel[i]]
                        if s == TRUE_POSITIVE:
                            tp += 1.0
                        elif s == FALSE_POSITIVE:
                            fp += 1.0
                        rc[i] = tp / npig
                        pr[i] = tp / (fp + tp + eps)
                    recall[t, k, a, m] = rc[nd - 1] if nd else 0.0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    # np.searchsorted(rc, rec_thrs, side="left"), both ascending
                    i = 0
                    for r in range(n_rec):
                        while i < nd and rc[i] < rec_thrs[r]:
                            i += 1
                        if i >= nd:
                            for r2 in range(r, n_rec):
                                precision[t, r2, k, a, m] = 0.0
                                scores[t, r2, k, a, m] = 0.0
                            break
                        precision[t, r, k, a, m] = pr[i]
                        scores[t, r, k, a, m] = score[sel[i]]
    return precision, recall, scores
