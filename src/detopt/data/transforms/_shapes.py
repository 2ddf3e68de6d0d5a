"""Object shapes through geometric transforms: polygons transformed, clipped, measured.

Every object is carried as polygons: its mask polygons when the sample has masks, else the four
corners of its box. A geometric transform maps the vertices (perspective divide included), clips
each polygon to a rectangle (Sutherland–Hodgman, a numba kernel) and reads off the new box (the
bounds of the clipped polygons — tight under rotation when masks are given) and the visible
fraction (clipped area / unclipped area, shoelace formula).
"""

from __future__ import annotations

import numba
import numpy as np

Polygons = list[np.ndarray]
"""One object's polygons: ``float32 [2P]`` absolute ``x1, y1, x2, y2, ...`` each."""


@numba.njit(cache=True, nogil=True, inline="always")
def _inside(x: float, y: float, edge: int, lo_x: float, lo_y: float, hi_x: float, hi_y: float) -> bool:
    if edge == 0:
        return x >= lo_x
    if edge == 1:
        return x <= hi_x
    if edge == 2:
        return y >= lo_y
    return y <= hi_y


@numba.njit(cache=True, nogil=True, inline="always")
def _cross(
    ax: float, ay: float, bx: float, by: float, edge: int, lo_x: float, lo_y: float, hi_x: float, hi_y: float
) -> tuple[float, float]:
    """Where segment a-b crosses the clip line of ``edge``."""
    if edge == 0 or edge == 1:
        x = lo_x if edge == 0 else hi_x
        t = (x - ax) / (bx - ax)
        return x, ay + t * (by - ay)
    y = lo_y if edge == 2 else hi_y
    t = (y - ay) / (by - ay)
    return ax + t * (bx - ax), y


@numba.njit(cache=True, nogil=True)
def _area(xs: np.ndarray, ys: np.ndarray, n: int) -> float:
    s = 0.0
    for i in range(n):
        j = (i + 1) % n
        s += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(s) * 0.5


@numba.njit(cache=True, nogil=True)
def clip_polygons(
    pts: np.ndarray, offsets: np.ndarray, lo_x: float, lo_y: float, hi_x: float, hi_y: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clip polygons to the rectangle ``[lo_x, hi_x] x [lo_y, hi_y]``.

    ``pts: float64 [P, 2]`` all vertices, polygon ``k`` is ``pts[offsets[k]:offsets[k+1]]``.
    Returns ``(out_pts [Q, 2], out_offsets [K+1], bounds [K, 4] xyxy (NaN when empty),
    clipped_area [K], full_area [K])``.
    """
    k = len(offsets) - 1
    cap = len(pts) + 4 * k + 8
    out = np.empty((cap, 2))
    out_off = np.zeros(k + 1, np.int64)
    bounds = np.full((k, 4), np.nan)
    clipped = np.zeros(k)
    full = np.zeros(k)
    bufx = np.empty(2 * (len(pts) + 8))
    bufy = np.empty(2 * (len(pts) + 8))
    tmpx = np.empty(2 * (len(pts) + 8))
    tmpy = np.empty(2 * (len(pts) + 8))
    w = 0
    for p in range(k):
        a, b = offsets[p], offsets[p + 1]
        n = b - a
        for i in range(n):
            bufx[i] = pts[a + i, 0]
            bufy[i] = pts[a + i, 1]
        full[p] = _area(bufx, bufy, n) if n >= 3 else 0.0
        for edge in range(4):
            if n == 0:
                break
            m = 0
            for i in range(n):
                cx, cy = bufx[i], bufy[i]
                px, py = bufx[i - 1] if i > 0 else bufx[n - 1], bufy[i - 1] if i > 0 else bufy[n - 1]
                cin = _inside(cx, cy, edge, lo_x, lo_y, hi_x, hi_y)
                pin = _inside(px, py, edge, lo_x, lo_y, hi_x, hi_y)
                if cin:
                    if not pin:
                        tmpx[m], tmpy[m] = _cross(px, py, cx, cy, edge, lo_x, lo_y, hi_x, hi_y)
                        m += 1
                    tmpx[m], tmpy[m] = cx, cy
                    m += 1
                elif pin:
                    tmpx[m], tmpy[m] = _cross(px, py, cx, cy, edge, lo_x, lo_y, hi_x, hi_y)
                    m += 1
            for i in range(m):
                bufx[i], bufy[i] = tmpx[i], tmpy[i]
            n = m
        if n > 0:
            x0, y0, x1, y1 = bufx[0], bufy[0], bufx[0], bufy[0]
            for i in range(n):
                x0 = min(x0, bufx[i])
                x1 = max(x1, bufx[i])
                y0 = min(y0, bufy[i])
                y1 = max(y1, bufy[i])
                out[w + i, 0] = bufx[i]
                out[w + i, 1] = bufy[i]
            bounds[p, 0], bounds[p, 1], bounds[p, 2], bounds[p, 3] = x0, y0, x1, y1
            clipped[p] = _area(bufx, bufy, n) if n >= 3 else 0.0
        w += n
        out_off[p + 1] = w
    return out[:w], out_off, bounds, clipped, full


def object_polygons(
    boxes: np.ndarray, masks: list[Polygons] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten every object's shape: ``(pts float64 [P, 2], offsets [K+1], owner [K])``.

    Objects without mask polygons (or all objects when ``masks`` is None) use their box corners.
    """
    pts, offs, owner = [], [0], []
    for i, b in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        polys = masks[i] if masks is not None and masks[i] else None
        if polys:
            for poly in polys:
                v = np.asarray(poly, np.float64).reshape(-1, 2)
                pts.append(v)
                offs.append(offs[-1] + len(v))
                owner.append(i)
        else:
            x0, y0, x1, y1 = b
            pts.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
            offs.append(offs[-1] + 4)
            owner.append(i)
    flat = np.concatenate(pts) if pts else np.zeros((0, 2))
    return flat, np.asarray(offs, np.int64), np.asarray(owner, np.int64)


def scale_polygon(p: np.ndarray, sx: float, sy: float, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """Polygon ``float32 [2P]`` with ``x -> x·sx + tx``, ``y -> y·sy + ty``."""
    q = np.asarray(p, np.float32).copy()
    q[0::2] = q[0::2] * sx + tx
    q[1::2] = q[1::2] * sy + ty
    return q


def apply_matrix(pts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``pts [P, 2]`` through the 3x3 (affine or perspective) matrix ``m``."""
    if not len(pts):
        return pts
    h = pts @ m[:, :2].T + m[:, 2]
    z = h[:, 2:3]
    if m[2, 0] == 0 and m[2, 1] == 0 and m[2, 2] == 1:
        return h[:, :2]
    return h[:, :2] / np.where(np.abs(z) < 1e-12, 1e-12, z)


def transform_shapes(
    boxes: np.ndarray,
    masks: list[Polygons] | None,
    m: np.ndarray,
    rect: tuple[float, float, float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Polygons]]:
    """Map objects through ``m`` and clip them to ``rect = (x0, y0, x1, y1)``.

    Returns ``(boxes float32 [N, 4], visible [N] in [0, 1], clipped area [N], masks)``:
    the bounds of the clipped shapes (zeros for objects clipped away), the visible fraction of
    each object's transformed area, its clipped area, and the clipped polygons. Without ``masks``
    those are the transformed box corners: later transforms in a pipeline then move the object's
    true outline (a rotated rectangle) instead of its loose axis-aligned box.
    """
    n = len(boxes)
    pts, offs, owner = object_polygons(boxes, masks)
    moved = apply_matrix(pts, m)
    out_pts, out_off, bounds, clipped, full = clip_polygons(moved, offs, *map(float, rect))
    new = np.zeros((n, 4))
    area_c, area_f = np.zeros(n), np.zeros(n)
    np.add.at(area_c, owner, clipped)
    np.add.at(area_f, owner, full)
    has = ~np.isnan(bounds[:, 0])
    first = np.ones(n, bool)
    for k in np.flatnonzero(has):  # union of an object's polygon bounds
        i = owner[k]
        if first[i]:
            new[i] = bounds[k]
            first[i] = False
        else:
            new[i, :2] = np.minimum(new[i, :2], bounds[k, :2])
            new[i, 2:] = np.maximum(new[i, 2:], bounds[k, 2:])
    visible = np.divide(area_c, area_f, out=np.zeros(n), where=area_f > 0)
    out_masks: list[Polygons] = [[] for _ in range(n)]
    for k in range(len(owner)):
        a, b = out_off[k], out_off[k + 1]
        if b - a >= 3:
            out_masks[owner[k]].append(out_pts[a:b].reshape(-1).astype(np.float32))
    return new.astype(np.float32), visible, area_c, out_masks
