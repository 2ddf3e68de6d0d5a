"""numba pieces shared by the NMS family and WBF (CPU path): pair measures, the score order,
the static grid (WBF's fused clusters) and the multi-level grid of box centres (hard and matrix
NMS: a query visits only boxes that can intersect, or for hard NMS only boxes whose size and
centre allow IoU > t). Cost grows with local overlap, not with N². Zero-area boxes are never
registered: their IoU with anything is 0.

Every expression here has a twin in ``_pairwise`` (torch) with the same operations in the same
order, so the numba kernels and the torch twins give the same numbers.

A note on literals: ``x if c else 0`` would unify float32 with int64 into float64 in numba and
change the arithmetic, so zeros of the coordinate dtype are written ``x - x``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

JIT = {"cache": True, "nogil": True}


# --------------------------------------------------------------------------- pair measures
@nb.njit(**JIT, inline="always")
def _pos(x):
    return x if x > 0 else x - x


# Helpers take scalars, never arrays: an array argument of an inlined helper costs an atomic
# reference-count increment and decrement per call (numba's pruning keeps them inside loops),
# which once made those atomics the largest cost of a kernel loop.
@nb.njit(**JIT, inline="always")
def pair_iou(ax1, ay1, ax2, ay2, aa, bx1, by1, bx2, by2, ba):
    """IoU of boxes a and b in the coordinate dtype (0 when they do not intersect)."""
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    if iw > 0 and ih > 0:
        inter = iw * ih
        union = aa + ba - inter
        if union > 0:
            return inter / union
    return iw - iw


@nb.njit(**JIT, inline="always")
def pair_diou_penalty(ax1, ay1, ax2, ay2, acx, acy, bx1, by1, bx2, by2, bcx, bcy, beta):
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


@nb.njit(**JIT)
def areas_of(x1, y1, x2, y2):
    n = x1.shape[0]
    area = np.empty(n, x1.dtype)
    for i in range(n):
        area[i] = _pos(x2[i] - x1[i]) * _pos(y2[i] - y1[i])
    return area


@nb.njit(**JIT)
def columns_of(boxes):
    """``boxes [N, 4]`` xyxy as contiguous columns plus areas: ``(x1, y1, x2, y2, area)``."""
    x1 = boxes[:, 0].copy()
    y1 = boxes[:, 1].copy()
    x2 = boxes[:, 2].copy()
    y2 = boxes[:, 3].copy()
    return x1, y1, x2, y2, areas_of(x1, y1, x2, y2)


@nb.njit(**JIT)
def centers_of(x1, y1, x2, y2):
    n = x1.shape[0]
    cx = np.empty(n, x1.dtype)
    cy = np.empty(n, x1.dtype)
    for i in range(n):
        cx[i] = (x1[i] + x2[i]) * 0.5  # exact: halving is exact in the storage dtype
        cy[i] = (y1[i] + y2[i]) * 0.5
    return cx, cy


# --------------------------------------------------------------------------- static grid
@nb.njit(**JIT)
def grid_geometry(x1, y1, x2, y2, area, members):
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


@nb.njit(**JIT, inline="always")
def grid_cell(v, o, s, g):
    c = int((float(v) - o) * s)
    if c < 0:
        return 0
    if c >= g:
        return g - 1
    return c


_SIGN = np.uint64(0x8000000000000000)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_DIGIT = np.uint64(0x7FF)  # 11-bit digits: 6 passes cover 64 bits


@nb.njit(**JIT)
def sort_by_score(scores):
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
@nb.njit(**JIT)
def level_grid(x1, y1, x2, y2, area, members):
    """Multi-level grid of box centres.

    Boxes are bucketed by ``floor(log2(longest side))``; each level has square cells of about
    half its smallest side, and a box is registered once, in the cell of its centre. Within a
    cell, boxes keep the order of ``members``. Zero-area boxes are not registered.
    Boxes can be unregistered (``level_remove``) so later queries skip them.
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
        inv = 1.0 / cs[k]  # same expression as in level_query: the cell map stays monotone
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


@nb.njit(**JIT, inline="always")
def level_remove(grid, i):
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


@nb.njit(**JIT, inline="always")
def level_query(grid, bx1, by1, bx2, by2, thr, buf):
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


@nb.njit(**JIT)
def label_groups(labels, order):
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
