"""numba kernels of the NMS family (CPU path).

All kernels take boxes sorted or unsorted as documented, in float32 or float64, and compute in
that dtype so the vectorized torch path (``_torch_paths``) gives the same numbers: every
expression here has a twin there with the same operations in the same order.

Soft-NMS has its own module (``_soft_kernel``: SIMD chunks of boxes).

Spatial pruning: NMS and matrix NMS use a multi-level grid of box centres
(``_level_grid``): a query visits only boxes that can intersect (or, for hard NMS, only boxes
whose size and centre allow IoU > t). WBF uses a uniform grid of fused cluster boxes
(``_grid_geometry``/``_cell``), re-registered as clusters move. Cost grows with local overlap,
not with N². Zero-area boxes are never registered: their IoU with anything is 0.

A note on literals: ``x if c else 0`` would unify float32 with int64 into float64 in numba and
change the arithmetic, so zeros of the coordinate dtype are written ``x - x``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_JIT = {"cache": True, "nogil": True}


# --------------------------------------------------------------------------- pair measures
@nb.njit(**_JIT, inline="always")
def _pos(x):
    return x if x > 0 else x - x


# Helpers take scalars, never arrays: an array argument of an inlined helper costs an atomic
# reference-count increment and decrement per call (numba's pruning keeps them inside loops),
# which once made those atomics the largest cost of a kernel loop.
@nb.njit(**_JIT, inline="always")
def _iou_vals(ax1, ay1, ax2, ay2, aa, bx1, by1, bx2, by2, ba):
    """IoU of boxes a and b in the coordinate dtype (0 when they do not intersect)."""
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    if iw > 0 and ih > 0:
        inter = iw * ih
        union = aa + ba - inter
        if union > 0:
            return inter / union
    return iw - iw


@nb.njit(**_JIT, inline="always")
def _diou_vals(ax1, ay1, ax2, ay2, acx, acy, bx1, by1, bx2, by2, bcx, bcy, beta):
    """``(d² / c²) ** beta`` for boxes a and b (0 when the enclosing diagonal is 0)."""
    ew = _pos(max(ax2, bx2) - min(ax1, bx1))
    eh = _pos(max(ay2, by2) - min(ay1, by1))
    c2 = ew * ew + eh * eh
    dx = acx - bcx
    dy = acy - bcy
    d2 = dx * dx + dy * dy
    pen = d2 / c2 if c2 > 0 else d2 - d2
    if beta != 1:
        pen = pen**beta
    return pen


@nb.njit(**_JIT)
def _areas(x1, y1, x2, y2):
    n = x1.shape[0]
    area = np.empty(n, x1.dtype)
    for i in range(n):
        area[i] = _pos(x2[i] - x1[i]) * _pos(y2[i] - y1[i])
    return area


@nb.njit(**_JIT)
def _centers(x1, y1, x2, y2):
    n = x1.shape[0]
    cx = np.empty(n, x1.dtype)
    cy = np.empty(n, x1.dtype)
    for i in range(n):
        cx[i] = (x1[i] + x2[i]) * 0.5  # exact: halving is exact in the storage dtype
        cy[i] = (y1[i] + y2[i]) * 0.5
    return cx, cy


# --------------------------------------------------------------------------- static grid
@nb.njit(**_JIT)
def _grid_geometry(x1, y1, x2, y2, area, members):
    """Cell geometry for the boxes ``members`` (indices). Returns (ox, oy, sx, sy, gx, gy)."""
    minx = np.inf
    miny = np.inf
    maxx = -np.inf
    maxy = -np.inf
    sw = 0.0
    sh = 0.0
    cnt = 0
    for m in range(members.shape[0]):
        i = members[m]
        if area[i] <= 0:
            continue
        minx = min(minx, float(x1[i]))
        miny = min(miny, float(y1[i]))
        maxx = max(maxx, float(x2[i]))
        maxy = max(maxy, float(y2[i]))
        sw += float(x2[i]) - float(x1[i])
        sh += float(y2[i]) - float(y1[i])
        cnt += 1
    if cnt == 0:
        return 0.0, 0.0, 0.0, 0.0, 1, 1
    gmax = max(1, int(math.sqrt(2.0 * cnt)))
    width = maxx - minx
    height = maxy - miny
    gx = min(gmax, max(1, int(width / (sw / cnt)))) if width > 0 else 1
    gy = min(gmax, max(1, int(height / (sh / cnt)))) if height > 0 else 1
    sx = gx / width if width > 0 else 0.0
    sy = gy / height if height > 0 else 0.0
    return minx, miny, sx, sy, gx, gy


@nb.njit(**_JIT, inline="always")
def _cell(v, o, s, g):
    c = int((float(v) - o) * s)
    if c < 0:
        return 0
    if c >= g:
        return g - 1
    return c


_SIGN = np.uint64(0x8000000000000000)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_DIGIT = np.uint64(0x7FF)  # 11-bit digits: 6 passes cover 64 bits


@nb.njit(**_JIT)
def _score_order(scores):
    """Indices sorting ``scores`` by decreasing value, ties by lower index (stable).

    LSD radix sort on the float64 bit patterns (order-preserving transform); passes whose digit
    is the same for every key are skipped, so float32 scores cost ~3 passes.
    """
    n = scores.shape[0]
    if n < 256:
        return np.argsort(-scores, kind="mergesort")
    vals = np.empty(n, np.float64)
    for i in range(n):
        vals[i] = np.float64(scores[i]) + 0.0  # -0.0 -> +0.0
    bits = vals.view(np.uint64)
    keys = np.empty(n, np.uint64)
    for i in range(n):
        u = bits[i]
        if u & _SIGN:
            keys[i] = u  # negative: descending key is the raw pattern
        else:
            keys[i] = (u ^ _ONES) & (_SIGN ^ _ONES)
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    count = np.empty(2049, np.int64)
    for p in range(6):
        shift = np.uint64(11 * p)
        count[:] = 0
        for i in range(n):
            count[np.int64((keys[i] >> shift) & _DIGIT) + 1] += 1
        if count.max() == n:
            continue
        for d in range(2048):
            count[d + 1] += count[d]
        for r in range(n):
            i = order[r]
            d = np.int64((keys[i] >> shift) & _DIGIT)
            tmp[count[d]] = i
            count[d] += 1
        order, tmp = tmp, order
    return order


# --------------------------------------------------------------------------- level grid
@nb.njit(**_JIT)
def _level_grid(x1, y1, x2, y2, area, members):
    """Multi-level grid of box centres.

    Boxes are bucketed by ``floor(log2(longest side))``; each level has square cells of about
    half its smallest side, and a box is registered once, in the cell of its centre. Within a
    cell, boxes keep the order of ``members``. Zero-area boxes are not registered.
    Boxes can be unregistered (``_level_remove``) so later queries skip them.
    Returns (lmin, nl, ox, oy, cs, gx, gy, wmax, hmax, cell0, start, cnt, items, cellof, slot).
    """
    n = members.shape[0]
    lev = np.empty(n, np.int64)
    lmin = 1 << 40
    lmax = -(1 << 40)
    for m in range(n):
        i = members[m]
        if area[i] <= 0:
            lev[m] = -(1 << 50)
            continue
        side = max(float(x2[i]) - float(x1[i]), float(y2[i]) - float(y1[i]))
        lv = math.frexp(side)[1] - 1  # floor(log2(side))
        lev[m] = lv
        lmin = min(lmin, lv)
        lmax = max(lmax, lv)
    if lmax < lmin:
        lmin = 0
        lmax = -1
    nl = lmax - lmin + 1
    sz = max(nl, 1)
    cnt = np.zeros(sz, np.int64)
    ox = np.full(sz, np.inf)
    oy = np.full(sz, np.inf)
    ex = np.full(sz, -np.inf)
    ey = np.full(sz, -np.inf)
    wmax = np.zeros(sz)
    hmax = np.zeros(sz)
    smin = np.full(sz, np.inf)
    for m in range(n):
        if lev[m] < lmin:
            continue
        i = members[m]
        k = lev[m] - lmin
        ccx = (float(x1[i]) + float(x2[i])) * 0.5
        ccy = (float(y1[i]) + float(y2[i])) * 0.5
        w = float(x2[i]) - float(x1[i])
        h = float(y2[i]) - float(y1[i])
        cnt[k] += 1
        ox[k] = min(ox[k], ccx)
        oy[k] = min(oy[k], ccy)
        ex[k] = max(ex[k], ccx)
        ey[k] = max(ey[k], ccy)
        wmax[k] = max(wmax[k], w)
        hmax[k] = max(hmax[k], h)
        smin[k] = min(smin[k], max(w, h))
    cs = np.ones(sz)
    gx = np.zeros(sz, np.int64)
    gy = np.zeros(sz, np.int64)
    cell0 = np.zeros(sz + 1, np.int64)
    for k in range(nl):
        if cnt[k] > 0:
            span = max(ex[k] - ox[k], ey[k] - oy[k])
            c = max(0.5 * smin[k], span / (int(math.sqrt(4.0 * cnt[k])) + 1))
            cs[k] = c if c > 0 else 1.0
            gx[k] = int((ex[k] - ox[k]) / cs[k]) + 1
            gy[k] = int((ey[k] - oy[k]) / cs[k]) + 1
        cell0[k + 1] = cell0[k] + gx[k] * gy[k]
    start = np.zeros(cell0[nl] + 1, np.int64)
    cell_of = np.empty(n, np.int64)
    nbox = x1.shape[0]
    cellof = np.full(nbox, -1, np.int64)
    slot = np.full(nbox, -1, np.int64)
    for m in range(n):
        if lev[m] < lmin:
            cell_of[m] = -1
            continue
        i = members[m]
        k = lev[m] - lmin
        ccx = (float(x1[i]) + float(x2[i])) * 0.5
        ccy = (float(y1[i]) + float(y2[i])) * 0.5
        inv = 1.0 / cs[k]  # same expression as in _level_query: the cell map stays monotone
        cx = min(int((ccx - ox[k]) * inv), gx[k] - 1)
        cy = min(int((ccy - oy[k]) * inv), gy[k] - 1)
        c = cell0[k] + cy * gx[k] + cx
        cell_of[m] = c
        start[c + 1] += 1
    for c in range(cell0[nl]):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    items = np.empty(start[cell0[nl]], np.int64)
    for m in range(n):
        c = cell_of[m]
        if c >= 0:
            i = members[m]
            items[fill[c]] = i
            cellof[i] = c
            slot[i] = fill[c]
            fill[c] += 1
    cnt = fill - start[:-1]
    return lmin, nl, ox, oy, cs, gx, gy, wmax, hmax, cell0, start, cnt, items, cellof, slot


@nb.njit(**_JIT, inline="always")
def _level_remove(grid, i):
    """Unregister box i (swap with the last box of its cell; order within a cell is lost)."""
    cnt = grid[11]
    items = grid[12]
    cellof = grid[13]
    slot = grid[14]
    c = cellof[i]
    if c < 0:
        return
    last = grid[10][c] + cnt[c] - 1
    j = items[last]
    items[slot[i]] = j
    slot[j] = slot[i]
    cnt[c] -= 1
    cellof[i] = -1


@nb.njit(**_JIT, inline="always")
def _level_query(grid, bx1, by1, bx2, by2, thr, buf):
    """Write into ``buf`` every registered box that may intersect the query box (``thr <= 1e-6``)
    or may have IoU > thr with it (``thr > 1e-6``; empty or tiny windows for ``thr >= 1``, where
    no pair qualifies); each at most once. Returns the count.

    IoU > t implies ``t·w < w_j < w / t`` (same for heights), so only a few size levels are
    visited, and ``|dcx| < (w + w_j)/2 - t·max(w, w_j) <= w·max(1 - t, (1 - t)/(2t))``.
    Intersection alone implies ``|dcx| < (w + w_j)/2``. Windows carry a 1e-6 relative margin.
    """
    lmin, nl, ox, oy, cs, gx, gy, wmax, hmax, cell0, start, cnt, items, _, _ = grid
    w = float(bx2) - float(bx1)
    h = float(by2) - float(by1)
    ccx = (float(bx1) + float(bx2)) * 0.5
    ccy = (float(by1) + float(by2)) * 0.5
    t = float(thr)
    ka = 0
    kb = nl - 1
    fx = np.inf
    if t > 1e-6:  # below that, side / t may overflow; the intersect-only window is a superset
        side = max(w, h)
        # exact floor(log2(.)) via frexp; the 1e-9 margins absorb the rounding of side·t, side/t
        ka = max(math.frexp(side * t * (1 - 1e-9))[1] - 1 - lmin, 0)
        kb = min(math.frexp(side / t * (1 + 1e-9))[1] - 1 - lmin, nl - 1)
        fx = max(1.0 - t, (1.0 - t) / (2.0 * t))
    m = 0
    for k in range(ka, kb + 1):
        g = gx[k]
        if g == 0:
            continue
        hx = min((w + wmax[k]) * 0.5, w * fx) * (1 + 1e-6) + 1e-12
        hy = min((h + hmax[k]) * 0.5, h * fx) * (1 + 1e-6) + 1e-12
        inv = 1.0 / cs[k]
        # truncation instead of floor is safe: both bounds are clamped, windows only widen
        cxa = max(int((ccx - hx - ox[k]) * inv), 0)
        cxb = min(int((ccx + hx - ox[k]) * inv), g - 1)
        if cxa > cxb:
            continue
        cya = max(int((ccy - hy - oy[k]) * inv), 0)
        cyb = min(int((ccy + hy - oy[k]) * inv), gy[k] - 1)
        for cy in range(cya, cyb + 1):
            row = cell0[k] + cy * g
            for c0 in range(row + cxa, row + cxb + 1):
                for t0 in range(start[c0], start[c0] + cnt[c0]):
                    buf[m] = items[t0]
                    m += 1
    return m


@nb.njit(**_JIT)
def _label_groups(labels, order):
    """Split ``order`` (score-sorted indices) into per-label groups keeping score order.

    Returns (grouped, bounds): ``grouped[bounds[g]:bounds[g+1]]`` is group g.
    """
    n = order.shape[0]
    lab = np.empty(n, np.int64)
    for r in range(n):
        lab[r] = labels[order[r]]
    by_label = np.argsort(lab, kind="mergesort")
    grouped = np.empty(n, np.int64)
    bounds_list = [0]
    for k in range(n):
        grouped[k] = order[by_label[k]]
        if k > 0 and lab[by_label[k]] != lab[by_label[k - 1]]:
            bounds_list.append(k)
    bounds_list.append(n)
    bounds = np.empty(len(bounds_list), np.int64)
    for k in range(len(bounds_list)):
        bounds[k] = bounds_list[k]
    return grouped, bounds


# --------------------------------------------------------------------------- greedy NMS
@nb.njit(**_JIT)
def _greedy(x1, y1, x2, y2, area, cx, cy, members, thr, diou, beta, suppressed):
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
                v = _iou_vals(x1[i], y1[i], x2[i], y2[i], area[i], x1[j], y1[j], x2[j], y2[j], area[j])
                if diou:
                    v = v - _diou_vals(x1[i], y1[i], x2[i], y2[i], cx[i], cy[i],
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
    grid = _level_grid(gx1, gy1, gx2, gy2, ga, np.arange(n))
    sup = np.zeros(n, np.bool_)
    buf = np.empty(n, np.int64)
    for r in range(n):
        if sup[r] or ga[r] <= 0:
            continue
        _level_remove(grid, r)
        rx1, ry1, rx2, ry2, ra = gx1[r], gy1[r], gx2[r], gy2[r], ga[r]
        cnt = _level_query(grid, rx1, ry1, rx2, ry2, thr, buf)
        for t in range(cnt):
            q = buf[t]
            if q <= r or sup[q]:
                continue
            v = _iou_vals(rx1, ry1, rx2, ry2, ra, gx1[q], gy1[q], gx2[q], gy2[q], ga[q])
            if not v > thr:
                continue
            if diou:
                v = v - _diou_vals(rx1, ry1, rx2, ry2, gcx[r], gcy[r],
                                   gx1[q], gy1[q], gx2[q], gy2[q], gcx[q], gcy[q], beta)
                if not v > thr:
                    continue
            sup[q] = True
            _level_remove(grid, q)
    for m in range(n):
        if sup[m]:
            suppressed[members[m]] = True


@nb.njit(**_JIT)
def nms_kernel(boxes, scores, labels, use_labels, thr, diou, beta):
    """Greedy (DIoU-)NMS, per label when ``use_labels``. Returns kept indices (int64) sorted
    by decreasing score, ties by lower index."""
    n = boxes.shape[0]
    x1 = boxes[:, 0].copy()
    y1 = boxes[:, 1].copy()
    x2 = boxes[:, 2].copy()
    y2 = boxes[:, 3].copy()
    area = _areas(x1, y1, x2, y2)
    cx, cy = _centers(x1, y1, x2, y2)
    order = _score_order(scores)
    suppressed = np.zeros(n, np.bool_)
    if use_labels:
        grouped, bounds = _label_groups(labels, order)
        for g in range(bounds.shape[0] - 1):
            _greedy(x1, y1, x2, y2, area, cx, cy, grouped[bounds[g] : bounds[g + 1]], thr, diou,
                    beta, suppressed)
    else:
        _greedy(x1, y1, x2, y2, area, cx, cy, order, thr, diou, beta, suppressed)
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


# --------------------------------------------------------------------------- matrix NMS
@nb.njit(**_JIT)
def matrix_nms_kernel(boxes, scores, labels, use_labels, gaussian, sigma, eps):
    """Matrix NMS (SOLOv2, Wang et al. 2020) on boxes. Returns the decay factor of every box
    in input order; only pairs that intersect (same label) contribute, which equals the dense
    matrix formula (the other terms are >= 1 and the minimum is capped at 1 by the top box).
    """
    n = boxes.shape[0]
    x1 = boxes[:, 0].copy()
    y1 = boxes[:, 1].copy()
    x2 = boxes[:, 2].copy()
    y2 = boxes[:, 3].copy()
    area = _areas(x1, y1, x2, y2)
    order = _score_order(scores)
    rank = np.empty(n, np.int64)
    for r in range(n):
        rank[order[r]] = r
    grid = _level_grid(x1, y1, x2, y2, area, order)
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
            cnt = _level_query(grid, jx1, jy1, jx2, jy2, 0.0, buf)
            for t in range(cnt):
                i = buf[t]
                if rank[i] >= r:
                    continue
                if use_labels and labels[i] != labels[j]:
                    continue
                iou = _iou_vals(x1[i], y1[i], x2[i], y2[i], area[i], jx1, jy1, jx2, jy2, ja)
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


# --------------------------------------------------------------------------- WBF
@nb.njit(**_JIT)
def wbf_kernel(boxes, wscores, weights, models, labels, iou_thr, n_models):
    """Cluster boxes as ensemble-boxes' weighted_boxes_fusion does.

    Inputs are prefiltered and sorted by decreasing weighted score (``wscores`` = score ·
    model weight). Each box joins the same-label cluster whose fused box has the highest IoU
    with it (first created on ties) when that IoU > ``iou_thr``, else starts a cluster. A fused
    box is the weighted-score average of its members, accumulated in float32 as
    ensemble-boxes does; a one-member cluster keeps its box as given.

    Returns per cluster: fused boxes [C, 4] float64, score sum, score max, member count,
    weight sum, label, and a [C, n_models]
    presence matrix.
    """
    n = boxes.shape[0]
    x1 = boxes[:, 0].copy()
    y1 = boxes[:, 1].copy()
    x2 = boxes[:, 2].copy()
    y2 = boxes[:, 3].copy()
    area = _areas(x1, y1, x2, y2)
    allidx = np.arange(n)
    ox, oy, sx, sy, gx, gy = _grid_geometry(x1, y1, x2, y2, area, allidx)
    ncell = gx * gy
    head = np.full(ncell, -1, np.int64)
    cap = max(16, 4 * n)
    nxt = np.empty(cap, np.int64)
    val = np.empty(cap, np.int64)
    ne = 0
    # cluster state
    acc = np.zeros((n, 4), np.float32)
    fx1 = np.empty(n, np.float64)
    fy1 = np.empty(n, np.float64)
    fx2 = np.empty(n, np.float64)
    fy2 = np.empty(n, np.float64)
    farea = np.empty(n, np.float64)
    conf = np.zeros(n, np.float64)
    cmax = np.zeros(n, np.float64)
    count = np.zeros(n, np.int64)
    wsum = np.zeros(n, np.float64)
    clabel = np.empty(n, np.int64)
    presence = np.zeros((n, n_models), np.bool_)
    reg = np.full((n, 4), -1, np.int64)  # registered cell range: cx0, cx1, cy0, cy1
    stamp = np.full(n, -1, np.int64)
    nc = 0
    for j in range(n):
        best = -1
        best_iou = iou_thr
        cx0 = _cell(x1[j], ox, sx, gx)
        cx1 = _cell(x2[j], ox, sx, gx)
        cy0 = _cell(y1[j], oy, sy, gy)
        cy1 = _cell(y2[j], oy, sy, gy)
        for gyc in range(cy0, cy1 + 1):
            for gxc in range(cx0, cx1 + 1):
                e = head[gyc * gx + gxc]
                while e >= 0:
                    k = val[e]
                    e = nxt[e]
                    if stamp[k] == j or clabel[k] != labels[j]:
                        continue
                    stamp[k] = j
                    iw = min(fx2[k], x2[j]) - max(fx1[k], x1[j])
                    ih = min(fy2[k], y2[j]) - max(fy1[k], y1[j])
                    if iw <= 0 or ih <= 0:
                        continue
                    inter = iw * ih
                    iou = inter / (farea[k] + area[j] - inter)
                    if iou > best_iou or (iou == best_iou and best >= 0 and k < best):
                        best_iou = iou
                        best = k
        if best < 0:
            k = nc
            nc += 1
            clabel[k] = labels[j]
            fx1[k] = x1[j]
            fy1[k] = y1[j]
            fx2[k] = x2[j]
            fy2[k] = y2[j]
            cmax[k] = wscores[j]
        else:
            k = best
        # accumulate (ensemble-boxes: box[4:] += score * coords in a float32 array)
        ws = wscores[j]
        acc[k, 0] = acc[k, 0] + ws * x1[j]
        acc[k, 1] = acc[k, 1] + ws * y1[j]
        acc[k, 2] = acc[k, 2] + ws * x2[j]
        acc[k, 3] = acc[k, 3] + ws * y2[j]
        conf[k] += ws
        count[k] += 1
        wsum[k] += weights[j]
        presence[k, models[j]] = True
        if count[k] > 1:
            fx1[k] = np.float32(acc[k, 0] / conf[k])
            fy1[k] = np.float32(acc[k, 1] / conf[k])
            fx2[k] = np.float32(acc[k, 2] / conf[k])
            fy2[k] = np.float32(acc[k, 3] / conf[k])
            if ws > cmax[k]:
                cmax[k] = ws
        farea[k] = (fx2[k] - fx1[k]) * (fy2[k] - fy1[k])
        # (re-)register the cluster in the cells its fused box covers
        kx0 = _cell(fx1[k], ox, sx, gx)
        kx1 = _cell(fx2[k], ox, sx, gx)
        ky0 = _cell(fy1[k], oy, sy, gy)
        ky1 = _cell(fy2[k], oy, sy, gy)
        if reg[k, 0] == kx0 and reg[k, 1] == kx1 and reg[k, 2] == ky0 and reg[k, 3] == ky1:
            continue
        for gyc in range(ky0, ky1 + 1):
            for gxc in range(kx0, kx1 + 1):
                c = gyc * gx + gxc
                if ne == cap:
                    cap *= 2
                    nn = np.empty(cap, np.int64)
                    nn[:ne] = nxt[:ne]
                    nxt = nn
                    nv = np.empty(cap, np.int64)
                    nv[:ne] = val[:ne]
                    val = nv
                nxt[ne] = head[c]
                val[ne] = k
                head[c] = ne
                ne += 1
        reg[k, 0] = kx0
        reg[k, 1] = kx1
        reg[k, 2] = ky0
        reg[k, 3] = ky1
    fused = np.empty((nc, 4), np.float64)
    for k in range(nc):
        fused[k, 0] = fx1[k]
        fused[k, 1] = fy1[k]
        fused[k, 2] = fx2[k]
        fused[k, 3] = fy2[k]
    return (fused, conf[:nc].copy(), cmax[:nc].copy(), count[:nc].copy(), wsum[:nc].copy(),
            clabel[:nc].copy(), presence[:nc].copy())
