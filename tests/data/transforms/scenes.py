"""Scenes for box-correctness tests: every object painted in its own colour, label = object id.

After a transform, the true box of object ``i`` is the bounding box of the pixels that still
have its colour — no detopt code involved.
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path

from detopt.data.transforms import Sample

BG = (0, 0, 0)


def colour(i: int) -> tuple[int, int, int]:
    """Distinct, far-apart colours (none black): a 6x6x6 lattice without the origin."""
    i = i + 1
    return (40 + 40 * (i % 6), 40 + 40 * ((i // 6) % 6), 40 + 40 * ((i // 36) % 6))


def make_scene(
    rng: np.random.Generator, h: int = 160, w: int = 200, n: int = 8, masks: bool = False, first: int = 0
) -> Sample:
    """``n`` objects on a grid of cells (no overlaps): rectangles, or convex polygons with masks.
    Object ids (labels, colours) are ``first .. first + n - 1``."""
    img = np.zeros((h, w, 3), np.uint8)
    cols, rows = 4, (n + 3) // 4
    cw, ch = w // cols, h // rows
    boxes, polys = [], []
    for i in range(n):
        cx0, cy0 = (i % cols) * cw, (i // cols) * ch
        x0, y0 = cx0 + rng.integers(1, cw // 3), cy0 + rng.integers(1, ch // 3)
        x1, y1 = x0 + rng.integers(6, cw - (x0 - cx0) - 1), y0 + rng.integers(6, ch - (y0 - cy0) - 1)
        if masks:  # a convex 16-gon on an ellipse (blunt corners: pixels follow its outline)
            ang = np.linspace(0, 2 * np.pi, 16, endpoint=False) + rng.uniform(0, 0.3)
            px = (x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(ang)
            py = (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(ang)
            pts = np.stack([px, py], 1)
            # paint exactly the pixels whose centre lies inside the polygon
            yy, xx = np.mgrid[0:h, 0:w]
            inside = Path(pts).contains_points(np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1))
            img[inside.reshape(h, w)] = colour(first + i)
            ys, xs = np.nonzero((img == colour(first + i)).all(-1))
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            polys.append([(pts).reshape(-1).astype(np.float32)])
        else:
            img[y0:y1, x0:x1] = colour(first + i)
            boxes.append([x0, y0, x1, y1])
    return Sample(img, np.array(boxes, np.float32), np.arange(first, first + n), polys if masks else None)


def visible_boxes(img: np.ndarray, n: int) -> dict[int, tuple[np.ndarray, int]]:
    """Object id -> (bounding box of its visible pixels [4], pixel count), visible objects only."""
    out = {}
    for i in range(n):
        ys, xs = np.nonzero((img == np.array(colour(i), np.uint8)).all(-1))
        if len(xs):
            out[i] = (np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64), len(xs))
    return out


def check_boxes(
    before: Sample,
    after: Sample,
    tol: float = 1.0,
    min_visible: float = 0.1,
    min_size: float = 2.0,
    area_scale: float | None = None,
    sources: list[np.ndarray] | None = None,
) -> int:
    """Every returned box matches its object's visible pixels within ``tol`` px; every dropped
    object is hidden (fewer pixels than ``min_visible`` of its scaled area, plus an edge margin)
    or too small; nothing crosses the border.

    ``area_scale`` (how the transform scaled areas) is measured when not given: the median, over
    the kept objects away from the border, of their pixels after / before (``sources``: the
    images the objects come from, default ``before.image``).

    Returns:
        how many dropped, still visible objects were checked to be hidden.
    """
    h, w = after.size
    b = after.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert len(set(after.labels.tolist())) == len(after.labels)
    vis = visible_boxes(after.image, len(before.labels))
    for box, i in zip(after.boxes, after.labels, strict=True):
        assert i in vis, f"object {i} kept but not visible"
        px = vis[i][0]
        at_border = box[0] < 0.5 or box[1] < 0.5 or box[2] > w - 0.5 or box[3] > h - 0.5
        if at_border and not np.allclose(box, px, atol=tol):
            # A slanted edge cut by the border is sampled by pixel centres only half a pixel
            # inside it, so the pixels end short of the exact corner by up to slope/2 along the
            # border. There the box must still contain every visible pixel (within tol).
            assert (box[:2] <= px[:2] + tol).all() and (box[2:] >= px[2:] - tol).all(), f"object {i}"
            np.testing.assert_allclose(box, px, atol=tol + 3.0, err_msg=f"object {i} (border)")
        else:
            np.testing.assert_allclose(box, px, atol=tol, err_msg=f"object {i}")
    if area_scale is None:
        original = {}
        for img in sources if sources is not None else [before.image]:
            for i, (_, c) in visible_boxes(img, len(before.labels)).items():
                original[i] = original.get(i, 0) + c
        ratios = [
            vis[i][1] / original[i]
            for box, i in zip(after.boxes, after.labels, strict=True)
            if original.get(i) and box[0] > tol + 1 and box[1] > tol + 1 and box[2] < w - tol - 1
            and box[3] < h - tol - 1
        ]
        area_scale = float(np.median(ratios)) if ratios else None
    checked = 0
    for i in set(vis) - set(after.labels.tolist()):
        vb, count = vis[i]
        vw, vh = vb[2] - vb[0], vb[3] - vb[1]
        if min(vw, vh) <= min_size + tol:
            continue
        if area_scale is not None:
            ob = before.boxes[i]
            full = (ob[2] - ob[0]) * (ob[3] - ob[1]) * area_scale
            assert count <= min_visible * full + 2 * (vw + vh), f"object {i} dropped but {count} px visible"
            checked += 1
    return checked
